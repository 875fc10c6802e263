"""`yuqing export`, `yuqing models list` and `yuqing models verify`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from export.trim import DEFAULT_LANGUAGES, DEFAULT_MARGIN
from stream.core.errors import PackageIntegrityError
from stream.core.manifest import (
    UNCHECKED,
    VARIANT_FILES,
    Manifest,
    check_files,
    find_packages,
    read_manifest,
    verify_files,
)

DEFAULT_PACKAGES = Path("artifacts/packages")


@click.command("export")
@click.option("--model", "model_dir", required=True, type=click.Path(path_type=Path),
              help="Fine-tuned checkpoint directory (config, weights, tokenizer).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Package directory to write.")
@click.option("--int8", is_flag=True, help="Add a dynamically quantized int8 variant (CPU).")
@click.option("--fp16", is_flag=True, help="Add an fp16 variant (GPU).")
@click.option("--opset", default=17, show_default=True, type=click.IntRange(11, 23), help="ONNX opset.")
@click.option("--check-data", help="Parity data: a dataset spec (its test split), a CSV/JSONL file with a "
              "text column, or auto (the training data's test split; every head's own for a multi-head "
              "checkpoint, so each head's accuracy is checked); default: built-in zh/en sentences.")
@click.option("--check-limit", default=1000, show_default=True, type=click.IntRange(1),
              help="At most this many parity texts (per head with auto).")
@click.option("--max-length", type=click.IntRange(8), help="Token limit (default: training's, else 512).")
@click.option("--name", help="Model name (default: training report's, else the directory name).")
@click.option("--task", help="Task (default: training report's).")
@click.option("--no-optimize", is_flag=True, help="Skip ONNX Runtime's transformer fusions.")
@click.option("--fp32-graph", default="fastest", show_default=True, type=click.Choice(["fastest", "plain", "fused"]),
              help="The fp32 graph that ships: the one that times faster at batch 32, or this one (fused only "
              "where it holds parity).")
@click.option("--int8-scheme", default="auto", show_default=True,
              type=click.Choice(["auto", "dynamic", "per_token",
                                 "static_minmax", "static_entropy", "static_percentile"]),
              help="int8 family; auto searches every family and ships the fastest that holds parity.")
@click.option("--calibration-limit", default=256, show_default=True, type=click.IntRange(1),
              help="Training texts that calibrate static int8.")
@click.option("--trim-vocab", help="Keep only the vocabulary pieces these corpora (a dataset spec; auto: the "
              "training data) and the languages' scripts use; embedding rows are sliced to match.")
@click.option("--trim-languages", default=",".join(DEFAULT_LANGUAGES), show_default=True,
              help="Languages whose scripts the trimmed vocabulary keeps (comma-separated).")
@click.option("--trim-margin", default=DEFAULT_MARGIN, show_default=True, type=click.IntRange(0),
              help="Most probable pieces of those scripts kept beyond the corpora's.")
def export_command(model_dir: Path, out: Path, int8: bool, fp16: bool, opset: int, check_data: str | None,
                   check_limit: int, max_length: int | None, name: str | None, task: str | None,
                   no_optimize: bool, fp32_graph: str, int8_scheme: str, calibration_limit: int, trim_vocab: str | None,
                   trim_languages: str, trim_margin: int) -> None:
    """Export a classifier to an ONNX model package; fails (exit 7) if a variant misses parity."""
    from export.package import ExportOptions, build_package

    manifest = build_package(ExportOptions(
        model_dir=model_dir, out=out, int8=int8, fp16=fp16, opset=opset, check_data=check_data,
        check_limit=check_limit, max_length=max_length, name=name, task=task, optimize=not no_optimize,
        fp32_graph=None if fp32_graph == "fastest" else fp32_graph, int8_scheme=int8_scheme,
        calibration_limit=calibration_limit, trim_vocab=trim_vocab,
        trim_languages=tuple(x.strip() for x in trim_languages.split(",") if x.strip()), trim_margin=trim_margin,
    ))
    graph = manifest.data["export"]["graph"]
    click.echo(f"{manifest.version}  {manifest.task}  {_labels(manifest)}  -> {out}")
    click.echo(f"fp32 graph: {graph['fp32_graph']}" + (f" ({graph['reason']})" if graph.get("reason") else "")
               + "".join(f", {name} {speed['items_per_cpu_s']}" for name, speed in graph.get("speed_b32", {}).items())
               + (" items per CPU-second at batch 32" if graph.get("speed_b32") else ""))
    click.echo(f"parity on {manifest.data['export']['check_data']['n']} texts "
               f"({manifest.data['export']['check_data']['source']}):")
    click.echo(_table(["variant", "status", "max|Δlogit|", "agreement", "accuracy", "checked on", "MB", "note"],
                      [_parity_row(manifest, v) for v in manifest.variants]))
    trimmed = manifest.data["export"].get("vocab_trim")
    if trimmed:
        tokens = trimmed["check_tokenization"]
        click.echo(f"vocabulary: {trimmed['vocab_after']:,} of {trimmed['vocab_before']:,} pieces kept; "
                   f"{tokens['agreement']:.2%} of the check texts tokenize as with the full vocabulary")
    attempts = manifest.variants.get("int8", {}).get("parity", {}).get("attempts")
    if attempts:
        click.echo("int8 schemes (gate on the check texts; speed at batch 32, items per CPU-second):")
        click.echo(_table(["scheme", "status", "agreement", "accuracy", "fp32 nodes", "MB", "items/cpu-s", "vs fp32"],
                          [_attempt_row(a) for a in attempts]))


@click.command("list")
@click.argument("directory", required=False, type=click.Path(path_type=Path), default=DEFAULT_PACKAGES)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def models_list_command(directory: Path, as_json: bool) -> None:
    """Model packages under DIRECTORY (default artifacts/packages)."""
    rows: list[list[str]] = []
    data: list[dict[str, Any]] = []
    for path in find_packages(directory):
        try:
            manifest = read_manifest(path)
        except PackageIntegrityError as exc:
            rows.append([path.name, "?", "?", "?", f"unreadable: {exc.message}"])
            data.append({"path": str(path), "error": exc.message})
            continue
        variants = " ".join(f"{v}{'' if manifest.parity_status(v) != UNCHECKED else '(unchecked)'}"
                            for v in manifest.variants)
        rows.append([manifest.version, manifest.task, _labels(manifest),
                     _metrics(manifest.test_metrics()), variants])
        data.append({"path": str(path), "version": manifest.version, "task": manifest.task,
                     **({"labels": manifest.labels} if "heads" not in manifest.data else {}),
                     "heads": {h: spec.get("labels", spec.get("dim")) for h, spec in manifest.heads.items()},
                     "test_metrics": manifest.test_metrics(),
                     "variants": {v: manifest.parity_status(v) for v in manifest.variants}})
    if as_json:
        from stream.core.cli import echo_json

        echo_json(data)
    elif rows:
        click.echo(_table(["version", "task", "labels", "test metrics", "variants"], rows))
    else:
        click.echo(f"no model packages in {directory}")


@click.command("verify")
@click.argument("package", type=click.Path(path_type=Path))
@click.option("--load", is_flag=True, help="Also open every variant in an ONNX Runtime CPU session.")
def models_verify_command(package: Path, load: bool) -> None:
    """Re-check every file of PACKAGE against its manifest's sha256 (exit 6 on a mismatch)."""
    manifest = read_manifest(package)
    checks = check_files(manifest)
    for check in checks:
        click.echo(f"{check.status:9} {check.file}")
    verify_files(manifest)
    if load:
        from stream.core.scorer import create_session

        for variant in manifest.variants:
            _, provider = create_session(manifest.variant_path(variant), "cpu")
            click.echo(f"loaded    {VARIANT_FILES.get(variant, variant)} on {provider}")
    click.echo(f"{manifest.version}: ok")


def _parity_row(manifest: Manifest, variant: str) -> list[str]:
    p = manifest.variants[variant].get("parity", {})
    size = manifest.variant_path(variant).stat().st_size / 1e6

    def fmt(key: str, pattern: str) -> str:
        return pattern.format(p[key]) if p.get(key) is not None else "-"

    quantization = manifest.variants[variant].get("quantization")
    note = f"scheme {quantization['scheme']}" if quantization else p.get("reason", "")
    heads = p.get("heads") or {}
    worst_diff = max((h["max_abs_diff"] for h in heads.values()), default=None)
    return [variant, p.get("status", "?"),
            fmt("max_abs_diff", "{:.2e}") if not heads else f"{worst_diff:.2e}",
            fmt("label_agreement", "{:.2%}"),
            _accuracy({h: r.get("accuracy") for h, r in heads.items()} if heads else p.get("accuracy")),
            str(p.get("provider") or "-").removesuffix("ExecutionProvider"), f"{size:.1f}", note]


def _labels(manifest: Manifest) -> str:
    """A classifier's labels; a multi-head package's heads with their label counts (the embedding: its size)."""
    if "heads" not in manifest.data:
        return "labels=" + ",".join(manifest.labels)
    return "heads=" + ",".join(f"{h}:{len(spec['labels']) if 'labels' in spec else spec.get('dim')}"
                               for h, spec in manifest.heads.items())


def _accuracy(accuracy: Any) -> str:
    """One accuracy, or those of the heads the check data labels."""
    if isinstance(accuracy, dict):
        return " ".join(f"{h}={a:.2%}" for h, a in accuracy.items() if a is not None) or "-"
    return "-" if accuracy is None else f"{accuracy:.2%}"


def _attempt_row(attempt: dict[str, Any]) -> list[str]:
    speed = attempt.get("speed_b32") or {}
    return [attempt["scheme"], attempt["status"], f"{attempt['label_agreement']:.2%}",
            _accuracy(attempt.get("accuracy")), str(attempt.get("fp32_nodes", "-")),
            str(attempt.get("size_mb", "-")), str(speed.get("items_per_cpu_s", "-")),
            str(attempt.get("vs_fp32_per_cpu_s", "-"))]


def _metrics(metrics: dict[str, Any]) -> str:
    keys = [k for k in ("accuracy", "macro_f1", "f1_macro", "f1") if isinstance(metrics.get(k), int | float)]
    return " ".join(f"{k}={metrics[k]:.3f}" for k in keys) or "-"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows, strict=True)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)).rstrip()
             for row in [headers, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)

