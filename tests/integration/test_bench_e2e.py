"""`yuqing bench` end to end: the real broker and a real chdb store, on a tiny random model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from stream.cli import cli
from tests.tiny_models import build_tiny_multihead, build_tiny_packages, save_tiny_classifier

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


def test_bench_on_a_multihead_package_prints_every_section(kafka_bootstrap: str, tmp_path: Path) -> None:
    """`yuqing bench --package MULTI --baseline SINGLE`: engines, bucketing, the full analysis against
    one classifier and the consumer end to end, with the package, FLOPs and host-peak blocks."""
    multi = build_tiny_multihead(tmp_path)
    (single,) = build_tiny_packages(tmp_path)[:1]
    out = tmp_path / "bench.json"
    args = ["bench", "--quick", "--package", str(multi), "--baseline", str(single), "--batch-sizes", "4",
            "--threads", "1", "--bootstrap", kafka_bootstrap, "--json", str(out), "--no-progress"]
    for group in ("engines", "bucketing", "heads", "e2e"):
        args += ["--only", group]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    report = json.loads(out.read_text(encoding="utf-8"))
    names = [c["name"] for c in report["cases"]]
    assert names == ["onnx-fp32 b4", "onnx-int8 b4", "bucketing-on b4", "bucketing-off b4",
                     "analysis-all-heads b64", "single-classifier b64", "e2e b256"]
    assert all("error" not in c for c in report["cases"]), report["cases"]
    for line in ("absolute figures are this host's", "case ", "analysis_vs_single=", "per CPU-second:",
                 "package tiny-news", "baseline package tiny-sentiment", "FLOPs per text (package",
                 "FLOPs per text (baseline", "full analysis (every head, one pass) vs single classifier (sentiment)",
                 "host peak:", "analysis-all-heads b64   load"):
        assert line in result.output, line
    analysis, single_case = (c for c in report["cases"] if c["group"] == "heads")
    assert analysis["heads"] == ["sentiment", "category", "risk"] and single_case["heads"] == ["sentiment"]
    assert analysis["flops_per_text"] > single_case["flops_per_text"] > 0  # the token head runs per token
    assert report["ratios"]["analysis_vs_single"] == pytest.approx(
        single_case["items_per_s"] / analysis["items_per_s"], rel=0.01)
    assert report["targets"]["analysis_vs_single"]["goal"] == "<="
    assert report["baseline_package"]["total_mb"] > 0 and report["subjects"]["baseline"]
    e2e = next(c for c in report["cases"] if c["group"] == "e2e")
    n = report["texts"]["n"]
    stored = e2e["pipeline"]["stored_rows"]
    # One item row and one entities row per item, one scored row per (item, sequence head).
    assert stored == {"items": n, "scored": 3 * n, "entities": n}
    assert e2e["pipeline"]["rows_in_store"] == n and e2e["pipeline"]["same_labels_as_raw"]
