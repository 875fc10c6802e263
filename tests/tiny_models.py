"""Tiny random checkpoints for tests: a small BERT classifier and a WordPiece tokenizer built from
a word list, saved the way `yuqing train` saves a model (config, weights, tokenizer files)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from export.check_data import BUILTIN

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def tiny_vocab(texts: Iterable[str]) -> list[str]:
    """Specials, every CJK character, the words of `texts`, and letters with their ## forms."""
    words: set[str] = set()
    for text in texts:
        lowered = text.lower()
        words.update(re.findall(r"[a-z]+|\d|[^\sa-z\d]", lowered))
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)]
    pieces = sorted(words | set(letters)) + [f"##{x}" for x in letters]
    return list(SPECIALS) + [p for p in dict.fromkeys(pieces) if p not in SPECIALS]


def save_tiny_tokenizer(out: Path, vocab: Sequence[str], model_max_length: int = 128) -> Any:
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from transformers import PreTrainedTokenizerFast

    ids = {token: i for i, token in enumerate(vocab)}
    backend = Tokenizer(WordPiece(ids, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True, handle_chinese_chars=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
        model_max_length=model_max_length,
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )
    tokenizer.save_pretrained(str(out))
    return tokenizer


def save_tiny_classifier(
    out: Path,
    labels: Sequence[str] = ("negative", "neutral", "positive"),
    *,
    seed: int = 0,
    hidden_size: int = 32,
    layers: int = 2,
    max_positions: int = 128,
    report: dict[str, Any] | None = None,
    fit_steps: int = 60,
) -> Path:
    """A small BertForSequenceClassification with a WordPiece tokenizer, written to `out`.

    It is fitted for `fit_steps` full-batch steps to the built-in sentences (with their labels
    spread over `labels`), so its predictions vary and sit away from the decision boundary: an
    untrained random model puts texts so close to it that int8 noise flips them."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    out.mkdir(parents=True, exist_ok=True)
    vocab = tiny_vocab(text for text, _ in BUILTIN)
    tokenizer = save_tiny_tokenizer(out, vocab, max_positions)
    config = BertConfig(  # type: ignore[call-arg]  # PretrainedConfig takes num_labels, id2label
        vocab_size=len(vocab),
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=max_positions,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config)
    if fit_steps:
        _fit(model, tokenizer, labels, fit_steps)
    model.eval().save_pretrained(str(out))
    if report is not None:
        (out / "training_report.json").write_text(json.dumps(report, ensure_ascii=False), encoding="utf-8")
    return out


def _fit(model: Any, tokenizer: Any, labels: Sequence[str], steps: int) -> None:
    import torch

    texts = [text for text, _ in BUILTIN]
    sentiment = ("negative", "neutral", "positive")
    targets = [i % len(labels) if len(labels) != 3 else sentiment.index(gold) for i, (_, gold) in enumerate(BUILTIN)]
    batch = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    y = torch.tensor(targets)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small only loses to thread contention
    try:
        with torch.enable_grad():
            for _ in range(steps):
                optimizer.zero_grad()
                model(**batch, labels=y).loss.backward()
                optimizer.step()
    finally:
        torch.set_num_threads(threads)


TINY_TASKS = (("sentiment", ("negative", "positive")), ("topic", ("economy", "health", "politics")))


def build_tiny_packages(root: Path) -> list[Path]:
    """Two real ONNX model packages (sentiment, topic) exported from tiny random BERTs, gate passed."""
    from export.package import ExportOptions, build_package

    out = []
    for task, labels in TINY_TASKS:
        pkg = root / f"pkg-{task}"
        if not (pkg / "manifest.json").exists():
            ckpt = save_tiny_classifier(root / f"ckpt-{task}", labels, seed=len(labels))
            build_package(ExportOptions(model_dir=ckpt, out=pkg, name=f"tiny-{task}", task=task, progress=False))
        out.append(pkg)
    return out


if __name__ == "__main__":  # `make chaos` soaks the consumer with these: python -m tests.tiny_models DIR
    import sys

    print(" ".join(str(p) for p in build_tiny_packages(Path(sys.argv[1]))))
