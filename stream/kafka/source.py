"""Kafka as a Source: micro-batches by count and wait time, explicit offset commits, pause/resume.

Rebalances run inside poll() (next_batch's and keepalive's).  kafka-python keeps the position of
a partition that stays assigned across one, which is past the records of the batch in hand; so
after a rebalance every partition it touched loses its records from a batch being read, and
each one that is ours (still, or again) is sought back to the first of them.  A batch already
being written keeps its records (they are written), but commits only partitions owned at commit
time and not revoked since the batch was read; those revoked and given back are sought back to
the batch's first offset there and read again (the store collapses the duplicates).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from kafka import TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import CommitFailedError, KafkaError, RebalanceInProgressError
from kafka.structs import OffsetAndMetadata

from stream.core.items import classify
from stream.core.records import Batch, SourceRecord
from stream.core.settings import KafkaSettings
from stream.kafka.clients import consumer

log = logging.getLogger(__name__)

Partition = tuple[str, int]
# A keepalive poll waits this long: poll(0) gives up on a pending rebalance at once, so a member
# paused through a store outage would hold up the whole group's rebalance until the store is back.
KEEPALIVE_POLL_MS = 1000
# How often metadata is refreshed (kafka-python's default is 5 minutes): partitions added to a
# topic, or a topic created after the group formed, reach the group's assignment within this.
METADATA_MAX_AGE_MS = 10_000


def to_record(msg: Any) -> SourceRecord:
    return SourceRecord(
        topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        timestamp_ms=msg.timestamp,
        key=msg.key,
        value=msg.value if msg.value is not None else b"",
    )


class _Rebalance(ConsumerRebalanceListener):
    """Notes what a rebalance revoked, and whether one is under way (from the join's start, which
    revokes, to its assignment); the source acts on them once poll() returns."""

    def __init__(self, revoked: set[Partition], settled: threading.Event) -> None:
        self._revoked, self._settled = revoked, settled

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self._settled.clear()
        self._revoked.update((tp.topic, tp.partition) for tp in revoked)

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        log.info("assigned %s", sorted((tp.topic, tp.partition) for tp in assigned))
        self._settled.set()


class KafkaSource:
    """Consumer-group source.  Offsets are committed only by `commit(batch)`, after the write."""

    def __init__(self, settings: KafkaSettings, topics: list[str], group_id: str) -> None:
        self.settings = settings
        self.group_id = group_id
        self.consumer = consumer(
            settings,
            group_id,
            max_poll_records=2000,
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=max(1000, settings.session_timeout_ms // 4),
            metadata_max_age_ms=METADATA_MAX_AGE_MS,
        )
        # Partitions revoked since the batch in hand was started (kept through keepalive).
        self._revoked: set[Partition] = set()
        self._batch = Batch()  # the batch read and not yet committed
        self._committed: dict[Partition, int] = {}  # last commit known per partition, for lag()
        self._settled = threading.Event()  # set by a finished rebalance, cleared when one starts
        self.consumer.subscribe(topics=topics, listener=_Rebalance(self._revoked, self._settled))

    def next_batch(self, max_items: int, max_wait_ms: int) -> Batch:
        batch = self._batch = Batch()
        deadline = time.monotonic() + max_wait_ms / 1000
        self._revoked.clear()
        while len(batch) < max_items:
            remaining_ms = max(0, int((deadline - time.monotonic()) * 1000))
            polled = self.consumer.poll(timeout_ms=remaining_ms, max_records=max_items - len(batch))
            records = [to_record(msg) for messages in polled.values() for msg in messages]
            if self._revoked:
                records = self._after_rebalance(batch, records)
            for record in records:
                batch.add(record, classify(record, self.settings.max_message_bytes))
            if time.monotonic() >= deadline:
                break
        return batch

    def _after_rebalance(self, batch: Batch, records: list[SourceRecord]) -> list[SourceRecord]:
        """Drop what the revoked partitions gave (before and in this poll) and seek those still
        ours back to the first dropped offset; what they give from then on may be committed."""
        touched = set(self._revoked)
        firsts = {tp: batch.first_offsets[tp] for tp in touched if tp in batch.first_offsets}
        for r in records:
            tp = (r.topic, r.partition)
            if tp in touched:
                firsts[tp] = min(firsts.get(tp, r.offset), r.offset)
        batch.drop(touched)
        self._revoked -= self._rewind(firsts, touched)
        return [r for r in records if (r.topic, r.partition) not in touched]

    def _rewind(self, firsts: dict[Partition, int], touched: set[Partition]) -> set[Partition]:
        """Seek each partition of `firsts` that is ours to its offset; returns the partitions owned now."""
        owned = self._owned()
        for tp, offset in firsts.items():
            if tp in owned:
                self.consumer.seek(TopicPartition(*tp), offset)
        for tp in touched:
            self._committed.pop(tp, None)  # another member may have committed it meanwhile
        return owned

    def _owned(self) -> set[Partition]:
        return {(tp.topic, tp.partition) for tp in self.consumer.assignment()}

    exhausted = False  # a consumer group never runs dry

    @property
    def rebalancing(self) -> bool:
        return not self._settled.is_set()

    def commit(self, batch: Batch) -> None:
        """Commit the batch's partitions that are ours now and were not revoked since it was read."""
        owned = self._owned()
        offsets = {tp: o for tp, o in batch.next_offsets.items() if tp in owned and tp not in self._revoked}
        skipped = set(batch.next_offsets) - set(offsets)
        if skipped:
            log.info("not committing %s: revoked while the batch was in hand (read again)", sorted(skipped))
        self._batch = Batch()
        if not offsets:
            return
        try:
            self.consumer.commit({TopicPartition(*tp): OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()})
        except (CommitFailedError, RebalanceInProgressError) as exc:
            # The group moved on while we wrote; the rows are in the store and the new owner will
            # re-read from the previous commit.  Duplicates collapse in the store; nothing is lost.
            log.warning("offset commit refused after a rebalance (%s); continuing", exc)
            return
        self._committed.update(offsets)

    def pause(self) -> None:
        self.consumer.pause(*self.consumer.assignment())

    def resume(self) -> None:
        self.consumer.resume(*self.consumer.paused())

    def keepalive(self) -> None:
        """Poll with every partition paused: keeps group membership, fetches nothing.  A rebalance
        here sends the batch in hand's partitions that are ours again back to its first offsets."""
        leaked = self.consumer.poll(timeout_ms=KEEPALIVE_POLL_MS)
        for tp, messages in leaked.items():  # assigned during the pause, so not paused yet
            if messages:
                self.consumer.seek(tp, messages[0].offset)
        if self._revoked:
            revoked = set(self._revoked)
            self._rewind({tp: o for tp, o in self._batch.first_offsets.items() if tp in revoked}, revoked)
        if self._revoked or any(leaked.values()):
            self.pause()

    def lag(self) -> dict[Partition, tuple[int, int]]:
        """(topic, partition) -> (last committed offset or -1, end offset) for the assigned partitions."""
        out: dict[Partition, tuple[int, int]] = {}
        assignment = list(self.consumer.assignment())
        if not assignment:
            return out
        try:
            ends = self.consumer.end_offsets(assignment)
            for tp in assignment:
                key = (tp.topic, tp.partition)
                if key not in self._committed:
                    found = self.consumer.committed(tp, timeout_ms=5000)
                    if found is not None:
                        self._committed[key] = found
                out[key] = (self._committed.get(key, -1), ends.get(tp, 0))
        except KafkaError as exc:
            log.debug("lag lookup failed: %s", exc)
        return out

    def close(self) -> None:
        try:
            self.consumer.close(autocommit=False)
        except Exception as exc:  # closing must not mask the error that got us here
            log.debug("consumer close: %s", exc)
