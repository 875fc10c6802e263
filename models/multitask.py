"""Multi-task recipe: one encoder and one head per task (models/multihead.py), trained together.

Each head has its own dataset spec; every epoch visits every head's training batches once, in one
shuffled order (so heads are sampled in proportion to their data), with one optimizer over the
shared encoder and all heads.  The epoch kept is the one with the best mean validation score over
heads (macro-F1 for sequence heads, entity-level F1 for the token head).  Then a temperature per
sequence head is fitted on validation and every head is judged once on its test split.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch
from tqdm.auto import tqdm

from models.bases import check_encoder, describe_checkpoint, load_config, resolve_base
from models.datasets import (
    TASKS,
    Entity,
    NerExample,
    canonical_task,
    check_ner_splits,
    check_splits,
    label_table,
    load_dataset,
    load_ner,
)
from models.evaluation import Encoded, calibration, collate, encode, length_grouped_batches, metrics
from models.multihead import ENTITY_LABELS, SEQUENCE, TOKEN, HeadsConfig, HeadSpec, MultiHeadModel
from models.splits import SPLITS, Split, normalize_text
from models.training import (
    AUTO,
    FULL_LR,
    BestEpoch,
    _save,
    _usable_length,
    _versions,
    cpu_threads,
    fit_epoch,
    optimizer_for,
    train_precision,
)
from stream.core.errors import DataError, ModelError
from stream.core.scorer import token_entities

log = logging.getLogger(__name__)

ENTITIES = "entities"  # the token head; every other head is a sequence head
IGNORE = -100  # the label of special and padding tokens: no loss, no metric
ENTITY_ID = {label: i for i, label in enumerate(ENTITY_LABELS)}


@dataclass(frozen=True)
class MultiTaskConfig:
    heads: tuple[tuple[str, str], ...]  # (head name, dataset spec), in head order
    base: str
    out: Path
    epochs: int = 3
    lr: float = FULL_LR
    # Fresh heads learn this many times faster than the pretrained encoder: at one rate, a token
    # head stuck at all-O for the first hundreds of steps (entity F1 0.00 vs 0.37 after 100 steps).
    head_lr_scale: float = 30.0
    batch_size: int = 32
    max_length: int = 128
    seed: int = 42
    freeze_embeddings: bool = False
    limit_per_head: int | None = None
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    threads: int | None = None
    precision: str = AUTO  # see models.training.train_precision
    # One token per CJK character (split_cjk_chars).  Off: on the demo's four heads it raised entity
    # F1 0.43 -> 0.47 but cost sentiment and category 6-7 points of macro-F1; at reference size it
    # left MSRA where it was and cost two quality bars (models/README.md).
    cjk_chars: bool = False
    # (head name, multiplier of its loss); unnamed heads weigh 1.  More weight on a head pulls the
    # shared encoder its way without more steps (see "One encoder for every head" in models/README.md).
    head_weights: tuple[tuple[str, float], ...] = ()


# ------------------------------------------------------------------ entity token labels

# Han ideographs (the basic block, extension A, compatibility, and the supplementary planes).
CJK_CHAR = "[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003ffff]"


def split_cjk_chars(tokenizer: Any) -> bool:
    """Make the fast tokenizer give every CJK character its own token(s); True if it changed.

    SentencePiece joins characters into pieces ("在北京"), so token BIO labels cannot mark a span
    that starts or ends inside one.  A pre-tokenizer step isolates each character; the change lives
    in the backend, so the saved tokenizer.json (export, package, stream) tokenizes the same way.
    Metaspace's `always` prepends "▁" to every piece, which would turn each character into "▁" +
    char; `first` prepends only at the text's start, as before, so text without CJK is unchanged."""
    from tokenizers import Regex, pre_tokenizers

    backend = tokenizer.backend_tokenizer
    current = backend.pre_tokenizer
    if _has_cjk_split(current):
        return False
    steps = [] if current is None else [current]
    if isinstance(current, pre_tokenizers.Metaspace) and current.prepend_scheme == "always":
        current.prepend_scheme = "first"
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(CJK_CHAR), "isolated"), *steps])
    return True


def _has_cjk_split(pre_tokenizer: Any) -> bool:
    import json

    if pre_tokenizer is None:
        return False
    steps = json.loads(pre_tokenizer.__getstate__()).get("pretokenizers") or []
    return any(step.get("type") == "Split" and step.get("pattern") == {"Regex": CJK_CHAR} for step in steps)


def bio_labels(text: str, offsets: Sequence[tuple[int, int]], entities: Sequence[Entity]) -> list[str | None]:
    """The BIO label of each token from character spans; None for special tokens ((0, 0) offsets).

    A token whose characters (less leading whitespace: sentencepiece offsets include the space)
    hold an entity's first character is B- of it; a token inside an entity already begun is I-;
    anything else is O.  A token that ends one entity and starts the next is B- of the next."""
    begun: set[int] = set()
    labels: list[str | None] = []
    for start, end in offsets:
        if start == end:
            labels.append(None)
            continue
        piece = text[start:end]
        start += len(piece) - len(piece.lstrip())
        label = "O"
        if start < end:
            starting = next((j for j, e in enumerate(entities) if j not in begun and start <= e.start < end), None)
            inside = next((j for j, e in enumerate(entities) if e.start < end and e.end > start), None)
            chosen = starting if starting is not None else inside
            if chosen is not None:
                label = f"{'I' if chosen in begun else 'B'}-{entities[chosen].type}"
                begun.add(chosen)
        labels.append(label)
    return labels


@dataclass
class TokenEncoded:
    """Token ids of NER examples (unpadded), per-token label ids and character offsets."""

    features: list[dict[str, list[int]]]
    labels: list[list[int]]
    offsets: list[list[tuple[int, int]]]  # (0, 0) for special tokens
    examples: list[NerExample]
    truncated: int

    def __len__(self) -> int:
        return len(self.labels)


def encode_entities(tokenizer: Any, examples: Sequence[NerExample], max_length: int) -> TokenEncoded:
    texts = [e.text for e in examples]
    if not texts:
        return TokenEncoded([], [], [], [], 0)
    enc = tokenizer(texts, truncation=True, max_length=max_length, return_offsets_mapping=True,
                    return_special_tokens_mask=True)
    keys = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in enc]
    features, labels, offsets, truncated = [], [], [], 0
    for i, example in enumerate(examples):
        special = enc["special_tokens_mask"][i]
        spans = [(0, 0) if s else (int(a), int(b)) for (a, b), s in zip(enc["offset_mapping"][i], special, strict=True)]
        bio = bio_labels(example.text, spans, example.entities)
        features.append({k: enc[k][i] for k in keys})
        labels.append([IGNORE if b is None else ENTITY_ID[b] for b in bio])
        offsets.append(spans)
        # Cut when the last token seen ends before the text's last non-space character.
        truncated += max((b for _, b in spans), default=0) < len(example.text.rstrip())
    return TokenEncoded(features, labels, offsets, list(examples), truncated)


def entity_metrics(examples: Sequence[NerExample], predicted: Sequence[Sequence[Any]]) -> dict[str, Any]:
    """Exact span-and-type precision, recall and F1 (micro over entities), overall and per type.

    `predicted` holds objects with start, end and type (stream Entity records)."""
    counts: dict[str, Counter[str]] = {"all": Counter()}
    for gold, guess in _span_sets(examples, predicted):
        for key in gold | guess:
            outcome = "tp" if key in gold and key in guess else "fn" if key in gold else "fp"
            for bucket in ("all", key[2]):
                counts.setdefault(bucket, Counter())[outcome] += 1

    def score(c: Counter[str]) -> dict[str, float | int]:
        precision = c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else 0.0
        recall = c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {"precision": precision, "recall": recall, "f1": f1, "support": c["tp"] + c["fn"],
                "predicted": c["tp"] + c["fp"]}

    overall = score(counts.pop("all"))
    return {**overall, "by_type": {kind: score(c) for kind, c in sorted(counts.items())}, "texts": len(examples),
            "errors": entity_errors(examples, predicted)}


ENTITY_ERRORS = ("wrong_type", "boundary", "boundary_and_type", "missed", "spurious")


def entity_errors(examples: Sequence[NerExample], predicted: Sequence[Sequence[Any]]) -> dict[str, int]:
    """Where exact span-and-type matching loses.  Each gold entity without an exact match is
    `wrong_type` (a prediction has its span, another type), `boundary` (it overlaps a prediction of
    its type), `boundary_and_type` (it overlaps predictions of other types only) or `missed`
    (nothing overlaps it); a prediction without an exact match that overlaps no gold entity is
    `spurious`."""
    errors = dict.fromkeys(ENTITY_ERRORS, 0)
    for gold, guess in _span_sets(examples, predicted):
        for start, end, kind in gold - guess:
            overlapping = [g for g in guess if _overlap(g, (start, end, kind))]
            if any((g[0], g[1]) == (start, end) for g in overlapping):
                errors["wrong_type"] += 1
            elif any(g[2] == kind for g in overlapping):
                errors["boundary"] += 1
            else:
                errors["boundary_and_type" if overlapping else "missed"] += 1
        errors["spurious"] += sum(1 for g in guess - gold if not any(_overlap(g, x) for x in gold))
    return errors


Span = tuple[int, int, str]  # start, end, type


def _span_sets(examples: Sequence[NerExample],
               predicted: Sequence[Sequence[Any]]) -> Iterator[tuple[set[Span], set[Span]]]:
    """Per text, the gold and the predicted (start, end, type) sets that every entity score compares."""
    for example, found in zip(examples, predicted, strict=True):
        yield {(e.start, e.end, e.type) for e in example.entities}, {(e.start, e.end, e.type) for e in found}


def _overlap(a: Span, b: Span) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def format_entity_report(result: dict[str, Any]) -> str:
    lines = [f"{'type':<6} {'precision':>10} {'recall':>10} {'f1':>10} {'support':>8}"]
    rows = [*result["by_type"].items(), ("all", result)]
    lines += [f"{k:<6} {v['precision']:>10.4f} {v['recall']:>10.4f} {v['f1']:>10.4f} {v['support']:>8}"
              for k, v in rows]
    lines.append("gold entities not matched exactly: " + ", ".join(
        f"{result['errors'][k]} {k.replace('_', ' ')}" for k in ENTITY_ERRORS if k != "spurious")
        + f"; predictions overlapping no gold entity: {result['errors']['spurious']}")
    return "\n".join(lines)


# ------------------------------------------------------------------ heads' data


@dataclass
class HeadData:
    spec: HeadSpec
    data: str
    stats: dict[str, int]
    parts: dict[Split, list[Any]]  # Example for sequence heads, NerExample for the token head
    encoded: dict[Split, Encoded | TokenEncoded] = field(default_factory=dict)


def load_head_data(name: str, data: str, *, limit: int | None = None, train: bool = True) -> HeadData:
    """A head's dataset and splits; `train` also refuses data a head cannot learn from."""
    if name == ENTITIES:
        ner = load_ner(data, limit=limit)
        parts: dict[Split, list[Any]] = dict(ner.splits())
        if train:
            check_ner_splits(ner, ner.splits())
        return HeadData(HeadSpec(name, TOKEN, ENTITY_LABELS), data, ner.stats, parts)
    dataset = load_dataset(data, task=name if canonical_task(name) in TASKS else None, limit=limit)
    split = dataset.splits()
    if train:
        check_splits(dataset, split)
    return HeadData(HeadSpec(name, SEQUENCE, dataset.labels), data, dataset.stats, dict(split))


def encode_head(tokenizer: Any, spec: HeadSpec, examples: Sequence[Any], max_length: int) -> Encoded | TokenEncoded:
    if spec.kind == TOKEN:
        return encode_entities(tokenizer, examples, max_length)
    return encode(tokenizer, examples, {lb: i for i, lb in enumerate(spec.labels)}, max_length)


def _batch(tokenizer: Any, encoded: Encoded | TokenEncoded, indices: Sequence[int]) -> dict[str, torch.Tensor]:
    if isinstance(encoded, Encoded):
        return collate(tokenizer, encoded, indices)
    batch = dict(tokenizer.pad([encoded.features[i] for i in indices], return_tensors="pt"))
    width = batch["input_ids"].shape[1]  # right padding: labels of pad positions are IGNORE
    rows = [encoded.labels[i] + [IGNORE] * (width - len(encoded.labels[i])) for i in indices]
    batch["labels"] = torch.tensor(rows, dtype=torch.long)
    return batch


def _loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                             ignore_index=IGNORE)


@torch.inference_mode()
def head_logits(model: MultiHeadModel, tokenizer: Any, name: str, encoded: Encoded | TokenEncoded,
                batch_size: int, desc: str = "scoring") -> tuple[list[np.ndarray], float]:
    """Each text's raw logits for one head ((labels,) or (tokens, labels)), in input order; mean loss."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(encoded)), key=lambda i: len(encoded.features[i]["input_ids"]))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    out: list[np.ndarray] = [np.zeros(0)] * len(encoded)
    total = 0.0
    for indices in tqdm(batches, desc=desc, unit="batch", leave=False, disable=len(batches) < 5):
        batch = _batch(tokenizer, encoded, indices)
        labels = batch.pop("labels")
        logits = model(**batch)[name]
        total += float(_loss(logits, labels)) * len(indices)
        values = logits.float().cpu().numpy()
        for row, i in enumerate(indices):
            out[i] = values[row] if values.ndim == 2 else values[row, : len(encoded.features[i]["input_ids"])]
    model.train(was_training)
    return out, total / max(1, len(encoded))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits / temperature
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return np.asarray(z / z.sum(axis=-1, keepdims=True))


def predict_entities(encoded: TokenEncoded, logits: Sequence[np.ndarray]) -> list[tuple[Any, ...]]:
    """Token labels -> character spans, with the stream's own decoder."""
    found = []
    for example, offsets, values in zip(encoded.examples, encoded.offsets, logits, strict=True):
        found.append(token_entities(example.text, offsets, softmax(values), ENTITY_LABELS))
    return found


def score_head(model: MultiHeadModel, tokenizer: Any, spec: HeadSpec, encoded: Encoded | TokenEncoded,
               batch_size: int, temperature: float = 1.0,
               ignored: Sequence[str] = ()) -> tuple[dict[str, Any], list[np.ndarray]]:
    """A head's metrics on encoded texts (`score`: macro-F1 or entity F1) and its raw logits;
    `ignored` labels are never predicted (polarity data judged by a head that also says neutral)."""
    logits, loss = head_logits(model, tokenizer, spec.name, encoded, batch_size, spec.name)
    if isinstance(encoded, TokenEncoded):
        result = entity_metrics(encoded.examples, predict_entities(encoded, logits))
        result["score"] = result["f1"]
    else:
        kept = [i for i, label in enumerate(spec.labels) if label not in ignored]
        position = {k: n for n, k in enumerate(kept)}
        probs = softmax(np.stack(logits)[:, kept], temperature)
        result = metrics([position[y] for y in encoded.labels], probs, [spec.labels[k] for k in kept])
        result["score"] = result["macro_f1"]
    result["loss"] = loss
    return result, logits


def fit_temperature(logits: np.ndarray, labels: Sequence[int]) -> float:
    """The T minimizing the NLL of softmax(logits / T) (LBFGS on log T), kept within [0.05, 20]."""
    x = torch.tensor(logits, dtype=torch.float64)
    y = torch.tensor(list(labels), dtype=torch.long)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x / log_t.exp(), y)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return float(np.clip(float(log_t.detach().exp()), 0.05, 20.0))


# ------------------------------------------------------------------ the recipe


def train_multitask(config: MultiTaskConfig, echo: Callable[[str], None] = click.echo) -> dict[str, Any]:
    """Run the whole recipe; returns the training report (also written to the output dir)."""
    started = time.time()
    if config.epochs < 1 or config.batch_size < 1 or config.max_length < 8:
        raise DataError("--epochs and --batch-size must be positive and --max-length at least 8")
    names = [name for name, _ in config.heads]
    if not names or len(set(names)) != len(names) or "embedding" in names:
        raise DataError(f"give each head once, none named 'embedding': {names}")
    weights = dict(config.head_weights)
    if set(weights) - set(names) or any(w < 0 for w in weights.values()):
        raise DataError(f"--head-weight names heads of this run ({', '.join(names)}) with weights >= 0: {weights}")

    # 1. Every input problem fails here, before any weight is loaded.
    precision = train_precision(config.precision)
    base = resolve_base(config.base)
    check_encoder(load_config(base), config.base)
    heads = [load_head_data(name, data, limit=config.limit_per_head) for name, data in config.heads]
    _hold_out_across_heads(heads)
    for head in heads:
        echo(f"head {head.spec.name} ({head.spec.kind}) <- {head.data}: {head.stats}")
        if head.spec.kind == SEQUENCE:
            echo(label_table(head.spec.labels, head.parts))
        else:
            echo("  " + ", ".join(f"{s} {len(head.parts[s])} texts / "
                                  f"{sum(len(e.entities) for e in head.parts[s])} entities" for s in SPLITS))

    # 2. Model and tokenizer.
    threads = cpu_threads(config.threads)
    torch.set_num_threads(threads)
    from transformers import AutoTokenizer, set_seed
    from transformers.optimization import get_linear_schedule_with_warmup

    set_seed(config.seed)
    rng = random.Random(config.seed)
    heads_config = HeadsConfig([h.spec for h in heads])
    try:
        tokenizer = AutoTokenizer.from_pretrained(base.location)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load the tokenizer of base {config.base!r}: {str(exc).strip()[:300]}") from None
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(f"base {config.base!r} has no fast tokenizer: entity labels need its character offsets")
    if config.cjk_chars and split_cjk_chars(tokenizer):
        echo("tokenizer: one token per CJK character")
    model = MultiHeadModel.from_base(base.location, heads_config)
    max_length = _usable_length(config.max_length, model.encoder, tokenizer)
    if max_length != config.max_length:
        echo(f"--max-length {config.max_length} exceeds what {config.base} takes; using {max_length}")
    if config.freeze_embeddings:
        model.encoder.get_input_embeddings().weight.requires_grad_(False)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    echo(f"base {config.base} -> {base.location}; {trainable:,} of {total:,} parameters trainable; "
         f"{threads} CPU thread(s), {precision}")
    for head in heads:
        head.encoded = {s: encode_head(tokenizer, head.spec, head.parts[s], max_length) for s in SPLITS}
        for s in SPLITS:
            if head.encoded[s].truncated:
                echo(f"{head.spec.name} {s}: {head.encoded[s].truncated} texts cut at {max_length} tokens")

    # 3. One optimizer over encoder and heads (heads faster); warmup then linear decay.
    optimizer = optimizer_for(model, config.lr, config.weight_decay, fresh=("heads.", config.head_lr_scale))
    lengths = {h.spec.name: [len(f["input_ids"]) for f in h.encoded["train"].features] for h in heads}
    steps_per_epoch = sum(-(-len(v) // config.batch_size) for v in lengths.values())
    total_steps = steps_per_epoch * config.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)

    # 4. Epochs; keep the weights of the best mean validation score.
    by_name = {h.spec.name: h for h in heads}
    history: list[dict[str, Any]] = []
    best = BestEpoch()

    def loss_of(step: tuple[str, list[int]]) -> tuple[torch.Tensor, int]:
        name, indices = step
        batch = _batch(tokenizer, by_name[name].encoded["train"], indices)
        labels = batch.pop("labels")
        return weights.get(name, 1.0) * _loss(model(**batch)[name], labels), len(indices)

    model.train()
    for epoch in range(1, config.epochs + 1):
        epoch_start = time.time()
        plan = [(name, b) for name, ls in lengths.items()
                for b in length_grouped_batches(ls, config.batch_size, rng)]
        rng.shuffle(plan)
        totals = fit_epoch(model, optimizer, scheduler, plan, loss_of, f"epoch {epoch}/{config.epochs}", precision)
        validation = {h.spec.name: score_head(model, tokenizer, h.spec, h.encoded["validation"],
                                              config.batch_size * 2)[0] for h in heads}
        mean_score = float(np.mean([v["score"] for v in validation.values()]))
        mean_loss = float(np.mean([v["loss"] for v in validation.values()]))
        row = {
            "epoch": epoch,
            "train_loss": {n: sum(t for (head, _), t in zip(plan, totals, strict=True) if head == n)
                           / max(1, len(ls)) for n, ls in lengths.items()},
            "validation_loss": {n: v["loss"] for n, v in validation.items()},
            "validation_score": {n: v["score"] for n, v in validation.items()},
            "validation_mean_score": mean_score,
            "seconds": round(time.time() - epoch_start, 1),
        }
        history.append(row)
        improved = best.offer(model, epoch, mean_score, mean_loss)
        scores = ", ".join(f"{n} {v['score']:.4f}" for n, v in validation.items())
        echo(f"epoch {epoch}: validation {scores}; mean {mean_score:.4f}{' (best)' if improved else ''}, "
             f"{row['seconds']}s")
    best.restore(model)
    best_epoch, best_score = best.epoch, best.score

    # 5. Temperatures on validation; the test split, once, with the chosen weights.
    report_heads: dict[str, Any] = {}
    for head in heads:
        name = head.spec.name
        temperature = 1.0
        entry: dict[str, Any] = {"kind": head.spec.kind, "data": head.data, "labels": list(head.spec.labels),
                                 "dataset_stats": head.stats,
                                 "split_sizes": {s: len(head.parts[s]) for s in SPLITS},
                                 "truncated": {s: head.encoded[s].truncated for s in SPLITS}}
        if head.spec.kind == SEQUENCE:
            val_encoded = head.encoded["validation"]
            val_logits, _ = head_logits(model, tokenizer, name, val_encoded, config.batch_size * 2)
            temperature = fit_temperature(np.stack(val_logits), val_encoded.labels)  # type: ignore[arg-type]
            entry["label_counts"] = {s: dict(Counter(e.label for e in head.parts[s])) for s in SPLITS}
        else:
            entry["entity_counts"] = {s: dict(Counter(x.type for e in head.parts[s] for x in e.entities))
                                      for s in SPLITS}
        test, test_logits = score_head(model, tokenizer, head.spec, head.encoded["test"], config.batch_size * 2,
                                       temperature)
        if head.spec.kind == SEQUENCE:
            y = head.encoded["test"].labels
            before = calibration(y, softmax(np.stack(test_logits)))["ece"]  # type: ignore[arg-type]
            heads_config.calibration[name] = {"temperature": temperature, "ece_before": before,
                                              "ece_after": test["calibration"]["ece"]}
            entry.update(heads_config.calibration[name])
            echo(f"{name} test (best epoch {best_epoch}):\n{test['report_text']}")
            echo(f"{name}: temperature {temperature:.3f}; expected calibration error {before:.3f} -> "
                 f"{test['calibration']['ece']:.3f}")
        else:
            echo(f"{name} test (best epoch {best_epoch}), exact span and type:\n{format_entity_report(test)}")
        entry["test"] = {k: v for k, v in test.items() if k != "report_text"}
        report_heads[name] = entry

    report = {
        "task": "analysis",
        "heads": report_heads,
        "data": {name: data for name, data in config.heads},
        "split_rule": "sha1(NFKC, stripped, whitespace-collapsed, lowercased text) mod 10: 0 test, 1 validation "
                      "(corpora with their own test file, such as MSRA, keep it)",
        "base": {"spec": config.base, "location": base.location, "description": base.description,
                 **describe_checkpoint(Path(base.location))},
        "hyperparameters": {
            **{k: v for k, v in asdict(config).items() if k not in ("heads", "base", "out")},
            "max_length": max_length,
            "threads": threads,
            "precision": precision,
            "optimizer": "AdamW",
            "schedule": "linear warmup then linear decay",
            "sampling": "every head's batches once per epoch, shuffled together",
            "steps": total_steps,
            "trainable_parameters": trainable,
        },
        "epochs": history,
        "best_epoch": best_epoch,
        "best_validation_mean_score": best_score,
        "seed": config.seed,
        "duration_seconds": 0.0,
        "versions": _versions(),
    }
    _save(model.save, tokenizer, config.out, report, started)
    summary = ", ".join(f"{n} {h['test']['score']:.4f}" for n, h in report_heads.items())
    echo(f"saved {config.out} (test {summary}; {report['duration_seconds']:.0f}s)")
    return report


def _hold_out_across_heads(heads: Sequence[HeadData]) -> None:
    """The encoder is shared: a text held out as test by any head is trained on by none."""
    test = {normalize_text(e.text) for h in heads for e in h.parts["test"]}
    for head in heads:
        kept = [e for e in head.parts["train"] if normalize_text(e.text) not in test]
        if len(kept) != len(head.parts["train"]):
            head.stats["test_text_of_another_head_dropped"] = len(head.parts["train"]) - len(kept)
            head.parts["train"] = kept


# ------------------------------------------------------------------ `yuqing evaluate --head`


def evaluate_head(model_dir: Path, head: str, data: str, *, split: str = "test", batch_size: int = 64,
                  max_length: int | None = None, limit: int | None = None) -> dict[str, Any]:
    """One head of a multi-head checkpoint on a dataset split; probabilities after its temperature."""
    import json

    from transformers import AutoTokenizer

    from models import multihead

    model = multihead.load(model_dir)
    try:
        spec = model.config.head(head)
    except KeyError:
        raise DataError(f"{model_dir} has no head {head!r}; it has {[h.name for h in model.config.heads]}") from None
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    report_path = model_dir / "training_report.json"
    training = json.loads(report_path.read_text()) if report_path.is_file() else {}
    length = max_length or int(training.get("hyperparameters", {}).get("max_length", 0)) or 128
    loaded = load_head_data(head, data, limit=limit, train=False)
    if spec.kind == SEQUENCE:
        unknown = sorted({e.label for s in SPLITS for e in loaded.parts[s]} - set(spec.labels))
        if unknown:
            raise DataError(f"{data} has label(s) {', '.join(unknown)} the head does not know "
                            f"({', '.join(spec.labels)})")
    examples = [e for s in SPLITS for e in loaded.parts[s]] if split == "all" else loaded.parts[split]  # type: ignore[index]
    if not examples:
        raise DataError(f"{data}: the {split} split is empty")
    encoded = encode_head(tokenizer, spec, examples, length)  # the checkpoint's label order
    temperature = model.config.temperature(head)
    # Data with fewer labels than the head (2-class polarity for a 3-class sentiment head) is
    # judged on its own labels: the others are ignored, not counted as errors.
    ignored = [lb for lb in spec.labels if lb not in {e.label for e in examples}] if spec.kind == SEQUENCE else []
    result, _ = score_head(model, tokenizer, spec, encoded, batch_size, temperature, ignored)
    result.update({"model": str(model_dir), "head": head, "kind": spec.kind, "data": data, "split": split,
                   "temperature": temperature, "max_length": length, "truncated": encoded.truncated,
                   "dataset_stats": loaded.stats, "ignored_labels": ignored})
    return result
