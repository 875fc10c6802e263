"""Replay: re-score the messages of a time range, per partition, under a group of its own.

Producers may stamp messages out of order (a feed delivering old entries late, a backfill), so a
time range is not an offset range: each partition is scanned from an offset found with
`offsets_for_times` (the first one stamped at or after a time) and only messages stamped inside
the range are kept.  How far a partition is scanned is the scan mode:

- bounded (the default, `--grace D`): from offsets_for_times(from - D) to the first message stamped
  after to + D.  Complete when timestamps are at most D out of order.  The stop is found while
  reading, not with offsets_for_times: transaction markers are stamped when they are written and
  would end the scan of a past range at the first one.
- to end (`--scan all`): up to each partition's end offset as of the start of the replay, from its
  beginning (or from offsets_for_times(from - D) with `--grace D`).  Complete whatever the order.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata
from tqdm import tqdm

from stream.core.interfaces import Standalone
from stream.core.items import classify
from stream.core.records import Batch
from stream.core.settings import KafkaSettings
from stream.core.times import format_duration
from stream.kafka.clients import consumer
from stream.kafka.source import to_record


@dataclass
class PartitionPlan:
    topic: str
    partition: int
    start: int  # first offset scanned
    stop: int  # the scan ends before this offset: the end, or (bounded) the first message stamped after to + grace
    end: int  # end offset when the replay began (the last stable one: open transactions are not read)
    earliest: int  # first offset still retained
    scanned_to: int = -1  # the partition's position, up to the stop (-1: start)
    gone_before_ms: int | None = None  # retention removed messages older than this timestamp
    in_range: int = 0  # scanned messages stamped inside the range (scored)
    outside: int = 0  # scanned messages stamped outside it (skipped)
    first_ts_ms: int | None = None  # earliest and latest stamp among those in range
    last_ts_ms: int | None = None
    latest_seen_ms: int | None = None  # highest stamp scanned so far
    disorder_ms: int = 0  # most a scanned message was stamped before one at an earlier offset

    def __post_init__(self) -> None:
        self.scanned_to = max(self.scanned_to, self.start)

    @property
    def total(self) -> int:
        return max(0, self.stop - self.start)

    @property
    def scanned(self) -> int:
        return self.scanned_to - self.start

    @property
    def name(self) -> str:
        return f"{self.topic}[{self.partition}]"

    def observe(self, timestamp_ms: int | None, from_ms: int, to_ms: int) -> bool:
        """Count one scanned message; True when it belongs to the range (an unstamped one always does)."""
        if timestamp_ms is None or timestamp_ms < 0:  # -1: the producer set no timestamp
            self.in_range += 1
            return True
        if self.latest_seen_ms is None or timestamp_ms > self.latest_seen_ms:
            self.latest_seen_ms = timestamp_ms
        self.disorder_ms = max(self.disorder_ms, self.latest_seen_ms - timestamp_ms)
        if not from_ms <= timestamp_ms <= to_ms:
            self.outside += 1
            return False
        self.in_range += 1
        if self.first_ts_ms is None or timestamp_ms < self.first_ts_ms:
            self.first_ts_ms = timestamp_ms
        if self.last_ts_ms is None or timestamp_ms > self.last_ts_ms:
            self.last_ts_ms = timestamp_ms
        return True


@dataclass
class ReplayReport:
    from_ms: int
    to_ms: int
    grace_ms: int | None  # None: no --grace given
    to_end: bool
    plans: list[PartitionPlan] = field(default_factory=list)

    @property
    def read(self) -> int:
        return sum(p.in_range for p in self.plans)

    @property
    def outside(self) -> int:
        return sum(p.outside for p in self.plans)

    def mode(self) -> str:
        grace = _duration(self.grace_ms or 0)
        if not self.to_end:
            return (
                f"scan bounded by --grace {grace}: from --from - {grace} to the first message stamped after "
                f"--to + {grace}; complete only if timestamps are at most {grace} out of order"
            )
        origin = "each partition's beginning" if self.grace_ms is None else f"--from - {grace}"
        return f"scan to end: from {origin} to each partition's end offset as of the start of the replay"

    def summary(self) -> list[str]:
        """What was scanned, per partition, and what was kept: the replay's account of its coverage."""
        lines, grace = [self.mode()], _duration(self.grace_ms or 0)
        for p in self.plans:
            lines.append(
                f"{p.name}: offsets {p.start}..{p.scanned_to} scanned ({p.scanned}), "
                f"{p.in_range} in range, {p.outside} outside"
            )
            if p.scanned_to < p.end:
                if p.scanned_to == p.stop:
                    why = f"past the first message stamped after --to + {grace} (--scan all reads them)"
                else:
                    why = "the replay stopped before them"
                lines.append(
                    f"{p.name}: offsets {p.scanned_to}..{p.end} not scanned ({p.end - p.scanned_to}), {why}; "
                    "messages there stamped inside the range are missed"
                )
        lines.append(
            f"in range {self.read}, outside {self.outside}, offsets scanned {sum(p.scanned for p in self.plans)}"
        )
        firsts = [p.first_ts_ms for p in self.plans if p.first_ts_ms is not None]
        lasts = [p.last_ts_ms for p in self.plans if p.last_ts_ms is not None]
        if firsts and lasts:
            lines.append(f"messages covered {_iso(min(firsts))} .. {_iso(max(lasts))}")
        else:
            lines.append("no messages in the range")
        return lines

    def warnings(self) -> list[str]:
        out = []
        grace = self.grace_ms or 0
        for p in self.plans:
            if not self.to_end and p.disorder_ms > grace and p.scanned_to == p.stop < p.end:
                out.append(
                    f"{p.name}: timestamps are out of order by up to {_duration(p.disorder_ms)}, more than "
                    f"--grace {_duration(grace)}: messages of the range after offset {p.stop} are likely "
                    "missed; rerun with --scan all"
                )
            if p.gone_before_ms is not None and p.gone_before_ms > self.from_ms:
                out.append(
                    f"{p.name}: messages before {_iso(p.gone_before_ms)} are past retention "
                    f"(offsets below {p.earliest} were deleted); {_iso(self.from_ms)} .. {_iso(p.gone_before_ms)} "
                    "cannot be replayed"
                )
        return out


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds")


def _duration(ms: int) -> str:
    """A duration for people: rounded up to whole hours, minutes or seconds, whichever is largest."""
    unit = next((u for u in (3_600_000, 60_000, 1000) if ms >= u), 1)
    return format_duration(dt.timedelta(milliseconds=-(-ms // unit) * unit))


class ReplaySource(Standalone):
    """A bounded Source: assigned partitions (no group membership, so the live group is untouched),
    scanned as the report's mode says; only messages stamped inside [from_ms, to_ms] are returned.
    Reads committed messages only: aborted transactions are not part of any range."""

    def __init__(
        self,
        settings: KafkaSettings,
        topics: list[str],
        from_ms: int,
        to_ms: int,
        group_id: str,
        progress: bool = True,
        grace_ms: int | None = None,
        to_end: bool = False,
    ) -> None:
        self.settings = settings
        self.from_ms, self.to_ms = from_ms, to_ms
        # Bounded: a message stamped after this ends its partition's scan.
        self._after_bound = None if to_end else to_ms + (grace_ms or 0)
        self.consumer = consumer(settings, group_id, max_poll_records=2000)
        self.report = ReplayReport(from_ms, to_ms, grace_ms, to_end)
        partitions = [TopicPartition(t, p) for t in topics for p in sorted(self.consumer.partitions_for_topic(t) or [])]
        self.consumer.assign(partitions)
        self._plans = self._plan(partitions)
        self.report.plans = list(self._plans.values())
        self._done: set[TopicPartition] = set()
        self._bars = {
            tp: tqdm(total=p.total, desc=p.name, unit="offset", position=i, disable=not progress, leave=True)
            for i, (tp, p) in enumerate(self._plans.items())
        }
        for tp, p in self._plans.items():
            if p.total == 0:
                self._finish(tp)
            else:
                self.consumer.seek(tp, p.start)
        self.exhausted = len(self._done) == len(partitions)

    def _plan(self, partitions: list[TopicPartition]) -> dict[TopicPartition, PartitionPlan]:
        grace, to_end = self.report.grace_ms or 0, self.report.to_end
        # Offsets before offsets_for_times(t) are all stamped before t (the broker returns the
        # earliest offset stamped at or after it); timestamps below 0 are the API's special values.
        starts = self.consumer.offsets_for_times({tp: max(0, self.from_ms - grace) for tp in partitions})
        ends = self.consumer.end_offsets(partitions)
        begins = self.consumer.beginning_offsets(partitions)
        plans = {}
        for tp in partitions:
            found = starts.get(tp)
            first = min(found.offset, ends[tp]) if found is not None else ends[tp]
            start = begins[tp] if to_end and self.report.grace_ms is None else first
            plan = PartitionPlan(tp.topic, tp.partition, start, ends[tp], ends[tp], begins[tp])
            if begins[tp] > 0 and first == begins[tp] and found is not None:
                # The first retained message is already inside the range: older ones were deleted,
                # so the part of the range before it may be gone.
                plan.gone_before_ms = found.timestamp
            plans[tp] = plan
        return plans

    def next_batch(self, max_items: int, max_wait_ms: int) -> Batch:
        batch = Batch()
        if self.exhausted:
            return batch
        polled = self.consumer.poll(timeout_ms=max_wait_ms, max_records=max_items)
        for tp, messages in polled.items():
            plan = self._plans[tp]
            for msg in messages:
                if tp in self._done or msg.offset >= plan.stop:
                    break
                if self._after_bound is not None and msg.timestamp is not None and msg.timestamp > self._after_bound:
                    plan.stop = msg.offset
                    break
                if plan.observe(msg.timestamp, self.from_ms, self.to_ms):
                    record = to_record(msg)
                    batch.add(record, classify(record, self.settings.max_message_bytes))
                else:
                    batch.next_offsets[(tp.topic, tp.partition)] = msg.offset + 1
        # Offsets also count control records (transaction markers) and aborted messages, which poll()
        # never returns: a partition is finished when its position reaches the stop, message or not.
        for tp, plan in self._plans.items():
            if tp in self._done:
                continue
            position = self.consumer.position(tp)
            plan.scanned_to = min(position, plan.stop)
            self._bars[tp].update(plan.scanned - self._bars[tp].n)
            if position >= plan.stop:
                self._finish(tp)
        self.exhausted = len(self._done) == len(self._plans)
        return batch

    def _finish(self, tp: TopicPartition) -> None:
        if tp not in self._done:
            self._done.add(tp)
            self.consumer.pause(tp)
            bar = self._bars[tp]
            bar.total = bar.n  # a bounded scan may end before the end offset
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

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self.consumer.close(autocommit=False)
