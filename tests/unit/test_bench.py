"""`yuqing bench`: the case plan, the arithmetic, the timers, and one quick run of the harness on a
tiny random model (a report that is well formed, not a speed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from stream.cli import cli
from stream.tools.bench import gpu
from stream.tools.bench.cases import plan, time_calls
from stream.tools.bench.corpus import MIX, bench_texts
from stream.tools.bench.e2e import Window, e2e_repeat
from stream.tools.bench.report import ratios
from stream.tools.bench.run import targets
from tests.tiny_models import save_tiny_classifier


def test_cpu_plan_covers_engines_bucketing_and_e2e() -> None:
    cases = plan("cpu", (1, 8, 32, 128), torch_cases=True, e2e=True)
    engines = [c for c in cases if c.group == "engines"]
    assert {(c.engine, c.variant) for c in engines} == {("torch", "fp32"), ("onnx", "fp32"), ("onnx", "int8")}
    assert sorted({c.batch_size for c in engines}) == [1, 8, 32, 128]
    assert all(c.chunk == c.batch_size for c in engines)  # one model run per call, as the pipeline does
    on, off = (c for c in cases if c.group == "bucketing")
    assert (on.bucketing, off.bucketing) == (True, False)
    assert on.variant == off.variant == "int8" and on.batch_size == off.batch_size == 32
    assert on.chunk == off.chunk == 256 and on.chunk > on.batch_size  # bucketing needs several sub-batches
    (e2e,) = (c for c in cases if c.group == "e2e")
    assert e2e.variant == "int8" and e2e.chunk == 256
    one_run = [c for c in cases if c.group == "runs"]  # the engines at batch 32, one run at a time
    assert [(c.variant, c.batch_size, c.runs) for c in one_run] == [("fp32", 32, 1), ("int8", 32, 1)]
    assert all(c.runs == 0 for c in cases if c.group != "runs")
    assert len({c.name for c in cases}) == len(cases)


def test_gpu_plan_uses_fp16_and_no_torch_without_checkpoint() -> None:
    cases = plan("cuda", (64, 256, 1024), torch_cases=False, e2e=False)
    assert not any(c.engine in ("torch", "e2e") for c in cases)
    assert {c.variant for c in cases if c.group == "engines"} == {"fp32", "fp16"}
    bucketing = [c for c in cases if c.group == "bucketing"]
    assert all(c.variant == "fp16" and c.chunk >= 8 * c.batch_size for c in bucketing)


def test_gpu_peak_table_and_fraction() -> None:
    assert gpu.peak_tflops("NVIDIA H200") == 989.0
    assert gpu.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert gpu.peak_tflops("Some Future GPU") is None
    assert gpu.fraction_of_peak(1e9, 1e5, 100.0) == pytest.approx(1e14 / 1e14)
    assert gpu.fraction_of_peak(1e9, 1e5, None) is None


def test_heads_group_compares_the_full_analysis_with_one_classifier() -> None:
    assert not any(c.group == "heads" for c in plan("cpu", (8,), torch_cases=False, e2e=False))
    cases = plan("cpu", (8,), torch_cases=False, e2e=False, heads_variant="fp32")
    analysis, single = (c for c in cases if c.group == "heads")
    assert (analysis.subject, single.subject) == ("package", "baseline")
    # Same texts, variant and batching (the consumer's) for both: only the package differs.
    assert {k: v for k, v in vars(analysis).items() if k not in ("name", "subject")} == \
        {k: v for k, v in vars(single).items() if k not in ("name", "subject")}
    assert analysis.variant == "fp32" and analysis.chunk == 256

    def r(per_s: float) -> dict[str, Any]:
        return {"items": 100, "items_per_s": per_s, "items_per_cpu_s": per_s / 2}

    results = {analysis.name: r(40), single.name: r(50)}
    out = ratios(cases, results, "cpu", 0.0, None)
    assert out["analysis_vs_single"] == 1.25  # time per item: 1/40 over 1/50
    assert out["per_cpu_second"]["analysis_vs_single"] == 1.25
    verdict = targets(out)["analysis_vs_single"]
    assert verdict == {"target": 1.3, "goal": "<=", "measured": 1.25, "met": True}  # a cost: at most
    assert targets({"analysis_vs_single": 1.31})["analysis_vs_single"]["met"] is False
    assert targets({"bucketing_gain": 1.31})["bucketing_gain"]["met"] is True
    assert targets({})["bucketing_gain"]["met"] is None  # not measured is not "not met"
    # Without a baseline package the single classifier is the package's graph asked for one head.
    alone = [c for c in plan("cpu", (8,), torch_cases=False, e2e=False, heads_variant="fp32", baseline=False)
             if c.group == "heads"]
    assert [c.subject for c in alone] == ["package", "one-head"]
    out = ratios(alone, {alone[0].name: r(40), alone[1].name: r(44)}, "cpu", 0.0, None)
    assert out["analysis_vs_single"] == 1.1
    results[single.name] = {"error": "boom"}
    assert ratios(cases, results, "cpu", 0.0, None)["analysis_vs_single"] is None


def test_bench_texts_are_mixed_and_reproducible() -> None:
    first = bench_texts(40, seed=3)
    assert first.texts == bench_texts(40, seed=3).texts
    assert first.texts != bench_texts(40, seed=4).texts
    counts = first.describe()["by_source"]
    assert counts == {name: round(40 * share) for name, share in MIX}
    assert any("\u4e00" <= ch <= "\u9fff" for t in first.texts for ch in t)  # Chinese present
    lengths = sorted(len(t) for t in first.texts)
    assert lengths[-1] > 10 * lengths[len(lengths) // 2] // 2  # long reviews among short sentences


def test_time_calls_times_every_chunk_after_warmup() -> None:
    calls: list[int] = []

    def score(texts: list[str]) -> list[str]:
        calls.append(len(texts))
        return [t.upper() for t in texts]

    timing = time_calls(score, [f"t{i}" for i in range(10)], chunk=4, warmup=5)
    assert calls == [4, 4, 4, 4, 2]  # two warm-up calls (5 texts round up), then 4 + 4 + 2
    assert timing.labels == [f"T{i}" for i in range(10)]
    summary = timing.summary()
    assert summary["items"] == 10 and summary["calls"] == 3 and summary["items_per_s"] > 0
    assert summary["latency_ms"]["p50"] <= summary["latency_ms"]["p99"]

    calls.clear()
    best = time_calls(score, [f"t{i}" for i in range(10)], chunk=4, warmup=0, passes=2)
    assert calls == [4] + [4, 4, 2] * 2  # one warm-up call, then two timed passes
    rates = best.summary()["passes_items_per_s"]
    assert len(rates) == 2 and best.summary()["items_per_s"] == pytest.approx(max(rates), rel=0.01)


def test_e2e_sends_a_few_micro_batches() -> None:
    assert e2e_repeat(256, 256) == 4 and e2e_repeat(1024, 256) == 1 and e2e_repeat(100, 256) == 11


def test_ratios_compare_best_batch_sizes_bucketing_and_e2e() -> None:
    cases = plan("cpu", (1, 8), torch_cases=True, e2e=True)

    def r(per_s: float, **extra: Any) -> dict[str, Any]:
        return {"items": 100, "items_per_s": per_s, "items_per_cpu_s": per_s / 2, **extra}

    results = {
        "torch-fp32 b1": r(10), "torch-fp32 b8": r(20),
        "onnx-fp32 b1": r(30), "onnx-fp32 b8": r(25),
        "onnx-int8 b1": r(90), "onnx-int8 b8": r(40),
        "bucketing-on b8": r(60), "bucketing-off b8": r(40),
        "onnx-fp32 b8 one-run": r(20), "onnx-int8 b8 one-run": r(32),
        "e2e b256": r(45, cpu_seconds=4.0, raw_onnx={"items_per_s": 50, "items": 200, "cpu_seconds": 10.0}),
    }
    out = ratios(cases, results, "cpu", 0.0, None)
    assert out["int8_vs_torch"] == 4.5  # 90 at b1 over torch's best, 20 at b8
    assert out["by_batch"]["int8_vs_torch"] == {"1": 9.0, "8": 2.0}
    assert out["bucketing_gain"] == 1.5 and out["e2e_vs_raw_onnx"] == 0.9
    assert out["scorer_vs_torch"] == 3.0  # bucketing-on b8 (60) over torch b8 (20)
    assert out["parallel_vs_one_run"] == {"fp32": 1.25, "int8": 1.25}  # the engines at b8 over one run
    assert out["per_cpu_second"]["int8_vs_torch"] == 4.5
    assert out["per_cpu_second"]["e2e_vs_raw_onnx"] == 1.25  # 100 items / 4 s against 200 / 10 s
    results["onnx-int8 b1"] = {"error": "boom"}
    assert ratios(cases, results, "cpu", 0.0, None)["int8_vs_torch"] == 2.0


class _Batch:
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


class _Source:
    """A source whose batches are plain counts: the timer's bookkeeping, not Kafka, is under test."""

    def __init__(self, sizes: list[int]) -> None:
        self.sizes = sizes
        self.committed: list[int] = []

    def next_batch(self, max_items: int, max_wait_ms: int) -> _Batch:
        return _Batch(self.sizes.pop(0) if self.sizes else 0)

    def commit(self, batch: _Batch) -> None:
        self.committed.append(len(batch))


def test_window_times_from_first_items_to_last_commit() -> None:
    source = _Source([0, 3, 2, 0])
    window = Window()
    window.attach(source)
    assert window.seconds == 0.0
    assert len(source.next_batch(10, 0)) == 0 and window.first_poll is None  # empty polls do not start it
    for _ in range(2):
        batch = source.next_batch(10, 0)
        source.commit(batch)
    assert source.committed == [3, 2]
    assert len(window.turns) == 2 and window.seconds > 0
    assert window.first_poll is not None and window.last_commit is not None
    assert window.first_poll < window.last_commit


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_classifier(tmp_path_factory.mktemp("bench") / "ckpt", labels=("negative", "positive"))


def test_quick_bench_writes_a_well_formed_report(tiny_checkpoint: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YUQING_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(cli, ["bench", "--quick", "--model-dir", str(tiny_checkpoint), "--batch-sizes", "4",
                                      "--no-e2e", "--threads", "1", "--json", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "int8_vs_torch=" in result.output and "bucketing-off b4" in result.output
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["command"] == (f"yuqing bench --json {out} --quick --batch-sizes 4 --model-dir {tiny_checkpoint} "
                                 "--threads 1 --no-e2e --no-progress")
    assert {"command", "device", "texts", "subjects", "host", "ratios", "cases", "targets", "table"} <= set(report)
    assert report["texts"]["n"] == 48 and report["texts"]["tokens_mean"] > 0
    assert report["host"]["threads"]["torch_intra_op"] == report["host"]["threads"]["ort_intra_op"] == 1
    assert report["host"]["threads"]["ort_runs_at_once"] == 1  # one thread: one run
    assert report["subjects"]["variants"]["int8"]["origin"] == "built by bench (not gated)"
    names = [c["name"] for c in report["cases"]]
    assert names == ["torch-fp32 b4", "onnx-fp32 b4", "onnx-int8 b4", "onnx-fp32 b4 one-run", "onnx-int8 b4 one-run",
                     "bucketing-on b4", "bucketing-off b4"]
    for case in report["cases"]:
        assert "error" not in case, case
        assert case["items"] == 48 and case["items_per_s"] > 0 and case["peak_rss_mb"] > 0
        assert 0 < case["latency_ms"]["p50"] <= case["latency_ms"]["p99"]
        assert "labels" not in case
    onnx = [c for c in report["cases"] if c["engine"] == "onnx"]
    assert all(0.0 <= c["label_agreement_vs_torch"] <= 1.0 and 0 < c["padding_efficiency"] <= 1 for c in onnx)
    on, off = onnx[-2:]
    assert on["padding_efficiency"] > off["padding_efficiency"]  # sorting by length pads less
    ratios_ = report["ratios"]
    assert ratios_["int8_vs_torch"] > 0 and ratios_["fp32_vs_torch"] > 0 and ratios_["bucketing_gain"] > 0
    assert ratios_["e2e_vs_raw_onnx"] is None  # --no-e2e
    assert report["targets"]["bucketing_gain"]["target"] == 1.3
    assert report["targets"]["analysis_vs_single"]["met"] is None  # a single-head subject: not measured
    assert report["flops"]["package"]["flops_per_text"] > 0
    assert all(c["flops_per_text"] > 0 for c in report["cases"])


def test_a_multihead_checkpoint_runs_in_torch_beside_its_package(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The pipeline cannot load a multi-head checkpoint; the bench runs it in eager torch, every
    head, and the ONNX cases' labels are compared with it."""
    from tests.tiny_models import build_tiny_multihead

    monkeypatch.setenv("YUQING_CACHE", str(tmp_path / "cache"))
    package = build_tiny_multihead(tmp_path)
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(cli, ["bench", "--quick", "--model-dir", str(tmp_path / "ckpt-multihead"),
                                      "--package", str(package), "--batch-sizes", "4", "--only", "engines",
                                      "--threads", "1", "--json", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    cases = {c["name"]: c for c in json.loads(out.read_text(encoding="utf-8"))["cases"]}
    assert set(cases) == {"torch-fp32 b4", "onnx-fp32 b4", "onnx-int8 b4"}
    assert all("error" not in c for c in cases.values()), cases
    assert cases["torch-fp32 b4"]["items"] == 48 and cases["torch-fp32 b4"]["provider"].startswith("torch")
    # the same model on the same texts: fp32 ONNX and eager torch give the same sentiment labels
    assert cases["onnx-fp32 b4"]["label_agreement_vs_torch"] >= 0.97


@pytest.mark.parametrize("graph", ["plain", "fused"])
def test_a_trimmed_package_is_measured_against_its_full_vocabulary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  graph: str) -> None:
    from export.package import ExportOptions, build_package
    from stream.core.manifest import VARIANT_FILES, read_manifest
    from tests.unit.test_export_trim import LABELS, ZH_EN, save_unigram_classifier

    monkeypatch.setenv("YUQING_CACHE", str(tmp_path / "cache"))
    ckpt = save_unigram_classifier(tmp_path / "ckpt")
    corpus = tmp_path / "corpus.csv"
    corpus.write_text("text,label\n" + "\n".join(f'"{t}",{LABELS[i % 2]}' for i, t in enumerate(ZH_EN)) + "\n",
                      encoding="utf-8")
    trimmed = build_package(ExportOptions(ckpt, tmp_path / "trimmed", trim_vocab=str(corpus), trim_margin=10,
                                          fp32_graph=graph, progress=False)).path
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(cli, ["bench", "--quick", "--model-dir", str(ckpt), "--package", str(trimmed),
                                      "--batch-sizes", "4", "--only", "trim", "--threads", "1", "--json", str(out),
                                      "--no-progress"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    report = json.loads(out.read_text(encoding="utf-8"))
    cases = {c["name"]: c for c in report["cases"]}
    assert set(cases) == {"trimmed-fp32 b4", "untrimmed-fp32 b4"}
    assert all("error" not in c and c["items"] == 48 for c in cases.values()), cases
    assert report["package"]["vocabulary"]["pieces"] < report["package"]["vocabulary"]["of"]
    assert report["untrimmed_package"]["vocabulary"] is None
    full = Path(report["subjects"]["untrimmed"]).expanduser()
    # the same fp32 graph as the package's, whichever that is: the vocabulary is the only difference
    assert read_manifest(full).data["export"]["graph"]["fp32_graph"] == graph
    sizes = [(p / VARIANT_FILES["fp32"]).stat().st_size for p in (full, trimmed)]
    ratios_ = report["ratios"]
    assert ratios_["trim_size"] == round(sizes[0] / sizes[1], 3) and ratios_["trim_size"] > 1
    rss = [cases[f"{n}-fp32 b4"]["rss_after_load_mb"] for n in ("untrimmed", "trimmed")]
    assert ratios_["trim_rss"] == round(rss[0] / rss[1], 3)
    assert 0.0 <= ratios_["trim"]["label_agreement"] <= 1.0 and ratios_["trim"]["load_s"] > 0
    assert {"trim_size", "trim_rss"} <= set(report["targets"])
    assert "full vocabulary over trimmed" in result.output
