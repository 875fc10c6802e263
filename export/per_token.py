"""Per-token dynamic int8: every MatMul with a constant weight becomes an integer GEMM whose
activation scale is measured per token row at run time.

ONNX Runtime's `quantize_dynamic` measures one activation scale per tensor, that is per batch: the
few tokens with outsized activations (an encoder's sentence markers) set the step for every other
token in the batch, which is most of its logit error on our packages, and it makes a text's scores
move with its batch-mates.  Here each row gets its own symmetric scale (max |x| / 127) and is
stored as uint8 around a fixed zero point of 128, because ONNX Runtime's integer MatMuls take one
zero point per tensor.  Weights are int8, symmetric, one scale per output column, on 7 bits
(±63, what ONNX Runtime calls reduce_range): x86 cores without VNNI multiply uint8 by int8 with
vpmaddubsw, which adds each pair of products into an int16 with saturation, and 2 × 255 × 127
overflows it (outputs off by tens of steps on an AVX2 host, exact on a VNNI one); 2 × 255 × 63 does
not.  A package has to score the same wherever it runs, so every host gets the 7-bit weights.
Which integer each weight gets is GPTQ's choice where calibration texts are given (`export.gptq`),
else the nearest.  A text's scores then depend on its own tokens only, whatever it is batched with.

Per quantized input (the query, key and value projections share theirs):
Reshape to rows -> max |x| per row -> row scale -> QuantizeLinear (per row, axis 0) -> Reshape back.
max |x| is max(ReduceMax, -ReduceMin): the same value as ReduceMax of Abs without writing |x| out,
which took 6 % of a demo package's int8 run (single thread, ORT's profiler; the whole run 5-9 %
shorter, outputs bit-identical).
Per MatMul: MatMulIntegerToFloat (weight scales, a unit activation scale) -> Mul by the row scales.
The kernel's own activation-scale input would fold that Mul in, but with a per-row scale and a
prepacked weight it gave wrong products in ONNX Runtime 1.31, so the row scale multiplies after.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from export import gptq
from stream.core.manifest import INT8_WEIGHT_BITS

MS_DOMAIN = "com.microsoft"
_ZERO_POINT = 128
WEIGHT_MAX = 2 ** (INT8_WEIGHT_BITS - 1) - 1  # 63: a uint8 × int8 pair sum fits int16 on every x86 kernel
_MIN_OPSET = 13  # QuantizeLinear with a per-axis scale
TRIAL_DATA = "per_token_trials.data"  # the tensors of the search's trial graphs (PerTokenInt8)


def weighted_matmuls(model: Any) -> list[str]:
    """The names of the MatMul nodes whose second input is a constant 2-D weight."""
    weights = {init.name for init in model.graph.initializer if len(init.dims) == 2}
    return [node.name for node in model.graph.node
            if node.op_type == "MatMul" and node.name and len(node.input) == 2 and node.input[1] in weights]


def weighted_inputs(model: Any) -> list[str]:
    """The input tensors of those MatMuls, each once (the query, key and value projections share one)."""
    nodes = {node.name: node for node in model.graph.node}
    return list(dict.fromkeys(nodes[name].input[0] for name in weighted_matmuls(model)))


def quantize_per_token_int8(src: Path, dst: Path, exclude: Sequence[str] = ()) -> int:
    """Rewrite `src` into `dst`; the MatMuls named in `exclude` stay fp32.  Returns how many were quantized."""
    return PerTokenInt8(src).write(dst, exclude)


class PerTokenInt8:
    """`src` loaded once, each weighted MatMul's int8 weight computed once: the export's search
    writes a variant per trial, each with other MatMuls left in fp32.  A trial (`beside=True`)
    keeps its tensors as references into one data file written once beside it, so a trial's graph
    is a few kilobytes to write instead of the whole model (serializing that was a quarter of a
    trial's cost).  With `calibration` (feeds of calibration texts, as the graph takes them) the
    weights are rounded by GPTQ on their activations (`export.gptq`), else to nearest."""

    def __init__(self, src: Path, calibration: Iterable[Mapping[str, np.ndarray]] | None = None) -> None:
        import onnx
        from onnx import helper, numpy_helper

        model = onnx.load(str(src))
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        if self.opset < _MIN_OPSET:
            raise ValueError(f"per-token int8 needs opset {_MIN_OPSET} or later, the graph has {self.opset}")
        self.matmuls = weighted_matmuls(model)
        self._nodes = list(model.graph.node)
        # Every tensor a variant may use, by name: the graph's own, then the per-token ones.
        self._tensors = {init.name: init for init in model.graph.initializer}
        shared: dict[str, np.ndarray] = {
            "pt_inv127": np.array(1 / 127, np.float32), "pt_eps": np.array(1e-12, np.float32),
            "pt_one": np.array(1.0, np.float32), "pt_zp": np.array(_ZERO_POINT, np.uint8),
            "pt_wzp": np.array(0, np.int8), "pt_start": np.array([0], np.int64),
            "pt_last": np.array([-1], np.int64), "pt_unit": np.array([1], np.int64),
            "pt_axis1": np.array([1], np.int64)}
        self._key = {name: f"pt{i}" for i, name in enumerate(self.matmuls)}
        hessians, tokens = (gptq.input_hessians(model, weighted_inputs(model), calibration, src.parent)
                            if calibration is not None else ({}, 0))
        self.rounding = gptq.settings(hessians, tokens)
        self.weight_elements: dict[str, int] = {}  # MatMul -> K × N, what its int8 GEMM's share of the work is
        for node in self._nodes:
            if node.name in self._key:
                w = numpy_helper.to_array(self._tensors[node.input[1]]).astype(np.float32)
                k = self._key[node.name]
                self.weight_elements[node.name] = int(w.size)
                shared[f"{k}_w"], shared[f"{k}_ws"] = gptq.quantize_rows(w, hessians.get(node.input[0]), WEIGHT_MAX)
                shared[f"pt_rows_{w.shape[0]}"] = np.array([-1, w.shape[0]], np.int64)
        self._tensors |= {name: numpy_helper.from_array(v, name) for name, v in shared.items()}
        self._beside: dict[Path, dict[str, Any]] = {}  # directory -> external-data references
        # Everything but the nodes and initializers, which each variant sets anew.
        self._shell = onnx.ModelProto()
        self._shell.CopyFrom(model)
        del self._shell.graph.node[:]
        del self._shell.graph.initializer[:]
        if not any(o.domain == MS_DOMAIN for o in self._shell.opset_import):
            self._shell.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))

    def write(self, dst: Path, exclude: Sequence[str] = (), *, beside: bool = False) -> int:
        """Write the variant with the MatMuls named in `exclude` in fp32; returns how many are int8.
        With `beside`, its tensors stay in a data file next to `dst` (for trials, not to ship)."""
        import onnx
        from onnx import helper

        targets = set(self.matmuls) - set(exclude)
        rows: dict[str, str] = {}  # input tensor -> the prefix of its quantized form
        nodes: list[Any] = []

        def reduce(op: str, x: str, out: str) -> Any:
            if self.opset >= 18:  # axes became an input
                return helper.make_node(op, [x, "pt_axis1"], [out], keepdims=0)
            return helper.make_node(op, [x], [out], axes=[1], keepdims=0)

        for node in self._nodes:
            if node.name not in targets:
                nodes.append(node)
                continue
            k = self._key[node.name]
            width = self._tensors[f"{k}_w"].dims[0]
            x = node.input[0]
            if x not in rows:
                p = rows[x] = f"ptx{len(rows)}"
                nodes += [
                    helper.make_node("Shape", [x], [f"{p}_shape"]),
                    helper.make_node("Slice", [f"{p}_shape", "pt_start", "pt_last"], [f"{p}_lead"]),
                    helper.make_node("Concat", [f"{p}_lead", "pt_unit"], [f"{p}_scale_shape"], axis=0),
                    helper.make_node("Reshape", [x, f"pt_rows_{width}"], [f"{p}_rows"]),
                    reduce("ReduceMax", f"{p}_rows", f"{p}_hi"),
                    reduce("ReduceMin", f"{p}_rows", f"{p}_lo"),
                    helper.make_node("Neg", [f"{p}_lo"], [f"{p}_neg_lo"]),
                    helper.make_node("Max", [f"{p}_hi", f"{p}_neg_lo"], [f"{p}_max"]),
                    helper.make_node("Mul", [f"{p}_max", "pt_inv127"], [f"{p}_step"]),
                    helper.make_node("Max", [f"{p}_step", "pt_eps"], [f"{p}_scale"]),
                    helper.make_node("Shape", [f"{p}_scale"], [f"{p}_n"]),
                    helper.make_node("Expand", ["pt_zp", f"{p}_n"], [f"{p}_zps"]),
                    helper.make_node("QuantizeLinear", [f"{p}_rows", f"{p}_scale", f"{p}_zps"], [f"{p}_q_rows"],
                                     axis=0),
                    helper.make_node("Reshape", [f"{p}_q_rows", f"{p}_shape"], [f"{p}_q"]),
                    helper.make_node("Reshape", [f"{p}_scale", f"{p}_scale_shape"], [f"{p}_row_scale"]),
                ]
            p = rows[x]
            nodes += [helper.make_node("MatMulIntegerToFloat",
                                       [f"{p}_q", f"{k}_w", "pt_one", f"{k}_ws", "pt_zp", "pt_wzp"],
                                       [f"{k}_y"], domain=MS_DOMAIN, name=f"{node.name}_per_token"),
                      helper.make_node("Mul", [f"{k}_y", f"{p}_row_scale"], [node.output[0]])]
        used = {name for node in nodes for name in node.input}
        tensors = self._references(dst.parent) if beside else self._tensors
        model = onnx.ModelProto()
        model.CopyFrom(self._shell)
        model.graph.node.extend(nodes)
        model.graph.initializer.extend(tensor for name, tensor in tensors.items() if name in used)
        onnx.save(model, str(dst))
        return len(targets)

    def _references(self, directory: Path) -> dict[str, Any]:
        """Every tensor as a reference into one data file in `directory`, written on first use."""
        if directory not in self._beside:
            from onnx import StringStringEntryProto, TensorProto, numpy_helper

            references: dict[str, Any] = {}
            with (directory / TRIAL_DATA).open("wb") as fh:
                for name, tensor in self._tensors.items():
                    raw = numpy_helper.to_array(tensor).tobytes()
                    if len(raw) < 1024:  # scalars and shapes stay inline
                        references[name] = tensor
                        continue
                    where = {"location": TRIAL_DATA, "offset": str(fh.tell()), "length": str(len(raw))}
                    ref = TensorProto(name=name, data_type=tensor.data_type, dims=tensor.dims,
                                      data_location=TensorProto.EXTERNAL,
                                      external_data=[StringStringEntryProto(key=k, value=v) for k, v in where.items()])
                    fh.write(raw)
                    references[name] = ref
            self._beside[directory] = references
        return self._beside[directory]
