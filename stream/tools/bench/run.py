"""One bench run: texts and models prepared once, every case in its own process, one report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from stream.core.errors import ModelError
from stream.core.manifest import read_manifest
from stream.tools.bench import cpu, flops, gpu
from stream.tools.bench.cases import DEFAULT_MICRO_BATCH, Case, plan
from stream.tools.bench.corpus import bench_texts
from stream.tools.bench.e2e import e2e_repeat
from stream.tools.bench.report import agreement, host_info, ok, ratios, table
from stream.tools.bench.subjects import Subjects, prepare

# Targets on the 2-core reference host (deploy/bench/BENCH.md); the report says which were met.
# `analysis_vs_single` is a cost (time per item of every head against one classifier's): at most.
CPU_TARGETS = {"int8_vs_torch": (3.0, ">="), "e2e_vs_raw_onnx": (0.85, ">="), "bucketing_gain": (1.3, ">="),
               "stories_on_vs_off": (0.8, ">="), "analysis_vs_single": (1.3, "<="), "trim_size": (3.0, ">="),
               "trim_rss": (3.0, ">=")}


@dataclass(frozen=True)
class BenchOptions:
    device: str
    quick: bool
    n_texts: int
    batch_sizes: tuple[int, ...]
    model_dir: Path | None
    package: Path | None
    threads: int
    baseline: Path | None = None  # the single classifier a multi-head package is compared with
    note: str = ""  # how the subjects were chosen
    seed: int = 0
    e2e: bool = True
    groups: tuple[str, ...] = ()  # empty: all
    bootstrap: str | None = None
    config_path: Path | None = None
    peak_tflops: float | None = None
    case_timeout: int = 1200
    progress: bool = True
    spin: bool = False  # let idle threads spin (the libraries' default) instead of sleeping
    runs: int = 0  # ONNX sub-batches at once; 0: as the consumer runs them (scorer.run_plan)

    def onnx_plan(self, runs: int = 0) -> tuple[int, int]:
        """(intra-op threads per ONNX run, runs at once) within the bench's `threads`: `runs` (a
        case's), else `--runs`, else the consumer's plan (`scorer.run_plan`)."""
        from stream.core.scorer import run_plan

        runs = runs or self.runs
        per_run = max(1, self.threads // runs) if runs else 1 if self.device == "cpu" else self.threads
        return run_plan(self.device, per_run, runs, cpus=self.threads)

    @property
    def warmup(self) -> int:
        """Texts each case scores untimed first (rounded up to whole calls)."""
        return 8 if self.quick else 32

    @property
    def passes(self) -> int:
        """Timed passes over the texts per case; the fastest counts."""
        return 1 if self.quick else 2


def run_bench(options: BenchOptions, command: str = "yuqing bench") -> dict[str, Any]:
    if options.device == "cuda":
        from stream.core.scorer import cuda_available

        if not cuda_available():
            raise ModelError("--device cuda: onnxruntime has no CUDA provider or no GPU is visible",
                             hint="install onnxruntime-gpu on a host with an NVIDIA driver, or use --device cpu")
    reduced = "fp16" if options.device == "cuda" else "int8"
    host = host_info(options.device, options.threads, options.spin, options.onnx_plan())
    texts = bench_texts(options.n_texts, options.seed)
    subjects = prepare(options.model_dir, options.package, ("fp32", reduced), baseline=options.baseline,
                       note=options.note, progress=options.progress)
    heads_variant = subjects.heads_variant(reduced)
    cases = plan(options.device, options.batch_sizes, torch_cases=subjects.checkpoint is not None, e2e=options.e2e,
                 heads_variant=heads_variant, baseline=subjects.baseline is not None,
                 untrimmed=subjects.untrimmed is not None)
    cases = [c for c in cases if not options.groups or c.group in options.groups]
    graphs = {"package": flops.graph_flops(subjects.variant_files["fp32"])}
    if subjects.baseline is not None:
        graphs["baseline"] = flops.graph_flops(read_manifest(subjects.baseline).variant_path("fp32"))

    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="yuqing-bench-") as tmp:
        workdir = Path(tmp)
        texts_path = workdir / "texts.json"
        texts_path.write_text(json.dumps(texts.texts, ensure_ascii=False), encoding="utf-8")
        common = _common_spec(options, subjects, texts_path, workdir)
        env = worker_env(options.threads, options.spin)
        bar = tqdm(cases, desc="bench", unit="case", disable=not options.progress)
        for index, case in enumerate(bar):
            bar.set_postfix_str(case.name)
            spec = (common | {"case": asdict(case), "onnx_plan": list(options.onnx_plan(case.runs))}
                    | _subject_spec(case, subjects))
            results[case.name] = run_worker(spec, workdir, index, env, options.case_timeout)
    host["load_average_after"] = [round(x, 2) for x in os.getloadavg()]

    agreement(cases, results)
    # Each ONNX case measured its own texts' token counts (a baseline may tokenize differently);
    # the other cases are counted at the subject's.
    counts = {c.name: results[c.name].pop("token_counts") for c in cases if "token_counts" in results[c.name]}
    role_counts: dict[str, list[int]] = {}
    for case in cases:
        if case.name in counts:
            role_counts.setdefault(case.subject, counts[case.name])
    subject_counts = role_counts.get("package", [])
    peak = options.peak_tflops or (gpu.peak_tflops(host["gpu"]) if host["gpu"] else None)
    cpu_peak = cpu.host_peak(options.threads) if options.device == "cpu" else None
    for case in cases:
        r = results[case.name]
        if not ok(r):
            continue
        r["items_per_cpu_s"] = round(r["items"] / r["cpu_seconds"], 2) if r.get("cpu_seconds") else None
        # The one-head case runs the package's graph (its other heads' few FLOPs included).
        graph = graphs["baseline" if case.subject == "baseline" else "package"]
        per_text = graph.per_text(counts.get(case.name, subject_counts))
        r["flops_per_text"] = round(per_text)
        if options.device == "cuda" and per_text:
            r["achieved_tflops"] = round(per_text * r["items_per_s"] / 1e12, 3)
        if cpu_peak and case.engine == "onnx":
            r["compute"] = cpu.achieved(r, case.variant, per_text, cpu_peak)
    flops_per_seq = graphs["package"].per_text(subject_counts)
    headline = ratios(cases, results, options.device, flops_per_seq, peak)
    headline["trim_size"] = _trim_size(subjects)
    report: dict[str, Any] = {
        "command": command,
        "device": options.device,
        "quick": options.quick,
        "texts": texts.describe() | {"seed": options.seed,
                                     "tokens_mean": round(sum(subject_counts) / max(len(subject_counts), 1), 1),
                                     "max_length": common["max_length"]},
        "subjects": subjects.to_json(),
        "host": host,
        "ratios": headline,
        "cases": [_case_report(case, results.get(case.name, {"error": "not run"})) for case in cases],
        "flops": {role: graph.describe(role_counts.get(role, subject_counts)) for role, graph in graphs.items()},
    }
    if options.device == "cuda":
        report["gpu"] = {"name": host["gpu"], "peak_tflops_fp16_dense": peak, "flops_per_sequence": flops_per_seq}
    else:
        report["targets"] = targets(headline)
    report["package"] = cpu.footprint(subjects.package)
    if subjects.baseline is not None:
        report["baseline_package"] = cpu.footprint(subjects.baseline) | _same_base(subjects)
    if subjects.untrimmed is not None:
        report["untrimmed_package"] = cpu.footprint(subjects.untrimmed)
    if cpu_peak:
        report["cpu_peak"] = cpu_peak
    report["table"] = table(cases, results)
    return report


def _trim_size(subjects: Subjects) -> float | None:
    """The full vocabulary's fp32 graph over the trimmed one's, on disk."""
    if subjects.untrimmed is None:
        return None
    full, trimmed = (read_manifest(p).variant_path("fp32").stat().st_size
                     for p in (subjects.untrimmed, subjects.package))
    return round(full / trimmed, 3)


def targets(headline: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target with its measured ratio and whether it was met (None where not measured)."""
    out = {}
    for name, (target, goal) in CPU_TARGETS.items():
        measured = headline.get(name)
        met = None if measured is None else measured >= target if goal == ">=" else measured <= target
        out[name] = {"target": target, "goal": goal, "measured": measured, "met": met}
    return out


def _same_base(subjects: Subjects) -> dict[str, Any]:
    """Whether the baseline shares the multi-head package's base model (None: not recorded)."""
    assert subjects.baseline is not None
    bases = [read_manifest(p).data.get("base_model") for p in (subjects.package, subjects.baseline)]
    return {"base_model": bases[1], "same_base": bases[0] == bases[1] if all(bases) else None}


def _subject_spec(case: Case, subjects: Subjects) -> dict[str, Any]:
    """The package and ONNX file a case opens (torch cases open the checkpoint)."""
    if case.engine == "torch":
        return {}
    if case.subject in ("baseline", "untrimmed"):
        other = subjects.baseline if case.subject == "baseline" else subjects.untrimmed
        assert other is not None
        manifest = read_manifest(other)
        return {"package": str(other), "variant_file": str(manifest.variant_path(case.variant)),
                "origin": "package", "max_length": manifest.max_length}
    own = {"variant_file": str(subjects.variant_files[case.variant]), "origin": subjects.variant_origin[case.variant]}
    return own | {"only_head": True} if case.subject == "one-head" else own


def _common_spec(options: BenchOptions, subjects: Subjects, texts_path: Path, workdir: Path) -> dict[str, Any]:
    return {
        "device": options.device,
        "quick": options.quick,
        "threads": options.threads,
        "spin": options.spin,
        "warmup": options.warmup,
        "passes": options.passes,
        "texts_path": str(texts_path),
        "checkpoint": str(subjects.checkpoint) if subjects.checkpoint else None,
        "package": str(subjects.package),
        "max_length": read_manifest(subjects.package).max_length,
        "e2e": {"bootstrap": options.bootstrap,
                "config_path": str(options.config_path) if options.config_path else None,
                "store_dir": str(workdir / "store"), "idle_s": 1.5 if options.quick else 3.0,
                "repeat": 1 if options.quick else e2e_repeat(options.n_texts, DEFAULT_MICRO_BATCH)},
    }


def _case_report(case: Case, result: dict[str, Any]) -> dict[str, Any]:
    out = {"name": case.name, **{k: v for k, v in asdict(case).items() if k != "name"}}
    out |= {k: v for k, v in result.items() if k not in ("labels", "case", "pid", "traceback")}
    if not ok(result) and "error" not in out:
        out["error"] = "no items scored"
    return out


def run_worker(spec: dict[str, Any], workdir: Path, index: int, env: dict[str, str], timeout: int) -> dict[str, Any]:
    """One case in a fresh interpreter; its result file, or an error record with its log's tail."""
    spec_path, result_path, log_path = (workdir / f"case{index}.{ext}" for ext in ("spec.json", "result.json", "log"))
    spec_path.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    cmd = [sys.executable, "-m", "stream.tools.bench.worker", str(spec_path), str(result_path)]
    try:
        with log_path.open("w", encoding="utf-8") as fh:
            subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout}s"}
    if not result_path.is_file():
        tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:]
        return {"error": "the case process died: " + " | ".join(tail)}
    result: dict[str, Any] = json.loads(result_path.read_text(encoding="utf-8"))
    return result


def worker_env(threads: int, spin: bool) -> dict[str, str]:
    """The same thread count and wait policy for every library a case uses; offline models only."""
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), RAYON_RS_NUM_CPUS=str(threads),
        TOKENIZERS_PARALLELISM="true", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1",
    )
    if not spin:
        env["OMP_WAIT_POLICY"] = "PASSIVE"  # torch's OpenMP threads sleep when idle, as ORT's do
    else:
        env.pop("OMP_WAIT_POLICY", None)
    repo = str(Path(__file__).resolve().parents[3])  # the worker imports this checkout's packages
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH", "")) if p)
    return env
