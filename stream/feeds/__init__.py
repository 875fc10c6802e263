"""News-feed ingest: poll RSS 2.0 / Atom 1.0 feeds and produce our JSON items to Kafka.

config (feeds.toml) -> fetch (httpx, conditional GET) -> normalize (feedparser entry -> item)
-> state (SQLite: produced ids, validators) -> ingest (the polling loop and the producer).
"""
