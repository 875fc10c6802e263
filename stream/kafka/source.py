"""Kafka as a Source: micro-batches by count and wait time, explicit offset commits, pause/resume."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
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
    def __init__(self, on_revoke: Callable[[set[tuple[str, int]]], None]) -> None:
        self._on_revoke = on_revoke

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self._on_revoke({(tp.topic, tp.partition) for tp in revoked})

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        log.info("assigned %s", sorted((tp.topic, tp.partition) for tp in assigned))


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
        )
        self._revoked: set[tuple[str, int]] = set()
        self.consumer.subscribe(topics=topics, listener=_Rebalance(self._revoked.update))

    def next_batch(self, max_items: int, max_wait_ms: int) -> Batch:
        batch = Batch()
        deadline = time.monotonic() + max_wait_ms / 1000
        self._revoked.clear()
        while len(batch) < max_items:
            remaining_ms = max(0, int((deadline - time.monotonic()) * 1000))
            polled = self.consumer.poll(timeout_ms=remaining_ms, max_records=max_items - len(batch))
            for messages in polled.values():
                for msg in messages:
                    record = to_record(msg)
                    batch.add(record, classify(record, self.settings.max_message_bytes))
            if time.monotonic() >= deadline:
                break
        if self._revoked:
            # Partitions taken away mid-batch belong to another consumer now: drop their records;
            # the new owner re-reads them from the last commit (the store de-duplicates).
            self._drop(batch, self._revoked)
        return batch

    @staticmethod
    def _drop(batch: Batch, revoked: set[tuple[str, int]]) -> None:
        batch.items = [(r, i) for r, i in batch.items if (r.topic, r.partition) not in revoked]
        batch.bad = [b for b in batch.bad if (b.record.topic, b.record.partition) not in revoked]
        batch.next_offsets = {tp: o for tp, o in batch.next_offsets.items() if tp not in revoked}

    exhausted = False  # a consumer group never runs dry

    @property
    def assigned(self) -> bool:
        return bool(self.consumer.assignment())

    def commit(self, batch: Batch) -> None:
        if not batch.next_offsets:
            return
        offsets = {
            TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in batch.next_offsets.items()
        }
        try:
            self.consumer.commit(offsets)
        except (CommitFailedError, RebalanceInProgressError) as exc:
            # The group moved on while we wrote; the rows are in the store and the new owner will
            # re-read from the previous commit.  Duplicates collapse in the store; nothing is lost.
            log.warning("offset commit refused after a rebalance (%s); continuing", exc)

    def pause(self) -> None:
        self.consumer.pause(*self.consumer.assignment())

    def resume(self) -> None:
        self.consumer.resume(*self.consumer.paused())

    def keepalive(self) -> None:
        """Poll with every partition paused: keeps group membership, fetches nothing."""
        leaked = self.consumer.poll(timeout_ms=0)
        if any(leaked.values()):  # a partition assigned during the pause is not paused yet
            self.pause()
            for tp in leaked:
                self.consumer.seek(tp, next(iter(leaked[tp])).offset)

    def lag(self) -> dict[tuple[str, int], tuple[int, int]]:
        """(topic, partition) -> (position, end offset) for the assigned partitions."""
        out: dict[tuple[str, int], tuple[int, int]] = {}
        assignment = list(self.consumer.assignment())
        if not assignment:
            return out
        try:
            ends = self.consumer.end_offsets(assignment)
            for tp in assignment:
                out[(tp.topic, tp.partition)] = (self.consumer.position(tp), ends.get(tp, 0))
        except KafkaError as exc:
            log.debug("lag lookup failed: %s", exc)
        return out

    def close(self) -> None:
        try:
            self.consumer.close(autocommit=False)
        except Exception as exc:  # closing must not mask the error that got us here
            log.debug("consumer close: %s", exc)
