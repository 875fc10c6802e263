"""Fine-tuning recipe: a sequence classifier on an encoder base, chosen by validation macro-F1,
judged once on the test split, saved as a plain Hugging Face checkpoint with its report."""

from __future__ import annotations

import json
import logging
import os
import platform
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import click
import torch
from tqdm.auto import tqdm

from models.bases import check_encoder, describe_checkpoint, load_config, resolve_base
from models.datasets import canonical_task, check_splits, label_table, load_dataset
from models.evaluation import collate, encode, length_grouped_batches, metrics, predict
from models.splits import SPLITS, normalize_text
from stream.core.errors import DataError, ModelError
from stream.core.host import busy_elsewhere, cpu_flags, usable_cpus

log = logging.getLogger(__name__)

FULL_LR, LORA_LR = 2e-5, 2e-4
AUTO, FP32, BF16 = "auto", "fp32", "bf16"
PRECISIONS = (AUTO, FP32, BF16)
T = TypeVar("T")


@dataclass(frozen=True)
class TrainConfig:
    task: str
    data: str
    base: str
    out: Path
    epochs: int = 3
    lr: float | None = None  # None: FULL_LR, or LORA_LR with --lora
    batch_size: int = 32
    max_length: int = 128
    seed: int = 42
    freeze_embeddings: bool = False
    lora: bool = False
    lora_r: int = 8
    limit: int | None = None
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    threads: int | None = None  # None: see cpu_threads()
    precision: str = AUTO  # see train_precision()

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else LORA_LR if self.lora else FULL_LR


def train_precision(requested: str) -> str:
    """`requested`, or for `auto` bf16 where the CPU multiplies bfloat16 natively (AVX512-BF16 or
    AMX-BF16) and fp32 elsewhere, where bf16 is emulated and slower.  bf16 runs each step's forward
    pass under autocast (the weights, the optimizer and every evaluation stay fp32): on a 2-core
    Zen 4 a demo step (me5-small, 16 texts) took 0.35 s instead of 0.59 s."""
    if requested not in PRECISIONS:
        raise DataError(f"unknown precision {requested!r}", hint=f"one of {', '.join(PRECISIONS)}")
    if requested != AUTO:
        return requested
    flags, _, _ = cpu_flags()
    return BF16 if flags & {"avx512_bf16", "amx_bf16"} else FP32


def cpu_threads(requested: int | None) -> int:
    """`requested`, else the usable CPUs that other processes are not already keeping busy.

    On a shared machine, torch threads that outnumber the free cores wait on each other at every
    parallel region: one thread on a loaded 2-core box runs several times faster than two."""
    if requested:
        return requested
    usable = usable_cpus()
    busy = busy_elsewhere()
    if busy is None:
        # No /proc/stat: the load average, which also counts this process's own recent work.
        try:
            busy = os.getloadavg()[0]
        except OSError:
            busy = 0.0
    return max(1, min(usable, usable - int(busy + 0.5)))


def train(config: TrainConfig, echo: Callable[[str], None] = click.echo) -> dict[str, Any]:
    """Run the whole recipe; returns the training report (also written to the output dir)."""
    started = time.time()
    if config.epochs < 1 or config.batch_size < 1 or config.max_length < 8:
        raise DataError("--epochs and --batch-size must be positive and --max-length at least 8")

    # 1. Everything that can be wrong with the inputs fails here, before any weight is loaded.
    precision = train_precision(config.precision)
    base = resolve_base(config.base)
    check_encoder(load_config(base), config.base)
    config = replace(config, task=canonical_task(config.task) or config.task)  # `topic` is `risk` now
    dataset = load_dataset(config.data, task=config.task, limit=config.limit)
    parts = dataset.splits()
    check_splits(dataset, parts)
    labels = list(dataset.labels)
    test_texts = {normalize_text(e.text) for e in parts["test"]}
    if any(normalize_text(e.text) in test_texts for e in parts["train"]):  # guards the split rule
        raise RuntimeError("a test text is in the train split")
    echo(f"data {config.data}: {dataset.stats}")
    echo(label_table(labels, parts))

    # 2. Model and tokenizer.
    threads = cpu_threads(config.threads)
    torch.set_num_threads(threads)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed
    from transformers import logging as hf_logging
    from transformers.optimization import get_linear_schedule_with_warmup

    set_seed(config.seed)
    rng = random.Random(config.seed)
    label2id = {label: i for i, label in enumerate(labels)}
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "newly initialized head" notice is expected here
    try:
        tokenizer = AutoTokenizer.from_pretrained(base.location)
        model = AutoModelForSequenceClassification.from_pretrained(
            base.location,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id=label2id,
        )
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load base {config.base!r}: {str(exc).strip().splitlines()[0]}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    model.config.problem_type = "single_label_classification"
    max_length = _usable_length(config.max_length, model, tokenizer)
    if max_length != config.max_length:
        echo(f"--max-length {config.max_length} exceeds what {config.base} takes; using {max_length}")
        config = replace(config, max_length=max_length)
    if config.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    if config.lora:
        model = _with_lora(model, config)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    echo(
        f"base {config.base} -> {base.location}; {trainable:,} of {total:,} parameters trainable; "
        f"{threads} CPU thread(s), {precision}"
    )

    encoded = {name: encode(tokenizer, parts[name], label2id, config.max_length) for name in SPLITS}
    for name in SPLITS:
        if encoded[name].truncated:
            share = encoded[name].truncated / len(encoded[name])
            echo(f"{name}: {encoded[name].truncated} texts ({share:.0%}) cut at {config.max_length} tokens")

    # 3. Optimizer, warmup then linear decay.
    optimizer = optimizer_for(model, config.learning_rate, config.weight_decay)
    lengths = [len(f["input_ids"]) for f in encoded["train"].features]
    steps_per_epoch = -(-len(lengths) // config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)

    # 4. Epochs; keep the weights of the best validation macro-F1.
    history: list[dict[str, Any]] = []
    best = BestEpoch()
    train_set = encoded["train"]

    def loss_of(indices: list[int]) -> tuple[torch.Tensor, int]:
        return model(**collate(tokenizer, train_set, indices)).loss, len(indices)

    model.train()
    for epoch in range(1, config.epochs + 1):
        epoch_start = time.time()
        batches = length_grouped_batches(lengths, config.batch_size, rng)
        totals = fit_epoch(model, optimizer, scheduler, batches, loss_of, f"epoch {epoch}/{config.epochs}",
                           precision)
        probs, val_loss = predict(model, tokenizer, encoded["validation"], config.batch_size * 2, "validation")
        val = metrics(encoded["validation"].labels, probs, labels)
        row = {
            "epoch": epoch,
            "train_loss": sum(totals) / max(1, len(lengths)),
            "validation_loss": val_loss,
            "validation_accuracy": val["accuracy"],
            "validation_macro_f1": val["macro_f1"],
            "seconds": round(time.time() - epoch_start, 1),
        }
        history.append(row)
        improved = best.offer(model, epoch, val["macro_f1"], val_loss)
        echo(
            f"epoch {epoch}: train loss {row['train_loss']:.4f}, validation loss {val_loss:.4f}, "
            f"accuracy {val['accuracy']:.4f}, macro-F1 {val['macro_f1']:.4f}"
            f"{' (best)' if improved else ''}, {row['seconds']}s"
        )
    best.restore(model)
    best_epoch, best_f1 = best.epoch, best.score
    if config.lora:
        model = model.merge_and_unload()  # export sees a plain checkpoint

    # 5. The test split, once, with the chosen weights.
    probs, test_loss = predict(model, tokenizer, encoded["test"], config.batch_size * 2, "test")
    test = metrics(encoded["test"].labels, probs, labels)
    test["loss"] = test_loss
    echo(f"test (best epoch {best_epoch}):\n{test['report_text']}")
    echo(
        f"mean top-label probability {test['calibration']['mean_confidence']:.3f}, "
        f"expected calibration error {test['calibration']['ece']:.3f}"
    )

    report = {
        "task": config.task,
        "data": config.data,
        "dataset_stats": dataset.stats,
        "split_rule": "sha1(NFKC, stripped, whitespace-collapsed, lowercased text) mod 10: 0 test, 1 validation",
        "split_sizes": {name: len(parts[name]) for name in SPLITS},
        "label_counts": {name: {lb: sum(e.label == lb for e in parts[name]) for lb in labels} for name in SPLITS},
        "truncated": {name: encoded[name].truncated for name in SPLITS},
        "labels": labels,
        "base": {
            "spec": config.base,
            "location": base.location,
            "description": base.description,
            **describe_checkpoint(Path(base.location)),
        },
        "hyperparameters": {
            **{k: v for k, v in asdict(config).items() if k not in ("task", "data", "base", "out", "lr")},
            "lr": config.learning_rate,
            "threads": threads,
            "precision": precision,
            "optimizer": "AdamW",
            "schedule": "linear warmup then linear decay",
            "steps": total_steps,
            "trainable_parameters": trainable,
        },
        "epochs": history,
        "best_epoch": best_epoch,
        "best_validation_macro_f1": best_f1,
        "test": {k: v for k, v in test.items() if k != "report_text"},
        "test_accuracy": test["accuracy"],
        "test_macro_f1": test["macro_f1"],
        "seed": config.seed,
        "duration_seconds": 0.0,
        "versions": _versions(),
    }
    _save(lambda staging: model.save_pretrained(str(staging)), tokenizer, config.out, report, started)
    echo(
        f"saved {config.out} (test accuracy {test['accuracy']:.4f}, macro-F1 {test['macro_f1']:.4f}, "
        f"{report['duration_seconds']:.0f}s)"
    )
    return report


@dataclass
class BestEpoch:
    """The trainable weights of the best epoch so far: the higher validation score, ties (common on
    small validation sets) to the lower validation loss."""

    score: float = -1.0
    loss: float = float("inf")
    epoch: int = 0
    weights: dict[str, torch.Tensor] | None = None

    def offer(self, model: torch.nn.Module, epoch: int, score: float, loss: float) -> bool:
        """Keep `model`'s weights if this epoch is the best yet; says whether it was."""
        if not (score > self.score or (score == self.score and loss < self.loss)):
            return False
        self.score, self.loss, self.epoch = score, loss, epoch
        self.weights = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        return True

    def restore(self, model: torch.nn.Module) -> None:
        if self.weights is None:
            return
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name in self.weights:
                    param.copy_(self.weights[name])


def fit_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
              batches: Sequence[T], loss_of: Callable[[T], tuple[torch.Tensor, int]], desc: str,
              precision: str = FP32) -> list[float]:
    """One pass: a step per batch (gradients clipped at norm 1, the schedule advanced), with a
    progress bar of the running loss; returns each batch's loss times its examples.  With bf16 the
    loss is computed under CPU autocast and the backward pass runs outside it, as autocast wants."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    totals: list[float] = []
    seen = 0
    bar = tqdm(batches, desc=desc, unit="batch", dynamic_ncols=True)
    for batch in bar:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == BF16):
            loss, n = loss_of(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        totals.append(float(loss.detach()) * n)
        seen += n
        bar.set_postfix(loss=f"{sum(totals) / seen:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
    bar.close()
    return totals


def optimizer_for(
    model: torch.nn.Module, lr: float, weight_decay: float, fresh: tuple[str, float] = ("", 1.0)
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, without decay on biases and LayerNorm; parameters named
    with the prefix `fresh[0]` (newly initialized heads) learn at `fresh[1]` times `lr`."""
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    prefix, scale = fresh
    for name, param in model.named_parameters():
        if param.requires_grad:
            key = (bool(prefix) and name.startswith(prefix), param.ndim >= 2 and "LayerNorm" not in name)
            groups.setdefault(key, []).append(param)
    return torch.optim.AdamW(
        [
            {"params": params, "lr": lr * scale if is_fresh else lr, "weight_decay": weight_decay if decays else 0.0}
            for (is_fresh, decays), params in groups.items()
        ],
        lr=lr,
    )


def _usable_length(requested: int, model: Any, tokenizer: Any) -> int:
    """`requested`, capped by the model's position table and the tokenizer's declared limit."""
    limits = [requested, int(getattr(model.config, "max_position_embeddings", requested) or requested)]
    declared = getattr(tokenizer, "model_max_length", None)
    if isinstance(declared, int) and declared < 100_000:  # "no limit" is a huge sentinel
        limits.append(declared)
    return min(limits)


def _with_lora(model: Any, config: TrainConfig) -> Any:
    from peft import LoraConfig, TaskType, get_peft_model

    # The pooler is trained too: in me5-small it is freshly initialized.
    extra = ["pooler"] if any(name.endswith("pooler") for name, _ in model.named_modules()) else []
    lora = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=config.lora_r,
        lora_alpha=2 * config.lora_r,
        lora_dropout=0.1,
        modules_to_save=["classifier", *extra],
    )
    try:
        return get_peft_model(model, lora)
    except ValueError as exc:
        raise ModelError(f"LoRA does not support this base: {exc}") from None


def _save(
    write_model: Callable[[Path], None], tokenizer: Any, out: Path, report: dict[str, Any], started: float
) -> None:
    """Write into a staging directory and swap it in: a failed save never leaves half a model."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    write_model(staging)
    tokenizer.save_pretrained(str(staging))
    report["duration_seconds"] = round(time.time() - started, 1)
    (staging / "training_report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("yuqing", "torch", "transformers", "tokenizers", "peft", "scikit-learn", "safetensors"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions
