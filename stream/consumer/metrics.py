"""Prometheus metrics of the consumer (served on --metrics-port) and plain counters for summaries."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import Counter, Gauge, Histogram, start_http_server

CONSUMED = Counter("yuqing_consumed_total", "Messages read from the source", ["topic"])
SCORED = Counter("yuqing_scored_total", "Rows scored and written", ["task", "model_version"])
DEAD_LETTERED = Counter("yuqing_dead_lettered_total", "Messages sent to the dead-letter path", ["kind"])
TRUNCATED = Counter("yuqing_truncated_total", "Texts longer than the model's max_length", ["model_version"])
STORE_RETRIES = Counter("yuqing_store_retries_total", "Failed store writes that were retried")
DEAD_LETTERS_GIVEN_UP = Counter("yuqing_dlq_failed_total", "Dead letters the dead-letter topic did not take (given up)")
DEAD_LETTERS_CUT = Counter("yuqing_dlq_truncated_total", "Dead letters sent to the dead-letter topic as a prefix")
DEAD_LETTERS_UNSTORED = Counter("yuqing_dead_letters_unstored_total", "Dead letters the store refused to keep")
MODEL_OUTAGES = Counter("yuqing_model_outages_total", "Batches the models failed as a whole (retried, not committed)")
BATCH_SIZE = Histogram("yuqing_batch_items", "Items per batch", buckets=(1, 8, 32, 64, 128, 256, 512, 1024))
MODEL_SECONDS = Histogram("yuqing_model_seconds", "Model time per batch", ["model_version"])
INSERT_SECONDS = Histogram("yuqing_insert_seconds", "Store insert time per batch")
E2E_DELAY = Histogram(
    "yuqing_end_to_end_seconds",
    "Kafka timestamp to row written",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
)
LAG = Gauge("yuqing_consumer_lag", "End offset minus the last committed offset", ["topic", "partition"])


def serve(port: int | None) -> None:
    if port:
        start_http_server(port)


@dataclass
class RunCounts:
    """What one run did, for the summary line and tests."""

    read: int = 0
    scored_items: int = 0
    rows_written: int = 0
    dead_lettered: int = 0
    batches: int = 0
    store_retries: int = 0
    model_outages: int = 0
    dlq_failed: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
