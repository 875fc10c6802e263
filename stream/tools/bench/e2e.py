"""The consumer end to end, Kafka -> scoring -> store, against raw ONNX Runtime on the same texts.

Runs inside a worker process: the texts go to a fresh topic as news items first, then the real
pipeline (`run_pipeline` with the case's scorer) drains it into a fresh chdb store until idle.
The rate counts from the start of the poll that returned the first items to the end of the last
offset commit, so neither the set-up before it (store schema, model, filling the topic) nor the
idle wait after it is in the figure.  The same scorer object scores the items' model texts
directly, in chunks of the same micro-batch size, once before and once after the pipeline run:
that is the raw figure the end-to-end rate is compared with.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

from stream.tools.bench.cases import Case, Timing, percentiles_ms, time_calls


class Window:
    """Wraps a source's next_batch/commit and the scorer to time the busy window, each batch's
    turn (poll start to commit done) and where a turn goes, in wall and process CPU seconds:
    poll, prepare (poll to scoring), score, write (scoring to commit) and commit."""

    STAGES = ("poll", "prepare", "score", "write", "commit")

    def __init__(self) -> None:
        self.first_poll: float | None = None
        self.last_commit: float | None = None
        self.cpu = [0.0, 0.0]  # process CPU time at the first poll and the last commit
        self.turns: list[float] = []
        self.wall_s = dict.fromkeys(self.STAGES, 0.0)
        self.cpu_s = dict.fromkeys(self.STAGES, 0.0)
        self._batch_started = 0.0
        self._mark = (0.0, 0.0)

    def _stage_done(self, stage: str) -> float:
        now = (time.perf_counter(), time.process_time())
        self.wall_s[stage] += now[0] - self._mark[0]
        self.cpu_s[stage] += now[1] - self._mark[1]
        self._mark = now
        return now[0]

    def attach(self, source: Any) -> None:
        next_batch, commit = source.next_batch, source.commit

        def timed_next_batch(max_items: int, max_wait_ms: int) -> Any:
            started = (time.perf_counter(), time.process_time())
            batch = next_batch(max_items, max_wait_ms)
            if len(batch):
                if self.first_poll is None:
                    self.first_poll, self.cpu[0] = started
                self._batch_started, self._mark = started[0], started
                self._stage_done("poll")
            return batch

        def timed_commit(batch: Any) -> None:
            self._stage_done("write")
            commit(batch)
            self.last_commit = self._stage_done("commit")
            self.cpu[1] = self._mark[1]
            self.turns.append(self.last_commit - self._batch_started)

        setattr(source, "next_batch", timed_next_batch)  # noqa: B010 (instance attribute over the method)
        setattr(source, "commit", timed_commit)  # noqa: B010

    def timed_scorer(self, scorer: Any) -> Any:
        window = self

        class TimedScorer:
            name, version, heads, max_length = scorer.name, scorer.version, scorer.heads, scorer.max_length

            def analyze(self, texts: list[str]) -> Any:
                window._stage_done("prepare")
                out = scorer.analyze(texts)
                window._stage_done("score")
                return out

        return TimedScorer()

    @property
    def seconds(self) -> float:
        if self.first_poll is None or self.last_commit is None:
            return 0.0
        return self.last_commit - self.first_poll


def news_payloads(texts: list[str], run_id: str) -> list[bytes]:
    """One news item per text, text only, so the model text is the text itself."""
    return [
        json.dumps({"id": f"{run_id}-{i}", "source": "bench", "url": "", "title": "", "text": text},
                   ensure_ascii=False).encode()
        for i, text in enumerate(texts)
    ]


def model_texts(payloads: list[bytes], max_bytes: int) -> list[str]:
    """What the pipeline will score for each payload, parsed by the pipeline's own parser."""
    from stream.core.items import classify
    from stream.core.records import NewsItem, SourceRecord

    out = []
    for i, value in enumerate(payloads):
        item = classify(SourceRecord("bench", 0, i, None, None, value), max_bytes)
        if not isinstance(item, NewsItem):
            raise ValueError(f"bench item {i} is not a valid news item: {item.error}")
        out.append(item.model_text)
    return out


def run_e2e(spec: dict[str, Any], case: Case, texts: list[str]) -> dict[str, Any]:
    from stream.consumer.app import run_pipeline
    from stream.core.settings import load_settings
    from stream.core.store import Store
    from stream.kafka.admin import ensure_topic
    from stream.kafka.clients import admin, producer
    from stream.tools.bench.worker import analysis_labels, open_scorer, peak_rss_mb, primary_head

    options: dict[str, Any] = spec["e2e"]
    run_id = f"bench-{uuid.uuid4().hex[:10]}"
    config = Path(options["config_path"]) if options.get("config_path") else None
    settings = load_settings(config, {
        "kafka": {"bootstrap_servers": options.get("bootstrap"), "topics": [run_id], "group_id": run_id},
        "store": {"dsn": f"chdb://{options['store_dir']}", "database": "bench"},
        "batch": {"max_items": case.chunk},
    })
    # The texts, repeated until they fill a few micro-batches (see e2e_repeat).
    items = texts * max(1, int(options.get("repeat", 1)))
    payloads = news_payloads(items, run_id)
    inputs = model_texts(payloads, settings.kafka.max_message_bytes)

    scorer = open_scorer(spec, case)
    before = time_calls(analysis_labels(scorer), inputs, case.chunk, spec["warmup"])
    raw_rss = peak_rss_mb()

    ensure_topic(settings.kafka, run_id, partitions=1)
    kafka_producer = producer(settings.kafka, batch_size=256 * 1024)
    for i, value in enumerate(payloads):
        kafka_producer.send(run_id, value=value, key=str(i).encode())
    kafka_producer.flush()
    kafka_producer.close()

    window = Window()
    idle_s = float(options.get("idle_s", 3.0))
    try:
        counts = run_pipeline(settings, "kafka", scorers=[window.timed_scorer(scorer)], idle_exit_s=idle_s,
                              on_source=window.attach)
    finally:
        _delete_topic(admin, settings, run_id)
    # Raw again after the pipeline: the two raw passes bracket it, so a change in the host's load
    # during the run moves both figures alike.
    after = time_calls(analysis_labels(scorer), inputs, case.chunk, 0)
    raw = raw_figures(before, after, raw_rss)
    raw_labels = before.labels
    with Store(settings.store) as store:
        rows = store.rows("SELECT id, label FROM bench.scored FINAL WHERE task = {head:String}",
                          {"head": primary_head(scorer.heads)})
        stored = {table: int(store.scalar(f"SELECT count() FROM bench.{table} FINAL"))
                  for table in ("items", "scored", "entities")}
    by_id = dict(rows)
    labels = [str(by_id.get(f"{run_id}-{i}", "")) for i in range(len(items))]
    n = len(items)
    lat = [t * 1000 for t in window.turns] or [0.0]

    return {
        "items": n,
        "seconds": round(window.seconds, 4),
        "items_per_s": n / window.seconds if window.seconds > 0 else 0.0,
        "calls": len(window.turns),
        "cpu_seconds": round(window.cpu[1] - window.cpu[0], 3),
        "stages_s": {k: round(v, 3) for k, v in window.wall_s.items()},
        "stages_cpu_s": {k: round(v, 3) for k, v in window.cpu_s.items()},
        "latency_ms": percentiles_ms(lat),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "labels": labels[: len(texts)],
        "provider": scorer.provider,
        "raw_onnx": raw,
        "pipeline": {"read": counts.read, "scored_items": counts.scored_items, "rows_written": counts.rows_written,
                     "dead_lettered": counts.dead_lettered, "batches": counts.batches,
                     "rows_in_store": len(rows), "stored_rows": stored, "heads": list(scorer.heads),
                     "idle_exit_s": idle_s,
                     "same_labels_as_raw": labels == raw_labels},
    }


def raw_figures(before: Timing, after: Timing, rss_mb: float) -> dict[str, Any]:
    both = Timing(before.items + after.items, before.seconds + after.seconds, before.latencies + after.latencies,
                  [], before.cpu_seconds + after.cpu_seconds)
    return both.summary() | {"peak_rss_mb": round(rss_mb, 1), "passes_items_per_s": [
        round(t.items / t.seconds, 2) if t.seconds > 0 else 0.0 for t in (before, after)]}


E2E_MICRO_BATCHES = 4


def e2e_repeat(n_texts: int, micro_batch: int) -> int:
    """How often the e2e case sends the texts so that they fill at least E2E_MICRO_BATCHES
    micro-batches: a consumer runs for hours, so its one-time costs (joining the group, the first
    fetch) should not weigh as if it ran for one batch."""
    return max(1, -(-E2E_MICRO_BATCHES * micro_batch // max(n_texts, 1)))


def _delete_topic(admin: Any, settings: Any, topic: str) -> None:
    """Best effort: the bench leaves no topic behind."""
    try:
        client = admin(settings.kafka)
        try:
            client.delete_topics([topic])
        finally:
            client.close()
    except Exception:  # a leftover topic is harmless; the figures are already taken
        pass
