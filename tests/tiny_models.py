"""Tiny random checkpoints for tests: a small BERT classifier, or a small multi-head model (one BERT
encoder with sentiment, category, risk and entity heads), and a WordPiece tokenizer built from a word
list, saved the way `yuqing train` saves a model (config, weights, tokenizer files)."""

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


# Sentences with their entities (text, type): the entity head's training data.
ENTITY_TEXTS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("Li Qiang visited Beijing on Monday.", (("Li Qiang", "PER"), ("Beijing", "LOC"))),
    ("Apple shares fell in New York after the report.", (("Apple", "ORG"), ("New York", "LOC"))),
    ("Maria Chen joined Huawei as chief engineer.", (("Maria Chen", "PER"), ("Huawei", "ORG"))),
    ("The United Nations met in Geneva to discuss the drought.", (("United Nations", "ORG"), ("Geneva", "LOC"))),
    ("李强在北京会见了华为代表。", (("李强", "PER"), ("北京", "LOC"), ("华为", "ORG"))),
    ("王芳当选上海市人大代表。", (("王芳", "PER"), ("上海", "LOC"))),
    ("腾讯公司在深圳发布新产品。", (("腾讯公司", "ORG"), ("深圳", "LOC"))),
    ("张伟和李娜访问了联合国总部。", (("张伟", "PER"), ("李娜", "PER"), ("联合国", "ORG"))),
)
# Calibration the tiny multi-head checkpoint claims (the scorer must divide by these).
TINY_TEMPERATURES = {"sentiment": 1.7, "category": 0.6}


def save_tiny_multihead(out: Path, *, seed: int = 0, hidden_size: int = 32, layers: int = 2,
                        max_positions: int = 128, fit_steps: int = 80) -> Path:
    """A `models.multihead` checkpoint: a tiny BERT encoder with sentiment (3), category (10), risk (8)
    and entity (BIO) heads, fitted for `fit_steps` full-batch steps to the built-in sentences (sequence
    labels spread over each head's labels) and ENTITY_TEXTS, so labels and entities vary."""
    import torch
    from transformers import BertConfig, BertModel

    from models.datasets import NEWS_SENTIMENT_LABELS, NEWS_TOPICS, THUCNEWS_LABELS
    from models.multihead import ENTITY_LABELS, SEQUENCE, TOKEN, HeadsConfig, HeadSpec, MultiHeadModel

    out.mkdir(parents=True, exist_ok=True)
    texts = [text for text, _ in BUILTIN] + [text for text, _ in ENTITY_TEXTS]
    vocab = tiny_vocab(texts)
    tokenizer = save_tiny_tokenizer(out, vocab, max_positions)
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden_size, num_hidden_layers=layers,
                        num_attention_heads=4, intermediate_size=2 * hidden_size,
                        max_position_embeddings=max_positions)
    heads = HeadsConfig(
        [HeadSpec("sentiment", SEQUENCE, NEWS_SENTIMENT_LABELS), HeadSpec("category", SEQUENCE, THUCNEWS_LABELS),
         HeadSpec("risk", SEQUENCE, tuple(NEWS_TOPICS.values())), HeadSpec("entities", TOKEN, ENTITY_LABELS)],
        {head: {"temperature": t, "ece_before": 0.2, "ece_after": 0.05} for head, t in TINY_TEMPERATURES.items()},
    )
    torch.manual_seed(seed)
    model = MultiHeadModel(BertModel(config, add_pooling_layer=False), heads)
    if fit_steps:
        _fit_multihead(model, tokenizer, texts, fit_steps)
    model.eval().save(out)
    return out


def _token_targets(tokenizer: Any, batch: Any, texts: Sequence[str]) -> Any:
    """BIO label ids per token of ENTITY_TEXTS' entities (by character span); -100 elsewhere
    (padding and specials) so the loss ignores it; the other texts are all O."""
    import torch

    from models.multihead import ENTITY_LABELS

    entities = dict(ENTITY_TEXTS)
    targets = torch.full(batch["input_ids"].shape, -100, dtype=torch.long)
    for row, text in enumerate(texts):
        spans = [(text.index(name), text.index(name) + len(name), kind) for name, kind in entities.get(text, ())]
        inside: set[int] = set()
        for k, (start, end) in enumerate(batch["offset_mapping"][row].tolist()):
            if start == end:
                continue
            found = next(((s, kind) for s, e, kind in spans if s <= start and end <= e), None)
            label = "O" if found is None else f"{'I' if found[0] in inside else 'B'}-{found[1]}"
            if found is not None:
                inside.add(found[0])
            targets[row, k] = ENTITY_LABELS.index(label)
    return targets


def _fit_multihead(model: Any, tokenizer: Any, texts: Sequence[str], steps: int) -> None:
    import torch

    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=64, return_tensors="pt",
                      return_offsets_mapping=True)
    tokens = _token_targets(tokenizer, batch, texts)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    # sentiment: the built-in sentences' gold labels (entity sentences neutral); other heads: spread
    gold = [label for _, label in BUILTIN] + ["neutral"] * (len(texts) - len(BUILTIN))
    sequence = {h.name: torch.tensor([h.labels.index(gold[i]) if h.name == "sentiment"
                                      else (i * (k + 1)) % len(h.labels) for i in range(len(texts))])
                for k, h in enumerate(model.config.heads) if h.kind == "sequence"}
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.enable_grad():
            for _ in range(steps):
                optimizer.zero_grad()
                found = model(**inputs)
                loss = sum(torch.nn.functional.cross_entropy(found[h], y) for h, y in sequence.items())
                loss = loss + torch.nn.functional.cross_entropy(found["entities"].flatten(0, 1), tokens.flatten(),
                                                                ignore_index=-100)
                loss.backward()
                optimizer.step()
    finally:
        torch.set_num_threads(threads)


def build_tiny_multihead(root: Path, **options: Any) -> Path:
    """A real format-2 ONNX package (sentiment, category, risk, entities, embedding) exported from
    `save_tiny_multihead` through the parity gate; `options` go to ExportOptions (int8=True, ...)."""
    from export.package import ExportOptions, build_package

    pkg, ckpt = root / "pkg-multihead", root / "ckpt-multihead"
    if not (pkg / "manifest.json").exists():
        if not (ckpt / "heads.json").exists():
            save_tiny_multihead(ckpt)
        build_package(ExportOptions(model_dir=ckpt, out=pkg, name="tiny-news", progress=False, **options))
    return pkg


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
