"""Vocabulary trimming: kept pieces, remapped tokenizer, sliced embeddings, the package it builds."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from export import parity, quantize, trim
from export.check_data import BUILTIN
from export.checkpoint import load_checkpoint
from export.package import ExportOptions, build_package, ref_tokenizer
from stream.core.errors import ModelError
from stream.core.manifest import VARIANT_FILES, read_manifest
from stream.core.scorer import OnnxScorer, encode

ZH_EN = [text for text, _ in BUILTIN]
FOREIGN = ["Привет, как дела сегодня", "Москва большой город и столица", "مرحبا بكم في المدينة الكبيرة",
           "Γειά σου κόσμε και καλημέρα", "Это очень хороший фильм", "كتاب جديد في المكتبة"]
LABELS = ("negative", "positive")


def save_unigram_tokenizer(out: Path) -> Any:
    """A Unigram (SentencePiece-style) tokenizer trained on zh/en and other-script texts, saved to `out`."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram
    from tokenizers.trainers import UnigramTrainer
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(Unigram())
    backend.normalizer = normalizers.NFKC()
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    backend.train_from_iterator(ZH_EN * 3 + FOREIGN * 3, UnigramTrainer(
        vocab_size=700, special_tokens=specials, unk_token="<unk>", max_piece_length=8))
    ends = [(t, backend.token_to_id(t)) for t in ("<s>", "</s>")]
    backend.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=ends)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                        unk_token="<unk>", cls_token="<s>", sep_token="</s>", model_max_length=64,
                                        model_input_names=["input_ids", "attention_mask"])
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out))
    return tokenizer


def unigram_bert_config(vocab_size: int, **labels: Any) -> Any:
    from transformers import BertConfig

    return BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2,
                      num_attention_heads=4, intermediate_size=64, max_position_embeddings=64, pad_token_id=1,
                      **labels)


def save_unigram_classifier(out: Path) -> Path:
    """A random tiny BERT classifier with `save_unigram_tokenizer`'s tokenizer, saved as `yuqing train`
    saves a checkpoint."""
    import torch
    from transformers import BertForSequenceClassification

    tokenizer = save_unigram_tokenizer(out)
    config = unigram_bert_config(len(tokenizer), num_labels=2, id2label=dict(enumerate(LABELS)),
                                 label2id={x: i for i, x in enumerate(LABELS)})
    torch.manual_seed(0)
    BertForSequenceClassification(config).eval().save_pretrained(str(out))
    (out / "training_report.json").write_text(json.dumps({"task": "sentiment", "name": "uni", "max_length": 64}))
    return out


def save_unigram_multihead(out: Path, tokenizer_from: Path) -> Path:
    """A random multi-head model (two sequence heads, the entity head) with the tokenizer of the
    checkpoint `tokenizer_from`."""
    import torch
    from transformers import AutoTokenizer, BertModel

    from models.multihead import ENTITY_LABELS, SEQUENCE, TOKEN, HeadsConfig, HeadSpec, MultiHeadModel

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_from))
    tokenizer.save_pretrained(str(out))
    heads = HeadsConfig([HeadSpec("sentiment", SEQUENCE, LABELS), HeadSpec("risk", SEQUENCE, ("a", "b", "c")),
                         HeadSpec("entities", TOKEN, ENTITY_LABELS)])
    torch.manual_seed(0)
    MultiHeadModel(BertModel(unigram_bert_config(len(tokenizer)), add_pooling_layer=False), heads).eval().save(out)
    (out / "training_report.json").write_text(json.dumps({"name": "uni-heads", "max_length": 64}))
    return out


@pytest.fixture(scope="module")
def unigram_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_unigram_classifier(tmp_path_factory.mktemp("trim") / "ckpt")


@pytest.fixture(scope="module")
def chosen(unigram_ckpt: Path) -> tuple[Any, dict[str, Any], trim.VocabTrim]:
    ckpt = load_checkpoint(unigram_ckpt)
    full = ref_tokenizer(ckpt)
    full.no_truncation()  # pieces past max_length count too: they shape the segmentation before it
    data = json.loads(full.to_str())
    return full, data, trim.choose_pieces(data, trim.piece_counts(full, ZH_EN[:40]), ("zh", "en"), margin=20)


def test_kept_pieces_are_specials_corpus_scripts_and_margin(chosen: tuple[Any, dict[str, Any], trim.VocabTrim]) -> None:
    full, data, kept = chosen
    vocab = data["model"]["vocab"]
    ids = set(kept.kept)
    assert kept.kept == sorted(ids) and kept.vocab_before == len(vocab)
    assert {full.token_to_id(t) for t in ("<s>", "<pad>", "</s>", "<unk>")} <= ids
    assert min(range(len(vocab)), key=lambda i: vocab[i][1]) in ids  # sets the <unk> penalty
    assert set(trim.piece_counts(full, ZH_EN[:40])) <= ids
    assert kept.kept_by["probable"] <= 20 and sum(kept.kept_by.values()) == len(ids)
    dropped = [vocab[i][0] for i in range(len(vocab)) if i not in ids]
    assert dropped and not any(trim.in_languages(p, ("zh", "en")) and len(p.replace(trim.METASPACE, "")) == 1
                               for p in dropped)  # no zh/en character becomes <unk>
    cyrillic = [i for i, (p, _) in enumerate(vocab) if any("\u0400" <= c <= "\u04ff" for c in p)]
    assert cyrillic and not (set(cyrillic) & ids)


def test_in_languages_is_by_script() -> None:
    assert trim.in_languages("▁hello", ["en"]) and trim.in_languages("中国", ["zh"])
    assert not trim.in_languages("中国", ["en"]) and not trim.in_languages("▁Москва", ["zh", "en"])
    assert not trim.in_languages("▁", ["en"])  # the boundary mark alone is no piece of a script
    with pytest.raises(ModelError, match="no script table"):
        trim.in_languages("x", ["xx"])


def test_trimmed_tokenizer_gives_the_same_pieces_on_the_corpus(
        chosen: tuple[Any, dict[str, Any], trim.VocabTrim]) -> None:
    from tokenizers import Tokenizer

    full, data, kept = chosen
    trimmed = Tokenizer.from_str(json.dumps(trim.trim_tokenizer_json(data, kept)))
    assert trimmed.get_vocab_size() == len(kept.kept)
    result = trim.compare_tokenizers(full, trimmed, kept, ZH_EN[:40])
    assert result["agreement"] == 1.0 and result["differences"] == []
    # texts outside the counted corpus: other segmentations are counted and listed, never out of range
    foreign = trim.compare_tokenizers(full, trimmed, kept, FOREIGN + ZH_EN[40:])
    assert foreign["differing"] >= len(FOREIGN) and len(foreign["differences"]) == foreign["differing"]
    assert all(max(e.ids) < len(kept.kept) for e in trimmed.encode_batch(FOREIGN))
    assert trimmed.token_to_id("<unk>") in trimmed.encode("Москва").ids


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(ZH_EN[:40]), min_size=1, max_size=3), st.sampled_from([" ", "", "，", "! "]))
def test_any_mix_of_corpus_sentences_tokenizes_as_before(unigram_ckpt: Path, parts: list[str], glue: str) -> None:
    """Unigram keeps its best segmentation when all of its pieces are kept, whatever the text."""
    from tokenizers import Tokenizer

    ckpt = load_checkpoint(unigram_ckpt)
    full = ref_tokenizer(ckpt)
    full.no_truncation()
    data = json.loads(full.to_str())
    text = glue.join(parts)
    kept = trim.choose_pieces(data, trim.piece_counts(full, [text]), ("zh", "en"), margin=0)
    trimmed = Tokenizer.from_str(json.dumps(trim.trim_tokenizer_json(data, kept)))
    assert kept.old_ids(trimmed.encode(text).ids) == full.encode(text).ids


def test_sliced_embeddings_give_the_same_logits(unigram_ckpt: Path,
                                                chosen: tuple[Any, dict[str, Any], trim.VocabTrim]) -> None:
    _, _, kept = chosen
    ckpt = load_checkpoint(unigram_ckpt)
    before = encode(ref_tokenizer(ckpt), ZH_EN[:40])
    logits = parity.torch_outputs(ckpt, before)["logits"]
    trimmed = trim.trim_checkpoint(ckpt, kept)
    after = encode(ref_tokenizer(trimmed), ZH_EN[:40])
    assert [kept.old_ids(ids) for ids in after.ids] == before.ids
    assert trimmed.model.get_input_embeddings().num_embeddings == len(kept.kept)
    assert trimmed.pad_token_id == kept.kept.index(1)
    np.testing.assert_allclose(parity.torch_outputs(trimmed, after)["logits"], logits, atol=1e-6)


def test_a_multi_head_checkpoint_is_trimmed_in_its_encoder_and_keeps_its_heads(
        tmp_path: Path, unigram_ckpt: Path, chosen: tuple[Any, dict[str, Any], trim.VocabTrim]) -> None:
    import torch

    _, _, kept = chosen
    ckpt = load_checkpoint(save_unigram_multihead(tmp_path / "heads", unigram_ckpt))
    assert ckpt.heads is not None and ckpt.task() == "analysis"
    before = encode(ref_tokenizer(ckpt), ZH_EN[:40])
    outputs = parity.torch_outputs(ckpt, before)
    rows = ckpt.encoder.get_input_embeddings().weight.detach().clone()
    heads = {k: v.detach().clone() for k, v in ckpt.model.heads.state_dict().items()}
    trimmed = trim.trim_checkpoint(ckpt, kept)
    after = encode(ref_tokenizer(trimmed), ZH_EN[:40])
    assert [kept.old_ids(ids) for ids in after.ids] == before.ids
    sliced = trimmed.encoder.get_input_embeddings()
    assert sliced.num_embeddings == len(kept.kept) == trimmed.config.vocab_size
    torch.testing.assert_close(sliced.weight.detach(), rows[torch.tensor(kept.kept)])
    for name, value in trimmed.model.heads.state_dict().items():
        assert torch.equal(value, heads[name])  # the heads read hidden states: untouched
    found = parity.torch_outputs(trimmed, after)
    assert set(found) == {"sentiment_logits", "risk_logits", "entities_logits", "embedding"}
    for name, value in outputs.items():
        np.testing.assert_allclose(found[name], value, atol=1e-6)


def test_export_of_a_trimmed_multi_head_checkpoint(tmp_path: Path, unigram_ckpt: Path) -> None:
    corpus = tmp_path / "corpus.csv"
    corpus.write_text("text,label\n" + "\n".join(f'"{t}",{LABELS[i % 2]}' for i, t in enumerate(ZH_EN)) + "\n",
                      encoding="utf-8")
    ckpt = save_unigram_multihead(tmp_path / "heads", unigram_ckpt)
    small = build_package(ExportOptions(ckpt, tmp_path / "small", trim_vocab=str(corpus), trim_margin=10,
                                        progress=False))
    info = small.data["export"]["vocab_trim"]
    assert info["vocab_after"] < info["vocab_before"] and info["check_label_agreement_with_full_vocab"] == 1.0
    assert small.data["format"] == 2 and set(small.heads) == {"sentiment", "risk", "entities", "embedding"}
    assert small.variants["fp32"]["parity"]["status"] == "passed"


def test_only_unigram_vocabularies_are_trimmed() -> None:
    with pytest.raises(ModelError, match="Unigram"):
        trim.choose_pieces({"model": {"type": "WordPiece", "vocab": {}}}, Counter(), ("en",))


def _matrices(package: Path) -> set[tuple[int, ...]]:
    """The shapes of the fp32 graph's 2-D weights."""
    import onnx

    graph = onnx.load(str(package / VARIANT_FILES["fp32"])).graph
    return {tuple(t.dims) for t in graph.initializer if len(t.dims) == 2}


def _winning(graph: str) -> Any:
    """An fp32 timing under which `graph` (fused: the one with Attention ops) is the faster."""
    import onnx

    def timed(model: Path, *_args: Any, **_kwargs: Any) -> dict[str, float]:
        fused = any(n.op_type == "Attention" for n in onnx.load(str(model)).graph.node)
        speed = 2.0 if fused == (graph == "fused") else 1.0
        return {"items_per_s": speed, "items_per_cpu_s": speed}

    return timed


# Each export ships whichever fp32 graph timed faster, so the two may differ: every pairing is tried.
@pytest.mark.parametrize(("full_graph", "small_graph"), [("plain", "fused"), ("fused", "plain")])
def test_export_with_a_trimmed_vocabulary(tmp_path: Path, unigram_ckpt: Path, monkeypatch: pytest.MonkeyPatch,
                                          full_graph: str, small_graph: str) -> None:
    corpus = tmp_path / "corpus.csv"
    rows = [f'"{t}",{LABELS[i % 2]}' for i, t in enumerate(ZH_EN)]
    corpus.write_text("text,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    monkeypatch.setattr(quantize, "items_per_cpu_second", _winning(full_graph))
    full = build_package(ExportOptions(unigram_ckpt, tmp_path / "full", progress=False))
    monkeypatch.setattr(quantize, "items_per_cpu_second", _winning(small_graph))
    small = build_package(ExportOptions(unigram_ckpt, tmp_path / "small", trim_vocab=str(corpus), trim_margin=10,
                                        progress=False))
    assert full.data["export"]["graph"]["fp32_graph"] == full_graph
    assert small.data["export"]["graph"]["fp32_graph"] == small_graph
    info = small.data["export"]["vocab_trim"]
    assert info["vocab_after"] < info["vocab_before"] and info["corpus_texts"] == len(ZH_EN)
    assert info["check_tokenization"]["agreement"] == 1.0 and info["check_label_agreement_with_full_vocab"] == 1.0
    assert small.variants["fp32"]["parity"]["status"] == "passed" and small.version != full.version
    # The embedding rows, not file sizes, which differ between the fused and the plain graph too.
    hidden = load_checkpoint(unigram_ckpt).config.hidden_size
    assert (info["vocab_after"], hidden) in _matrices(small.path)
    assert (info["vocab_before"], hidden) in _matrices(full.path)
    assert not any(shape[0] == info["vocab_before"] for shape in _matrices(small.path))
    texts = ZH_EN[:20]
    a = OnnxScorer.open(full.path).outputs(texts)["logits"]
    b = OnnxScorer.open(small.path).outputs(texts)["logits"]
    np.testing.assert_allclose(a, b, atol=1e-4)
    assert read_manifest(small.path).data["export"]["vocab_trim"]["languages"] == ["zh", "en"]


def test_an_entity_corpus_counts_by_its_texts(tmp_path: Path, unigram_ckpt: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """`--trim-vocab` takes ner: corpora beside classification data: their sentences' pieces are kept."""
    from models import datasets
    from models.datasets import NerBuiltin, NerExample

    half = len(ZH_EN) // 2
    corpus = tmp_path / "corpus.csv"
    corpus.write_text("text,label\n" + "\n".join(f'"{t}",{LABELS[i % 2]}' for i, t in enumerate(ZH_EN[:half]))
                      + "\n", encoding="utf-8")
    sentences = NerBuiltin("sentences", "the other half, as an entity corpus",
                           lambda: [NerExample(t, (), "train") for t in ZH_EN[half:]])
    monkeypatch.setitem(datasets.NER_BUILTINS, "sentences", sentences)
    one = build_package(ExportOptions(unigram_ckpt, tmp_path / "one", trim_vocab=str(corpus), trim_margin=0,
                                      progress=False)).data["export"]["vocab_trim"]
    both = build_package(ExportOptions(unigram_ckpt, tmp_path / "both", trim_vocab=f"{corpus}+ner:sentences",
                                       trim_margin=0, progress=False)).data["export"]["vocab_trim"]
    assert both["corpus_texts"] == len(ZH_EN) and one["corpus_texts"] == half
    assert both["kept_by"]["corpus"] > one["kept_by"]["corpus"]
    # every check text (the built-in sentences) is now covered by counted pieces
    assert both["check_tokenization"]["agreement"] == 1.0


def test_auto_trims_a_multi_head_checkpoint_to_every_heads_training_data(
        tmp_path: Path, unigram_ckpt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A multi-head report names its data per head: `auto` counts all of it, entity corpora by their
    sentences, and a part two heads share once."""
    from models import datasets
    from models.datasets import NerBuiltin, NerExample

    third = len(ZH_EN) // 3
    corpora = [tmp_path / "a.csv", tmp_path / "b.csv"]
    for path, texts in zip(corpora, (ZH_EN[:third], ZH_EN[third:2 * third]), strict=True):
        path.write_text("text,label\n" + "\n".join(f'"{t}",{LABELS[i % 2]}' for i, t in enumerate(texts)) + "\n",
                        encoding="utf-8")
    last = NerBuiltin("sentences", "the last third, as an entity corpus",
                      lambda: [NerExample(t, (), "train") for t in ZH_EN[2 * third:]])
    monkeypatch.setitem(datasets.NER_BUILTINS, "sentences", last)
    ckpt = save_unigram_multihead(tmp_path / "heads", unigram_ckpt)
    data = {"sentiment": f"{corpora[0]}+{corpora[1]}", "risk": str(corpora[1]), "entities": "ner:sentences"}
    (ckpt / "training_report.json").write_text(json.dumps({"name": "uni-heads", "max_length": 64, "data": data}))
    info = build_package(ExportOptions(ckpt, tmp_path / "small", trim_vocab="auto", trim_margin=0,
                                       progress=False)).data["export"]["vocab_trim"]
    assert info["corpus"] == f"{corpora[0]}+{corpora[1]}+ner:sentences"
    assert info["corpus_texts"] == len(ZH_EN)
    assert info["vocab_after"] < info["vocab_before"]
    assert info["check_tokenization"]["agreement"] == 1.0
