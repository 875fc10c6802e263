"""`yuqing export`: the parity gate, the package layout, content versions, all-or-nothing writes."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from export import onnx_export, parity, quantize
from export.checkpoint import Checkpoint
from export.package import ExportOptions, build_package
from stream.cli import main
from stream.core.errors import DataError, ModelError, ParityError
from stream.core.manifest import MANIFEST, VARIANT_FILES, read_manifest, sha256_file, verify_files
from tests.tiny_models import save_tiny_classifier

REPORT = {"task": "sentiment", "name": "tiny-sent", "base_model": "tiny-bert", "max_length": 64,
          "data": "builtin:tiny", "test_metrics": {"accuracy": 0.5, "macro_f1": 0.4}}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module")
def ckpt(root: Path) -> Path:
    return save_tiny_classifier(root / "ckpt", report=REPORT)


@pytest.fixture(scope="module")
def package(root: Path, ckpt: Path) -> Path:
    build_package(ExportOptions(ckpt, root / "pkgs" / "tiny", int8=True, fp16=True, progress=False))
    return root / "pkgs" / "tiny"


def leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(".")]


def run_cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return int(exit_info.value.code or 0)


def _op_types(path: Path) -> set[str]:
    import onnx

    return {node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node}


def test_the_faster_fp32_graph_ships_and_fp16_keeps_the_fused_kernels(package: Path) -> None:
    graph = read_manifest(package).data["export"]["graph"]
    speed = {name: graph["speed_b32"][name]["items_per_cpu_s"] for name in ("plain", "fused")}
    assert all(v > 0 for v in speed.values())
    expected = "fused" if speed["fused"] >= speed["plain"] else "plain"
    assert graph["fp32_graph"] == expected
    # what the manifest says is what the file holds
    assert ("Attention" in _op_types(package / VARIANT_FILES["fp32"])) == (expected == "fused")
    assert "Attention" in _op_types(package / VARIANT_FILES["fp16"])
    assert not (package / "fused.onnx").exists() and not (package / "plain.onnx").exists()


def test_the_version_does_not_depend_on_which_graph_timed_faster(root: Path, ckpt: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    versions = {}
    for winner in ("plain", "fused"):
        def timed(model: Path, *_args: Any, winner: str = winner, **_kwargs: Any) -> dict[str, float]:
            fast = (winner == "fused") == ("Attention" in _op_types(model))
            return {"items_per_s": 2.0 if fast else 1.0, "items_per_cpu_s": 2.0 if fast else 1.0}

        monkeypatch.setattr(quantize, "items_per_cpu_second", timed)
        out = root / f"won-by-{winner}"
        manifest = build_package(ExportOptions(ckpt, out, progress=False))
        assert manifest.data["export"]["graph"]["fp32_graph"] == winner
        versions[winner] = manifest.version
    assert versions["plain"] == versions["fused"]
    assert sha256_file(root / "won-by-plain" / "model.onnx") != sha256_file(root / "won-by-fused" / "model.onnx")


@pytest.mark.parametrize("wanted", ["plain", "fused"])
def test_the_fp32_graph_asked_for_ships_untimed(root: Path, ckpt: Path, monkeypatch: pytest.MonkeyPatch,
                                                wanted: str) -> None:
    def untimed(*_args: Any, **_kwargs: Any) -> dict[str, float]:
        raise AssertionError("timed although the graph was asked for")

    monkeypatch.setattr(quantize, "items_per_cpu_second", untimed)
    out = root / f"asked-{wanted}"
    assert run_cli(["export", "--model", str(ckpt), "--out", str(out), "--fp32-graph", wanted]) == 0
    graph = read_manifest(out).data["export"]["graph"]
    assert graph["fp32_graph"] == wanted and graph["chosen"] == "asked for" and "speed_b32" not in graph
    assert ("Attention" in _op_types(out / VARIANT_FILES["fp32"])) == (wanted == "fused")


def test_export_passes_the_gate_and_writes_a_complete_package(package: Path) -> None:
    manifest = read_manifest(package)
    data = manifest.data
    assert manifest.name == "tiny-sent" and manifest.task == "sentiment"
    assert re.fullmatch(r"tiny-sent-[0-9a-f]{12}", manifest.version)
    assert manifest.labels == ["negative", "neutral", "positive"]
    assert manifest.max_length == 64  # from training_report.json
    assert manifest.inputs == ["input_ids", "attention_mask", "token_type_ids"]
    assert data["training"]["test_metrics"] == REPORT["test_metrics"]
    assert data["base_model"] == "tiny-bert" and data["opset"] == 17
    assert data["export"]["graph"]["optimized"] is True
    assert data["export"]["graph"]["fused_ops"]["Attention"] == 2
    assert data["export"]["check_data"] == {"source": "builtin", "n": 64, "labelled": True}
    assert set(manifest.variants) == {"fp32", "int8", "fp16"}
    fp32 = manifest.variants["fp32"]["parity"]
    assert fp32["status"] == "passed" and fp32["max_abs_diff"] <= parity.FP32_ATOL
    for variant in ("int8", "fp16"):
        result = manifest.variants[variant]["parity"]
        assert result["status"] == "passed", result
        assert result["label_agreement"] >= parity.MIN_AGREEMENT
        assert result["accuracy"] >= fp32["accuracy"] - parity.MAX_ACCURACY_DROP
    int8 = manifest.variants["int8"]
    assert int8["quantization"]["per_channel"] and int8["quantization"]["family"] in quantize.FAMILIES
    attempts = int8["parity"]["attempts"]
    # every family is tried; the shipped scheme is the fastest of those that passed, and says so
    assert {a["scheme"].split("+")[0] for a in attempts} == set(quantize.FAMILIES)
    passed = [a for a in attempts if a["status"] == "passed"]
    fastest = max(passed, key=lambda a: a["speed_b32"]["items_per_cpu_s"])
    assert int8["quantization"]["scheme"] == fastest["scheme"]
    assert int8["parity"]["speed_b32"] == fastest["speed_b32"]
    assert {s["family"] for s in data["export"]["int8_search"]} == set(quantize.FAMILIES)
    # int8 is judged on its worst batching
    plans = int8["parity"]["by_batch_plan"]
    assert set(plans) == set(parity.BATCH_PLANS)
    assert int8["parity"]["label_agreement"] == min(p["label_agreement"] for p in plans.values())
    # every file but the manifest is hashed, and the hashes hold
    assert sorted(data["files"]) == sorted([*VARIANT_FILES.values(), "tokenizer.json"])
    assert all(sha256_file(package / f) == h for f, h in data["files"].items())
    verify_files(manifest)
    assert leftovers(package.parent) == []


def test_same_weights_same_version_other_weights_another(root: Path, ckpt: Path, package: Path) -> None:
    again = build_package(ExportOptions(ckpt, root / "again", progress=False))  # fp32 only
    assert again.version == read_manifest(package).version
    other_ckpt = save_tiny_classifier(root / "other-ckpt", seed=7, report=REPORT)
    other = build_package(ExportOptions(other_ckpt, root / "other", progress=False))
    assert other.version != again.version and other.version.startswith("tiny-sent-")


def _perturb_largest_initializer(path: Path) -> None:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    init = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    weights = numpy_helper.to_array(init).copy()
    weights += np.random.default_rng(0).normal(0, 0.5, weights.shape).astype(weights.dtype)
    init.CopyFrom(numpy_helper.from_array(weights, init.name))
    onnx.save(model, str(path))


def test_a_perturbed_graph_fails_the_gate_and_leaves_nothing(
    root: Path, ckpt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_export = onnx_export.export_fp32

    def export_then_perturb(checkpoint: Checkpoint, out: Path, opset: int = 17) -> None:
        real_export(checkpoint, out, opset)
        _perturb_largest_initializer(out)

    monkeypatch.setattr(onnx_export, "export_fp32", export_then_perturb)
    parent = root / "bad"
    with pytest.raises(ParityError, match="fp32 ONNX variant failed the parity gate") as info:
        build_package(ExportOptions(ckpt, parent / "pkg", int8=True, progress=False))
    assert info.value.exit_code == 7
    assert "max abs logit difference" in str(info.value)
    assert not (parent / "pkg").exists() and leftovers(parent) == []
    # through the CLI: exit code 7 and still nothing written
    assert run_cli(["export", "--model", str(ckpt), "--out", str(parent / "cli")]) == 7
    assert not (parent / "cli").exists() and leftovers(parent) == []


def test_reduced_precision_gate_rules() -> None:
    ok = {"label_agreement": 0.995, "accuracy": 0.80, "max_abs_diff": 0.3}
    assert parity.judge("int8", ok, fp32_accuracy=0.805) == []
    assert parity.judge("int8", ok | {"label_agreement": 0.98}, 0.80)[0].startswith("label agreement")
    assert "accuracy" in parity.judge("fp16", ok | {"accuracy": 0.78}, 0.80)[0]
    assert parity.judge("fp32", ok, 0.80)[0].startswith("max abs logit difference")


def test_export_replaces_a_package_but_not_other_directories(root: Path, ckpt: Path) -> None:
    target = root / "replace" / "pkg"
    build_package(ExportOptions(ckpt, target, progress=False))
    (target / "stale.txt").write_text("old")
    build_package(ExportOptions(ckpt, target, int8=True, progress=False))
    assert not (target / "stale.txt").exists() and (target / "model.int8.onnx").is_file()
    assert leftovers(target.parent) == []
    foreign = root / "replace" / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ModelError, match="not a model package"):
        build_package(ExportOptions(ckpt, foreign, progress=False))
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_missing_or_corrupt_checkpoints_are_clear_errors(root: Path, ckpt: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        build_package(ExportOptions(root / "nowhere", root / "out1", progress=False))
    broken = root / "broken"
    shutil.copytree(ckpt, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelError, match="cannot load the weights"):
        build_package(ExportOptions(broken, root / "out2", progress=False))
    assert not (root / "out2").exists()
    no_config = root / "no-config"
    no_config.mkdir()
    assert run_cli(["export", "--model", str(no_config), "--out", str(root / "out3")]) == 6
    assert not (root / "out3").exists()


def test_check_data_from_a_text_only_file_and_a_dataset_spec(root: Path, ckpt: Path) -> None:
    texts = root / "texts.jsonl"
    texts.write_text("\n".join(json.dumps({"text": t}) for t in ["good news", "bad news", "今天很好"]))
    manifest = build_package(ExportOptions(ckpt, root / "by-file", check_data=str(texts), progress=False))
    assert manifest.data["export"]["check_data"] == {"source": "file:texts.jsonl", "n": 3, "labelled": False}
    assert manifest.variants["fp32"]["parity"]["accuracy"] is None
    labelled = root / "labelled.csv"
    rows = [f"text {i} news,{'positive' if i % 2 else 'negative'}" for i in range(200)]
    labelled.write_text("text,label\n" + "\n".join(rows) + "\n")
    manifest = build_package(ExportOptions(ckpt, root / "by-spec", check_data=str(labelled), progress=False))
    check = manifest.data["export"]["check_data"]
    assert check["source"].endswith("(test split)") and 0 < check["n"] < 200 and check["labelled"]
    with pytest.raises(DataError):
        build_package(ExportOptions(ckpt, root / "by-none", check_data="builtin:nope", progress=False))


def test_cli_export_list_and_verify(root: Path, ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = root / "cli-pkgs" / "tiny"
    args = ["export", "--model", str(ckpt), "--out", str(out), "--int8", "--int8-scheme", "static_minmax"]
    assert run_cli([*args, "--max-length", "32"]) == 0
    printed = capsys.readouterr().out
    assert "int8" in printed and "passed" in printed and "scheme static_minmax" in printed
    assert "int8 schemes" in printed and "items/cpu-s" in printed
    assert read_manifest(out).max_length == 32
    assert run_cli(["models", "list", str(out.parent)]) == 0
    listing = capsys.readouterr().out
    assert read_manifest(out).version in listing and "fp32 int8" in listing and "accuracy=0.500" in listing
    assert run_cli(["models", "verify", str(out), "--load"]) == 0
    assert "ok" in capsys.readouterr().out
    with (out / VARIANT_FILES["int8"]).open("ab") as fh:
        fh.write(b"\0")
    assert run_cli(["models", "verify", str(out)]) == 6
    assert "mismatch  model.int8.onnx" in capsys.readouterr().out
    (out / MANIFEST).write_text(json.dumps({"name": "x"}))
    assert run_cli(["models", "verify", str(out)]) == 6


def test_an_fp16_variant_this_host_cannot_run_is_recorded_unchecked(
    root: Path, ckpt: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from stream.core.scorer import OnnxScorer

    real_session = parity.create_session

    def no_fp16_kernels(model: Path, device: str, intra_op_threads: int = 0) -> tuple[Any, str]:
        if model.name == VARIANT_FILES["fp16"]:
            raise ModelError("onnxruntime cannot load model.fp16.onnx: no fp16 kernel for Attention")
        return real_session(model, device, intra_op_threads)

    monkeypatch.setattr(parity, "create_session", no_fp16_kernels)
    out = root / "unchecked" / "pkg"
    manifest = build_package(ExportOptions(ckpt, out, fp16=True, progress=False))
    result = manifest.variants["fp16"]["parity"]
    assert result["status"] == "unchecked" and result["reason"].startswith("unchecked on this host")
    monkeypatch.undo()
    with pytest.raises(ModelError, match="not parity-checked"):
        OnnxScorer.open(out, device="cpu", variant="fp16")
    assert OnnxScorer.open(out, device="cpu", variant="fp16", allow_unchecked=True).variant == "fp16"
    assert run_cli(["models", "list", str(out.parent)]) == 0
    assert "fp16(unchecked)" in capsys.readouterr().out
