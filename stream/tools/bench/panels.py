"""`yuqing bench --only panels`: every dashboard panel's SQL timed on millions of synthetic rows.

A fresh embedded store with the whole schema gets the bulk rows (`write_bulk_scored`: items,
scored heads and entities) plus the small demo-like set for the pipeline tables; each panel then
runs, expanded as Grafana would at the dashboards' defaults, over each time range ending at the
end of the data, `repeats` times.  The report gives the median per panel and the sum of medians.
(The comparison with the layout before the ``scored`` re-keying was this command's job until the
store split items from scored rows, which the old layout cannot hold; its figures are in
deploy/README.md.)
"""

from __future__ import annotations

import datetime as dt
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dashboards import build
from dashboards.check import synthetic_spec
from dashboards.sqlcheck import run_with
from dashboards.synthetic import SyntheticSpec, write_bulk_scored, write_synthetic
from stream.core.errors import DataError
from stream.core.settings import StoreSettings
from stream.core.store import Store

RANGES: dict[str, dt.timedelta] = {"24h": dt.timedelta(hours=24), "7d": dt.timedelta(days=7)}
END = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)


@dataclass
class PanelTimes:
    rows: int
    load_s: float
    # (dashboard, panel, range) -> seconds per run
    runs: dict[tuple[str, str, str], list[float]] = field(default_factory=dict)

    def p50(self) -> dict[tuple[str, str, str], float]:
        return {key: statistics.median(times) for key, times in self.runs.items()}


def time_panels(dashboards: Mapping[str, dict[str, Any]], items: int, repeats: int,
                progress: Callable[[str], None] = lambda _: None) -> PanelTimes:
    folder = tempfile.mkdtemp(prefix="yuqing-bench-panels-")
    store = Store(StoreSettings(dsn=f"chdb://{folder}/store", database=build.DEFAULT_DATABASE))
    try:
        store.init_schema()
        started = time.perf_counter()
        spec = synthetic_spec(END)
        write_synthetic(store, spec)
        bulk = SyntheticSpec(start=END - dt.timedelta(days=30), end=END, items=items, seed=spec.seed + 1)
        rows = write_bulk_scored(store, bulk)
        times = PanelTimes(rows, time.perf_counter() - started)
        progress(f"{rows} rows written in {times.load_s:.1f} s")
        for range_name, span in RANGES.items():
            for name, data in dashboards.items():
                for _ in range(repeats):
                    for result in run_with(store, name, data, END, {}, span=span, strict=True):
                        if not result.ok and result.problem and "no rows" not in result.problem:
                            raise DataError(f"{name} · {result.panel}: {result.problem}")
                        times.runs.setdefault((name, result.panel, range_name), []).append(result.seconds)
            progress(f"{range_name} timed")
        return times
    finally:
        store.close()
        shutil.rmtree(folder, ignore_errors=True)


def bench_panels(items: int = 2_100_000, repeats: int = 3,
                 progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Time every panel of the generated dashboards."""
    return report(time_panels(build.load_dashboards(build.GENERATED_DIR), items, repeats, progress))


def report(times: PanelTimes) -> dict[str, Any]:
    medians = times.p50()
    keys = sorted(medians, key=lambda k: (k[2], k[0], k[1]))
    lines = [f"{'range':5} {'dashboard · panel':60} {'p50 ms':>12}"]
    lines += [f"{k[2]:5} {(k[0].removesuffix('.json') + ' · ' + k[1])[:60]:60} {medians[k] * 1000:12.0f}" for k in keys]
    totals = {r: sum(v for k, v in medians.items() if k[2] == r) for r in RANGES}
    lines += [f"{r:5} {'total (sum of p50)':60} {totals[r] * 1000:12.0f}" for r in RANGES]
    return {
        "rows": times.rows,
        "load_s": round(times.load_s, 2),
        "p50_ms": {" · ".join(k): round(v * 1000, 1) for k, v in medians.items()},
        "total_ms": {r: round(v * 1000, 1) for r, v in totals.items()},
        "table": "\n".join(lines),
    }
