"""Story clustering on a labelled event set: adjusted Rand index, purity, duplicate precision and
recall, and embedding speed, per embedder.

    python -m stream.stories.evaluate tests/data/events.jsonl --embedder use --embedder e5 --split test
    python -m stream.stories.evaluate tests/data/events.jsonl --split dev --sweep   # choose thresholds

The set is split by a stable rule (`split_of`: sha1 of the event id, or of the item id for a
singleton), so a whole event is either dev or test.  Thresholds are chosen with ``--sweep`` on
dev, which refuses the test split.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

from stream.core.cli import DURATION, echo_json, run_main
from stream.core.errors import ConfigError, DataError
from stream.core.times import format_duration, parse_rfc3339
from stream.stories.cluster import DEFAULT_WINDOW, STORY_THRESHOLDS, Assignment, StoryConfig, StoryItem, assign_stories
from stream.stories.embed import EMBEDDERS, Embedder, item_text, load_embedder

SPLITS = ("dev", "test", "all")


@dataclass(frozen=True)
class LabelledItem:
    item: StoryItem
    event: str | None  # None: a singleton
    duplicate_of: str | None
    source: str

    @property
    def gold_story(self) -> str:
        return self.event or f"single:{self.item.id}"


@dataclass(frozen=True)
class Figures:
    items: int
    stories: int
    gold_stories: int
    ari: float
    purity: float
    dup_precision: float
    dup_recall: float


def load_events(path: Path) -> list[LabelledItem]:
    """The JSONL event set; any malformed line is a DataError naming the line."""
    out: list[LabelledItem] = []
    seen: set[str] = set()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            item = StoryItem(
                id=str(row["id"]), published_at=parse_rfc3339(row["published_at"]),
                title=str(row["title"]), text=str(row["text"]), lang=row.get("lang"),
            )
            labelled = LabelledItem(item, row.get("event"), row.get("duplicate_of"), str(row.get("source", "")))
        except (ValueError, KeyError, TypeError, OverflowError) as exc:
            raise DataError(f"{path}:{number}: not an event item ({type(exc).__name__}: {exc})") from None
        if item.id in seen:
            raise DataError(f"{path}:{number}: duplicate id {item.id!r}")
        seen.add(item.id)
        out.append(labelled)
    known = {x.item.id for x in out}
    for x in out:
        if x.duplicate_of is not None and x.duplicate_of not in known:
            raise DataError(f"{path}: {x.item.id} is a duplicate of unknown item {x.duplicate_of!r}")
    return out


def split_of(item: LabelledItem) -> str:
    """``dev`` or ``test``: the first byte of sha1(event id, or item id for a singleton)."""
    key = item.event or item.item.id
    return "dev" if hashlib.sha1(key.encode("utf-8")).digest()[0] < 128 else "test"


def select(items: Sequence[LabelledItem], split: str) -> list[LabelledItem]:
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}", hint=f"one of {', '.join(SPLITS)}")
    return [x for x in items if split == "all" or split_of(x) == split]


def _pairs(n: np.ndarray) -> float:
    return float((n * (n - 1) / 2).sum())


def adjusted_rand_index(truth: Sequence[Hashable], predicted: Sequence[Hashable]) -> float:
    """Hubert-Arabie ARI from the contingency table; 1.0 when both partitions are trivial alike."""
    if len(truth) != len(predicted):
        raise ValueError("label sequences differ in length")
    if len(truth) < 2:
        return 1.0
    cells = Counter(zip(truth, predicted, strict=True))
    index = _pairs(np.array(list(cells.values()), dtype=np.float64))
    rows = _pairs(np.array(list(Counter(truth).values()), dtype=np.float64))
    cols = _pairs(np.array(list(Counter(predicted).values()), dtype=np.float64))
    expected = rows * cols / (len(truth) * (len(truth) - 1) / 2)
    maximum = (rows + cols) / 2
    if maximum == expected:
        return 1.0
    return (index - expected) / (maximum - expected)


def purity(truth: Sequence[Hashable], predicted: Sequence[Hashable]) -> float:
    """Share of items whose predicted story's majority gold story is their own."""
    if not truth:
        return 1.0
    by_story: dict[Hashable, Counter[Hashable]] = {}
    for gold, story in zip(truth, predicted, strict=True):
        by_story.setdefault(story, Counter())[gold] += 1
    return sum(c.most_common(1)[0][1] for c in by_story.values()) / len(truth)


def duplicate_scores(gold: Sequence[str | None], predicted: Sequence[str | None]) -> tuple[float, float]:
    """(precision, recall) of ``duplicate_of``: a hit names exactly the gold original.  With
    nothing predicted (or nothing to find) the empty ratio counts as 1.0."""
    hits = sum(1 for g, p in zip(gold, predicted, strict=True) if p is not None and p == g)
    made = sum(p is not None for p in predicted)
    wanted = sum(g is not None for g in gold)
    return (hits / made if made else 1.0), (hits / wanted if wanted else 1.0)


def score(items: Sequence[LabelledItem], assignments: Sequence[Assignment]) -> Figures:
    truth = [x.gold_story for x in items]
    predicted = [a.story_id for a in assignments]
    precision, recall = duplicate_scores([x.duplicate_of for x in items], [a.duplicate_of for a in assignments])
    return Figures(
        items=len(items), stories=len(set(predicted)), gold_stories=len(set(truth)),
        ari=adjusted_rand_index(truth, predicted), purity=purity(truth, predicted),
        dup_precision=precision, dup_recall=recall,
    )


def embed_timed(embedder: Embedder, items: Sequence[LabelledItem]) -> tuple[np.ndarray, float]:
    """The items' vectors and the embedding speed in items per second (wall clock)."""
    texts = [item_text(x.item.title, x.item.text) for x in items]
    start = time.perf_counter()
    vectors = embedder.embed(texts)
    return vectors, len(texts) / max(time.perf_counter() - start, 1e-9)


def run(items: Sequence[LabelledItem], vectors: np.ndarray, config: StoryConfig) -> Figures:
    return score(items, assign_stories([x.item for x in items], config, vectors=vectors))


STORY_GRID = tuple(round(x, 2) for x in np.arange(0.30, 0.955, 0.01))
DUP_GRID = tuple(round(x, 3) for x in np.arange(0.2, 0.701, 0.025))


def sweep(items: Sequence[LabelledItem], vectors: np.ndarray, base: StoryConfig) -> dict[str, list[dict[str, Any]]]:
    """Figures over a grid of story and duplicate thresholds (each varied alone)."""
    story = [{"threshold": t, **asdict(run(items, vectors, _with(base, threshold=t)))} for t in STORY_GRID]
    dup = [{"dup_threshold": t, **asdict(run(items, vectors, _with(base, dup_threshold=t)))} for t in DUP_GRID]
    return {"story": story, "dup": dup}


def _with(config: StoryConfig, **changes: Any) -> StoryConfig:
    return StoryConfig(**{**asdict(config), **changes})


@click.command("evaluate")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--embedder", "embedders", multiple=True, type=click.Choice(sorted(EMBEDDERS)),
              help="Repeat to compare, measured side by side on the same items (default: all).")
@click.option("--split", type=click.Choice(SPLITS), default="test", show_default=True)
@click.option("--threshold", type=float, help="Story cosine threshold (default: the embedder's tuned one).")
@click.option("--dup-threshold", type=float, help="Near-duplicate Jaccard threshold.")
@click.option("--window", type=DURATION, default=format_duration(DEFAULT_WINDOW), show_default=True,
              help="How long a story stays open after its last item.")
@click.option("--threads", type=int, default=2, show_default=True, help="Embedding threads.")
@click.option("--sweep", "do_sweep", is_flag=True, help="Print figures over threshold grids (dev split only).")
@click.option("--json", "as_json", is_flag=True)
def evaluate_command(path: Path, embedders: tuple[str, ...], split: str, threshold: float | None,
                     dup_threshold: float | None, window: dt.timedelta, threads: int, do_sweep: bool,
                     as_json: bool) -> None:
    """ARI, purity, duplicate precision/recall and items/s of story clustering on an event set."""
    if do_sweep and split != "dev":
        raise ConfigError("--sweep tunes thresholds and runs on the dev split only", hint="--split dev")
    items = select(load_events(path), split)
    if not items:
        raise DataError(f"{path} has no items in the {split} split")
    results: list[dict[str, Any]] = []
    for name in embedders or tuple(EMBEDDERS):
        config = StoryConfig(threshold=STORY_THRESHOLDS[name] if threshold is None else threshold, window=window)
        if dup_threshold is not None:
            config = _with(config, dup_threshold=dup_threshold)
        vectors, speed = embed_timed(load_embedder(name, threads), items)
        row: dict[str, Any] = {"embedder": name, "split": split, "threshold": config.threshold,
                               "dup_threshold": config.dup_threshold, "window": format_duration(window),
                               "items_per_s": round(speed, 1), **asdict(run(items, vectors, config))}
        if do_sweep:
            row["sweep"] = sweep(items, vectors, config)
        results.append(row)
    if as_json:
        echo_json(results)
        return
    click.echo(f"{len(items)} items, {len({x.gold_story for x in items})} gold stories ({split} split of {path.name})")
    click.echo(f"{'embedder':<9}{'thr':>6}{'dup':>7}{'ARI':>8}{'purity':>8}{'dupP':>7}{'dupR':>7}"
               f"{'stories':>9}{'items/s':>9}")
    for r in results:
        click.echo(f"{r['embedder']:<9}{r['threshold']:>6.3f}{r['dup_threshold']:>7.3f}{r['ari']:>8.3f}"
                   f"{r['purity']:>8.3f}{r['dup_precision']:>7.3f}{r['dup_recall']:>7.3f}{r['stories']:>9}"
                   f"{r['items_per_s']:>9.1f}")
        for kind, key in (("story", "threshold"), ("dup", "dup_threshold")):
            for s in r.get("sweep", {}).get(kind, []):
                click.echo(f"  {r['embedder']} {key}={s[key]:<6} ARI {s['ari']:.3f}  purity {s['purity']:.3f}  "
                           f"dupP {s['dup_precision']:.3f}  dupR {s['dup_recall']:.3f}  stories {s['stories']}")


if __name__ == "__main__":
    run_main(evaluate_command, prog_name="python -m stream.stories.evaluate")
