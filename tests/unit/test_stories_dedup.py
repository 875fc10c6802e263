"""Near-duplicate detection: normalisation, stable hashing, the windowed LSH index."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.stories.dedup import (
    DUP_THRESHOLD,
    MinHasher,
    NearDuplicateIndex,
    jaccard,
    language,
    shingle_hashes,
    shingles,
    tokens,
)

T0 = dt.datetime(2026, 8, 14, 2, 0, tzinfo=dt.UTC)
ZH_TITLE = "台风\u201c白鹭\u201d在广东阳江登陆 最大风力14级"
ZH_LEAD = (
    "今年第9号台风\u201c白鹭\u201d14日9时40分前后在广东阳江市沿海登陆，"
    "登陆时中心附近最大风力14级，阳江、茂名等地出现大暴雨。"
)
EN_TITLE = "Typhoon Bailu makes landfall in south China's Guangdong"
EN_LEAD = "Typhoon Bailu made landfall in Yangjiang, Guangdong province, on Friday morning, packing winds of up to 14."


def at(hours: float) -> dt.datetime:
    return T0 + dt.timedelta(hours=hours)


def test_tokens_fold_width_case_and_drop_punctuation() -> None:
    assert tokens("ＢＥＩＪＩＮＧ，Ｆｅｂ ５ (Reuters) - China's") == ["beijing", "feb", "5", "reuters", "china", "s"]
    assert tokens("央行：降准0.5个百分点！") == ["央", "行", "降", "准", "0", "5", "个", "百", "分", "点"]
    assert tokens(" \t—…「」") == []


def test_language_prefers_the_declared_one_and_else_reads_the_script() -> None:
    assert language("any text", "zh") == "zh"
    assert language("台风登陆广东", None) == "zh"
    assert language("Typhoon Bailu 台风", "fr") == "en"  # unknown declaration: by script
    assert language("12345", None) == "en"


def test_shingles_per_language() -> None:
    assert shingles("台风登陆", "zh") == {"台 风 登", "风 登 陆"}
    assert shingles("Typhoon makes landfall", "en") == {"typhoon makes", "makes landfall"}
    assert shingles("Hi", "en") == {"hi"}
    assert shingles("。！", "zh") == set()


def test_jaccard_on_hash_sets() -> None:
    a = np.array([1, 2, 3, 4], dtype=np.uint32)
    assert jaccard(a, a) == 1.0
    assert jaccard(a, np.array([3, 4, 5, 6], dtype=np.uint32)) == 2 / 6
    empty = np.array([], dtype=np.uint32)
    assert jaccard(empty, empty) == 0.0


def test_fingerprints_are_the_same_in_another_process_with_another_hash_seed() -> None:
    code = (
        "import json; from stream.stories.dedup import NearDuplicateIndex as N;"
        f"f = N().fingerprint({ZH_TITLE!r}, {ZH_LEAD!r});"
        "print(json.dumps([f.hashes.tolist(), [k[2].hex() for k in f.keys]]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    here = NearDuplicateIndex().fingerprint(ZH_TITLE, ZH_LEAD)
    assert json.loads(out) == [here.hashes.tolist(), [k[2].hex() for k in here.keys]]


@settings(max_examples=50, deadline=None)
@given(st.sets(st.integers(0, 2**32 - 1), min_size=1, max_size=120), st.sets(st.integers(0, 2**32 - 1), max_size=120),
       st.integers(0, 120))
def test_minhash_agreement_tracks_the_exact_jaccard(a: set[int], extra: set[int], keep: int) -> None:
    left = np.array(sorted(a), dtype=np.uint32)
    right = np.array(sorted(set(sorted(a)[:keep]) | extra), dtype=np.uint32)
    if not len(right):
        return
    hasher = MinHasher()
    estimate = float(np.mean(hasher.signature(left) == hasher.signature(right)))
    # 144 permutations: the standard error is at most 0.042; 5 of them is a generous bound.
    assert abs(estimate - jaccard(left, right)) <= 0.21


words = st.lists(st.sampled_from(["tram", "drivers", "strike", "pay", "manchester", "48", "hour", "metrolink"]),
                 min_size=3, max_size=15)


@settings(max_examples=60, deadline=None)
@given(words, st.lists(st.sampled_from([" ", "  ", ", ", " - ", "\n", "\u3000", "; ", "..."]),
                       min_size=15, max_size=15), st.booleans())
def test_spacing_punctuation_and_case_do_not_change_the_fingerprint(ws: list[str], seps: list[str],
                                                                   upper: bool) -> None:
    plain = " ".join(ws)
    noisy = "".join(w + s for w, s in zip(ws, seps, strict=False))
    index = NearDuplicateIndex()
    a = index.fingerprint("", plain, "en")
    b = index.fingerprint("", noisy.upper() if upper else noisy, "en")
    assert np.array_equal(a.hashes, b.hashes) and a.keys == b.keys


def test_reprint_is_found_and_points_at_the_first_copy() -> None:
    index = NearDuplicateIndex()
    first = index.fingerprint(ZH_TITLE, ZH_LEAD, "zh")
    index.add("orig", first, at(0))
    reprint = index.fingerprint("第9号台风\u201c白鹭\u201d登陆阳江 中心风力14级", ZH_LEAD + "（来源：南方日报）", "zh")
    match = index.find(reprint, at(1))
    assert match is not None and (match.original, match.via) == ("orig", "orig")
    index.add("copy", reprint, at(1), match)
    again = index.find(index.fingerprint(ZH_TITLE, ZH_LEAD, "zh"), at(2))
    assert again is not None and again.original == "orig" and again.original_at == at(0)


def test_a_copy_in_the_window_still_names_an_original_that_left_it() -> None:
    index = NearDuplicateIndex(window=dt.timedelta(hours=24))
    first = index.fingerprint(EN_TITLE, EN_LEAD, "en")
    index.add("orig", first, at(0))
    index.add("copy", first, at(20), index.find(first, at(20)))
    match = index.find(first, at(30))  # 30 h after the original, 10 h after the copy
    assert match is not None and (match.original, match.via, match.original_at) == ("orig", "copy", at(0))


def test_earliest_original_wins_whatever_the_insertion_order() -> None:
    index = NearDuplicateIndex()
    index.add("later", index.fingerprint(EN_TITLE, EN_LEAD, "en"), at(2))
    index.add("earlier", index.fingerprint(EN_TITLE + " (update)", EN_LEAD, "en"), at(1))
    match = index.find(index.fingerprint(EN_TITLE, EN_LEAD, "en"), at(3))
    assert match is not None and match.original == "earlier"


def test_translation_rewrite_and_different_event_are_not_duplicates() -> None:
    index = NearDuplicateIndex()
    index.add("zh", index.fingerprint(ZH_TITLE, ZH_LEAD, "zh"), at(0))
    assert index.find(index.fingerprint(EN_TITLE, EN_LEAD, "en"), at(1)) is None
    follow_up = index.fingerprint(
        "\u201c白鹭\u201d过境后全省转移群众陆续返回 电力抢修基本完成",
        "台风\u201c白鹭\u201d过境后，我省前期转移的30万群众陆续返回家中，受影响用户供电已恢复九成以上。",
        "zh",
    )
    assert index.find(follow_up, at(20)) is None
    # The same words declared as another language land in other buckets.
    assert index.find(index.fingerprint(ZH_TITLE, ZH_LEAD, "en"), at(1)) is None


def test_empty_texts_are_never_duplicates_of_each_other() -> None:
    index = NearDuplicateIndex()
    index.add("a", index.fingerprint("", "", "en"), at(0))
    assert index.find(index.fingerprint("", "", "en"), at(1)) is None


def test_window_expires_entries_and_the_cap_bounds_the_index() -> None:
    index = NearDuplicateIndex(window=dt.timedelta(hours=24), max_items=5)
    index.add("old", index.fingerprint(EN_TITLE, EN_LEAD, "en"), at(0))
    assert index.find(index.fingerprint(EN_TITLE, EN_LEAD, "en"), at(25)) is None  # too far apart
    index.add("new", index.fingerprint("Unrelated headline", "Nothing alike at all here", "en"), at(30))
    assert len(index) == 1  # "old" fell out of the window
    for n in range(20):
        index.add(f"n{n}", index.fingerprint(f"headline {n}", f"lead {n}", "en"), at(31))
    assert len(index) == 5
    assert not any(key for key, ids in index._buckets.items() if not ids)


def test_threshold_is_inside_the_gap_the_dev_split_showed() -> None:
    assert 0.30 <= DUP_THRESHOLD <= 0.45
    reprint = shingle_hashes(EN_TITLE + "\n" + EN_LEAD, "en")
    light = shingle_hashes("Typhoon Bailu makes landfall in Guangdong\n" + EN_LEAD.replace("Friday", "Fri."), "en")
    assert jaccard(reprint, light) >= DUP_THRESHOLD
