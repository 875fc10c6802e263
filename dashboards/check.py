"""`yuqing dashboards check`: are the committed dashboards current, schema-valid and runnable?

Three parts, each of which can fail the check:
1. freshness: the files on disk equal a fresh `yuqing dashboards build` (default folder only);
2. schema: every dashboard type-checks against @grafana/schema with tsc (see typecheck.py);
3. SQL: every panel, and every Grafana alert rule, runs on the real ClickHouse engine (chdb) over
   synthetic demo data and returns the shape its panel needs (see sqlcheck.py).
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dashboards import build
from dashboards.sqlcheck import QueryResultCheck, check_alert_rules, check_dashboard
from dashboards.synthetic import Surge, SyntheticSpec, write_synthetic
from dashboards.typecheck import TypeIssue, typecheck
from stream.core.errors import DataError
from stream.core.settings import StoreSettings
from stream.core.store import Store

SURGE_BEAT = "public health"  # its items are labelled with risk topic `social`


@dataclass
class CheckReport:
    stale: list[Path] = field(default_factory=list)
    type_issues: list[TypeIssue] = field(default_factory=list)
    sql: list[QueryResultCheck] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    dashboards: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.stale and not self.type_issues and all(r.ok for r in self.sql)

    def lines(self, verbose: bool = False) -> list[str]:
        out = [f"dashboards: {', '.join(self.dashboards)}"]
        out += [f"skipped: {s}" for s in self.skipped]
        if self.stale:
            out.append("FAIL generated files differ from a fresh build (`yuqing dashboards build`; delete stray JSON):")
            out += [f"       {p}" for p in self.stale]
        elif "freshness" not in " ".join(self.skipped):
            out.append("ok   generated files match a fresh build")
        if "schema" not in " ".join(self.skipped):
            if self.type_issues:
                out.append(f"FAIL schema (@grafana/schema via tsc): {len(self.type_issues)} error(s)")
                out += [f"       {i.dashboard} · {i.where}: {i.code} {i.message}" for i in self.type_issues]
            else:
                out.append("ok   schema (@grafana/schema via tsc): every dashboard and panel type-checks")
        for result in self.sql:
            if verbose or not result.ok:
                out.append(result.describe())
        if self.sql:
            failed = sum(not r.ok for r in self.sql)
            passed = len(self.sql) - failed
            out.append(f"{'FAIL' if failed else 'ok  '} SQL: {passed}/{len(self.sql)} panel queries passed")
        out.append("check passed" if self.ok else "check FAILED")
        return out


def synthetic_spec(now: dt.datetime) -> SyntheticSpec:
    """A week of demo-like data ending `now`, with a negative surge on one beat in the last hour."""
    return SyntheticSpec(
        start=now - dt.timedelta(days=7),
        end=now,
        items=1500,
        seed=7,
        dead_letter_share=0.03,
        surges=(Surge(SURGE_BEAT, now - dt.timedelta(minutes=59), dt.timedelta(minutes=58), items=45),),
        story_lag=dt.timedelta(minutes=5),  # the surge's newest items are not in its story yet
    )


@contextmanager
def scratch_store(database: str) -> Iterator[Store]:
    """An embedded store in a temporary folder (removed afterwards)."""
    folder = tempfile.mkdtemp(prefix="yuqing-check-")
    store = Store(StoreSettings(dsn=f"chdb://{folder}/store", database=database))
    try:
        store.init_schema()
        yield store
    finally:
        store.close()
        shutil.rmtree(folder, ignore_errors=True)


def load_alert_rules(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise DataError(f"{path} is not valid YAML: {exc}") from None
    return document if isinstance(document, dict) else None


def run_check(directory: Path = build.GENERATED_DIR, *, schema: bool = True, sql: bool = True,
              freshness: bool | None = None, alerts_file: Path | None = build.ALERTS_FILE,
              store: Store | None = None, now: dt.datetime | None = None) -> CheckReport:
    """Check the dashboards in `directory`; `store` (schema already created) defaults to a scratch one."""
    dashboards = build.load_dashboards(directory)
    report = CheckReport(dashboards=list(dashboards))
    built_db = next((db for d in dashboards.values() if (db := build.database_of(d))), build.DEFAULT_DATABASE)

    if freshness is None:
        freshness = directory.resolve() == build.GENERATED_DIR.resolve()
    if freshness:
        report.stale = build.stale(build.artifacts(built_db, alerts_file=alerts_file))
    else:
        report.skipped.append("freshness (not the default folder)")

    if schema:
        report.type_issues = typecheck(dashboards)
    else:
        report.skipped.append("schema (--skip-typecheck)")

    if sql:
        now = (now or dt.datetime.now(dt.UTC)).replace(second=0, microsecond=0)
        alert_doc = load_alert_rules(alerts_file) if alerts_file is not None else None
        if store is not None:
            report.sql = _check_sql(store, dashboards, alert_doc, built_db, now)
        else:
            with scratch_store(built_db) as scratch:
                report.sql = _check_sql(scratch, dashboards, alert_doc, built_db, now)
    else:
        report.skipped.append("SQL (--skip-sql)")
    return report


def _check_sql(store: Store, dashboards: dict[str, dict[str, Any]], alert_doc: dict[str, Any] | None,
               built_db: str, now: dt.datetime) -> list[QueryResultCheck]:
    write_synthetic(store, synthetic_spec(now))
    results: list[QueryResultCheck] = []
    for name, data in dashboards.items():
        results.extend(check_dashboard(store, name, data, now))
    if alert_doc is not None:
        results.extend(check_alert_rules(store, alert_doc, built_db, now))
    return results
