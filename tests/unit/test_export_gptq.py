"""GPTQ weight rounding: less output error than rounding to nearest on correlated inputs, the same
integer grid, and the Hessians read off a real graph run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from hypothesis import given, settings
from hypothesis import strategies as st

from export import gptq, per_token
from stream.core.scorer import create_session
from tests.unit.test_export_per_token import K, N, _linear_graph

LIMIT = per_token.WEIGHT_MAX


def _inputs(seed: int, rows: int = 400, k: int = K) -> np.ndarray:
    """Activations as an encoder's are: a few directions carry most of the variance, and one
    channel is an outlier."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 4)) @ rng.normal(size=(4, k)) + 0.1 * rng.normal(size=(rows, k))
    x[:, 0] *= 20
    return x.astype(np.float32)


def _nearest(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return gptq.quantize_rows(w, None, LIMIT)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31))
def test_gptq_moves_the_output_less_than_rounding_to_nearest(seed: int) -> None:
    x = _inputs(seed)
    w = np.random.default_rng(seed + 1).normal(size=(K, N)).astype(np.float32)
    ints, scale = gptq.quantize_rows(w, x.astype(np.float64).T @ x, LIMIT)
    near_ints, near_scale = _nearest(w)
    np.testing.assert_array_equal(scale, near_scale)  # the same grid: only the integers differ
    assert ints.dtype == np.int8 and np.abs(ints.astype(int)).max() <= LIMIT
    exact = x @ w
    err = np.linalg.norm(exact - x @ (ints * scale))
    err_near = np.linalg.norm(exact - x @ (near_ints * near_scale))
    assert err < 0.8 * err_near, (err, err_near)


def test_without_calibration_and_with_a_dead_input_it_stays_on_the_grid() -> None:
    w = np.random.default_rng(3).normal(size=(K, N)).astype(np.float32)
    ints, scale = _nearest(w)
    np.testing.assert_array_equal(ints, np.clip(np.round(w / scale), -LIMIT, LIMIT))
    x = _inputs(4)
    x[:, 5] = 0  # a channel that never fires
    dead_ints, dead_scale = gptq.quantize_rows(w, x.astype(np.float64).T @ x, LIMIT)
    assert np.isfinite(dead_scale).all() and np.abs(dead_ints.astype(int)).max() <= LIMIT


def test_the_hessians_are_read_off_the_real_tokens_of_a_graph_run(tmp_path: Path) -> None:
    src = tmp_path / "linear.onnx"
    rng = np.random.default_rng(5)
    _linear_graph(src, rng.normal(size=(K, N)).astype(np.float32), np.zeros(N, np.float32))
    x = rng.normal(size=(2, 3, K)).astype(np.float32)
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    model = onnx.load(str(src))
    hessians, tokens = gptq.input_hessians(model, ["x"], [{"x": x, "attention_mask": mask}], tmp_path)
    assert [o.name for o in model.graph.output] == ["y"]  # the loaded graph is left as it was
    real = x[mask.astype(bool)].astype(np.float64)
    assert tokens == 3
    np.testing.assert_allclose(hessians["x"], real.T @ real, rtol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["linear.onnx"]  # the probe graph is gone


def test_a_per_token_graph_with_gptq_weights_is_closer_to_fp32(tmp_path: Path) -> None:
    src = tmp_path / "linear.onnx"
    w = np.random.default_rng(6).normal(size=(K, N)).astype(np.float32)
    _linear_graph(src, w, np.zeros(N, np.float32))
    x = _inputs(7).reshape(4, 100, K)
    batch = {"x": x, "attention_mask": np.ones((4, 100), np.int64)}
    errors = {}
    for name, quantizer in (("gptq", per_token.PerTokenInt8(src, [batch])),
                            ("nearest", per_token.PerTokenInt8(src))):
        quantizer.write(tmp_path / f"{name}.onnx")
        session, _ = create_session(tmp_path / f"{name}.onnx", "cpu")
        errors[name] = np.linalg.norm(session.run(None, {"x": x})[0] - x @ w)
        assert quantizer.rounding["weight_rounding"] == name
    assert errors["gptq"] < 0.9 * errors["nearest"], errors  # activations now add their own error
