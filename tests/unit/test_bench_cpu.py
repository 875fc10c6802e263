"""The bench's package figures: size, load time, memory, and GFLOP/s against the host's CPU peak."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from export.package import ExportOptions, build_package
from stream.cli import cli
from stream.tools.bench import cpu, gpu
from tests.tiny_models import save_tiny_classifier

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


def test_graph_shape_matches_the_config(package: Path) -> None:
    shape = cpu.graph_shape(package / "model.onnx")
    assert shape == {"hidden": 32, "layers": 2, "ffn": 64, "labels": 2}
    config = json.loads((package.parent / "ckpt" / "config.json").read_text())
    assert shape == gpu.encoder_shape(config)


def test_footprint_and_demo_default(package: Path, tmp_path: Path) -> None:
    found = cpu.footprint(package)
    assert set(found["files_mb"]) == {"manifest.json", "model.onnx", "model.int8.onnx", "tokenizer.json"}
    assert found["total_mb"] == pytest.approx(sum(found["files_mb"].values()), abs=0.1)
    assert found["int8_scheme"] and found["vocabulary"] is None
    assert cpu.demo_subject(tmp_path) == (None, None)
    shutil.copytree(package, tmp_path / "packages" / cpu.DEMO_MODEL)
    assert cpu.demo_subject(tmp_path) == (None, tmp_path / "packages" / cpu.DEMO_MODEL)


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
