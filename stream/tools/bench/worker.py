"""One bench case in its own process: `python -m stream.tools.bench.worker SPEC.json RESULT.json`.

The parent writes the spec (the case, the texts file, the model files, threads); this process
times the case and writes its figures, its peak RSS and the labels it predicted.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from stream.tools.bench.cases import Case, Timing, time_calls


def peak_rss_mb() -> float:
    """This process's peak resident set.  VmHWM, not ru_maxrss: Linux carries ru_maxrss over
    exec, so a worker would report its (larger) parent's peak."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def open_scorer(spec: dict[str, Any], case: Case) -> Any:
    """The package's own variant through `OnnxScorer.open`, or a bench-built file in a session of
    the same kind, wrapped in the same scorer class (same tokenizer, padding, bucketing)."""
    from stream.core.manifest import read_manifest
    from stream.core.scorer import OnnxScorer, create_session, load_tokenizer

    package = Path(spec["package"])
    budget = case.token_budget or case.batch_size * int(spec["max_length"])
    threads, runs = spec["onnx_plan"]  # the case's (BenchOptions.onnx_plan)
    if spec["origin"] == "package":
        return OnnxScorer.open(package, device=spec["device"], variant=case.variant, intra_op_threads=threads,
                               parallel_runs=runs, allow_unchecked=True, bucketing=case.bucketing,
                               batch_size=case.batch_size, token_budget=budget, spin=spec["spin"])
    manifest = read_manifest(package)
    session, provider = create_session(Path(spec["variant_file"]), spec["device"], threads, spin=spec["spin"])
    tokenizer = load_tokenizer(package / "tokenizer.json", manifest.max_length)
    return OnnxScorer(manifest, session, tokenizer, variant=case.variant, provider=provider,
                      bucketing=case.bucketing, batch_size=case.batch_size, token_budget=budget, runs=runs)


def primary_head(heads: Mapping[str, Sequence[str]]) -> str:
    """The head whose labels a case reports (and compares with torch's): sentiment where there is
    one, else the first."""
    return "sentiment" if "sentiment" in heads else next(iter(heads))


def analysis_labels(scorer: Any, only_head: bool = False) -> Callable[[list[str]], list[str]]:
    """The scorer's full analysis (every head, one pass), reduced to the primary head's labels; with
    `only_head`, the graph run for that head's output alone (a single classifier's work)."""
    head = primary_head(scorer.heads)
    if not only_head:
        return lambda texts: [a.predictions[head].label for a in scorer.analyze(texts)]
    output, labels = str(scorer.manifest.heads[head]["output"]), scorer.heads[head]

    def one_head(texts: list[str]) -> list[str]:
        return [labels[int(k)] for k in scorer.outputs(texts, [output])[output].argmax(axis=-1)]

    return one_head


def padding(scorer: Any, texts: list[str], case: Case) -> dict[str, Any]:
    """Real tokens over padded tokens for this case's chunks and sub-batches (not timed)."""
    from stream.core.scorer import plan_batches
    from stream.tools.bench.cases import chunks

    real = padded = 0
    lengths: list[int] = []
    for part in chunks(texts, case.chunk):
        part_lengths = scorer.encode(part).lengths()
        lengths += part_lengths
        for group in plan_batches(part_lengths, scorer.batch_size, scorer.token_budget, scorer.bucketing,
                                  at_least=scorer.runs):
            real += sum(part_lengths[i] for i in group)
            padded += len(group) * max(part_lengths[i] for i in group)
    return {"tokens_mean": sum(lengths) / max(len(lengths), 1), "padding_efficiency": real / max(padded, 1),
            "token_counts": lengths}


def run_onnx(spec: dict[str, Any], case: Case, texts: list[str]) -> dict[str, Any]:
    started = time.perf_counter()
    scorer = open_scorer(spec, case)
    loaded = {"load_s": round(time.perf_counter() - started, 3), "rss_after_load_mb": round(peak_rss_mb(), 1)}
    timing = time_calls(analysis_labels(scorer, bool(spec.get("only_head"))), texts, case.chunk, spec["warmup"],
                        spec["passes"])
    return (result(timing) | {"provider": scorer.provider, "heads": list(scorer.heads)} | loaded
            | padding(scorer, texts, case))


def run_torch(spec: dict[str, Any], case: Case, texts: list[str]) -> dict[str, Any]:
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.set_num_threads(spec["threads"])
    torch.set_num_interop_threads(1)  # as ORT's inter_op_num_threads
    dtype = torch.float16 if case.variant == "fp16" else torch.float32
    timing = time_calls(torch_labels(spec, case, dtype), texts, case.chunk, spec["warmup"], spec["passes"])
    return result(timing) | {"provider": f"torch {torch.__version__} {spec['device']}",
                             "torch_threads": torch.get_num_threads()}


def torch_labels(spec: dict[str, Any], case: Case, dtype: Any) -> Callable[[list[str]], list[str]]:
    """The checkpoint as a transformers user runs it: a classifier through `pipeline`; a multi-head
    checkpoint (which `pipeline` cannot load) in eager torch the way the pipeline runs a model:
    its own tokenizer, `batch_size` texts per forward padded to the longest, every head computed,
    the primary head's labels returned."""
    import torch
    from transformers import AutoTokenizer, pipeline

    from models import multihead

    path, device, max_length = Path(spec["checkpoint"]), spec["device"], int(spec["max_length"])
    if not multihead.is_multihead(path):
        pipe = pipeline("text-classification", model=str(path), device=device, dtype=dtype)
        options = {"batch_size": case.batch_size, "truncation": True, "max_length": max_length}
        return lambda part: [r["label"] for r in pipe(part, **options)]
    model = multihead.load(path).to(device=device, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    head = primary_head({h.name: h.labels for h in model.config.heads if h.kind == multihead.SEQUENCE})
    labels = model.config.head(head).labels

    def score(part: list[str]) -> list[str]:
        found: list[str] = []
        for i in range(0, len(part), case.batch_size):
            batch = tokenizer(part[i : i + case.batch_size], padding=True, truncation=True, max_length=max_length,
                              return_tensors="pt").to(device)
            with torch.inference_mode():
                out = model(batch["input_ids"], batch["attention_mask"])
            found += [labels[k] for k in out[head].argmax(dim=-1).tolist()]
        return found

    return score


def result(timing: Timing) -> dict[str, Any]:
    return timing.summary() | {"labels": timing.labels, "peak_rss_mb": round(peak_rss_mb(), 1)}


def main(argv: list[str]) -> int:
    spec_path, result_path = Path(argv[0]), Path(argv[1])
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    case = Case(**spec["case"])
    texts = json.loads(Path(spec["texts_path"]).read_text(encoding="utf-8"))
    try:
        if case.engine == "torch":
            out = run_torch(spec, case, texts)
        elif case.engine == "onnx":
            out = run_onnx(spec, case, texts)
        elif case.engine == "stories":
            from stream.tools.bench.stories import run_stories

            out = run_stories(spec, case, texts)
        else:
            from stream.tools.bench.e2e import run_e2e

            out = run_e2e(spec, case, texts)
    except Exception as exc:
        out = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=8)}
    out["case"] = asdict(case)
    out["pid"] = os.getpid()
    result_path.write_text(json.dumps(out, ensure_ascii=False), encoding="utf-8")
    return 0 if "error" not in out else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
