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
    member = _connect(
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
    if group_id is not None:
        _finish_joins_in_flight(member)
    return member


def _finish_joins_in_flight(member: KafkaConsumer) -> None:
    """kafka-python 3.0 leaves a group join in flight when poll()'s timeout ends first, and
    awaits it again on a later poll only while `need_rejoin()` holds.  A leader rejoining for
    partitions it has just learned of (a topic created moments before, partitions added) stops
    "needing" it as soon as it computes the assignment, before the SyncGroup answer is back; so
    a short poll then strands the member: no partitions, heartbeats off, for good.  A join in
    flight still needs finishing; the library's own loop does the rest."""
    coordinator = getattr(member, "_coordinator", None)
    if coordinator is None or not hasattr(coordinator, "_join_task"):
        return  # a later release whose join loop has no such task is left as it is
    needs_rejoin = coordinator.need_rejoin

    def need_rejoin() -> bool:
        return bool(needs_rejoin()) or coordinator._join_task is not None

    coordinator.need_rejoin = need_rejoin


def producer(settings: KafkaSettings, **extra: Any) -> KafkaProducer:
    return _connect(KafkaProducer, settings, acks="all", linger_ms=5, **extra)


def admin(settings: KafkaSettings) -> KafkaAdminClient:
    return _connect(KafkaAdminClient, settings)
