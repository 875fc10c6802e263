"""Static int8 (QDQ) with measured exclusions, and the search that picks the int8 a package ships.

Static quantization fixes every activation scale from calibration texts (the training data), so
an int8 score no longer depends on a text's batch-mates, and the runtime skips the per-batch
DynamicQuantizeLinear.  Weights are int8 per output channel, activations uint8 (the u8*s8 VNNI
path of x86).  It works on the plain exported graph: ONNX Runtime fuses the QDQ MatMuls into
integer kernels when the session starts, which the fused graph's Attention op would prevent.

Which MatMuls stay fp32 is measured, not fixed: each group (one kind of MatMul across the layers,
or one layer) is quantized alone and its logit error on the selection texts (the validation split)
ranks it; the most sensitive groups are then kept in fp32 one after another until the rest,
quantized together, holds the gate on those texts.  The parity gate proper still runs on the
held-out test split.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from export import parity
from stream.core.errors import ModelError
from stream.core.scorer import Encoded, create_session, feeds, plan_batches, run_logits

log = logging.getLogger(__name__)

CALIBRATIONS = ("minmax", "entropy", "percentile")
CALIBRATION_BATCH = 16
SPEED_BATCH = 32  # the batch size candidates are timed at
_LAYER = re.compile(r"layers?[._/](\d+)")


@dataclass(frozen=True)
class Scheme:
    """One way to build the int8 variant: dynamic (a named scheme of onnx_export) or static."""

    name: str
    method: str  # "dynamic" | "static"
    calibration: str | None = None
    fp32_groups: tuple[str, ...] = ()  # static: groups of MatMuls kept in fp32

    def settings(self, fp32_nodes: int) -> dict[str, Any]:
        if self.method == "dynamic":
            return {"method": "quantize_dynamic", "weight_type": "QInt8", "per_channel": True,
                    "scheme": self.name, "fp32_nodes": fp32_nodes}
        return {"method": "quantize_static", "format": "QDQ", "weight_type": "QInt8", "activation_type": "QUInt8",
                "per_channel": True, "calibration": self.calibration, "scheme": self.name,
                "fp32_groups": list(self.fp32_groups), "fp32_nodes": fp32_nodes}


class EncodedReader:
    """A CalibrationDataReader over already tokenized texts, in length-bucketed batches."""

    def __init__(self, encoded: Encoded, input_names: Sequence[str], pad_id: int,
                 batch_size: int = CALIBRATION_BATCH) -> None:
        self._batches = [feeds(encoded, group, input_names, pad_id)
                         for group in plan_batches(encoded.lengths(), batch_size, 1 << 30, bucketing=True)]
        self._next = iter(self._batches)

    def get_next(self) -> dict[str, Any] | None:
        return next(self._next, None)

    def __len__(self) -> int:
        return len(self._batches)


def matmul_groups(model_path: Path) -> dict[str, list[str]]:
    """The MatMuls of the graph by kind ("kind:<name pattern>", the same MatMul in every layer) and
    by layer ("layer:<n>"); MatMuls outside the layers form kinds of their own."""
    import onnx

    groups: dict[str, list[str]] = {}
    for node in onnx.load(str(model_path), load_external_data=False).graph.node:
        if node.op_type != "MatMul" or not node.name:
            continue
        layer = _LAYER.search(node.name)
        kind = _LAYER.sub(lambda m: m.group(0)[: -len(m.group(1))] + "*", node.name)
        groups.setdefault(f"kind:{kind}", []).append(node.name)
        if layer:
            groups.setdefault(f"layer:{int(layer.group(1))}", []).append(node.name)
    return groups


@contextmanager
def _quiet_root() -> Iterator[None]:
    """The quantizer logs advice per tensor on the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


def calibrate(src: Path, cache: Path, calibration: str, reader: EncodedReader) -> None:
    """Activation ranges of `src` on the reader's texts, saved to `cache` for every later build."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    methods = _METHODS()
    if calibration not in methods:
        raise ModelError(f"unknown calibration {calibration!r}", hint=f"one of {', '.join(CALIBRATIONS)}")
    scratch = cache.with_suffix(".calibrated.onnx")
    with _quiet_root():
        quantize_static(str(src), str(scratch), reader, quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul"],
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=methods[calibration], calibration_cache_path=cache,
                        extra_options=_static_options())
    scratch.unlink(missing_ok=True)


def _METHODS() -> dict[str, Any]:  # noqa: N802 (a constant that imports onnxruntime lazily)
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}


def _static_options() -> dict[str, Any]:
    # Weight-free MatMuls (QKᵀ, attention·V) are quantized too; their activations are what the
    # sensitivity search tends to find.
    return {"DefaultTensorType": 1, "CalibMovingAverage": False}


def quantize_static_int8(src: Path, dst: Path, cache: Path, scheme: Scheme, groups: dict[str, list[str]],
                         exclude: set[str] | None = None) -> dict[str, Any]:
    """Static QDQ int8 of `src` from the ranges in `cache`, the scheme's groups (or `exclude`) in fp32."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    if exclude is None:
        exclude = {name for g in scheme.fp32_groups for name in groups.get(g, [])}
    with _quiet_root():
        quantize_static(str(src), str(dst), None, quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul"],
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=sorted(exclude), calibrate_method=_METHODS()[scheme.calibration or "minmax"],
                        calibration_cache_path=cache, extra_options=_static_options())
    return scheme.settings(len(exclude))


def logit_error(ref: parity.Reference, logits: np.ndarray) -> dict[str, Any]:
    """parity.compare plus the mean abs logit error (a finer ranking than label agreement)."""
    return parity.compare(ref, logits) | {"mean_abs_diff": float(np.abs(logits - ref.logits).mean())}


def evaluate(model: Path, ref: parity.Reference, pad_id: int) -> dict[str, Any]:
    session, _ = create_session(model, "cpu")
    return logit_error(ref, run_logits(session, ref.encoded, pad_id))


def passes(result: dict[str, Any], fp32_accuracy: float | None) -> bool:
    return not parity.judge("int8", result, fp32_accuracy)


@dataclass
class Search:
    """What the sensitivity search measured, for the manifest."""

    calibrations: dict[str, dict[str, Any]] = field(default_factory=dict)
    sensitivity: dict[str, dict[str, Any]] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)
    chosen: Scheme | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"calibrations": self.calibrations, "sensitivity": self.sensitivity, "steps": self.steps,
                "chosen": self.chosen.name if self.chosen else None, "seconds": round(self.seconds, 1)}


def search_static(plain: Path, work: Path, calibration_reader: Any, selection: parity.Reference, pad_id: int,
                  fp32_accuracy: float | None, calibrations: Sequence[str] = CALIBRATIONS) -> tuple[Search, list[Scheme]]:
    """Static schemes to try, best first: each calibration with every MatMul int8, then the best
    calibration with the most sensitive groups kept in fp32 until the selection texts pass."""
    started = time.perf_counter()
    found = Search()
    groups = matmul_groups(plain)
    if not groups:
        raise ModelError(f"{plain.name} has no named MatMul to quantize")
    trial = work / "trial.onnx"
    for calibration in calibrations:
        calibrate(plain, work / f"ranges-{calibration}.json", calibration, calibration_reader())
        quantize_static_int8(plain, trial, work / f"ranges-{calibration}.json",
                             Scheme("probe", "static", calibration), groups)
        found.calibrations[calibration] = _brief(evaluate(trial, selection, pad_id))
        log.info("int8 static %s, every MatMul: %s", calibration, found.calibrations[calibration])
    best = min(found.calibrations, key=lambda c: (-found.calibrations[c]["label_agreement"],
                                                  found.calibrations[c]["mean_abs_diff"]))
    schemes = [Scheme(f"static_{c}", "static", c) for c in sorted(
        found.calibrations, key=lambda c: found.calibrations[c]["mean_abs_diff"])]
    cache = work / f"ranges-{best}.json"
    if not passes(found.calibrations[best], fp32_accuracy):
        every = {name for nodes in groups.values() for name in nodes}
        for group, nodes in groups.items():
            quantize_static_int8(plain, trial, cache, Scheme("probe", "static", best), groups, every - set(nodes))
            found.sensitivity[group] = _brief(evaluate(trial, selection, pad_id))
        ranked = sorted(found.sensitivity, key=lambda g: -found.sensitivity[g]["mean_abs_diff"])
        kept: list[str] = []
        for group in ranked:
            kept.append(group)
            scheme = Scheme(f"static_{best}_sensitive_fp32", "static", best, tuple(kept))
            quantize_static_int8(plain, trial, cache, scheme, groups)
            result = _brief(evaluate(trial, selection, pad_id))
            found.steps.append({"fp32_groups": list(kept)} | result)
            log.info("int8 static %s with %s in fp32: %s", best, kept, result)
            if passes(result, fp32_accuracy):
                found.chosen = scheme
                schemes.insert(0, scheme)
                break
    trial.unlink(missing_ok=True)
    found.seconds = time.perf_counter() - started
    return found, schemes


def _brief(result: dict[str, Any]) -> dict[str, Any]:
    return {k: result[k] for k in ("label_agreement", "accuracy", "mean_abs_diff", "max_abs_diff")}


def items_per_cpu_second(model: Path, encoded: Encoded, pad_id: int, batch_size: int = SPEED_BATCH,
                         passes_: int = 2) -> dict[str, float]:
    """Throughput of `model` on the texts at `batch_size` (input order, as the bench's engine cases),
    best of `passes_`: wall items/s and items per CPU-second of this process (fair on a shared host)."""
    session, _ = create_session(model, "cpu", spin=False)
    run_logits(session, encoded, pad_id, bucketing=False, batch_size=batch_size)  # warm-up
    best: dict[str, float] = {}
    for _ in range(max(passes_, 1)):
        wall, cpu = time.perf_counter(), time.process_time()
        run_logits(session, encoded, pad_id, bucketing=False, batch_size=batch_size, token_budget=1 << 30)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        n = len(encoded.ids)
        if not best or n / cpu > best["items_per_cpu_s"]:
            best = {"items_per_s": round(n / wall, 2), "items_per_cpu_s": round(n / max(cpu, 1e-9), 2)}
    return best
