"""The runtime scorer on a multi-head package: every head from one pass, calibrated scores, entity
spans that index the text as written, the embedding; and the BIO decoder on its own."""

from __future__ import annotations

import itertools
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.core.errors import ModelError, PackageIntegrityError
from stream.core.interfaces import Scorer
from stream.core.items import normalize_entity
from stream.core.manifest import MANIFEST, read_manifest
from stream.core.records import Entity
from stream.core.scorer import (
    CHARS_PER_TOKEN,
    OnnxScorer,
    best_bio,
    bio_spans,
    decode_entities,
    softmax,
    special_tokens,
)
from tests.tiny_models import ENTITY_TEXTS, TINY_TEMPERATURES, build_tiny_multihead

SEQUENCE_HEADS = ("sentiment", "category", "risk")
MIXED = [
    "Li Qiang visited Beijing on Monday.",
    "李强在北京会见了华为代表。",
    "Ｍａｒｉａ Ｃｈｅｎ joined Huawei 😀 in 深圳 ｔｏｄａｙ",  # full-width letters, an emoji
    "🎉🎉 张伟和李娜访问了联合国总部 🎉",
    "  leading spaces and\ttabs\n\nLi Qiang  ",
    "",
]


@contextmanager
def watching_runs(scorer: OnnxScorer, before_each: Callable[[], None]) -> Iterator[None]:
    """Calls `before_each` in the thread of every session run the scorer makes meanwhile."""
    real_run = scorer._session.run

    def watched(*args: object, **kwargs: object) -> object:
        before_each()
        return real_run(*args, **kwargs)

    scorer._session.run = watched
    try:
        yield
    finally:
        del scorer._session.run


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_multihead(tmp_path_factory.mktemp("multihead"))


@pytest.fixture(scope="module")
def scorer(package: Path) -> OnnxScorer:
    return OnnxScorer.open(package, device="cpu")


def test_every_head_comes_from_one_pass_with_probabilities_that_sum_to_one(scorer: OnnxScorer) -> None:
    assert isinstance(scorer, Scorer)
    assert tuple(scorer.heads) == SEQUENCE_HEADS and len(scorer.heads["category"]) == 10
    runs: list[str] = []
    with watching_runs(scorer, lambda: runs.append("run")):
        analyses = scorer.analyze(MIXED)
    # Six short texts: one sub-batch per parallel run (see run_plan), every head from the same run.
    assert len(runs) == min(scorer.runs, len(MIXED))
    assert len(analyses) == len(MIXED)
    labels_seen: dict[str, set[str]] = {h: set() for h in SEQUENCE_HEADS}
    for analysis in analyses:
        assert set(analysis.predictions) == set(SEQUENCE_HEADS) and analysis.entities is not None
        for head, p in analysis.predictions.items():
            assert list(p.probs) == list(scorer.heads[head])
            assert sum(p.probs.values()) == pytest.approx(1.0, abs=1e-6)
            assert p.label == max(p.probs, key=p.probs.__getitem__) and p.score == p.probs[p.label]
            labels_seen[head].add(p.label)
    assert all(len(seen) > 1 for seen in labels_seen.values()), labels_seen  # the heads are not constant
    assert scorer.analyze([]) == []


def test_scores_are_the_softmax_of_the_logits_over_each_heads_temperature(scorer: OnnxScorer, package: Path) -> None:
    heads = read_manifest(package).heads
    assert {h: heads[h].get("temperature") for h in SEQUENCE_HEADS} == {**dict.fromkeys(SEQUENCE_HEADS),
                                                                       **TINY_TEMPERATURES}
    raw = scorer.outputs(MIXED)
    analyses = scorer.analyze(MIXED)
    for head in SEQUENCE_HEADS:
        logits = raw[f"{head}_logits"]
        expected = softmax(logits / TINY_TEMPERATURES.get(head, 1.0))
        got = np.array([list(a.predictions[head].probs.values()) for a in analyses])
        np.testing.assert_allclose(got, expected, atol=1e-6)
        if head in TINY_TEMPERATURES:  # calibration changes the scores, never the label
            assert not np.allclose(got, softmax(logits), atol=1e-3)
            assert (got.argmax(-1) == logits.argmax(-1)).all()


def test_entity_offsets_index_the_text_as_written(scorer: OnnxScorer) -> None:
    texts = MIXED + [text for text, _ in ENTITY_TEXTS]
    found = 0
    for text, analysis in zip(texts, scorer.analyze(texts), strict=True):
        assert analysis.entities is not None
        for entity in analysis.entities:
            assert 0 <= entity.start < entity.end <= len(text)
            assert text[entity.start : entity.end] == entity.text and entity.text == entity.text.strip()
            assert entity.normalized == normalize_entity(entity.text) != ""
            assert entity.type in ("PER", "LOC", "ORG") and 0 < entity.score <= 1
            found += 1
    assert found >= len(ENTITY_TEXTS)  # the fitted head finds entities, not nothing
    [trained] = scorer.analyze(["李强在北京会见了华为代表。"])
    assert trained.entities is not None and "北京" in {e.text for e in trained.entities}


def test_bucketing_and_batch_size_do_not_change_an_analysis(package: Path) -> None:
    texts = [MIXED[i % len(MIXED)] * (1 + i % 4) for i in range(40)]
    one = OnnxScorer.open(package, "cpu", "fp32", bucketing=True, batch_size=3).analyze(texts)
    other = OnnxScorer.open(package, "cpu", "fp32", bucketing=False, batch_size=64).analyze(texts)
    for a, b in zip(one, other, strict=True):
        assert [(e.text, e.type, e.start) for e in a.entities or ()] == [(e.text, e.type, e.start)
                                                                         for e in b.entities or ()]
        for head in SEQUENCE_HEADS:
            assert a.predictions[head].label == b.predictions[head].label
            assert a.predictions[head].score == pytest.approx(b.predictions[head].score, abs=1e-5)


def test_parallel_runs_give_the_analysis_of_one_run_at_a_time(package: Path) -> None:
    texts = [MIXED[i % len(MIXED)] * (1 + i % 3) for i in range(29)]
    serial = OnnxScorer.open(package, "cpu", "fp32", parallel_runs=1, batch_size=4)
    parallel = OnnxScorer.open(package, "cpu", "fp32", parallel_runs=3, batch_size=4)
    assert (serial.runs, parallel.runs) == (1, 3)
    threads: set[str] = set()

    def recording() -> None:
        threads.add(threading.current_thread().name)
        time.sleep(0.01)  # long enough that the pool's workers overlap

    with watching_runs(parallel, recording):
        got = parallel.analyze(texts)
    assert len(threads) > 1 and all(name.startswith("onnx-run") for name in threads)
    for a, b in zip(serial.analyze(texts), got, strict=True):
        assert [(e.text, e.type, e.start, e.end) for e in a.entities or ()] == [
            (e.text, e.type, e.start, e.end) for e in b.entities or ()]
        assert [e.score for e in a.entities or ()] == pytest.approx([e.score for e in b.entities or ()], abs=1e-6)
        for head in SEQUENCE_HEADS:
            assert a.predictions[head].label == b.predictions[head].label
            assert a.predictions[head].score == pytest.approx(b.predictions[head].score, abs=1e-6)
    assert np.allclose(serial.embed(texts), parallel.embed(texts), atol=1e-6)


def test_a_failing_parallel_run_fails_the_call(package: Path) -> None:
    # The pipeline tells bad input from a model outage by the exception analyze() raises.
    scorer = OnnxScorer.open(package, "cpu", "fp32", parallel_runs=2, batch_size=2)

    def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError("the session failed")

    scorer._session.run = broken
    with pytest.raises(RuntimeError, match="the session failed"):
        scorer.analyze(MIXED)


def test_a_5_mb_text_is_analyzed_as_its_cut_prefix_with_offsets_inside_it(scorer: OnnxScorer) -> None:
    budget = scorer.max_length * CHARS_PER_TOKEN
    huge = ("李强在北京会见了华为代表。 Li Qiang visited Beijing. " * 120_000)[:5_000_000]
    [big, prefix] = scorer.analyze([huge, huge[:budget]])
    assert big.truncated and prefix.truncated and big.predictions["sentiment"].truncated
    assert big.entities == prefix.entities
    assert all(e.end <= budget and huge[e.start : e.end] == e.text for e in big.entities or ())
    for head in SEQUENCE_HEADS:
        assert big.predictions[head].probs == pytest.approx(prefix.predictions[head].probs, abs=1e-6)


def test_an_empty_text_gets_every_head_and_no_entities(scorer: OnnxScorer) -> None:
    [empty] = scorer.analyze([""])
    assert set(empty.predictions) == set(SEQUENCE_HEADS) and empty.entities == () and not empty.truncated


def test_embeddings_are_unit_vectors_from_the_embedding_output(scorer: OnnxScorer) -> None:
    vectors = scorer.embed(MIXED)
    assert vectors.shape == (len(MIXED), 32) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors, scorer.outputs(MIXED)["embedding"], atol=1e-6)
    assert scorer.embed([]).shape == (0, 32)
    assert float(vectors[0] @ vectors[1]) < 0.9999  # different texts, different vectors


def test_a_manifest_that_disagrees_with_the_graph_or_itself_is_refused(package: Path, tmp_path: Path) -> None:
    def edited(name: str, change: object) -> Path:
        pkg = Path(shutil.copytree(package, tmp_path / name))
        data = json.loads((pkg / MANIFEST).read_text())
        change(data)  # type: ignore[operator]
        (pkg / MANIFEST).write_text(json.dumps(data))
        return pkg

    with pytest.raises(ModelError, match="has 7 values but the manifest says 6"):
        OnnxScorer.open(edited("labels", lambda d: d["heads"]["entities"]["labels"].pop()), device="cpu")
    with pytest.raises(ModelError, match="no output 'risk_scores'"):
        OnnxScorer.open(edited("output", lambda d: d["heads"]["risk"].update(output="risk_scores")), device="cpu")
    with pytest.raises(PackageIntegrityError, match="temperature"):
        read_manifest(edited("temperature", lambda d: d["heads"]["sentiment"].update(temperature=0)))
    with pytest.raises(PackageIntegrityError, match="same output"):
        read_manifest(edited("twice", lambda d: d["heads"]["risk"].update(output="category_logits")))
    with pytest.raises(PackageIntegrityError, match="lacks heads"):
        read_manifest(edited("no-heads", lambda d: d.pop("heads")))
    with pytest.raises(PackageIntegrityError, match="positive dim"):
        read_manifest(edited("dim", lambda d: d["heads"]["embedding"].pop("dim")))


def test_bio_spans_start_on_b_or_a_stray_i_and_end_on_anything_else() -> None:
    labels = ["O", "I-PER", "I-PER", "B-PER", "I-LOC", "B-ORG", "I-ORG", "O", "I-ORG", "B-LOC"]
    assert bio_spans(labels) == [("PER", 1, 2), ("PER", 3, 3), ("LOC", 4, 4), ("ORG", 5, 6), ("ORG", 8, 8),
                                 ("LOC", 9, 9)]
    assert bio_spans([]) == [] and bio_spans(["O", "X", "B-"]) == []


BIO = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG")


def _valid_bio(path: list[str], outside: list[bool]) -> bool:
    """I-X only after B-X or I-X (not first), O on every outside token: checked label by label."""
    for t, label in enumerate(path):
        if outside[t] and label != "O":
            return False
        if label.startswith("I-") and (t == 0 or path[t - 1] not in (f"B-{label[2:]}", label)):
            return False
    return True


def _log_prob(probs: np.ndarray, path: Iterable[int]) -> float:
    return float(sum(np.log(max(probs[t, k], 1e-30)) for t, k in enumerate(path)))


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 4).flatmap(lambda n: st.tuples(
    st.lists(st.lists(st.floats(0.0, 1.0), min_size=len(BIO), max_size=len(BIO)), min_size=n, max_size=n),
    st.lists(st.booleans(), min_size=n, max_size=n))))
def test_best_bio_is_the_most_probable_valid_sequence(case: tuple[list[list[float]], list[bool]]) -> None:
    """Against every one of the 7^n label sequences."""
    raw, outside = case
    probs = np.asarray(raw) + 1e-6
    probs /= probs.sum(axis=1, keepdims=True)
    found = best_bio(probs, BIO, np.asarray(outside))
    assert _valid_bio([BIO[k] for k in found], outside)
    best = max(_log_prob(probs, seq) for seq in itertools.product(range(len(BIO)), repeat=len(raw))
               if _valid_bio([BIO[k] for k in seq], outside))
    assert _log_prob(probs, found) == pytest.approx(best, abs=1e-9)


def test_best_bio_joins_or_drops_a_fragment_that_argmax_would_name() -> None:
    # 国家 | 统计 | 局: argmax reads B-LOC, O, I-ORG, which names "国家" a place and "局" an organisation.
    def row(**p: float) -> list[float]:
        return [p.get(label.replace("-", "_"), 0.0) + 0.01 for label in BIO]

    probs = np.asarray([row(B_LOC=0.40, B_ORG=0.35, O=0.2), row(O=0.40, I_ORG=0.35, I_LOC=0.2),
                        row(I_ORG=0.70, O=0.25)])
    probs /= probs.sum(axis=1, keepdims=True)
    assert [BIO[k] for k in probs.argmax(axis=1)] == ["B-LOC", "O", "I-ORG"]
    assert [BIO[k] for k in best_bio(probs, BIO)] == ["B-ORG", "I-ORG", "I-ORG"]  # the whole name
    probs[0] = row(O=0.9)  # nothing to extend it back to: the stray I-ORG goes
    probs[0] /= probs[0].sum()
    assert [BIO[k] for k in best_bio(probs, BIO)] == ["O", "O", "O"]
    # A sequence that is already valid is kept as it is.
    valid = np.asarray([row(B_PER=0.6, O=0.4), row(I_PER=0.9), row(O=0.6, B_LOC=0.3)])
    assert best_bio(valid, BIO).tolist() == valid.argmax(axis=1).tolist()
    assert best_bio(np.zeros((0, len(BIO))), BIO).tolist() == []


def test_special_tokens_are_outside_every_entity() -> None:
    offsets = [(0, 0), (0, 2), (2, 4), (0, 0)]
    assert special_tokens(offsets).tolist() == [True, False, False, True]
    probs = np.full((4, len(BIO)), 0.01)
    probs[:, BIO.index("I-LOC")] = 0.9  # the model says "inside a place" everywhere, [CLS] and [SEP] too
    path = [BIO[k] for k in best_bio(probs / probs.sum(axis=1, keepdims=True), BIO, special_tokens(offsets))]
    assert path[0] == path[3] == "O" and path[1:3] == ["B-LOC", "I-LOC"]


def test_decode_entities_maps_tokens_to_character_spans() -> None:
    text = "Ｌｉ Qiang met 李强 in 北京 😀 !"
    #        0-1 3-7   9-11 13-14 16 18-19 21 23
    offsets = [(0, 0), (0, 2), (3, 8), (9, 12), (13, 14), (14, 15), (16, 18), (19, 20), (20, 21), (22, 23),
               (24, 25), (0, 0)]
    labels = ["B-PER", "B-PER", "I-PER", "O", "B-PER", "I-PER", "O", "I-LOC", "I-LOC", "B-ORG", "B-ORG", "I-PER"]
    probs = [0.1, 0.9, 0.7, 0.99, 0.8, 0.6, 0.9, 0.5, 0.7, 0.9, 0.8, 0.9]
    found = decode_entities(text, offsets, labels, probs)
    assert found == (
        Entity("Ｌｉ Qiang", "li qiang", "PER", 0, 8, pytest.approx(0.8)),  # type: ignore[arg-type]
        Entity("李强", "李强", "PER", 13, 15, pytest.approx(0.7)),  # type: ignore[arg-type]
        Entity("北京", "北京", "LOC", 19, 21, pytest.approx(0.6)),  # type: ignore[arg-type]
        Entity("😀", "😀", "ORG", 22, 23, pytest.approx(0.9)),  # type: ignore[arg-type]
    )  # the special tokens (0, 0) never start or continue one; "!" alone normalizes to nothing
    assert all(text[e.start : e.end] == e.text for e in found)


def test_decode_entities_trims_edge_whitespace_and_drops_blank_spans() -> None:
    text = "a  ▁New York\u3000 x"
    # SentencePiece-style offsets that include the space before a word
    offsets = [(0, 1), (1, 3), (3, 7), (7, 12), (12, 14), (14, 15)]
    found = decode_entities(text, offsets, ["O", "B-LOC", "I-LOC", "I-LOC", "B-ORG", "O"], [1.0] * 6)
    assert [(e.text, e.start, e.end) for e in found] == [("▁New York", 3, 12)]
    assert decode_entities("", [], [], []) == ()


def test_asking_for_one_output_gives_exactly_that_output_of_the_full_run(scorer: OnnxScorer) -> None:
    texts = [*MIXED, *ENTITY_TEXTS]
    full = scorer.outputs(texts)
    [only] = scorer.outputs(texts, ["sentiment_logits"]).values()
    np.testing.assert_allclose(only, full["sentiment_logits"], atol=1e-6)
    assert set(full) >= {"sentiment_logits", "entities_logits", "embedding"}


def test_an_entity_that_cuts_a_word_is_widened_to_the_whole_word() -> None:
    text = "Leak at Linjiang Chemical, says Ａｎｎａ Berg; 临江化工在北京"
    # Subword pieces: "Li" | "n" | "jiang" of Linjiang, "Ａｎ" | "ｎａ" of a full-width name, CJK chars.
    pieces = [(8, 10), (10, 11), (11, 16), (17, 25), (32, 34), (34, 36), (37, 41), (43, 44), (44, 45), (48, 50)]
    labels = ["B-ORG", "O", "B-ORG", "I-ORG", "B-PER", "O", "B-PER", "B-LOC", "B-LOC", "B-LOC"]
    found = decode_entities(text, pieces, labels, [0.9] * len(pieces))
    assert [(e.text, e.type) for e in found] == [
        ("Linjiang Chemical", "ORG"),  # "Li" widened to "Linjiang"; "jiang…" was the same word
        ("Ａｎｎａ", "PER"),  # full-width letters are letters of a spaced script too
        ("Berg", "PER"),
        ("临", "LOC"), ("江", "LOC"),  # CJK: every character may end a name, nothing is widened
        ("北京", "LOC"),
    ]
    assert all(text[e.start:e.end] == e.text for e in found)
