"""The two ways to evaluate rules: live on a schedule (`alerts run`) and over a past range
(`alerts test`, a dry run that writes nothing)."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack

from tqdm import tqdm

from stream.alerts.alert import Alert
from stream.alerts.evaluate import LATE_HORIZON, AnyRule, Evaluator
from stream.alerts.notify import MAX_ATTEMPTS, Delivery, Dispatcher, KafkaAlertProducer
from stream.alerts.rules import AlertsConfig
from stream.alerts.state import MemoryState, StoreState
from stream.alerts.webhooks import WebhookSender
from stream.core.errors import ConfigError, StoreError
from stream.core.settings import KafkaSettings
from stream.core.store import Store
from stream.core.times import utcnow

log = logging.getLogger(__name__)

MAX_STEPS = 20_000
# Items scored just before a cycle can reach the store after it (batched writes, clock skew
# between hosts), so each cycle looks for late items from a little before the previous one.
LATE_OVERLAP = dt.timedelta(minutes=5)


class LiveRunner:
    """Evaluates every rule as of now, fires what is due, and repeats.  Owns its producer and
    HTTP clients (one ExitStack); the store belongs to the caller."""

    def __init__(
        self,
        store: Store,
        config: AlertsConfig,
        kafka: KafkaSettings | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
        max_attempts: int = MAX_ATTEMPTS,
        late_horizon: dt.timedelta = LATE_HORIZON,
    ) -> None:
        if not config.active_rules:
            raise ConfigError("no enabled rules to evaluate", hint="add a [[rule]] to the rules file")
        self.clock = clock
        self._stack = ExitStack()
        for hook in config.webhooks:  # fail at start, not at the first alert, on a missing env var
            hook.resolved_url()
            hook.resolved_secret()
        producer = None
        if kafka is not None and kafka.alerts_topic:
            producer = KafkaAlertProducer(kafka, kafka.alerts_topic)
            self._stack.callback(producer.close)
        senders = [WebhookSender(hook) for hook in config.webhooks]
        for sender in senders:
            self._stack.callback(sender.close)
        state = StoreState(store)
        self.evaluator = Evaluator(store, config.active_rules, state, late_horizon)
        self.dispatcher = Dispatcher(state, producer, senders, max_attempts, clock)
        self._last: dt.datetime | None = None  # the previous cycle's moment

    def cycle(self, at: dt.datetime | None = None) -> list[Delivery]:
        """One evaluation: (1) another round for unfinished deliveries, (2) evaluate the current
        window and the past ones holding items scored since the previous cycle, (3) record +
        notify each due alert, (4) flush Kafka.  Returns the alerts fired now."""
        at = at or self.clock()
        for retried in self.dispatcher.retry():
            log.info("alert %s: delivery %s after %d round(s)", retried.alert.alert_id,
                     retried.status.delivery, retried.status.attempts)
        # A new process looks back only the overlap: windows of the time no evaluator ran are
        # not caught up (as before), and what an earlier process fired is in the store.
        since = min(self._last or at, at) - LATE_OVERLAP
        due = self.evaluator.evaluate(at, scored_since=since)
        self._last = at
        deliveries = [self.dispatcher.fire(alert) for alert in due]
        self.dispatcher.flush()
        return deliveries

    def run(self, every_s: float, once: bool = False, stop: threading.Event | None = None) -> int:
        """Cycle until `stop` is set (or once); returns the number of alerts fired."""
        stop = stop or threading.Event()
        fired = 0
        while True:
            started = time.monotonic()
            try:
                deliveries = self.cycle()
            except StoreError as exc:
                if once:
                    raise
                # A store that is briefly away should not end the job; the next cycle retries.
                log.error("evaluation failed, retrying next cycle: %s", exc)
                deliveries = []
            fired += len(deliveries)
            log.info("cycle done: %d alert(s) in %.2fs", len(deliveries), time.monotonic() - started)
            if once or stop.wait(max(0.0, every_s - (time.monotonic() - started))):
                return fired

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> LiveRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def dry_run(
    store: Store,
    rules: Sequence[AnyRule],
    start: dt.datetime,
    end: dt.datetime,
    step: dt.timedelta,
    progress: bool = False,
) -> list[Alert]:
    """Evaluate as if at start, start + step, ... up to end; cool-downs are kept in memory and
    nothing is written.  Returns the alerts that would have fired, in order."""
    if step <= dt.timedelta(0):
        raise ConfigError("--step must be positive")
    if end < start:
        raise ConfigError("--to is before --from")
    steps = int((end - start) / step) + 1
    if steps > MAX_STEPS:
        raise ConfigError(f"{steps} steps is too many for a dry run", hint=f"use a larger --step (at most {MAX_STEPS})")
    state = MemoryState()
    evaluator = Evaluator(store, [r for r in rules if r.enabled], state)
    for i in tqdm(range(steps), desc="evaluating", unit="step", disable=not progress):
        for alert in evaluator.evaluate(start + i * step):
            state.record(alert)
    return state.fired
