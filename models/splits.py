"""The one split rule every dataset follows, so a text lands in the same split in every run,
every `--limit`, and every combination of datasets: test never leaks into training.

test = sha1(normalized text) mod 10 == 0, validation = 1, train = the rest.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Literal, Protocol, TypeVar

Split = Literal["train", "validation", "test"]
SPLITS: tuple[Split, ...] = ("train", "validation", "test")
_WHITESPACE = re.compile(r"\s+")


class Labelled(Protocol):
    @property
    def text(self) -> str: ...

    @property
    def label(self) -> str: ...


T = TypeVar("T", bound=Labelled)


def normalize_text(text: str) -> str:
    """NFKC, strip, collapse whitespace, lowercase: the identity of a text for splits and dedup."""
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFKC", text).strip()).lower()


def text_hash(text: str, salt: str = "") -> int:
    return int.from_bytes(hashlib.sha1((salt + normalize_text(text)).encode("utf-8")).digest(), "big")


def split_of(text: str) -> Split:
    bucket = text_hash(text) % 10
    return "test" if bucket == 0 else "validation" if bucket == 1 else "train"


def split_examples(examples: Iterable[T]) -> dict[Split, list[T]]:
    parts: dict[Split, list[T]] = {name: [] for name in SPLITS}
    for example in examples:
        parts[split_of(example.text)].append(example)
    return parts


def label_counts(examples: Sequence[Labelled]) -> Counter[str]:
    return Counter(example.label for example in examples)
