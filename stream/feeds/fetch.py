"""Fetch one feed over HTTP with conditional GET, and parse it with feedparser.

Failures are typed by kind (timeout, connection, http_status, bad_xml) so the loop can count
them per kind and back off per feed; they never stop the other feeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import feedparser
import httpx

from stream.feeds.config import FeedConfig

# Feeds larger than this are refused rather than parsed (a broken server streaming forever).
MAX_FEED_BYTES = 20 * 1024 * 1024


class FetchError(Exception):
    """A feed that could not be fetched or parsed this time; `kind` labels the error metric."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind  # timeout | connection | http | http_status | too_large | bad_xml


@dataclass(frozen=True)
class Validators:
    """What the server told us last time, sent back as If-None-Match / If-Modified-Since."""

    etag: str | None = None
    last_modified: str | None = None

    def headers(self) -> dict[str, str]:
        out = {}
        if self.etag:
            out["If-None-Match"] = self.etag
        if self.last_modified:
            out["If-Modified-Since"] = self.last_modified
        return out


@dataclass(frozen=True)
class FetchResult:
    not_modified: bool
    validators: Validators
    parsed: Any = None  # feedparser.FeedParserDict when modified
    warning: str | None = None  # a bozo feed that still had entries

    @property
    def entries(self) -> list[Any]:
        return list(self.parsed.entries) if self.parsed is not None else []

    @property
    def feed_lang(self) -> str | None:
        if self.parsed is None:
            return None
        lang = self.parsed.feed.get("language")  # RSS <language> or Atom xml:lang
        return str(lang) if lang else None


def make_client(user_agent: str) -> httpx.Client:
    # Timeouts are given per request (per feed); redirects are followed as readers do.
    return httpx.Client(
        follow_redirects=True,
        headers={"User-Agent": user_agent, "Accept": "application/rss+xml, application/atom+xml, "
                 "application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5"},
    )


def fetch_feed(client: httpx.Client, feed: FeedConfig, validators: Validators, timeout: float) -> FetchResult:
    """GET the feed (conditionally) and parse it; raises FetchError."""
    try:
        with client.stream("GET", feed.url, headers=validators.headers(), timeout=timeout) as response:
            if response.status_code == 304:
                return FetchResult(not_modified=True, validators=validators)
            if response.status_code >= 400:
                raise FetchError("http_status", f"HTTP {response.status_code} from {feed.url}")
            body = _read_capped(response)
            headers = {k.lower(): v for k, v in response.headers.items()}
    except httpx.TimeoutException as exc:
        raise FetchError("timeout", f"timed out after {timeout:g}s fetching {feed.url}") from exc
    except httpx.TransportError as exc:
        raise FetchError("connection", f"cannot fetch {feed.url}: {exc or type(exc).__name__}") from exc
    except httpx.RequestError as exc:  # undecodable body, redirect loop
        raise FetchError("http", f"cannot fetch {feed.url}: {exc or type(exc).__name__}") from exc

    new_validators = Validators(etag=headers.get("etag"), last_modified=headers.get("last-modified"))
    # Header names feedparser understands: content-type (charset) and content-location (base URL).
    parsed = feedparser.parse(
        body,
        response_headers={**headers, "content-location": str(response.url)},
    )
    warning = None
    if parsed.get("bozo"):
        reason = f"{type(parsed.get('bozo_exception')).__name__}: {parsed.get('bozo_exception')}"
        if not parsed.entries:
            raise FetchError("bad_xml", f"{feed.url} is not a readable feed ({reason})")
        warning = f"{feed.url} is not well-formed but has entries ({reason})"
    return FetchResult(not_modified=False, validators=new_validators, parsed=parsed, warning=warning)


def _read_capped(response: httpx.Response) -> bytes:
    chunks = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > MAX_FEED_BYTES:
            raise FetchError("too_large", f"{response.url} is larger than {MAX_FEED_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
