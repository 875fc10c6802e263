"""The three small interfaces the pipeline is built from: source -> scorer -> sink.

Every member here is part of the contract the main loop (`stream.consumer.pipeline`) relies on;
nothing is probed with getattr.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from stream.core.records import Analysis, BadRecord, Batch, EntityRow, ScoredRow


@runtime_checkable
class Scorer(Protocol):
    """Analyzes texts with one model package (an ONNX session, or torch in benchmarks): one
    encoder pass per text fills every head the package has."""

    name: str  # model name, e.g. "news-me5"
    version: str  # content-derived model version
    max_length: int

    @property
    def heads(self) -> Mapping[str, Sequence[str]]:  # read-only, so a dict of tuples satisfies it
        """Sequence head (task) -> its labels, e.g. {"sentiment": ("negative", "neutral", "positive")}."""
        ...

    def analyze(self, texts: Sequence[str]) -> list[Analysis]: ...


class Source(Protocol):
    """Where messages come from.  Offsets move only through `commit(batch)`, after the write."""

    @property
    def exhausted(self) -> bool:
        """A finite source (a file) has nothing more to give; a live one never is."""
        ...

    @property
    def rebalancing(self) -> bool:
        """A consumer group is joining or moving partitions: what the source owns is about to be
        decided.  A member that a finished rebalance gave nothing is not rebalancing: it is idle."""
        ...

    def next_batch(self, max_items: int, max_wait_ms: int) -> Batch: ...

    def commit(self, batch: Batch) -> None: ...

    def pause(self) -> None:
        """Stop fetching (backpressure while the store is down); `keepalive` keeps membership."""
        ...

    def resume(self) -> None: ...

    def keepalive(self) -> None: ...

    def lag(self) -> dict[tuple[str, int], tuple[int, int]]:
        """(topic, partition) -> (last committed offset or -1, end offset); empty when the source
        has no such notion."""
        ...

    def close(self) -> None: ...


class Standalone:
    """The Source members of a source that belongs to no consumer group (a file, a replay's
    assigned partitions): it always owns what it reads, has no membership to keep alive, and
    reports no lag."""

    @property
    def rebalancing(self) -> bool:
        return False

    def keepalive(self) -> None:
        """No group membership to keep alive."""

    def lag(self) -> dict[tuple[str, int], tuple[int, int]]:
        return {}


class Sink(Protocol):
    """Where scored rows and dead letters go; raises `ServiceUnavailable` when it cannot take them."""

    def dead_letter(self, bad: Sequence[BadRecord]) -> list[BadRecord]:
        """Publish rejects to the dead-letter topic, if any (once per batch, never raising); returns
        them with their delivery status for their rows."""
        ...

    def write_batch(
        self, scored: Sequence[ScoredRow], entities: Sequence[EntityRow], bad: Sequence[BadRecord]
    ) -> list[BadRecord]:
        """Write the items' text (once per item), their rows, entities and dead letters; returns the
        messages whose rows the store refused for good, as rejects not yet published or written."""
        ...

    def write_stats(self, rows: list[list[Any]]) -> None: ...

    def close(self) -> None: ...
