"""Fetch one feed over HTTP with conditional GET, and parse it with feedparser.

A fetch has one total deadline (connect, redirects and body together) and may reach only
public addresses unless its feed allows more (stream.feeds.net).  A body that declares no
encoding and is not UTF-8 (older Chinese sites: GBK, GB18030, Big5) is decoded by detection.

Failures are typed by kind (timeout, connection, blocked, http_status, bad_xml) so the loop can
count them per kind and back off per feed; they never stop the other feeds.
"""

from __future__ import annotations

import codecs
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import Message
from typing import Any

import charset_normalizer
import feedparser
import httpx

from stream.feeds.net import BlockedAddress, FetchPolicy, GuardedTransport, IPNetwork, fetch_policy

# Feeds larger than this are refused rather than parsed (a broken server streaming forever).
MAX_FEED_BYTES = 20 * 1024 * 1024


class FetchError(Exception):
    """A feed that could not be fetched or parsed this time; `kind` labels the error metric."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind  # timeout | connection | blocked | http | http_status | too_large | bad_xml


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
    # Timeouts are given per request (per feed); redirects are followed as readers do, each hop
    # checked by the transport.  A transport of our own also means no proxy from the environment:
    # the address check needs the connection to go where it says.
    return httpx.Client(
        transport=GuardedTransport(),
        follow_redirects=True,
        headers={"User-Agent": user_agent, "Accept": "application/rss+xml, application/atom+xml, "
                 "application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5"},
    )


def fetch_feed(
    client: httpx.Client,
    url: str,
    validators: Validators,
    timeout: float,
    allowed: Sequence[IPNetwork] = (),
) -> FetchResult:
    """GET the feed (conditionally) within `timeout` seconds in all, and parse it; raises FetchError.

    `allowed`: the non-public networks this feed may reach (stream.feeds.net).
    """
    policy = FetchPolicy(deadline=time.monotonic() + timeout, allowed=tuple(allowed))
    try:
        with (
            fetch_policy(policy),
            client.stream("GET", url, headers=validators.headers(), timeout=timeout) as response,
        ):
            if response.status_code == 304:
                return FetchResult(not_modified=True, validators=validators)
            if response.status_code >= 400:
                raise FetchError("http_status", f"HTTP {response.status_code} from {url}")
            body = _read_capped(response)
            headers = {k.lower(): v for k, v in response.headers.items()}
    except BlockedAddress as exc:
        raise FetchError("blocked", f"refused to fetch {url}: {exc}") from None
    except httpx.TimeoutException as exc:
        raise FetchError("timeout", f"{url} did not answer in full within the {timeout:g}s deadline") from exc
    except httpx.TransportError as exc:
        raise FetchError("connection", f"cannot fetch {url}: {exc or type(exc).__name__}") from exc
    except (httpx.RequestError, httpx.InvalidURL) as exc:  # undecodable body, redirect loop, bad Location
        raise FetchError("http", f"cannot fetch {url}: {exc or type(exc).__name__}") from exc

    new_validators = Validators(etag=headers.get("etag"), last_modified=headers.get("last-modified"))
    body, headers["content-type"] = decode_undeclared(body, headers.get("content-type", ""))
    # Header names feedparser understands: content-type (charset) and content-location (base URL).
    parsed = feedparser.parse(
        body,
        response_headers={**headers, "content-location": str(response.url)},
    )
    warning = None
    if parsed.get("bozo"):
        reason = f"{type(parsed.get('bozo_exception')).__name__}: {parsed.get('bozo_exception')}"
        if not parsed.entries:
            raise FetchError("bad_xml", f"{url} is not a readable feed ({reason})")
        warning = f"{url} is not well-formed but has entries ({reason})"
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


_BOMS = (codecs.BOM_UTF8, codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
_XML_ENCODING = re.compile(rb"""^\s*<\?xml[^>]*?\sencoding\s*=\s*["'][^"']+["']""")


def decode_undeclared(body: bytes, content_type: str) -> tuple[bytes, str]:
    """The body and Content-Type to hand feedparser.

    A declared encoding (a charset in Content-Type, a byte-order mark, an XML declaration's
    encoding) wins, and the body is left to feedparser.  Otherwise UTF-8 is tried first (a fast,
    strict check); a body that is not UTF-8 is decoded by charset detection and handed over as
    UTF-8, since feedparser itself only guesses with a detector it does not depend on.
    """
    header = Message()
    header["content-type"] = content_type or "application/xml"
    if header.get_param("charset") or body.startswith(_BOMS) or _XML_ENCODING.match(body[:1024]):
        return body, content_type
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        best = charset_normalizer.from_bytes(body).best()
        if best is None:  # not text at all: feedparser reports it
            return body, content_type
        body = str(best).encode("utf-8")
    return body, f"{header.get_content_type()}; charset=utf-8"
