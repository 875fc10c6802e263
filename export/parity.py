"""The parity gate: every exported variant against the torch model on the same token ids.

Each head of the graph is judged on its own, and a variant fails if any head fails:

* a sequence head (a classifier's `logits`, a multi-head package's sentiment, category, ...): the
  fp32 graph must match torch's logits to FP32_ATOL; a reduced-precision variant (int8, fp16) must
  agree with torch's label on at least MIN_AGREEMENT of the texts and lose at most
  MAX_ACCURACY_DROP accuracy against the fp32 graph where the check data labels that head;
* the token head (entities): the same logit tolerance for fp32 over the non-pad tokens; reduced
  precision must give torch's label to MIN_AGREEMENT of those tokens.  How many entity spans
  (type and token range) both find, of all either finds, is reported beside it;
* the embedding: the cosine to torch's vector, on the worst text, at least FP32_MIN_COSINE for fp32
  and MIN_COSINE for the others.

A single-classifier package's results stay flat (as its manifest always had them); a multi-head
package's carry `heads` (head -> its figures) and the worst label agreement over its heads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from export.check_data import CheckSet
from export.checkpoint import Checkpoint
from stream.core.errors import ModelError
from stream.core.manifest import EMBEDDING, PASSED, SEQUENCE, TOKEN, UNCHECKED
from stream.core.scorer import (
    Encoded,
    best_bio,
    bio_spans,
    create_session,
    feeds,
    gather_outputs,
    plan_batches,
    run_outputs,
    softmax,
    special_tokens,
)

FP32_ATOL = 1e-3
MIN_AGREEMENT = 0.99
MAX_ACCURACY_DROP = 0.01
FP32_MIN_COSINE = 0.9999
MIN_COSINE = 0.98
FAILED = "failed"
# int8 quantizes activations with one scale per batch, so its outputs depend on a text's batch-mates
# and padding: it is judged on the worst of the batchings the stream can produce.
BATCH_PLANS: dict[str, dict[str, Any]] = {
    "bucketed": {"bucketing": True},
    "input_order_32": {"bucketing": False, "batch_size": 32},
    "one_by_one": {"batch_size": 1},
}
THRESHOLDS = {"fp32_max_abs_diff": FP32_ATOL, "min_label_agreement": MIN_AGREEMENT,
              "max_accuracy_drop": MAX_ACCURACY_DROP, "fp32_min_cosine": FP32_MIN_COSINE, "min_cosine": MIN_COSINE}
# The fp32 accuracy a reduced variant is held to: one figure for a classifier, one per head otherwise.
Accuracy = float | Mapping[str, float | None] | None


@dataclass(frozen=True)
class Reference:
    """torch's outputs for the check texts, what each head reads, and the gold labels (output
    indices) of the heads the check data labels."""

    encoded: Encoded
    outputs: dict[str, np.ndarray]  # ONNX output name -> torch's values (as `gather_outputs` lays them out)
    heads: dict[str, dict[str, Any]]  # head -> its manifest entry (kind, labels, output)
    gold: dict[str, list[int | None]]  # None: a text the check data does not label for that head

    @property
    def names(self) -> list[str]:
        return [spec["output"] for spec in self.heads.values()]

    @property
    def single(self) -> bool:
        """A one-classifier package, whose results keep their flat form."""
        return [spec["output"] for spec in self.heads.values()] == ["logits"]

    def sample(self, limit: int) -> Reference:
        """At most `limit` of the texts, evenly spaced, so each head's block of an `auto` check set
        keeps its share; token outputs cut to the sample's longest text, as a run on it lays them out."""
        n = len(self.encoded.ids)
        if n <= limit:
            return self
        rows = np.linspace(0, n - 1, limit).round().astype(int).tolist()
        e = self.encoded
        encoded = Encoded([e.ids[i] for i in rows], [e.type_ids[i] for i in rows], [e.truncated[i] for i in rows],
                          [e.offsets[i] for i in rows] if e.offsets else [])
        width = max(encoded.lengths(), default=0)
        outputs = {name: values[rows, :width] if values.ndim > 2 else values[rows]
                   for name, values in self.outputs.items()}
        return Reference(encoded, outputs, self.heads, {head: [g[i] for i in rows] for head, g in self.gold.items()})


def reference(ckpt: Checkpoint, encoded: Encoded, checks: CheckSet | None, task: str | None = None) -> Reference:
    """torch on `encoded`, with the gold labels of `checks` for every sequence head they fit."""
    heads = ckpt.output_heads(task)
    gold = {}
    for head, spec in heads.items():
        found = checks.gold_indices(spec["labels"], head) if checks is not None and spec["kind"] == SEQUENCE else None
        if found is not None:
            gold[head] = found
    return Reference(encoded, torch_outputs(ckpt, encoded), heads, gold)


def torch_outputs(ckpt: Checkpoint, encoded: Encoded, batch_size: int = 32) -> dict[str, np.ndarray]:
    """The source model on exactly the token ids the runtime builds (same padding per batch)."""
    import torch

    names = [spec["output"] for spec in ckpt.output_heads().values()]
    batches = []
    for group in plan_batches(encoded.lengths(), batch_size, 1 << 30, bucketing=True):
        arrays = feeds(encoded, group, ckpt.input_names, ckpt.pad_token_id)
        with torch.inference_mode():
            found = ckpt.forward({k: torch.from_numpy(v) for k, v in arrays.items()})
        batches.append((group, [found[name].float().numpy() for name in names]))
    return gather_outputs(encoded, names, batches)


def tokenizer_agreement(ckpt: Checkpoint, encoded: Encoded, texts: list[str]) -> float:
    """Share of texts the runtime tokenizer encodes exactly as the training tokenizer does."""
    hf = ckpt.tokenizer(texts, truncation=True, max_length=ckpt.max_length)["input_ids"]
    same = sum(list(a) == list(b) for a, b in zip(hf, encoded.ids, strict=True))
    return same / max(len(texts), 1)


def compare(ref: Reference, outputs: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Every head's figures against torch's (flat for a single classifier)."""
    heads = {head: _compare_head(ref, spec, outputs[spec["output"]], ref.gold.get(head))
             for head, spec in ref.heads.items()}
    if ref.single:
        return next(iter(heads.values()))
    agreements = [r.get("label_agreement", r.get("token_agreement")) for r in heads.values()]
    return {"n": len(ref.encoded.ids), "label_agreement": min((a for a in agreements if a is not None), default=1.0),
            "mean_abs_diff": max((r["mean_abs_diff"] for r in heads.values() if "mean_abs_diff" in r), default=0.0),
            "heads": heads}


def _compare_head(ref: Reference, spec: dict[str, Any], values: np.ndarray,
                  gold: list[int | None] | None) -> dict[str, Any]:
    expected = ref.outputs[spec["output"]]
    n = len(expected)
    if spec["kind"] == EMBEDDING:
        cosine = (values * expected).sum(-1) / np.maximum(
            np.linalg.norm(values, axis=-1) * np.linalg.norm(expected, axis=-1), 1e-12)
        return {"n": n, "min_cosine": float(cosine.min()) if n else 1.0,
                "mean_cosine": float(cosine.mean()) if n else 1.0,
                "max_abs_diff": float(np.abs(values - expected).max()) if n else 0.0}
    if spec["kind"] == TOKEN:
        return _compare_tokens(ref.encoded, spec["labels"], values, expected)
    predicted, wanted = values.argmax(axis=-1), expected.argmax(axis=-1)
    diff = np.abs(values - expected)
    return {
        "n": n,
        "max_abs_diff": float(diff.max()) if n else 0.0,
        "label_agreement": float((predicted == wanted).mean()) if n else 1.0,
        "accuracy": _accuracy(predicted, gold),
        "mean_abs_diff": float(diff.mean()) if n else 0.0,
    }


def _accuracy(predicted: np.ndarray, gold: list[int | None] | None) -> float | None:
    """Over the texts labelled for this head; None when there are none."""
    if gold is None:
        return None
    pairs = [(int(p), g) for p, g in zip(predicted, gold, strict=True) if g is not None]
    return sum(p == g for p, g in pairs) / len(pairs) if pairs else None


def _compare_tokens(encoded: Encoded, labels: list[str], values: np.ndarray, expected: np.ndarray) -> dict[str, Any]:
    """Token labels over every text's own tokens, and the entity spans they decode to."""
    lengths = encoded.lengths()
    mask = np.arange(values.shape[1])[None, :] < np.asarray(lengths, dtype=np.int64)[:, None]
    predicted, wanted = values.argmax(axis=-1), expected.argmax(axis=-1)
    diff = np.abs(values - expected)[mask]
    both = union = 0
    for i, n in enumerate(lengths):  # the spans as the stream decodes them (scorer.best_bio)
        outside = special_tokens(encoded.offsets[i]) if encoded.offsets else None
        ours = set(bio_spans([labels[k] for k in best_bio(softmax(values[i, :n]), labels, outside)]))
        theirs = set(bio_spans([labels[k] for k in best_bio(softmax(expected[i, :n]), labels, outside)]))
        both, union = both + len(ours & theirs), union + len(ours | theirs)
    tokens = int(mask.sum())
    return {"n": len(lengths), "tokens": tokens,
            "max_abs_diff": float(diff.max()) if tokens else 0.0,
            "mean_abs_diff": float(diff.mean()) if tokens else 0.0,
            "token_agreement": float((predicted == wanted)[mask].mean()) if tokens else 1.0,
            "entity_spans": union, "span_agreement": both / union if union else 1.0}


def accuracies(result: dict[str, Any]) -> Accuracy:
    """The accuracy (per head for a multi-head package) that reduced variants are held to."""
    if "heads" in result:
        return {head: r.get("accuracy") for head, r in result["heads"].items()}
    return result.get("accuracy")


def check_variant(variant: str, model: Path, ref: Reference, pad_id: int,
                  fp32_accuracy: Accuracy = None) -> dict[str, Any]:
    """Run one ONNX file on the check texts and judge it; a variant that cannot run on this
    host (fp16 without a GPU whose CPU kernels are missing) comes back "unchecked"."""
    from stream.core.scorer import cuda_available

    device = "cuda" if variant == "fp16" and cuda_available() else "cpu"
    plans = BATCH_PLANS if variant == "int8" else {"bucketed": BATCH_PLANS["bucketed"]}
    try:
        session, provider = create_session(model, device)
        by_plan = {name: compare(ref, run_outputs(session, ref.encoded, pad_id, ref.names, **plan))
                   for name, plan in plans.items()}
    except (ModelError, RuntimeError) as exc:
        if variant != "fp16":
            raise
        return {"status": UNCHECKED, "provider": None, "reason": f"unchecked on this host: {exc}"}
    failures = {name: judge(variant, found, fp32_accuracy) for name, found in by_plan.items()}
    worst = min(by_plan, key=lambda name: (-len(failures[name]), by_plan[name]["label_agreement"],
                                           by_plan[name].get("accuracy") or 0))
    result = by_plan[worst] | {"provider": provider}
    if len(by_plan) > 1:
        result |= {"batch_plan": worst, "by_batch_plan": by_plan}
    result["status"] = FAILED if failures[worst] else PASSED
    if failures[worst]:
        result["reason"] = "; ".join(failures[worst])
    return result


def judge(variant: str, result: dict[str, Any], fp32_accuracy: Accuracy) -> list[str]:
    """Why `result` fails the gate (nothing: it passes); a multi-head result fails with any head."""
    if "heads" not in result:
        baseline = fp32_accuracy if not isinstance(fp32_accuracy, Mapping) else None
        return _judge_sequence(variant, result, baseline)
    failures = []
    for head, found in result["heads"].items():
        baseline = fp32_accuracy.get(head) if isinstance(fp32_accuracy, Mapping) else None
        if "min_cosine" in found:
            failures += _judge_embedding(variant, found)
            continue
        failures += [f"{head}: {why}" for why in (_judge_tokens(variant, found) if "token_agreement" in found
                                                  else _judge_sequence(variant, found, baseline))]
    return failures


def _judge_sequence(variant: str, result: dict[str, Any], fp32_accuracy: float | None) -> list[str]:
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


def _judge_tokens(variant: str, result: dict[str, Any]) -> list[str]:
    if variant == "fp32":
        if result["max_abs_diff"] > FP32_ATOL:
            return [f"max abs token logit difference {result['max_abs_diff']:.2e} > {FP32_ATOL:g}"]
    elif result["token_agreement"] < MIN_AGREEMENT:
        return [f"token label agreement {result['token_agreement']:.2%} < {MIN_AGREEMENT:.0%}"]
    return []


def _judge_embedding(variant: str, result: dict[str, Any]) -> list[str]:
    floor = FP32_MIN_COSINE if variant == "fp32" else MIN_COSINE
    if result["min_cosine"] < floor:
        return [f"{EMBEDDING}: min cosine to torch {result['min_cosine']:.5f} < {floor:g}"]
    return []
