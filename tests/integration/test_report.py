"""`yuqing report` on a real store, opened in headless Chromium: the charts must draw."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from stream.alerts import LiveRunner, parse_rules
from stream.cli import cli
from stream.core.settings import StoreSettings
from stream.core.store import Store
from tests.integration.alerts_rows import demo_traffic, insert, item_rows, negative_surge_plant

pytestmark = pytest.mark.integration

T = dt.datetime(2025, 3, 10, 12, 0, tzinfo=dt.UTC)
CHROMIUM = next(
    (shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)),
    None,
)


def _report(store_settings: StoreSettings, out: Path, *args: str) -> str:
    result = CliRunner().invoke(
        cli,
        ["report", "--out", str(out), "--store", store_settings.dsn, *args],
        env={"YUQING_STORE__DATABASE": store_settings.database},
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    return result.output


def _dump_dom(page: Path, profile: Path) -> str:
    assert CHROMIUM is not None
    done = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture
def planted(store: Store) -> Store:
    insert(store, demo_traffic(T))
    insert(store, negative_surge_plant(T))
    insert(
        store,
        item_rows(
            "evil",
            T - dt.timedelta(minutes=3),
            title="<img src=x onerror=alert(1)> 化工厂爆炸",
            source="weibo",
            negative=True,
        ),
    )
    rules = {"rule": [{"name": "surge", "kind": "negative_surge", "by": "topic", "threshold": 0.5, "min_items": 30}]}
    with LiveRunner(store, parse_rules(rules)) as runner:
        assert len(runner.cycle(T)) == 1
    return store


def test_brief_contents(planted: Store, store_settings: StoreSettings, tmp_path: Path) -> None:
    out = tmp_path / "brief.html"
    output = _report(store_settings, out, "--since", "2025-03-09T12:00:00Z", "--until", "2025-03-10T12:00:00Z")
    assert "1 alert(s)" in output
    page = out.read_text(encoding="utf-8")
    total = planted.scalar(
        f"SELECT count() FROM {planted.database}.scored FINAL WHERE task = 'sentiment' "
        "AND published_at >= {s:DateTime64(3,'UTC')} AND published_at < {e:DateTime64(3,'UTC')}",
        {"s": T - dt.timedelta(hours=24), "e": T},
    )
    assert f"<b>{total}</b>" in page
    assert "topic=社会" in page  # the fired alert
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert re.search(r'href="https://news\.example/weibo/evil"', page)
    assert "2025-03-09 12:00 – 2025-03-10 12:00 UTC" in page
    # 24 hourly buckets, the last one holding the surge.
    assert page.count('class="bar neg"') == 24


def test_since_accepts_durations_and_rfc3339(planted: Store, store_settings: StoreSettings, tmp_path: Path) -> None:
    assert "items" in _report(store_settings, tmp_path / "a.html", "--since", "7d")
    output = _report(
        store_settings,
        tmp_path / "b.html",
        "--since",
        "2025-03-10T19:00:00+08:00",
        "--until",
        "2025-03-10T20:00:00+08:00",
    )
    assert "2025-03-10 11:00 – 2025-03-10 12:00 UTC" in output
    bad = CliRunner().invoke(cli, ["report", "--since", "yesterday", "--store", store_settings.dsn])
    assert bad.exit_code != 0


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (apt-get install chromium)")
def test_brief_charts_draw_in_headless_chromium(planted: Store, store_settings: StoreSettings, tmp_path: Path) -> None:
    out = tmp_path / "brief.html"
    _report(store_settings, out, "--since", "2025-03-09T12:00:00Z", "--until", "2025-03-10T12:00:00Z")
    dom = _dump_dom(out, tmp_path / "profile")
    # The page's own script counted the shapes the browser laid out, per chart, after load.
    assert 'data-charts-rendered="3/3"' in dom
    rendered = dict(re.findall(r'data-chart="(\w+)"[^>]*data-rendered="(\d+)"', dom))
    assert set(rendered) == {"timeline", "topics", "sources"}
    assert int(rendered["timeline"]) >= 48  # 24 buckets x (negative + positive)
    assert int(rendered["topics"]) >= 2 * 5  # track + bar per topic
    assert int(rendered["sources"]) >= 2 * 4
    assert "<img" not in dom  # escaped data stayed text
