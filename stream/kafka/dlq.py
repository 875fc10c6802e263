"""The dead-letter topic: each bad message on `<topic><suffix>` with the reason in headers.

A dead letter never blocks the stream: a message larger than `kafka.dlq_max_bytes` (key and
value) goes as a prefix, with headers saying so (``yuqing.truncated``, ``yuqing.original.size``,
``yuqing.original.sha256``); a produce the broker refuses (a missing topic, a smaller topic limit)
is tried `kafka.dlq_attempts` times and then given up.  Each BadRecord comes back with what
happened (`dlq_status`, `dlq_error`), which its dead_letters row records.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Sequence

from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError

from stream.core.items import error_text
from stream.core.records import DLQ_FAILED, DLQ_SENT, DLQ_TRUNCATED, BadRecord
from stream.core.settings import KafkaSettings
from stream.kafka.clients import producer

log = logging.getLogger(__name__)

# Room for the headers and the record framing above dlq_max_bytes in one produce request.
_REQUEST_HEADROOM = 64 * 1024
# A produce waits at most this long for the topic's metadata or the broker's answer.
_WAIT_MS = 5_000


class DeadLetterTopic:
    """Produces each bad message to `<topic><suffix>` with the reason in headers."""

    def __init__(
        self, producer: KafkaProducer, suffix: str, *, max_bytes: int, attempts: int = 3, backoff_s: float = 0.5
    ) -> None:
        self.producer = producer
        self.suffix = suffix
        self.max_bytes = max_bytes
        self.attempts = attempts
        self.backoff_s = backoff_s

    @classmethod
    def open(cls, settings: KafkaSettings) -> DeadLetterTopic:
        client = producer(
            settings,
            max_request_size=settings.dlq_max_bytes + _REQUEST_HEADROOM,
            max_block_ms=_WAIT_MS,
            request_timeout_ms=_WAIT_MS,
            delivery_timeout_ms=3 * _WAIT_MS,
        )
        return cls(client, settings.dlq_suffix, max_bytes=settings.dlq_max_bytes, attempts=settings.dlq_attempts)

    def send(self, bad: Sequence[BadRecord]) -> list[BadRecord]:
        """Produce every record, retrying failures a bounded number of times; never raises."""
        status: dict[int, str] = {}
        pending = dict(enumerate(bad))
        errors: dict[int, str] = {}
        for attempt in range(self.attempts):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            errors = self._produce(pending, status)
            pending = {i: pending[i] for i in errors}
            if not pending:
                break
        for i, error in errors.items():
            log.error("dead letter %s[%d]@%d not produced after %d attempts: %s", bad[i].record.topic,
                      bad[i].record.partition, bad[i].record.offset, self.attempts, error)
        return [
            dataclasses.replace(b, dlq_status=DLQ_FAILED, dlq_error=errors[i]) if i in errors
            else dataclasses.replace(b, dlq_status=status[i])
            for i, b in enumerate(bad)
        ]

    def _produce(self, pending: dict[int, BadRecord], status: dict[int, str]) -> dict[int, str]:
        """One try for every pending record; fills `status` for those the broker took, returns the errors."""
        futures = {}
        errors: dict[int, str] = {}
        unreachable: dict[str, str] = {}  # topic -> error: one metadata timeout is enough per try
        for i, b in pending.items():
            topic = b.record.topic + self.suffix
            if topic in unreachable:
                errors[i] = unreachable[topic]
                continue
            key, value, headers, status[i] = self._message(b)
            try:
                futures[i] = self.producer.send(topic, value=value, key=key, headers=headers)
            except KafkaError as exc:
                errors[i] = error_text(f"{type(exc).__name__}: {exc}")
                if isinstance(exc, KafkaTimeoutError):
                    unreachable[topic] = errors[i]
        try:
            self.producer.flush(timeout=3 * _WAIT_MS / 1000)
        except KafkaError as exc:  # the futures below say which records it concerns
            log.debug("dead-letter flush: %s", exc)
        for i, future in futures.items():
            try:
                future.get(timeout=_WAIT_MS / 1000)
            except KafkaError as exc:
                errors[i] = error_text(f"{type(exc).__name__}: {exc}")
        return errors

    def _message(self, b: BadRecord) -> tuple[bytes | None, bytes, list[tuple[str, bytes]], str]:
        rec = b.record
        headers = [
            ("yuqing.error.kind", b.kind.encode()),
            ("yuqing.error", b.error.encode("utf-8", "replace")[:1000]),
            ("yuqing.source.topic", rec.topic.encode()),
            ("yuqing.source.partition", str(rec.partition).encode()),
            ("yuqing.source.offset", str(rec.offset).encode()),
        ]
        room = max(0, self.max_bytes - len(rec.key or b""))
        if len(rec.value) <= room:
            return rec.key, rec.value, headers, DLQ_SENT
        headers += [
            ("yuqing.truncated", b"true"),
            ("yuqing.original.size", str(len(rec.value)).encode()),
            ("yuqing.original.sha256", hashlib.sha256(rec.value).hexdigest().encode()),
        ]
        return rec.key, rec.value[:room], headers, DLQ_TRUNCATED

    def close(self) -> None:
        self.producer.close()
