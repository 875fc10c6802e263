"""What the store's write path costs: `yuqing bench --only storage [--package PKG]`.

1. **bytes**: compressed bytes per item in the store, on the same items with three heads
   (sentiment, category, risk) and their entities: before migration ITEMS_ONCE (the v6 layout, url,
   title and text on every head's row of `scored`) and after it (`items` once per id, `scored`
   without text, `entities`), from `system.parts` (active parts) once every part is merged (OPTIMIZE FINAL).
2. **insert**: the sink's insert of a batch (items + 3 heads + entities) row-oriented, as the sink
   does it, against clickhouse-connect's columnar insert (`column_oriented=True`) of the same rows,
   interleaved so that a busy host slows both alike.
3. **share** (with `--package`): the real loop (`Pipeline`, file source, `ClickHouseSink`) over the
   same texts: the share of its time in the models (tokenization and ONNX Runtime, the scorers'
   `analyze`), in the store insert, and the rest (reading, validation, row building, dead letters).

Everything runs on one throwaway embedded store (chdb, one path per process) in a temporary directory,
a database per measurement.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stream.consumer.sink import ClickHouseSink, entity_values, item_values, scored_values
from stream.core.items import classify, normalize_entity
from stream.core.records import Entity, EntityRow, NewsItem, Prediction, ScoredRow, SourceRecord
from stream.core.schema import ENTITY_COLUMNS, ITEM_COLUMNS, ITEMS_ONCE, SCORED_COLUMNS, migrations
from stream.core.settings import StoreSettings
from stream.core.store import Store

HEADS: dict[str, tuple[str, ...]] = {
    "sentiment": ("negative", "neutral", "positive"),
    "category": ("finance", "realty", "stocks", "education", "science", "society", "politics", "sports", "game",
                 "entertainment"),
    "risk": ("accident", "crime", "disaster", "economy", "health", "labour", "politics", "none"),
}
# `scored` as it was before ITEMS_ONCE: the item's url, title and text on each head's row.
V6_SCORED_COLUMNS = (*SCORED_COLUMNS[:2], "url", "title", "text", *SCORED_COLUMNS[2:])


def news_items(texts: Sequence[str]) -> list[tuple[SourceRecord, NewsItem]]:
    """The texts as validated items of a file source (a title cut from each text, a URL per item)."""
    out = []
    for i, text in enumerate(texts):
        payload = {"id": f"bench-{i}", "source": f"wire{i % 5}", "url": f"https://news.example/{i}",
                   "title": text[:40], "text": text}
        record = SourceRecord("bench", 0, i, 1_764_000_000_000 + i * 1000, None,
                              json.dumps(payload, ensure_ascii=False).encode())
        item = classify(record, 10**7)
        assert isinstance(item, NewsItem)
        out.append((record, item))
    return out


def analysis_rows(items: Sequence[tuple[SourceRecord, NewsItem]]) -> tuple[list[ScoredRow], list[EntityRow]]:
    """Three heads per item, deterministic labels, and 0-3 entities cut from its model text."""
    now = dt.datetime.now(dt.UTC)
    scored, entities = [], []
    for record, item in items:
        for head, labels in HEADS.items():
            label = labels[record.offset % len(labels)]
            probs = {x: (0.7 if x == label else 0.3 / (len(labels) - 1)) for x in labels}
            prediction = Prediction(label, 0.7, probs)
            scored.append(ScoredRow(record, item, "bench-news", head, "bench-news-1", prediction, now))
        text = item.model_text
        spans = [(s, min(s + 4, len(text))) for s in range(0, min(len(text), 3 * 17), 17)][: record.offset % 4]
        found = tuple(Entity(text[a:b], normalize_entity(text[a:b]), ("PER", "LOC", "ORG")[k % 3], a, b, 0.9)
                      for k, (a, b) in enumerate(spans))
        entities.append(EntityRow(record, item, "bench-news-1", scored[-3].prediction.label, found, now))
    return scored, entities


def _compressed(store: Store, tables: Sequence[str]) -> dict[str, int]:
    for table in tables:
        store.command(f"OPTIMIZE TABLE {store.database}.{table} FINAL")
    rows = store.rows(
        "SELECT table, sum(data_compressed_bytes) FROM system.parts WHERE active AND database = {db:String} "
        "AND table IN {tables:Array(String)} GROUP BY table",
        {"db": store.database, "tables": list(tables)},
    )
    return {str(t): int(b) for t, b in rows}


def bench_bytes(root: Path, items: Sequence[tuple[SourceRecord, NewsItem]]) -> dict[str, Any]:
    scored, entities = analysis_rows(items)
    n = len(items)
    with Store(StoreSettings(dsn=f"chdb://{root / 'store'}", database="v6")) as old:
        old.command("CREATE DATABASE IF NOT EXISTS v6")
        for migration in migrations("v6"):
            if migration.version < ITEMS_ONCE:
                for statement in migration.statements:
                    assert isinstance(statement, str)
                    old.command(statement)
        at = dt.datetime.now(dt.UTC)
        v6_rows = []
        for r in scored:
            values = scored_values(r)
            v6_rows.append([*values[:2], r.item.url, r.item.title, r.item.text, *values[2:]])
        old.insert("scored", v6_rows, V6_SCORED_COLUMNS)
        before = _compressed(old, ["scored"])
        new = Store(StoreSettings(dsn=f"chdb://{root / 'store'}", database="v7"))
        new.init_schema()
        new.insert("items", [item_values(r, at) for r in scored[::3]], ITEM_COLUMNS)
        new.insert("scored", [scored_values(r) for r in scored], SCORED_COLUMNS)
        new.insert("entities", [entity_values(r) for r in entities], ENTITY_COLUMNS)
        after = _compressed(new, ["items", "scored", "entities"])
    per = {f"before.{t}": b / n for t, b in before.items()} | {f"after.{t}": b / n for t, b in after.items()}
    return {"items": n, "heads": len(HEADS), "bytes_per_item": {k: round(v, 1) for k, v in per.items()},
            "before_total": round(sum(before.values()) / n, 1), "after_total": round(sum(after.values()) / n, 1),
            "after_without_entities": round((after["items"] + after["scored"]) / n, 1)}


def bench_insert(root: Path, items: Sequence[tuple[SourceRecord, NewsItem]], batch: int, rounds: int) -> dict[str, Any]:
    """Median time of one batch's inserts (items, scored, entities), encoding included, per mode."""
    scored, entities = analysis_rows(items)
    times: dict[str, list[float]] = {"rows": [], "columns": []}
    with Store(StoreSettings(dsn=f"chdb://{root / 'store'}", database="ins")) as store:
        store.init_schema()
        client = store.client
        for k in range(rounds):
            lo = (k * batch) % max(len(items) - batch + 1, 1)
            part = [r for r in scored if lo <= r.record.offset < lo + batch]
            sets = [r for r in entities if lo <= r.record.offset < lo + batch]
            for mode in (("rows", "columns") if k % 2 else ("columns", "rows")):
                started = time.perf_counter()
                at = dt.datetime.now(dt.UTC)
                for table, values, columns in (
                    ("items", [item_values(r, at) for r in part[::3]], ITEM_COLUMNS),
                    ("scored", [scored_values(r) for r in part], SCORED_COLUMNS),
                    ("entities", [entity_values(r) for r in sets], ENTITY_COLUMNS),
                ):
                    if mode == "rows":
                        client.insert(f"ins.{table}", values, column_names=list(columns))
                    else:
                        client.insert(f"ins.{table}", [list(c) for c in zip(*values, strict=True)],
                                      column_names=list(columns), column_oriented=True)
                times[mode].append(time.perf_counter() - started)
    return {"batch_items": batch, "rounds": rounds,
            "median_ms": {m: round(1000 * statistics.median(t[1:]), 2) for m, t in times.items()}}


def bench_share(root: Path, texts: Sequence[str], packages: Sequence[Path], batch: int) -> dict[str, Any]:
    """The real loop over `texts`: seconds in the scorers, in the sink's write, and the rest."""
    from prometheus_client import REGISTRY

    from stream.consumer.file_source import FileSource
    from stream.consumer.pipeline import Pipeline
    from stream.core.scorer import OnnxScorer
    from stream.core.settings import BatchSettings

    source_file = root / "items.jsonl"
    with source_file.open("w", encoding="utf-8") as fh:
        for record, _ in news_items(texts):
            fh.write(record.value.decode() + "\n")
    scorers = [OnnxScorer.open(p, device="cpu") for p in packages]

    def total(name: str) -> float:
        return sum(s.value for m in REGISTRY.collect() for s in m.samples if s.name == name)

    with Store(StoreSettings(dsn=f"chdb://{root / 'store'}", database="bench")) as store:
        store.init_schema()
        sink = ClickHouseSink(store, None)
        sink.write_batch([], [], [])  # the client's first insert imports pandas: not a batch's cost
        model0, insert0 = total("yuqing_model_seconds_sum"), total("yuqing_insert_seconds_sum")
        started = time.perf_counter()
        counts = Pipeline(FileSource(str(source_file), 10**7), scorers, sink,
                          BatchSettings(max_items=batch, max_wait_ms=0)).run()
        wall = time.perf_counter() - started
    model, insert = total("yuqing_model_seconds_sum") - model0, total("yuqing_insert_seconds_sum") - insert0
    return {"items": counts.scored_items, "rows": counts.rows_written, "batch_items": batch,
            "packages": [s.version for s in scorers], "wall_s": round(wall, 2),
            "share": {"models": round(model / wall, 3), "insert": round(insert / wall, 3),
                      "rest": round(1 - (model + insert) / wall, 3)}}


def run_storage(n_items: int, batch: int, rounds: int, packages: Sequence[Path], share_items: int = 2048,
                ) -> dict[str, Any]:
    """`yuqing bench --only storage`: bytes per item before/after, insert modes, and (with
    packages) the share of a batch's time in the models and in the insert."""
    from stream.tools.bench.corpus import bench_texts

    texts = bench_texts(max(n_items, share_items)).texts
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="yuqing-bench-storage-") as tmp:
        root = Path(tmp)
        items = news_items(texts[:n_items])
        report["bytes"] = bench_bytes(root, items)
        report["insert"] = bench_insert(root, items, batch, rounds)
        if packages:
            report["share"] = bench_share(root, texts[:share_items], packages, batch)
    return report
