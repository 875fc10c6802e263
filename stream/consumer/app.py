"""Wiring of the consumer: open the store, the model packages, a source and the sink, and run
the loop (`stream.consumer.pipeline`) with one ExitStack owning their shutdown.  The click
commands that call this are in `stream.consumer.cli`."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from stream.consumer.metrics import RunCounts
from stream.consumer.pipeline import Pipeline
from stream.consumer.sink import ClickHouseSink
from stream.core.errors import ConfigError
from stream.core.interfaces import Scorer
from stream.core.settings import Settings
from stream.core.store import Store
from stream.kafka.dlq import DeadLetterTopic

log = logging.getLogger("yuqing.run")


def open_scorers(settings: Settings, packages: Sequence[Path] | None = None) -> list[Scorer]:
    from stream.core.scorer import OnnxScorer

    paths = list(packages if packages is not None else settings.models.packages)
    if not paths:
        raise ConfigError(
            "no model packages given", hint="pass --models PKG (see `yuqing export`) or set YUQING_MODELS__PACKAGES"
        )
    scorers: list[Scorer] = []
    for path in paths:
        scorer = OnnxScorer.open(
            path,
            device=settings.models.device,
            variant=settings.models.variant,
            intra_op_threads=settings.models.intra_op_threads,
            parallel_runs=settings.models.parallel_runs,
        )
        log.info("model %s (%s) version %s", scorer.name, ", ".join(scorer.heads), scorer.version)
        scorers.append(scorer)
    return scorers


def run_pipeline(
    settings: Settings,
    source_spec: str,
    *,
    scorers: Sequence[Scorer] | None = None,
    idle_exit_s: float | None = None,
    stop: threading.Event | None = None,
    on_source: Callable[[Any], None] | None = None,
) -> RunCounts:
    """`yuqing run`: the live consumer group, or a file source, into the store.  `on_source` sees
    the source once it is open (the bench wraps its calls with timers)."""
    from stream.consumer.file_source import FileSource
    from stream.kafka.source import KafkaSource

    def make_source() -> Any:
        if source_spec.startswith("file:"):
            return FileSource(source_spec[len("file:") :], settings.kafka.max_message_bytes)
        return KafkaSource(settings.kafka, settings.kafka.topics, settings.kafka.group_id)

    return wire_and_run(
        settings,
        make_source,
        scorers=scorers,
        idle_exit_s=idle_exit_s,
        stop=stop,
        dead_letter_topic=not source_spec.startswith("file:"),
        on_source=on_source,
    )


def wire_and_run(
    settings: Settings,
    make_source: Callable[[], Any],
    *,
    scorers: Sequence[Scorer] | None = None,
    idle_exit_s: float | None = None,
    stop: threading.Event | None = None,
    dead_letter_topic: bool = True,
    on_source: Callable[[Any], None] | None = None,
) -> RunCounts:
    """Open store, models, source and sink; one ExitStack owns their shutdown (source first)."""
    consumer_name = f"{socket.gethostname()}-{os.getpid()}"
    with ExitStack() as stack:
        store = stack.enter_context(Store(settings.store))
        store.init_schema()
        active = list(scorers) if scorers is not None else open_scorers(settings)
        dlq = DeadLetterTopic.open(settings.kafka) if dead_letter_topic else None
        sink = ClickHouseSink(store, dlq)
        stack.callback(sink.close)
        source = make_source()
        stack.callback(source.close)
        if on_source is not None:
            on_source(source)
        pipeline = Pipeline(
            source,
            active,
            sink,
            settings.batch,
            stop,
            models=settings.models,
            idle_exit_s=idle_exit_s,
            consumer_name=consumer_name,
            group_id=settings.kafka.group_id,
        )
        return pipeline.run()


def summary_line(counts: RunCounts) -> str:
    kinds = ", ".join(f"{k}={v}" for k, v in sorted(counts.by_kind.items()))
    return (
        f"read {counts.read}, scored {counts.scored_items} items ({counts.rows_written} rows), "
        f"dead-lettered {counts.dead_lettered}"
        + (f" ({kinds})" if kinds else "")
        + (f", store retries {counts.store_retries}" if counts.store_retries else "")
        + (f", model outages {counts.model_outages}" if counts.model_outages else "")
        + (f", not on the dead-letter topic {counts.dlq_failed}" if counts.dlq_failed else "")
    )
