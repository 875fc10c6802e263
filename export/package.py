"""`build_package`: checkpoint -> gated ONNX variants -> a versioned model package, all or nothing.

The package is assembled in a hidden temporary directory beside the target and renamed into
place only after every variant passed the parity gate, so a reader never sees half a package.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from export import onnx_export, parity
from export.check_data import CheckSet, load_check_set
from export.checkpoint import Checkpoint, load_checkpoint
from stream.core.errors import ModelError, ParityError
from stream.core.manifest import (
    FORMAT_VERSION,
    MANIFEST,
    TOKENIZER,
    VARIANT_FILES,
    Manifest,
    content_version,
    hash_files,
    read_manifest,
)
from stream.core.scorer import encode, load_tokenizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportOptions:
    model_dir: Path
    out: Path
    int8: bool = False
    fp16: bool = False
    opset: int = onnx_export.DEFAULT_OPSET
    check_data: str | None = None
    check_limit: int = 1000
    max_length: int | None = None
    name: str | None = None
    task: str | None = None
    optimize: bool = True
    int8_scheme: str = "auto"  # or one of onnx_export.INT8_SCHEMES
    progress: bool = True


def build_package(opts: ExportOptions) -> Manifest:
    """Export, gate and write the package at `opts.out`; raises ParityError/ModelError, leaving nothing."""
    if opts.out.exists() and not (opts.out / MANIFEST).is_file() and any(opts.out.iterdir()):
        raise ModelError(f"{opts.out} exists and is not a model package", hint="choose another --out")
    steps = 4 + 2 * opts.int8 + 2 * opts.fp16 + opts.optimize
    with tqdm(total=steps, desc="export", unit="step", disable=not opts.progress) as bar, \
            _staging(opts.out) as tmp:

        def step(what: str) -> None:
            bar.set_postfix_str(what)
            log.info("export: %s", what)

        step("loading checkpoint")
        ckpt = load_checkpoint(opts.model_dir, opts.max_length)
        ckpt.tokenizer.backend_tokenizer.save(str(tmp / TOKENIZER))
        _normalise_tokenizer(tmp / TOKENIZER)
        checks = load_check_set(opts.check_data, opts.check_limit)
        encoded = encode(load_tokenizer(tmp / TOKENIZER, ckpt.max_length), checks.texts)
        bar.update()

        step("torch reference")
        ref = parity.Reference(encoded, parity.torch_logits(ckpt, encoded), checks.gold_indices(ckpt.labels))
        tok_agreement = parity.tokenizer_agreement(ckpt, encoded, checks.texts)
        if tok_agreement < 1.0:
            raise ParityError(f"the package tokenizer encodes {1 - tok_agreement:.1%} of the check texts "
                              "differently from the checkpoint's tokenizer")
        bar.update()

        step("exporting fp32 ONNX")
        fp32 = tmp / VARIANT_FILES["fp32"]
        onnx_export.export_fp32(ckpt, fp32, opts.opset)
        bar.update()

        graph: dict[str, Any] = {"optimized": False}
        variants: dict[str, dict[str, Any]] = {}
        if opts.optimize:
            step("fusing transformer ops")
            graph = _optimize(ckpt, fp32, ref, variants)
            bar.update()
        if "fp32" not in variants:
            variants["fp32"] = parity.check_variant("fp32", fp32, ref, ckpt.pad_token_id)
        _gate("fp32", variants["fp32"], graph)
        fp32_accuracy = variants["fp32"]["accuracy"]

        if opts.int8:
            step("building int8")
            schemes = onnx_export.INT8_SCHEMES if opts.int8_scheme == "auto" else (opts.int8_scheme,)
            variants["int8"] = _int8(fp32, tmp / VARIANT_FILES["int8"], ref, ckpt.pad_token_id, fp32_accuracy,
                                     schemes)
            bar.update()
            _gate("int8", variants["int8"], graph)
            bar.update()
        if opts.fp16:
            step("building fp16")
            path = tmp / VARIANT_FILES["fp16"]
            _build("fp16", onnx_export.convert_fp16, fp32, path)
            bar.update()
            step("parity fp16")
            variants["fp16"] = parity.check_variant("fp16", path, ref, ckpt.pad_token_id, fp32_accuracy)
            _gate("fp16", variants["fp16"], graph)
            bar.update()

        step("writing manifest")
        manifest = _manifest(opts, ckpt, tmp, variants, graph, checks, tok_agreement)
        (tmp / MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        bar.update()
    return read_manifest(opts.out)


def _build(variant: str, convert: Any, src: Path, dst: Path, *args: Any) -> Any:
    try:
        return convert(src, dst, *args)
    except Exception as exc:
        raise ModelError(f"building the {variant} variant failed: {str(exc)[:400]}") from None


def _int8(fp32: Path, out: Path, ref: parity.Reference, pad_id: int, fp32_accuracy: float | None,
          schemes: Sequence[str]) -> dict[str, Any]:
    """The first quantization scheme that holds parity (or the last one's failed result)."""
    attempts: list[dict[str, Any]] = []
    result: dict[str, Any] = {}
    for scheme in schemes:
        settings = _build("int8", onnx_export.quantize_int8, fp32, out, scheme)
        result = parity.check_variant("int8", out, ref, pad_id, fp32_accuracy) | {"quantization": settings}
        attempts.append({"scheme": scheme, "status": result["status"], "reason": result.get("reason"),
                         "label_agreement": result["label_agreement"], "accuracy": result["accuracy"]})
        if result["status"] == parity.PASSED:
            break
        log.warning("int8 scheme %r misses parity (%s)", scheme, result.get("reason"))
    return result | {"attempts": attempts}


def _optimize(ckpt: Checkpoint, fp32: Path, ref: parity.Reference,
              variants: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Swap in the fused graph if it holds parity; otherwise keep the plain one and say why."""
    fused = fp32.with_name("fused.onnx")
    try:
        stats = onnx_export.optimize_graph(fp32, fused, ckpt)
    except Exception as exc:
        log.warning("transformer fusion failed, keeping the plain graph: %s", exc)
        return {"optimized": False, "reason": f"optimizer failed: {str(exc)[:200]}"}
    result = parity.check_variant("fp32", fused, ref, ckpt.pad_token_id)
    if result["status"] != parity.PASSED:
        fused.unlink()
        log.warning("the fused graph fails parity (%s); keeping the plain graph", result.get("reason"))
        return {"optimized": False, "reason": f"fused graph failed parity: {result.get('reason')}",
                "fused_ops": stats}
    fused.replace(fp32)
    variants["fp32"] = result
    return {"optimized": True, "fused_ops": stats}


def _gate(variant: str, result: dict[str, Any], graph: dict[str, Any]) -> None:
    if result["status"] == parity.FAILED:
        note = "" if variant != "fp32" or graph.get("optimized") else f" (graph: {graph.get('reason', 'plain')})"
        raise ParityError(
            f"the {variant} ONNX variant failed the parity gate: {result['reason']}{note}",
            hint="no package was written" + ("" if variant == "fp32" else f"; without --{variant} the others ship"),
        )


def _normalise_tokenizer(path: Path) -> None:
    """Drop fixed padding/truncation saved with the tokenizer; the runtime sets its own."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    tokenizer.save(str(path))


def _manifest(opts: ExportOptions, ckpt: Checkpoint, tmp: Path, variants: dict[str, dict[str, Any]],
              graph: dict[str, Any], checks: CheckSet, tok_agreement: float) -> dict[str, Any]:
    import onnx
    import onnxruntime
    import torch
    import transformers

    name = ckpt.name(opts.name)
    report = ckpt.report
    files = [TOKENIZER, *(VARIANT_FILES[v] for v in variants)]
    return {
        "format": FORMAT_VERSION,
        "name": name,
        "task": ckpt.task(opts.task),
        "version": content_version(name, tmp / VARIANT_FILES["fp32"], ckpt.labels, tmp / TOKENIZER),
        "labels": ckpt.labels,
        "max_length": ckpt.max_length,
        "inputs": ckpt.input_names,
        "output": "logits",
        "pad_token_id": ckpt.pad_token_id,
        "base_model": ckpt.base_model(),
        "architecture": getattr(ckpt.config, "model_type", None),
        "training": {
            "data": report.get("data") or report.get("dataset"),
            "test_metrics": ckpt.test_metrics(),
            "report": ckpt.training_summary(),
        },
        "export": {
            "source": ckpt.path.resolve().name,
            "opset": opts.opset,
            "int8": opts.int8,
            "fp16": {"keep_io_types": True} if opts.fp16 else False,
            "graph": graph,
            "check_data": {"source": checks.source, "n": len(checks.texts),
                           "labelled": checks.gold_indices(ckpt.labels) is not None},
            "tokenizer_agreement": tok_agreement,
            "thresholds": parity.THRESHOLDS,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "onnx": onnx.__version__,
        },
        "opset": opts.opset,
        "onnxruntime": onnxruntime.__version__,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "variants": {v: _variant_entry(v, result) for v, result in variants.items()},
        "files": hash_files(tmp, files),
    }


def _variant_entry(variant: str, result: dict[str, Any]) -> dict[str, Any]:
    parity_result = dict(result)
    entry: dict[str, Any] = {"file": VARIANT_FILES[variant]}
    if "quantization" in parity_result:
        entry["quantization"] = parity_result.pop("quantization")
    return entry | {"parity": parity_result}


@contextmanager
def _staging(target: Path) -> Iterator[Path]:
    """A temporary directory beside `target`, renamed onto it on success and removed on failure."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
    try:
        if target.exists():
            target.rename(old)
        tmp.rename(target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not target.exists():
            old.rename(target)
        raise
    shutil.rmtree(old, ignore_errors=True)
