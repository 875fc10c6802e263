"""The throughput helpers `yuqing bench` calls, on a tiny package (figures are for real models)."""

from __future__ import annotations

from pathlib import Path

import pytest

from export.check_data import BUILTIN
from export.package import ExportOptions, build_package
from export.testing import save_tiny_classifier
from export.throughput import compare_bucketing, compare_throughput


def test_pipeline_comparison_and_bucketing_gain(tmp_path: Path) -> None:
    ckpt = save_tiny_classifier(tmp_path / "ckpt", labels=("negative", "positive"))
    package = tmp_path / "pkg"
    build_package(ExportOptions(ckpt, package, int8=True, progress=False))
    texts = [text * (1 + i % 4) for i, (text, _) in enumerate(BUILTIN)]

    result = compare_throughput(package, ckpt, texts, variant="fp32", threads=1, batch_size=8, warmup=4, repeats=2)
    assert result.n_texts == len(texts) and result.variant == "fp32" and result.threads == 1
    assert result.onnx_texts_per_s > 0 and result.pipeline_texts_per_s > 0
    assert result.ratio == pytest.approx(result.onnx_texts_per_s / result.pipeline_texts_per_s)
    assert result.label_agreement == 1.0  # same weights, same truncation: the same labels
    assert result.truncated > 0

    gain = compare_bucketing(package, texts, variant="fp32", threads=1, batch_size=8, repeats=2)
    assert gain.variant == "fp32" and gain.label_agreement == 1.0 and gain.speedup > 0
