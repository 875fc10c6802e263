"""`yuqing diff` on real chdb with planted scored, item and entity rows."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from stream.cli import cli
from stream.core.errors import DataError
from stream.core.items import normalize_entity
from stream.core.schema import ENTITY_COLUMNS, ITEM_COLUMNS, SCORED_COLUMNS
from stream.core.settings import StoreSettings
from stream.core.store import Store
from stream.diff.compare import diff_entities, diff_models, diff_versions

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
        "id": item, "source": "test", "lang": "zh", "published_at": published, "ingested_at": published,
        "kafka_topic": "news", "kafka_partition": 0, "kafka_offset": 0, "task": task,
        "model_name": f"{task}-model", "model_version": version, "label": label, "score": score,
        "probs": {label: score}, "truncated": False, "scored_at": scored_at,
    }
    return [values[c] for c in SCORED_COLUMNS]


def _item_row(item: str, published: dt.datetime) -> list[Any]:
    values = {
        "id": item, "source": "test", "url": f"https://n.example/{item}", "title": f"标题 {item}", "text": "正文",
        "lang": "zh", "published_at": published, "ingested_at": published, "kafka_topic": "news",
        "kafka_partition": 0, "kafka_offset": 0, "stored_at": SCORED_AT,
    }
    return [values[c] for c in ITEM_COLUMNS]


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
    rows.append(row("i0", "vT", "economy", 0.7, published=T0, task="risk"))
    store.insert("scored", rows, SCORED_COLUMNS)
    store.insert("items", [_item_row(str(r[0]), r[SCORED_COLUMNS.index("published_at")]) for r in rows], ITEM_COLUMNS)
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
    data = json.loads(out.read_text(encoding="utf-8"))["heads"]["sentiment"]
    assert data["common"] == 8 and data["agree"] == 5
    assert data["confusion"]["neu"] == {"neg": 0, "neu": 1, "pos": 1}
    assert [c["id"] for c in data["changed"]] == ["i1", "i7", "i4"]
    assert data["label_counts_all"]["b"] == {"neg": 4, "neu": 2, "pos": 4}

    bad = CliRunner().invoke(
        cli, ["diff", "--model-version", "vA", "--store", store_settings.dsn],
        env={"YUQING_STORE__DATABASE": store_settings.database},
    )
    assert bad.exit_code == 2 and "exactly twice" in bad.output


def _entity_row(item: str, version: str, entities: list[tuple[str, str]], *,
                scored_at: dt.datetime = SCORED_AT) -> list[Any]:
    published = T0 + dt.timedelta(hours=int(item[1:]))  # as the item's scored rows
    values = {
        "id": item, "model_version": version, "source": "test", "lang": "zh", "published_at": published,
        "sentiment": "neutral", "entity_text": [e for e, _ in entities],
        "entity_normalized": [normalize_entity(e) for e, _ in entities], "entity_type": [t for _, t in entities],
        "entity_start": [0] * len(entities), "entity_end": [len(e) for e, _ in entities],
        "entity_score": [0.9] * len(entities), "scored_at": scored_at,
    }
    return [values[c] for c in ENTITY_COLUMNS]


@pytest.fixture
def multihead(store: Store) -> Store:
    """Two multi-head versions (sentiment, category, risk, entities) on five items; a third
    version with a sentiment head only."""
    plan = {  # id -> (A sentiment, category, risk), (B ...)
        "m0": (("negative", "finance", "corruption"), ("negative", "finance", "corruption")),
        "m1": (("neutral", "sports", "other"), ("positive", "sports", "other")),
        "m2": (("positive", "finance", "other"), ("positive", "stocks", "other")),
        "m3": (("negative", "society", "social"), ("negative", "society", "conflict")),
        "m4": (("neutral", "game", "other"), ("neutral", "game", "other")),
    }
    rows = []
    for n, (item, (a, b)) in enumerate(plan.items()):
        published = T0 + dt.timedelta(hours=n)
        for version, labels in (("mA", a), ("mB", b)):
            for task, label in zip(("sentiment", "category", "risk"), labels, strict=True):
                rows.append(row(item, version, label, 0.8, published=published, task=task))
        rows.append(row(item, "s1", a[0], 0.8, published=published))
    store.insert("scored", rows, SCORED_COLUMNS)
    store.insert("entities", [
        # m0: B finds both (one spelled full-width, one case changed): 2 of 2.
        _entity_row("m0", "mA", [("华为", "ORG"), ("Elon Musk", "PER")]),
        _entity_row("m0", "mB", [("华为", "ORG"), ("ＥＬＯＮ ＭＵＳＫ", "PER")]),
        # m1: B calls a place an organisation (a miss and a false find) and adds one.
        _entity_row("m1", "mA", [("深圳", "LOC")]),
        _entity_row("m1", "mB", [("深圳", "ORG"), ("北京", "LOC")]),
        # m2: B finds nothing (an empty set is a set); m3: only B analysed it.
        _entity_row("m2", "mA", [("腾讯", "ORG")]),
        _entity_row("m2", "mB", []),
        _entity_row("m3", "mB", [("上海", "LOC")]),
        # m0 re-delivered to A, 华为 found twice: FINAL keeps this set, each entity counted once.
        _entity_row("m0", "mA", [("华为", "ORG"), ("Elon Musk", "PER"), ("华为", "ORG")],
                    scored_at=SCORED_AT + dt.timedelta(minutes=1)),
    ], ENTITY_COLUMNS)
    return store


def test_every_shared_head_and_the_entities_are_compared(multihead: Store) -> None:
    result = diff_models(multihead, "mA", "mB", top=5)
    assert [d.task for d in result.heads] == ["sentiment", "category", "risk"]
    agreement = {d.task: (d.common, d.agree) for d in result.heads}
    assert agreement == {"sentiment": (5, 4), "category": (5, 4), "risk": (5, 4)}
    sentiment = result.heads[0]
    assert sentiment.confusion["neutral"] == {"positive": 1, "neutral": 1}
    assert [(c.id, c.title) for c in result.heads[1].changed] == [("m2", "")]  # no items row: no title
    e = result.entities
    assert e is not None and (e.items_a, e.items_b, e.common) == (3, 4, 3)
    # A: 2 + 1 + 1 = 4 entities, B: 2 + 2 + 0 = 4, both: 2 (m0's, whatever the spelling).
    assert (e.total.a, e.total.b, e.total.matched) == (4, 4, 2)
    assert e.total.precision == pytest.approx(0.5) and e.total.recall == pytest.approx(0.5)
    assert (e.by_type["LOC"].a, e.by_type["LOC"].b, e.by_type["LOC"].matched) == (1, 1, 0)
    assert e.by_type["PER"].precision == 1.0 and e.by_type["ORG"].recall == pytest.approx(1 / 2)
    assert e.by_type["ORG"].precision == pytest.approx(1 / 2)
    # In a range holding m2 alone, B found none: no precision, recall 0.
    only = diff_entities(multihead, "mA", "mB", since=T0 + dt.timedelta(hours=2), until=T0 + dt.timedelta(hours=3))
    assert only.common == 1 and only.total.precision is None and only.total.recall == 0.0


def test_a_version_without_entities_or_heads_compares_what_is_shared(multihead: Store) -> None:
    result = diff_models(multihead, "mA", "s1")
    assert [d.task for d in result.heads] == ["sentiment"] and result.entities is None
    assert result.heads[0].agree == result.heads[0].common == 5
    assert diff_models(multihead, "mA", "mB", task="entities").heads == []
    with pytest.raises(DataError, match="no 'category' rows"):
        diff_models(multihead, "mA", "s1", task="category")
    with pytest.raises(DataError, match="several tasks"):
        diff_versions(multihead, "mA", "mB")


def test_cli_compares_every_head(multihead: Store, store_settings: StoreSettings, tmp_path: Path) -> None:
    out = tmp_path / "diff.json"
    result = CliRunner().invoke(
        cli, ["diff", "--model-version", "mA", "--model-version", "mB", "--store", store_settings.dsn,
              "--json", str(out)],
        env={"YUQING_STORE__DATABASE": store_settings.database}, catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    for task in ("sentiment", "category", "risk"):
        assert f"task {task}: A = mA  vs  B = mB" in result.output
    assert "entities: sets of (normalized name, type) per item, B against A" in result.output
    assert "all   4  4     2      50.0%   50.0%" in result.output
    data = json.loads(out.read_text(encoding="utf-8"))
    assert sorted(data["heads"]) == ["category", "risk", "sentiment"]
    assert data["entities"]["by_type"]["PER"] == {"a": 1, "b": 1, "matched": 1, "precision": 1.0, "recall": 1.0}
