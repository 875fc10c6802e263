"""Scoring a labelled split with a classifier checkpoint: batching, metrics, the printed report."""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from models.datasets import Example, load_dataset
from models.splits import SPLITS
from stream.core.errors import DataError, ModelError


@dataclass
class Encoded:
    """Token ids of a list of texts (unpadded) and their label ids."""

    features: list[dict[str, list[int]]]
    labels: list[int]
    truncated: int  # texts cut at max_length

    def __len__(self) -> int:
        return len(self.labels)


def encode(tokenizer: Any, examples: Sequence[Example], label2id: dict[str, int], max_length: int) -> Encoded:
    texts = [e.text for e in examples]
    full = tokenizer(texts, truncation=False, verbose=False)["input_ids"] if texts else []
    enc = tokenizer(texts, truncation=True, max_length=max_length) if texts else {}
    keys = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in enc]
    features = [{k: enc[k][i] for k in keys} for i in range(len(texts))]
    truncated = sum(1 for ids in full if len(ids) > max_length)
    return Encoded(features, [label2id[e.label] for e in examples], truncated)


def length_grouped_batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of similar lengths (less padding = much less CPU time), in random order."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * 50
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i], reverse=True)
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def collate(tokenizer: Any, encoded: Encoded, indices: Sequence[int]) -> dict[str, torch.Tensor]:
    batch = tokenizer.pad([encoded.features[i] for i in indices], return_tensors="pt")
    batch["labels"] = torch.tensor([encoded.labels[i] for i in indices], dtype=torch.long)
    return dict(batch)


def _sorted_batches(encoded: Encoded, batch_size: int) -> Iterator[list[int]]:
    order = sorted(range(len(encoded)), key=lambda i: len(encoded.features[i]["input_ids"]))
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


@torch.inference_mode()
def predict(
    model: Any, tokenizer: Any, encoded: Encoded, batch_size: int, desc: str = "scoring"
) -> tuple[np.ndarray, float]:
    """Class probabilities, shape (texts, labels), in input order; and the mean cross-entropy loss."""
    was_training = model.training
    model.eval()
    probs = np.zeros((len(encoded), model.config.num_labels), dtype=np.float32)
    total_loss = 0.0
    batches = list(_sorted_batches(encoded, batch_size))
    for indices in tqdm(batches, desc=desc, unit="batch", leave=False, disable=len(batches) < 5):
        out = model(**collate(tokenizer, encoded, indices))
        total_loss += float(out.loss) * len(indices)
        probs[indices] = out.logits.float().softmax(-1).cpu().numpy()
    model.train(was_training)
    return probs, total_loss / max(1, len(encoded))


def metrics(y_true: Sequence[int], probs: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """sklearn's classification report (as a dict and as text), the confusion matrix, calibration."""
    from sklearn.metrics import classification_report, confusion_matrix

    y_pred = probs.argmax(axis=1).tolist() if len(probs) else []
    ids = list(range(len(labels)))
    kwargs: dict[str, Any] = {"labels": ids, "target_names": list(labels), "zero_division": 0, "digits": 4}
    report = classification_report(y_true, y_pred, output_dict=True, **kwargs)
    return {
        "accuracy": float(np.mean(np.asarray(y_true) == np.asarray(y_pred))) if len(y_true) else 0.0,
        "macro_f1": float(report["macro avg"]["f1-score"]),
        "weighted_f1": float(report["weighted avg"]["f1-score"]),
        "support": len(y_true),
        "report": report,
        "report_text": classification_report(y_true, y_pred, **kwargs),
        "confusion_matrix": {
            "labels": list(labels),
            "rows_true_columns_predicted": confusion_matrix(y_true, y_pred, labels=ids).tolist(),
        },
        "calibration": calibration(y_true, probs),
    }


def calibration(y_true: Sequence[int], probs: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """How far the top-label probability (the `score` the stream stores) is from the accuracy:
    expected calibration error over equal-width confidence bins."""
    if not len(probs):
        return {"ece": 0.0, "mean_confidence": 0.0, "bins": []}
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(y_true)
    edges = np.linspace(0.0, 1.0, bins + 1)
    rows, ece = [], 0.0
    for lower, upper in itertools.pairwise(edges):
        inside = (confidence > lower) & (confidence <= upper)
        if not inside.any():
            continue
        accuracy, mean_conf = float(correct[inside].mean()), float(confidence[inside].mean())
        ece += inside.mean() * abs(accuracy - mean_conf)
        rows.append(
            {
                "range": [round(float(lower), 2), round(float(upper), 2)],
                "count": int(inside.sum()),
                "accuracy": accuracy,
                "confidence": mean_conf,
            }
        )
    return {"ece": float(ece), "mean_confidence": float(confidence.mean()), "bins": rows}


def format_confusion(matrix: dict[str, Any]) -> str:
    labels, rows = matrix["labels"], matrix["rows_true_columns_predicted"]
    width = max(8, *(len(lb) for lb in labels))
    cell = max(6, *(len(lb) for lb in labels))
    corner = "true \\ pred"
    lines = [f"{corner:<{width}}  " + " ".join(f"{lb:>{cell}}" for lb in labels)]
    lines += [f"{lb:<{width}}  " + " ".join(f"{n:>{cell}}" for n in row) for lb, row in zip(labels, rows, strict=True)]
    return "\n".join(lines)


# ------------------------------------------------------------------ `yuqing evaluate`


def load_classifier(model_dir: Path) -> tuple[Any, Any, dict[str, Any]]:
    """Model, tokenizer and (if present) the training report of a fine-tuned checkpoint."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if not (model_dir / "config.json").is_file():
        raise ModelError(f"{model_dir} is not a model checkpoint (no config.json)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        model = AutoModelForSequenceClassification.from_pretrained(str(model_dir))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load {model_dir}: {str(exc).strip().splitlines()[0]}") from None
    report_path = model_dir / "training_report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    return model, tokenizer, report


def evaluate(
    model_dir: Path,
    data: str,
    *,
    split: str = "test",
    batch_size: int = 64,
    max_length: int | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    model, tokenizer, training = load_classifier(model_dir)
    id2label = {int(k): v for k, v in model.config.id2label.items()}
    labels = [id2label[i] for i in range(len(id2label))]
    dataset = load_dataset(data, task=training.get("task"), limit=limit)
    unknown = sorted({e.label for e in dataset.examples} - set(labels))
    if unknown:
        raise DataError(f"{data} has label(s) {', '.join(unknown)} the model does not know ({', '.join(labels)})")
    parts = dataset.splits()
    examples = dataset.examples if split == "all" else parts[split]  # type: ignore[index]
    if not examples:
        raise DataError(f"{data}: the {split} split is empty")
    length = (
        max_length
        or int(training.get("hyperparameters", {}).get("max_length", 0))
        or min(512, int(getattr(tokenizer, "model_max_length", 512) or 512))
    )
    length = min(length, int(getattr(model.config, "max_position_embeddings", length) or length))
    encoded = encode(tokenizer, examples, {lb: i for i, lb in enumerate(labels)}, length)
    probs, loss = predict(model, tokenizer, encoded, batch_size)
    result = metrics(encoded.labels, probs, labels)
    result.update(
        {
            "model": str(model_dir),
            "data": data,
            "split": split,
            "loss": loss,
            "max_length": length,
            "truncated": encoded.truncated,
            "dataset_stats": dataset.stats,
        }
    )
    return result


SPLIT_CHOICES = (*SPLITS, "all")
