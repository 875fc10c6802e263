"""The `yuqing` command.  Subcommands load lazily, so `yuqing run` never imports torch."""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from stream.errors import YuqingError
from stream.settings import Settings, load_settings

# name -> "module:attribute"; each module owns its command(s).  The help line is kept here so
# `yuqing --help` imports nothing heavy.
SUBCOMMAND_HELP: dict[str, str] = {
    "config": "Inspect the effective settings.",
    "db": "Create or migrate the ClickHouse schema.",
    "sql": "Run a query on the store.",
    "run": "Consume news items, score them, write the store (the main job).",
    "status": "Consumer-group lag per partition.",
    "replay": "Re-score a time range of a topic with given model packages.",
    "diff": "Compare two model versions on the items both scored.",
    "ingest": "Poll RSS/Atom feeds into a Kafka topic.",
    "demo": "The main job on the embedded default, end to end.",
    "train": "Fine-tune a sentiment or topic classifier.",
    "evaluate": "Classification report and confusion matrix for a model.",
    "models": "Base encoders and exported model packages.",
    "export": "Export a classifier to an ONNX model package (with parity gate).",
    "alerts": "Evaluate alert rules, live or over a past range.",
    "report": "Write the daily HTML brief.",
    "dashboards": "Build, check and push the Grafana dashboards.",
    "bench": "Throughput and latency benchmarks.",
}

SUBCOMMANDS: dict[str, str] = {
    "config": "stream.cli_basic:config_group",
    "db": "stream.cli_basic:db_group",
    "sql": "stream.cli_basic:sql_command",
    "run": "stream.cli_run:run_command",
    "replay": "stream.cli_replay:replay_command",
    "diff": "stream.cli_diff:diff_command",
    "ingest": "stream.cli_ingest:ingest_command",
    "demo": "stream.demo:demo_command",
    "train": "models.cli:train_command",
    "evaluate": "models.cli:evaluate_command",
    "models": "models.cli:models_group",
    "export": "export.cli:export_command",
    "alerts": "stream.cli_alerts:alerts_group",
    "report": "stream.cli_alerts:report_command",
    "status": "stream.cli_run:status_command",
    "dashboards": "dashboards.cli:dashboards_group",
    "bench": "stream.bench:bench_command",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when invoked."""

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = SUBCOMMANDS if lazy is None else lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name, target in self.lazy.items() if _available(target))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = self.lazy.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            missing = exc.name or "?"
            if missing.split(".")[0] in ("torch", "transformers", "sklearn", "peft", "onnx"):
                raise click.ClickException(
                    f"`yuqing {cmd_name}` needs the training extras ({missing} is missing): "
                    "pip install 'yuqing[train]'"
                ) from None
            raise
        command = getattr(module, attr, None)
        return command if isinstance(command, click.Command) else None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, SUBCOMMAND_HELP.get(name, "")) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _available(target: str) -> bool:
    module_name = target.split(":")[0]
    return importlib.util.find_spec(module_name) is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
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


OWN_LOGGERS = ("stream", "models", "export", "dashboards", "yuqing")


def settings_from(ctx: click.Context, overrides: dict[str, Any] | None = None) -> Settings:
    """The effective settings for a subcommand: its flags are the top layer."""
    root = ctx.find_root()
    config_path = (root.obj or {}).get("config_path")
    settings = load_settings(config_path, overrides)
    verbose = (root.obj or {}).get("verbose", 0)
    own_level = logging.DEBUG if verbose >= 2 else getattr(logging, settings.log_level)
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(own_level)
    return settings


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))


def main(argv: list[str] | None = None) -> None:
    """Entry point: YuqingError -> one line on stderr and its exit code; never a traceback."""
    try:
        cli.main(args=argv, prog_name="yuqing", standalone_mode=False)
    except YuqingError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(0)


if __name__ == "__main__":
    main()
