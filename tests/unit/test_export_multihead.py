"""Export of a multi-head checkpoint: every output in the graph, the gate per head, format 2."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from export import onnx_export, parity, quantize
from export.check_data import load_head_check_sets
from export.checkpoint import Checkpoint, load_checkpoint
from export.package import ExportOptions, build_package, ref_tokenizer
from models.datasets import NEWS_SENTIMENT_LABELS, THUCNEWS_LABELS
from models.multihead import ENTITY_LABELS
from stream.core.errors import DataError, ParityError
from stream.core.manifest import VARIANT_FILES, read_manifest
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


AUTO_DATA = {"sentiment": "builtin:news-sentiment", "category": "builtin:news-sections"}


def test_auto_check_data_labels_each_heads_own_texts_for_that_head_only() -> None:
    checks = load_head_check_sets(AUTO_DATA, "test", 12)
    sentiment, category = checks.head_gold["sentiment"], checks.head_gold["category"]
    n = sum(g is not None for g in sentiment)
    assert n == 12 and sum(g is not None for g in category) == 12 and len(checks.texts) == 24
    assert all(g is None for g in sentiment[n:]) and all(g is None for g in category[:n])  # one head after another
    assert "builtin:news-sentiment (test split)" in checks.source and "builtin:news-sections" in checks.source
    indices = checks.gold_indices(list(NEWS_SENTIMENT_LABELS), "sentiment")
    assert indices is not None and indices[:n] == [NEWS_SENTIMENT_LABELS.index(str(g)) for g in sentiment[:n]]
    assert checks.gold_indices(list(NEWS_SENTIMENT_LABELS), "category") is None  # not the category head's labels
    assert checks.gold_indices(list(THUCNEWS_LABELS), "risk") is None  # a head without texts of its own


def test_a_heads_accuracy_counts_only_the_texts_labelled_for_it(ckpt: Path) -> None:
    loaded = load_checkpoint(ckpt)
    checks = load_head_check_sets(AUTO_DATA, "test", 10)
    ref = parity.reference(loaded, encode(ref_tokenizer(loaded), checks.texts), checks)
    assert set(ref.gold) == {"sentiment", "category"}
    result = parity.compare(ref, ref.outputs)["heads"]
    for head, labels in (("sentiment", NEWS_SENTIMENT_LABELS), ("category", THUCNEWS_LABELS)):
        predicted = ref.outputs[f"{head}_logits"].argmax(-1)
        own = [(int(p), labels.index(str(g))) for p, g in zip(predicted, checks.head_gold[head], strict=True)
               if g is not None]
        assert len(own) == 10 and result[head]["n"] == 20  # agreement over all texts, accuracy over its own
        assert result[head]["accuracy"] == pytest.approx(sum(p == g for p, g in own) / 10)
    assert result["risk"]["accuracy"] is None


def test_export_with_auto_check_data_gates_every_head_on_its_training_data(root: Path, ckpt: Path) -> None:
    trained = root / "ckpt-auto"
    shutil.copytree(ckpt, trained)
    (trained / "training_report.json").write_text(json.dumps({"data": AUTO_DATA}), encoding="utf-8")
    data = build_package(ExportOptions(trained, root / "pkg-auto", check_data="auto", check_limit=10,
                                       progress=False)).data
    check = data["export"]["check_data"]
    assert check["labelled"] == ["sentiment", "category"] and check["n"] == 20
    heads = data["variants"]["fp32"]["parity"]["heads"]
    assert heads["sentiment"]["accuracy"] is not None and heads["category"]["accuracy"] is not None
    assert heads["risk"]["accuracy"] is None


def test_auto_check_data_without_training_data_is_a_data_error(root: Path, ckpt: Path) -> None:
    with pytest.raises(DataError, match="the training report names no dataset"):
        build_package(ExportOptions(ckpt, root / "pkg-no-data", check_data="auto", progress=False))
    assert not (root / "pkg-no-data").exists()


def test_a_sample_of_the_reference_lines_up_with_a_run_on_its_own_texts(ckpt: Path, package: Path) -> None:
    loaded = load_checkpoint(ckpt)
    texts = [text for text, _ in ENTITY_TEXTS] * 2
    texts.insert(1, " ".join(texts))  # the longest text, at a row the sample skips
    ref = parity.reference(loaded, encode(ref_tokenizer(loaded), texts), None)
    sample = ref.sample(5)
    assert ref.sample(len(texts)) is ref and len(sample.encoded.ids) == 5
    assert sample.encoded.ids[0] == ref.encoded.ids[0] and sample.encoded.ids[-1] == ref.encoded.ids[-1]
    width = ref.outputs["entities_logits"].shape[1]
    assert sample.outputs["entities_logits"].shape[1] == max(sample.encoded.lengths()) < width
    result = quantize.evaluate(package / VARIANT_FILES["fp32"], sample, loaded.pad_token_id)["heads"]
    assert result["entities"]["tokens"] == sum(sample.encoded.lengths())
    assert max(result[head]["max_abs_diff"] for head in ("entities", "sentiment")) <= parity.FP32_ATOL
    checks = load_head_check_sets(AUTO_DATA, "test", 10)
    labelled = parity.reference(loaded, encode(ref_tokenizer(loaded), checks.texts), checks).sample(6).gold
    assert all(sum(g is not None for g in labelled[head]) == 3 for head in AUTO_DATA)  # each head keeps its share
