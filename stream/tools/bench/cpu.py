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
an SMT host the peak is an upper bound.  Achieved GFLOP/s = useful FLOPs per text (the real
token counts, see `gpu.flops_per_sequence`) × texts/s; per CPU-second it is set against one
core's peak, which is the fair figure on a shared host.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

# The packages `make demo` builds: the bench's default subject when present.
DEMO_DATA = Path("yuqing-data")
DEMO_MODEL = "demo-sentiment"


def demo_subject(data_dir: Path = DEMO_DATA) -> tuple[Path | None, Path | None]:
    """(checkpoint, package) of the demo sentiment model, each None when absent."""
    package = data_dir / "packages" / DEMO_MODEL
    checkpoint = data_dir / "models" / DEMO_MODEL
    return ((checkpoint if (checkpoint / "config.json").is_file() else None),
            (package if (package / "manifest.json").is_file() else None))


def cpu_flags() -> tuple[set[str], str, float | None]:
    """The first CPU's flags, vendor and clock in MHz, from /proc/cpuinfo (empty off Linux)."""
    flags: set[str] = set()
    vendor, mhz = "", 0.0
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "flags" and not flags:
                    flags = set(value.split())
                elif key == "vendor_id" and not vendor:
                    vendor = value.strip()
                elif key == "cpu MHz":
                    mhz = max(mhz, float(value))
    except (OSError, ValueError):
        pass
    with contextlib.suppress(OSError, ValueError):
        mhz = int(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text()) / 1000
    return flags, vendor, mhz or None


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


def graph_shape(model: Path) -> dict[str, int] | None:
    """Hidden size, layers, FFN width and labels of a BERT-style ONNX graph (for a package without
    its checkpoint's config.json): layers are the Attention (else Softmax) nodes, the FFN width is
    that of the MatMul feeding the first GELU."""
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    shapes = {init.name: tuple(init.dims) for init in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    layers = sum(n.op_type == "Attention" for n in graph.node) or sum(n.op_type == "Softmax" for n in graph.node)
    matrices = [s for s in shapes.values() if len(s) == 2]
    if not layers or not matrices:
        return None
    hidden = max(matrices, key=lambda s: s[0])[1]  # the word-embedding table is the tallest matrix
    ffn = next((w for n in graph.node if n.op_type in ("Gelu", "BiasGelu", "FastGelu", "Erf")
                for w in [_matmul_width(n, producer, shapes)] if w), 4 * hidden)
    out = graph.output[0].type.tensor_type.shape.dim
    labels = out[-1].dim_value if out and out[-1].dim_value else 2
    return {"hidden": hidden, "layers": layers, "ffn": ffn, "labels": labels}


def _matmul_width(node: Any, producer: dict[str, Any], shapes: dict[str, tuple[int, ...]], depth: int = 0) -> int:
    """The output width of the weight MatMul a few steps upstream of `node`, or 0."""
    for name in node.input:
        if name in shapes:
            continue
        up = producer.get(name)
        if up is None:
            continue
        if up.op_type == "MatMul":
            return next((shapes[i][1] for i in up.input if len(shapes.get(i, ())) == 2), 0)
        if depth < 3 and (width := _matmul_width(up, producer, shapes, depth + 1)):
            return width
    return 0


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
    """The package and CPU-peak block under the bench table."""
    package, peak = report.get("package") or {}, report.get("cpu_peak") or {}
    out = []
    if package:
        vocab = package.get("vocabulary")
        out.append(f"package {package['version']}: {package['total_mb']} MB ("
                   + ", ".join(f"{k} {v}" for k, v in package["files_mb"].items()) + ")"
                   + (f"; vocabulary {vocab['pieces']:,} of {vocab['of']:,} pieces" if vocab else "")
                   + (f"; int8 scheme {package['int8_scheme']}" if package.get("int8_scheme") else ""))
    if peak:
        out.append(f"host peak: fp32 {peak['fp32_gflops']} GFLOP/s ({peak['fp32_path']}), int8 {peak['int8_gflops']} "
                   f"GOP/s ({peak['int8_path']}) at {peak['clock_ghz']} GHz × {peak['cores']} cores")
    for case in report.get("cases", []):
        if "load_s" in case:
            use = case.get("compute") or {}
            out.append(f"  {case['name']:<20} load {case['load_s']:.2f}s  RSS after load "
                       f"{case['rss_after_load_mb']:.0f} MB  {use.get('gflops', '-')} GFLOP/s "
                       f"({_pct(use.get('fraction_of_peak'))} of {use.get('peak_kind')} peak)  "
                       f"{use.get('gflops_per_cpu_s', '-')} per CPU-s "
                       f"({_pct(use.get('fraction_of_core_peak'))} of a core)")
    return "\n".join(out)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"
