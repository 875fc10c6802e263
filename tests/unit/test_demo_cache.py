"""The demo's package cache: what a second `make demo` reuses and what it rebuilds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import export.package
import models.multitask
from stream.core.manifest import MANIFEST, VARIANT_FILES
from stream.tools import demo


def _cache_with(tmp_path: Path, variants: dict[str, Any]) -> Path:
    for spec in demo.DEMO_MODELS:
        package = tmp_path / "packages" / spec.name
        package.mkdir(parents=True)
        files = {VARIANT_FILES[name]: "0" * 64 for name in variants}
        manifest = {"name": spec.name, "task": "sentiment", "version": f"{spec.name}-0", "max_length": 64,
                    "inputs": ["input_ids"], "files": files, "labels": ["negative", "positive"],
                    "variants": {name: {"file": VARIANT_FILES[name], **v} for name, v in variants.items()}}
        (package / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
        checkpoint = tmp_path / "models" / spec.name
        checkpoint.mkdir(parents=True)
        (checkpoint / "training_report.json").write_text("{}", encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize(("variants", "rebuilt"), [
    ({"fp32": {}, "int8": {"quantization": {"weight_bits": 7}}}, False),
    ({"fp32": {}}, False),  # int8 refused by the gate: nothing to redo
    ({"fp32": {}, "int8": {"quantization": {"weight_type": "QInt8"}}}, True),  # 8-bit weights, from before
])
def test_a_cached_package_is_reused_unless_its_int8_has_8_bit_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variants: dict[str, Any], rebuilt: bool
) -> None:
    built: list[Path] = []
    monkeypatch.setattr(export.package, "build_package", lambda options: built.append(options.out))
    monkeypatch.setattr(models.multitask, "train_multitask", lambda config: pytest.fail("the checkpoint is cached"))
    cache = _cache_with(tmp_path, variants)
    packages = demo.ensure_demo_packages(cache)
    assert packages == [cache / "packages" / spec.name for spec in demo.DEMO_MODELS]
    assert built == (packages if rebuilt else [])
