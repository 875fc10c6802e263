"""Huge texts: cut to a character budget before tokenizing, so memory and time stay bounded."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from export.package import ExportOptions, build_package
from stream.core.scorer import CHARS_PER_TOKEN, OnnxScorer
from tests.tiny_models import save_tiny_classifier


@pytest.fixture(scope="module")
def scorer(tmp_path_factory: pytest.TempPathFactory) -> OnnxScorer:
    root = tmp_path_factory.mktemp("budget")
    ckpt = save_tiny_classifier(root / "ckpt", labels=("negative", "positive"))
    build_package(ExportOptions(ckpt, root / "pkg", max_length=32, task="sentiment", progress=False))
    return OnnxScorer.open(Path(root / "pkg"), device="cpu")


def test_a_5_mb_text_is_cut_before_tokenizing_and_scored_as_its_prefix(scorer: OnnxScorer) -> None:
    budget = scorer.max_length * CHARS_PER_TOKEN
    huge = ("markets rally as 央行 cuts rates; " * 200_000)[:5_000_000]
    tracemalloc.start()
    started = time.perf_counter()
    [big] = [a.predictions["sentiment"] for a in scorer.analyze([huge])]
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    [prefix] = [a.predictions["sentiment"] for a in scorer.analyze([huge[:budget]])]
    assert big.truncated and prefix.truncated
    assert big.label == prefix.label
    assert np.allclose(list(big.probs.values()), list(prefix.probs.values()), atol=1e-6)
    assert elapsed < 2.0  # tokenizing all of it (every overflow chunk) took several seconds
    assert peak < 20_000_000  # Python-side memory: the cut, not 5 MB of tokens


def test_texts_within_the_budget_are_untouched_and_truncated_says_what_the_model_saw(scorer: OnnxScorer) -> None:
    budget = scorer.max_length * CHARS_PER_TOKEN
    short, spaces = "markets rally", "a" + " " * (budget + 10) + "b"
    encoded = scorer.encode([short, "word " * (budget // 5), spaces])
    assert encoded.truncated == [False, True, True]  # the last: cut although its tokens would fit
    assert scorer.encode([short]).ids == scorer.encode([short + " "]).ids
