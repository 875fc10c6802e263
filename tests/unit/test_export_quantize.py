"""int8 schemes: node groups, calibration batches, static QDQ builds and the sensitivity search."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from export import onnx_export, parity, quantize
from export.check_data import BUILTIN
from export.checkpoint import Checkpoint, load_checkpoint
from export.package import ref_tokenizer
from stream.core.errors import ModelError
from stream.core.scorer import Encoded, create_session, encode, run_outputs
from tests.tiny_models import save_tiny_classifier

TEXTS = [text for text, _ in BUILTIN]


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Checkpoint, Path, Path, Path]:
    """A tiny fitted classifier, its plain and fused fp32 graphs, and a work directory."""
    root = tmp_path_factory.mktemp("quantize")
    ckpt = load_checkpoint(save_tiny_classifier(root / "ckpt", report={"max_length": 64}))
    plain, fused = root / "plain.onnx", root / "fused.onnx"
    onnx_export.export_fp32(ckpt, plain)
    onnx_export.optimize_graph(plain, fused, ckpt)
    (root / "work").mkdir()
    return ckpt, plain, fused, root / "work"


def reference(ckpt: Checkpoint, texts: list[str]) -> parity.Reference:
    return parity.reference(ckpt, encode(ref_tokenizer(ckpt), texts), None)


def builder(ckpt: Checkpoint, plain: Path, fused: Path, work: Path) -> quantize.Builder:
    calibration = encode(ref_tokenizer(ckpt), TEXTS[::2])
    return quantize.Builder(fused, plain, work, lambda: quantize.EncodedReader(
        calibration, ckpt.input_names, ckpt.pad_token_id, batch_size=8))


def test_node_groups_by_kind_and_layer(graphs: tuple[Checkpoint, Path, Path, Path]) -> None:
    _, plain, fused, _ = graphs
    static = quantize.node_groups(plain, quantize.STATIC_OPS)
    kinds = {g: n for g, n in static.items() if g.startswith("kind:")}
    layers = {g: n for g, n in static.items() if g.startswith("layer:")}
    assert set(layers) == {"layer:0", "layer:1"}  # two layers
    assert all(len(nodes) == 2 for nodes in kinds.values())  # each kind once per layer
    assert len(kinds) == 8  # q, k, v, QKᵀ, attention·V, attention output, FFN in, FFN out
    assert sorted(layers["layer:0"] + layers["layer:1"]) == sorted(n for ns in kinds.values() for n in ns)
    assert all("layer.0" in n for n in layers["layer:0"])
    dynamic = quantize.node_groups(fused, quantize.DYNAMIC_OPS)
    assert any(g.startswith("kind:Attention:") for g in dynamic)
    assert "kind:EmbedLayerNormalization:EmbedLayerNormalization_*" in dynamic  # one node: a kind, no layer


def test_calibration_batches_have_one_shape_whatever_the_lengths() -> None:
    ids = [[0] + [5] * n + [2] for n in (0, 3, 40, 1, 7, 19, 2, 11, 60)]
    encoded = Encoded(ids, [[0] * len(r) for r in ids], [False] * len(ids))
    reader = quantize.EncodedReader(encoded, ["input_ids", "attention_mask"], pad_id=1, batch_size=4)
    batches = list(iter(reader.get_next, None))
    assert len(reader) == len(batches) == 2  # the short ninth text's batch is dropped
    assert {b["input_ids"].shape for b in batches} == {(4, 62)}
    first = batches[0]
    assert (first["attention_mask"].sum(axis=1) == [2, 5, 42, 3]).all()
    assert (first["input_ids"][0, 2:] == 1).all() and (first["attention_mask"][0, 2:] == 0).all()
    reader.set_range(1, 2)
    assert reader.get_next() is batches[1] and reader.get_next() is None
    alone = quantize.EncodedReader(Encoded([[0, 2]], [[0, 0]], [False]), ["input_ids"], pad_id=1, batch_size=4)
    assert len(alone) == 1  # a single short batch is kept


@pytest.mark.parametrize("calibration", quantize.CALIBRATIONS)
def test_static_int8_is_qdq_and_independent_of_batch_mates(graphs: tuple[Checkpoint, Path, Path, Path],
                                                           calibration: str) -> None:
    import onnx

    ckpt, plain, fused, work = graphs
    out = work / f"static-{calibration}.onnx"
    settings = builder(ckpt, plain, fused, work).build(quantize.Scheme(f"static_{calibration}"), out)
    assert settings["method"] == "quantize_static" and settings["calibration"] == calibration
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and "DynamicQuantizeLinear" not in ops
    assert (work / f"ranges-{calibration}.json").is_file()  # later builds reuse the ranges
    ref = reference(ckpt, TEXTS)
    session, _ = create_session(out, "cpu")
    together = run_outputs(session, ref.encoded, ckpt.pad_token_id, bucketing=False, batch_size=32)
    alone = run_outputs(session, ref.encoded, ckpt.pad_token_id, batch_size=1)
    np.testing.assert_allclose(together["logits"], alone["logits"], atol=2e-4)  # fixed scales: no batch-mate effect
    assert parity.compare(ref, together)["label_agreement"] >= 0.95


@pytest.mark.parametrize("family", quantize.FAMILIES)
def test_every_family_stores_7_bit_weights(graphs: tuple[Checkpoint, Path, Path, Path], family: str) -> None:
    # x86 without VNNI adds uint8 x int8 byte pairs into a saturating int16: 2 x 255 x 127 overflows,
    # 2 x 255 x 64 (ONNX Runtime's reduce_range bound) does not.
    import onnx
    from onnx import numpy_helper

    ckpt, plain, fused, work = graphs
    out = work / f"bits-{family}.onnx"
    settings = builder(ckpt, plain, fused, work).build(quantize.Scheme(family), out)
    assert settings["weight_bits"] == 7
    weights = [numpy_helper.to_array(t).astype(int) for t in onnx.load(str(out)).graph.initializer
               if t.data_type == onnx.TensorProto.INT8 and t.dims]
    assert weights and max(int(np.abs(w).max()) for w in weights) <= 64


def test_excluded_groups_stay_fp32(graphs: tuple[Checkpoint, Path, Path, Path]) -> None:
    import onnx

    ckpt, plain, fused, work = graphs
    build = builder(ckpt, plain, fused, work)
    groups = build.groups("static_minmax")
    ffn_out = next(g for g in groups if g.startswith("kind:") and g.endswith("/output/dense/MatMul")
                   and "attention" not in g)
    out = work / "partial.onnx"
    settings = build.build(quantize.Scheme("static_minmax", (ffn_out, "layer:0")), out)
    fp32 = set(groups[ffn_out]) | set(groups["layer:0"])
    assert settings["fp32_nodes"] == len(fp32) and settings["fp32_groups"] == [ffn_out, "layer:0"]
    graph = onnx.load(str(out)).graph
    produced_by = {o: n for n in graph.node for o in n.output}
    for node in graph.node:
        if node.name in fp32:  # fed by fp32 tensors, not by a DequantizeLinear
            assert all(produced_by.get(i) is None or produced_by[i].op_type != "DequantizeLinear" for i in node.input)
    with pytest.raises(ModelError, match="unknown calibration"):
        quantize.quantize_static_int8(plain, work / "x.onnx", "mse", work / "r.json")


def test_sensitivity_search_puts_the_worst_groups_back_first(graphs: tuple[Checkpoint, Path, Path, Path],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt, plain, fused, work = graphs
    build = builder(ckpt, plain, fused, work)
    selection = reference(ckpt, TEXTS[1::2])
    found = quantize.probe(build, "dynamic", selection, ckpt.pad_token_id)
    assert found.every_node["label_agreement"] > 0.9 and found.every_node["mean_abs_diff"] > 0
    # A gate stricter than every-node int8 can hold, so the search has to put groups back.
    limit = found.every_node["mean_abs_diff"] / 3
    monkeypatch.setattr(quantize, "holds", lambda result, _acc: result["mean_abs_diff"] <= limit)
    schemes = quantize.sensitive_schemes(build, found, selection, ckpt.pad_token_id, None)
    first = next(schemes, None)
    groups = build.groups("dynamic")
    assert set(found.sensitivity) == set(groups)
    ranked = sorted(found.sensitivity, key=lambda g: -found.sensitivity[g]["mean_abs_diff"])
    if first is None:  # no subset got there: every step was tried and recorded
        assert len(found.steps) == len(groups) - 1
        return
    assert list(first.fp32_groups) == ranked[: len(first.fp32_groups)]
    assert found.steps[-1]["mean_abs_diff"] <= limit
    assert all(step["mean_abs_diff"] > limit for step in found.steps[:-1])
    assert first.name == f"dynamic+{len(first.fp32_groups)}_fp32_groups"
    assert found.to_json()["family"] == "dynamic"


@pytest.mark.parametrize("family", ["dynamic", quantize.PER_TOKEN])
def test_ranking_trials_side_by_side_measure_what_one_at_a_time_does(
        graphs: tuple[Checkpoint, Path, Path, Path], family: str) -> None:
    ckpt, plain, fused, work = graphs
    build = builder(ckpt, plain, fused, work)
    ranking = reference(ckpt, TEXTS[1::2])
    apart = quantize.rank_groups(build, family, ranking, ckpt.pad_token_id, workers=1)
    together = quantize.rank_groups(build, family, ranking, ckpt.pad_token_id, workers=3)
    assert list(together) == list(apart) == list(build.groups(family))
    errors = np.array([[apart[g]["mean_abs_diff"], together[g]["mean_abs_diff"]] for g in apart])
    assert (errors > 0).all()  # each group alone changes the outputs, so the ranking has something to order
    # One thread or several per session sums the same products: the same figures, to float rounding.
    np.testing.assert_allclose(errors[:, 1], errors[:, 0], rtol=1e-3, atol=1e-6)
    assert [g["label_agreement"] for g in together.values()] == [g["label_agreement"] for g in apart.values()]
    assert not list(work.glob("rank-*.onnx"))  # each trial graph is removed once judged


def test_speed_figures_are_positive(graphs: tuple[Checkpoint, Path, Path, Path]) -> None:
    ckpt, plain, _, _ = graphs
    speed = quantize.items_per_cpu_second(plain, reference(ckpt, TEXTS[:16]).encoded, ckpt.pad_token_id,
                                          batch_size=8, passes=1)
    assert speed["items_per_s"] > 0 and speed["items_per_cpu_s"] > 0
