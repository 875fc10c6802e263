"""Replay: re-score the messages of a time range, per partition, under a group of its own."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata
from tqdm import tqdm

from stream.core.items import classify
from stream.core.records import Batch
from stream.core.settings import KafkaSettings
from stream.kafka.clients import consumer
from stream.kafka.source import to_record

log = logging.getLogger(__name__)


@dataclass
class PartitionPlan:
    topic: str
    partition: int
    start: int  # first offset at or after --from
    stop: int  # first offset after --to (+ grace), capped by the end offset when the replay began
    earliest: int  # first offset still retained
    gone_before_ms: int | None = None  # retention removed messages older than this timestamp

    @property
    def total(self) -> int:
        return max(0, self.stop - self.start)


@dataclass
class ReplayReport:
    plans: list[PartitionPlan] = field(default_factory=list)
    read: int = 0
    outside: int = 0  # read between start and stop but timestamped outside the range (skipped)
    last_ts_ms: dict[tuple[str, int], int] = field(default_factory=dict)
    first_ts_ms: dict[tuple[str, int], int] = field(default_factory=dict)

    def gaps(self, from_ms: int) -> list[str]:
        out = []
        for p in self.plans:
            if p.gone_before_ms is not None and p.gone_before_ms > from_ms:
                out.append(
                    f"{p.topic}[{p.partition}]: messages before {_iso(p.gone_before_ms)} are past retention "
                    f"(offsets below {p.earliest} were deleted); {_iso(from_ms)} .. {_iso(p.gone_before_ms)} "
                    "cannot be replayed"
                )
        return out


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds")


class ReplaySource:
    """A bounded Source: assigned partitions (no group membership, so the live group is untouched),
    from the first offset at or after `from_ms` to the first message after `to_ms`."""

    def __init__(
        self,
        settings: KafkaSettings,
        topics: list[str],
        from_ms: int,
        to_ms: int,
        group_id: str,
        progress: bool = True,
        grace_ms: int = 0,
    ) -> None:
        self.settings = settings
        self.from_ms, self.to_ms, self.grace_ms = from_ms, to_ms, grace_ms
        self.consumer = consumer(settings, group_id, max_poll_records=2000)
        self.report = ReplayReport()
        self.exhausted = False
        partitions = [TopicPartition(t, p) for t in topics for p in sorted(self.consumer.partitions_for_topic(t) or [])]
        self.consumer.assign(partitions)
        self._plan(partitions)
        self._done: set[TopicPartition] = set()
        self._bars = {
            (p.topic, p.partition): tqdm(
                total=p.total,
                desc=f"{p.topic}[{p.partition}]",
                unit="msg",
                position=i,
                disable=not progress,
                leave=True,
            )
            for i, p in enumerate(self.report.plans)
        }
        for p in self.report.plans:
            tp = TopicPartition(p.topic, p.partition)
            if p.total == 0:
                self._done.add(tp)
            else:
                self.consumer.seek(tp, p.start)
        self.consumer.pause(*self._done)
        self.exhausted = len(self._done) == len(partitions)

    def _plan(self, partitions: list[TopicPartition]) -> None:
        starts = self.consumer.offsets_for_times({tp: self.from_ms for tp in partitions})
        # Producers may stamp messages out of order (feeds deliver old entries late): read up to the
        # first offset after --to plus a grace period, and keep only messages stamped inside the range.
        stops = self.consumer.offsets_for_times({tp: self.to_ms + self.grace_ms + 1 for tp in partitions})
        ends = self.consumer.end_offsets(partitions)
        begins = self.consumer.beginning_offsets(partitions)
        for tp in partitions:
            found = starts.get(tp)
            start = found.offset if found is not None else ends[tp]
            after = stops.get(tp)
            stop = min(after.offset, ends[tp]) if after is not None else ends[tp]
            plan = PartitionPlan(tp.topic, tp.partition, start, stop, begins[tp])
            if begins[tp] > 0 and start == begins[tp] and found is not None:
                # The first retained message is already inside the range: older ones were deleted,
                # so the part of the range before it may be gone.
                plan.gone_before_ms = found.timestamp
            self.report.plans.append(plan)

    def next_batch(self, max_items: int, max_wait_ms: int) -> Batch:
        batch = Batch()
        if self.exhausted:
            return batch
        polled = self.consumer.poll(timeout_ms=max_wait_ms, max_records=max_items)
        for tp, messages in polled.items():
            plan_key = (tp.topic, tp.partition)
            for msg in messages:
                if tp in self._done:
                    break
                if msg.offset >= self._stop_of(tp):
                    self._finish(tp)
                    break
                batch.next_offsets[plan_key] = msg.offset + 1
                self._bars[plan_key].update(1)
                if msg.timestamp is not None and not self.from_ms <= msg.timestamp <= self.to_ms:
                    self.report.outside += 1
                    if msg.offset + 1 >= self._stop_of(tp):
                        self._finish(tp)
                    continue
                record = to_record(msg)
                batch.add(record, classify(record, self.settings.max_message_bytes))
                self.report.read += 1
                if msg.timestamp is not None:
                    self.report.first_ts_ms.setdefault(plan_key, msg.timestamp)
                    self.report.last_ts_ms[plan_key] = max(msg.timestamp, self.report.last_ts_ms.get(plan_key, 0))
                    self.report.first_ts_ms[plan_key] = min(msg.timestamp, self.report.first_ts_ms[plan_key])
                if msg.offset + 1 >= self._stop_of(tp):
                    self._finish(tp)
        self.exhausted = len(self._done) == len(self.report.plans)
        return batch

    def _stop_of(self, tp: TopicPartition) -> int:
        return next(p.stop for p in self.report.plans if (p.topic, p.partition) == (tp.topic, tp.partition))

    def _finish(self, tp: TopicPartition) -> None:
        if tp not in self._done:
            self._done.add(tp)
            self.consumer.pause(tp)
            bar = self._bars[(tp.topic, tp.partition)]
            bar.total = bar.n
            bar.refresh()

    def commit(self, batch: Batch) -> None:
        """Progress goes to the replay's own group, never the live one."""
        if batch.next_offsets:
            self.consumer.commit(
                {TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in batch.next_offsets.items()}
            )

    def pause(self) -> None:
        self.consumer.pause(*self.consumer.assignment())

    def resume(self) -> None:
        active = [tp for tp in self.consumer.assignment() if tp not in self._done]
        self.consumer.resume(*active)

    def keepalive(self) -> None:
        """No group membership to keep alive (partitions are assigned, not subscribed)."""

    @property
    def assigned(self) -> bool:
        return True

    def lag(self) -> dict[tuple[str, int], tuple[int, int]]:
        return {}

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self.consumer.close(autocommit=False)
