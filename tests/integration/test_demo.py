"""`yuqing demo --models PKG` end to end on the embedded store (a tiny multi-head package instead
of the trained demo one): the sample streamed, the summary of every head, the demo rules over the
sample's range, stories and the brief; run twice, nothing is doubled."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.core.settings import StoreSettings
from stream.core.store import Store
from tests.helpers import run_cli

pytestmark = pytest.mark.integration

SAMPLE_ITEMS = 243


def test_the_demo_streams_summarizes_alerts_and_writes_the_brief(tiny_multihead: Path, tmp_path: Path) -> None:
    data = tmp_path / "demo"
    first = run_cli("demo", "--models", str(tiny_multihead), "--data-dir", str(data), timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    out = first.stdout
    assert f"read {SAMPLE_ITEMS}, scored {SAMPLE_ITEMS} items ({3 * SAMPLE_ITEMS} rows), dead-lettered 0" in out
    for section in ("items per day by sentiment:", "by category (section)", "entities in the news",
                    "most negative items (calibrated probability):", "alerts over the sample (demo_alerts.toml):",
                    "brief written to"):
        assert section in out
    brief = (data / "brief.html").read_text(encoding="utf-8")
    assert "按类别" in brief and "新闻中的实体" in brief and "告警" in brief

    again = run_cli("demo", "--models", str(tiny_multihead), "--data-dir", str(data), timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    with Store(StoreSettings(dsn=f"chdb://{data / 'clickhouse'}")) as store:
        db = store.database
        assert store.scalar(f"SELECT count() FROM {db}.items FINAL") == SAMPLE_ITEMS
        assert store.scalar(f"SELECT count() FROM {db}.scored FINAL") == 3 * SAMPLE_ITEMS
        assert store.scalar(f"SELECT count() FROM {db}.entities FINAL") == SAMPLE_ITEMS
        fired = store.scalar(f"SELECT count() FROM {db}.alerts FINAL")
    # What the demo printed as fired is what the alerts table holds (recorded once across runs).
    printed = int(again.stdout.split("alerts over the sample (demo_alerts.toml): ")[1].split()[0])
    assert fired == printed
