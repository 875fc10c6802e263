"""Small Kafka admin helpers: topics for tests and tools, and group lag for `yuqing status`."""

from __future__ import annotations

from kafka import TopicPartition
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from stream.core.settings import KafkaSettings
from stream.kafka.clients import admin, consumer


def ensure_topic(settings: KafkaSettings, topic: str, partitions: int = 1) -> None:
    client = admin(settings)
    try:
        client.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    except TopicAlreadyExistsError:
        pass
    finally:
        client.close()


def group_lag(settings: KafkaSettings, group_id: str) -> list[tuple[str, int, int, int]]:
    """(topic, partition, committed offset or -1, end offset) for every partition the group committed."""
    client = admin(settings)
    try:
        committed = client.list_group_offsets({group_id: None}).get(group_id, {})
    finally:
        client.close()
    if not committed:
        return []
    reader = consumer(settings, None)
    try:
        ends = reader.end_offsets(list(committed))
    finally:
        reader.close()
    return sorted(
        (tp.topic, tp.partition, meta.offset, ends.get(TopicPartition(tp.topic, tp.partition), 0))
        for tp, meta in committed.items()
    )
