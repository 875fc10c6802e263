"""A local feed server on loopback (http.server in a thread) and RSS / Atom builders."""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from email.utils import format_datetime
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    content_type: str = "application/rss+xml; charset=utf-8"
    etag: str | None = None
    last_modified: str | None = None
    delay: float = 0.0  # seconds before answering (a feed that times out)
    trickle: float = 0.0  # seconds between single bytes of the body (a server that trickles)
    headers: dict[str, str] = field(default_factory=dict)  # e.g. Location for a redirect


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    at: float = field(default_factory=time.monotonic)


@dataclass
class FeedServer:
    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    port: int = 0
    host: str = "127.0.0.1"

    def url(self, path: str, host: str | None = None) -> str:
        """The URL of `path`; `host` spells the server's address another way (e.g. localhost)."""
        host = host or (f"[{self.host}]" if ":" in self.host else self.host)
        return f"http://{host}:{self.port}{path}"

    def set(self, path: str, body: str | bytes, **kwargs: Any) -> str:
        data = body.encode("utf-8") if isinstance(body, str) else body
        self.routes[path] = Route(body=data, **kwargs)
        return self.url(path)

    def requests_for(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]


def _handler(server: FeedServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            server.requests.append(Request(self.path, {k.lower(): v for k, v in self.headers.items()}))
            route = server.routes.get(self.path)
            if route is None:
                self.send_error(404)
                return
            if route.delay:
                time.sleep(route.delay)
            inm = self.headers.get("If-None-Match")
            ims = self.headers.get("If-Modified-Since")
            if (route.etag and inm == route.etag) or (
                route.last_modified and not route.etag and ims == route.last_modified
            ):
                self.send_response(304)
                self.end_headers()
                return
            self.send_response(route.status)
            self.send_header("Content-Type", route.content_type)
            self.send_header("Content-Length", str(len(route.body)))
            if route.etag:
                self.send_header("ETag", route.etag)
            if route.last_modified:
                self.send_header("Last-Modified", route.last_modified)
            for name, value in route.headers.items():
                self.send_header(name, value)
            self.end_headers()
            # The client may have given up already (the timeout tests).
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                if not route.trickle:
                    self.wfile.write(route.body)
                for i in range(len(route.body) if route.trickle else 0):
                    self.wfile.write(route.body[i : i + 1])
                    self.wfile.flush()
                    time.sleep(route.trickle)

        def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
            pass

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


@contextlib.contextmanager
def serve_feeds(host: str = "127.0.0.1", port: int = 0) -> Iterator[FeedServer]:
    """Use as a fixture body: ``with serve_feeds() as server: yield server``; `host` a loopback address."""
    state = FeedServer(host=host)
    httpd = (_Server6 if ":" in host else _Server)((host, port), _handler(state))
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


# -- feed builders -------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    guid: str | None
    title: str
    html: str
    published: dt.datetime | None
    link: str | None = None


def http_date(when: dt.datetime) -> str:
    return format_datetime(when.astimezone(dt.UTC), usegmt=True)


def rss(entries: Sequence[Entry], *, language: str | None = None, title: str = "Test feed") -> str:
    items = []
    for e in entries:
        parts = [f"<title>{escape(e.title)}</title>", f"<description>{escape(e.html)}</description>"]
        if e.link:
            parts.append(f"<link>{escape(e.link)}</link>")
        if e.guid:
            parts.append(f'<guid isPermaLink="false">{escape(e.guid)}</guid>')
        if e.published:
            parts.append(f"<pubDate>{http_date(e.published)}</pubDate>")
        items.append("<item>" + "".join(parts) + "</item>")
    lang = f"<language>{language}</language>" if language else ""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0"><channel>'
        f"<title>{escape(title)}</title><link>http://example.org/</link><description>d</description>{lang}"
        + "".join(items)
        + "</channel></rss>"
    )


def atom(entries: Sequence[Entry], *, title: str = "Atom test feed", lang: str | None = None) -> str:
    items = []
    for e in entries:
        when = (e.published or dt.datetime(2026, 1, 1, tzinfo=dt.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
        link = f'<link href="{escape(e.link)}"/>' if e.link else ""
        items.append(
            f"<entry><id>{escape(e.guid or '')}</id><title>{escape(e.title)}</title>{link}"
            f"<updated>{when}</updated>"
            + (f"<published>{when}</published>" if e.published else "")
            + f'<content type="html">{escape(e.html)}</content></entry>'
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom"'
        + (f' xml:lang="{lang}">' if lang else ">")
        + f"<title>{escape(title)}</title><id>urn:uuid:60a76c80-d399-11d9-b93C-0003939e0af6</id>"
        "<updated>2026-01-01T00:00:00Z</updated>"
        + "".join(items)
        + "</feed>"
    )


MALFORMED = '<?xml version="1.0"?><rss version="2.0"><channel><title>broken<item><title>x</ti'
