"""What a model package costs on a CPU host: its size, load time and memory, and how much of the
host's arithmetic the ONNX cases use.

Peak GFLOP/s per core = clock × operations per cycle, from the CPU flags:

* fp32: 2 (a fused multiply-add) × lanes (16 with AVX-512, 8 with AVX2) × 2 FMA pipes.  AMD Zen 4
  runs AVX-512 on 256-bit pipes (half that); it is told apart from Zen 5 by the lack of
  avx512_vp2intersect.
* int8: VNNI's vpdpbusd does 4 u8×s8 multiply-adds per 32-bit lane (8 ops: 4× fp32); without VNNI
  the vpmaddubsw + vpmaddwd pair does half that; AMX (amx_int8) does 1,024 multiply-adds per cycle
  per core.

The clock is the highest `cpu MHz` in /proc/cpuinfo (a VM reports its nominal clock), or the
cpufreq maximum where the kernel exposes one.  Every usable vCPU is counted as a full core, so on
an SMT host the peak is an upper bound.  Achieved GFLOP/s = useful FLOPs per text (the graph's
matrix products at each text's real token count, see `flops.graph_flops`) × texts/s; per
CPU-second it is set against one core's peak, which is the fair figure on a shared host.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stream.core.host import cpu_flags


def peak_ops_per_cycle(flags: set[str], vendor: str) -> dict[str, Any]:
    """fp32 FLOPs and int8 ops per cycle per core, and the instruction path each assumes."""
    avx512 = "avx512f" in flags
    lanes = 16 if avx512 else 8 if "avx2" in flags else 4
    pipes = 2 if "fma" in flags or avx512 else 1
    half_width = avx512 and vendor == "AuthenticAMD" and "avx512_vp2intersect" not in flags  # Zen 4
    fp32 = 2 * lanes * pipes // (2 if half_width else 1)
    if "amx_int8" in flags:
        int8, path = 2 * 1024, "AMX"
    elif "avx512_vnni" in flags or "avx_vnni" in flags:
        int8, path = 4 * fp32, "AVX-512 VNNI" if "avx512_vnni" in flags else "AVX-VNNI"
    else:
        int8, path = 2 * fp32, "vpmaddubsw"
    return {"fp32_flops_per_cycle": fp32, "int8_ops_per_cycle": int8, "int8_path": path,
            "fp32_path": f"{'AVX-512' if avx512 else 'AVX2' if lanes == 8 else 'SSE'} FMA × {pipes}"
                         + (" (256-bit pipes)" if half_width else "")}


def host_peak(cores: int) -> dict[str, Any]:
    """This host's fp32 and int8 peak GFLOP/s (per core and for `cores` cores) and how it was derived."""
    flags, vendor, mhz = cpu_flags()
    per_cycle = peak_ops_per_cycle(flags, vendor)
    ghz = (mhz or 0) / 1000
    out: dict[str, Any] = {"clock_ghz": round(ghz, 3), "cores": cores, "vendor": vendor} | per_cycle
    for kind, key in (("fp32", "fp32_flops_per_cycle"), ("int8", "int8_ops_per_cycle")):
        out[f"{kind}_gflops_per_core"] = round(ghz * per_cycle[key], 1) if ghz else None
        out[f"{kind}_gflops"] = round(ghz * per_cycle[key] * cores, 1) if ghz else None
    out["flags"] = sorted(f for f in flags if f.startswith(("avx512", "amx", "avx_vnni", "fma", "avx2")))
    return out


def achieved(result: dict[str, Any], variant: str, flops_per_text: float, peak: dict[str, Any]) -> dict[str, Any]:
    """GFLOP/s of one ONNX case, and its share of the host's peak for its arithmetic (int8 for the
    int8 variant, fp32 otherwise); per CPU-second against one core's peak."""
    if flops_per_text <= 0 or not result.get("items_per_s"):
        return {}
    kind = "int8" if variant == "int8" else "fp32"
    gflops = flops_per_text * result["items_per_s"] / 1e9
    out: dict[str, Any] = {"gflops": round(gflops, 2), "peak_kind": kind}
    if peak.get(f"{kind}_gflops"):
        out["fraction_of_peak"] = round(gflops / peak[f"{kind}_gflops"], 4)
    if result.get("items_per_cpu_s"):
        per_cpu = flops_per_text * result["items_per_cpu_s"] / 1e9
        out["gflops_per_cpu_s"] = round(per_cpu, 2)
        if peak.get(f"{kind}_gflops_per_core"):
            out["fraction_of_core_peak"] = round(per_cpu / peak[f"{kind}_gflops_per_core"], 4)
    return out


def footprint(package: Path) -> dict[str, Any]:
    """The package's files and total size in MB, its vocabulary and int8 scheme.  (Load time and
    memory are the cases' own: `load_s`, `rss_after_load_mb` and `peak_rss_mb` of each worker.)"""
    from stream.core.manifest import read_manifest

    manifest = read_manifest(package)
    files = {p.name: round(p.stat().st_size / 1e6, 2) for p in sorted(package.iterdir()) if p.is_file()}
    export = manifest.data.get("export") or {}
    trim = export.get("vocab_trim")
    quantization = manifest.variants.get("int8", {}).get("quantization") or {}
    return {"version": manifest.version, "files_mb": files, "total_mb": round(sum(files.values()), 1),
            "vocabulary": {"pieces": trim["vocab_after"], "of": trim["vocab_before"]} if trim else None,
            "int8_scheme": quantization.get("scheme")}


def lines(report: dict[str, Any]) -> str:
    """The package, FLOPs, multi-head and CPU-peak blocks under the bench table."""
    peak = report.get("cpu_peak") or {}
    out = []
    for role in ("package", "baseline_package", "untrimmed_package"):
        package = report.get(role)
        if not package:
            continue
        vocab = package.get("vocabulary")
        out.append(f"{role.replace('_', ' ')} {package['version']}: {package['total_mb']} MB on disk ("
                   + ", ".join(f"{k} {v}" for k, v in package["files_mb"].items()) + ")"
                   + (f"; vocabulary {vocab['pieces']:,} of {vocab['of']:,} pieces" if vocab else "")
                   + (f"; int8 scheme {package['int8_scheme']}" if package.get("int8_scheme") else "")
                   + (f"; same base: {package['same_base']}" if "same_base" in package else ""))
    for role, graph in (report.get("flops") or {}).items():
        parts = ", ".join(f"{op} {v / 1e6:.3g}" for op, v in graph["by_op"].items())
        out.append(f"FLOPs per text ({role}, graph at the texts' token counts): "
                   f"{graph['flops_per_text'] / 1e6:.4g} MFLOP ({parts})")
    heads = [c for c in report.get("cases", []) if c.get("group") == "heads" and "error" not in c]
    ratios = report.get("ratios") or {}
    if len(heads) == 2:
        analysis, single = heads
        target = (report.get("targets") or {}).get("analysis_vs_single") or {}
        against = (f"its graph asked for the {single.get('heads', ['first'])[0]} output alone (a single "
                   "classifier's work)" if single.get("subject") == "one-head"
                   else f"single classifier ({', '.join(single.get('heads', []))})")
        out.append(f"full analysis (every head, one pass) vs {against}, {analysis['variant']}: "
                   f"{ratios.get('analysis_vs_single')}x time per item, "
                   f"{(ratios.get('per_cpu_second') or {}).get('analysis_vs_single')}x per CPU-second"
                   + (f" (goal <= {target['target']}x: {'met' if target['met'] else 'not met'})"
                      if target.get("met") is not None else "")
                   + f"; FLOPs per text {analysis['flops_per_text'] / 1e6:.4g} vs {single['flops_per_text'] / 1e6:.4g}"
                   " MFLOP")
    trim = ratios.get("trim")
    if trim:
        out.append(f"full vocabulary over trimmed, fp32: model.onnx {ratios.get('trim_size')}x on disk, RSS after "
                   f"load {ratios.get('trim_rss')}x, peak RSS {trim['peak_rss']}x, load time {trim['load_s']}x; "
                   f"trimmed speed {trim['trimmed_vs_full_speed']}x, same labels {trim['label_agreement']:.1%}")
    if peak:
        out.append(f"host peak: fp32 {peak['fp32_gflops']} GFLOP/s ({peak['fp32_path']}), int8 {peak['int8_gflops']} "
                   f"GOP/s ({peak['int8_path']}) at {peak['clock_ghz']} GHz × {peak['cores']} cores")
    for case in report.get("cases", []):
        if "load_s" in case:
            use = case.get("compute") or {}
            out.append(f"  {case['name']:<24} load {case['load_s']:.2f}s  RSS after load "
                       f"{case['rss_after_load_mb']:.0f} MB, peak {case['peak_rss_mb']:.0f} MB  "
                       f"{use.get('gflops', '-')} GFLOP/s "
                       f"({_pct(use.get('fraction_of_peak'))} of {use.get('peak_kind')} peak)  "
                       f"{use.get('gflops_per_cpu_s', '-')} per CPU-s "
                       f"({_pct(use.get('fraction_of_core_peak'))} of a core)")
    return "\n".join(out)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"
