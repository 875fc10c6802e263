"""`yuqing train` and `yuqing evaluate` end to end, on a tiny random BERT built here (seconds)."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from stream.cli import main  # noqa: E402

POSITIVE = ["good", "great", "excellent", "wonderful", "lovely"]
NEGATIVE = ["bad", "awful", "terrible", "boring", "dreadful"]
FILLER = ["the", "movie", "film", "was", "is", "a", "this", "plot", "acting", "story", "ending", "cast"]


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out = capsys.readouterr()
    return int(exit_info.value.code or 0), out.out, out.err


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random BertModel (hidden 32, 2 layers) with a word-level tokenizer, saved like a hub model."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("tiny-bert")
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {token: i for i, token in enumerate([*specials, *POSITIVE, *NEGATIVE, *FILLER])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=64,
    )
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(str(path))
    fast.save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def review_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Separable synthetic reviews: the sentiment words decide the label."""
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("data") / "reviews.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for i in range(400):
            label = "positive" if i % 2 else "negative"
            words = rng.sample(POSITIVE if label == "positive" else NEGATIVE, 2) + rng.sample(FILLER, 4)
            rng.shuffle(words)
            writer.writerow([" ".join(words) + f" {i}", label])
    return path


def _train_args(base: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--task",
        "sentiment",
        "--data",
        str(data),
        "--base",
        str(base),
        "--out",
        str(out),
        "--epochs",
        "3",
        "--lr",
        "3e-3",
        "--batch-size",
        "16",
        "--threads",
        "1",
        *extra,
    ]


def test_train_then_evaluate(
    tiny_base: Path, review_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "model"
    code, stdout, stderr = _run(_train_args(tiny_base, review_csv, out), capsys)
    assert code == 0, stderr
    assert "validation" in stdout and "macro avg" in stdout  # label table and test report printed

    files = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "training_report.json"} <= files
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert config["label2id"] == {"negative": 0, "positive": 1}

    report = json.loads((out / "training_report.json").read_text())
    assert report["task"] == "sentiment" and report["data"] == str(review_csv)
    assert sum(report["split_sizes"].values()) == 400
    assert report["split_sizes"] == {k: sum(v.values()) for k, v in report["label_counts"].items()}
    assert [row["epoch"] for row in report["epochs"]] == [1, 2, 3]
    assert all("validation_macro_f1" in row for row in report["epochs"])
    assert report["best_epoch"] in (1, 2, 3)
    assert report["hyperparameters"]["lr"] == 3e-3 and report["seed"] == 42
    per_class = report["test"]["report"]
    assert {"negative", "positive", "macro avg", "weighted avg"} <= set(per_class)
    assert {"precision", "recall", "f1-score", "support"} <= set(per_class["positive"])
    assert report["test_accuracy"] >= 0.9, report["epochs"]
    calibration = report["test"]["calibration"]
    assert 0 <= calibration["ece"] <= 1
    assert sum(b["count"] for b in calibration["bins"]) == report["split_sizes"]["test"]
    assert {"torch", "transformers", "scikit-learn"} <= set(report["versions"])
    assert report["duration_seconds"] > 0

    metrics_path = tmp_path / "eval.json"
    code, stdout, stderr = _run(
        ["evaluate", "--model", str(out), "--data", str(review_csv), "--json", str(metrics_path)], capsys
    )
    assert code == 0, stderr
    assert "confusion matrix" in stdout and "weighted avg" in stdout
    evaluated = json.loads(metrics_path.read_text())
    # Same split rule, same weights: evaluate reproduces the report's test figures.
    assert evaluated["support"] == report["split_sizes"]["test"]
    assert evaluated["accuracy"] == pytest.approx(report["test_accuracy"])
    assert evaluated["macro_f1"] == pytest.approx(report["test_macro_f1"])
    matrix = evaluated["confusion_matrix"]["rows_true_columns_predicted"]
    assert sum(map(sum, matrix)) == evaluated["support"]


def test_lora_saves_a_merged_plain_checkpoint(
    tiny_base: Path, review_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from safetensors import safe_open
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "lora"
    code, _, stderr = _run(_train_args(tiny_base, review_csv, out, "--lora", "--lr", "1e-2", "--limit", "200"), capsys)
    assert code == 0, stderr
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert not [k for k in keys if "lora" in k or "modules_to_save" in k or "base_layer" in k]
    model = AutoModelForSequenceClassification.from_pretrained(str(out))
    assert type(model).__name__ == "BertForSequenceClassification"
    report = json.loads((out / "training_report.json").read_text())
    assert report["hyperparameters"]["lora"] is True
    assert report["hyperparameters"]["trainable_parameters"] < sum(p.numel() for p in model.parameters())


def test_frozen_embeddings_stay_put(
    tiny_base: Path, review_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from safetensors.torch import load_file

    out = tmp_path / "frozen"
    code, _, stderr = _run(
        _train_args(tiny_base, review_csv, out, "--freeze-embeddings", "--epochs", "1", "--limit", "120"), capsys
    )
    assert code == 0, stderr
    before = load_file(str(tiny_base / "model.safetensors"))
    after = load_file(str(out / "model.safetensors"))
    word = next(k for k in before if k.endswith("word_embeddings.weight"))
    assert torch.equal(before[word], after["bert." + word.removeprefix("bert.")])
    layer = next(k for k in before if k.endswith("layer.0.attention.self.query.weight"))
    assert not torch.equal(before[layer], after["bert." + layer.removeprefix("bert.")])


def test_bf16_steps_learn_as_fp32_does_and_save_fp32_weights(
    tiny_base: Path, review_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from safetensors.torch import load_file

    trained = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        code, stdout, stderr = _run(_train_args(tiny_base, review_csv, out, "--precision", precision), capsys)
        assert code == 0, stderr
        assert f"CPU thread(s), {precision}" in stdout
        report = json.loads((out / "training_report.json").read_text())
        assert report["hyperparameters"]["precision"] == precision
        assert report["test_accuracy"] >= 0.9, report["epochs"]
        trained[precision] = load_file(str(out / "model.safetensors"))
    assert {t.dtype for t in trained["bf16"].values()} == {torch.float32}  # autocast leaves the weights fp32
    # Same seed, same batches: only the arithmetic differs, so bf16 really ran.
    assert any(not torch.equal(trained["fp32"][k], trained["bf16"][k]) for k in trained["fp32"])
    code, _, stderr = _run(_train_args(tiny_base, review_csv, tmp_path / "fp8", "--precision", "fp8"), capsys)
    assert code != 0 and "unknown precision 'fp8'" in stderr and not (tmp_path / "fp8").exists()


@pytest.mark.parametrize(("flags", "expected"), [("avx2 fma avx512f avx512_bf16", "bf16"), ("avx2 amx_bf16", "bf16"),
                                                 ("avx2 fma avx512f avx512_vnni", "fp32"), (None, "fp32")])
def test_auto_precision_is_bf16_only_where_the_cpu_has_it(flags: str | None, expected: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from models.training import train_precision
    from stream.core import host

    cpuinfo = tmp_path / "cpuinfo"
    if flags is not None:  # None: no /proc/cpuinfo at all
        cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n", encoding="utf-8")
    monkeypatch.setattr(host, "CPUINFO", cpuinfo)
    assert train_precision("auto") == expected
    assert train_precision("fp32") == "fp32" and train_precision("bf16") == "bf16"  # asked for, not guessed


def test_decoder_base_is_refused_before_training(
    review_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from transformers import GPT2Config

    gpt = tmp_path / "gpt"
    GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50).save_pretrained(str(gpt))
    code, stdout, stderr = _run(_train_args(gpt, review_csv, tmp_path / "out"), capsys)
    assert code == 6  # ModelError
    assert "gpt2 model, not a text encoder" in stderr and "Traceback" not in stderr
    assert "epoch" not in stdout and not (tmp_path / "out").exists()


def test_bad_data_is_refused_before_training(
    tiny_base: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("sentence,label\nhello,a\n")
    code, _, stderr = _run(_train_args(tiny_base, bad, tmp_path / "out"), capsys)
    assert code == 4  # DataError
    assert "missing column(s) text" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "out").exists()


def test_existing_output_needs_overwrite(
    tiny_base: Path, review_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "something").write_text("x")
    code, _, stderr = _run(_train_args(tiny_base, review_csv, out), capsys)
    assert code == 2 and "--overwrite" in stderr


def test_evaluate_refuses_unknown_labels(
    tiny_base: Path, review_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "model"
    assert _run(_train_args(tiny_base, review_csv, out, "--epochs", "1", "--limit", "100"), capsys)[0] == 0
    other = tmp_path / "topics.csv"
    other.write_text("text,label\n" + "".join(f"item {i},{'xy'[i % 2]}\n" for i in range(50)))
    code, _, stderr = _run(["evaluate", "--model", str(out), "--data", str(other)], capsys)
    assert code == 4 and "the model does not know" in stderr
