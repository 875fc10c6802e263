"""Story clustering groundwork: items about one event share a `story_id`, near-copies get
`duplicate_of`.  `embed` (sentence encoders), `dedup` (MinHash-LSH near-duplicates), `cluster`
(deterministic windowed assignment), `evaluate` (figures on tests/data/events.jsonl).

Imports only `stream.core` and third-party libraries, so any part of the project can use it.
"""
