"""A local HTTP receiver on 127.0.0.1 for webhook tests: records every request and answers from
a script of (status, body, delay) steps (the last step repeats)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Received:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


@dataclass
class Receiver:
    url: str
    script: list[tuple[int, str, float]]
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_step(self) -> tuple[int, str, float]:
        with self.lock:
            return self.script.pop(0) if len(self.script) > 1 else self.script[0]


OK = (200, '{"errcode": 0, "code": 0}', 0.0)


def fail_first(failures: int | None, status: int = 503) -> list[tuple[int, str, float]]:
    """A script that answers `status` to the first `failures` requests, then accepts every one;
    with None, it never accepts."""
    error = (status, '{"error": "unavailable"}', 0.0)
    return [error] if failures is None else [error] * failures + [OK]


@contextmanager
def webhook_receiver(script: list[tuple[int, str, float]] | None = None) -> Iterator[Receiver]:
    """Yields a Receiver whose `url` ends in /hook?token=t (like the bots' URLs)."""
    receiver = Receiver(url="", script=list(script or [OK]))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            parts = urlsplit(self.path)
            receiver.received.append(
                Received(
                    parts.path,
                    {k: v[0] for k, v in parse_qs(parts.query).items()},
                    dict(self.headers.items()),
                    body,
                )
            )
            status, answer, delay = receiver.next_step()
            if delay:
                time.sleep(delay)
            payload = answer.encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout test)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook?token=t"
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
