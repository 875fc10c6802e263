"""The graph-building steps of an export: torch -> ONNX, fused graph, fp16 (int8: export.quantize).

Each step writes one file; whether its output may ship is for the parity gate to decide.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

from export.checkpoint import Checkpoint
from stream.core.errors import ModelError
from stream.core.manifest import TOKEN

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
_AXES = {0: "batch", 1: "sequence"}


def export_fp32(ckpt: Checkpoint, out: Path, opset: int = DEFAULT_OPSET) -> None:
    """torch.onnx.export (TorchScript exporter) with dynamic batch and sequence axes, every output
    of the checkpoint (`logits`; or `<head>_logits` per head and `embedding`)."""
    import torch

    names = ckpt.input_names
    sample = ckpt.tokenizer(["a short text", "and a somewhat longer text to pad"], padding=True,
                            return_tensors="pt")
    args = tuple(sample[name] for name in names)
    heads = ckpt.output_heads()
    outputs = [spec["output"] for spec in heads.values()]
    # a token head's logits have a sequence axis too
    output_axes = {spec["output"]: _AXES if spec["kind"] == TOKEN else {0: "batch"} for spec in heads.values()}

    class _Outputs(torch.nn.Module):
        """Positional inputs in `names` order, a tuple of `outputs` out (no dict in the graph)."""

        def __init__(self, ckpt: Checkpoint) -> None:
            super().__init__()
            self.model = ckpt.model
            self.ckpt = ckpt

        def forward(self, *inputs: Any) -> Any:
            found = self.ckpt.forward(dict(zip(names, inputs, strict=True)))
            return tuple(found[name] for name in outputs)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about python control flow on shapes
            torch.onnx.export(
                _Outputs(ckpt).eval(),
                args,
                str(out),
                dynamo=False,
                input_names=names,
                output_names=outputs,
                dynamic_axes={**{n: _AXES for n in names}, **output_axes},
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


def convert_fp16(src: Path, dst: Path) -> None:
    """fp16 weights and compute (for GPU); inputs and outputs stay int64/fp32."""
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(src)))
    model.convert_float_to_float16(keep_io_types=True)
    model.save_model_to_file(str(dst))
