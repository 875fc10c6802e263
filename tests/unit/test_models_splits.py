"""The one split rule: deterministic, disjoint, ~10% test and ~10% validation."""

from __future__ import annotations

import hashlib
from collections import Counter

from models.datasets import Example, stratified_limit
from models.splits import normalize_text, split_examples, split_of


def _examples(n: int) -> list[Example]:
    return [Example(f"news item number {i} about topic {i % 7}", "pos" if i % 3 else "neg") for i in range(n)]


def test_rule_is_sha1_of_the_normalized_text_mod_10() -> None:
    for text in ("股市大跌", "The Rock is destined", "  spaced   OUT text ", "Ｆｕｌｌ"):
        bucket = int(hashlib.sha1(normalize_text(text).encode()).hexdigest(), 16) % 10
        assert split_of(text) == ("test" if bucket == 0 else "validation" if bucket == 1 else "train")


def test_normalization() -> None:
    assert normalize_text("  Hello \t\n WORLD  ") == "hello world"
    assert normalize_text("ＡＢＣ　１２３") == "abc 123"  # NFKC folds full-width forms
    assert split_of("Hello   World") == split_of("hello world") == split_of(" HELLO WORLD\n")


def test_deterministic_and_disjoint() -> None:
    examples = _examples(5000)
    first, second = split_examples(examples), split_examples(list(reversed(examples)))
    assert {k: sorted(e.text for e in v) for k, v in first.items()} == {
        k: sorted(e.text for e in v) for k, v in second.items()
    }
    texts = {k: {e.text for e in v} for k, v in first.items()}
    assert not texts["train"] & texts["test"]
    assert not texts["train"] & texts["validation"]
    assert not texts["validation"] & texts["test"]
    assert sum(map(len, texts.values())) == len(examples)


def test_about_ten_percent_test_and_validation() -> None:
    parts = split_examples(_examples(20000))
    share = {k: len(v) / 20000 for k, v in parts.items()}
    assert 0.09 < share["test"] < 0.11
    assert 0.09 < share["validation"] < 0.11


def test_limit_is_stratified_deterministic_and_keeps_test_inside_test() -> None:
    examples = _examples(3000)
    subset = stratified_limit(examples, 300)
    assert len(subset) == 300
    assert subset == stratified_limit(list(examples), 300)
    full, part = Counter(e.label for e in examples), Counter(e.label for e in subset)
    for label in full:
        assert abs(part[label] / 300 - full[label] / 3000) < 0.01
    full_test = {e.text for e in split_examples(examples)["test"]}
    assert {e.text for e in split_examples(subset)["test"]} <= full_test


def test_limit_keeps_every_label() -> None:
    examples = [Example(f"common {i}", "a") for i in range(990)] + [Example(f"rare {i}", "b") for i in range(10)]
    subset = stratified_limit(examples, 50)
    assert len(subset) == 50
    assert Counter(e.label for e in subset)["b"] >= 1
