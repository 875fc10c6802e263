"""The graph-building steps of an export: torch -> ONNX, fused graph, int8, fp16.

Each step writes one file; whether its output may ship is for the parity gate to decide.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

from export.checkpoint import Checkpoint
from stream.core.errors import ModelError

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
_AXES = {0: "batch", 1: "sequence"}


def export_fp32(ckpt: Checkpoint, out: Path, opset: int = DEFAULT_OPSET) -> None:
    """torch.onnx.export (TorchScript exporter) with dynamic batch and sequence axes."""
    import torch

    names = ckpt.input_names
    sample = ckpt.tokenizer(["a short text", "and a somewhat longer text to pad"], padding=True,
                            return_tensors="pt")
    args = tuple(sample[name] for name in names)

    class _Logits(torch.nn.Module):
        """Positional inputs in `names` order, logits out (no ModelOutput dict in the graph)."""

        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: Any) -> Any:
            return self.model(**dict(zip(names, inputs, strict=True)), return_dict=True).logits

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about python control flow on shapes
            torch.onnx.export(
                _Logits(ckpt.model).eval(),
                args,
                str(out),
                dynamo=False,
                input_names=names,
                output_names=["logits"],
                dynamic_axes={**{n: _AXES for n in names}, "logits": {0: "batch"}},
                opset_version=opset,
                do_constant_folding=True,
            )
    except Exception as exc:
        raise ModelError(f"torch.onnx.export failed at opset {opset}: {str(exc).strip()[:400]}",
                         hint="try another --opset (14..20)") from None


def optimize_graph(src: Path, dst: Path, ckpt: Checkpoint) -> dict[str, int]:
    """ORT's transformer fusions (attention, LayerNorm, GELU, embeddings); returns fused-op counts."""
    from onnxruntime.transformers.optimizer import optimize_model

    config = ckpt.config
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = optimize_model(
            str(src),
            model_type="bert",
            num_heads=int(getattr(config, "num_attention_heads", 0)),
            hidden_size=int(getattr(config, "hidden_size", 0)),
            opt_level=0,  # python fusions only; the runtime session applies ORT's own optimizations
        )
    model.save_model_to_file(str(dst))
    stats = model.get_fused_operator_statistics()
    return {op: int(n) for op, n in stats.items() if n}


# Per-channel weight scales cut the logit error by about half against per-tensor ones.
INT8_SETTINGS = {"method": "quantize_dynamic", "weight_type": "QInt8", "per_channel": True}
# Tried in order until one holds parity, from fastest to most precise.  The FFN output projections
# read GELU outputs, whose outliers make the per-tensor activation scale coarse: keeping them in
# fp32 removes most of the int8 error; keeping the whole FFN in fp32 removes more (attention and
# embeddings stay int8).
INT8_SCHEMES = ("all", "gelu_matmuls_fp32", "ffn_fp32")
_GELU_OPS = {"Gelu", "BiasGelu", "FastGelu", "Erf"}
_ELEMENTWISE = {"Mul", "Add", "Div"}


def ffn_matmuls(model_path: Path, *, inputs_too: bool) -> list[str]:
    """Names of the MatMuls that read a GELU (fused, or the erf formula of a plain graph) and,
    with `inputs_too`, those whose output goes into one."""
    import onnx

    graph = onnx.load(str(model_path)).graph
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def from_gelu(tensor: str, depth: int = 0) -> bool:
        node = producer.get(tensor)
        if node is None or depth > 3:
            return False
        return node.op_type in _GELU_OPS or (
            node.op_type in _ELEMENTWISE and any(from_gelu(i, depth + 1) for i in node.input))

    def into_gelu(tensor: str, depth: int = 0) -> bool:
        return depth <= 3 and any(
            node.op_type in _GELU_OPS or (node.op_type in _ELEMENTWISE and any(into_gelu(o, depth + 1)
                                                                               for o in node.output))
            for node in consumers.get(tensor, []))

    return [n.name for n in graph.node if n.op_type == "MatMul" and n.name
            and (from_gelu(n.input[0]) or (inputs_too and into_gelu(n.output[0])))]


def quantize_int8(src: Path, dst: Path, scheme: str = "all") -> dict[str, Any]:
    """Dynamic int8 quantization of the MatMul/Attention/embedding weights (for CPU); returns the
    settings used, for the manifest."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if scheme not in INT8_SCHEMES:
        raise ModelError(f"unknown int8 scheme {scheme!r}", hint=f"one of {', '.join(INT8_SCHEMES)}")
    keep_fp32 = [] if scheme == "all" else ffn_matmuls(src, inputs_too=scheme == "ffn_fp32")

    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))  # the quantizer logs advice per tensor on the root logger
    try:
        quantize_dynamic(
            str(src),
            str(dst),
            weight_type=QuantType.QInt8,
            per_channel=True,
            nodes_to_exclude=keep_fp32,
            # Fused contrib ops (Attention, SkipLayerNorm) defeat shape inference; their outputs are fp32.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        root.setLevel(level)
    return {**INT8_SETTINGS, "scheme": scheme, "fp32_nodes": len(keep_fp32)}


def convert_fp16(src: Path, dst: Path) -> None:
    """fp16 weights and compute (for GPU); inputs and logits stay int64/fp32."""
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(src)))
    model.convert_float_to_float16(keep_io_types=True)
    model.save_model_to_file(str(dst))
