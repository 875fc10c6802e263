"""The model package on disk: `manifest.json` beside the ONNX files and `tokenizer.json`.

A package is trusted only if every file listed in the manifest has the recorded sha256, so the
stream never scores with weights other than the ones that passed the parity gate.  This module
needs nothing but the standard library (the consumer install has no torch).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream.core.errors import PackageIntegrityError

MANIFEST = "manifest.json"
TOKENIZER = "tokenizer.json"
FORMAT_VERSION = 1  # one classifier: output `logits`, top-level `labels`
MULTIHEAD_FORMAT = 2  # one encoder, many heads: `heads` names each head's kind, labels and output
SEQUENCE, TOKEN, EMBEDDING = "sequence", "token", "embedding"  # head kinds
VARIANT_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx", "fp16": "model.fp16.onnx"}
# int8 weights on 7 bits: x86 without VNNI sums uint8 × int8 byte pairs into a saturating int16,
# which 8-bit weights overflow (export/per_token.py).  An int8 variant without `weight_bits` has 8.
INT8_WEIGHT_BITS = 7
# Parity status of a variant: passed the gate, or could not be run on the exporting host.
PASSED, UNCHECKED = "passed", "unchecked"
_REQUIRED = ("name", "task", "version", "max_length", "inputs", "variants", "files")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def content_version(name: str, fp32_onnx: Path, labels: Sequence[str] | Mapping[str, Sequence[str]],
                    tokenizer: Path) -> str:
    """`<name>-<12 hex>` over the fp32 graph, the labels (a list, or {head: labels}) and the
    tokenizer: same weights, same version."""
    digest = hashlib.sha256()
    for part in (fp32_onnx, tokenizer):
        digest.update(bytes.fromhex(sha256_file(part)))
    named = {str(k): list(v) for k, v in labels.items()} if isinstance(labels, Mapping) else list(labels)
    digest.update(json.dumps(named, ensure_ascii=False).encode())
    return f"{name}-{digest.hexdigest()[:12]}"


@dataclass(frozen=True)
class Manifest:
    """The parsed `manifest.json` of one package directory."""

    path: Path  # the package directory
    data: Mapping[str, Any]

    @property
    def name(self) -> str:
        return str(self.data["name"])

    @property
    def task(self) -> str:
        return str(self.data["task"])

    @property
    def version(self) -> str:
        return str(self.data["version"])

    @property
    def labels(self) -> list[str]:
        """The labels of a format-1 package; of a multi-head one's only sequence head, if it has one."""
        if "labels" in self.data:
            return [str(label) for label in self.data["labels"]]
        sequence = [h["labels"] for h in self.heads.values() if h["kind"] == SEQUENCE]
        if len(sequence) != 1:
            raise PackageIntegrityError(
                f"{self.path}: a package of {len(sequence)} sequence heads has no single label list")
        return [str(label) for label in sequence[0]]

    @property
    def heads(self) -> dict[str, dict[str, Any]]:
        """head -> {"kind", "labels", "output", ...}; a format-1 package is one sequence head named
        after its task, reading the output `logits`."""
        if "heads" in self.data:
            return {str(k): dict(v) for k, v in self.data["heads"].items()}
        return {self.task: {"kind": SEQUENCE, "labels": [str(x) for x in self.data["labels"]], "output": "logits"}}

    @property
    def max_length(self) -> int:
        return int(self.data["max_length"])

    @property
    def inputs(self) -> list[str]:
        return [str(name) for name in self.data["inputs"]]

    @property
    def pad_token_id(self) -> int:
        return int(self.data.get("pad_token_id", 0))

    @property
    def variants(self) -> dict[str, dict[str, Any]]:
        return {str(k): dict(v) for k, v in self.data["variants"].items()}

    @property
    def int8_weight_bits(self) -> int:
        quantization = self.variants.get("int8", {}).get("quantization") or {}
        return int(quantization.get("weight_bits", 8))

    def parity_status(self, variant: str) -> str:
        return str(self.variants[variant].get("parity", {}).get("status", UNCHECKED))

    def variant_path(self, variant: str) -> Path:
        return self.path / str(self.variants[variant]["file"])

    def test_metrics(self) -> dict[str, Any]:
        return dict((self.data.get("training") or {}).get("test_metrics") or {})


def read_manifest(package: Path) -> Manifest:
    """Parse and sanity-check a package's manifest (hashes are checked by `verify_files`)."""
    path = package / MANIFEST
    if not package.is_dir():
        raise PackageIntegrityError(f"{package} is not a model package directory", hint="see yuqing models list")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PackageIntegrityError(
            f"{package} has no {MANIFEST}", hint="export one with `yuqing export`"
        ) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackageIntegrityError(f"{path} is not valid JSON: {exc}", hint="re-export the package") from None
    if not isinstance(data, dict):
        raise PackageIntegrityError(f"{path} is not a JSON object", hint="re-export the package")
    multihead = data.get("format", FORMAT_VERSION) == MULTIHEAD_FORMAT or "heads" in data
    missing = [key for key in (*_REQUIRED, "heads" if multihead else "labels") if not data.get(key)]
    if missing:
        raise PackageIntegrityError(
            f"{path} lacks {', '.join(missing)}", hint="re-export the package with `yuqing export`"
        )
    if multihead:
        _check_heads(path, data["heads"])
    else:
        _check_labels(path, "labels", data.get("labels"))
    if not isinstance(data["variants"], dict) or "fp32" not in data["variants"]:
        raise PackageIntegrityError(f"{path}: the variants must include fp32", hint="re-export the package")
    for variant, entry in data["variants"].items():
        if not isinstance(entry, dict) or entry.get("file") not in data["files"]:
            raise PackageIntegrityError(f"{path}: variant {variant} names no hashed file")
    return Manifest(package, data)


def _check_labels(path: Path, what: str, labels: Any) -> None:
    if not isinstance(labels, list) or not labels or len(set(map(str, labels))) != len(labels):
        raise PackageIntegrityError(f"{path}: {what} must be a list of distinct names, got {labels!r}",
                                    hint="re-export the package with `yuqing export`")


def _check_heads(path: Path, heads: Any) -> None:
    """A format-2 `heads`: every head a known kind with its own output; labelled heads with labels,
    calibrated ones with a positive temperature, the embedding with its dimension."""
    if not isinstance(heads, dict) or not heads:
        raise PackageIntegrityError(f"{path}: a format-{MULTIHEAD_FORMAT} manifest needs a non-empty heads object",
                                    hint="re-export the package with `yuqing export`")
    outputs = []
    for name, head in heads.items():
        kind = head.get("kind") if isinstance(head, dict) else None
        if kind not in (SEQUENCE, TOKEN, EMBEDDING) or not isinstance(head.get("output"), str):
            raise PackageIntegrityError(f"{path}: head {name!r} needs a kind ({SEQUENCE}, {TOKEN} or {EMBEDDING}) "
                                        f"and an output name, got {head!r}")
        outputs.append(head["output"])
        if kind == EMBEDDING:
            if not isinstance(head.get("dim"), int) or head["dim"] < 1:
                raise PackageIntegrityError(f"{path}: the embedding head needs a positive dim, got {head.get('dim')!r}")
            continue
        _check_labels(path, f"the labels of head {name!r}", head.get("labels"))
        temperature = head.get("temperature", 1.0)
        if isinstance(temperature, bool) or not isinstance(temperature, int | float) \
                or not (math.isfinite(temperature) and temperature > 0):
            raise PackageIntegrityError(f"{path}: head {name!r} has temperature {temperature!r}; it must be > 0")
    if len(set(outputs)) != len(outputs):
        raise PackageIntegrityError(f"{path}: two heads read the same output: {outputs}")


@dataclass(frozen=True)
class FileCheck:
    file: str
    status: str  # ok | mismatch | missing | unlisted
    expected: str | None
    actual: str | None


def check_files(manifest: Manifest) -> list[FileCheck]:
    """Every listed file against its recorded sha256, plus files present but not listed."""
    results: list[FileCheck] = []
    listed: Mapping[str, str] = manifest.data["files"]
    for name, expected in sorted(listed.items()):
        file = manifest.path / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            results.append(FileCheck(name, "mismatch", expected, None))
        elif not file.is_file():
            results.append(FileCheck(name, "missing", expected, None))
        else:
            actual = sha256_file(file)
            results.append(FileCheck(name, "ok" if actual == expected else "mismatch", expected, actual))
    for file in sorted(manifest.path.rglob("*")):
        rel = file.relative_to(manifest.path).as_posix()
        if file.is_file() and rel != MANIFEST and rel not in listed:
            results.append(FileCheck(rel, "unlisted", None, sha256_file(file)))
    return results


def verify_files(manifest: Manifest) -> None:
    """Raise PackageIntegrityError unless every listed file matches its hash."""
    bad = [c for c in check_files(manifest) if c.status in ("mismatch", "missing")]
    if bad:
        what = ", ".join(f"{c.file} ({c.status})" for c in bad)
        raise PackageIntegrityError(
            f"model package {manifest.path} failed its integrity check: {what}",
            hint="the files changed after export; re-export or restore the package",
        )


def find_packages(root: Path) -> list[Path]:
    """`root` itself if it is a package, else its sub-directories that hold a manifest."""
    if (root / MANIFEST).is_file():
        return [root]
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / MANIFEST).is_file())


def hash_files(package: Path, names: Iterable[str]) -> dict[str, str]:
    return {name: sha256_file(package / name) for name in sorted(names)}
