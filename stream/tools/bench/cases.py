"""The cases of one bench run and how each is timed.

Every case runs in its own Python process (`python -m stream.tools.bench.worker`), so the peak RSS
it reports (`ru_maxrss`) is its own and no case inherits another's warm caches or thread pools.
A case scores the same texts in fixed-size chunks: the chunk is what one call gets (one pipeline
call for torch, one `score()` for the ONNX scorer) and its wall time is one batch latency.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_MICRO_BATCH = 256  # the consumer's batch.max_items default: what one pipeline turn scores


@dataclass(frozen=True)
class Case:
    name: str
    group: str  # "engines" | "bucketing" | "heads" | "trim" | "e2e" | "stories"
    engine: str  # "torch" | "onnx" | "e2e" | "stories"
    variant: str  # torch: "fp32" | "fp16"; onnx: the ONNX variant
    batch_size: int  # texts per model run (the scorer's sub-batch for onnx, the pipeline's for torch)
    chunk: int  # texts per call
    bucketing: bool = True
    # Tokens per ONNX sub-batch; 0: batch_size × max_length, so a batch is run whole, as torch runs it.
    token_budget: int = 0
    # "package" | "baseline": the single classifier of the "heads" group | "one-head": without a
    # baseline package, the package's own graph asked for its first sequence head's output alone
    # (the encoder and one linear layer: what a single classifier on the same base computes) |
    # "untrimmed": the package's checkpoint exported with its full vocabulary (the "trim" group).
    subject: str = "package"
    runs: int = 0  # ONNX sub-batches at once; 0: as the consumer runs them (the bench's plan)


def plan(
    device: str,
    batch_sizes: Sequence[int],
    *,
    torch_cases: bool,
    e2e: bool,
    heads_variant: str | None = None,
    baseline: bool = True,
    untrimmed: bool = False,
    micro_batch: int = DEFAULT_MICRO_BATCH,
) -> list[Case]:
    """The engines at each batch size (torch, ONNX fp32, ONNX int8 on CPU or fp16 on CUDA), the
    scorer with and without bucketing, a multi-head package's full analysis against a single
    classifier (with `heads_variant`), a trimmed package against its full vocabulary (with
    `untrimmed`), and the consumer end to end against raw ONNX Runtime."""
    from stream.core.scorer import DEFAULT_BATCH_SIZE, DEFAULT_TOKEN_BUDGET

    reduced = "fp16" if device == "cuda" else "int8"
    torch_dtype = "fp16" if device == "cuda" else "fp32"
    cases: list[Case] = []
    for b in batch_sizes:
        if torch_cases:
            cases.append(Case(f"torch-{torch_dtype} b{b}", "engines", "torch", torch_dtype, b, b))
        cases.append(Case(f"onnx-fp32 b{b}", "engines", "onnx", "fp32", b, b))
        cases.append(Case(f"onnx-{reduced} b{b}", "engines", "onnx", reduced, b, b))
    if device == "cpu":
        # One session run at a time on every thread, as the scorer ran before parallel runs
        # (scorer.run_plan): the engines' cases at the middle batch size against it.
        sub = _middle(batch_sizes)
        for variant in ("fp32", reduced):
            cases.append(Case(f"onnx-{variant} b{sub} one-run", "runs", "onnx", variant, sub, sub, runs=1))
    # Bucketing sorts a call's texts by length before cutting sub-batches, so it needs a call of
    # several sub-batches: the consumer's micro-batch (or 8 sub-batches, if more) cut into
    # sub-batches of the middle batch size.
    sub = _middle(batch_sizes)
    chunk = max(micro_batch, 8 * sub)
    for on in (True, False):
        cases.append(Case(f"bucketing-{'on' if on else 'off'} b{sub}", "bucketing", "onnx", reduced, sub, chunk,
                          bucketing=on, token_budget=DEFAULT_TOKEN_BUDGET))
    if heads_variant:
        # Both packages as the consumer runs them: one analyze() per micro-batch, bucketed.
        single = ("single-classifier", "baseline") if baseline else ("one-head-same-graph", "one-head")
        for name, subject in (("analysis-all-heads", "package"), single):
            cases.append(Case(f"{name} b{DEFAULT_BATCH_SIZE}", "heads", "onnx", heads_variant, DEFAULT_BATCH_SIZE,
                              micro_batch, token_budget=DEFAULT_TOKEN_BUDGET, subject=subject))
    if untrimmed:
        # fp32 both: the vocabulary is the difference (an untrimmed int8 would be another scheme).
        sub = _middle(batch_sizes)
        for name, subject in (("trimmed", "package"), ("untrimmed", "untrimmed")):
            cases.append(Case(f"{name}-fp32 b{sub}", "trim", "onnx", "fp32", sub, sub, subject=subject))
    if e2e:
        # The consumer as deployed: micro-batches of batch.max_items, the scorer's default sub-batch.
        cases.append(Case(f"e2e b{micro_batch}", "e2e", "e2e", reduced, DEFAULT_BATCH_SIZE, micro_batch,
                          token_budget=DEFAULT_TOKEN_BUDGET))
        # The same with the stories job beside it, and alone again (stream.tools.bench.stories).
        cases.append(Case(f"e2e+stories b{micro_batch}", "stories", "stories", reduced, DEFAULT_BATCH_SIZE,
                          micro_batch, token_budget=DEFAULT_TOKEN_BUDGET))
    return cases


def _middle(batch_sizes: Sequence[int]) -> int:
    """32 when asked for, else the middle of the list: big enough to batch, small enough to bucket."""
    ordered = sorted(batch_sizes)
    return 32 if 32 in ordered else ordered[len(ordered) // 2]


@dataclass(frozen=True)
class Timing:
    items: int
    seconds: float
    latencies: list[float]  # seconds per call
    labels: list[str]
    cpu_seconds: float  # process CPU time (all threads) while timed
    passes: tuple[float, ...] = ()  # items/s of every pass, when there were several

    def summary(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies) * 1000 if self.latencies else np.zeros(1)
        return {
            "items": self.items,
            "seconds": round(self.seconds, 4),
            "items_per_s": self.items / self.seconds if self.seconds > 0 else 0.0,
            "calls": len(self.latencies),
            "cpu_seconds": round(self.cpu_seconds, 3),
            "latency_ms": percentiles_ms(lat),
        } | ({"passes_items_per_s": [round(p, 2) for p in self.passes]} if len(self.passes) > 1 else {})


def percentiles_ms(values_ms: np.ndarray | list[float]) -> dict[str, float]:
    return {q: round(float(np.percentile(values_ms, p)), 3) for q, p in (("p50", 50), ("p95", 95), ("p99", 99))}


def chunks(texts: Sequence[str], size: int) -> list[list[str]]:
    return [list(texts[i : i + size]) for i in range(0, len(texts), size)]


def time_calls(score: Callable[[list[str]], list[str]], texts: Sequence[str], chunk: int, warmup: int,
               passes: int = 1) -> Timing:
    """Warm up on the first chunks (at least `warmup` texts, at least one call), then time every
    chunk of the texts in order, `passes` times; the fastest pass counts (as timeit's best of
    several: a pass slowed by a neighbour on a shared host says little about the engine)."""
    parts = chunks(texts, chunk)
    for part in parts[: max(1, -(-warmup // chunk))]:
        score(part)
    timings = []
    for _ in range(max(1, passes)):
        labels: list[str] = []
        latencies: list[float] = []
        started, cpu_started = time.perf_counter(), time.process_time()
        for part in parts:
            t0 = time.perf_counter()
            labels += score(part)
            latencies.append(time.perf_counter() - t0)
        timings.append(Timing(len(texts), time.perf_counter() - started, latencies, labels,
                              time.process_time() - cpu_started))
    best = min(timings, key=lambda t: t.seconds)
    rates = tuple(t.items / t.seconds if t.seconds > 0 else 0.0 for t in timings)
    return Timing(best.items, best.seconds, best.latencies, timings[0].labels, best.cpu_seconds, rates)
