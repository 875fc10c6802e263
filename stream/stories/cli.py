"""`yuqing stories [run|evaluate]` and `yuqing similar`."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict

import click

from stream.core.cli import DURATION, TIME, echo_json, settings_from
from stream.core.commands import store_option
from stream.core.errors import ConfigError
from stream.core.signals import stop_on_signals
from stream.core.store import open_store
from stream.core.times import format_duration
from stream.stories.cluster import DEFAULT_WINDOW, STORY_THRESHOLDS, StoryConfig
from stream.stories.embed import EMBEDDERS
from stream.stories.evaluate import evaluate_command
from stream.stories.queries import SimilarItem, TopStory

FORMATS = click.Choice(["table", "json"])
embedder_option = click.option("--embedder", type=click.Choice(sorted(EMBEDDERS)), default="use", show_default=True,
                               help="Sentence encoder (item_stories holds 512-dimensional `use` vectors).")
# One text at a time (see stream.stories.embed), one BLAS thread is the fastest: 2-3x two threads.
threads_option = click.option("--threads", type=click.IntRange(1), default=1, show_default=True,
                              help="Embedding threads.")


@click.group("stories", invoke_without_command=True)
@store_option
@click.option("--from", "start", type=TIME, default="24h", show_default=True,
              help="Stories with items published from: RFC 3339, a date, or a duration ago.")
@click.option("--to", "end", type=TIME, default="now", show_default=True, help="... up to (exclusive).")
@click.option("--lang", type=click.Choice(["zh", "en"]), help="Count only items in this language.")
@click.option("--min-size", type=click.IntRange(1), default=2, show_default=True, help="Items in the story, at least.")
@click.option("--limit", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
@click.pass_context
def stories_group(ctx: click.Context, dsn: str | None, start: dt.datetime, end: dt.datetime, lang: str | None,
                  min_size: int, limit: int, fmt: str) -> None:
    """The top stories of a time range (the default), or assign stories (`run`).

    Stories are ranked by their items published in [--from, --to); growth is that count minus the
    items of the span of the same length just before.  Sentiment counts each item's newest
    sentiment label; titles are each language's first item."""
    if ctx.invoked_subcommand is not None:
        return
    from stream.stories.queries import top_stories

    if end <= start:
        raise ConfigError("--to is not after --from")
    settings = settings_from(ctx, {"store": {"dsn": dsn}})
    with open_store(settings.store) as store:
        stories = top_stories(store, start, end, lang=lang, min_size=min_size, limit=limit)
    if fmt == "json":
        echo_json([asdict(s) | {"growth": s.growth} for s in stories])
        return
    span = f"{start:%Y-%m-%d %H:%M} – {end:%Y-%m-%d %H:%M} UTC"
    if not stories:
        click.echo(f"no stories of {min_size}+ items with items published {span}")
        return
    click.echo(f"top stories, items published {span}" + (f", {lang} only" if lang else ""))
    for rank, story in enumerate(stories, 1):
        click.echo(story_lines(rank, story))


def story_lines(rank: int, story: TopStory) -> str:
    """A story as a few lines: figures, one title per language, sources."""
    mix = " ".join(f"{label} {n}" for label, n in sorted(story.sentiment.items(), key=lambda kv: (-kv[1], kv[0])))
    lines = [f"{rank:>2}. {story.items} item(s) ({story.growth:+d} on the span before), size {story.size}"
             f" ({story.duplicates} duplicate(s)), {', '.join(story.languages)}, sentiment: {mix or '-'}"
             f"  [{story.story_id}]"]
    lines += [f"    {lang}: {title}" for lang, title in sorted(story.titles.items())]
    lines.append(f"    sources: {', '.join(story.sources)}")
    return "\n".join(lines)


@stories_group.command("run")
@store_option
@click.option("--every", type=click.FloatRange(min=1), default=60, show_default=True, help="Seconds between cycles.")
@click.option("--once", is_flag=True, help="One cycle: assign what is pending, print the figures, exit.")
@click.option("--window", type=DURATION, default=format_duration(DEFAULT_WINDOW), show_default=True,
              help="How long a story stays open after its last item.")
@embedder_option
@threads_option
@click.option("--no-progress", is_flag=True, help="No progress bar for a long backlog.")
@click.pass_context
def stories_run(ctx: click.Context, dsn: str | None, every: float, once: bool, window: dt.timedelta,
                embedder: str, threads: int, no_progress: bool) -> None:
    """Assign every scored item a story, on a schedule.

    Each cycle: the scored items not yet in item_stories, in (published_at, id) order, are
    embedded and assigned (near-copies get duplicate_of), their item_stories rows written and the
    stories rows of the stories they joined re-written.  An id in item_stories keeps its story:
    re-deliveries, replays and re-runs change nothing.  Run one per store."""
    from stream.stories.embed import load_embedder
    from stream.stories.job import StoriesJob

    if window <= dt.timedelta(0):
        raise ConfigError("--window must be positive")
    settings = settings_from(ctx, {"store": {"dsn": dsn}})
    config = StoryConfig(threshold=STORY_THRESHOLDS[embedder], window=window)
    with stop_on_signals("the current chunk of items") as stop, open_store(settings.store) as store:
        job = StoriesJob(store, load_embedder(embedder, threads), config, progress=not no_progress)
        if once:
            click.echo(job.cycle(stop).line())
            return
        click.echo(f"assigning stories every {every:g}s (window {format_duration(window)}); Ctrl-C to stop", err=True)
        total = job.run(every, stop)
    click.echo(f"stopped; {total.line()}", err=True)


stories_group.add_command(evaluate_command)


@click.command("similar")
@click.argument("text")
@store_option
@click.option("--limit", type=click.IntRange(1, 1000), default=10, show_default=True)
@embedder_option
@threads_option
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
@click.pass_context
def similar_command(ctx: click.Context, text: str, dsn: str | None, limit: int, embedder: str, threads: int,
                    fmt: str) -> None:
    """The stored items nearest to TEXT (cosine of their embeddings) and their stories."""
    from stream.stories.embed import load_embedder
    from stream.stories.queries import nearest

    if not text.strip():
        raise ConfigError("TEXT is empty")
    vector = load_embedder(embedder, threads).embed([text])[0]
    settings = settings_from(ctx, {"store": {"dsn": dsn}})
    with open_store(settings.store) as store:
        found = nearest(store, vector, embedder, limit)
    if fmt == "json":
        echo_json([asdict(s) for s in found])
        return
    if not found:
        click.echo("no items with stories yet (run `yuqing stories run`)")
        return
    for item in found:
        click.echo(similar_line(item))


def similar_line(item: SimilarItem) -> str:
    return (f"{item.similarity:.3f}  {item.published_at:%Y-%m-%d %H:%M}  [{item.source}, {item.lang}] "
            f"{item.title}  (story {item.story_id}, {item.story_size} item(s))")
