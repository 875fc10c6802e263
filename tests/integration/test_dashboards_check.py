"""`yuqing dashboards check`: it passes on the committed dashboards and fails on broken ones.

Both parts run for real: tsc against @grafana/schema (npm tools in dashboards/schema_check) and every
panel's SQL on chdb over synthetic data.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dashboards import build
from dashboards.check import run_check
from dashboards.sqlcheck import panels_of
from stream.core.store import Store

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="session")
def schema_tools() -> Path:
    """tsc and @grafana/schema from the lock file (like `make typecheck-deps`)."""
    tsc = build.SCHEMA_CHECK_DIR / "node_modules" / ".bin" / "tsc"
    if not tsc.exists() and shutil.which("npm"):
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=build.SCHEMA_CHECK_DIR,
                       check=False, timeout=600)
    if not tsc.exists():
        pytest.fail("tsc is missing: run `make typecheck-deps` (npm ci in dashboards/schema_check)")
    return tsc


def yuqing(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "stream.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600, check=False)


def test_check_passes_on_the_committed_dashboards(schema_tools: Path) -> None:
    proc = yuqing("dashboards", "check")
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "ok   generated files match a fresh build" in out
    assert "ok   schema (@grafana/schema via tsc): every dashboard and panel type-checks" in out
    assert "FAIL" not in out and out.rstrip().endswith("check passed")
    # a line per panel and scenario, and the alert rules
    for name in build.DASHBOARDS:
        data = json.loads((build.GENERATED_DIR / f"{name}.json").read_text(encoding="utf-8"))
        for panel in panels_of(data):
            assert f"{name}.json · #{panel['id']} {panel['title']} [default]" in out
    assert "yuqing-drilldown.json · #10 Items [hostile] 0 rows" in out
    assert "alert rules · Negative surge (A) [now]" in out and "alert rules · Volume spike (A) [now]" in out


def _broken_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "broken"
    folder.mkdir()
    for name, data in build.load_dashboards(build.GENERATED_DIR).items():
        data = copy.deepcopy(data)
        if name == "yuqing-overview.json":
            panels: list[dict[str, Any]] = data["panels"]
            items = panels[0]  # stat "Items": a column that does not exist
            items["targets"][0]["rawSql"] = items["targets"][0]["rawSql"].replace("count() AS items",
                                                                                  "sum(no_such_column) AS items")
            by_sentiment = panels[5]  # "Items by sentiment": values the schema does not allow
            by_sentiment["gridPos"]["h"] = "tall"
            by_sentiment["options"]["legend"]["displayMode"] = "sideways"
            fired = panels[13]  # "Fired alerts": a table asking for time-series format
            fired["targets"][0]["format"] = 0
        if name == "yuqing-pipeline.json":
            lag = data["panels"][6]  # "Consumer lag by partition": rows no longer in time order
            lag["targets"][0]["rawSql"] = lag["targets"][0]["rawSql"].replace("ORDER BY time", "ORDER BY lag DESC")
            consumed = data["panels"][0]  # "Consumed": the group variable quoted, not percent-encoded
            consumed["targets"][0]["rawSql"] = consumed["targets"][0]["rawSql"].replace(
                "decodeURLComponent('${group:percentencode}')", "${group:sqlstring}", 1)
        (folder / name).write_text(json.dumps(data, indent=2), encoding="utf-8")
    return folder


def test_check_catches_broken_sql_and_schema_violations(tmp_path: Path, store: Store, schema_tools: Path) -> None:
    folder = _broken_copy(tmp_path)
    report = run_check(folder, store=store, now=NOW)
    assert not report.ok

    where = {(i.dashboard, i.where) for i in report.type_issues}
    assert where == {("yuqing-overview.json", "dashboard"),
                     ("yuqing-overview.json", "panel 6 'Items by sentiment' (timeseries)")}
    messages = " ".join(i.message for i in report.type_issues)
    assert "'string' is not assignable to type 'number'" in messages and '"sideways"' in messages

    failed = {(r.dashboard, r.panel) for r in report.sql if not r.ok}
    assert failed == {
        ("yuqing-overview.json", "#1 Items"),
        ("yuqing-overview.json", "#14 Fired alerts"),
        ("yuqing-pipeline.json", "#7 Consumer lag by partition"),
        ("yuqing-pipeline.json", "#1 Consumed"),
    }
    problems = {r.panel: r.problem or "" for r in report.sql if not r.ok}
    assert "no_such_column" in problems["#1 Items"].lower() or "unknown" in problems["#1 Items"].lower()
    assert "format 0 does not suit a table panel" in problems["#14 Fired alerts"]
    assert "ascending" in problems["#7 Consumer lag by partition"]
    assert "variables not percent-encoded: ${group:sqlstring}" in problems["#1 Consumed"]
    assert sum(r.ok for r in report.sql) > 40  # everything else still passes


def test_check_command_exits_non_zero(tmp_path: Path, schema_tools: Path) -> None:
    folder = _broken_copy(tmp_path)
    proc = yuqing("dashboards", "check", "--dir", str(folder), "--skip-sql", "-q")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL schema (@grafana/schema via tsc): 3 error(s)" in proc.stdout  # h twice, legend once
    assert "check FAILED" in proc.stdout
    assert "error: dashboard check failed" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_stale_generated_files_fail_the_check(tmp_path: Path, store: Store) -> None:
    # a fresh build into another folder compares equal; a hand edit does not
    out = tmp_path / "gen"
    files = build.artifacts(out_dir=out, alerts_file=None)
    build.write(files)
    assert build.stale(files) == []
    target = out / "yuqing-overview.json"
    target.write_text(target.read_text(encoding="utf-8").replace("Top sources", "Top Sources"), encoding="utf-8")
    assert build.stale(files) == [target]
