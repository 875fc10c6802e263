"""Per-token dynamic int8: the rewrite's arithmetic on arbitrary rows, and a real encoder graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from export import onnx_export, parity, per_token, quantize
from export.check_data import BUILTIN
from export.checkpoint import load_checkpoint
from export.package import ref_tokenizer
from stream.core.scorer import create_session, encode, run_outputs
from tests.tiny_models import save_tiny_classifier

K, N = 24, 7


def _linear_graph(path: Path, weight: np.ndarray, bias: np.ndarray, opset: int = 17) -> None:
    """x [batch, seq, K] -> MatMul(weight) -> Add(bias): the shape of every projection in an encoder."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["xw"], name="proj/MatMul"),
         helper.make_node("Add", ["xw", "b"], ["y"], name="proj/Add")],
        "linear", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", N])],
        initializer=[numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9), str(path))


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    session, _ = create_session(path, "cpu")
    return np.asarray(session.run(None, {"x": x})[0])


def _within_rounding(got: np.ndarray, x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Where `got` is within what a row's step (max |x| / 127) and the weights' steps allow."""
    exact = x.astype(np.float64) @ weight + bias
    row_step = np.abs(x).max(axis=-1, keepdims=True).astype(np.float64) / 127
    weight_step = np.abs(weight).max(axis=0).astype(np.float64) / per_token.WEIGHT_MAX
    bound = (row_step / 2 * np.abs(weight).sum(axis=0)
             + (np.abs(x).sum(axis=-1, keepdims=True) + K * row_step / 2) * weight_step / 2)
    return np.abs(got - exact) <= bound * 1.001 + 1e-3 * (1 + np.abs(exact))


_ROWS = hnp.arrays(np.float32, st.tuples(st.integers(1, 3), st.integers(1, 5), st.just(K)),
                   elements=st.floats(-1e4, 1e4, width=32, allow_subnormal=False))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(x=_ROWS, outlier=st.floats(1.0, 1e6))
def test_each_row_is_within_its_own_rounding_bound(tmp_path: Path, x: np.ndarray, outlier: float) -> None:
    """Whatever the rows hold (zeros, huge values, one token a million times its neighbours), every
    output row stays within the error that its own step and the weight steps allow: a row's
    neighbours, however large, never coarsen it."""
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(K, N)).astype(np.float32)
    bias = rng.normal(size=N).astype(np.float32)
    src, dst = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    if not dst.is_file():
        _linear_graph(src, weight, bias)
        assert per_token.quantize_per_token_int8(src, dst) == 1
    x = x.copy()
    x.reshape(-1, K)[0, 0] = outlier  # the first token of the batch dwarfs the rest
    got = _run(dst, x)
    assert np.isfinite(got).all()
    assert _within_rounding(got, x, weight, bias).all()


def test_a_zero_row_scores_exactly_the_bias_and_opset_18_works(tmp_path: Path) -> None:
    import onnx
    from onnx import numpy_helper

    rng = np.random.default_rng(1)
    weight, bias = rng.normal(size=(K, N)).astype(np.float32), rng.normal(size=N).astype(np.float32)
    for opset in (17, 18):  # ReduceMax's axes moved from an attribute to an input in 18
        src, dst = tmp_path / f"fp32-{opset}.onnx", tmp_path / f"int8-{opset}.onnx"
        _linear_graph(src, weight, bias, opset)
        per_token.quantize_per_token_int8(src, dst)
        # 7-bit weights: a uint8 x int8 pair sum overflows int16 on a non-VNNI x86 kernel otherwise
        stored = [numpy_helper.to_array(t) for t in onnx.load(str(dst)).graph.initializer
                  if t.data_type == onnx.TensorProto.INT8 and t.dims]
        assert len(stored) == 1 and np.abs(stored[0].astype(int)).max() == per_token.WEIGHT_MAX
        x = rng.normal(size=(2, 3, K)).astype(np.float32)
        x[1, 2] = 0.0
        x[0, 1] = -np.abs(x[0, 1])  # a row's scale comes from its magnitudes, negative ones too
        x[1, 0] = -x[0, 1]
        got = _run(dst, x)
        np.testing.assert_allclose(got[1, 2], bias, atol=1e-6)
        np.testing.assert_allclose(got[0, 1] - bias, -(got[1, 0] - bias), atol=1e-5)  # symmetric: a mirrored row
        assert _within_rounding(got, x, weight, bias).all()
    with pytest.raises(ValueError, match="opset 13"):
        _linear_graph(tmp_path / "old.onnx", weight, bias, opset=12)
        per_token.quantize_per_token_int8(tmp_path / "old.onnx", tmp_path / "x.onnx")


def test_an_encoder_graph_scores_each_text_the_same_whatever_its_batch(tmp_path: Path) -> None:
    import onnx

    ckpt = load_checkpoint(save_tiny_classifier(tmp_path / "ckpt", report={"max_length": 64}))
    plain = tmp_path / "plain.onnx"
    onnx_export.export_fp32(ckpt, plain)
    weighted = per_token.weighted_matmuls(onnx.load(str(plain)))
    assert len(weighted) == 12  # q, k, v, attention output, FFN in, FFN out in each of two layers
    keep = [name for name in weighted if "output/dense" in name and "attention" not in name]
    out = tmp_path / "int8.onnx"
    assert per_token.quantize_per_token_int8(plain, out, exclude=keep) == len(weighted) - len(keep)
    nodes = onnx.load(str(out)).graph.node
    assert sum(n.op_type == "MatMulIntegerToFloat" for n in nodes) == len(weighted) - len(keep)
    assert {n.name for n in nodes if n.op_type == "MatMul"} >= set(keep)  # excluded ones stay fp32
    assert not any(n.op_type.startswith("DynamicQuantize") for n in nodes)
    # q, k and v read one quantized copy of their shared input
    assert sum(n.op_type == "QuantizeLinear" for n in nodes) == 3 * 2

    texts = [text for text, _ in BUILTIN]
    ref = parity.reference(ckpt, encode(ref_tokenizer(ckpt), texts), None)
    session, _ = create_session(out, "cpu")
    together = run_outputs(session, ref.encoded, ckpt.pad_token_id, bucketing=False, batch_size=32)
    alone = run_outputs(session, ref.encoded, ckpt.pad_token_id, batch_size=1)
    np.testing.assert_allclose(together["logits"], alone["logits"], atol=1e-5)  # no batch-mate effect
    assert parity.compare(ref, together)["label_agreement"] >= 0.95


def test_one_loaded_graph_writes_each_variant_as_a_fresh_load_would(tmp_path: Path) -> None:
    # The search writes many variants from one load: none may carry another's nodes or weights,
    # and a trial that keeps its tensors beside it scores as the self-contained graph does.
    import onnx

    ckpt = load_checkpoint(save_tiny_classifier(tmp_path / "ckpt", report={"max_length": 64}))
    plain = tmp_path / "plain.onnx"
    onnx_export.export_fp32(ckpt, plain)
    loaded = per_token.PerTokenInt8(plain)
    trials = tmp_path / "trials"
    trials.mkdir()
    assert loaded.write(trials / "first.onnx", loaded.matmuls[:5], beside=True) == len(loaded.matmuls) - 5
    texts = [text for text, _ in BUILTIN]
    ref = parity.reference(ckpt, encode(ref_tokenizer(ckpt), texts), None)
    for exclude in ((), loaded.matmuls[::2]):
        shipped, trial, fresh = tmp_path / "shipped.onnx", trials / "trial.onnx", tmp_path / "fresh.onnx"
        loaded.write(shipped, exclude)
        loaded.write(trial, exclude, beside=True)
        per_token.quantize_per_token_int8(plain, fresh, exclude)
        assert fresh.read_bytes() == shipped.read_bytes()
        assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in onnx.load(str(shipped)).graph.initializer)
        assert trial.stat().st_size < shipped.stat().st_size / 2  # the weights stayed in the data file
        assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in onnx.load(str(trial), load_external_data=False)
                   .graph.initializer)
        outputs = [run_outputs(create_session(path, "cpu")[0], ref.encoded, ckpt.pad_token_id)["logits"]
                   for path in (shipped, trial)]
        np.testing.assert_array_equal(outputs[0], outputs[1])


def test_the_search_puts_per_token_nodes_back_one_at_a_time(tmp_path: Path) -> None:
    ckpt = load_checkpoint(save_tiny_classifier(tmp_path / "ckpt", report={"max_length": 64}))
    plain = tmp_path / "plain.onnx"
    onnx_export.export_fp32(ckpt, plain)
    (tmp_path / "work").mkdir()
    tokenizer = ref_tokenizer(ckpt)
    build = quantize.Builder(plain, plain, tmp_path / "work", lambda: quantize.EncodedReader(
        encode(tokenizer, [text for text, _ in BUILTIN]), ckpt.input_names, ckpt.pad_token_id))
    groups = build.groups(quantize.PER_TOKEN)
    assert all(len(nodes) == 1 and group == f"node:{nodes[0]}" for group, nodes in groups.items())
    first = next(iter(groups))
    settings_ = build.build(quantize.Scheme(quantize.PER_TOKEN, (first,)), tmp_path / "one.onnx")
    assert settings_["method"] == "per_token_dynamic" and settings_["fp32_nodes"] == 1
    assert settings_["scheme"] == "per_token+1_fp32_groups"
    assert settings_["weight_rounding"] == "gptq" and settings_["gptq"]["calibration_tokens"] > 0


def test_the_search_puts_back_first_the_node_with_the_most_error_per_weight(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An FFN node (32 x 64 weights) with 1.5x the error of a query projection (32 x 32) gives up
    twice its int8 work for it: the projection goes back to fp32 first."""
    ckpt = load_checkpoint(save_tiny_classifier(tmp_path / "ckpt", report={"max_length": 64}))
    plain = tmp_path / "plain.onnx"
    onnx_export.export_fp32(ckpt, plain)
    (tmp_path / "work").mkdir()
    tokenizer = ref_tokenizer(ckpt)
    encoded = encode(tokenizer, [text for text, _ in BUILTIN])
    build = quantize.Builder(plain, plain, tmp_path / "work", lambda: quantize.EncodedReader(
        encoded, ckpt.input_names, ckpt.pad_token_id))
    groups = list(build.groups(quantize.PER_TOKEN))
    query = next(g for g in groups if "layer.0/attention/self/query" in g)
    ffn = next(g for g in groups if "layer.0/intermediate/dense" in g)
    assert build.cost(quantize.PER_TOKEN, ffn) == 2 * build.cost(quantize.PER_TOKEN, query) == 2 * 32 * 32
    errors = {g: 0.01 for g in groups} | {query: 1.0, ffn: 1.5}
    ranking = {g: {"mean_abs_diff": e} for g, e in errors.items()}
    monkeypatch.setattr(quantize, "rank_groups", lambda *_: ranking)
    found = quantize.Search(quantize.PER_TOKEN)
    ref = parity.reference(ckpt, encoded, None)
    schemes = quantize.sensitive_schemes(build, found, ref, ckpt.pad_token_id, None)
    next(schemes, None)
    assert found.steps[0]["fp32_groups"] == [query]
    assert found.ranked_by == "mean logit error per weight element"
