"""`yuqing alerts test|run|check` through the CLI runner, on a real chdb store."""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from stream.cli import cli
from stream.core.settings import StoreSettings
from stream.core.store import Store
from tests.integration.alerts_rows import demo_traffic, insert, negative_surge_plant, volume_spike_plant

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
T = dt.datetime(2025, 3, 10, 12, 0, tzinfo=dt.UTC)
RULES_TOML = """
[[rule]]
name = "surge-risk"
kind = "negative_surge"
by = "risk"
threshold = 0.5
min_items = 30
window = "1h"
cooldown = "6h"

[[rule]]
name = "spike-source"
kind = "volume_spike"
by = "source"
threshold = 4
min_items = 30
window = "1h"
baseline = "24h"
cooldown = "6h"
"""


def _invoke(store_settings: StoreSettings, args: list[str]) -> Result:
    return CliRunner().invoke(
        cli,
        [*args, "--store", store_settings.dsn],
        env={"YUQING_STORE__DATABASE": store_settings.database},
        catch_exceptions=False,
    )


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "alerts.toml"
    path.write_text(RULES_TOML, encoding="utf-8")
    return path


def test_alerts_test_prints_what_would_have_fired(
    store: Store, store_settings: StoreSettings, rules_file: Path
) -> None:
    insert(store, demo_traffic(T))
    insert(store, negative_surge_plant(T))
    insert(store, volume_spike_plant(T))
    args = [
        "alerts",
        "test",
        "--rules",
        str(rules_file),
        "--from",
        "2025-03-10T09:00:00Z",
        "--to",
        "2025-03-10T12:00:00Z",
        "--step",
        "15m",
    ]
    result = _invoke(store_settings, args)
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "dry run 2025-03-10 09:00 – 2025-03-10 12:00 UTC, step 15m, 2 rule(s)"
    fired = lines[1:-1]
    assert len(fired) == 2
    surge = next(line for line in fired if " surge-risk " in line)
    spike = next(line for line in fired if " spike-source " in line)
    assert "risk=社会" in surge and "negative in 1h" in surge
    assert "source=zhihu" in spike and "z = " in spike
    # Both incidents grow over the last hour; each fires at the first step that crosses its threshold.
    for line in fired:
        assert "2025-03-10 11:00" <= line[:16] <= "2025-03-10 12:00"
    assert lines[-1] == "2 alert(s) would have fired (surge-risk: 1, spike-source: 1)"
    # A dry run writes nothing.
    assert store.scalar(f"SELECT count() FROM {store.database}.alerts") == 0

    as_json = _invoke(store_settings, [*args, "--format", "json"])
    alerts = json.loads(as_json.stdout)
    assert sorted((a["rule"], a["scope"]) for a in alerts) == [
        ("spike-source", "source=zhihu"),
        ("surge-risk", "risk=社会"),
    ]


def test_alerts_test_without_plants_prints_nothing(
    store: Store, store_settings: StoreSettings, rules_file: Path
) -> None:
    insert(store, demo_traffic(T))
    result = _invoke(
        store_settings,
        [
            "alerts",
            "test",
            "--rules",
            str(rules_file),
            "--from",
            "2025-03-10T10:00:00Z",
            "--to",
            "2025-03-10T12:00:00Z",
            "--step",
            "30m",
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[1:] == ["0 alert(s) would have fired (surge-risk: 0, spike-source: 0)"]


def test_alerts_run_once_fires_then_stays_quiet(store: Store, store_settings: StoreSettings, rules_file: Path) -> None:
    now = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    insert(store, demo_traffic(now))
    insert(store, negative_surge_plant(now))
    first = _invoke(store_settings, ["alerts", "run", "--once", "--rules", str(rules_file)])
    assert first.exit_code == 0, first.output
    assert len(first.stdout.strip().splitlines()) == 1
    assert "surge-risk  risk=社会" in first.stdout
    again = _invoke(store_settings, ["alerts", "run", "--once", "--rules", str(rules_file)])
    assert again.exit_code == 0 and again.stdout.strip() == ""
    assert store.scalar(f"SELECT count() FROM {store.database}.alerts FINAL") == 1


def test_alerts_run_loops_until_sigterm(tmp_path: Path, rules_file: Path) -> None:
    # Its own chdb path: a chdb path opens in one process at a time.
    dsn = f"chdb://{tmp_path / 'store'}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stream.cli",
            "-v",
            "alerts",
            "run",
            "--every",
            "1",
            "--rules",
            str(rules_file),
            "--store",
            dsn,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 60
        seen = ""
        assert proc.stderr is not None
        while time.monotonic() < deadline and seen.count("cycle done") < 2:
            seen += proc.stderr.readline()
        assert seen.count("cycle done: 0 alert(s)") >= 2, seen
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, rest
    assert "stopped; 0 alert(s) fired" in rest
