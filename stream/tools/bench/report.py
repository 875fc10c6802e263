"""The bench report: per-case figures, the headline ratios, the host, a table for the terminal."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
from collections.abc import Sequence
from typing import Any

from stream.core.host import usable_cpus
from stream.tools.bench import gpu
from stream.tools.bench.cases import Case
from stream.tools.bench.stories import stories_ratio


def _best(results: dict[str, dict[str, Any]], cases: Sequence[Case], engine: str,
          variant: str, key: str = "items_per_s") -> dict[str, Any] | None:
    found = [results[c.name] for c in cases
             if c.group == "engines" and c.engine == engine and c.variant == variant and ok(results.get(c.name))
             and results[c.name].get(key)]
    return max(found, key=lambda r: r[key]) if found else None


def ok(result: dict[str, Any] | None) -> bool:
    return result is not None and "error" not in result and result.get("items_per_s", 0) > 0


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str = "items_per_s") -> float | None:
    if not a or not b or not a.get(key) or not b.get(key):
        return None
    return round(a[key] / b[key], 3)


def ratios(cases: Sequence[Case], results: dict[str, dict[str, Any]], device: str,
           flops_per_seq: float, peak: float | None) -> dict[str, Any]:
    """Headline ratios.  Engine ratios compare each engine at its best measured batch size (both pad
    a batch to its longest text, so at equal batch size they do the same work); `by_batch` has
    them at every batch size."""
    reduced = "fp16" if device == "cuda" else "int8"
    torch_variant = "fp16" if device == "cuda" else "fp32"
    torch_best = _best(results, cases, "torch", torch_variant)
    out: dict[str, Any] = {
        f"{reduced}_vs_torch": _ratio(_best(results, cases, "onnx", reduced), torch_best),
        "fp32_vs_torch": _ratio(_best(results, cases, "onnx", "fp32"), torch_best),
        f"{reduced}_vs_fp32": _ratio(_best(results, cases, "onnx", reduced), _best(results, cases, "onnx", "fp32")),
    }
    by_batch: dict[str, dict[str, float | None]] = {}
    for case in cases:
        if case.group == "engines" and case.engine == "onnx":
            torch_case = next((c for c in cases if c.engine == "torch" and c.batch_size == case.batch_size), None)
            ref = results.get(torch_case.name) if torch_case else None
            mine = results.get(case.name)
            by_batch.setdefault(f"{case.variant}_vs_torch", {})[str(case.batch_size)] = (
                _ratio(mine, ref) if ok(mine) and ok(ref) else None)
    out["by_batch"] = by_batch
    # The same, per CPU-second the case's process used: what the engines cost, whatever else the host
    # was running (wall-clock figures on a shared host also measure the neighbours).
    cpu = "items_per_cpu_s"
    out["per_cpu_second"] = {
        f"{reduced}_vs_torch": _ratio(_best(results, cases, "onnx", reduced, cpu),
                                      _best(results, cases, "torch", torch_variant, cpu), cpu),
        "fp32_vs_torch": _ratio(_best(results, cases, "onnx", "fp32", cpu),
                                _best(results, cases, "torch", torch_variant, cpu), cpu),
    }
    # Parallel runs (the consumer's default on CPU) over one run at a time on every thread.
    out["parallel_vs_one_run"] = {}
    for case in (c for c in cases if c.group == "runs"):
        engine = next((c for c in cases if c.group == "engines" and c.engine == "onnx" and c.variant == case.variant
                       and c.batch_size == case.batch_size), None)
        mine, one = (results.get(engine.name) if engine else None), results.get(case.name)
        out["parallel_vs_one_run"][case.variant] = _ratio(mine, one) if ok(mine) and ok(one) else None
    on = next((results.get(c.name) for c in cases if c.group == "bucketing" and c.bucketing), None)
    off = next((results.get(c.name) for c in cases if c.group == "bucketing" and not c.bucketing), None)
    out["bucketing_gain"] = _ratio(on, off) if ok(on) and ok(off) else None
    # The scorer as the consumer runs it (bucketing on, micro-batch calls) against the pipeline at
    # the same batch size: the two levers together.
    bucket_case = next((c for c in cases if c.group == "bucketing" and c.bucketing), None)
    same = next((c for c in cases if bucket_case and c.engine == "torch" and c.batch_size == bucket_case.batch_size),
                None)
    ref = results.get(same.name) if same else None
    out["scorer_vs_torch"] = _ratio(on, ref) if ok(on) and ok(ref) else None
    e2e = next((results.get(c.name) for c in cases if c.group == "e2e"), None)
    out["e2e_vs_raw_onnx"] = _ratio(e2e, e2e.get("raw_onnx")) if ok(e2e) and e2e else None
    if ok(e2e) and e2e and e2e.get("cpu_seconds") and e2e["raw_onnx"].get("cpu_seconds"):
        raw = e2e["raw_onnx"]
        out["per_cpu_second"]["e2e_vs_raw_onnx"] = round(
            (e2e["items"] / e2e["cpu_seconds"]) / (raw["items"] / raw["cpu_seconds"]), 3)
    # The multi-head package's full analysis against one classifier on the same texts: time per
    # item, so the single classifier's rate over the analysis' (1.0: the extra heads are free).
    analysis, single = (next((results.get(c.name) for c in cases if c.group == "heads" and c.subject in roles), None)
                        for roles in (("package",), ("baseline", "one-head")))
    out["analysis_vs_single"] = _ratio(single, analysis) if ok(analysis) and ok(single) else None
    out["per_cpu_second"]["analysis_vs_single"] = (_ratio(single, analysis, cpu)
                                                   if ok(analysis) and ok(single) else None)
    out |= trim_ratios(cases, results)
    out["stories_on_vs_off"] = stories_ratio(cases, results)
    out["per_cpu_second"]["stories_on_vs_off"] = stories_ratio(cases, results, "stories_on_vs_off_per_cpu_s")
    if device == "cuda":
        best = _best(results, cases, "onnx", "fp16")
        out["fraction_of_peak"] = (
            round(frac, 4) if best and (frac := gpu.fraction_of_peak(flops_per_seq, best["items_per_s"], peak))
            else None)
    return out


def trim_ratios(cases: Sequence[Case], results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The full vocabulary over the trimmed one, fp32 both, same texts and batch: memory after
    opening (`trim_rss`), peak memory while scoring, opening time, speed, and how often the two
    give the same label (they tokenize some texts differently)."""
    trimmed, full = (next((results.get(c.name) for c in cases if c.group == "trim" and c.subject == role), None)
                     for role in ("package", "untrimmed"))
    if not (ok(trimmed) and ok(full)):
        return {"trim_rss": None}
    assert trimmed is not None and full is not None
    same = sum(a == b for a, b in zip(trimmed["labels"], full["labels"], strict=False))
    return {"trim_rss": _ratio(full, trimmed, "rss_after_load_mb"),
            "trim": {"peak_rss": _ratio(full, trimmed, "peak_rss_mb"), "load_s": _ratio(full, trimmed, "load_s"),
                     "trimmed_vs_full_speed": _ratio(trimmed, full),
                     "label_agreement": round(same / max(len(full["labels"]), 1), 4)}}


def agreement(cases: Sequence[Case], results: dict[str, dict[str, Any]]) -> None:
    """Each case's share of labels equal to the torch pipeline's (same batch size where there is one)."""
    torch_cases = [c for c in cases if c.engine == "torch" and ok(results.get(c.name))]
    for case in cases:
        if not ok(results.get(case.name)) or case.engine == "torch" or not torch_cases:
            continue
        res = results[case.name]
        ref_case = next((c for c in torch_cases if c.batch_size == case.batch_size), torch_cases[0])
        ref = results[ref_case.name]["labels"]
        same = sum(a == b for a, b in zip(res["labels"], ref, strict=False))
        res["label_agreement_vs_torch"] = round(same / max(len(ref), 1), 4)


def host_info(device: str, threads: int, spin: bool, onnx_plan: tuple[int, int]) -> dict[str, Any]:
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable_cpus(),
        "memory_gb": _memory_gb(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in ("onnxruntime-gpu", "onnxruntime", "torch", "transformers",
                                                        "tokenizers", "kafka-python", "chdb")},
        "threads": {"torch_intra_op": threads, "ort_intra_op": onnx_plan[0], "ort_runs_at_once": onnx_plan[1],
                    "inter_op": 1, "tokenizers_rayon": threads,
                    "idle_threads": "spin" if spin else "sleep (OMP_WAIT_POLICY=PASSIVE, ORT allow_spinning=0)",
                    "note": "torch and ONNX Runtime get the same cores and wait policy; ONNX Runtime runs "
                            "sub-batches as the consumer does (ort_runs_at_once runs of ort_intra_op threads)"},
        "gpu": gpu.gpu_name() if device == "cuda" else None,
        "rss_method": "peak resident set (VmHWM) of each case's own process, one process per case",
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gb() -> float | None:
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    return round(pages * size / 2**30, 1)


def table(cases: Sequence[Case], results: dict[str, dict[str, Any]]) -> str:
    header = ["case", "items/s", "/cpu-s", "p50 ms", "p99 ms", "RSS MB", "vs torch", "pad eff", "runs on"]
    rows = [header]
    for case in cases:
        r = results.get(case.name) or {}
        if "error" in r or not r:
            rows.append([case.name, "failed", "", "", "", "", "", "", str(r.get("error", "not run"))[:60]])
            continue
        lat = r["latency_ms"]
        agree = r.get("label_agreement_vs_torch")
        eff = r.get("padding_efficiency")
        per_cpu = r.get("items_per_cpu_s")
        rows.append([case.name, f"{r['items_per_s']:.1f}", "" if per_cpu is None else f"{per_cpu:.1f}",
                     f"{lat['p50']:.1f}", f"{lat['p99']:.1f}",
                     f"{r['peak_rss_mb']:.0f}", "" if agree is None else f"{agree:.1%}",
                     "" if eff is None else f"{eff:.0%}", str(r.get("provider", ""))])
        raw = r.get("raw_onnx")
        if raw:
            rlat = raw["latency_ms"]
            raw_cpu = raw["items"] / raw["cpu_seconds"] if raw.get("cpu_seconds") else None
            rows.append(["  raw onnx, same scorer", f"{raw['items_per_s']:.1f}",
                         "" if raw_cpu is None else f"{raw_cpu:.1f}", f"{rlat['p50']:.1f}",
                         f"{rlat['p99']:.1f}", f"{raw['peak_rss_mb']:.0f}", "", "", ""])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 or i == len(header) - 1 else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(row, widths, strict=True))) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def ratio_lines(values: dict[str, Any]) -> str:
    lines = ["  ".join(f"{k}={v}" for k, v in values.items() if not isinstance(v, dict))]
    for title, key in (("parallel runs over one run", "parallel_vs_one_run"), ("per CPU-second", "per_cpu_second")):
        if values.get(key):
            lines.append(f"{title}: " + "  ".join(f"{k}={v}" for k, v in values[key].items()))
    return "\n".join(lines)
