"""`yuqing diff` on real chdb with planted scored rows."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from stream.cli import cli
from stream.core.errors import DataError
from stream.core.schema import SCORED_COLUMNS
from stream.core.settings import StoreSettings
from stream.core.store import Store
from stream.diff.compare import diff_versions

pytestmark = pytest.mark.integration

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
SCORED_AT = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)

# id -> (A label, A score, B label, B score); None where that version did not score the item.
PLAN: dict[str, tuple[str | None, float, str | None, float]] = {
    "i0": ("pos", 0.90, "pos", 0.92),
    "i1": ("pos", 0.95, "neg", 0.90),  # changed, min 0.90
    "i2": ("pos", 0.70, "pos", 0.80),
    "i3": ("neg", 0.85, "neg", 0.88),
    "i4": ("neg", 0.60, "pos", 0.99),  # changed, min 0.60, B 0.99
    "i5": ("neg", 0.75, "neg", 0.70),
    "i6": ("neu", 0.55, "neu", 0.65),
    "i7": ("neu", 0.80, "pos", 0.70),  # changed, min 0.70
    "i8": ("pos", 0.90, None, 0.0),
    "i9": ("neg", 0.90, None, 0.0),
    "j1": (None, 0.0, "neg", 0.80),
    "j2": (None, 0.0, "neu", 0.60),
}


def row(item: str, version: str, label: str, score: float, *, published: dt.datetime, task: str = "sentiment",
        scored_at: dt.datetime = SCORED_AT) -> list[Any]:
    values = {
        "id": item, "source": "test", "url": f"https://n.example/{item}", "title": f"标题 {item}",
        "text": "正文", "lang": "zh", "published_at": published, "ingested_at": published,
        "kafka_topic": "news", "kafka_partition": 0, "kafka_offset": 0, "task": task,
        "model_name": f"{task}-model", "model_version": version, "label": label, "score": score,
        "probs": {label: score}, "truncated": False, "scored_at": scored_at,
    }
    return [values[c] for c in SCORED_COLUMNS]


@pytest.fixture
def planted(store: Store) -> Store:
    rows = []
    for n, (item, (la, sa, lb, sb)) in enumerate(PLAN.items()):
        published = T0 + dt.timedelta(hours=n)
        if la is not None:
            rows.append(row(item, "vA", la, sa, published=published))
        if lb is not None:
            rows.append(row(item, "vB", lb, sb, published=published))
    # Re-deliveries: the same (id, version) again, in the same hour (FINAL collapses it) and with
    # a published time in another hour (another sorting key: the per-id reduction collapses it).
    rows.append(row("i3", "vB", "neg", 0.88, published=T0 + dt.timedelta(hours=3), scored_at=SCORED_AT
                    + dt.timedelta(minutes=5)))
    rows.append(row("i2", "vB", "pos", 0.80, published=T0 + dt.timedelta(hours=3, minutes=30),
                    scored_at=SCORED_AT + dt.timedelta(minutes=5)))
    rows.append(row("i0", "vT", "economy", 0.7, published=T0, task="topic"))
    store.insert("scored", rows, SCORED_COLUMNS)
    return store


def test_diff_counts_agreement_and_confusion(planted: Store) -> None:
    d = diff_versions(planted, "vA", "vB", top=2)
    assert d.task == "sentiment"
    assert (d.items_a, d.items_b, d.common, d.agree) == (10, 10, 8, 5)
    assert d.agreement == pytest.approx(5 / 8)
    assert d.confusion == {"pos": {"pos": 2, "neg": 1}, "neg": {"neg": 2, "pos": 1}, "neu": {"neu": 1, "pos": 1}}
    assert d.labels == ["neg", "neu", "pos"]
    assert d.labels_a == {"neg": 3, "neu": 2, "pos": 3}
    assert d.labels_b == {"neg": 3, "neu": 1, "pos": 4}
    assert d.labels_all_a == {"neg": 4, "neu": 2, "pos": 4}
    assert d.labels_all_b == {"neg": 4, "neu": 2, "pos": 4}
    # kappa = (5/8 - 23/64) / (1 - 23/64)
    assert d.kappa == pytest.approx((5 / 8 - 23 / 64) / (1 - 23 / 64))
    assert [(c.id, c.label_a, c.label_b) for c in d.changed] == [("i1", "pos", "neg"), ("i7", "neu", "pos")]
    assert d.changed[0].title == "标题 i1"
    assert d.changed[0].score_a == pytest.approx(0.95) and d.changed[0].score_b == pytest.approx(0.90)


def test_a_redelivery_with_another_label_and_month_counts_once(planted: Store) -> None:
    # i0 scored again by A (a replay after a restart): new Kafka time, another month, a flipped label
    planted.insert("scored", [row("i0", "vA", "neg", 0.51, published=T0 + dt.timedelta(days=40),
                                  scored_at=SCORED_AT + dt.timedelta(days=40))], SCORED_COLUMNS)
    d = diff_versions(planted, "vA", "vB", top=20)
    assert (d.items_a, d.common) == (10, 8)
    assert d.labels_all_a == {"neg": 5, "neu": 2, "pos": 3}
    assert ("i0", "neg", "pos") in [(c.id, c.label_a, c.label_b) for c in d.changed]
    # in its old range it is gone: only the latest delivery's published_at places it
    early = diff_versions(planted, "vA", "vB", until=T0 + dt.timedelta(hours=1))
    assert early.items_a == 0 and early.items_b == 1


def test_rank_by_b_and_time_range(planted: Store) -> None:
    by_b = diff_versions(planted, "vA", "vB", rank_by="b")
    assert [c.id for c in by_b.changed] == ["i4", "i1", "i7"]
    ranged = diff_versions(
        planted, "vA", "vB", since=T0 + dt.timedelta(hours=2), until=T0 + dt.timedelta(hours=6)
    )
    assert (ranged.common, ranged.agree) == (4, 3)  # i2..i5
    assert [c.id for c in ranged.changed] == ["i4"]
    assert (ranged.items_a, ranged.items_b) == (4, 4)


def test_bad_versions_are_data_errors(planted: Store) -> None:
    with pytest.raises(DataError, match="'nope' has no scored rows") as err:
        diff_versions(planted, "vA", "nope")
    assert "vA (sentiment" in str(err.value)  # the hint lists known versions
    with pytest.raises(DataError, match="different tasks"):
        diff_versions(planted, "vA", "vT")
    with pytest.raises(DataError, match="two different"):
        diff_versions(planted, "vA", "vA")


def test_cli_tables_and_json(planted: Store, store_settings: StoreSettings, tmp_path: Path) -> None:
    out = tmp_path / "diff.json"
    result = CliRunner().invoke(
        cli,
        ["diff", "--model-version", "vA", "--model-version", "vB", "--store", store_settings.dsn,
         "--top", "5", "--json", str(out)],
        env={"YUQING_STORE__DATABASE": store_settings.database},
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    text = result.output
    assert "items: A scored 10, B scored 10, both 8" in text
    assert "agreement: 62.5% (5 of 8), Cohen's kappa 0.415" in text
    assert "A \\ B  neg  neu  pos" in text
    assert "标题 i1" in text and "most confident changes (by min(score A, score B), top 3)" in text
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["common"] == 8 and data["agree"] == 5
    assert data["confusion"]["neu"] == {"neg": 0, "neu": 1, "pos": 1}
    assert [c["id"] for c in data["changed"]] == ["i1", "i7", "i4"]
    assert data["label_counts_all"]["b"] == {"neg": 4, "neu": 2, "pos": 4}

    bad = CliRunner().invoke(
        cli, ["diff", "--model-version", "vA", "--store", store_settings.dsn],
        env={"YUQING_STORE__DATABASE": store_settings.database},
    )
    assert bad.exit_code == 2 and "exactly twice" in bad.output
