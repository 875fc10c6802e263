"""The scorer the stream runs: one verified model package in an ONNX Runtime session.

Only onnxruntime, tokenizers and numpy here: the consumer install has neither torch nor
transformers (a unit test imports this module in a fresh interpreter to keep it that way).

fp32 and fp16 scores of a text do not depend on the other texts of its batch; int8 ones can move
slightly, since dynamic quantization picks one activation scale per sub-batch (the export's parity
gate judges int8 on the worst of several batchings for that reason).
"""

from __future__ import annotations

import ctypes
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from stream.core.errors import ModelError
from stream.core.manifest import PASSED, TOKENIZER, UNCHECKED, Manifest, read_manifest, verify_files
from stream.core.records import Prediction

log = logging.getLogger(__name__)

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"
# Sub-batch limits: at most this many texts, and at most this many (padded) tokens.
DEFAULT_BATCH_SIZE = 64
DEFAULT_TOKEN_BUDGET = 16_384
# Texts are cut to max_length * this many characters before tokenizing: enough for any tokenizer
# to fill max_length, and a 5 MB text then costs what a long article does (the tokenizer would
# otherwise build every overflow chunk of it before truncating).
CHARS_PER_TOKEN = 8


def cuda_available() -> bool:
    """True when this onnxruntime build has the CUDA provider and the driver sees a GPU."""
    if CUDA not in ort.get_available_providers():
        return False
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
        count = ctypes.c_int(0)
        return libcuda.cuInit(0) == 0 and libcuda.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0
    except OSError:
        return False


def load_tokenizer(path: Path, max_length: int) -> Tokenizer:
    """The package tokenizer, truncating to max_length; padding is done per sub-batch."""
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:
        raise ModelError(f"cannot load tokenizer {path}: {exc}", hint="re-export the package") from None
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    return tokenizer


@dataclass(frozen=True)
class Encoded:
    """Token ids of a list of texts, unpadded, in input order."""

    ids: list[list[int]]
    type_ids: list[list[int]]
    truncated: list[bool]

    def lengths(self) -> list[int]:
        return [len(row) for row in self.ids]


def encode(tokenizer: Tokenizer, texts: Sequence[str], max_chars: int | None = None) -> Encoded:
    """Token ids of `texts`, each first cut to `max_chars` characters; `truncated` says the model
    sees less than the whole text (the cut or the tokenizer's truncation)."""
    strings = [str(t) for t in texts]
    cut = [max_chars is not None and len(t) > max_chars for t in strings]
    encodings = tokenizer.encode_batch([t[:max_chars] if c else t for t, c in zip(strings, cut, strict=True)])
    return Encoded(
        ids=[e.ids for e in encodings],
        type_ids=[e.type_ids for e in encodings],
        truncated=[c or bool(e.overflowing) for e, c in zip(encodings, cut, strict=True)],
    )


def plan_batches(
    lengths: Sequence[int], batch_size: int, token_budget: int, bucketing: bool
) -> list[list[int]]:
    """Index groups to run together.  With bucketing, texts of similar length share a sub-batch,
    so little compute goes to padding; without it the input order is kept."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__) if bucketing else list(range(len(lengths)))
    groups: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for index in order:
        longest_if_added = max(longest, lengths[index])
        if current and (len(current) >= batch_size or (len(current) + 1) * longest_if_added > token_budget):
            groups.append(current)
            current, longest_if_added = [], lengths[index]
        current.append(index)
        longest = longest_if_added
    if current:
        groups.append(current)
    return groups


def feeds(encoded: Encoded, indices: Sequence[int], input_names: Sequence[str], pad_id: int) -> dict[str, Any]:
    """Padded int64 arrays for one sub-batch (dynamic padding: to its longest text)."""
    width = max(len(encoded.ids[i]) for i in indices)
    ids = np.full((len(indices), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(indices), width), dtype=np.int64)
    types = np.zeros((len(indices), width), dtype=np.int64)
    for row, i in enumerate(indices):
        n = len(encoded.ids[i])
        ids[row, :n] = encoded.ids[i]
        mask[row, :n] = 1
        types[row, :n] = encoded.type_ids[i]
    arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    return {name: arrays[name] for name in input_names}


def create_session(
    model: Path, device: str, intra_op_threads: int = 0, *, spin: bool = True
) -> tuple[ort.InferenceSession, str]:
    """An ORT session on `device` ("cpu" | "cuda") and the provider that actually runs it.  With
    spin=False idle pool threads sleep instead of spinning: on a shared or CPU-limited host the
    spinning only burns the quota the other threads need."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = [CUDA, CPU] if device == "cuda" else [CPU]
    try:
        session = ort.InferenceSession(str(model), sess_options=options, providers=providers)
    except Exception as exc:
        raise ModelError(
            f"onnxruntime {ort.__version__} cannot load {model}: {str(exc).strip()[:400]}",
            hint="the graph may need a newer onnxruntime (opset) or be damaged; re-export with --opset",
        ) from None
    provider = session.get_providers()[0]
    if device == "cuda" and provider != CUDA:
        log.warning("CUDA was asked for but onnxruntime runs %s on %s", model.name, provider)
    return session, provider


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def run_logits(
    session: ort.InferenceSession,
    encoded: Encoded,
    pad_id: int,
    *,
    bucketing: bool = True,
    batch_size: int = DEFAULT_BATCH_SIZE,
    token_budget: int = DEFAULT_TOKEN_BUDGET,
) -> np.ndarray:
    """Logits (n_texts x n_labels, float32) in input order."""
    input_names = [i.name for i in session.get_inputs()]
    out: np.ndarray | None = None
    for group in plan_batches(encoded.lengths(), batch_size, token_budget, bucketing):
        logits = np.asarray(session.run(["logits"], feeds(encoded, group, input_names, pad_id))[0], np.float32)
        if out is None:
            out = np.empty((len(encoded.ids), logits.shape[-1]), dtype=np.float32)
        out[group] = logits
    return out if out is not None else np.empty((0, 0), dtype=np.float32)


def _int8_slower(manifest: Manifest) -> bool:
    """True when the export timed the int8 graph below fp32 (items per CPU-second at batch 32)."""
    parity = manifest.variants.get("int8", {}).get("parity", {})
    int8 = (parity.get("speed_b32") or {}).get("items_per_cpu_s")
    fp32 = (parity.get("fp32_speed_b32") or {}).get("items_per_cpu_s")
    return bool(int8 and fp32 and float(int8) < float(fp32))


def choose_variant(manifest: Manifest, device: str, variant: str, allow_unchecked: bool) -> str:
    """The requested variant if it may run, else for "auto": fp16 on CUDA; on CPU int8, unless the
    export measured it slower than fp32; fp32 otherwise."""
    variants = manifest.variants
    if variant != "auto":
        if variant not in variants:
            raise ModelError(
                f"package {manifest.version} has no {variant} variant (it has {', '.join(variants)})",
                hint="export it with --int8/--fp16 or choose another variant",
            )
        status = manifest.parity_status(variant)
        if status == UNCHECKED and not allow_unchecked:
            reason = variants[variant].get("parity", {}).get("reason", "")
            raise ModelError(
                f"the {variant} variant of {manifest.version} was not parity-checked ({reason})",
                hint="re-export on a host that can run it, or allow unchecked variants explicitly",
            )
        if status not in (PASSED, UNCHECKED):
            raise ModelError(f"the {variant} variant of {manifest.version} did not pass its parity check")
        return variant
    preferred = ["fp16", "fp32"] if device == "cuda" else ["int8", "fp32"]
    if device != "cuda" and _int8_slower(manifest):
        # An int8 graph that needed many fp32 exclusions to hold parity can be slower than fp32.
        log.info("the int8 variant of %s measured slower than fp32 at export; running fp32", manifest.version)
        preferred = ["fp32", "int8"]
    for name in preferred:
        if name not in variants:
            continue
        found = manifest.parity_status(name)
        if found == PASSED or (found == UNCHECKED and allow_unchecked):
            return name
        log.info("skipping the %s variant of %s: parity %s", name, manifest.version, found)
    raise ModelError(f"package {manifest.version} has no variant that passed its parity check")


class OnnxScorer:
    """`stream.core.records.Scorer` over one model package."""

    def __init__(
        self,
        manifest: Manifest,
        session: ort.InferenceSession,
        tokenizer: Tokenizer,
        *,
        variant: str,
        provider: str,
        bucketing: bool = True,
        batch_size: int = DEFAULT_BATCH_SIZE,
        token_budget: int = DEFAULT_TOKEN_BUDGET,
    ) -> None:
        self.manifest = manifest
        self.name = manifest.name
        self.task = manifest.task
        self.version = manifest.version
        self.labels: Sequence[str] = tuple(manifest.labels)
        self.max_length = manifest.max_length
        self.variant = variant
        self.provider = provider
        self.bucketing = bucketing
        self.batch_size = batch_size
        self.token_budget = token_budget
        self._session = session
        self._tokenizer = tokenizer
        self._pad_id = manifest.pad_token_id
        n_out = session.get_outputs()[0].shape[-1]
        if isinstance(n_out, int) and n_out != len(self.labels):
            raise ModelError(f"{manifest.path}: the graph has {n_out} outputs but {len(self.labels)} labels")

    @classmethod
    def open(
        cls,
        package: str | Path,
        device: str = "auto",
        variant: str = "auto",
        intra_op_threads: int = 0,
        bucketing: bool = True,
        *,
        allow_unchecked: bool = False,
        batch_size: int = DEFAULT_BATCH_SIZE,
        token_budget: int = DEFAULT_TOKEN_BUDGET,
        spin: bool = True,
    ) -> OnnxScorer:
        """Verify the package (hashes, parity status), pick the variant and start a session."""
        if device not in ("auto", "cpu", "cuda"):
            raise ModelError(f"unknown device {device!r}", hint="use auto, cpu or cuda")
        started = time.perf_counter()
        manifest = read_manifest(Path(package))
        verify_files(manifest)
        if device == "auto":
            device = "cuda" if cuda_available() else "cpu"
        elif device == "cuda" and CUDA not in ort.get_available_providers():
            raise ModelError("device cuda was asked for but this onnxruntime has no CUDA provider",
                             hint="install onnxruntime-gpu or use --device cpu")
        chosen = choose_variant(manifest, device, variant, allow_unchecked)
        session, provider = create_session(manifest.variant_path(chosen), device, intra_op_threads, spin=spin)
        tokenizer = load_tokenizer(manifest.path / TOKENIZER, manifest.max_length)
        log.info(
            "loaded %s (%s, %s) on %s in %.2fs", manifest.version, manifest.task, chosen, provider,
            time.perf_counter() - started,
        )
        return cls(manifest, session, tokenizer, variant=chosen, provider=provider, bucketing=bucketing,
                   batch_size=batch_size, token_budget=token_budget)

    def encode(self, texts: Sequence[str]) -> Encoded:
        return encode(self._tokenizer, texts, self.max_length * CHARS_PER_TOKEN)

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        return self._logits(self.encode(texts))

    def _logits(self, encoded: Encoded) -> np.ndarray:
        return run_logits(self._session, encoded, self._pad_id, bucketing=self.bucketing,
                          batch_size=self.batch_size, token_budget=self.token_budget)

    def score(self, texts: Sequence[str]) -> list[Prediction]:
        if not texts:
            return []
        encoded = self.encode(texts)
        probs = softmax(self._logits(encoded))
        best = probs.argmax(axis=-1)
        labels = self.labels
        return [
            Prediction(
                label=labels[int(k)],
                score=float(row[k]),
                probs={label: float(p) for label, p in zip(labels, row, strict=True)},
                truncated=cut,
            )
            for row, k, cut in zip(probs, best, encoded.truncated, strict=True)
        ]
