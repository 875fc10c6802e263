"""Fire an alert: record it, then tell Kafka and the webhooks; finish unfinished deliveries.

The order is the contract: (1) the `alerts` table first, with delivery 'pending', so a crash after
it never fires the same incident again; (2) the Kafka alerts topic (flushed at the end of each
cycle); (3) each webhook that wants it, with its own retries.  The outcome of that round is
written back: 'delivered' once every webhook that wants the alert accepted it, else 'pending'
(the next cycle tries the webhooks that have not accepted it yet) until `max_attempts` rounds,
then 'failed'.  Delivery is at least once: a crash between a webhook's answer and the write of
the round repeats that webhook's post (the body carries the alert id).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from kafka.errors import KafkaError

from stream.alerts.alert import Alert, DeliveryState, DeliveryStatus
from stream.alerts.state import StoreState
from stream.alerts.webhooks import DeliveryError, WebhookSender
from stream.core.settings import KafkaSettings
from stream.core.times import utcnow

log = logging.getLogger(__name__)


class KafkaAlertProducer:
    """Publishes alerts as JSON to one topic, keyed by alert id."""

    def __init__(self, settings: KafkaSettings, topic: str) -> None:
        from stream.kafka.clients import producer  # only when a topic is configured

        self.topic = topic
        self.producer = producer(settings)

    def send(self, alert: Alert) -> None:
        value = json.dumps(alert.to_dict(), ensure_ascii=False).encode()
        self.producer.send(self.topic, key=alert.alert_id.encode(), value=value)

    def flush(self, timeout_s: float = 30.0) -> None:
        self.producer.flush(timeout=timeout_s)

    def close(self) -> None:
        self.producer.close(timeout=10)


MAX_ATTEMPTS = 10  # delivery rounds before an alert is marked 'failed'
RETRY_BATCH = 50  # pending alerts retried per cycle, oldest first


@dataclass
class Delivery:
    alert: Alert
    status: DeliveryStatus
    delivered: list[str] = field(default_factory=list)  # webhook names, this round
    failed: list[str] = field(default_factory=list)


class Dispatcher:
    def __init__(
        self,
        state: StoreState,
        producer: KafkaAlertProducer | None = None,
        senders: Sequence[WebhookSender] = (),
        max_attempts: int = MAX_ATTEMPTS,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self.state = state
        self.producer = producer
        self.senders = list(senders)
        self.max_attempts = max_attempts
        self.clock = clock

    def fire(self, alert: Alert) -> Delivery:
        targets = self._targets(alert, ())
        fired = DeliveryStatus("pending" if targets else "delivered")
        self.state.record(alert, fired, self.clock())
        log.warning("alert %s", alert.message)
        if self.producer is not None:
            try:
                self.producer.send(alert)
            except KafkaError as exc:
                log.error("alert %s: Kafka send failed: %s", alert.alert_id, exc)
        return self._deliver(alert, fired, targets) if targets else Delivery(alert, fired)

    def retry(self, limit: int = RETRY_BATCH) -> list[Delivery]:
        """One more round for the alerts whose delivery is unfinished (from any earlier process)."""
        return [
            self._deliver(alert, status, self._targets(alert, status.delivered_to))
            for alert, status in self.state.pending(limit)
        ]

    def _targets(self, alert: Alert, done: Sequence[str]) -> list[WebhookSender]:
        return [s for s in self.senders if s.hook.wants(alert.rule, alert.severity) and s.hook.name not in done]

    def _deliver(self, alert: Alert, status: DeliveryStatus, targets: Sequence[WebhookSender]) -> Delivery:
        delivered: list[str] = []
        failed: list[str] = []
        errors: list[str] = []
        for sender in targets:
            try:
                sender.send(alert)
                delivered.append(sender.hook.name)
            except DeliveryError as exc:
                log.error("%s", exc)
                failed.append(sender.hook.name)
                errors.append(str(exc))
        attempts = status.attempts + 1
        outcome: DeliveryState
        if not failed:
            outcome = "delivered"
        elif attempts >= self.max_attempts:
            outcome = "failed"
            log.error("alert %s: giving up on %s after %d round(s)", alert.alert_id, ", ".join(failed), attempts)
        else:
            outcome = "pending"
        after = DeliveryStatus(
            outcome,
            attempts,
            status.delivered_to + tuple(delivered),
            # The last failure stays on record after a later round succeeds: why it took long.
            "; ".join(errors) or status.last_error,
        )
        self.state.record(alert, after, self.clock())
        return Delivery(alert, after, delivered, failed)

    def flush(self) -> None:
        if self.producer is not None:
            try:
                self.producer.flush()
            except KafkaError as exc:
                log.error("alerts topic flush failed: %s", exc)
