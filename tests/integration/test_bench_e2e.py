"""`yuqing bench` end to end: the real broker and a real chdb store, on a tiny random model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from stream.cli import cli
from tests.tiny_models import save_tiny_classifier

pytestmark = pytest.mark.integration


def test_e2e_case_drains_the_topic_into_the_store(kafka_bootstrap: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YUQING_CACHE", str(tmp_path / "cache"))
    ckpt = save_tiny_classifier(tmp_path / "ckpt", labels=("negative", "positive"))
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(cli, ["bench", "--quick", "--model-dir", str(ckpt), "--only", "e2e",
                                      "--bootstrap", kafka_bootstrap, "--json", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    report = json.loads(out.read_text(encoding="utf-8"))
    (case,) = report["cases"]
    assert case["name"] == "e2e b256" and "error" not in case, case
    n = report["texts"]["n"]
    pipeline = case["pipeline"]
    # Every item went Kafka -> scorer -> store, with the labels the same scorer gives directly.
    assert pipeline["read"] == pipeline["scored_items"] == pipeline["rows_in_store"] == n
    assert pipeline["dead_lettered"] == 0 and pipeline["same_labels_as_raw"]
    assert case["items_per_s"] > 0 and case["raw_onnx"]["items_per_s"] > 0
    assert case["raw_onnx"]["items"] == 2 * n  # the raw passes before and after the pipeline
    assert set(case["stages_s"]) == set(case["stages_cpu_s"]) == {"poll", "prepare", "score", "write", "commit"}
    assert case["stages_s"]["score"] > 0 and sum(case["stages_s"].values()) == pytest.approx(case["seconds"], abs=0.01)
    assert report["ratios"]["e2e_vs_raw_onnx"] > 0
    assert report["ratios"]["int8_vs_torch"] is None  # only the e2e group ran
