"""Per-token dynamic int8: every MatMul with a constant weight becomes an integer GEMM whose
activation scale is measured per token row at run time.

ONNX Runtime's `quantize_dynamic` measures one activation scale per tensor, that is per batch: the
few tokens with outsized activations (an encoder's sentence markers) set the step for every other
token in the batch, which is most of its logit error on our packages, and it makes a text's scores
move with its batch-mates.  Here each row gets its own symmetric scale (max |x| / 127) and is
stored as uint8 around a fixed zero point of 128, because ONNX Runtime's integer MatMuls take one
zero point per tensor.  Weights are int8, symmetric, one scale per output column.  A text's
scores then depend on its own tokens only, whatever it is batched with.

Per quantized input (the query, key and value projections share theirs):
Reshape to rows -> Abs -> ReduceMax -> row scale -> QuantizeLinear (per row, axis 0) -> Reshape back.
Per MatMul: MatMulIntegerToFloat (weight scales, a unit activation scale) -> Mul by the row scales.
The kernel's own activation-scale input would fold that Mul in, but with a per-row scale and a
prepacked weight it gave wrong products in ONNX Runtime 1.31, so the row scale multiplies after.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

MS_DOMAIN = "com.microsoft"
_ZERO_POINT = 128
_MIN_OPSET = 13  # QuantizeLinear with a per-axis scale


def weighted_matmuls(model: Any) -> list[str]:
    """The names of the MatMul nodes whose second input is a constant 2-D weight."""
    weights = {init.name for init in model.graph.initializer if len(init.dims) == 2}
    return [node.name for node in model.graph.node
            if node.op_type == "MatMul" and node.name and len(node.input) == 2 and node.input[1] in weights]


def quantize_per_token_int8(src: Path, dst: Path, exclude: Sequence[str] = ()) -> int:
    """Rewrite `src` into `dst`; the MatMuls named in `exclude` stay fp32.  Returns how many were quantized."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < _MIN_OPSET:
        raise ValueError(f"per-token int8 needs opset {_MIN_OPSET} or later, the graph has {opset}")
    graph = model.graph
    targets = set(weighted_matmuls(model)) - set(exclude)
    weights = {init.name: init for init in graph.initializer}
    shared: dict[str, np.ndarray] = {
        "pt_inv127": np.array(1 / 127, np.float32), "pt_eps": np.array(1e-12, np.float32),
        "pt_one": np.array(1.0, np.float32), "pt_zp": np.array(_ZERO_POINT, np.uint8),
        "pt_wzp": np.array(0, np.int8), "pt_start": np.array([0], np.int64),
        "pt_last": np.array([-1], np.int64), "pt_unit": np.array([1], np.int64),
        "pt_axis1": np.array([1], np.int64)}
    added: dict[str, np.ndarray] = {}
    rows: dict[str, str] = {}  # input tensor -> the prefix of its quantized form
    nodes: list[Any] = []
    done = 0

    def reduce_max(x: str, out: str) -> Any:
        if opset >= 18:  # axes became an input
            return helper.make_node("ReduceMax", [x, "pt_axis1"], [out], keepdims=0)
        return helper.make_node("ReduceMax", [x], [out], axes=[1], keepdims=0)

    for node in graph.node:
        if node.name not in targets:
            nodes.append(node)
            continue
        w = numpy_helper.to_array(weights[node.input[1]]).astype(np.float32)
        scale = np.maximum(np.abs(w).max(axis=0) / 127, 1e-12).astype(np.float32)
        k, done = f"pt{done}", done + 1
        added[f"{k}_w"] = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
        added[f"{k}_ws"] = scale
        x = node.input[0]
        if x not in rows:
            p = rows[x] = f"ptx{len(rows)}"
            added.setdefault(f"pt_rows_{w.shape[0]}", np.array([-1, w.shape[0]], np.int64))
            nodes += [
                helper.make_node("Shape", [x], [f"{p}_shape"]),
                helper.make_node("Slice", [f"{p}_shape", "pt_start", "pt_last"], [f"{p}_lead"]),
                helper.make_node("Concat", [f"{p}_lead", "pt_unit"], [f"{p}_scale_shape"], axis=0),
                helper.make_node("Reshape", [x, f"pt_rows_{w.shape[0]}"], [f"{p}_rows"]),
                helper.make_node("Abs", [f"{p}_rows"], [f"{p}_abs"]),
                reduce_max(f"{p}_abs", f"{p}_max"),
                helper.make_node("Mul", [f"{p}_max", "pt_inv127"], [f"{p}_step"]),
                helper.make_node("Max", [f"{p}_step", "pt_eps"], [f"{p}_scale"]),
                helper.make_node("Shape", [f"{p}_scale"], [f"{p}_n"]),
                helper.make_node("Expand", ["pt_zp", f"{p}_n"], [f"{p}_zps"]),
                helper.make_node("QuantizeLinear", [f"{p}_rows", f"{p}_scale", f"{p}_zps"], [f"{p}_q_rows"], axis=0),
                helper.make_node("Reshape", [f"{p}_q_rows", f"{p}_shape"], [f"{p}_q"]),
                helper.make_node("Reshape", [f"{p}_scale", f"{p}_scale_shape"], [f"{p}_row_scale"]),
            ]
        p = rows[x]
        nodes += [helper.make_node("MatMulIntegerToFloat", [f"{p}_q", f"{k}_w", "pt_one", f"{k}_ws", "pt_zp", "pt_wzp"],
                                   [f"{k}_y"], domain=MS_DOMAIN, name=f"{node.name}_per_token"),
                  helper.make_node("Mul", [f"{k}_y", f"{p}_row_scale"], [node.output[0]])]
    used = {name for node in nodes for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept + [numpy_helper.from_array(v, name) for name, v in (shared | added).items()
                                     if name in used])
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    onnx.save(model, str(dst))
    return len(targets)
