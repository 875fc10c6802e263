"""Vocabulary trimming: a package keeps only the pieces its languages use.

A multilingual SentencePiece (Unigram) vocabulary such as multilingual-e5's has 250,002 pieces and
its embedding table is most of the model; Chinese and English traffic uses a small part of it.  The
kept pieces are the special tokens, every piece the corpora's texts tokenize to, and a margin for
unseen text: every single-character piece of the languages' scripts (so no character of theirs
becomes <unk> that was not before) and the most probable multi-character pieces of those scripts.
The kept pieces keep their order and scores, so the Unigram segmentation of a text whose pieces
were all kept is unchanged (any other segmentation has the same score as before); a text that
needs a dropped piece gets the next-best segmentation of kept pieces, falling back to single
characters and <unk> as the full tokenizer already does.  The piece with the lowest score is kept
too: the tokenizer derives its <unk> penalty from it.

The embedding rows are sliced on the torch model before export, so the ONNX graph, the tokenizer
and the parity reference all see the trimmed vocabulary.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from export.checkpoint import Checkpoint
from stream.core.errors import ModelError

# Code-point ranges of each language's script; the ASCII range (digits, punctuation, Latin letters)
# and general punctuation belong to every language.
_COMMON = ((0x20, 0x7E), (0xA0, 0xBF), (0x2000, 0x206F))
LANGUAGE_SCRIPTS: dict[str, tuple[tuple[int, int], ...]] = {
    "en": (),
    "zh": ((0x2E80, 0x2FDF), (0x3000, 0x303F), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF),
           (0xFE30, 0xFE4F), (0xFF00, 0xFFEF)),
}
DEFAULT_LANGUAGES = ("zh", "en")
DEFAULT_MARGIN = 2_000  # most probable multi-character pieces of the languages, beyond the corpora's
METASPACE = "\u2581"
MAX_LISTED = 50  # tokenization differences listed in the manifest (all are counted)


@dataclasses.dataclass(frozen=True)
class VocabTrim:
    """Old ids of the kept pieces, ascending: a piece's new id is its position."""

    kept: list[int]
    vocab_before: int
    kept_by: dict[str, int]

    def old_ids(self, new_ids: Iterable[int]) -> list[int]:
        return [self.kept[i] for i in new_ids]


def in_languages(piece: str, languages: Sequence[str]) -> bool:
    """True when every character of `piece` (the word-boundary mark aside) is in the languages' scripts."""
    unknown = [lang for lang in languages if lang not in LANGUAGE_SCRIPTS]
    if unknown:
        raise ModelError(f"no script table for language(s) {', '.join(unknown)}",
                         hint=f"known: {', '.join(sorted(LANGUAGE_SCRIPTS))}")
    ranges = _COMMON + tuple(r for lang in languages for r in LANGUAGE_SCRIPTS[lang])
    text = piece.replace(METASPACE, "")
    return bool(text) and all(any(lo <= ord(ch) <= hi for lo, hi in ranges) for ch in text)


def unigram_model(tokenizer_json: dict[str, Any]) -> dict[str, Any]:
    model = tokenizer_json.get("model") or {}
    if model.get("type") != "Unigram":
        raise ModelError(f"vocabulary trimming needs a Unigram (SentencePiece) tokenizer; this one is "
                         f"{model.get('type')!r}", hint="export without --trim-vocab")
    return dict(model)


def choose_pieces(tokenizer_json: dict[str, Any], counts: Counter[int], languages: Sequence[str],
                  margin: int = DEFAULT_MARGIN) -> VocabTrim:
    """The pieces to keep: specials, those in `counts` (old id -> occurrences), and the margin."""
    vocab: list[list[Any]] = unigram_model(tokenizer_json)["vocab"]
    specials = {int(t["id"]) for t in tokenizer_json.get("added_tokens", [])}
    unk = unigram_model(tokenizer_json).get("unk_id")
    specials |= {int(unk)} if unk is not None else set()
    specials.add(min(range(len(vocab)), key=lambda i: vocab[i][1]))  # sets the <unk> penalty
    seen = {i for i in counts if 0 <= i < len(vocab)} - specials
    lang = [i for i, (piece, _) in enumerate(vocab) if in_languages(piece, languages)]
    singles = {i for i in lang if len(vocab[i][0].replace(METASPACE, "")) == 1} - specials - seen
    probable = sorted((i for i in lang if i not in seen and i not in singles and i not in specials),
                      key=lambda i: (-vocab[i][1], i))[: max(margin, 0)]
    kept = sorted(specials | seen | singles | set(probable))
    return VocabTrim(kept, len(vocab), {"special": len(specials), "corpus": len(seen),
                                        "script_characters": len(singles), "probable": len(probable)})


def trim_tokenizer_json(tokenizer_json: dict[str, Any], trim: VocabTrim) -> dict[str, Any]:
    """The tokenizer with only the kept pieces, every id (unk, added tokens, post-processor) remapped."""
    new_id = {old: new for new, old in enumerate(trim.kept)}
    data = json.loads(json.dumps(tokenizer_json))
    model = unigram_model(data)
    missing = [t["content"] for t in data.get("added_tokens", []) if t["id"] not in new_id]
    if missing:
        raise ModelError(f"the trimmed vocabulary lacks special token(s) {missing}")
    model["vocab"] = [tokenizer_json["model"]["vocab"][old] for old in trim.kept]
    if model.get("unk_id") is not None:
        model["unk_id"] = new_id[model["unk_id"]]
    data["model"] = model
    for token in data.get("added_tokens", []):
        token["id"] = new_id[token["id"]]
    _remap_special_ids(data.get("post_processor"), new_id)
    return dict(data)


def _remap_special_ids(node: Any, new_id: dict[int, int]) -> None:
    """TemplateProcessing (and Sequence of processors) hold special-token ids under "special_tokens"."""
    if isinstance(node, dict):
        for spec in (node.get("special_tokens") or {}).values():
            if isinstance(spec, dict) and "ids" in spec:
                spec["ids"] = [new_id[i] for i in spec["ids"]]
        for key in ("sep", "cls"):  # RobertaProcessing / BertProcessing: [token, id]
            if isinstance(node.get(key), list) and len(node[key]) == 2:
                node[key][1] = new_id[node[key][1]]
        for child in node.get("processors") or []:
            _remap_special_ids(child, new_id)


def piece_counts(tokenizer: Any, texts: Sequence[str], max_chars: int | None = None) -> Counter[int]:
    """Occurrences of each piece id over `texts` (a `tokenizers.Tokenizer`, no truncation)."""
    counts: Counter[int] = Counter()
    for encoding in tokenizer.encode_batch([t[:max_chars] if max_chars else t for t in texts]):
        counts.update(encoding.ids)
    return counts


def trim_checkpoint(ckpt: Checkpoint, trim: VocabTrim) -> Checkpoint:
    """The checkpoint with its input embedding sliced to the kept rows and a trimmed tokenizer (of a
    multi-head checkpoint: the encoder's embedding; the heads read hidden states and stay as they are)."""
    import torch
    from tokenizers import Tokenizer

    encoder = ckpt.encoder
    embeddings = encoder.get_input_embeddings()
    if max(trim.kept) >= embeddings.num_embeddings:
        raise ModelError(f"the tokenizer has ids up to {max(trim.kept)} but the embedding only "
                         f"{embeddings.num_embeddings} rows")
    pad = ckpt.pad_token_id
    new_pad = trim.kept.index(pad) if pad in trim.kept else None
    sliced = torch.nn.Embedding(len(trim.kept), embeddings.embedding_dim, padding_idx=new_pad)
    with torch.no_grad():
        sliced.weight.copy_(embeddings.weight[torch.tensor(trim.kept)])
    encoder.set_input_embeddings(sliced)
    encoder.config.vocab_size = len(trim.kept)
    if new_pad is not None:
        encoder.config.pad_token_id = new_pad
    hf = ckpt.tokenizer
    backend = Tokenizer.from_str(json.dumps(trim_tokenizer_json(json.loads(hf.backend_tokenizer.to_str()), trim)))
    tokenizer = type(hf)(tokenizer_object=backend, model_input_names=hf.model_input_names,
                         model_max_length=hf.model_max_length, **hf.special_tokens_map)
    return dataclasses.replace(ckpt, tokenizer=tokenizer)


def compare_tokenizers(original: Any, trimmed: Any, trim: VocabTrim, texts: Sequence[str]) -> dict[str, Any]:
    """How often the trimmed tokenizer gives the original's pieces (mapped back to old ids), and the
    first MAX_LISTED texts where it does not, piece by piece."""
    before = original.encode_batch(list(texts))
    after = trimmed.encode_batch(list(texts))
    differences = []
    for index, (a, b) in enumerate(zip(before, after, strict=True)):
        if a.ids != trim.old_ids(b.ids):
            differences.append({"index": index, "text": texts[index][:120], "full": a.tokens, "trimmed": b.tokens})
    same = len(texts) - len(differences)
    return {"n": len(texts), "agreement": same / max(len(texts), 1), "differing": len(differences),
            "differences": [_shorten(d) for d in differences[:MAX_LISTED]]}


def _shorten(diff: dict[str, Any]) -> dict[str, Any]:
    """Only the pieces around the first difference, to keep the manifest readable."""
    a, b = diff["full"], diff["trimmed"]
    first = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    lo = max(first - 2, 0)
    return {"index": diff["index"], "text": diff["text"], "full": a[lo : first + 6], "trimmed": b[lo : first + 6]}
