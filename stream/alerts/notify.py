"""Fire an alert: record it, then tell Kafka and the webhooks.

The order is the contract: (1) the `alerts` table first, so a crash after it never fires the same
incident again; (2) the Kafka alerts topic (flushed at the end of each cycle); (3) each webhook
that wants it, with its own retries.  A failed delivery is logged and counted, never re-fired.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from kafka.errors import KafkaError

from stream.alerts.alert import Alert
from stream.alerts.state import AlertState
from stream.alerts.webhooks import DeliveryError, WebhookSender
from stream.core.settings import KafkaSettings

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


@dataclass
class Delivery:
    alert: Alert
    delivered: list[str] = field(default_factory=list)  # webhook names
    failed: list[str] = field(default_factory=list)


class Dispatcher:
    def __init__(
        self,
        state: AlertState,
        producer: KafkaAlertProducer | None = None,
        senders: Sequence[WebhookSender] = (),
    ) -> None:
        self.state = state
        self.producer = producer
        self.senders = list(senders)

    def fire(self, alert: Alert) -> Delivery:
        self.state.record(alert)
        log.warning("alert %s", alert.message)
        if self.producer is not None:
            try:
                self.producer.send(alert)
            except KafkaError as exc:
                log.error("alert %s: Kafka send failed: %s", alert.alert_id, exc)
        delivery = Delivery(alert)
        for sender in self.senders:
            if not sender.hook.wants(alert.rule, alert.severity):
                continue
            try:
                sender.send(alert)
                delivery.delivered.append(sender.hook.name)
            except DeliveryError as exc:
                log.error("%s", exc)
                delivery.failed.append(sender.hook.name)
        return delivery

    def flush(self) -> None:
        if self.producer is not None:
            try:
                self.producer.flush()
            except KafkaError as exc:
                log.error("alerts topic flush failed: %s", exc)
