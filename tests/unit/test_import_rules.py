"""The import rules in pyproject.toml ([tool.importlinter]) hold, and each one really bites.

Each case copies the packages to a temporary tree, plants one forbidden import there and runs
`lint-imports` on the copy: the planted contract must break, naming the planted import.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
PACKAGES: list[str] = CONFIG["root_packages"]
CONTRACTS: dict[str, str] = {c["id"]: c["name"] for c in CONFIG["contracts"]}
LINT_IMPORTS = str(Path(sys.executable).with_name("lint-imports"))

# Lazy (function-level) and TYPE_CHECKING imports count: grimp sees them, and so must the rules.
LAZY = "\n\ndef _planted() -> None:\n    {stmt}  # noqa\n"
TOP = "\n{stmt}\n"
TYPING = "\n\nfrom typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    {stmt}  # noqa\n"

# (contract id, file in the copy, statement, form, the chain the report must name)
CASES = [
    (
        "core-base",
        "stream/core/errors.py",
        "from stream.consumer import pipeline",
        LAZY,
        "stream.core.errors -> stream.consumer.pipeline",
    ),
    ("core-base", "stream/core/times.py", "import dashboards.build", TYPING, "stream.core.times -> dashboards.build"),
    ("core-base", "stream/core/store.py", "from models import training", LAZY, "stream.core.store -> models.training"),
    (
        "offline-uses-core",
        "models/cache.py",
        "from stream.kafka import clients",
        LAZY,
        "models.cache -> stream.kafka.clients",
    ),
    (
        "offline-uses-core",
        "dashboards/synthetic.py",
        "import stream.tools.demo",
        TOP,
        "dashboards.synthetic -> stream.tools.demo",
    ),
    (
        "training-via-tools",
        "stream/consumer/scoring.py",
        "from export import parity",
        LAZY,
        "stream.consumer.scoring -> export.parity",
    ),
    (
        "training-via-tools",
        "stream/brief/report.py",
        "import models.training",
        TYPING,
        "stream.brief.report -> models.training",
    ),
    # Indirect: the consumer reaches models through stream.tools.
    (
        "training-via-tools",
        "stream/consumer/pipeline.py",
        "from stream.tools import demo",
        LAZY,
        "stream.consumer.pipeline -> stream.tools.demo",
    ),
    ("run-without-torch", "stream/consumer/pipeline.py", "import torch", LAZY, "stream.consumer.pipeline -> torch"),
    (
        "run-without-torch",
        "stream/kafka/source.py",
        "from transformers import AutoTokenizer",
        LAZY,
        "stream.kafka.source -> transformers",
    ),
    ("run-without-torch", "stream/core/scorer.py", "import onnx.helper", TYPING, "stream.core.scorer -> onnx"),
    (
        "run-without-torch",
        "stream/consumer/app.py",
        "from sklearn.metrics import f1_score",
        LAZY,
        "stream.consumer.app -> sklearn",
    ),
    ("run-without-torch", "stream/cli.py", "import peft", LAZY, "stream.cli -> peft"),
    ("training-without-kafka", "export/parity.py", "import kafka", LAZY, "export.parity -> kafka"),
    (
        "training-without-kafka",
        "models/training.py",
        "from kafka.admin import KafkaAdminClient",
        LAZY,
        "models.training -> kafka",
    ),
]


def copy_tree(dest: Path) -> Path:
    skip = shutil.ignore_patterns("__pycache__", "node_modules", "*.ts", "*.json", "*.jsonl", "*.onnx")
    for name in PACKAGES:
        shutil.copytree(ROOT / name, dest / name, ignore=skip)
    shutil.copy2(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def run_in(tree: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # The copy comes first on the path, ahead of the editable install of the real tree.
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [LINT_IMPORTS, "--no-cache", "--no-logo", *args],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def verdict(output: str, contract: str) -> str:
    match = re.search(rf"^{re.escape(CONTRACTS[contract])} (KEPT|BROKEN)$", output, re.MULTILINE)
    assert match, f"no verdict for {contract} in:\n{output}"
    return match.group(1)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return copy_tree(tmp_path)


def test_grimp_reads_the_copy_not_the_installed_tree(tree: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    code = "import importlib.util as u; print('\\n'.join(u.find_spec(p).submodule_search_locations[0] for p in %r))"
    out = subprocess.run(
        [sys.executable, "-c", code % PACKAGES], cwd=tree, env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == [str(tree / p) for p in PACKAGES]


def test_the_tree_as_it_is_keeps_every_contract(tree: Path) -> None:
    result = run_in(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert {verdict(result.stdout, c) for c in CONTRACTS} == {"KEPT"}
    assert set(CONTRACTS) == {case[0] for case in CASES}  # every contract is exercised below


@pytest.mark.parametrize(("contract", "path", "stmt", "form", "chain"), CASES, ids=[f"{c[0]}:{c[1]}" for c in CASES])
def test_a_planted_import_breaks_its_contract(
    tree: Path, contract: str, path: str, stmt: str, form: str, chain: str
) -> None:
    with (tree / path).open("a", encoding="utf-8") as f:
        f.write(form.format(stmt=stmt))
    result = run_in(tree, "--contract", contract)
    assert result.returncode == 1, result.stdout + result.stderr
    assert verdict(result.stdout, contract) == "BROKEN"
    assert chain in result.stdout, result.stdout


def test_onnxruntime_is_not_onnx(tree: Path) -> None:
    # The runtime is the consumer's own dependency; only the onnx (export) package is forbidden.
    with (tree / "stream/consumer/pipeline.py").open("a", encoding="utf-8") as f:
        f.write(LAZY.format(stmt="import onnxruntime.capi"))
    result = run_in(tree, "--contract", "run-without-torch")
    assert result.returncode == 0, result.stdout
