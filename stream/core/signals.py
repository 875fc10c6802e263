"""Graceful stop for long-running commands (`run`, `replay`, `ingest`, `alerts run`)."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)


@contextmanager
def stop_on_signals(what: str = "the current batch") -> Iterator[threading.Event]:
    """SIGTERM/SIGINT set the yielded event: the command finishes `what`, then leaves.  A second
    signal while stopping aborts at once (KeyboardInterrupt).  The previous handlers come back on
    exit.  Off the main thread (where Python allows no handlers) the event is only set by hand."""
    stop = threading.Event()
    previous: dict[signal.Signals, Any] = {}

    def handler(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        log.warning("received %s: finishing %s, then exiting", signal.Signals(signum).name, what)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, handler)
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
