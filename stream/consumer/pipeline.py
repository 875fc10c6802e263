"""The main loop: read a batch, score it, write it to the store, then commit its offsets."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Sequence

from stream.consumer.metrics import (
    BATCH_SIZE,
    CONSUMED,
    DEAD_LETTERED,
    E2E_DELAY,
    LAG,
    SCORED,
    STORE_RETRIES,
    RunCounts,
)
from stream.consumer.scoring import score_items
from stream.core.errors import ServiceUnavailable
from stream.core.interfaces import Scorer, Sink, Source
from stream.core.records import BadRecord, Batch, ScoredRow
from stream.core.settings import BatchSettings

log = logging.getLogger(__name__)


class StoppedBeforeWrite(Exception):
    """Shutdown was asked while the store was down: the batch stays uncommitted (re-read later)."""


class Pipeline:
    def __init__(
        self,
        source: Source,
        scorers: Sequence[Scorer],
        sink: Sink,
        batching: BatchSettings,
        stop: threading.Event | None = None,
        *,
        idle_exit_s: float | None = None,
        consumer_name: str = "yuqing",
        group_id: str = "",
        stats_every_s: float = 10.0,
    ) -> None:
        self.source, self.scorers, self.sink, self.batching = source, scorers, sink, batching
        self.stop = stop or threading.Event()
        self.idle_exit_s = idle_exit_s
        self.consumer_name, self.group_id = consumer_name, group_id
        self.stats_every_s = stats_every_s
        self.counts = RunCounts()
        self._batch_items = 0
        self._batch_bad = 0
        self._last_stats = time.monotonic()

    def run(self) -> RunCounts:
        idle_since = time.monotonic()
        while not self.stop.is_set():
            batch = self.source.next_batch(self.batching.max_items, self.batching.max_wait_ms)  # 1. read
            if not len(batch):
                if self.source.exhausted or self._idle_too_long(idle_since):
                    break
                if not self.source.assigned:
                    idle_since = time.monotonic()  # waiting for a rebalance is not being idle
                self._maybe_write_stats(0.0)
                continue
            started = time.perf_counter()
            rows, failed = score_items(batch.items, self.scorers)  # 2. score
            bad = batch.bad + failed
            self._write(rows, bad)  # 3. write scored rows, dead letters (store + DLQ topic)
            self.source.commit(batch)  # 4. only now commit the offsets
            self._account(batch, rows, bad)
            self._maybe_write_stats(time.perf_counter() - started)
            idle_since = time.monotonic()
        return self.counts

    def _idle_too_long(self, idle_since: float) -> bool:
        return self.idle_exit_s is not None and time.monotonic() - idle_since >= self.idle_exit_s

    def _write(self, rows: list[ScoredRow], bad: list[BadRecord]) -> None:
        """Retry with backoff until the store takes the batch; fetching is paused meanwhile."""
        delay, paused = 0.5, False
        while True:
            try:
                self.sink.write_batch(rows, bad)
                break
            except ServiceUnavailable as exc:
                if self.stop.is_set():
                    raise StoppedBeforeWrite(str(exc)) from exc
                self.counts.store_retries += 1
                STORE_RETRIES.inc()
                log.warning("write failed, retrying in %.1fs without committing: %s", delay, exc)
                if not paused:
                    self.source.pause()
                    paused = True
                self.stop.wait(delay)
                self.source.keepalive()
                delay = min(delay * 2, 30.0)
        if paused:
            self.source.resume()
            log.warning("store is back; fetching resumed")

    def _account(self, batch: Batch, rows: list[ScoredRow], bad: list[BadRecord]) -> None:
        c = self.counts
        c.batches += 1
        c.read += len(batch)
        c.scored_items += len(batch.items) - (len(bad) - len(batch.bad))
        c.rows_written += len(rows)
        c.dead_lettered += len(bad)
        self._batch_items += len(batch.items)
        self._batch_bad += len(bad)
        BATCH_SIZE.observe(len(batch))
        for record, _ in batch.items:
            CONSUMED.labels(record.topic).inc()
        for b in bad:
            c.by_kind[b.kind] = c.by_kind.get(b.kind, 0) + 1
            DEAD_LETTERED.labels(b.kind).inc()
        now_ms = time.time() * 1000
        for r in rows[: len(batch.items)]:
            if r.record.timestamp_ms:
                E2E_DELAY.observe(max(0.0, (now_ms - r.record.timestamp_ms) / 1000))
        for r in rows:
            SCORED.labels(r.task, r.model_version).inc()

    def _maybe_write_stats(self, batch_seconds: float) -> None:
        if time.monotonic() - self._last_stats < self.stats_every_s:
            return
        self._last_stats = time.monotonic()
        now = dt.datetime.now(dt.UTC)
        rows = []
        for (topic, partition), (position, end) in self.source.lag().items():
            LAG.labels(topic, str(partition)).set(end - position)
            rows.append(
                [
                    now,
                    self.consumer_name,
                    self.group_id,
                    topic,
                    partition,
                    position,
                    end,
                    end - position,
                    self._batch_items,
                    self._batch_bad,
                    batch_seconds,
                ]
            )
        self._batch_items = self._batch_bad = 0
        if rows:
            try:
                self.sink.write_stats(rows)
            except ServiceUnavailable as exc:  # stats are best effort; items are not
                log.debug("pipeline stats not written: %s", exc)
