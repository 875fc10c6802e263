"""The bench's package figures: size, load time, memory, and GFLOP/s against the host's CPU peak."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from export.package import ExportOptions, build_package
from stream.cli import cli
from stream.core import host
from stream.tools.bench import cpu, flops
from stream.tools.bench.subjects import default_subject, is_multihead_package
from stream.tools.demo import DEMO_MODELS
from tests.tiny_models import build_tiny_multihead, save_tiny_classifier

SPR = {"avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "amx_int8", "amx_bf16"}
ZEN5 = {"avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_vp2intersect", "avx_vnni"}
ZEN4 = ZEN5 - {"avx512_vp2intersect"}


@pytest.mark.parametrize(("flags", "vendor", "fp32", "int8", "path"), [
    (SPR, "GenuineIntel", 64, 2048, "AMX"),
    (SPR - {"amx_int8"}, "GenuineIntel", 64, 256, "AVX-512 VNNI"),
    (ZEN5, "AuthenticAMD", 64, 256, "AVX-512 VNNI"),
    (ZEN4, "AuthenticAMD", 32, 128, "AVX-512 VNNI"),
    ({"avx2", "fma", "avx_vnni"}, "GenuineIntel", 32, 128, "AVX-VNNI"),
    ({"avx2", "fma"}, "GenuineIntel", 32, 64, "vpmaddubsw"),
    (set(), "", 8, 16, "vpmaddubsw"),
])
def test_peak_ops_per_cycle_from_flags(flags: set[str], vendor: str, fp32: int, int8: int, path: str) -> None:
    found = cpu.peak_ops_per_cycle(flags, vendor)
    assert (found["fp32_flops_per_cycle"], found["int8_ops_per_cycle"], found["int8_path"]) == (fp32, int8, path)


def test_host_peak_scales_with_clock_and_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu, "cpu_flags", lambda: (ZEN5, "AuthenticAMD", 2500.0))
    peak = cpu.host_peak(2)
    assert peak["fp32_gflops_per_core"] == 160.0 and peak["fp32_gflops"] == 320.0
    assert peak["int8_gflops"] == 4 * peak["fp32_gflops"]
    monkeypatch.setattr(cpu, "cpu_flags", lambda: (ZEN5, "AuthenticAMD", None))
    assert cpu.host_peak(2)["fp32_gflops"] is None  # no clock: no peak, and no made-up one
    assert cpu.achieved({"items_per_s": 10.0}, "int8", 1e9, cpu.host_peak(2)) == {"gflops": 10.0,
                                                                                  "peak_kind": "int8"}


def test_achieved_compares_each_variant_with_its_own_peak() -> None:
    peak = {"fp32_gflops": 100.0, "fp32_gflops_per_core": 50.0, "int8_gflops": 400.0, "int8_gflops_per_core": 200.0}
    result = {"items_per_s": 20.0, "items_per_cpu_s": 12.0}
    fp32 = cpu.achieved(result, "fp32", 2e9, peak)
    assert fp32 == {"gflops": 40.0, "peak_kind": "fp32", "fraction_of_peak": 0.4, "gflops_per_cpu_s": 24.0,
                    "fraction_of_core_peak": 0.48}
    assert cpu.achieved(result, "int8", 2e9, peak)["fraction_of_peak"] == 0.1
    assert cpu.achieved({"items_per_s": 0}, "fp32", 2e9, peak) == {} and cpu.achieved(result, "fp32", 0, peak) == {}


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bench-cpu")
    ckpt = save_tiny_classifier(root / "ckpt", labels=("negative", "positive"), report={"max_length": 64})
    build_package(ExportOptions(ckpt, root / "pkg", int8=True, progress=False))
    return root / "pkg"


def _hand_graph(path: Path) -> Path:
    """ids -> embedding (vocab 10 x 4) -> X·W (4 x 6) = Y -> Y·Yᵀ -> ·Y -> mean over tokens -> Gemm
    (3 x 6, transB): FLOPs per text of n tokens = 2·n·4·6 + 2·n·6·n + 2·n·n·6 + 2·3·6 = 36 + 48n + 24n²."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("Gather", ["E", "input_ids"], ["X"]),
        helper.make_node("MatMul", ["X", "W"], ["Y"]),
        helper.make_node("Transpose", ["Y"], ["Yt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["Y", "Yt"], ["S"]),
        helper.make_node("MatMul", ["S", "Y"], ["Z"]),
        helper.make_node("ReduceMean", ["Z"], ["P"], axes=[1], keepdims=0),
        helper.make_node("Gemm", ["P", "H", "b"], ["logits"], transB=1),
    ]
    weights = [numpy_helper.from_array(np.ones(shape, np.float32), name)
               for name, shape in (("E", (10, 4)), ("W", (4, 6)), ("H", (3, 6)), ("b", (3,)))]
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"])
    graph = helper.make_graph(nodes, "hand", [ids],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", 3])], weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture(scope="module")
def multihead(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_multihead(tmp_path_factory.mktemp("bench-multihead"))


def test_graph_flops_by_hand(tmp_path: Path) -> None:
    counted = flops.graph_flops(_hand_graph(tmp_path / "hand.onnx"))
    assert counted.coefficients == (36.0, 48.0, 24.0)
    assert counted.by_op == {"MatMul": (0.0, 48.0, 24.0), "Gemm": (36.0,)}
    assert counted.at(10) == 36 + 480 + 2400
    # Each text at its own length: the n² term makes (5, 15) cost more than (10, 10).
    assert counted.per_text([5, 15]) == (counted.at(5) + counted.at(15)) / 2 > counted.per_text([10, 10])
    assert counted.per_text([]) == 0.0
    assert counted.describe([10])["by_op"] == {"MatMul": 2880, "Gemm": 36}


def test_graph_flops_of_plain_and_fused_graphs_match_the_model(package: Path, tmp_path: Path) -> None:
    """The tiny BERT (hidden 32, 2 layers, FFN 64, 2 labels) counted by hand from the config, and
    on its graph both as exported (MatMuls) and fused (Attention, MatMul, Gemm for pooler and head)."""
    from export import onnx_export
    from export.checkpoint import load_checkpoint

    config = json.loads((package.parent / "ckpt" / "config.json").read_text())
    h, f, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    per_token = layers * (2 * h * 3 * h + 2 * h * h + 2 * 2 * h * f)  # QKV, output projection, FFN in and out
    per_token_squared = layers * 4 * h  # QKᵀ and the weighted sum of V
    per_text = 2 * h * h + 2 * h * 2  # pooler and classifier, once per text
    plain, fused = tmp_path / "plain.onnx", tmp_path / "fused.onnx"
    ckpt = load_checkpoint(package.parent / "ckpt", 64)
    onnx_export.export_fp32(ckpt, plain)
    onnx_export.optimize_graph(plain, fused, ckpt)
    for graph, ops in ((plain, {"MatMul", "Gemm"}), (fused, {"Attention", "MatMul", "Gemm"})):
        counted = flops.graph_flops(graph)
        assert counted.coefficients == (per_text, per_token, per_token_squared), graph.name
        assert set(counted.by_op) == ops


def test_footprint(package: Path) -> None:
    found = cpu.footprint(package)
    assert set(found["files_mb"]) == {"manifest.json", "model.onnx", "model.int8.onnx", "tokenizer.json"}
    assert found["total_mb"] == pytest.approx(sum(found["files_mb"].values()), abs=0.1)
    assert found["int8_scheme"] and found["vocabulary"] is None


def test_default_subject_is_what_the_demo_built(package: Path, multihead: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "yuqing-data"
    none = default_subject(data)
    assert none.package is None and none.baseline is None and "no demo package" in none.note
    assert "all-MiniLM-L6-v2" in none.note  # says what it runs instead
    [demo] = (data / "packages" / spec.name for spec in DEMO_MODELS)
    shutil.copytree(multihead, demo)
    found = default_subject(data)
    assert (found.package, found.checkpoint, found.baseline) == (demo, None, None)
    assert "multi-head" in found.note and "single classifier" not in found.note
    (data / "packages" / "other").mkdir()  # only what the demo writes counts
    assert default_subject(data).package == demo
    # A single-head package under a demo name runs with its checkpoint (the torch pipeline cases).
    single = replace(DEMO_MODELS[0], name="demo-sentiment")
    monkeypatch.setattr("stream.tools.demo.DEMO_MODELS", (single,))
    shutil.copytree(package, data / "packages" / single.name)
    shutil.copytree(package.parent / "ckpt", data / "models" / single.name)
    found = default_subject(data)
    assert (found.package, found.checkpoint) == (data / "packages" / single.name, data / "models" / single.name)
    assert "checkpoint" in found.note


def test_default_subject_prefers_a_multihead_demo_package(package: Path, multihead: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "yuqing-data"
    specs = (*DEMO_MODELS, replace(DEMO_MODELS[0], name="demo-analysis"))
    monkeypatch.setattr("stream.tools.demo.DEMO_MODELS", specs)
    shutil.copytree(package, data / "packages" / specs[0].name)
    shutil.copytree(multihead, data / "packages" / "demo-analysis")
    found = default_subject(data)
    assert (found.package, found.baseline, found.checkpoint) == (
        data / "packages" / "demo-analysis", data / "packages" / specs[0].name, None)
    assert "multi-head" in found.note and "single classifier" in found.note
    assert is_multihead_package(multihead) and not is_multihead_package(package)


@pytest.mark.parametrize(("cpuinfo", "fp32", "int8", "path"), [
    # Haswell: AVX2 + FMA, no VNNI.
    ("vendor_id\t: GenuineIntel\ncpu MHz\t\t: 2300.000\nflags\t\t: fpu sse4_2 avx avx2 fma\n", 32, 64,
     "vpmaddubsw"),
    # Skylake-SP: AVX-512, no VNNI.
    ("vendor_id\t: GenuineIntel\ncpu MHz\t\t: 2000.000\nflags\t\t: avx2 fma avx512f avx512bw\n", 64, 128,
     "vpmaddubsw"),
    # Cascade Lake: AVX-512 VNNI.
    ("vendor_id\t: GenuineIntel\ncpu MHz\t\t: 2000.000\nflags\t\t: avx2 fma avx512f avx512_vnni\n", 64, 256,
     "AVX-512 VNNI"),
    # Alder Lake: AVX2 with AVX-VNNI.
    ("vendor_id\t: GenuineIntel\ncpu MHz\t\t: 2000.000\nflags\t\t: avx2 fma avx_vnni\n", 32, 128, "AVX-VNNI"),
])
def test_peak_from_cpuinfo_text(cpuinfo: str, fp32: int, int8: int, path: str, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    second = cpuinfo.replace("2300.000", "2500.000").replace("2000.000", "2500.000")  # another core, faster now
    (tmp_path / "cpuinfo").write_text(f"processor\t: 0\n{cpuinfo}\nprocessor\t: 1\n{second}", encoding="utf-8")
    monkeypatch.setattr(host, "CPUINFO", tmp_path / "cpuinfo")
    monkeypatch.setattr(host, "CPUFREQ_MAX", tmp_path / "absent")
    peak = cpu.host_peak(4)
    assert (peak["fp32_flops_per_cycle"], peak["int8_ops_per_cycle"], peak["int8_path"]) == (fp32, int8, path)
    assert peak["clock_ghz"] == 2.5  # the highest clock any core reports
    assert peak["fp32_gflops"] == pytest.approx(2.5 * fp32 * 4) and peak["int8_gflops"] == pytest.approx(2.5 * int8 * 4)
    (tmp_path / "max").write_text("3100000\n")  # cpufreq's maximum, in kHz, wins where the kernel has it
    monkeypatch.setattr(host, "CPUFREQ_MAX", tmp_path / "max")
    assert cpu.host_peak(1)["fp32_gflops"] == pytest.approx(3.1 * fp32)


def test_cpuinfo_without_a_clock_gives_no_peak(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert host.parse_cpuinfo("flags : avx2 fma\ncpu MHz : n/a\n") == ({"avx2", "fma"}, "", None)
    monkeypatch.setattr(host, "CPUINFO", tmp_path / "absent")
    assert host.cpu_flags() == (set(), "", None)


def test_bench_on_a_package_reports_size_load_memory_and_peak(package: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(cli, ["bench", "--quick", "--package", str(package), "--batch-sizes", "4",
                                      "--no-e2e", "--only", "engines", "--threads", "1", "--json", str(out),
                                      "--no-progress"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["package"]["total_mb"] > 0 and report["cpu_peak"]["cores"] == 1
    assert "host peak:" in result.output and "load" in result.output
    onnx = [c for c in report["cases"] if c["engine"] == "onnx"]
    assert [c["name"] for c in onnx] == ["onnx-fp32 b4", "onnx-int8 b4"]
    for case in onnx:
        assert 0 < case["load_s"] < 60 and 0 < case["rss_after_load_mb"] <= case["peak_rss_mb"]
        compute = case["compute"]
        assert compute["gflops"] > 0 and compute["peak_kind"] == case["variant"]
        if report["cpu_peak"]["fp32_gflops"]:
            assert 0 < compute["fraction_of_peak"] < 1
