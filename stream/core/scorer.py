"""The scorer the stream runs: one verified model package in an ONNX Runtime session.

Only onnxruntime, tokenizers and numpy here: the consumer install has neither torch nor
transformers (a unit test imports this module in a fresh interpreter to keep it that way).

One session run per sub-batch fills every head of the package: sequence heads (softmax of the
logits over the head's calibration temperature), the token head (BIO labels decoded into character
spans of the text: `token_entities`) and, through `embed`, the sentence embedding.

fp32 and fp16 scores of a text do not depend on the other texts of its batch; int8 ones can move
slightly, since dynamic quantization picks one activation scale per sub-batch (the export's parity
gate judges int8 on the worst of several batchings for that reason).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from stream.core.errors import ModelError
from stream.core.host import usable_cpus
from stream.core.items import normalize_entity
from stream.core.manifest import (
    EMBEDDING,
    INT8_WEIGHT_BITS,
    PASSED,
    SEQUENCE,
    TOKEN,
    TOKENIZER,
    UNCHECKED,
    Manifest,
    read_manifest,
    verify_files,
)
from stream.core.records import Analysis, Entity, Prediction

log = logging.getLogger(__name__)

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"
# Sub-batch limits: at most this many texts, and at most this many (padded) tokens.
DEFAULT_BATCH_SIZE = 64
DEFAULT_TOKEN_BUDGET = 16_384
# Texts are cut to max_length * this many characters before tokenizing: enough for any tokenizer
# to fill max_length, and a 5 MB text then costs what a long article does (the tokenizer would
# otherwise build every overflow chunk of it before truncating).
CHARS_PER_TOKEN = 8
OUTSIDE = "O"  # the BIO label of a token outside every entity


def bio_spans(token_labels: Sequence[str]) -> list[tuple[str, int, int]]:
    """(type, first token, last token) of each entity in a BIO label sequence.  B-X starts an entity;
    I-X continues an entity of type X and starts one after anything else (a model's I- without its
    B- still names an entity); any other label ends the current one."""
    spans: list[tuple[str, int, int]] = []
    current: tuple[str, int] | None = None
    for k, label in enumerate(token_labels):
        prefix, _, kind = label.partition("-")
        if current is not None and not (prefix == "I" and kind == current[0]):
            spans.append((current[0], current[1], k - 1))
            current = None
        if current is None and prefix in ("B", "I") and kind:
            current = (kind, k)
    if current is not None:
        spans.append((current[0], current[1], len(token_labels) - 1))
    return spans


@functools.cache
def _bio_transitions(labels: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, int]:
    """(allowed[i, j]: label j may follow label i; j may open a text; the index of O) under BIO:
    I-X only after B-X or I-X."""
    kinds = [label.partition("-") for label in labels]
    opens = np.array([prefix != "I" for prefix, _, _ in kinds])
    allowed = np.array([[prefix != "I" or (before in ("B", "I") and kind == previous)
                         for prefix, _, kind in kinds] for before, _, previous in kinds])
    return allowed, opens, labels.index(OUTSIDE)


def best_bio(probs: np.ndarray, labels: Sequence[str], outside: np.ndarray | None = None) -> np.ndarray:
    """Each token's label index in the most probable label sequence that is valid BIO (I-X only
    after B-X or I-X; `outside` tokens, such as special ones, only O), by Viterbi over the log
    probabilities.  Where the tokens' own best labels already form such a sequence (a confident
    model's usual case) they are the answer and no search runs.  An unconstrained argmax lets a
    weak model name fragments: "局" of 国家统计局 as an entity of its own when its I-ORG outscores its
    O but its predecessors were O; here the sequence decides, so the name is extended back to
    where B-ORG is likely enough or dropped."""
    allowed, opens, o = _bio_transitions(tuple(labels))
    best = probs.argmax(axis=-1)
    if outside is not None:
        best = np.where(outside, o, best)
    if not len(best) or (opens[best[0]] and allowed[best[:-1], best[1:]].all()):
        return best
    logp = np.log(np.maximum(probs, 1e-30))
    if outside is not None:
        logp = np.where(outside[:, None] & (np.arange(len(labels)) != o), -np.inf, logp)
    forbidden = np.where(allowed, 0.0, -np.inf)
    score = np.where(opens, logp[0], -np.inf)
    back = np.zeros(logp.shape, dtype=np.int64)
    for t in range(1, len(logp)):
        step = score[:, None] + forbidden
        back[t] = step.argmax(axis=0)
        score = step.max(axis=0) + logp[t]
    path = np.empty(len(logp), dtype=np.int64)
    path[-1] = int(score.argmax())
    for t in range(len(logp) - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


def special_tokens(offsets: Sequence[tuple[int, int]]) -> np.ndarray:
    """The tokens that cover no character (special ones: `decode_entities` reads them as O)."""
    return np.array([start == end for start, end in offsets], dtype=bool)


def token_entities(text: str, offsets: Sequence[tuple[int, int]], probs: np.ndarray,
                   labels: Sequence[str]) -> tuple[Entity, ...]:
    """The entities of `text` from its tokens' label probabilities (one row per offset): the
    labels of `best_bio`, each scored by its own probability, through `decode_entities`."""
    best = best_bio(probs, labels, special_tokens(offsets))
    return decode_entities(text, offsets, [labels[int(k)] for k in best],
                           probs[np.arange(len(best)), best].tolist())


def decode_entities(text: str, offsets: Sequence[tuple[int, int]], token_labels: Sequence[str],
                    token_probs: Sequence[float]) -> tuple[Entity, ...]:
    """The entities of `text` from per-token BIO labels and their probabilities.  `offsets` are the
    tokens' (start, end) characters in `text` ((0, 0): a special token, which ends any entity).  An
    entity runs from its first token's start to its last token's end, less edge whitespace, widened
    to whole words in space-separated scripts (an entity that then overlaps the previous one is
    part of it); its score is the mean probability of its tokens' labels.  Spans that are only whitespace or punctuation
    (an empty normalized form) are dropped."""
    labels = [OUTSIDE if start == end else label
              for (start, end), label in zip(offsets, token_labels, strict=True)]
    found: list[Entity] = []
    for kind, first, last in bio_spans(labels):
        start, end = offsets[first][0], offsets[last][1]
        raw = text[start:end]
        start += len(raw) - len(raw.lstrip())
        end -= len(raw) - len(raw.rstrip())
        start, end = _whole_words(text, start, end)
        score = float(np.mean(token_probs[first : last + 1]))
        if found and start < found[-1].end:  # widened into the previous entity: one name, its type
            previous = found.pop()
            kind, start, end = previous.type, previous.start, max(end, previous.end)
            score = (previous.score + score) / 2
        span = text[start:end]
        normalized = normalize_entity(span)
        if normalized:
            found.append(Entity(span, normalized, kind, start, end, score))
    return tuple(found)


def _in_word(char: str) -> bool:
    """A letter or digit of a script that separates words with spaces (not CJK, where every
    character may end a name)."""
    return char.isalnum() and not ("\u2e80" <= char <= "\u9fff" or "\uac00" <= char <= "\ud7af"
                                   or "\uf900" <= char <= "\ufaff" or "\U00020000" <= char <= "\U0003134f")


def _whole_words(text: str, start: int, end: int) -> tuple[int, int]:
    """[start, end) widened to whole words where it cuts one: a subword tokenizer can label part
    of a name ("Li" of "Linjiang"), but in space-separated scripts names end at word boundaries."""
    if start < end:
        while start > 0 and _in_word(text[start - 1]) and _in_word(text[start]):
            start -= 1
        while end < len(text) and _in_word(text[end]) and _in_word(text[end - 1]):
            end += 1
    return start, end


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
    # each token's (start, end) characters in its text, (0, 0) for special tokens
    offsets: list[list[tuple[int, int]]] = field(default_factory=list)

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
        offsets=[e.offsets for e in encodings],
    )


def plan_batches(
    lengths: Sequence[int], batch_size: int, token_budget: int, bucketing: bool, at_least: int = 1
) -> list[list[int]]:
    """Index groups to run together.  With bucketing, texts of similar length share a sub-batch,
    so little compute goes to padding; without it the input order is kept.  `at_least`: the
    largest group is halved until there are that many (where the texts allow), so that parallel
    runs each get one."""
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
    while len(groups) < at_least:
        largest = max(range(len(groups)), key=lambda g: len(groups[g]), default=None)
        if largest is None or len(groups[largest]) < 2:
            break
        group = groups[largest]
        groups[largest: largest + 1] = [group[: len(group) // 2], group[len(group) // 2:]]
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


def run_plan(device: str, intra_op_threads: int = 0, parallel_runs: int = 0, cpus: int | None = None
             ) -> tuple[int, int]:
    """(intra-op threads per run, sub-batches run at once) on `cpus` (default: the usable ones).  On
    CPU the default is one run per core, each on one thread: a sub-batch's many small ops (layer
    norms, softmaxes, int8's per-token scaling) then never wait for a thread pool to wake and meet,
    which costs int8 graphs more than fp32 ones (see export/README.md, "Parallel runs").  On CUDA,
    one run at a time."""
    if device == "cuda":
        return intra_op_threads, max(parallel_runs, 1)
    runs = parallel_runs or max(1, (cpus or usable_cpus()) // max(intra_op_threads, 1))
    return (intra_op_threads or (1 if runs > 1 else 0)), runs


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


def iter_outputs(
    session: ort.InferenceSession,
    encoded: Encoded,
    pad_id: int,
    names: Sequence[str],
    *,
    bucketing: bool = True,
    batch_size: int = DEFAULT_BATCH_SIZE,
    token_budget: int = DEFAULT_TOKEN_BUDGET,
    runs: int = 1,
) -> Iterator[tuple[list[int], list[np.ndarray]]]:
    """(text indices, the outputs `names` for them as float32) per sub-batch, in order: one session
    run each, `runs` of them at once (a session runs concurrent calls safely, and ONNX Runtime lets
    go of the GIL while it runs)."""
    input_names = [i.name for i in session.get_inputs()]

    def run(group: list[int]) -> tuple[list[int], list[np.ndarray]]:
        arrays = session.run(list(names), feeds(encoded, group, input_names, pad_id))
        return group, [np.asarray(a, np.float32) for a in arrays]

    groups = plan_batches(encoded.lengths(), batch_size, token_budget, bucketing, at_least=runs)
    yield from (_pool(runs).map(run, groups) if runs > 1 and len(groups) > 1 else map(run, groups))


@functools.cache
def _pool(workers: int) -> ThreadPoolExecutor:
    """One pool per size for the process: scorers run one at a time, and idle workers cost nothing."""
    return ThreadPoolExecutor(workers, thread_name_prefix="onnx-run")


def run_outputs(
    session: ort.InferenceSession,
    encoded: Encoded,
    pad_id: int,
    names: Sequence[str] = ("logits",),
    *,
    bucketing: bool = True,
    batch_size: int = DEFAULT_BATCH_SIZE,
    token_budget: int = DEFAULT_TOKEN_BUDGET,
    runs: int = 1,
) -> dict[str, np.ndarray]:
    """Each output for every text, in input order (see `gather_outputs`)."""
    return gather_outputs(encoded, names, iter_outputs(session, encoded, pad_id, names, bucketing=bucketing,
                                                       batch_size=batch_size, token_budget=token_budget,
                                                       runs=runs))


def gather_outputs(encoded: Encoded, names: Sequence[str],
                   batches: Iterable[tuple[list[int], list[np.ndarray]]]) -> dict[str, np.ndarray]:
    """Sub-batch outputs put back in input order: (n_texts x values) for a per-text output,
    (n_texts x longest text x labels) for a per-token one (zeros past a text's own length)."""
    n, width = len(encoded.ids), max(encoded.lengths(), default=0)
    out: dict[str, np.ndarray] = {}
    for group, arrays in batches:
        for name, array in zip(names, arrays, strict=True):
            if name not in out:
                shape = (n, width, *array.shape[2:]) if array.ndim > 2 else (n, *array.shape[1:])
                out[name] = np.zeros(shape, dtype=np.float32)
            if array.ndim > 2:
                out[name][group, : array.shape[1]] = array
            else:
                out[name][group] = array
    return {name: out.get(name, np.empty((0, 0), dtype=np.float32)) for name in names}


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
    if device != "cuda" and "int8" in variants and manifest.int8_weight_bits > INT8_WEIGHT_BITS:
        # Its parity held on the export's host; on a CPU without VNNI its products saturate.
        log.warning("the int8 variant of %s has %d-bit weights, which a CPU without VNNI gets wrong; running "
                    "fp32 (re-export the package for a 7-bit int8)", manifest.version, manifest.int8_weight_bits)
        preferred = [name for name in preferred if name != "int8"]
    for name in preferred:
        if name not in variants:
            continue
        found = manifest.parity_status(name)
        if found == PASSED or (found == UNCHECKED and allow_unchecked):
            return name
        log.info("skipping the %s variant of %s: parity %s", name, manifest.version, found)
    raise ModelError(f"package {manifest.version} has no variant that passed its parity check")


class OnnxScorer:
    """`stream.core.interfaces.Scorer` over one model package (format 1: one classifier; format 2:
    one encoder with sequence heads, an entity head and the embedding)."""

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
        runs: int = 1,
    ) -> None:
        self.manifest = manifest
        self.name = manifest.name
        self.version = manifest.version
        specs = manifest.heads
        self.heads: dict[str, tuple[str, ...]] = {
            h: tuple(spec["labels"]) for h, spec in specs.items() if spec["kind"] == SEQUENCE}
        self.max_length = manifest.max_length
        self.variant = variant
        self.provider = provider
        self.bucketing = bucketing
        self.batch_size = batch_size
        self.token_budget = token_budget
        self.runs = runs  # sub-batches run at once (see run_plan)
        self._session = session
        self._tokenizer = tokenizer
        self._pad_id = manifest.pad_token_id
        self._temperature = {h: float(spec.get("temperature", 1.0)) for h, spec in specs.items()}
        self._outputs = {h: str(spec["output"]) for h, spec in specs.items() if spec["kind"] != EMBEDDING}
        tokens = [h for h, spec in specs.items() if spec["kind"] == TOKEN]
        if len(tokens) > 1:
            raise ModelError(f"{manifest.path}: more than one token head ({', '.join(tokens)})")
        self._entity_head = tokens[0] if tokens else None
        self._embedding = next(((str(spec["output"]), int(spec["dim"])) for spec in specs.values()
                                if spec["kind"] == EMBEDDING), None)
        graph = {o.name: o.shape for o in session.get_outputs()}
        for head, spec in specs.items():
            if spec["output"] not in graph:
                raise ModelError(f"{manifest.path}: the graph has no output {spec['output']!r} for head {head!r}")
            width = graph[spec["output"]][-1]
            expected = spec["dim"] if spec["kind"] == EMBEDDING else len(spec["labels"])
            if isinstance(width, int) and width != expected:
                raise ModelError(f"{manifest.path}: output {spec['output']} of head {head} has {width} values "
                                 f"but the manifest says {expected}")

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
        parallel_runs: int = 0,
    ) -> OnnxScorer:
        """Verify the package (hashes, parity status), pick the variant and start a session;
        `intra_op_threads` and `parallel_runs` 0: see `run_plan`."""
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
        threads, runs = run_plan(device, intra_op_threads, parallel_runs)
        session, provider = create_session(manifest.variant_path(chosen), device, threads, spin=spin)
        tokenizer = load_tokenizer(manifest.path / TOKENIZER, manifest.max_length)
        log.info(
            "loaded %s (%s, %s) on %s in %.2fs, %d run(s) at once", manifest.version, ", ".join(manifest.heads),
            chosen, provider, time.perf_counter() - started, runs,
        )
        return cls(manifest, session, tokenizer, variant=chosen, provider=provider, bucketing=bucketing,
                   batch_size=batch_size, token_budget=token_budget, runs=runs)

    def encode(self, texts: Sequence[str]) -> Encoded:
        return encode(self._tokenizer, texts, self.max_length * CHARS_PER_TOKEN)

    def _run(self, encoded: Encoded, names: Sequence[str]) -> Iterator[tuple[list[int], list[np.ndarray]]]:
        return iter_outputs(self._session, encoded, self._pad_id, names, bucketing=self.bucketing,
                            batch_size=self.batch_size, token_budget=self.token_budget, runs=self.runs)

    def outputs(self, texts: Sequence[str], names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """The graph's raw outputs (uncalibrated logits, the embedding) by output name, in input
        order: all of them, or only `names` (ONNX Runtime then runs only the nodes they need)."""
        names = list(names) if names is not None else [o.name for o in self._session.get_outputs()]
        encoded = self.encode(texts)
        return gather_outputs(encoded, names, self._run(encoded, names))

    def analyze(self, texts: Sequence[str]) -> list[Analysis]:
        """Every head's verdict on each text, from one session run per sub-batch."""
        strings = [str(t) for t in texts]
        encoded = self.encode(strings)
        heads = list(self._outputs)
        found: list[Analysis | None] = [None] * len(strings)
        for group, arrays in self._run(encoded, list(self._outputs.values())):
            by_head = dict(zip(heads, arrays, strict=True))
            probs = {h: softmax(by_head[h] / self._temperature[h]) for h in self.heads}
            for row, i in enumerate(group):
                cut = encoded.truncated[i]
                predictions = {h: self._prediction(h, probs[h][row], cut) for h in self.heads}
                entities = None
                if self._entity_head is not None:
                    entities = self._entities(self._entity_head, strings[i], encoded.offsets[i],
                                              by_head[self._entity_head][row])
                found[i] = Analysis(predictions, entities, cut)
        return [a for a in found if a is not None]

    def _prediction(self, head: str, probs: np.ndarray, truncated: bool) -> Prediction:
        labels = self.heads[head]
        best = int(probs.argmax())
        return Prediction(labels[best], float(probs[best]),
                          {label: float(p) for label, p in zip(labels, probs, strict=True)}, truncated)

    def _entities(self, head: str, text: str, offsets: list[tuple[int, int]],
                  logits: np.ndarray) -> tuple[Entity, ...]:
        """BIO decoding of one text's token logits (rows past its own length are sub-batch padding)."""
        labels = self.manifest.heads[head]["labels"]
        return token_entities(text, offsets, softmax(logits[: len(offsets)] / self._temperature[head]), labels)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """The package's L2-normalized sentence embeddings (n_texts x dim), one session run per sub-batch."""
        if self._embedding is None:
            raise ModelError(f"package {self.version} has no embedding output", hint="export a multi-head package")
        output, dim = self._embedding
        out = np.zeros((len(texts), dim), dtype=np.float32)
        for group, (vectors,) in self._run(self.encode(texts), [output]):
            out[group] = vectors
        return out
