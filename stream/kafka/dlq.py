"""The dead-letter topic: each bad message, unchanged, on `<topic><suffix>` with the reason in headers."""

from __future__ import annotations

from collections.abc import Sequence

from kafka import KafkaProducer

from stream.core.records import BadRecord


class DeadLetterTopic:
    """Produces each bad message, unchanged, to `<topic><suffix>` with the reason in headers."""

    def __init__(self, producer: KafkaProducer, suffix: str) -> None:
        self.producer = producer
        self.suffix = suffix

    def send(self, bad: Sequence[BadRecord]) -> None:
        if not bad:
            return
        futures = []
        for b in bad:
            rec = b.record
            headers = [
                ("yuqing.error.kind", b.kind.encode()),
                ("yuqing.error", b.error.encode("utf-8", "replace")[:1000]),
                ("yuqing.source.topic", rec.topic.encode()),
                ("yuqing.source.partition", str(rec.partition).encode()),
                ("yuqing.source.offset", str(rec.offset).encode()),
            ]
            futures.append(
                self.producer.send(rec.topic + self.suffix, value=rec.value, key=rec.key, headers=headers)
            )
        self.producer.flush()
        for f in futures:
            f.get(timeout=30)  # raises if the broker did not take it: the batch is then retried

    def close(self) -> None:
        self.producer.close()
