"""`yuqing evaluate --head` on a multi-head checkpoint: data with fewer labels than the head (2-class
polarity for the 3-class sentiment head) is judged on its own labels, and the per-language news
sentiment sets are the same split as the whole set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.datasets import load_dataset
from models.multitask import evaluate_head
from tests.tiny_models import save_tiny_multihead


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_multihead(tmp_path_factory.mktemp("eval") / "ckpt", fit_steps=10)


def test_polarity_data_never_counts_a_neutral_prediction(checkpoint: Path, tmp_path: Path) -> None:
    data = tmp_path / "polarity.jsonl"
    rows = [{"text": f"item number {i} {'rises' if i % 2 else 'falls'} sharply", "label": "positive" if i % 2
             else "negative"} for i in range(60)]
    data.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    three = evaluate_head(checkpoint, "sentiment", str(data), split="all")
    assert three["ignored_labels"] == ["neutral"]
    matrix = three["confusion_matrix"]
    assert matrix["labels"] == ["negative", "positive"]  # neutral is neither predicted nor averaged in
    assert sum(map(sum, matrix["rows_true_columns_predicted"])) == 60
    assert set(three["report"]) >= {"negative", "positive"} and "neutral" not in three["report"]
    # Data with every label ignores none.
    full = tmp_path / "three.jsonl"
    full.write_text("\n".join(json.dumps({"text": f"notice {i}", "label": lb})
                              for i, lb in enumerate(["negative", "neutral", "positive"] * 10)), encoding="utf-8")
    assert evaluate_head(checkpoint, "sentiment", str(full), split="all")["ignored_labels"] == []


def test_the_per_language_sets_are_the_whole_sets_split_by_language() -> None:
    whole = {name: {e.text for e in part} for name, part in load_dataset("builtin:news-sentiment").splits().items()}
    for lang in ("zh", "en"):
        for name, part in load_dataset(f"builtin:news-sentiment-{lang}").splits().items():
            assert part and {e.text for e in part} <= whole[name]
    zh, en = (load_dataset(f"builtin:news-sentiment-{lang}").examples for lang in ("zh", "en"))
    assert len(zh) + len(en) == len(load_dataset("builtin:news-sentiment").examples)
