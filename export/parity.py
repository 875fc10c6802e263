"""The parity gate: every exported variant against the torch model on the same token ids.

Thresholds: the fp32 graph must match torch's logits to FP32_ATOL; a reduced-precision variant
(int8, fp16) must agree with torch's label on at least MIN_AGREEMENT of the texts and lose at most
MAX_ACCURACY_DROP accuracy against the fp32 graph where the check data has labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from export.checkpoint import Checkpoint
from stream.core.errors import ModelError
from stream.core.manifest import PASSED, UNCHECKED
from stream.core.scorer import Encoded, create_session, run_logits

FP32_ATOL = 1e-3
MIN_AGREEMENT = 0.99
MAX_ACCURACY_DROP = 0.01
FAILED = "failed"
# int8 quantizes activations with one scale per batch, so its outputs depend on a text's batch-mates
# and padding: it is judged on the worst of the batchings the stream can produce.
BATCH_PLANS: dict[str, dict[str, Any]] = {
    "bucketed": {"bucketing": True},
    "input_order_32": {"bucketing": False, "batch_size": 32},
    "one_by_one": {"batch_size": 1},
}
THRESHOLDS = {"fp32_max_abs_diff": FP32_ATOL, "min_label_agreement": MIN_AGREEMENT,
              "max_accuracy_drop": MAX_ACCURACY_DROP}


@dataclass(frozen=True)
class Reference:
    """torch's logits for the check texts, and the gold labels (output indices) if known."""

    encoded: Encoded
    logits: np.ndarray
    gold: list[int] | None


def torch_logits(ckpt: Checkpoint, encoded: Encoded, batch_size: int = 32) -> np.ndarray:
    """The source model on exactly the token ids the runtime builds (same padding per batch)."""
    import torch

    from stream.core.scorer import feeds, plan_batches

    out = np.empty((len(encoded.ids), len(ckpt.labels)), dtype=np.float32)
    for group in plan_batches(encoded.lengths(), batch_size, 1 << 30, bucketing=True):
        arrays = feeds(encoded, group, ckpt.input_names, ckpt.pad_token_id)
        with torch.inference_mode():
            logits = ckpt.model(**{k: torch.from_numpy(v) for k, v in arrays.items()}).logits
        out[group] = logits.float().numpy()
    return out


def tokenizer_agreement(ckpt: Checkpoint, encoded: Encoded, texts: list[str]) -> float:
    """Share of texts the runtime tokenizer encodes exactly as the training tokenizer does."""
    hf = ckpt.tokenizer(texts, truncation=True, max_length=ckpt.max_length)["input_ids"]
    same = sum(list(a) == list(b) for a, b in zip(hf, encoded.ids, strict=True))
    return same / max(len(texts), 1)


def compare(ref: Reference, logits: np.ndarray) -> dict[str, Any]:
    predicted = logits.argmax(axis=-1)
    expected = ref.logits.argmax(axis=-1)
    result: dict[str, Any] = {
        "n": len(predicted),
        "max_abs_diff": float(np.abs(logits - ref.logits).max()) if len(predicted) else 0.0,
        "label_agreement": float((predicted == expected).mean()) if len(predicted) else 1.0,
        "accuracy": None,
    }
    if ref.gold is not None:
        result["accuracy"] = float((predicted == np.asarray(ref.gold)).mean())
    return result


def check_variant(variant: str, model: Path, ref: Reference, pad_id: int,
                  fp32_accuracy: float | None = None) -> dict[str, Any]:
    """Run one ONNX file on the check texts and judge it; a variant that cannot run on this
    host (fp16 without a GPU whose CPU kernels are missing) comes back "unchecked"."""
    from stream.core.scorer import cuda_available

    device = "cuda" if variant == "fp16" and cuda_available() else "cpu"
    plans = BATCH_PLANS if variant == "int8" else {"bucketed": BATCH_PLANS["bucketed"]}
    try:
        session, provider = create_session(model, device)
        by_plan = {name: compare(ref, run_logits(session, ref.encoded, pad_id, **plan))
                   for name, plan in plans.items()}
    except (ModelError, RuntimeError) as exc:
        if variant != "fp16":
            raise
        return {"status": UNCHECKED, "provider": None, "reason": f"unchecked on this host: {exc}"}
    worst = min(by_plan, key=lambda name: (by_plan[name]["label_agreement"], by_plan[name]["accuracy"] or 0))
    result = by_plan[worst] | {"provider": provider}
    if len(by_plan) > 1:
        result |= {"batch_plan": worst, "by_batch_plan": by_plan}
    failures = judge(variant, result, fp32_accuracy)
    result["status"] = FAILED if failures else PASSED
    if failures:
        result["reason"] = "; ".join(failures)
    return result


def judge(variant: str, result: dict[str, Any], fp32_accuracy: float | None) -> list[str]:
    failures = []
    if variant == "fp32":
        if result["max_abs_diff"] > FP32_ATOL:
            failures.append(f"max abs logit difference {result['max_abs_diff']:.2e} > {FP32_ATOL:g}")
    else:
        if result["label_agreement"] < MIN_AGREEMENT:
            failures.append(f"label agreement {result['label_agreement']:.2%} < {MIN_AGREEMENT:.0%}")
        accuracy = result.get("accuracy")
        if accuracy is not None and fp32_accuracy is not None and accuracy < fp32_accuracy - MAX_ACCURACY_DROP:
            failures.append(f"accuracy {accuracy:.2%} is more than {MAX_ACCURACY_DROP:.0%} below "
                            f"fp32's {fp32_accuracy:.2%}")
    return failures
