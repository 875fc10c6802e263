"""How much of a GPU's arithmetic the scorer uses: FLOPs per sequence (`flops.graph_flops`, at the
real token counts) over the chip's dense fp16/bf16 peak."""

from __future__ import annotations

import shutil
import subprocess

# Dense (no sparsity) fp16/bf16 tensor-core peak in TFLOP/s, from the vendor data sheets.  The first
# name fragment found in the device name wins, so more specific names come first.
PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),
    ("GH200", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("A10", 125.0),
    ("T4", 65.0),
    ("V100", 125.0),
)


def peak_tflops(device_name: str) -> float | None:
    for fragment, peak in PEAK_TFLOPS:
        if fragment.lower() in device_name.lower():
            return peak
    return None


def gpu_name() -> str | None:
    """The first GPU's name as nvidia-smi reports it, or None."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    names = out.stdout.strip().splitlines()
    return names[0].strip() if out.returncode == 0 and names else None


def fraction_of_peak(flops_per_seq: float, sequences_per_s: float, peak: float | None) -> float | None:
    if not peak or flops_per_seq <= 0:
        return None
    return flops_per_seq * sequences_per_s / (peak * 1e12)
