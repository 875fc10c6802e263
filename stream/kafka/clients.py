"""kafka-python client factories: our settings in, KafkaUnavailable out when no broker answers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import KafkaConnectionError, KafkaTimeoutError

from stream.core.errors import KafkaUnavailable
from stream.core.settings import KafkaSettings

T = TypeVar("T")

# Fail fast when nobody answers: a mistyped --bootstrap should not hang for kafka-python's 30 s.
BOOTSTRAP_TIMEOUT_MS = 10_000


def _connect(factory: Callable[..., T], settings: KafkaSettings, **extra: Any) -> T:
    options = {"bootstrap_timeout_ms": BOOTSTRAP_TIMEOUT_MS, **settings.client_options(), **extra}
    try:
        return factory(**options)
    except (KafkaTimeoutError, KafkaConnectionError) as exc:
        raise KafkaUnavailable(
            f"no Kafka broker answered at {','.join(settings.bootstrap_servers)} ({exc})",
            hint="check --bootstrap / YUQING_KAFKA__BOOTSTRAP_SERVERS, or start one with `make kafka-up`",
        ) from None


def consumer(settings: KafkaSettings, group_id: str | None, **extra: Any) -> KafkaConsumer:
    return _connect(
        KafkaConsumer,
        settings,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        # Aborted transactions are never scored, and a replay sees what the live consumer saw.
        isolation_level="read_committed",
        max_partition_fetch_bytes=max(1_048_576, settings.max_message_bytes * 2),
        **extra,
    )


def producer(settings: KafkaSettings, **extra: Any) -> KafkaProducer:
    return _connect(KafkaProducer, settings, acks="all", linger_ms=5, **extra)


def admin(settings: KafkaSettings) -> KafkaAdminClient:
    return _connect(KafkaAdminClient, settings)
