"""The main loop: read a batch, score it, write it to the store, then commit its offsets.

A message ends as scored rows or as a dead letter with a reason: bad input, a text a model
fails on, or a row the store refuses for good.  Outages never make dead letters: while the store
is down the write is retried, and while the models fail on whole batches the batch is scored
again, backing off with fetching paused; after `models.max_attempts` tries ModelUnavailable
ends the run (exit code 6) so that the process is restarted.  Nothing is committed meanwhile.
"""

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
    DEAD_LETTERS_CUT,
    DEAD_LETTERS_GIVEN_UP,
    E2E_DELAY,
    LAG,
    MODEL_OUTAGES,
    SCORED,
    STORE_RETRIES,
    RunCounts,
)
from stream.consumer.scoring import Scored, score_items
from stream.core.errors import ModelUnavailable, ServiceUnavailable
from stream.core.interfaces import Scorer, Sink, Source
from stream.core.records import DLQ_FAILED, DLQ_TRUNCATED, BadRecord, Batch, ScoredRow
from stream.core.settings import BatchSettings, ModelSettings

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0


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
        models: ModelSettings | None = None,
        idle_exit_s: float | None = None,
        consumer_name: str = "yuqing",
        group_id: str = "",
        stats_every_s: float = 10.0,
    ) -> None:
        self.source, self.scorers, self.sink, self.batching = source, scorers, sink, batching
        self.models = models or ModelSettings()
        self.stop = stop or threading.Event()
        self.idle_exit_s = idle_exit_s
        self.consumer_name, self.group_id = consumer_name, group_id
        self.stats_every_s = stats_every_s
        self.counts = RunCounts()
        self._batch_items = 0
        self._batch_bad = 0
        self._last_stats = time.monotonic()
        self._paused = False

    def run(self) -> RunCounts:
        idle_since = time.monotonic()
        while not self.stop.is_set():
            batch = self.source.next_batch(self.batching.max_items, self.batching.max_wait_ms)  # 1. read
            if not len(batch):
                if self.source.exhausted or self._idle_too_long(idle_since):
                    break
                if self.source.rebalancing:
                    idle_since = time.monotonic()  # waiting for a rebalance is not being idle
                self._maybe_write_stats(0.0)
                continue
            started = time.perf_counter()
            scored = self._score(batch)  # 2. score (a model outage: retried, then exit)
            bad = self.sink.dead_letter([*batch.bad, *scored.bad])  # 3. dead letters to their topic, once,
            refused = self._write(scored, bad)  # then dead letters, items and rows to the store, retried
            self.source.commit(batch)  # 4. only now commit the offsets
            self._account(batch, scored.rows, [*bad, *refused], len(refused))
            self._maybe_write_stats(time.perf_counter() - started)
            idle_since = time.monotonic()
        return self.counts

    def _idle_too_long(self, idle_since: float) -> bool:
        return self.idle_exit_s is not None and time.monotonic() - idle_since >= self.idle_exit_s

    def _score(self, batch: Batch) -> Scored:
        """Score the batch; through a model outage, back off and try again, up to max_attempts."""
        delay, attempt = 1.0, 1
        while True:
            try:
                scored = score_items(batch.items, self.scorers, self.models.max_failure_share)
                self._resume("the models score again")
                return scored
            except ModelUnavailable as exc:
                self.counts.model_outages += 1
                MODEL_OUTAGES.inc()
                log.error("model outage (try %d of %d); nothing dead-lettered or committed: %s",
                          attempt, self.models.max_attempts, exc)
                if attempt >= self.models.max_attempts or self.stop.is_set():
                    raise ModelUnavailable(
                        f"the models failed {attempt} tries in a row: {exc.message}",
                        hint="the batch was not committed and is read again after a restart",
                    ) from exc
                self._hold(delay)
                delay, attempt = min(delay * 2, MAX_BACKOFF_S), attempt + 1

    def _write(self, scored: Scored, bad: list[BadRecord]) -> list[BadRecord]:
        """Store the batch; rows the store refuses for good become dead letters (published, stored)."""
        refused = self._store(scored, bad)
        if refused:
            refused = self.sink.dead_letter(refused)
            self._store(Scored(), refused)
        return refused

    def _store(self, scored: Scored, bad: list[BadRecord]) -> list[BadRecord]:
        """Retry with backoff until the store takes the batch; fetching is paused meanwhile."""
        delay = 0.5
        while True:
            try:
                refused = self.sink.write_batch(scored.rows, scored.entities, bad)
                break
            except ServiceUnavailable as exc:
                if self.stop.is_set():
                    raise StoppedBeforeWrite(str(exc)) from exc
                self.counts.store_retries += 1
                STORE_RETRIES.inc()
                log.warning("write failed, retrying in %.1fs without committing: %s", delay, exc)
                self._hold(delay)
                delay = min(delay * 2, MAX_BACKOFF_S)
        self._resume("store is back")
        return refused

    def _hold(self, delay: float) -> None:
        """Wait out a failure without reading: fetching paused, group membership kept."""
        if not self._paused:
            self.source.pause()
            self._paused = True
        self.stop.wait(delay)
        self.source.keepalive()

    def _resume(self, why: str) -> None:
        if self._paused:
            self.source.resume()
            self._paused = False
            log.warning("%s; fetching resumed", why)

    def _account(self, batch: Batch, rows: list[ScoredRow], bad: list[BadRecord], refused: int) -> None:
        c = self.counts
        lost = {(b.record.topic, b.record.partition, b.record.offset) for b in bad[len(bad) - refused :]}
        written = [r for r in rows if (r.record.topic, r.record.partition, r.record.offset) not in lost]
        c.batches += 1
        c.read += len(batch)
        c.scored_items += len(batch.items) - (len(bad) - len(batch.bad))
        c.rows_written += len(written)
        c.dead_lettered += len(bad)
        self._batch_items += len(batch.items)
        self._batch_bad += len(bad)
        BATCH_SIZE.observe(len(batch))
        for record, _ in batch.items:
            CONSUMED.labels(record.topic).inc()
        for b in bad:
            c.by_kind[b.kind] = c.by_kind.get(b.kind, 0) + 1
            DEAD_LETTERED.labels(b.kind).inc()
            if b.dlq_status == DLQ_FAILED:
                c.dlq_failed += 1
                DEAD_LETTERS_GIVEN_UP.inc()
            elif b.dlq_status == DLQ_TRUNCATED:
                DEAD_LETTERS_CUT.inc()
        now_ms = time.time() * 1000
        for r in written[: len(batch.items)]:
            if r.record.timestamp_ms:
                E2E_DELAY.observe(max(0.0, (now_ms - r.record.timestamp_ms) / 1000))
        for r in written:
            SCORED.labels(r.task, r.model_version).inc()

    def _maybe_write_stats(self, batch_seconds: float) -> None:
        if time.monotonic() - self._last_stats < self.stats_every_s:
            return
        self._last_stats = time.monotonic()
        now = dt.datetime.now(dt.UTC)
        rows = []
        for (topic, partition), (committed, end) in self.source.lag().items():
            lag = end - max(committed, 0)
            LAG.labels(topic, str(partition)).set(lag)
            rows.append(
                [
                    now,
                    self.consumer_name,
                    self.group_id,
                    topic,
                    partition,
                    committed,
                    end,
                    lag,
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
