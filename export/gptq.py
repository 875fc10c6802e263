"""GPTQ rounding of int8 weights (Frantar et al., 2022): each weight row is rounded in turn and its
rounding error is spread over the rows not yet rounded, weighted by how the layer's inputs
correlate, so the layer's output on real inputs moves as little as possible.

Round-to-nearest treats every weight alone; with 7-bit weights (see per_token.WEIGHT_MAX) it was
most of the per-token int8 error on the demo package (weights alone rounded to nearest: mean logit
error 0.027 of 0.035 on its validation texts; rounded by GPTQ: 0.010).  The grid stays what the
kernel runs: one symmetric scale per output column (max |w| / WEIGHT_MAX), integers in
[-WEIGHT_MAX, WEIGHT_MAX]; only which integer each weight gets changes.

The inputs come from the calibration texts: for every input of a weighted MatMul, H = Xᵀ X over
their real (unpadded) tokens.  Rows go in order of decreasing H diagonal ("act order") and H gets
1 % of its mean diagonal added (the paper's dampening), which keeps its inverse well conditioned
where an input channel hardly varies.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stream.core.scorer import create_session

DAMPENING = 0.01


def input_hessians(model: Any, inputs: Sequence[str], batches: Iterable[Mapping[str, np.ndarray]],
                   work: Path) -> tuple[dict[str, np.ndarray], int]:
    """Xᵀ X (float64) of each tensor of `model` (a loaded ModelProto) named in `inputs`, over the
    real tokens of `batches` (feeds with an attention_mask), and how many tokens that was.  The
    graph runs once per batch with those tensors as extra outputs, from a probe file in `work`;
    `model` is left as it was."""
    import onnx
    from onnx import helper

    outputs = model.graph.output
    kept = len(outputs)
    present = {o.name for o in outputs}
    outputs.extend(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
                   for name in inputs if name not in present)
    probe = work / "hessian-probe.onnx"
    try:
        onnx.save(model, str(probe))
        session, _ = create_session(probe, "cpu", spin=False)
    finally:
        del outputs[kept:]
        probe.unlink(missing_ok=True)
    takes = {i.name for i in session.get_inputs()}
    found: dict[str, np.ndarray] = {}
    tokens = 0
    for feeds in batches:
        real = feeds["attention_mask"].astype(bool)
        tokens += int(real.sum())
        values = session.run(list(inputs), {k: v for k, v in feeds.items() if k in takes})
        for name, value in zip(inputs, values, strict=True):
            rows = value[real].astype(np.float64)
            found[name] = found.get(name, 0.0) + rows.T @ rows
    return found, tokens


def quantize_rows(weight: np.ndarray, hessian: np.ndarray | None, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """`weight` (inputs × outputs, as a MatMul's second input) as int8 integers in [-limit, limit]
    and one scale per output column, rounded so that x @ weight moves least for inputs x whose
    Xᵀ X is `hessian` (to nearest without one)."""
    stored = np.maximum(np.abs(weight).max(axis=0) / limit, 1e-12).astype(np.float32)
    h = None if hessian is None else np.array(hessian, dtype=np.float64, copy=True)
    if h is None or not np.any(np.diag(h) > 0):  # no calibration signal: round to nearest
        return np.clip(np.round(weight.astype(np.float32) / stored), -limit, limit).astype(np.int8), stored
    w, scale = weight.astype(np.float64), stored.astype(np.float64)  # the error is against the stored grid
    dead = np.diag(h) <= 0  # an input that is always zero: its weights never matter
    h[dead, dead] = 1.0
    order = np.argsort(-np.diag(h), kind="stable")
    w, h = w[order].copy(), h[np.ix_(order, order)]
    h[np.diag_indices_from(h)] += DAMPENING * np.mean(np.diag(h))
    upper = np.linalg.cholesky(np.linalg.inv(h)).T  # H⁻¹ = Uᵀ U
    ints = np.empty_like(w)
    for i in range(w.shape[0]):
        ints[i] = np.clip(np.round(w[i] / scale), -limit, limit)
        err = (w[i] - ints[i] * scale) / upper[i, i]
        w[i + 1:] -= np.outer(upper[i, i + 1:], err)
    out = np.empty_like(ints)
    out[order] = ints
    return out.astype(np.int8), stored


def settings(hessians: Mapping[str, Any] | None, tokens: int) -> dict[str, Any]:
    """How the weights were rounded, for the manifest."""
    if not hessians:
        return {"weight_rounding": "nearest"}
    return {"weight_rounding": "gptq", "gptq": {"act_order": True, "dampening": DAMPENING,
                                                "calibration_tokens": tokens}}
