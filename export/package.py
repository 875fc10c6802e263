"""`build_package`: checkpoint -> gated ONNX variants -> a versioned model package, all or nothing.

The package is assembled in a hidden temporary directory beside the target and renamed into
place only after every variant passed the parity gate, so a reader never sees half a package.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from export import onnx_export, parity, quantize, trim
from export.check_data import AUTO_CHECK, CheckSet, load_check_set, load_head_check_sets, load_split
from export.checkpoint import Checkpoint, load_checkpoint
from stream.core.errors import DataError, ModelError, ParityError
from stream.core.manifest import (
    FORMAT_VERSION,
    MANIFEST,
    MULTIHEAD_FORMAT,
    SEQUENCE,
    TOKENIZER,
    VARIANT_FILES,
    Manifest,
    content_version,
    hash_files,
    read_manifest,
)
from stream.core.scorer import CHARS_PER_TOKEN, encode, load_tokenizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportOptions:
    model_dir: Path
    out: Path
    int8: bool = False
    fp16: bool = False
    opset: int = onnx_export.DEFAULT_OPSET
    check_data: str | None = None  # a spec or file (see export.check_data); "auto": each head's training data
    check_limit: int = 1000  # texts, per head with "auto"
    max_length: int | None = None
    name: str | None = None
    task: str | None = None
    optimize: bool = True
    fp32_graph: str | None = None  # "plain" or "fused" (where it holds parity) ships that graph; None: the faster
    int8_scheme: str = "auto"  # or one of quantize.FAMILIES
    calibration_limit: int = 256  # training texts that set the static activation ranges
    trim_vocab: str | None = None  # a models.datasets spec whose texts count the pieces; "auto": the training data
    trim_languages: tuple[str, ...] = trim.DEFAULT_LANGUAGES
    trim_margin: int = trim.DEFAULT_MARGIN
    progress: bool = True


def build_package(opts: ExportOptions) -> Manifest:
    """Export, gate and write the package at `opts.out`; raises ParityError/ModelError, leaving nothing."""
    if opts.out.exists() and not (opts.out / MANIFEST).is_file() and any(opts.out.iterdir()):
        raise ModelError(f"{opts.out} exists and is not a model package", hint="choose another --out")
    steps = 4 + 2 * opts.int8 + 2 * opts.fp16 + opts.optimize + bool(opts.trim_vocab)
    with tqdm(total=steps, desc="export", unit="step", disable=not opts.progress) as bar, \
            _staging(opts.out) as tmp:

        def step(what: str) -> None:
            bar.set_postfix_str(what)
            log.info("export: %s", what)

        step("loading checkpoint")
        ckpt = load_checkpoint(opts.model_dir, opts.max_length)
        checks = _check_texts(opts, ckpt, "test", opts.check_limit) or load_check_set(opts.check_data, opts.check_limit)
        bar.update()
        vocab_trim: dict[str, Any] | None = None
        if opts.trim_vocab:
            step("trimming the vocabulary")
            ckpt, vocab_trim = _trim(opts, ckpt, checks)
            bar.update()
        ckpt.tokenizer.backend_tokenizer.save(str(tmp / TOKENIZER))
        _normalise_tokenizer(tmp / TOKENIZER)
        encoded = encode(load_tokenizer(tmp / TOKENIZER, ckpt.max_length), checks.texts)

        step("torch reference")
        ref = parity.reference(ckpt, encoded, checks, opts.task)
        tok_agreement = parity.tokenizer_agreement(ckpt, encoded, checks.texts)
        if tok_agreement < 1.0:
            raise ParityError(f"the package tokenizer encodes {1 - tok_agreement:.1%} of the check texts "
                              "differently from the checkpoint's tokenizer")
        bar.update()

        step("exporting fp32 ONNX")
        fp32 = tmp / VARIANT_FILES["fp32"]
        onnx_export.export_fp32(ckpt, fp32, opts.opset)
        # Over the graph as exported: the fused one may ship instead where it times faster, and the
        # same weights keep one version wherever they are exported.
        version = _version(opts, ckpt, fp32, tmp / TOKENIZER)
        if opts.int8:  # static int8 starts from the plain graph (see export.quantize)
            shutil.copyfile(fp32, tmp / _PLAIN)
        bar.update()

        graph: dict[str, Any] = {"optimized": False, "fp32_graph": "plain"}
        variants: dict[str, dict[str, Any]] = {}
        if opts.optimize:
            step("fusing transformer ops")
            graph = _optimize(ckpt, fp32, ref, variants, opts.fp32_graph)
            bar.update()
        if "fp32" not in variants:
            variants["fp32"] = parity.check_variant("fp32", fp32, ref, ckpt.pad_token_id)
        _gate("fp32", variants["fp32"], graph)
        fp32_accuracy = parity.accuracies(variants["fp32"])

        int8_search: list[dict[str, Any]] = []
        if opts.int8:
            step("searching int8 schemes")
            variants["int8"] = _int8(opts, ckpt, checks, tmp, ref, fp32_accuracy, int8_search,
                                     graph.get("speed_b32", {}).get(graph["fp32_graph"]))
            bar.update()
            _gate("int8", variants["int8"], graph)
            bar.update()
        if opts.fp16:
            step("building fp16")
            path = tmp / VARIANT_FILES["fp16"]
            _build("fp16", onnx_export.convert_fp16, tmp / FUSED if (tmp / FUSED).is_file() else fp32, path)
            bar.update()
            step("parity fp16")
            variants["fp16"] = parity.check_variant("fp16", path, ref, ckpt.pad_token_id, fp32_accuracy)
            _gate("fp16", variants["fp16"], graph)
            bar.update()

        (tmp / FUSED).unlink(missing_ok=True)
        step("writing manifest")
        manifest = _manifest(opts, ckpt, tmp, version, variants, graph, checks, tok_agreement)
        manifest["export"] |= {"vocab_trim": vocab_trim, "int8_search": int8_search or None}
        (tmp / MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        bar.update()
    return read_manifest(opts.out)


def _build(variant: str, convert: Any, src: Any, dst: Path, *args: Any) -> Any:
    try:
        return convert(src, dst, *args)
    except Exception as exc:
        raise ModelError(f"building the {variant} variant failed: {str(exc)[:400]}") from None


_PLAIN = "plain.onnx"
FUSED = "fused.onnx"


def _int8(opts: ExportOptions, ckpt: Checkpoint, checks: CheckSet, tmp: Path, ref: parity.Reference,
          fp32_accuracy: parity.Accuracy, searches: list[dict[str, Any]],
          fp32_speed: dict[str, float] | None = None) -> dict[str, Any]:
    """Every family's first scheme that holds the gate (the family with every node int8, else the
    sensitivity search's steps in turn); the fastest of those at batch 32 ships.  Returns its gate
    result with every attempt, or the last failed one."""
    pad = ckpt.pad_token_id
    fp32, plain = tmp / VARIANT_FILES["fp32"], tmp / _PLAIN
    calibration = (_check_texts(opts, ckpt, "train", opts.calibration_limit)
                   or _texts(_training_data(ckpt) or opts.check_data, "train", opts.calibration_limit, checks))
    selection = _selection(opts, ckpt, checks, ref)
    calibration_encoded = encode(load_tokenizer(tmp / TOKENIZER, ckpt.max_length), calibration.texts)
    families = quantize.FAMILIES if opts.int8_scheme == "auto" else (opts.int8_scheme,)
    # The search judges accuracy against torch's on the selection texts, not fp32's on the check texts.
    selection_accuracy = parity.accuracies(parity.compare(selection, selection.outputs))
    # The fp32 graph's speed, unless the graph choice already timed it on the same texts.
    fp32_speed = fp32_speed or quantize.items_per_cpu_second(fp32, ref.encoded, pad)
    attempts: list[dict[str, Any]] = []
    passed: list[tuple[dict[str, Any], Path]] = []
    failed: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix=".int8-", dir=tmp.parent) as work_dir:
        work = Path(work_dir)
        builder = quantize.Builder(fp32, plain, work, lambda: quantize.EncodedReader(
            calibration_encoded, ckpt.input_names, pad))
        probes = {family: quantize.probe(builder, family, selection, pad) for family in families}
        static = [f for f in families if f.startswith("static_")]
        best_static = min(static, key=lambda f: probes[f].every_node["mean_abs_diff"]) if static else None
        for family, found in probes.items():
            schemes: Iterator[quantize.Scheme] = iter([quantize.Scheme(family)])
            searched = ("dynamic", quantize.PER_TOKEN, best_static)
            if not quantize.holds(found.every_node, selection_accuracy) and family in searched:
                schemes = quantize.sensitive_schemes(builder, found, selection, pad, selection_accuracy)
            for scheme in schemes:
                path = work / f"{scheme.name}.onnx"
                settings = _build("int8", builder.build, scheme, path)
                result = parity.check_variant("int8", path, ref, pad, fp32_accuracy) | {"quantization": settings}
                attempt = {"scheme": scheme.name, "status": result["status"], "reason": result.get("reason"),
                           "label_agreement": result["label_agreement"], "accuracy": parity.accuracies(result),
                           "fp32_nodes": settings["fp32_nodes"], "size_mb": round(path.stat().st_size / 1e6, 1)}
                attempts.append(attempt)
                if result["status"] == parity.PASSED:
                    attempt["speed_b32"] = quantize.items_per_cpu_second(path, ref.encoded, pad)
                    attempt["vs_fp32_per_cpu_s"] = round(attempt["speed_b32"]["items_per_cpu_s"]
                                                         / fp32_speed["items_per_cpu_s"], 3)
                    passed.append((result | {"speed_b32": attempt["speed_b32"]}, path))
                    break
                failed = result
                log.warning("int8 scheme %s misses parity (%s)", scheme.name, result.get("reason"))
            searches.append(found.to_json())
        plain.unlink()
        if not passed:
            return failed | {"attempts": attempts, "fp32_speed_b32": fp32_speed}
        result, path = max(passed, key=lambda p: p[0]["speed_b32"]["items_per_cpu_s"])
        path.replace(tmp / VARIANT_FILES["int8"])
    return result | {"attempts": attempts, "fp32_speed_b32": fp32_speed}


def _training_data(ckpt: Checkpoint) -> str | None:
    """The dataset spec the training report names, if it names one."""
    data = ckpt.report.get("data") or ckpt.report.get("dataset")
    return data if isinstance(data, str) and data else None


def _trim_corpus(ckpt: Checkpoint) -> str | None:
    """What `--trim-vocab auto` counts: the training data; of a multi-head checkpoint every head's
    (its entity corpora too), each part once."""
    data = ckpt.report.get("data")
    if isinstance(data, dict):
        parts = [part.strip() for spec in data.values() for part in str(spec).split("+") if part.strip()]
        return "+".join(dict.fromkeys(parts)) or None
    return _training_data(ckpt)


def _check_texts(opts: ExportOptions, ckpt: Checkpoint, split: str, limit: int) -> CheckSet | None:
    """With `--check-data auto`, the `split` of the training data: of a multi-head checkpoint every
    sequence head's own (`limit` texts each, labelled for that head), so each head is held to its
    accuracy on its own texts; None without `auto`."""
    if opts.check_data != AUTO_CHECK:
        return None
    data = ckpt.report.get("data")
    if isinstance(data, dict):
        sequence = {h for h, spec in ckpt.output_heads(opts.task).items() if spec["kind"] == SEQUENCE}
        specs = {h: str(spec) for h, spec in data.items() if h in sequence}
        if specs:
            return load_head_check_sets(specs, split, limit)
    spec = _training_data(ckpt)
    if spec is None:
        raise DataError("--check-data auto: the training report names no dataset",
                        hint="pass --check-data SPEC or a CSV/JSONL file")
    found = load_split(spec, split, limit)
    if found is None:
        raise DataError(f"--check-data auto: the {split} split of {spec} is empty")
    return found


def _texts(spec: str | None, split: str, limit: int, fallback: CheckSet) -> CheckSet:
    """A split of a dataset spec, else the check texts."""
    found = load_split(spec, split, limit) if spec else None
    return found if found is not None else fallback


def _selection(opts: ExportOptions, ckpt: Checkpoint, checks: CheckSet, ref: parity.Reference) -> parity.Reference:
    """The texts the int8 search judges by: the check data's validation split, else the check texts."""
    texts = _check_texts(opts, ckpt, "validation", opts.check_limit) or _texts(
        opts.check_data, "validation", opts.check_limit, checks)
    if texts is checks:
        return ref
    return parity.reference(ckpt, encode(ref_tokenizer(ckpt), texts.texts), texts, opts.task)


def ref_tokenizer(ckpt: Checkpoint) -> Any:
    """The checkpoint's tokenizer as the runtime builds it (no padding, truncating to max_length)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(ckpt.tokenizer.backend_tokenizer.to_str())
    tokenizer.no_padding()
    tokenizer.enable_truncation(ckpt.max_length)
    return tokenizer


def _trim(opts: ExportOptions, ckpt: Checkpoint, checks: CheckSet) -> tuple[Checkpoint, dict[str, Any]]:
    """The checkpoint with a trimmed vocabulary; fails the export if it changes the model's labels."""
    from models.datasets import NER_PREFIX, load_dataset, load_ner

    spec = _trim_corpus(ckpt) if opts.trim_vocab == "auto" else opts.trim_vocab
    if not spec:
        raise ModelError("--trim-vocab auto: the training report names no training data",
                         hint="pass the corpora to count, e.g. --trim-vocab builtin:NAME")
    # Entity corpora count by their texts: People's Daily's full sentences cover far more of
    # written Chinese than headlines do.
    corpus = [e.text for part in str(spec).split("+")
              for e in (load_ner(part) if part.startswith(NER_PREFIX) else load_dataset(part)).examples]
    full = ref_tokenizer(ckpt)
    full.no_truncation()
    counts = trim.piece_counts(full, corpus, ckpt.max_length * CHARS_PER_TOKEN)
    chosen = trim.choose_pieces(json.loads(full.to_str()), counts, opts.trim_languages, opts.trim_margin)
    full.enable_truncation(ckpt.max_length)
    before = parity.reference(ckpt, encode(full, checks.texts), None, opts.task)
    trimmed = trim.trim_checkpoint(ckpt, chosen)
    tokens = trim.compare_tokenizers(full, ref_tokenizer(trimmed), chosen, checks.texts)
    after = encode(ref_tokenizer(trimmed), checks.texts)
    # Per-text heads only: where the trimmed tokenizer splits a text differently its tokens do not line up.
    per_text = dataclasses.replace(before, heads={h: s for h, s in before.heads.items() if s["kind"] == SEQUENCE})
    labels = parity.compare(per_text, parity.torch_outputs(trimmed, after))
    if labels["label_agreement"] < parity.MIN_AGREEMENT:
        raise ParityError(f"the trimmed vocabulary changes {1 - labels['label_agreement']:.1%} of the labels",
                          hint="count more corpora (--trim-vocab) or raise --trim-margin")
    return trimmed, {"corpus": spec, "corpus_texts": len(corpus), "languages": list(opts.trim_languages),
                     "margin": opts.trim_margin, "vocab_before": chosen.vocab_before, "vocab_after": len(chosen.kept),
                     "kept_by": chosen.kept_by, "check_tokenization": tokens,
                     "check_label_agreement_with_full_vocab": labels["label_agreement"]}


def _optimize(ckpt: Checkpoint, fp32: Path, ref: parity.Reference, variants: dict[str, dict[str, Any]],
              wanted: str | None = None) -> dict[str, Any]:
    """Build the fused graph; if it holds parity, ship the `wanted` graph as fp32, else time it
    against the plain one at batch 32 and ship the faster (on some CPUs ORT's fused
    SkipLayerNormalization and Attention kernels lose to the plain ops).  A fused graph that holds
    parity stays beside the package as `FUSED` for the fp16 (GPU) variant, which wants the fused
    kernels; else say why not."""
    fused = fp32.with_name(FUSED)
    try:
        stats = onnx_export.optimize_graph(fp32, fused, ckpt)
    except Exception as exc:
        log.warning("transformer fusion failed, keeping the plain graph: %s", exc)
        return {"optimized": False, "fp32_graph": "plain", "reason": f"optimizer failed: {str(exc)[:200]}"}
    result = parity.check_variant("fp32", fused, ref, ckpt.pad_token_id)
    if result["status"] != parity.PASSED:
        fused.unlink()
        log.warning("the fused graph fails parity (%s); keeping the plain graph", result.get("reason"))
        return {"optimized": False, "fp32_graph": "plain",
                "reason": f"fused graph failed parity: {result.get('reason')}", "fused_ops": stats}
    timing: dict[str, Any]
    if wanted is None:
        speed = {name: quantize.items_per_cpu_second(path, ref.encoded, ckpt.pad_token_id)
                 for name, path in (("plain", fp32), ("fused", fused))}
        kept = "fused" if speed["fused"]["items_per_cpu_s"] >= speed["plain"]["items_per_cpu_s"] else "plain"
        timing = {"speed_b32": speed}
    else:
        kept, timing = wanted, {"chosen": "asked for"}
    if kept == "fused":
        shutil.copyfile(fused, fp32)
        variants["fp32"] = result
    log.info("fp32 graph: %s (%s)", kept, timing)
    return {"optimized": True, "fp32_graph": kept, "fused_ops": stats} | timing


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


def _version(opts: ExportOptions, ckpt: Checkpoint, fp32: Path, tokenizer: Path) -> str:
    heads = ckpt.output_heads(opts.task)
    labels: list[str] | dict[str, list[str]] = (
        ckpt.labels if ckpt.heads is None else {h: spec.get("labels", []) for h, spec in heads.items()})
    return content_version(ckpt.name(opts.name), fp32, labels, tokenizer)


def _manifest(opts: ExportOptions, ckpt: Checkpoint, tmp: Path, version: str, variants: dict[str, dict[str, Any]],
              graph: dict[str, Any], checks: CheckSet, tok_agreement: float) -> dict[str, Any]:
    import onnx
    import onnxruntime
    import torch
    import transformers

    name = ckpt.name(opts.name)
    report = ckpt.report
    files = [TOKENIZER, *(VARIANT_FILES[v] for v in variants)]
    heads = ckpt.output_heads(opts.task)
    layout: dict[str, Any]
    if ckpt.heads is None:
        fmt, layout = FORMAT_VERSION, {"labels": ckpt.labels, "output": "logits"}
        labelled: Any = checks.gold_indices(ckpt.labels, ckpt.task(opts.task)) is not None
    else:
        fmt, layout = MULTIHEAD_FORMAT, {"heads": heads}
        labelled = [h for h, spec in heads.items()
                    if spec["kind"] == SEQUENCE and checks.gold_indices(spec["labels"], h) is not None]
    return {
        "format": fmt,
        "name": name,
        "task": ckpt.task(opts.task),
        "version": version,
        **layout,
        "max_length": ckpt.max_length,
        "inputs": ckpt.input_names,
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
                           "labelled": labelled},
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
