"""Export of a multi-head checkpoint: every output in the graph, the gate per head, format 2."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from export import onnx_export, parity, quantize
from export.checkpoint import Checkpoint, load_checkpoint
from export.package import ExportOptions, build_package, ref_tokenizer
from models.multihead import ENTITY_LABELS
from stream.core.errors import ParityError
from stream.core.manifest import read_manifest
from stream.core.scorer import OnnxScorer, encode
from tests.tiny_models import ENTITY_TEXTS, TINY_TEMPERATURES, build_tiny_multihead, save_tiny_multihead

HEADS = ("sentiment", "category", "risk", "entities", "embedding")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("export-heads")


@pytest.fixture(scope="module")
def ckpt(root: Path) -> Path:
    return save_tiny_multihead(root / "ckpt-multihead")


@pytest.fixture(scope="module")
def package(root: Path, ckpt: Path) -> Path:
    # the fixture's checkpoint is the one build_tiny_multihead exports from the same root
    return build_tiny_multihead(root, int8=True, int8_scheme="dynamic")


def test_the_checkpoint_loads_with_every_head(ckpt: Path) -> None:
    loaded = load_checkpoint(ckpt)
    assert loaded.heads is not None and loaded.labels == [] and loaded.task() == "analysis"
    heads = loaded.output_heads()
    assert tuple(heads) == HEADS
    assert heads["entities"] == {"kind": "token", "labels": list(ENTITY_LABELS), "output": "entities_logits"}
    assert heads["sentiment"]["temperature"] == TINY_TEMPERATURES["sentiment"] and "temperature" not in heads["risk"]
    assert heads["embedding"] == {"kind": "embedding", "output": "embedding", "dim": 32}


def test_export_writes_format_2_with_every_head_gated(package: Path) -> None:
    manifest = read_manifest(package)
    data = manifest.data
    assert data["format"] == 2 and manifest.task == "analysis" and "labels" not in data
    assert re.fullmatch(r"tiny-news-[0-9a-f]{12}", manifest.version)
    assert tuple(manifest.heads) == HEADS
    assert manifest.heads["sentiment"]["ece"] == {"ece_before": 0.2, "ece_after": 0.05}
    assert data["export"]["check_data"]["labelled"] == ["sentiment"]  # built-in texts: sentiment gold only
    fp32 = manifest.variants["fp32"]["parity"]
    assert fp32["status"] == "passed" and tuple(fp32["heads"]) == HEADS
    for head in ("sentiment", "category", "risk"):
        assert fp32["heads"][head]["max_abs_diff"] <= parity.FP32_ATOL
    assert fp32["heads"]["entities"]["token_agreement"] == 1.0 and fp32["heads"]["entities"]["tokens"] > 64
    assert fp32["heads"]["entities"]["span_agreement"] == 1.0 and fp32["heads"]["entities"]["entity_spans"] > 0
    assert fp32["heads"]["embedding"]["min_cosine"] >= parity.FP32_MIN_COSINE
    assert fp32["heads"]["sentiment"]["accuracy"] is not None and fp32["heads"]["risk"]["accuracy"] is None
    assert data["export"]["graph"]["optimized"]  # the BERT fusions apply to the shared encoder


def test_int8_is_judged_on_every_head(package: Path) -> None:
    int8 = read_manifest(package).variants["int8"]["parity"]
    assert int8["status"] == "passed" and set(int8["by_batch_plan"]) == set(parity.BATCH_PLANS)
    for plan in int8["by_batch_plan"].values():
        assert tuple(plan["heads"]) == HEADS
        assert plan["heads"]["entities"]["token_agreement"] >= parity.MIN_AGREEMENT
        assert plan["heads"]["embedding"]["min_cosine"] >= parity.MIN_COSINE
        assert all(plan["heads"][h]["label_agreement"] >= parity.MIN_AGREEMENT for h in ("sentiment", "category"))
    worst = min(min(r.get("label_agreement", r.get("token_agreement", 1.0)) for r in plan["heads"].values())
                for plan in int8["by_batch_plan"].values())
    assert int8["label_agreement"] == worst
    attempts = int8["attempts"]
    assert attempts and attempts[-1]["status"] == "passed" and isinstance(attempts[-1]["accuracy"], dict)


def test_every_head_of_the_int8_variant_runs(package: Path) -> None:
    texts = [text for text, _ in ENTITY_TEXTS]
    fp32 = OnnxScorer.open(package, device="cpu", variant="fp32")
    int8 = OnnxScorer.open(package, device="cpu", variant="int8")
    assert int8.variant == "int8"
    a, b = fp32.embed(texts), int8.embed(texts)
    assert float((a * b).sum(-1).min()) >= parity.MIN_COSINE
    assert [x.predictions["category"].label for x in fp32.analyze(texts)] == \
        [x.predictions["category"].label for x in int8.analyze(texts)]


def _perturb(path: Path, rows: int) -> None:
    """Scale the graph's weight with `rows` label rows (one head's), as if it changed after export."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    [target] = [t for t in model.graph.initializer if t.dims and rows in t.dims and len(t.dims) == 2]
    array = numpy_helper.to_array(target).copy()
    target.CopyFrom(numpy_helper.from_array(array * 1.5 + 0.1, target.name))
    onnx.save(model, str(path))


@pytest.mark.parametrize(("head", "rows", "reason"), [
    ("entities", len(ENTITY_LABELS), "entities: max abs token logit difference"),
    ("risk", 8, "risk: max abs logit difference"),
])
def test_a_head_changed_after_export_fails_the_gate(root: Path, ckpt: Path, monkeypatch: pytest.MonkeyPatch,
                                                    head: str, rows: int, reason: str) -> None:
    real_export = onnx_export.export_fp32

    def export_then_perturb(checkpoint: Checkpoint, out: Path, opset: int = 17) -> None:
        real_export(checkpoint, out, opset)
        _perturb(out, rows)

    monkeypatch.setattr(onnx_export, "export_fp32", export_then_perturb)
    parent = root / f"bad-{head}"
    with pytest.raises(ParityError, match="fp32 ONNX variant failed the parity gate") as info:
        build_package(ExportOptions(ckpt, parent / "pkg", progress=False))
    assert reason in str(info.value)
    others = [h for h in ("sentiment", "category", "risk", "entities") if h != head]
    assert not any(f"{h}:" in str(info.value) for h in others)  # only the changed head is blamed
    assert not (parent / "pkg").exists()


def _multi_result(entities: float = 1.0, cosine: float = 1.0, sentiment: float = 1.0,
                  accuracy: float = 0.8) -> dict[str, object]:
    return {"label_agreement": min(entities, sentiment), "heads": {
        "sentiment": {"label_agreement": sentiment, "accuracy": accuracy, "max_abs_diff": 0.2},
        "entities": {"token_agreement": entities, "max_abs_diff": 0.2, "span_agreement": 0.9},
        "embedding": {"min_cosine": cosine, "max_abs_diff": 0.01}}}


def test_the_gate_and_the_int8_search_fail_a_scheme_on_its_worst_head() -> None:
    baseline = {"sentiment": 0.8, "entities": None, "embedding": None}
    assert parity.judge("int8", _multi_result(), baseline) == []
    assert quantize.holds(_multi_result(), baseline)
    assert parity.judge("int8", _multi_result(entities=0.985), baseline) == [
        "entities: token label agreement 98.50% < 99%"]
    assert not quantize.holds(_multi_result(entities=0.985), baseline)  # the others pass: still refused
    assert parity.judge("fp16", _multi_result(cosine=0.97), baseline)[0].startswith("embedding: min cosine")
    assert parity.judge("int8", _multi_result(accuracy=0.7), baseline)[0].startswith("sentiment: accuracy")
    assert parity.judge("fp32", _multi_result(cosine=0.9995), baseline) == [
        "sentiment: max abs logit difference 2.00e-01 > 0.001",
        "entities: max abs token logit difference 2.00e-01 > 0.001",
        "embedding: min cosine to torch 0.99950 < 0.9999"]


def test_compare_measures_token_labels_over_real_tokens_and_spans(ckpt: Path) -> None:
    loaded = load_checkpoint(ckpt)
    texts = [text for text, _ in ENTITY_TEXTS]
    ref = parity.reference(loaded, encode(ref_tokenizer(loaded), texts), None)
    same = parity.compare(ref, ref.outputs)
    assert same["heads"]["entities"]["token_agreement"] == 1.0 and same["heads"]["entities"]["span_agreement"] == 1.0
    changed = {k: v.copy() for k, v in ref.outputs.items()}
    tokens = changed["entities_logits"]
    lengths = ref.encoded.lengths()
    tokens[:, :, :] = 0
    tokens[:, :, 0] = 1  # every token O: no spans left
    for i, n in enumerate(lengths):
        tokens[i, n:, :] = ref.outputs["entities_logits"][i, n:, :] + 5  # padding is never counted
    result = parity.compare(ref, changed)["heads"]["entities"]
    assert result["tokens"] == sum(lengths) and result["span_agreement"] == 0.0
    o_share = float(np.mean([k == 0 for i, n in enumerate(lengths)
                             for k in ref.outputs["entities_logits"][i, :n].argmax(-1)]))
    assert result["token_agreement"] == pytest.approx(o_share)
    assert parity.judge("int8", parity.compare(ref, changed), None)[0].startswith("entities: token label agreement")
