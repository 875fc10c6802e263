"""int8 schemes and the measured search that picks the one a package ships.

Three families:

* dynamic (`quantize_dynamic` on the shipped fp32 graph, the fused or the plain one, whichever the
  export timed faster; per-channel int8 weights): each batch sets its activation scales, so a
  text's scores move a little with its batch-mates;
* per_token (`export.per_token` on the plain graph): each token row sets its own activation scale
  at run time, so outsized tokens no longer coarsen the others and scores do not depend on
  batch-mates; its weights are rounded by GPTQ on the calibration texts (`export.gptq`);
* static QDQ (`quantize_static` on the plain graph, per-channel int8 weights, uint8 activations,
  the u8*s8 VNNI path of x86): activation scales fixed by calibration on training texts (MinMax,
  Entropy or Percentile), so scores do not depend on batch-mates and no per-batch quantization
  runs.  ONNX Runtime fuses the QDQ MatMuls into integer kernels when the session starts; the fused
  graph's Attention op would keep its projections out of QDQ, hence the plain graph.

Which nodes stay fp32 is measured, not fixed: the nodes are grouped by kind (the same node in
every layer: query, key, ..., FFN output; Attention; the embedding) and by layer; each group is
quantized alone and ranked by its mean logit error on the selection texts (the validation split;
at most RANK_TEXTS of them, evenly spread);
the groups with the most error for what they cost (per-token: a node's weight elements, the
share of the int8 work it gives up) then go back to fp32 one after another until the rest,
quantized together, holds the gate on the selection texts.  Every such step is a candidate for the parity
gate proper, which runs on the held-out test split.  On a multi-head graph every judgement is by
every head (a scheme holds only if each head does) and the ranking is by the worst head's mean
logit error.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from export import parity, per_token
from stream.core.errors import ModelError
from stream.core.host import usable_cpus
from stream.core.manifest import INT8_WEIGHT_BITS
from stream.core.scorer import Encoded, create_session, feeds, plan_batches, run_outputs

log = logging.getLogger(__name__)

CALIBRATIONS = ("minmax", "entropy", "percentile")
PER_TOKEN = "per_token"
FAMILIES = ("dynamic", PER_TOKEN, *(f"static_{c}" for c in CALIBRATIONS))
CALIBRATION_BATCH = 16
# The per-group ranking runs on at most this many selection texts, per-node groups make it the
# search's cost; 64 ranked the demo package's nodes so that twice as many went back to fp32.
RANK_TEXTS = 150
SPEED_BATCH = 32  # candidates are timed at this batch size, in input order (as the bench's engine cases)
DYNAMIC_OPS = ("MatMul", "Attention", "EmbedLayerNormalization")
STATIC_OPS = ("MatMul",)
_DIGITS = re.compile(r"\d+")


@dataclass(frozen=True)
class Scheme:
    """One int8 build: a family and the node groups it keeps in fp32."""

    family: str  # one of FAMILIES
    fp32_groups: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.family + (f"+{len(self.fp32_groups)}_fp32_groups" if self.fp32_groups else "")

    @property
    def calibration(self) -> str | None:
        return self.family.removeprefix("static_") if self.family.startswith("static_") else None

    def settings(self, fp32_nodes: Sequence[str]) -> dict[str, Any]:
        # 7-bit weights in every family: see per_token.WEIGHT_MAX for why.
        common = {"scheme": self.name, "family": self.family, "weight_type": "QInt8", "weight_bits": INT8_WEIGHT_BITS,
                  "per_channel": True,
                  "fp32_groups": list(self.fp32_groups), "fp32_nodes": len(fp32_nodes)}
        if self.family == PER_TOKEN:
            return {"method": "per_token_dynamic", "activation_type": "QUInt8, one symmetric scale per token"} | common
        if self.calibration is None:
            return {"method": "quantize_dynamic"} | common
        return {"method": "quantize_static", "format": "QDQ", "activation_type": "QUInt8",
                "calibration": self.calibration} | common


class EncodedReader:
    """A CalibrationDataReader over tokenized texts.  The histogram calibrators stack the batches'
    outputs, so every batch has the same shape: `batch_size` texts (a short last batch is dropped
    when there are others) padded to the longest calibration text."""

    def __init__(self, encoded: Encoded, input_names: Sequence[str], pad_id: int,
                 batch_size: int = CALIBRATION_BATCH) -> None:
        groups = plan_batches(encoded.lengths(), batch_size, 1 << 30, bucketing=False)
        if len(groups) > 1 and len(groups[-1]) < batch_size:
            groups.pop()
        width = max(encoded.lengths(), default=1)
        self._batches = [{name: np.pad(array, ((0, 0), (0, width - array.shape[1])),
                                       constant_values=pad_id if name == "input_ids" else 0)
                          for name, array in feeds(encoded, group, input_names, pad_id).items()}
                         for group in groups]
        self._next = iter(self._batches)

    def get_next(self) -> dict[str, Any] | None:
        return next(self._next, None)

    def __len__(self) -> int:
        return len(self._batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        """The calibrator collects batch by batch (`CalibStridedMinMax`), holding one batch's
        activations at a time instead of all of them."""
        self._next = iter(self._batches[start_index:end_index])


def node_groups(model_path: Path, op_types: Sequence[str]) -> dict[str, list[str]]:
    """The quantizable nodes by kind ("kind:<op>:<name, digits as *>") and by layer ("layer:<k>":
    the k-th node of every kind that repeats, in graph order, which is layer order)."""
    import onnx

    kinds: dict[str, list[str]] = {}
    for node in onnx.load(str(model_path), load_external_data=False).graph.node:
        if node.op_type in op_types and node.name:
            kinds.setdefault(f"kind:{node.op_type}:{_DIGITS.sub('*', node.name)}", []).append(node.name)
    groups = dict(kinds)
    for names in kinds.values():
        if len(names) > 1:
            for k, name in enumerate(names):
                groups.setdefault(f"layer:{k}", []).append(name)
    return groups


@contextmanager
def _quiet_root() -> Iterator[None]:
    """The quantizer logs advice per tensor on the root logger and its calibrators print progress."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def _methods() -> dict[str, Any]:
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}


def quantize_dynamic_int8(src: Path, dst: Path, exclude: Sequence[str] = ()) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet_root():
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
                         op_types_to_quantize=list(DYNAMIC_OPS), nodes_to_exclude=list(exclude),
                         # Fused contrib ops (Attention, SkipLayerNorm) defeat shape inference; outputs are fp32.
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})


def quantize_static_int8(src: Path, dst: Path, calibration: str, cache: Path, exclude: Sequence[str] = (),
                         reader: EncodedReader | None = None) -> None:
    """Static QDQ int8; the activation ranges come from `cache`, computed with `reader` if absent."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    if calibration not in CALIBRATIONS:
        raise ModelError(f"unknown calibration {calibration!r}", hint=f"one of {', '.join(CALIBRATIONS)}")
    with _quiet_root():
        quantize_static(str(src), str(dst), reader, quant_format=QuantFormat.QDQ, op_types_to_quantize=list(STATIC_OPS),
                        per_channel=True, reduce_range=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, nodes_to_exclude=list(exclude),
                        calibrate_method=_methods()[calibration],
                        calibration_cache_path=cache,
                        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "CalibStridedMinMax": 1})


@dataclass
class Builder:
    """Builds any scheme of the families from the shipped fp32 graph (dynamic) and the plain graph (static)."""

    fp32: Path
    plain: Path
    work: Path
    calibration_reader: Callable[[], EncodedReader]
    _groups: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    @functools.cached_property
    def per_token(self) -> per_token.PerTokenInt8:
        """The plain graph, loaded and its weights quantized once (rounded by GPTQ on the
        calibration texts) for every per-token trial."""
        reader = self.calibration_reader()
        return per_token.PerTokenInt8(self.plain, iter(reader.get_next, None))

    def groups(self, family: str) -> dict[str, list[str]]:
        """The family's node groups; per-token int8 puts nodes back one by one ("node:<name>"): its
        error is spread thin over the layers, so whole kinds or layers would give back most of its speed."""
        key = family if family in ("dynamic", PER_TOKEN) else "static"
        if key not in self._groups:
            if key == PER_TOKEN:
                self._groups[key] = {f"node:{name}": [name] for name in self.per_token.matmuls}
            else:
                self._groups[key] = node_groups(self.fp32 if key == "dynamic" else self.plain,
                                                DYNAMIC_OPS if key == "dynamic" else STATIC_OPS)
        return self._groups[key]

    def cost(self, family: str, group: str) -> float:
        """What putting `group` back into fp32 gives up, for ordering the search: a per-token node's
        weight elements (its GEMM's work is in proportion to them: the FFN's are 4 times a
        projection's); every kind or layer group of the other families counts as one."""
        if family != PER_TOKEN:
            return 1.0
        return float(sum(self.per_token.weight_elements[name] for name in self.groups(family)[group]))

    def build(self, scheme: Scheme, dst: Path, exclude: set[str] | None = None, *, trial: bool = False
              ) -> dict[str, Any]:
        """Write the scheme's int8 graph to `dst`; `exclude` overrides the scheme's fp32 groups.  A
        `trial` graph is only evaluated here: it may keep its tensors in a file beside it."""
        groups = self.groups(scheme.family)
        if exclude is None:
            exclude = {name for g in scheme.fp32_groups for name in groups.get(g, [])}
        if scheme.family == PER_TOKEN:
            self.per_token.write(dst, sorted(exclude), beside=trial)
            return scheme.settings(sorted(exclude)) | self.per_token.rounding
        elif scheme.calibration is None:
            quantize_dynamic_int8(self.fp32, dst, sorted(exclude))
        else:
            cache = self.work / f"ranges-{scheme.calibration}.json"
            reader = None if cache.is_file() else self.calibration_reader()
            quantize_static_int8(self.plain, dst, scheme.calibration, cache, sorted(exclude), reader)
        return scheme.settings(sorted(exclude))


def logit_error(ref: parity.Reference, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """parity.compare with the mean abs logit error, a finer ranking than label agreement (of a
    multi-head graph: its worst head's, with every head's figures under `heads`)."""
    result = parity.compare(ref, outputs)
    if "heads" in result:
        return result
    return {k: result[k] for k in ("label_agreement", "accuracy", "mean_abs_diff", "max_abs_diff")}


def evaluate(model: Path, ref: parity.Reference, pad_id: int, threads: int = 0) -> dict[str, Any]:
    session, _ = create_session(model, "cpu", threads, spin=False)
    return logit_error(ref, run_outputs(session, ref.encoded, pad_id, ref.names))


def rank_groups(builder: Builder, family: str, ranking: parity.Reference, pad_id: int,
                workers: int | None = None) -> dict[str, dict[str, Any]]:
    """Each of the family's groups quantized alone, judged on `ranking`.  The trials run `workers`
    at a time (the usable CPUs), one thread each: a small graph on short texts keeps two threads of
    one session less busy than two sessions of one thread (ONNX Runtime releases the GIL in a run),
    and the next trial is built while the others run."""
    groups = builder.groups(family)
    every = {name for nodes in groups.values() for name in nodes}
    workers = max(1, min(workers or usable_cpus(), len(groups)))

    def run(path: Path) -> dict[str, Any]:
        try:
            return evaluate(path, ranking, pad_id, threads=1 if workers > 1 else 0)
        finally:
            path.unlink(missing_ok=True)

    with ThreadPoolExecutor(workers) as pool:
        pending: dict[str, Future[dict[str, Any]]] = {}
        for k, (group, nodes) in enumerate(groups.items()):
            # At most one built trial waits per worker: a dynamic or static trial is a whole model on disk.
            wait([f for f in pending.values() if not f.done()][:-workers])
            path = builder.work / f"rank-{k}.onnx"
            builder.build(Scheme(family), path, exclude=every - set(nodes), trial=True)
            pending[group] = pool.submit(run, path)
        return {group: future.result() for group, future in pending.items()}


def holds(result: dict[str, Any], fp32_accuracy: parity.Accuracy) -> bool:
    """The scheme passes the int8 gate on every head."""
    return not parity.judge("int8", result, fp32_accuracy)


@dataclass
class Search:
    """What the search measured on the selection texts, for the manifest."""

    family: str
    every_node: dict[str, Any] = field(default_factory=dict)  # all groups quantized
    sensitivity: dict[str, dict[str, Any]] = field(default_factory=dict)  # one group alone
    ranked_on: int = 0  # selection texts the sensitivity ran on
    ranked_by: str = ""  # what orders the groups that go back to fp32
    steps: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"family": self.family, "every_node": self.every_node, "sensitivity": self.sensitivity,
                "ranked_on": self.ranked_on, "ranked_by": self.ranked_by, "steps": self.steps,
                "seconds": round(self.seconds, 1)}


def probe(builder: Builder, family: str, selection: parity.Reference, pad_id: int) -> Search:
    """The family with every node quantized, on the selection texts."""
    started = time.perf_counter()
    trial = builder.work / "trial.onnx"
    builder.build(Scheme(family), trial, trial=True)
    return Search(family, evaluate(trial, selection, pad_id), seconds=time.perf_counter() - started)


def sensitive_schemes(builder: Builder, found: Search, selection: parity.Reference, pad_id: int,
                      fp32_accuracy: parity.Accuracy) -> Iterator[Scheme]:
    """Rank the family's groups by the error each causes alone, for what it costs (`Builder.cost`),
    then yield, after each further group put back into fp32 (the most error per cost first), the
    schemes that hold the gate on the selection texts (the ranking on RANK_TEXTS of them, evenly
    spread)."""
    started = time.perf_counter()
    trial = builder.work / "trial.onnx"
    ranking = selection.sample(RANK_TEXTS)
    found.ranked_on = len(ranking.encoded.ids)
    found.sensitivity = rank_groups(builder, found.family, ranking, pad_id)
    found.ranked_by = "mean logit error" + (" per weight element" if found.family == PER_TOKEN else "")
    ranked = sorted(found.sensitivity,
                    key=lambda g: -found.sensitivity[g]["mean_abs_diff"] / builder.cost(found.family, g))
    for n in range(1, len(ranked)):
        scheme = Scheme(found.family, tuple(ranked[:n]))
        builder.build(scheme, trial, trial=True)
        result = evaluate(trial, selection, pad_id)
        found.steps.append({"fp32_groups": list(scheme.fp32_groups)} | result)
        found.seconds += time.perf_counter() - started
        started = time.perf_counter()
        log.info("int8 %s: %s", scheme.name, result)
        if holds(result, fp32_accuracy):
            yield scheme


def items_per_cpu_second(model: Path, encoded: Encoded, pad_id: int, batch_size: int = SPEED_BATCH,
                         passes: int = 2) -> dict[str, float]:
    """Throughput at `batch_size`, input order, one sub-batch per batch, best of `passes`: wall
    items/s and items per CPU-second of this process (the fair figure on a shared host)."""
    session, _ = create_session(model, "cpu", spin=False)
    names = [o.name for o in session.get_outputs()]
    run_outputs(session, encoded, pad_id, names, bucketing=False, batch_size=batch_size, token_budget=1 << 30)
    best: dict[str, float] = {}
    for _ in range(max(passes, 1)):
        wall, cpu = time.perf_counter(), time.process_time()
        run_outputs(session, encoded, pad_id, names, bucketing=False, batch_size=batch_size, token_budget=1 << 30)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        n = len(encoded.ids)
        if not best or n / max(cpu, 1e-9) > best["items_per_cpu_s"]:
            best = {"items_per_s": round(n / max(wall, 1e-9), 2), "items_per_cpu_s": round(n / max(cpu, 1e-9), 2)}
    return best
