"""Multi-task training (models/multitask.py): entity token labels, metrics, calibration, the split
guard, and `yuqing train --task analysis` / `yuqing evaluate --head` end to end on a tiny BERT."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from models import datasets  # noqa: E402
from models.datasets import Entity, NerBuiltin, NerExample, load_ner  # noqa: E402
from models.evaluation import calibration  # noqa: E402
from models.multihead import ENTITY_LABELS, HEADS_JSON, HEADS_WEIGHTS, SEQUENCE, HeadSpec, load  # noqa: E402
from models.multitask import (  # noqa: E402
    ENTITY_ID,
    HeadData,
    MultiTaskConfig,
    _hold_out_across_heads,
    bio_labels,
    encode_entities,
    entity_errors,
    entity_metrics,
    fit_temperature,
    softmax,
    split_cjk_chars,
    train_multitask,
)
from models.splits import split_of  # noqa: E402
from stream.cli import main  # noqa: E402
from stream.core.scorer import decode_entities  # noqa: E402
from tests.tiny_models import save_tiny_tokenizer, tiny_vocab  # noqa: E402

# ------------------------------------------------------------------ token labels from offsets


def test_bio_labels_on_sentencepiece_offsets_in_chinese() -> None:
    # The offsets multilingual-e5-small's tokenizer gives: a lone "▁" over the first character,
    # then a token over the same character again; "在北京" is one token holding 在 (O) and 北京.
    text = "新华社记者在北京报道"
    offsets = [(0, 0), (0, 1), (0, 3), (3, 5), (5, 8), (8, 10), (0, 0)]
    entities = [Entity(0, 3, "ORG"), Entity(6, 8, "LOC")]
    assert bio_labels(text, offsets, entities) == [None, "B-ORG", "I-ORG", "O", "B-LOC", "O", None]


def test_bio_labels_on_english_pieces_with_their_leading_space() -> None:
    text = "Joe Biden met Xi Jinping in Washington."
    # me5's pieces: "▁Joe" (0,3) "▁Bi" (3,6) "den" (6,9) ... offsets include the leading space.
    offsets = [(0, 0), (0, 3), (3, 6), (6, 9), (9, 13), (13, 16), (16, 20), (20, 24), (24, 27), (27, 38),
               (38, 39), (0, 0)]
    entities = [Entity(0, 9, "PER"), Entity(14, 24, "PER"), Entity(28, 38, "LOC")]
    labels = bio_labels(text, offsets, entities)
    assert labels == [None, "B-PER", "I-PER", "I-PER", "O", "B-PER", "I-PER", "I-PER", "O", "B-LOC", "O", None]
    # The stream's decoder gives the gold spans back (it trims the pieces' leading space).
    found = decode_entities(text, offsets, [lb or "O" for lb in labels], [0.9] * len(offsets))
    assert [(e.start, e.end, e.type, e.text) for e in found] == [
        (0, 9, "PER", "Joe Biden"), (14, 24, "PER", "Xi Jinping"), (28, 38, "LOC", "Washington")]


def test_a_token_across_two_entities_starts_the_second() -> None:
    text = "U.S.-China"
    offsets = [(0, 2), (2, 6), (6, 10)]  # "U." "S.-C" "hina"
    entities = [Entity(0, 4, "LOC"), Entity(5, 10, "LOC")]
    assert bio_labels(text, offsets, entities) == ["B-LOC", "B-LOC", "I-LOC"]
    # Adjacent entities of one type stay two entities (B- after I-), and a token inside an
    # entity no earlier token began (the text was cut there) begins it.
    assert bio_labels("ab cd", [(0, 2), (3, 5)], [Entity(0, 2, "PER"), Entity(3, 5, "PER")]) == ["B-PER", "B-PER"]
    assert bio_labels("abcd", [(2, 4)], [Entity(0, 4, "ORG")]) == ["B-ORG"]
    assert bio_labels(" x", [(0, 1), (1, 2)], []) == ["O", "O"]


def test_encode_entities_with_a_real_tokenizer_round_trips(tmp_path: Path) -> None:
    examples = [
        NerExample("国务院总理李强在北京会见德国总统", (Entity(0, 3, "ORG"), Entity(5, 7, "PER"), Entity(8, 10, "LOC"),
                                           Entity(12, 14, "LOC"))),
        NerExample("Reuters said Angela Merkelson visited Washington.",
                   (Entity(0, 7, "ORG"), Entity(13, 29, "PER"), Entity(38, 48, "LOC"))),
    ]
    vocab = tiny_vocab([*(e.text for e in examples), "merkel"])
    tokenizer = save_tiny_tokenizer(tmp_path, [v for v in vocab if v != "merkelson"])
    encoded = encode_entities(tokenizer, examples, 64)
    assert encoded.truncated == 0
    english = tokenizer.convert_ids_to_tokens(encoded.features[1]["input_ids"])
    assert english[4:8] == ["merkel", "##s", "##o", "##n"]  # an entity split across word pieces
    for example, offsets, labels in zip(encoded.examples, encoded.offsets, encoded.labels, strict=True):
        assert labels[0] == labels[-1] == -100  # [CLS], [SEP]
        names = ["O" if k == -100 else ENTITY_LABELS[k] for k in labels]
        found = decode_entities(example.text, offsets, names, [1.0] * len(names))
        assert [(e.start, e.end, e.type) for e in found] == [(e.start, e.end, e.type) for e in example.entities]
    # Cut at 8 tokens: counted, and labels stop where the tokens do.
    short = encode_entities(tokenizer, examples, 8)
    assert short.truncated == 2 and all(len(lb) == 8 for lb in short.labels)
    assert short.labels[0][1:4] == [ENTITY_ID["B-ORG"], ENTITY_ID["I-ORG"], ENTITY_ID["I-ORG"]]


# ------------------------------------------------------------------ metrics and calibration


def test_entity_metrics_are_exact_span_and_type() -> None:
    gold = [NerExample("abcdefgh", (Entity(0, 2, "PER"), Entity(3, 5, "LOC"))), NerExample("xyz", ())]
    predicted = [[Entity(0, 2, "PER"), Entity(3, 6, "LOC")], [Entity(0, 1, "ORG")]]  # one right, two wrong
    result = entity_metrics(gold, predicted)
    assert (result["precision"], result["recall"]) == (pytest.approx(1 / 3), 0.5)
    assert result["f1"] == pytest.approx(0.4) and result["support"] == 2 and result["predicted"] == 3
    assert result["by_type"]["PER"]["f1"] == 1.0 and result["by_type"]["LOC"]["f1"] == 0.0
    assert result["by_type"]["ORG"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0, "predicted": 1}
    assert entity_metrics([NerExample("a", ())], [[]])["f1"] == 0.0
    # the one wrong LOC has the right type and an overlapping span; the ORG overlaps nothing
    assert result["errors"] == {"wrong_type": 0, "boundary": 1, "boundary_and_type": 0, "missed": 0,
                                "spurious": 1}


def test_entity_errors_name_each_way_to_miss() -> None:
    gold = [NerExample("x" * 40, (Entity(0, 2, "PER"), Entity(4, 8, "ORG"), Entity(10, 12, "LOC"),
                                   Entity(20, 22, "PER"), Entity(30, 32, "LOC")))]
    predicted = [[Entity(0, 2, "ORG"),    # the span right, the type wrong
                  Entity(5, 9, "ORG"),    # the type right, the edges wrong
                  Entity(11, 14, "PER"),  # both wrong
                  Entity(30, 32, "LOC"),  # right
                  Entity(35, 37, "PER")]]  # nothing there; gold (20, 22) is missed
    assert entity_errors(gold, predicted) == {"wrong_type": 1, "boundary": 1, "boundary_and_type": 1,
                                              "missed": 1, "spurious": 1}


_spans = st.lists(st.tuples(st.integers(0, 30), st.integers(1, 6), st.sampled_from(["PER", "LOC", "ORG"])),
                  max_size=6).map(lambda xs: tuple(Entity(a, a + n, t) for a, n, t in xs))


@given(st.lists(st.tuples(_spans, _spans), min_size=1, max_size=4))
def test_entity_errors_account_for_every_exact_miss(pairs: list[tuple[tuple[Entity, ...], tuple[Entity, ...]]]) -> None:
    # Overlapping, duplicate and nested spans included: whatever a decoder emits, every gold entity
    # without an exact match lands in exactly one bucket, and spurious never exceeds the wrong guesses.
    gold = [NerExample("x" * 40, g) for g, _ in pairs]
    predicted = [list(p) for _, p in pairs]
    result = entity_metrics(gold, predicted)
    errors = result["errors"]
    tp = round(result["recall"] * result["support"])
    assert errors["wrong_type"] + errors["boundary"] + errors["boundary_and_type"] + errors["missed"] \
        == result["support"] - tp
    assert 0 <= errors["spurious"] <= result["predicted"] - tp


def test_temperature_fixes_overconfidence() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 600)
    predicted = np.where(rng.random(600) < 0.7, labels, (labels + 1) % 3)  # 70% right, 10 logits apart
    logits = 10.0 * np.eye(3)[predicted] + rng.normal(0, 0.5, (600, 3))
    temperature = fit_temperature(logits, labels.tolist())
    before = calibration(labels.tolist(), softmax(logits))["ece"]
    after = calibration(labels.tolist(), softmax(logits, temperature))["ece"]
    assert temperature > 3 and before > 0.25 and after < 0.05
    # Calibrated logits (70% on a label that is right 70% of the time) keep a temperature near 1.
    confident = np.log(np.where(np.eye(3)[predicted] > 0, 0.7, 0.15))
    assert fit_temperature(confident, labels.tolist()) == pytest.approx(1.0, abs=0.15)


# ------------------------------------------------------------------ the split guard


def test_a_test_text_of_one_head_is_trained_on_by_no_head() -> None:
    shared = "央行宣布下调存款准备金率"
    ner = HeadData(HeadSpec("entities", "token", ENTITY_LABELS), "x", {},
                   {"train": [], "validation": [], "test": [NerExample(shared, (), "test")]})
    seq = HeadData(HeadSpec("category", SEQUENCE, ("finance", "sports")), "y", {},
                   {"train": [datasets.Example(shared, "finance"), datasets.Example("球赛", "sports")],
                    "validation": [], "test": []})
    _hold_out_across_heads([ner, seq])
    assert [e.text for e in seq.parts["train"]] == ["球赛"]
    assert seq.stats == {"test_text_of_another_head_dropped": 1}


def test_ner_joins_keep_a_corpus_test_file_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = next(f"华为在深圳发布新机{i}" for i in range(100) if split_of(f"华为在深圳发布新机{i}") == "train")
    fixed = NerBuiltin("fixed", "a corpus with its own test file",
                       lambda: [NerExample(text, (Entity(0, 2, "ORG"),), "test")])
    monkeypatch.setitem(datasets.NER_BUILTINS, "fixed", fixed)
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"text": text, "entities": [[3, 5, "LOC"]]}, ensure_ascii=False) + "\n")
    for spec in (f"{other}+ner:fixed", f"ner:fixed+{other}"):  # whatever the order, the test copy wins
        dataset = load_ner(spec)
        assert dataset.stats["duplicates_dropped"] == 1
        parts = dataset.splits()
        assert [e.text for e in parts["test"]] == [text] and not parts["train"]
        assert parts["test"][0].entities == (Entity(0, 2, "ORG"),)
    with pytest.raises(datasets.DataError, match="test-only"):
        load_ner(f"ner:en-gold+{other}")


# ------------------------------------------------------------------ end to end

ZH_PER, ZH_LOC, ZH_ORG = ["张伟", "李娜", "王强"], ["北京", "上海", "深圳"], ["华为", "腾讯", "央行"]
EN_PER, EN_LOC, EN_ORG = ["Alice", "Bob"], ["Paris", "Tokyo"], ["Reuters", "Nasa"]
MOOD = {"negative": ["loss", "crash"], "neutral": ["meeting", "report"], "positive": ["win", "growth"]}
TOPICS = {"finance": ["bank", "money"], "sports": ["match", "goal"], "science": ["space", "robot"]}
RISK = {"conflict": ["war", "troops"], "corruption": ["bribe", "graft"]}


def _write_heads(root: Path, rng: random.Random) -> dict[str, Path]:
    files = {}
    for name, classes in (("sentiment", MOOD), ("category", TOPICS), ("risk", RISK)):
        path = root / f"{name}.jsonl"
        rows = [{"text": f"{' '.join(rng.sample(words, 2))} {rng.choice(EN_LOC)} {i}", "label": label}
                for i in range(60) for label, words in [list(classes.items())[i % len(classes)]]]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        files[name] = path
    ner_rows: list[dict[str, object]] = []
    for i in range(80):
        if i % 2:
            per, loc, org = rng.choice(ZH_PER), rng.choice(ZH_LOC), rng.choice(ZH_ORG)
            text = f"{org}的{per}在{loc}开会{i}"
            spans: list[list[object]] = [[0, 2, "ORG"], [3, 5, "PER"], [6, 8, "LOC"]]
        else:
            per, loc, org = rng.choice(EN_PER), rng.choice(EN_LOC), rng.choice(EN_ORG)
            text = f"{per} of {org} visited {loc} {i}"
            a = len(per) + 4
            b = a + len(org) + 9
            spans = [[0, len(per), "PER"], [a, a + len(org), "ORG"], [b, b + len(loc), "LOC"]]
        ner_rows.append({"text": text, "entities": spans})
    files["entities"] = root / "entities.jsonl"
    files["entities"].write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ner_rows))
    return files


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    """A random 2-layer BertModel with a WordPiece tokenizer over the test's words, and the data."""
    from transformers import BertConfig, BertModel

    root = tmp_path_factory.mktemp("multitask")
    files = _write_heads(root, random.Random(0))
    texts = [json.loads(line)["text"] for path in files.values() for line in path.read_text().splitlines()]
    base = root / "base"
    vocab = tiny_vocab(texts)
    save_tiny_tokenizer(base, vocab, 64)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(str(base))
    return base, files


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out = capsys.readouterr()
    return int(exit_info.value.code or 0), out.out, out.err


def test_analysis_training_end_to_end(tiny_encoder: tuple[Path, dict[str, Path]], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    base, files = tiny_encoder
    out = tmp_path / "analysis"
    heads = [a for name, path in files.items() for a in ("--head", f"{name}={path}")]
    args = ["train", "--task", "analysis", "--base", str(base), "--out", str(out), *heads, "--epochs", "3",
            "--lr", "3e-3", "--batch-size", "8", "--max-length", "32", "--threads", "1"]
    code, stdout, stderr = _run(args, capsys)
    assert code == 0, stderr

    heads_json = json.loads((out / HEADS_JSON).read_text())
    assert heads_json["format"] == 1 and heads_json["pooling"] == "mean"
    assert [(h["name"], h["kind"]) for h in heads_json["heads"]] == [
        ("sentiment", "sequence"), ("category", "sequence"), ("risk", "sequence"), ("entities", "token")]
    assert heads_json["heads"][0]["labels"] == ["negative", "neutral", "positive"]
    assert heads_json["heads"][3]["labels"] == list(ENTITY_LABELS)
    assert set(heads_json["calibration"]) == {"sentiment", "category", "risk"}
    for cal in heads_json["calibration"].values():
        assert cal["temperature"] > 0 and 0 <= cal["ece_before"] <= 1 and 0 <= cal["ece_after"] <= 1
    for name in (HEADS_WEIGHTS, "config.json", "model.safetensors", "tokenizer.json"):
        assert (out / name).is_file(), name

    report = json.loads((out / "training_report.json").read_text())
    assert report["task"] == "analysis" and report["data"] == {n: str(p) for n, p in files.items()}
    assert len(report["epochs"]) == 3 and 1 <= report["best_epoch"] <= 3
    for name in ("sentiment", "category", "risk"):
        test = report["heads"][name]["test"]
        assert 0 <= test["macro_f1"] <= 1 and test["support"] == report["heads"][name]["split_sizes"]["test"]
        assert report["heads"][name]["temperature"] == heads_json["calibration"][name]["temperature"]
    entities = report["heads"]["entities"]["test"]
    assert set(entities) >= {"precision", "recall", "f1", "by_type"} and entities["support"] > 0
    assert entities["f1"] > 0.5  # decoded by the stream's decoder, exact spans
    # Separable toy data: the model has learnt something for every head.
    assert report["best_validation_mean_score"] > 0.5, stdout

    model = load(out)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(out))
    batch = tokenizer(["Alice of Nasa visited Paris", "华为的张伟在北京开会"], padding=True, return_tensors="pt")
    with torch.inference_mode():
        logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    assert logits["sentiment"].shape == (2, 3) and logits["entities"].shape[-1] == len(ENTITY_LABELS)
    assert torch.allclose(logits["embedding"].norm(dim=-1), torch.ones(2))

    # `yuqing evaluate --head`: the checkpoint's temperature, both kinds of head.
    code, stdout, stderr = _run(["evaluate", "--model", str(out), "--head", "sentiment", "--data",
                                 str(files["sentiment"]), "--json", str(tmp_path / "s.json")], capsys)
    assert code == 0, stderr
    assert "after temperature" in stdout and "precision" in stdout
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["temperature"] == heads_json["calibration"]["sentiment"]["temperature"]
    assert saved["macro_f1"] == pytest.approx(report["heads"]["sentiment"]["test"]["macro_f1"])
    assert saved["calibration"]["ece"] == pytest.approx(heads_json["calibration"]["sentiment"]["ece_after"])
    code, stdout, stderr = _run(["evaluate", "--model", str(out), "--head", "entities", "--data",
                                 str(files["entities"])], capsys)
    assert code == 0, stderr
    *_, total, misses = stdout.strip().splitlines()
    assert "PER" in stdout and total.startswith("all") and misses.startswith("gold entities not matched exactly")
    code, _, stderr = _run(["evaluate", "--model", str(out), "--data", str(files["risk"])], capsys)
    assert code == 2 and "--head" in stderr
    code, _, stderr = _run(["evaluate", "--model", str(out), "--head", "mood", "--data", str(files["risk"])],
                           capsys)
    assert code == 4 and "no head 'mood'" in stderr


def test_analysis_arguments_are_checked(tiny_encoder: tuple[Path, dict[str, Path]], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    base, files = tiny_encoder
    common = ["train", "--base", str(base), "--out", str(tmp_path / "m")]
    code, _, stderr = _run([*common, "--task", "analysis", "--data", str(files["risk"])], capsys)
    assert code == 2 and "--head" in stderr
    code, _, stderr = _run([*common, "--task", "analysis", "--head", "risk"], capsys)
    assert code == 2 and "NAME=SPEC" in stderr
    code, _, stderr = _run([*common, "--task", "risk", "--head", f"risk={files['risk']}"], capsys)
    assert code == 2 and "--data" in stderr
    code, _, stderr = _run([*common, "--task", "risk", "--data", str(files["risk"]), "--cjk-chars"], capsys)
    assert code == 2 and "--cjk-chars are for --task analysis" in stderr
    # A head's data problem stops the run before any weight is loaded (exit 4, DataError).
    code, _, stderr = _run([*common, "--task", "analysis", "--head", f"risk={files['risk']}",
                            "--head", "entities=ner:en-gold"], capsys)
    assert code == 4 and "test-only" in stderr
    code, _, stderr = _run([*common, "--task", "analysis", "--head", f"risk={files['risk']}",
                            "--head", f"risk={files['category']}"], capsys)
    assert code == 4 and "each head once" in stderr
    for bad in ("risk", "risk=", "risk=-1", "risk=nan", "risk=inf", "=2"):
        code, _, stderr = _run([*common, "--task", "analysis", "--head", f"risk={files['risk']}",
                                "--head-weight", bad], capsys)
        assert code == 2 and "NAME=WEIGHT" in stderr, bad
    code, _, stderr = _run([*common, "--task", "analysis", "--head", f"risk={files['risk']}",
                            "--head-weight", "mood=2"], capsys)
    assert code == 4 and "--head-weight names heads of this run (risk)" in stderr
    code, _, stderr = _run([*common, "--task", "risk", "--data", str(files["risk"]), "--head-weight", "risk=2"],
                           capsys)
    assert code == 2 and "--head-weight" in stderr
    assert not (tmp_path / "m").exists()


def test_fresh_heads_learn_faster_and_biases_never_decay(tiny_encoder: tuple[Path, dict[str, Path]]) -> None:
    from models.multihead import HeadsConfig, MultiHeadModel
    from models.training import optimizer_for

    base, _ = tiny_encoder
    model = MultiHeadModel.from_base(str(base), HeadsConfig([HeadSpec("risk", SEQUENCE, ("a", "b"))]))
    model.encoder.get_input_embeddings().weight.requires_grad_(False)
    optimizer = optimizer_for(model, 1e-4, 0.01, fresh=("heads.", 30.0))
    by_param = {id(p): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert by_param[id(named["heads.risk.weight"])] == (pytest.approx(3e-3), 0.01)
    assert by_param[id(named["heads.risk.bias"])] == (pytest.approx(3e-3), 0.0)
    layer_norm = next(n for n in named if "LayerNorm" in n)
    assert by_param[id(named[layer_norm])] == (1e-4, 0.0)
    assert id(named["encoder.embeddings.word_embeddings.weight"]) not in by_param  # frozen
    # Without `fresh`, one rate for all (the single-task recipe).
    assert {g["lr"] for g in optimizer_for(model, 1e-4, 0.01).param_groups} == {1e-4}


# ------------------------------------------------------------------ one token per CJK character

# Pieces as SentencePiece learns them on Chinese: several characters in one piece, so a span
# boundary inside "在北京" or "临江化工" cannot be labelled.
UNIGRAM_PIECES = ["▁在北京", "在北京", "临江化工", "化工", "北京", "▁", "在", "北", "京", "临", "江", "化",
                  "工", "厂", "的", "张", "伟", "开", "会", "▁hello", "▁world", "▁20", "24", "▁Nasa", "hello",
                  "▁visited", "▁Paris", ",", "."] + [f"▁{c}" for c in "abcdefghijklmnopqrstuvwxyz"] + list(
                      "abcdefghijklmnopqrstuvwxyz0123456789")


def _save_unigram_tokenizer(out: Path) -> object:
    """A me5-like tokenizer: Unigram pieces behind Metaspace (prepend "▁" always), <s> $A </s>."""
    from tokenizers import Tokenizer, pre_tokenizers, processors
    from tokenizers.models import Unigram
    from transformers import PreTrainedTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    # Longer pieces score higher, so the model prefers joining characters as SentencePiece does.
    vocab = [(s, 0.0) for s in specials] + [(p, -10.0 + len(p)) for p in dict.fromkeys(UNIGRAM_PIECES)]
    backend = Tokenizer(Unigram(vocab, unk_id=3, byte_fallback=False))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    backend.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0),
                                                                                               ("</s>", 2)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                        unk_token="<unk>", pad_token="<pad>", cls_token="<s>", sep_token="</s>",
                                        mask_token="<mask>", model_max_length=64)
    tokenizer.save_pretrained(str(out))
    return tokenizer


def _pieces(tokenizer: object, text: str) -> list[tuple[str, tuple[int, int]]]:
    enc = tokenizer(text, return_offsets_mapping=True)  # type: ignore[operator]
    tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"])  # type: ignore[attr-defined]
    return list(zip(tokens, [tuple(o) for o in enc["offset_mapping"]], strict=True))


def test_cjk_split_gives_every_character_its_token_and_keeps_the_rest(tmp_path: Path) -> None:
    tokenizer = _save_unigram_tokenizer(tmp_path)
    chinese = "临江化工在北京的厂开会"
    english = "hello world 2024, visited Paris."
    mixed = "临江化工 hello 在北京"
    before = {t: _pieces(tokenizer, t) for t in (chinese, english, mixed)}
    assert ("在北京", (4, 7)) in before[chinese]  # the base joins characters

    assert split_cjk_chars(tokenizer) is True
    assert split_cjk_chars(tokenizer) is False  # once only: a checkpoint trained with it keeps one split
    after = {t: _pieces(tokenizer, t) for t in before}
    assert after[english] == before[english]  # no CJK: the same pieces and offsets
    zh = [p for p in after[chinese] if p[1] != (0, 0)]
    # Each character alone; the text's first gets Metaspace's "▁" as before (its own token here,
    # over the same character), the others no "▁" (prepend_scheme "first", not "always").
    assert zh[0] == ("▁", (0, 1))
    assert zh[1:] == [(c, (i, i + 1)) for i, c in enumerate(chinese)]
    assert [p for p, _ in after[mixed]] == ["<s>", "▁", "临", "江", "化", "工", "▁hello", "▁", "在", "北", "京",
                                            "</s>"]
    for text, pieces in after.items():  # offsets are exact: every token covers its own characters
        for piece, (start, end) in pieces:
            if start != end and piece.strip("▁"):
                assert text[start:end].strip() == piece.replace("▁", " ").strip(), (text, piece)

    # Entity labels can now start and end at any character, and decode back to the gold spans.
    example = NerExample("临江化工在北京开会", (Entity(0, 4, "ORG"), Entity(5, 7, "LOC")))
    encoded = encode_entities(tokenizer, [example], 32)
    names = ["O" if k == -100 else ENTITY_LABELS[k] for k in encoded.labels[0]]
    assert names == ["O", "B-ORG", "I-ORG", "I-ORG", "I-ORG", "I-ORG", "O", "B-LOC", "I-LOC", "O", "O", "O"]
    found = decode_entities(example.text, encoded.offsets[0], names, [1.0] * len(names))
    assert [(e.text, e.type) for e in found] == [("临江化工", "ORG"), ("北京", "LOC")]


def test_a_trained_checkpoint_and_its_package_tokenizer_split_cjk(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from tokenizers import Tokenizer
    from transformers import BertConfig, BertModel

    from export import parity
    from export.checkpoint import load_checkpoint
    from stream.core.scorer import encode, load_tokenizer

    base = tmp_path / "base"
    tokenizer = _save_unigram_tokenizer(base)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1,  # type: ignore[arg-type]
                        num_attention_heads=2, intermediate_size=32, max_position_embeddings=64)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(str(base))
    rng = random.Random(0)
    rows = []
    for i in range(40):
        org, loc = rng.choice(["临江化工", "化工厂"]), rng.choice(["北京", "江北"])
        rows.append({"text": f"{org}在{loc}开会{i % 10}", "entities": [[0, len(org), "ORG"],
                                                                     [len(org) + 1, len(org) + 3, "LOC"]]})
    data = tmp_path / "ner.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    texts = [str(r["text"]) for r in rows] + ["hello world, visited Paris.", "临江化工 hello 在北京"]

    for flag, split in ((None, False), ("--cjk-chars", True)):  # default: off
        out = tmp_path / f"m{split}"
        args = ["train", "--task", "analysis", "--base", str(base), "--out", str(out), "--head",
                f"entities={data}", "--epochs", "1", "--batch-size", "8", "--max-length", "32", "--threads", "1"]
        code, _, stderr = _run([*args, *([flag] if flag else [])], capsys)
        assert code == 0, stderr
        assert json.loads((out / "training_report.json").read_text())["hyperparameters"]["cjk_chars"] is split
        saved = Tokenizer.from_file(str(out / "tokenizer.json"))  # what the export copies into the package
        tokens = saved.encode("在北京").tokens
        assert tokens == (["<s>", "▁", "在", "北", "京", "</s>"] if split else ["<s>", "▁在北京", "</s>"])
        # The export's gate: the package tokenizer encodes every text as the checkpoint's does.
        ckpt = load_checkpoint(out)
        package_tokenizer = tmp_path / f"tokenizer{split}.json"
        ckpt.tokenizer.backend_tokenizer.save(str(package_tokenizer))
        encoded = encode(load_tokenizer(package_tokenizer, ckpt.max_length), texts)
        assert parity.tokenizer_agreement(ckpt, encoded, texts) == 1.0


def test_a_head_weighed_zero_leaves_its_head_untouched(tiny_encoder: tuple[Path, dict[str, Path]], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """--head-weight scales a head's loss: at 0 its gradients vanish, so its bias (never decayed)
    ends where it started while the other head's moves."""
    from safetensors.torch import load_file

    from models.multihead import MultiHeadModel

    base, files = tiny_encoder
    initial: dict[str, torch.Tensor] = {}
    make = MultiHeadModel.from_base.__func__  # type: ignore[attr-defined]

    def spy(cls: type[MultiHeadModel], location: str, config: object) -> MultiHeadModel:
        model = make(cls, location, config)
        initial.update({k: v.detach().clone() for k, v in model.state_dict().items() if k.startswith("heads.")})
        return model

    monkeypatch.setattr(MultiHeadModel, "from_base", classmethod(spy))
    out = tmp_path / "weighted"
    train_multitask(MultiTaskConfig(heads=(("sentiment", str(files["sentiment"])), ("risk", str(files["risk"]))),
                                    base=str(base), out=out, epochs=1, lr=3e-3, batch_size=8, max_length=32,
                                    threads=1, head_weights=(("risk", 0.0),)), echo=lambda _: None)
    saved = load_file(str(out / HEADS_WEIGHTS))
    assert torch.equal(saved["risk.bias"], initial["heads.risk.bias"])
    assert not torch.equal(saved["sentiment.bias"], initial["heads.sentiment.bias"])
    report = json.loads((out / "training_report.json").read_text())
    assert report["hyperparameters"]["head_weights"] == [["risk", 0.0]]
