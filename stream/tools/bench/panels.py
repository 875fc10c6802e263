"""`yuqing bench --only panels`: every dashboard panel's SQL timed on millions of synthetic rows.

Each layout gets a fresh embedded store: ``before`` is the schema as it stood before the
``scored`` re-keying (migrations older than `SCORED_BY_ID`: time in the sorting key, monthly
partitions, the per-minute aggregate), ``current`` is the whole schema.  The same rows go into
both (`write_bulk_scored`, plus the small demo-like set for the pipeline tables); each panel then
runs, expanded as Grafana would at the dashboards' defaults, over each time range ending at the
end of the data, `repeats` times.  The report gives the median per panel and the sum of medians.
"""

from __future__ import annotations

import datetime as dt
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dashboards import build
from dashboards.check import synthetic_spec
from dashboards.sqlcheck import run_with
from dashboards.synthetic import SyntheticSpec, write_bulk_scored, write_synthetic
from stream.core.errors import DataError
from stream.core.schema import SCORED_BY_ID, migrations
from stream.core.settings import StoreSettings
from stream.core.store import Store

LAYOUTS = ("before", "current")
RANGES: dict[str, dt.timedelta] = {"24h": dt.timedelta(hours=24), "7d": dt.timedelta(days=7)}
END = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)


@dataclass
class PanelTimes:
    layout: str
    rows: int
    load_s: float
    # (dashboard, panel, range) -> seconds per run
    runs: dict[tuple[str, str, str], list[float]] = field(default_factory=dict)

    def p50(self) -> dict[tuple[str, str, str], float]:
        return {key: statistics.median(times) for key, times in self.runs.items()}


def create_layout(store: Store, layout: str) -> None:
    if layout == "current":
        store.init_schema()
        return
    store.command(f"CREATE DATABASE IF NOT EXISTS {store.database}")
    for migration in migrations(store.database):
        if migration.version < SCORED_BY_ID:
            for statement in migration.statements:
                store.command(statement)


def time_layout(layout: str, dashboards: Mapping[str, dict[str, Any]], items: int, repeats: int,
                progress: Callable[[str], None] = lambda _: None) -> PanelTimes:
    folder = tempfile.mkdtemp(prefix="yuqing-bench-panels-")
    store = Store(StoreSettings(dsn=f"chdb://{folder}/store", database=build.DEFAULT_DATABASE))
    try:
        create_layout(store, layout)
        started = time.perf_counter()
        spec = synthetic_spec(END)
        write_synthetic(store, spec)
        bulk = SyntheticSpec(start=END - dt.timedelta(days=30), end=END, items=items, seed=spec.seed + 1)
        rows = write_bulk_scored(store, bulk)
        times = PanelTimes(layout, rows, time.perf_counter() - started)
        progress(f"{layout}: {rows} scored rows written in {times.load_s:.1f} s")
        for range_name, span in RANGES.items():
            for name, data in dashboards.items():
                for _ in range(repeats):
                    for result in run_with(store, name, data, END, {}, span=span, strict=layout == "current"):
                        if not result.ok and result.problem and "no rows" not in result.problem:
                            raise DataError(f"{layout}: {name} · {result.panel}: {result.problem}")
                        times.runs.setdefault((name, result.panel, range_name), []).append(result.seconds)
            progress(f"{layout}: {range_name} timed")
        return times
    finally:
        store.close()
        shutil.rmtree(folder, ignore_errors=True)


def bench_panels(items: int = 2_100_000, repeats: int = 3, before_dashboards: Path | None = None,
                 progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Time every panel on both layouts; `before_dashboards`: the dashboard JSON the old layout
    shipped with (default: today's dashboards on both)."""
    current = build.load_dashboards(build.GENERATED_DIR)
    before = build.load_dashboards(before_dashboards) if before_dashboards else current
    results = {layout: time_layout(layout, before if layout == "before" else current, items, repeats, progress)
               for layout in LAYOUTS}
    return report(results)


def report(results: Mapping[str, PanelTimes]) -> dict[str, Any]:
    medians = {layout: t.p50() for layout, t in results.items()}
    keys = sorted({k for m in medians.values() for k in m}, key=lambda k: (k[2], k[0], k[1]))
    lines = [f"{'range':5} {'dashboard · panel':60} " + " ".join(f"{layout + ' ms':>12}" for layout in LAYOUTS)]
    for key in keys:
        cells = " ".join(f"{medians[layout][key] * 1000:12.0f}" if key in medians[layout] else f"{'-':>12}"
                         for layout in LAYOUTS)
        lines.append(f"{key[2]:5} {(key[0].removesuffix('.json') + ' · ' + key[1])[:60]:60} {cells}")
    totals = {layout: {r: sum(v for k, v in medians[layout].items() if k[2] == r) for r in RANGES}
              for layout in LAYOUTS}
    for range_name in RANGES:
        cells = " ".join(f"{totals[layout][range_name] * 1000:12.0f}" for layout in LAYOUTS)
        lines.append(f"{range_name:5} {'total (sum of p50)':60} {cells}")
    return {
        "rows": {layout: t.rows for layout, t in results.items()},
        "load_s": {layout: round(t.load_s, 2) for layout, t in results.items()},
        "p50_ms": {layout: {" · ".join(k): round(v * 1000, 1) for k, v in medians[layout].items()}
                   for layout in LAYOUTS},
        "total_ms": {layout: {r: round(v * 1000, 1) for r, v in totals[layout].items()} for layout in LAYOUTS},
        "table": "\n".join(lines),
    }
