"""The polling loop: fetch due feeds concurrently, produce their new entries, remember them.

One round, per feed (the numbered order is what makes a crash re-send rather than lose):
  1. GET with If-None-Match / If-Modified-Since; a 304 only refreshes the state.
  2. Normalize the entries; drop ids already produced (the SQLite state).
  3. Send the new items (acks=all) and flush.
  4. Record the acknowledged ids; only if all were acknowledged, store the new validators.
A feed that fails is retried after an exponential backoff of its own; the others go on.  In
the long-running loop each feed keeps its own schedule: a fetch still in flight (at most its
`timeout`) holds up only its own feed.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass, field
from typing import Protocol

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge

from stream.feeds.config import FeedConfig, FeedsFile
from stream.feeds.fetch import FetchError, FetchResult, Validators, fetch_feed, make_client
from stream.feeds.normalize import FeedItem, normalize_entry
from stream.feeds.state import IngestState

log = logging.getLogger(__name__)

MAX_FETCH_WORKERS = 8
PRUNE_EVERY_S = 86400.0


class Producer(Protocol):
    def send_all(self, items: list[FeedItem]) -> tuple[list[FeedItem], str | None]: ...


class IngestMetrics:
    """Prometheus counters, labelled by feed (its `source` name)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.polls = Counter("yuqing_ingest_polls", "Feed polls by outcome.", ["feed", "outcome"], registry=r)
        self.fetched = Counter("yuqing_ingest_entries_fetched", "Entries read from feeds.", ["feed"], registry=r)
        self.produced = Counter("yuqing_ingest_produced", "Items acknowledged by Kafka.", ["feed"], registry=r)
        self.skipped_duplicates = Counter(
            "yuqing_ingest_skipped_duplicates", "Entries skipped as already produced.", ["feed"], registry=r
        )
        self.errors = Counter("yuqing_ingest_errors", "Failures by kind.", ["feed", "kind"], registry=r)
        self.failing = Gauge("yuqing_ingest_consecutive_failures", "Failed polls in a row.", ["feed"], registry=r)
        self.last_success = Gauge(
            "yuqing_ingest_last_success_timestamp_seconds", "When the feed last polled fine.", ["feed"], registry=r
        )

    def value(self, name: str, **labels: str) -> float:
        """A counter's current value (tests and the summary line read it)."""
        got = self.registry.get_sample_value(f"{name}_total", labels)
        return float(got or 0.0)


@dataclass
class FeedSchedule:
    feed: FeedConfig
    next_at: float = 0.0
    failures: int = 0


@dataclass
class FeedOutcome:
    source: str
    outcome: str  # ok | not_modified | error
    entries: int = 0
    produced: int = 0
    duplicates: int = 0
    error_kind: str | None = None
    error: str | None = None


@dataclass
class RoundSummary:
    outcomes: list[FeedOutcome] = field(default_factory=list)

    def total(self, attr: str) -> int:
        return sum(int(getattr(o, attr)) for o in self.outcomes)

    @property
    def failed(self) -> list[str]:
        return [o.source for o in self.outcomes if o.outcome == "error"]

    def line(self) -> str:
        text = (
            f"polled {len(self.outcomes)} feed(s): {self.total('produced')} new item(s), "
            f"{self.total('duplicates')} already produced, "
            f"{sum(o.outcome == 'not_modified' for o in self.outcomes)} not modified"
        )
        return text + (f", failed: {', '.join(self.failed)}" if self.failed else "")


class Ingester:
    def __init__(
        self,
        feeds: FeedsFile,
        producer: Producer,
        state: IngestState,
        metrics: IngestMetrics | None = None,
        *,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.feeds = feeds
        self.producer = producer
        self.state = state
        self.metrics = metrics or IngestMetrics()
        self.client = client or make_client(feeds.user_agent)
        self.clock = clock
        self.schedule = [FeedSchedule(feed) for feed in feeds.feeds]
        self._last_prune = float("-inf")
        self.retrying = True  # False in a single round (--once): nothing will be retried

    # -- one feed --------------------------------------------------------------------------
    def backoff(self, failures: int) -> float:
        """Seconds before retrying a feed that failed `failures` times in a row (±10% jitter)."""
        base = min(self.feeds.backoff_max, self.feeds.backoff_base * 2 ** (failures - 1))
        return base * random.uniform(0.9, 1.1)

    def _fetch(self, feed: FeedConfig, validators: Validators) -> FetchResult:
        return fetch_feed(
            self.client, feed.url, validators, self.feeds.timeout_for(feed), self.feeds.allowed_for(feed)
        )

    def _failed(self, entry: FeedSchedule, kind: str, message: str, outcome: FeedOutcome) -> FeedOutcome:
        entry.failures += 1
        delay = self.backoff(entry.failures)
        entry.next_at = self.clock() + delay
        name = entry.feed.source
        self.metrics.errors.labels(name, kind).inc()
        self.metrics.polls.labels(name, "error").inc()
        self.metrics.failing.labels(name).set(entry.failures)
        if self.retrying:
            log.warning("feed %s: %s (failure %d, retry in %.0fs)", name, message, entry.failures, delay)
        else:
            log.warning("feed %s: %s", name, message)
        outcome.outcome, outcome.error_kind, outcome.error = "error", kind, message
        return outcome

    def _handle(self, entry: FeedSchedule, result: FetchResult) -> FeedOutcome:
        feed, name = entry.feed, entry.feed.source
        outcome = FeedOutcome(name, "ok")
        if result.not_modified:
            self.state.touch_feed(feed.url)
            outcome.outcome = "not_modified"
        else:
            if result.warning:
                log.warning("feed %s: %s", name, result.warning)
            now = dt.datetime.now(dt.UTC)
            items: dict[str, FeedItem] = {}
            for raw in result.entries:
                try:
                    item = normalize_entry(raw, feed, result.feed_lang, now)
                except Exception as exc:  # one odd entry must not cost the feed
                    self.metrics.errors.labels(name, "bad_entry").inc()
                    log.warning("feed %s: skipped an entry: %s", name, exc)
                    continue
                if item is not None:
                    items.setdefault(item.id, item)
            outcome.entries = len(result.entries)
            self.metrics.fetched.labels(name).inc(outcome.entries)
            known = self.state.known(list(items))
            self.state.touch(known)
            new = sorted((i for i in items.values() if i.id not in known), key=lambda i: i.published_at)
            outcome.duplicates = len(items) - len(new)
            self.metrics.skipped_duplicates.labels(name).inc(outcome.duplicates)
            acked, error = self.producer.send_all(new) if new else ([], None)
            self.state.record(feed.url, [i.id for i in acked])
            outcome.produced = len(acked)
            self.metrics.produced.labels(name).inc(len(acked))
            if error is not None or len(acked) < len(new):
                # Validators stay as they were, so the next poll fetches the feed in full again.
                return self._failed(
                    entry, "produce", f"{len(new) - len(acked)} item(s) not acknowledged: {error}", outcome
                )
            self.state.save_validators(feed.url, result.validators)
        entry.failures = 0
        entry.next_at = self.clock() + self.feeds.interval_for(feed)
        self.metrics.polls.labels(name, outcome.outcome).inc()
        self.metrics.failing.labels(name).set(0)
        self.metrics.last_success.labels(name).set(time.time())
        log.info(
            "feed %s: %s, %d entries, %d new, %d already produced",
            name, outcome.outcome, outcome.entries, outcome.produced, outcome.duplicates,
        )
        return outcome

    # -- rounds ----------------------------------------------------------------------------
    def due(self) -> list[FeedSchedule]:
        now = self.clock()
        return [entry for entry in self.schedule if entry.next_at <= now]

    def _prune_if_due(self) -> None:
        if self.clock() - self._last_prune >= PRUNE_EVERY_S:
            forgotten = self.state.prune()
            self._last_prune = self.clock()
            if forgotten:
                log.info("forgot %d ids no feed has shown for a long time", forgotten)

    def _submit(self, pool: ThreadPoolExecutor, entry: FeedSchedule) -> Future[FetchResult]:
        entry.next_at = math.inf  # in flight: not due again until its outcome sets the next time
        return pool.submit(self._fetch, entry.feed, self.state.validators(entry.feed.url))

    def _complete(self, entry: FeedSchedule, future: Future[FetchResult]) -> FeedOutcome:
        """Handle a finished fetch in this thread (state and producer are not shared with the fetchers)."""
        try:
            result = future.result()
        except FetchError as exc:
            return self._failed(entry, exc.kind, str(exc), FeedOutcome(entry.feed.source, "error"))
        except Exception as exc:  # a parser bug on one feed must not stop the others
            log.exception("feed %s: unexpected failure", entry.feed.source)
            return self._failed(entry, "unexpected", repr(exc), FeedOutcome(entry.feed.source, "error"))
        return self._handle(entry, result)

    def poll(self, entries: list[FeedSchedule] | None = None) -> RoundSummary:
        """One round: fetch the given feeds (default: those due) concurrently and wait for them all."""
        entries = self.due() if entries is None else entries
        summary = RoundSummary()
        if not entries:
            return summary
        self._prune_if_due()
        with ThreadPoolExecutor(max_workers=min(MAX_FETCH_WORKERS, len(entries)), thread_name_prefix="feed") as pool:
            futures = {self._submit(pool, e): e for e in entries}
            for future in as_completed(futures):
                summary.outcomes.append(self._complete(futures[future], future))
        return summary

    def run(self, stop: threading.Event, *, once: bool = False) -> RoundSummary:
        """Poll until `stop` is set, each feed when it is due; `once`: one round of every feed.

        Fetches in flight when `stop` is set are finished (and produced) first.  Returns the
        outcomes since the loop was last idle (nothing in flight).
        """
        self.retrying = not once
        if once:
            return RoundSummary() if stop.is_set() else self.poll(self.schedule)
        last = summary = RoundSummary()
        in_flight: dict[Future[FetchResult], FeedSchedule] = {}
        with ThreadPoolExecutor(max_workers=MAX_FETCH_WORKERS, thread_name_prefix="feed") as pool:
            while in_flight or not stop.is_set():
                due = [] if stop.is_set() else self.due()
                if due:
                    self._prune_if_due()
                for entry in due:
                    in_flight[self._submit(pool, entry)] = entry
                wait_s = max(0.05, min(entry.next_at for entry in self.schedule) - self.clock())
                if not in_flight:
                    stop.wait(wait_s)
                    continue
                done, _ = wait(in_flight, timeout=None if math.isinf(wait_s) else wait_s, return_when=FIRST_COMPLETED)
                for future in done:
                    summary.outcomes.append(self._complete(in_flight.pop(future), future))
                if summary.outcomes and not in_flight:
                    log.info("%s", summary.line())
                    last, summary = summary, RoundSummary()
        return last

    def close(self) -> None:
        self.client.close()
