"""`yuqing diff`: how two model versions disagree on the items both scored."""

from __future__ import annotations

import datetime as dt
import json
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import click

from stream.core.cli import TIME, settings_from
from stream.core.store import open_store
from stream.diff.compare import EntityDiff, ModelDiff, VersionDiff, diff_models


@click.command("diff")
@click.option(
    "--model-version", "versions", multiple=True, required=True, metavar="VERSION",
    help="Give exactly two: A (the baseline) then B (the candidate).",
)
@click.option(
    "--since", type=TIME, help="Items published at or after: 2026-03-01, an RFC 3339 time, or 7d / 6h."
)
@click.option("--until", type=TIME, help="Items published before (same forms).")
@click.option("--task", help="Compare one head only (sentiment, category, risk, entities); default: all both have.")
@click.option("--store", "dsn", help="Store DSN: chdb://PATH or http(s)://user:pw@host:port.")
@click.option("--top", type=click.IntRange(min=0), default=20, show_default=True,
              help="How many changed items to list.")
@click.option(
    "--rank-by", type=click.Choice(["min", "b"]), default="min", show_default=True,
    help="Order changed items by min(score A, score B) (both were sure) or by B's score.",
)
@click.option("--json", "json_out", type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
              help="Also write the whole comparison as JSON to this file ('-': stdout only, no tables).")
@click.pass_context
def diff_command(
    ctx: click.Context,
    versions: tuple[str, ...],
    since: dt.datetime | None,
    until: dt.datetime | None,
    task: str | None,
    dsn: str | None,
    top: int,
    rank_by: str,
    json_out: Path | None,
) -> None:
    """Compare model versions A and B on the items both scored: per head agreement, confusion and
    changes; entities by precision and recall of B against A."""
    if len(versions) != 2:
        raise click.UsageError("give --model-version exactly twice: A then B")
    settings = settings_from(ctx, {"store": {"dsn": dsn}})
    with open_store(settings.store) as store:
        result = diff_models(
            store, versions[0], versions[1], since=since, until=until, task=task, top=top,
            rank_by="b" if rank_by == "b" else "min",
        )
    if json_out is not None:
        text = json.dumps(result.to_dict(), ensure_ascii=False, indent=2)
        if str(json_out) == "-":
            click.echo(text)
            return
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(text + "\n", encoding="utf-8")
    click.echo(render_all(result))
    if json_out is not None:
        click.echo(f"\nwrote {json_out}")


# -- rendering -----------------------------------------------------------------------------
def _width(text: str) -> int:
    """Columns on a terminal: CJK characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    if _width(text) <= width:
        return text
    out, used = "", 0
    for ch in text:
        w = _width(ch)
        if used + w > width - 1:
            break
        out, used = out + ch, used + w
    return out + "…"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    """Plain aligned columns; indexes in `right` are right-aligned (numbers)."""
    widths = [max([_width(h)] + [_width(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        parts = []
        for i, cell in enumerate(cells):
            pad = " " * (widths[i] - _width(cell))
            parts.append(pad + cell if i in right else cell + pad)
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def render_all(result: ModelDiff) -> str:
    """Every head's comparison, then the entities'."""
    parts = [render(d) for d in result.heads]
    if result.entities is not None:
        parts.append(render_entities(result.entities))
    return "\n\n".join(parts)


def render_entities(d: EntityDiff) -> str:
    out = [
        "entities: sets of (normalized name, type) per item, B against A",
        f"items: A analysed {d.items_a}, B analysed {d.items_b}, both {d.common}",
    ]
    if not d.common:
        out.append("no item was analysed by both versions in this range: nothing to compare")
        return "\n".join(out)
    rows = [
        [name, str(c.a), str(c.b), str(c.matched), _pct(c.precision), _pct(c.recall)]
        for name, c in [("all", d.total), *d.by_type.items()]
    ]
    out.append(table(["type", "A", "B", "both", "precision", "recall"], rows, right=range(1, 6)))
    return "\n".join(out)


def render(d: VersionDiff) -> str:
    span = f"published {_when(d.since) or 'any time'} .. {_when(d.until) or 'now'}"
    out = [
        f"task {d.task}: A = {d.version_a}  vs  B = {d.version_b}  ({span})",
        f"items: A scored {d.items_a}, B scored {d.items_b}, both {d.common}",
    ]
    if not d.common:
        out.append("no item was scored by both versions in this range: nothing to compare")
        return "\n".join(out)
    kappa = "n/a" if d.kappa is None else f"{d.kappa:.3f}"
    out.append(f"agreement: {_pct(d.agreement)} ({d.agree} of {d.common}), Cohen's kappa {kappa}")

    labels = d.labels
    out += ["", "confusion on the common items (rows: A's label, columns: B's label)"]
    rows = [[a] + [str(d.confusion.get(a, {}).get(b, 0)) for b in labels] for a in labels]
    out.append(table(["A \\ B", *labels], rows, right=range(1, len(labels) + 1)))

    la, lb = d.labels_a, d.labels_b
    out += ["", "labels per version"]
    rows = [
        [label, str(la[label]), str(lb[label]), f"{lb[label] - la[label]:+d}",
         str(d.labels_all_a.get(label, 0)), str(d.labels_all_b.get(label, 0))]
        for label in labels
    ]
    out.append(table(["label", "A (common)", "B (common)", "B-A", "A (all)", "B (all)"], rows, right=range(1, 6)))

    if d.changed:
        by = "min(score A, score B)" if d.rank_by == "min" else "B's score"
        out += ["", f"most confident changes (by {by}, top {len(d.changed)})"]
        rows = [
            [c.id, _clip(c.title, 40), c.label_a, f"{c.score_a:.3f}", c.label_b, f"{c.score_b:.3f}"]
            for c in d.changed
        ]
        out.append(table(["id", "title", "A label", "A score", "B label", "B score"], rows, right=(3, 5)))
    elif d.agree == d.common:
        out += ["", "no item changed label"]
    return "\n".join(out)


def _when(when: dt.datetime | None) -> str | None:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ") if when else None
