"""The runtime scorer: verified loading, variant choice, bucketing, predictions, no torch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from export.check_data import BUILTIN
from export.package import ExportOptions, build_package
from stream.core.errors import ModelError, PackageIntegrityError
from stream.core.host import usable_cpus
from stream.core.interfaces import Scorer
from stream.core.manifest import MANIFEST, VARIANT_FILES, Manifest, read_manifest, sha256_file
from stream.core.records import Prediction
from stream.core.scorer import OnnxScorer, choose_variant, plan_batches, run_plan
from tests.tiny_models import save_tiny_classifier

ROOT = Path(__file__).resolve().parents[2]
TEXTS = [text for text, _ in BUILTIN]


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runtime")
    ckpt = save_tiny_classifier(root / "ckpt", labels=("economy", "politics", "sports", "tech"))
    build_package(ExportOptions(ckpt, root / "pkg", int8=True, fp16=True, max_length=48, task="topic",
                                progress=False))
    return root / "pkg"


def topics(scorer: OnnxScorer, texts: list[str]) -> list[Prediction]:
    return [a.predictions["topic"] for a in scorer.analyze(texts)]


def copy_package(package: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(package, tmp_path / "pkg"))


def edit_manifest(package: Path, change: Callable[[dict[str, Any]], object]) -> None:
    data = json.loads((package / MANIFEST).read_text())
    change(data)
    (package / MANIFEST).write_text(json.dumps(data))


def test_scores_texts_as_the_scorer_protocol_says(package: Path) -> None:
    # "auto" runs int8 on CPU unless the export timed it slower than fp32 (a tiny model's timing
    # is noise, so either can happen here): the manifest decides, not this host now.
    parity = read_manifest(package).variants["int8"]["parity"]
    slower = parity["speed_b32"]["items_per_cpu_s"] < parity["fp32_speed_b32"]["items_per_cpu_s"]
    assert OnnxScorer.open(package, device="cpu").variant == ("fp32" if slower else "int8")
    scorer = OnnxScorer.open(package, device="cpu", variant="int8")
    assert isinstance(scorer, Scorer)
    assert (scorer.variant, scorer.provider) == ("int8", "CPUExecutionProvider")
    assert scorer.heads == {"topic": ("economy", "politics", "sports", "tech")} and scorer.max_length == 48
    long_text = " ".join(["market"] * 200)
    analyses = scorer.analyze([*TEXTS[:5], long_text, ""])
    assert len(analyses) == 7 and all(a.entities is None and set(a.predictions) == {"topic"} for a in analyses)
    predictions = [a.predictions["topic"] for a in analyses]
    assert [a.truncated for a in analyses] == [p.truncated for p in predictions]
    for p in predictions:
        assert set(p.probs) == set(scorer.heads["topic"])
        assert abs(sum(p.probs.values()) - 1) < 1e-5
        assert p.label == max(p.probs, key=p.probs.__getitem__) and p.score == p.probs[p.label]
    assert [p.truncated for p in predictions] == [False] * 5 + [True, False]
    assert scorer.analyze([]) == []
    with pytest.raises(ModelError, match="no embedding"):
        scorer.embed(["a format-1 package has no embedding output"])


def test_bucketing_gives_the_same_predictions(package: Path) -> None:
    texts = [TEXTS[i % len(TEXTS)] * (1 + i % 3) for i in range(150)]  # mixed lengths, some cut
    bucketed = topics(OnnxScorer.open(package, "cpu", "fp32", bucketing=True, batch_size=8), texts)
    plain = topics(OnnxScorer.open(package, "cpu", "fp32", bucketing=False, batch_size=8), texts)
    assert [p.label for p in bucketed] == [p.label for p in plain]
    assert [p.truncated for p in bucketed] == [p.truncated for p in plain]
    np.testing.assert_allclose([list(p.probs.values()) for p in bucketed],
                               [list(p.probs.values()) for p in plain], atol=1e-5)


def test_plan_batches_covers_every_text_once_within_limits() -> None:
    lengths = [5, 40, 7, 33, 6, 40, 12, 3, 39, 8]
    groups = plan_batches(lengths, batch_size=3, token_budget=100, bucketing=True)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert all(len(g) <= 3 and len(g) * max(lengths[i] for i in g) <= 100 for g in groups)
    assert [lengths[g[0]] for g in groups] == sorted(lengths[g[0]] for g in groups)  # short first
    assert plan_batches(lengths, 4, 10_000, bucketing=False) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert plan_batches([500], 4, 100, bucketing=True) == [[0]]  # an over-budget text still runs


def test_plan_batches_halves_the_largest_group_until_each_parallel_run_has_one() -> None:
    lengths = [5, 40, 7, 33, 6, 40, 12, 3, 39, 8]
    halves = plan_batches(lengths, 32, 10_000, bucketing=True, at_least=2)
    assert [len(g) for g in halves] == [5, 5]
    assert [lengths[i] for i in halves[0]] == [3, 5, 6, 7, 8]  # still short with short
    quarters = plan_batches(lengths, 4, 10_000, bucketing=False, at_least=5)
    assert sorted(i for g in quarters for i in g) == list(range(10)) and len(quarters) == 5
    assert plan_batches(lengths, 4, 10_000, bucketing=False, at_least=2) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert plan_batches([9, 9], 32, 10_000, bucketing=True, at_least=8) == [[0], [1]]  # no empty groups
    assert plan_batches([], 32, 10_000, bucketing=True, at_least=2) == []


def test_run_plan_gives_each_core_a_run_of_its_own_on_cpu_and_cuda_one_run() -> None:
    cores = usable_cpus()
    assert run_plan("cpu") == ((1, cores) if cores > 1 else (0, 1))
    assert run_plan("cpu", 0, 3) == (1, 3)  # runs asked for: one thread each
    assert run_plan("cpu", 2) == (2, max(1, cores // 2))  # threads asked for: the runs that fit
    assert run_plan("cpu", 0, 1) == (0, 1)  # one run: ONNX Runtime's own thread pool
    assert run_plan("cuda") == (0, 1)


def test_variant_choice_and_unchecked_variants(package: Path, tmp_path: Path) -> None:
    assert OnnxScorer.open(package, device="cpu", variant="fp32").variant == "fp32"
    pkg = copy_package(package, tmp_path)
    edit_manifest(pkg, lambda d: d["variants"]["fp16"]["parity"].update(
        status="unchecked", reason="unchecked on this host"))
    with pytest.raises(ModelError, match="not parity-checked"):
        OnnxScorer.open(pkg, device="cpu", variant="fp16")
    assert OnnxScorer.open(pkg, device="cpu", variant="fp16", allow_unchecked=True).variant == "fp16"
    edit_manifest(pkg, lambda d: d["variants"].pop("int8"))
    assert OnnxScorer.open(pkg, device="cpu").variant == "fp32"  # auto never picks unchecked
    with pytest.raises(ModelError, match="no int8 variant"):
        OnnxScorer.open(pkg, device="cpu", variant="int8")


def test_a_tampered_package_is_refused(package: Path, tmp_path: Path) -> None:
    pkg = copy_package(package, tmp_path)
    model = pkg / VARIANT_FILES["int8"]
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(PackageIntegrityError, match=r"model.int8.onnx \(mismatch\)"):
        OnnxScorer.open(pkg, device="cpu", variant="fp32")  # any change refuses the whole package
    model.unlink()
    with pytest.raises(PackageIntegrityError, match="missing"):
        OnnxScorer.open(pkg, device="cpu")


def test_bad_manifests_are_clear_errors(package: Path, tmp_path: Path) -> None:
    pkg = copy_package(package, tmp_path)
    edit_manifest(pkg, lambda d: d.pop("labels"))
    with pytest.raises(PackageIntegrityError, match="lacks labels"):
        OnnxScorer.open(pkg)
    (pkg / MANIFEST).write_text("{not json")
    with pytest.raises(PackageIntegrityError, match="not valid JSON"):
        OnnxScorer.open(pkg)
    with pytest.raises(PackageIntegrityError, match=r"no manifest\.json"):
        OnnxScorer.open(tmp_path)
    with pytest.raises(PackageIntegrityError, match="not a model package"):
        OnnxScorer.open(tmp_path / "missing")


def test_an_opset_the_runtime_cannot_load_is_a_model_error(package: Path, tmp_path: Path) -> None:
    import onnx

    pkg = copy_package(package, tmp_path)
    model_path = pkg / VARIANT_FILES["fp32"]
    model = onnx.load(str(model_path))
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = 99
    onnx.save(model, str(model_path))
    edit_manifest(pkg, lambda d: d["files"].update({"model.onnx": sha256_file(model_path)}))
    with pytest.raises(ModelError, match="cannot load"):
        OnnxScorer.open(pkg, device="cpu", variant="fp32")


def test_the_runtime_imports_neither_torch_nor_transformers(package: Path) -> None:
    code = textwrap.dedent(f"""
        import sys
        from stream.core.scorer import OnnxScorer
        scorer = OnnxScorer.open({str(package)!r}, device="auto")
        assert len(scorer.analyze(["hello world", "你好，世界"])) == 2
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers"))
        assert not heavy, heavy
        print("clean", scorer.variant)
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("clean")


def _manifest_with_speeds(int8_cpu_s: float | None, fp32_cpu_s: float | None,
                          quantization: dict[str, object] | None = None) -> Manifest:
    parity: dict[str, object] = {"status": "passed"}
    if int8_cpu_s is not None:
        parity["speed_b32"] = {"items_per_cpu_s": int8_cpu_s}
    if fp32_cpu_s is not None:
        parity["fp32_speed_b32"] = {"items_per_cpu_s": fp32_cpu_s}
    int8 = {"parity": parity, "quantization": {"weight_bits": 7} if quantization is None else quantization}
    data = {"version": "m-1", "variants": {"fp32": {"parity": {"status": "passed"}}, "int8": int8}}
    return Manifest(Path("."), data)


@pytest.mark.parametrize(
    ("int8_cpu_s", "fp32_cpu_s", "expected"),
    [(60.0, 40.0, "int8"), (38.7, 41.3, "fp32"), (None, 41.3, "int8"), (60.0, None, "int8")],
)
def test_auto_runs_int8_on_cpu_unless_the_export_measured_it_slower(
    int8_cpu_s: float | None, fp32_cpu_s: float | None, expected: str
) -> None:
    manifest = _manifest_with_speeds(int8_cpu_s, fp32_cpu_s)
    assert choose_variant(manifest, "cpu", "auto", allow_unchecked=False) == expected
    assert choose_variant(manifest, "cpu", "int8", allow_unchecked=False) == "int8"  # asked for: no override


@pytest.mark.parametrize("quantization", [{}, {"weight_type": "QInt8", "weight_bits": 8}])
def test_auto_passes_over_an_int8_of_8_bit_weights_on_cpu(quantization: dict[str, object]) -> None:
    # A package exported before weights went to 7 bits held parity where it was exported only.
    manifest = _manifest_with_speeds(60.0, 40.0, quantization)
    assert manifest.int8_weight_bits == 8
    assert choose_variant(manifest, "cpu", "auto", allow_unchecked=False) == "fp32"
    assert choose_variant(manifest, "cpu", "int8", allow_unchecked=False) == "int8"
