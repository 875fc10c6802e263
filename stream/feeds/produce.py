"""The Kafka side of ingest: send items keyed by id, stamped with their published time."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from kafka.errors import KafkaError, KafkaTimeoutError

from stream.core.settings import KafkaSettings
from stream.feeds.normalize import FeedItem
from stream.kafka import clients as kafka_clients

log = logging.getLogger(__name__)


class ItemProducer:
    """An acks=all producer; `send_all` returns only the items the brokers acknowledged.

    Construction raises KafkaUnavailable when no broker answers (stream.kafka.clients).
    """

    def __init__(self, kafka: KafkaSettings, topic: str, *, flush_timeout_s: float = 60.0) -> None:
        self.topic = topic
        self.max_message_bytes = kafka.max_message_bytes
        self.flush_timeout_s = flush_timeout_s
        self.producer = kafka_clients.producer(
            kafka,
            # send() waits this long for metadata when the broker is away mid-run
            max_block_ms=15_000,
            request_timeout_ms=15_000,
            delivery_timeout_ms=45_000,
            max_request_size=max(kafka.max_message_bytes + 4096, 1_048_576),
        )

    def send_all(self, items: Sequence[FeedItem]) -> tuple[list[FeedItem], str | None]:
        """Send, flush, and return (acknowledged items, first error or None)."""
        futures: list[tuple[FeedItem, Any]] = []
        error: str | None = None
        for item in items:
            try:
                future = self.producer.send(
                    self.topic,
                    key=item.id.encode("utf-8"),
                    value=item.to_json(self.max_message_bytes),
                    timestamp_ms=item.timestamp_ms,
                )
            except KafkaError as exc:  # metadata unavailable: the broker is away
                error = f"{type(exc).__name__}: {exc}"
                break
            futures.append((item, future))
        try:
            self.producer.flush(timeout=self.flush_timeout_s)
        except KafkaTimeoutError as exc:
            error = error or f"flush timed out: {exc}"
        acked = []
        for item, future in futures:
            if future.is_done and future.succeeded():
                acked.append(item)
            elif error is None:
                failure = future.exception if future.is_done else None
                error = f"{type(failure).__name__}: {failure}" if failure else "not acknowledged in time"
        return acked, error

    def close(self) -> None:
        try:
            self.producer.flush(timeout=self.flush_timeout_s)
        finally:
            self.producer.close(timeout=10)
