"""How much of a GPU's arithmetic the scorer uses: FLOPs per sequence from the model config and the
real token counts, over the chip's dense fp16/bf16 peak."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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


def encoder_shape(config: dict[str, Any]) -> dict[str, int]:
    """Hidden size, layers and FFN width of a BERT-style encoder config (config.json as a dict)."""
    hidden = int(config.get("hidden_size") or config.get("dim") or 0)
    layers = int(config.get("num_hidden_layers") or config.get("n_layers") or 0)
    ffn = int(config.get("intermediate_size") or config.get("hidden_dim") or 4 * hidden)
    labels = len(config.get("id2label") or {}) or int(config.get("num_labels") or 2)
    return {"hidden": hidden, "layers": layers, "ffn": ffn, "labels": labels}


def nonembedding_params(shape: dict[str, int]) -> int:
    """Weights every token passes through: per layer Q, K, V, O and the two FFN matrices (with
    biases and LayerNorms), then the pooler and the classifier."""
    h, f = shape["hidden"], shape["ffn"]
    per_layer = 4 * h * h + 4 * h + 2 * h * f + h + f + 4 * h
    return shape["layers"] * per_layer + h * h + h + h * shape["labels"] + shape["labels"]


def flops_per_sequence(shape: dict[str, int], token_counts: Sequence[int]) -> float:
    """Mean useful FLOPs of one forward pass: 2 × params × tokens for the matrix products plus
    4 × layers × tokens² × hidden for attention (QKᵀ and AV), on each text's own length, so
    padding counts as waste, not work."""
    if not token_counts:
        return 0.0
    params = nonembedding_params(shape)
    total = sum(2 * params * n + 4 * shape["layers"] * n * n * shape["hidden"] for n in token_counts)
    return total / len(token_counts)


def read_config(checkpoint_or_package: Path) -> dict[str, Any] | None:
    path = checkpoint_or_package / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def fraction_of_peak(flops_per_seq: float, sequences_per_s: float, peak: float | None) -> float | None:
    if not peak or flops_per_seq <= 0:
        return None
    return flops_per_seq * sequences_per_s / (peak * 1e12)
