"""`yuqing alerts run|test|check`."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import click

from stream.alerts.alert import Alert
from stream.alerts.evaluate import LATE_HORIZON
from stream.alerts.notify import MAX_ATTEMPTS
from stream.alerts.rules import AlertsConfig, NegativeSurgeRule, StorySurgeRule, VolumeSpikeRule, load_rules
from stream.core.cli import settings_from
from stream.core.commands import store_option
from stream.core.errors import ConfigError
from stream.core.signals import stop_on_signals
from stream.core.store import open_store
from stream.core.times import format_duration, parse_duration, parse_time, utcnow

rules_option = click.option(
    "--rules",
    "rules_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("alerts.toml"),
    show_default=True,
    envvar="YUQING_ALERT_RULES",
    help="Rules file (TOML).",
)


@click.group("alerts")
def alerts_group() -> None:
    """Evaluate alert rules, live or over a past range."""


@alerts_group.command("run")
@store_option
@rules_option
@click.option("--every", type=click.FloatRange(min=1), default=60, show_default=True, help="Seconds between cycles.")
@click.option("--once", is_flag=True, help="Evaluate once, print what fired, and exit.")
@click.option("--alerts-topic", default=None, help="Kafka topic for fired alerts (kafka.alerts_topic).")
@click.option(
    "--max-attempts",
    type=click.IntRange(min=1),
    default=MAX_ATTEMPTS,
    show_default=True,
    help="Delivery rounds (one a cycle) before an alert that no webhook took is marked failed.",
)
@click.option(
    "--late-horizon",
    default=format_duration(LATE_HORIZON),
    show_default=True,
    help="Evaluate again past windows that ended within this long, when items in them are scored late.",
)
@click.pass_context
def alerts_run(
    ctx: click.Context,
    dsn: str | None,
    rules_path: Path,
    every: float,
    once: bool,
    alerts_topic: str | None,
    max_attempts: int,
    late_horizon: str,
) -> None:
    """Evaluate the rules on a schedule and fire alerts.

    Every --every seconds: record what fires in the store's `alerts` table, publish it to
    kafka.alerts_topic when set, and post it to the webhooks of the rules file.  An incident
    fires once: cool-downs live in the `alerts` table, so a restarted evaluator does not fire
    again what its predecessor fired.  An alert a webhook did not take stays 'pending' in the
    `alerts` table (column `delivery`) and is tried again each cycle, up to --max-attempts.
    Items scored late (published before the current window) make their past window evaluated
    again."""
    from stream.alerts.runner import LiveRunner

    settings = settings_from(ctx, {"store": {"dsn": dsn}, "kafka": {"alerts_topic": alerts_topic}})
    config = load_rules(rules_path)
    horizon = parse_duration(late_horizon)
    with (
        stop_on_signals("the current cycle") as stop,
        open_store(settings.store) as store,
        LiveRunner(store, config, settings.kafka, max_attempts=max_attempts, late_horizon=horizon) as runner,
    ):
        if once:
            deliveries = runner.cycle()
            for delivery in deliveries:
                extra = f"  (webhook failed: {', '.join(delivery.failed)})" if delivery.failed else ""
                click.echo(_line(delivery.alert) + extra)
            click.echo(f"{len(deliveries)} alert(s) fired", err=True)
            return
        click.echo(f"evaluating {len(config.active_rules)} rule(s) every {every:g}s; Ctrl-C to stop", err=True)
        fired = runner.run(every, stop=stop)
    click.echo(f"stopped; {fired} alert(s) fired", err=True)


@alerts_group.command("test")
@store_option
@rules_option
@click.option("--from", "since", required=True, help="Start: RFC 3339 time or a duration ago (24h, 7d).")
@click.option("--to", "until", default="now", show_default=True, help="End: RFC 3339 time, 'now' or a duration ago.")
@click.option("--step", default="5m", show_default=True, help="Evaluate as if at every STEP.")
@click.option("--rule", "only", multiple=True, help="Only these rules (repeatable).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_context
def alerts_test(
    ctx: click.Context,
    dsn: str | None,
    rules_path: Path,
    since: str,
    until: str,
    step: str,
    only: tuple[str, ...],
    fmt: str,
) -> None:
    """Dry-run the rules over a past range.

    Evaluates as if at --from, --from + --step, ... --to, keeping cool-downs in memory, and
    prints what would have fired and when.  Writes nothing: use it to tune thresholds."""
    from stream.alerts.runner import dry_run

    settings = settings_from(ctx, {"store": {"dsn": dsn}})
    config = load_rules(rules_path)
    rules = _select(config, only)
    now = utcnow()
    start, end = parse_time(since, now), parse_time(until, now)
    step_td = parse_duration(step)
    with open_store(settings.store) as store:
        fired = dry_run(store, rules, start, end, step_td, progress=fmt == "text")
    if fmt == "json":
        click.echo(json.dumps([a.to_dict() for a in fired], ensure_ascii=False, indent=2))
        return
    click.echo(
        f"dry run {start:%Y-%m-%d %H:%M} – {end:%Y-%m-%d %H:%M} UTC, step {format_duration(step_td)}, "
        f"{len(rules)} rule(s)"
    )
    for alert in fired:
        click.echo(_line(alert))
    counts: dict[str, int] = {}
    for alert in fired:
        counts[alert.rule] = counts.get(alert.rule, 0) + 1
    per_rule = ", ".join(f"{r.name}: {counts.get(r.name, 0)}" for r in rules)
    click.echo(f"{len(fired)} alert(s) would have fired ({per_rule})")


@alerts_group.command("check")
@rules_option
def alerts_check(rules_path: Path) -> None:
    """Validate the rules file and list its rules."""
    config = load_rules(rules_path)
    for rule in config.rules:
        state = "" if rule.enabled else "  (disabled)"
        if isinstance(rule, NegativeSurgeRule):
            what = f"negative share >= {rule.threshold:.0%} by {rule.by}, min {rule.min_items} items"
        elif isinstance(rule, VolumeSpikeRule):
            what = (
                f"{rule.method} >= {rule.threshold:g} by {rule.by} against {format_duration(rule.baseline)}, "
                f"min {rule.min_items} items"
            )
        elif isinstance(rule, StorySurgeRule):
            what = f"a story gains >= {rule.min_items} items"
            if rule.threshold is not None:
                what += f" and >= {rule.threshold:g}x its mean per window over {format_duration(rule.baseline)}"
        else:
            what = f"{len(rule.terms)} term(s)" + (", negative only" if rule.negative_only else "")
        click.echo(
            f"{rule.name} [{rule.kind}, {rule.severity}] window {format_duration(rule.window)}, "
            f"cool-down {format_duration(rule.cooldown)}: {what}; scope: {rule.scope.describe()}{state}"
        )
    for hook in config.webhooks:
        click.echo(f"webhook {hook.name} [{hook.format}] min severity {hook.min_severity}")
    click.echo(f"{rules_path}: {len(config.rules)} rule(s), {len(config.webhooks)} webhook(s), valid")


def _select(config: AlertsConfig, only: tuple[str, ...]) -> list[Any]:
    known = {r.name: r for r in config.rules}
    unknown = [n for n in only if n not in known]
    if unknown:
        raise ConfigError(f"no rule named {', '.join(unknown)}", hint=f"rules: {', '.join(known)}")
    rules = [known[n] for n in only] if only else config.active_rules
    if not rules:
        raise ConfigError("no enabled rules to evaluate")
    return rules


def _line(alert: Alert) -> str:
    when = alert.window_end.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M")
    return f"{when}  {alert.severity:<8}  {alert.rule}  {alert.scope}  {alert.message.split(': ', 1)[-1]}"
