"""The `yuqing` command: the root group and where each subcommand lives.

Subcommands are named by "module:attribute" and imported only when invoked (see
`stream.core.cli.LazyGroup`), so `yuqing run` never imports torch.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from stream.core.cli import LazyGroup, run_main

# name -> (where the command lives, its help line); the help is kept here so `yuqing --help`
# imports nothing heavy.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "config": ("stream.core.commands:config_group", "Inspect the effective settings."),
    "db": ("stream.core.commands:db_group", "Create or migrate the ClickHouse schema."),
    "sql": ("stream.core.commands:sql_command", "Run a query on the store."),
    "run": ("stream.consumer.cli:run_command", "Consume news items, score them, write the store (the main job)."),
    "status": ("stream.consumer.cli:status_command", "Consumer-group lag per partition."),
    "replay": ("stream.consumer.cli:replay_command", "Re-score a time range of a topic with given model packages."),
    "diff": ("stream.diff.cli:diff_command", "Compare two model versions on the items both scored."),
    "ingest": ("stream.feeds.cli:ingest_command", "Poll RSS/Atom feeds into a Kafka topic."),
    "alerts": ("stream.alerts.cli:alerts_group", "Evaluate alert rules, live or over a past range."),
    "stories": ("stream.stories.cli:stories_group", "Top stories; assign stories to scored items (`stories run`)."),
    "similar": ("stream.stories.cli:similar_command", "The stored items nearest to a text, and their stories."),
    "report": ("stream.brief.cli:report_command", "Write the daily HTML brief."),
    "demo": ("stream.tools.demo:demo_command", "The main job on the embedded default, end to end."),
    "bench": ("stream.tools.bench:bench_command", "Throughput and latency benchmarks."),
    "chaos": ("stream.tools.chaos:chaos_command", "Soak the consumer with kills and outages; check nothing is lost."),
    "train": ("models.cli:train_command", "Fine-tune a sentiment or topic classifier."),
    "evaluate": ("models.cli:evaluate_command", "Classification report and confusion matrix for a model."),
    "models": ("models.cli:models_group", "Base encoders and exported model packages."),
    "export": ("export.cli:export_command", "Export a classifier to an ONNX model package (with parity gate)."),
    "dashboards": ("dashboards.cli:dashboards_group", "Build, check and push the Grafana dashboards."),
}


@click.group(
    cls=LazyGroup,
    lazy={name: target for name, (target, _) in SUBCOMMANDS.items()},
    lazy_help={name: help_ for name, (_, help_) in SUBCOMMANDS.items()},
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    envvar="YUQING_CONFIG",
    help="TOML settings file (defaults < file < YUQING_* env < flags).",
)
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.version_option(package_name="yuqing")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, verbose: int) -> None:
    """yuqing (舆情): streaming sentiment and topic scoring for public-opinion monitoring."""
    ctx.ensure_object(dict)
    ctx.obj["config_path"] = config_path
    ctx.obj["verbose"] = verbose
    # Libraries (kafka-python above all) stay at WARNING unless -v; our own loggers follow log_level.
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main(argv: list[str] | None = None) -> None:
    run_main(cli, argv)


if __name__ == "__main__":
    main()
