"""The CLI frame every package's commands share: lazy subcommand groups, settings from flags,
JSON output, and the one place where a `YuqingError` becomes a one-line message and an exit code.

The root command and its subcommand map live in `stream/cli.py`; this module imports nothing of
the project above the base, so `models/`, `export/` and `dashboards/` can use it.
"""

from __future__ import annotations

import datetime as dt
import importlib
import importlib.util
import json
import logging
import sys
from typing import Any

import click

from stream.core.errors import ConfigError, YuqingError
from stream.core.settings import Settings, load_settings
from stream.core.times import parse_duration, parse_time

# A missing module from these means the training extras are not installed.
TRAINING_MODULES = ("torch", "transformers", "sklearn", "peft", "onnx")
OWN_LOGGERS = ("stream", "models", "export", "dashboards", "yuqing")


class LazyGroup(click.Group):
    """A group whose subcommands ("name" -> "module:attribute") are imported only when invoked,
    so `yuqing run` never imports torch.  `help` maps names to their help line for the listing."""

    def __init__(
        self, *args: Any, lazy: dict[str, str] | None = None, lazy_help: dict[str, str] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy or {}
        self.lazy_help = lazy_help or {}

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
            if missing.split(".")[0] in TRAINING_MODULES:
                raise click.ClickException(
                    f"`yuqing {cmd_name}` needs the training extras ({missing} is missing): "
                    "pip install 'yuqing[train]'"
                ) from None
            raise
        command = getattr(module, attr, None)
        return command if isinstance(command, click.Command) else None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, self.lazy_help.get(name, "")) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _available(target: str) -> bool:
    return importlib.util.find_spec(target.split(":")[0]) is not None


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


class TimeParam(click.ParamType):
    """A flag in the one time grammar (`stream.core.times.parse_time`): RFC 3339, a date, 'now',
    or a duration meaning that long ago."""

    name = "time"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> dt.datetime:
        if isinstance(value, dt.datetime):
            return value
        try:
            return parse_time(str(value))
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)


class DurationParam(click.ParamType):
    """A flag in the one duration grammar: 500ms, 30s, 15m, 1h, 7d, 2w."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> dt.timedelta:
        if isinstance(value, dt.timedelta):
            return value
        try:
            return parse_duration(str(value))
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)


TIME = TimeParam()
DURATION = DurationParam()


def run_main(command: click.Command, argv: list[str] | None = None, prog_name: str = "yuqing") -> None:
    """Run a command: YuqingError -> one line on stderr and its exit code; never a traceback."""
    try:
        command.main(args=argv, prog_name=prog_name, standalone_mode=False)
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
