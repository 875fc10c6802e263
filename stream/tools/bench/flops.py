"""FLOPs per text from the ONNX graph itself: every matrix product the package's fp32 graph runs,
as a polynomial in the sequence length, evaluated at each text's own token count.

The graph's inputs get a symbolic batch and sequence axis; ONNX Runtime's symbolic shape
inference (which knows its fused contrib ops) gives every node's shapes in those symbols.  Counted
at batch 1, as multiply-adds × 2:

* ``MatMul`` A[..., M, K] · B[..., K, N]: 2 × (elements of the output) × K;
* ``Gemm``: 2 × M × N × K;
* the fused ``Attention`` (com.microsoft): its QKV projection, 2 × S × H_in × (q + k + v widths),
  plus QKᵀ and the weighted sum over values, 2 × S² × (q width) + 2 × S² × (v width);
* ``MultiHeadAttention`` (projections already separate MatMuls): 2 × S² × (q + v widths).

Everything else (LayerNorm, GELU, softmax, pooling, quantize/dequantize) is left out: it is a few
per cent of an encoder's arithmetic and no matrix unit runs it.  The same count serves an int8
variant (the same model, the products in int8) and the GPU's fp16.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BATCH, SEQUENCE = "batch", "sequence"


@dataclass(frozen=True)
class GraphFlops:
    """FLOPs of one text of n tokens = sum(coefficients[i] × n**i), and the same split by op type."""

    coefficients: tuple[float, ...]
    by_op: dict[str, tuple[float, ...]]

    def at(self, n: int) -> float:
        return _poly(self.coefficients, n)

    def per_text(self, token_counts: Sequence[int]) -> float:
        """Mean FLOPs per text, each at its own length: padding counts as waste, not work."""
        return sum(self.at(n) for n in token_counts) / len(token_counts) if token_counts else 0.0

    def describe(self, token_counts: Sequence[int]) -> dict[str, Any]:
        n = len(token_counts) or 1
        return {"flops_per_text": round(self.per_text(token_counts)),
                "by_op": {op: round(sum(_poly(c, t) for t in token_counts) / n) for op, c in self.by_op.items()},
                "polynomial_in_tokens": [round(c, 1) for c in self.coefficients]}


def _poly(coefficients: Sequence[float], n: int) -> float:
    return sum(c * n**i for i, c in enumerate(coefficients))


def graph_flops(model: Path) -> GraphFlops:
    import onnx
    import sympy
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    proto = onnx.load(str(model))
    for value in proto.graph.input:
        dims = value.type.tensor_type.shape.dim
        for axis, name in zip(dims, (BATCH, SEQUENCE), strict=False):
            axis.ClearField("dim_value")
            axis.dim_param = name
    inferred = SymbolicShapeInference.infer_shapes(proto, auto_merge=True)
    graph = inferred.graph
    shapes: dict[str, list[Any]] = {init.name: list(init.dims) for init in graph.initializer}
    for value in (*graph.input, *graph.value_info, *graph.output):
        shapes[value.name] = [d.dim_param if d.HasField("dim_param") else d.dim_value
                              for d in value.type.tensor_type.shape.dim]
    seq = sympy.Symbol(SEQUENCE)
    symbols = {BATCH: sympy.Integer(1), SEQUENCE: seq}

    def dim(value: Any) -> Any:
        return sympy.sympify(value, locals=symbols).subs(symbols) if isinstance(value, str) else sympy.Integer(value)

    def shape(name: str) -> list[Any]:
        if name not in shapes:
            raise ValueError(f"{model.name}: no inferred shape for {name!r}")
        return [dim(d) for d in shapes[name]]

    totals: dict[str, Any] = {}
    for node in graph.node:
        count = _node_flops(node, shape)
        if count is not None:
            totals[node.op_type] = totals.get(node.op_type, 0) + count
    by_op = {op: _coefficients(sympy.expand(expr), seq) for op, expr in totals.items()}
    return GraphFlops(_coefficients(sympy.expand(sum(totals.values())), seq), by_op)


def _coefficients(expr: Any, seq: Any) -> tuple[float, ...]:
    import sympy

    poly = sympy.Poly(expr, seq)
    return tuple(float(c) for c in reversed(poly.all_coeffs()))


def _node_flops(node: Any, shape: Any) -> Any:
    """2 × multiply-adds of one node as a sympy expression in the sequence length, or None."""
    import onnx
    import sympy

    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "MatMul":
        a, out = shape(node.input[0]), shape(node.output[0])
        return 2 * sympy.Mul(*out) * a[-1]
    if node.op_type == "Gemm":
        a, out = shape(node.input[0]), shape(node.output[0])
        k = a[0] if attrs.get("transA") else a[-1]
        return 2 * out[0] * out[1] * k
    if node.domain == "com.microsoft" and node.op_type == "Attention":
        x, w = shape(node.input[0]), shape(node.input[1])
        q, k, v = attrs.get("qkv_hidden_sizes") or [w[1] // 3] * 3
        s = x[1]
        return 2 * s * x[2] * w[1] + 2 * s * s * q + 2 * s * s * v
    if node.domain == "com.microsoft" and node.op_type == "MultiHeadAttention":
        query, value = shape(node.input[0]), shape(node.input[2]) if len(node.input) > 2 else None
        s = query[1]
        v = value[-1] if value and len(value) == 3 else query[-1]
        return 2 * s * s * query[-1] + 2 * s * s * v
    return None
