from __future__ import annotations

import time
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer

from stream.core.errors import KafkaUnavailable
from stream.core.settings import KafkaSettings
from stream.kafka.admin import ensure_topic
from stream.kafka.clients import consumer
from stream.kafka.source import KafkaSource
from stream.tools.chaos import Broker

pytestmark = pytest.mark.integration


def test_produce_and_consume_on_the_real_broker(kafka_bootstrap: str, topic_name: str, group_name: str) -> None:
    settings = KafkaSettings(bootstrap_servers=[kafka_bootstrap])
    ensure_topic(settings, topic_name, partitions=2)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    for i in range(10):
        producer.send(topic_name, key=str(i).encode(), value=b'{"title": "t%d", "text": "x"}' % i)
    producer.send(topic_name, value=b"not json")
    producer.flush()
    producer.close()

    source = KafkaSource(settings, [topic_name], group_name)
    seen = 0
    bad = 0
    for _ in range(30):
        batch = source.next_batch(100, 500)
        seen += len(batch.items)
        bad += len(batch.bad)
        source.commit(batch)
        if seen + bad >= 11:
            break
    source.close()
    assert (seen, bad) == (10, 1)

    check = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group_name, enable_auto_commit=False)
    from kafka import TopicPartition

    committed = sum(check.committed(TopicPartition(topic_name, p)) or 0 for p in (0, 1))
    check.close()
    assert committed == 11


def test_unreachable_broker_is_a_one_line_error() -> None:
    settings = KafkaSettings(bootstrap_servers=["127.0.0.1:1"])
    with pytest.raises(KafkaUnavailable, match="no Kafka broker answered"):
        KafkaSource(settings, ["x"], "g")


def test_a_member_polled_with_a_1ms_wait_still_gets_its_partitions(
    kafka_bootstrap: str, topic_name: str, group_name: str
) -> None:
    """The leader's second join (for partitions its first join had no metadata for) outlives a
    1 ms poll: kafka-python 3.0 on its own would never finish that join, and the member would
    hold nothing, silently, for good (see stream.kafka.clients._finish_joins_in_flight)."""
    settings = KafkaSettings(bootstrap_servers=[kafka_bootstrap])
    ensure_topic(settings, topic_name, partitions=2)
    member = consumer(settings, group_name)
    try:
        member.subscribe([topic_name])
        deadline = time.monotonic() + 20
        while not member.assignment() and time.monotonic() < deadline:
            member.poll(timeout_ms=1)
        assert sorted(member.assignment()) == [(topic_name, 0), (topic_name, 1)]
    finally:
        member.close()


def test_an_idle_member_keeps_its_loop_turning_while_the_broker_is_down(tmp_path: Path) -> None:
    """Two members on one partition: one holds nothing.  With the broker gone, each of its
    next_batch calls still returns within its wait (plus a keepalive's worth), so the loop around
    it sees a stop request; no call blocks until the broker is back."""
    broker = Broker(tmp_path / "kafka")
    broker.up()
    members: list[KafkaSource] = []
    try:
        settings = KafkaSettings(bootstrap_servers=[broker.bootstrap])
        ensure_topic(settings, "one", partitions=1)
        members += [KafkaSource(settings, ["one"], "g") for _ in range(2)]
        # A fresh broker on a loaded 2-core CI host has taken over 30 s to settle a group of two;
        # the test is about what happens after, so the settling gets room.
        deadline = time.monotonic() + 90

        def settled() -> bool:  # both joined, one holds the partition
            return sum(bool(m.consumer.assignment()) for m in members) == 1 and not any(m.rebalancing for m in members)

        while time.monotonic() < deadline and not settled():
            for m in members:
                m.next_batch(10, 100)
        assert settled(), [(sorted(m.consumer.assignment()), m.rebalancing) for m in members]
        idle = next(m for m in members if not m.consumer.assignment())
        broker.down()
        slowest, until = 0.0, time.monotonic() + 12
        while time.monotonic() < until:
            started = time.monotonic()
            idle.next_batch(10, 100)
            slowest = max(slowest, time.monotonic() - started)
        assert slowest < 3.0
    finally:
        for m in members:
            m.close()  # no IO threads left behind, retrying a broker that is gone
        broker.down()
