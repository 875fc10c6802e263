"""Fetching from a local HTTP server: conditional GET, and every failure typed by kind."""

from __future__ import annotations

import datetime as dt
import socket

import httpx
import pytest

from stream.feeds.fetch import FetchError, FetchResult, Validators, fetch_feed
from stream.feeds.net import EVERY_NETWORK
from tests.feeds_fixtures import MALFORMED, Entry, FeedServer, atom, http_date, rss

PUB = dt.datetime(2026, 2, 27, 8, 0, tzinfo=dt.UTC)


def _get(client: httpx.Client, url: str, validators: Validators | None = None, timeout: float = 5) -> FetchResult:
    """A fetch from the local server, which only an allow_private feed may reach."""
    return fetch_feed(client, url, validators or Validators(), timeout, EVERY_NETWORK)


def test_rss_and_atom_are_parsed(feed_server: FeedServer, client: httpx.Client) -> None:
    rss_url = feed_server.set("/rss", rss([Entry("1", "中文标题", "正文", PUB)], language="zh-cn"))
    atom_url = feed_server.set(
        "/atom", atom([Entry("urn:a:1", "English", "body", PUB)]), content_type="application/atom+xml"
    )
    got = _get(client, rss_url)
    assert not got.not_modified and got.feed_lang == "zh-cn"
    assert [e.title for e in got.entries] == ["中文标题"]
    got = _get(client, atom_url)
    assert [e.id for e in got.entries] == ["urn:a:1"] and got.feed_lang is None
    lang_url = feed_server.set("/atom-zh", atom([Entry("urn:a:2", "标题", "正文", PUB)], lang="zh-Hans"))
    assert _get(client, lang_url).feed_lang == "zh-Hans"
    assert feed_server.requests_for("/rss")[0].headers["user-agent"] == "yuqing-test"


def test_etag_is_sent_back_and_304_is_not_modified(feed_server: FeedServer, client: httpx.Client) -> None:
    url = feed_server.set("/e", rss([Entry("1", "t", "x", PUB)]), etag='"v1"')
    first = _get(client, url)
    assert first.validators == Validators(etag='"v1"')
    assert "if-none-match" not in feed_server.requests[-1].headers
    second = _get(client, url, first.validators)
    assert second.not_modified and second.entries == []
    assert feed_server.requests[-1].headers["if-none-match"] == '"v1"'


def test_last_modified_is_sent_back(feed_server: FeedServer, client: httpx.Client) -> None:
    stamp = http_date(PUB)
    url = feed_server.set("/lm", rss([Entry("1", "t", "x", PUB)]), last_modified=stamp)
    first = _get(client, url)
    assert first.validators == Validators(last_modified=stamp)
    second = _get(client, url, first.validators)
    assert second.not_modified
    assert feed_server.requests[-1].headers["if-modified-since"] == stamp


@pytest.mark.parametrize(
    ("route", "kind"),
    [
        ({"body": "oops", "status": 500}, "http_status"),
        ({"body": "gone", "status": 404}, "http_status"),
        ({"body": MALFORMED}, "bad_xml"),
        ({"body": "<html><body>not a feed</body></html>", "content_type": "text/html"}, "bad_xml"),
        ({"body": rss([]), "delay": 1.5}, "timeout"),
    ],
)
def test_failures_are_typed(
    feed_server: FeedServer, client: httpx.Client, route: dict[str, object], kind: str
) -> None:
    body = route.pop("body")
    assert isinstance(body, str)
    url = feed_server.set("/bad", body, **route)
    with pytest.raises(FetchError) as err:
        _get(client, url, timeout=0.5)
    assert err.value.kind == kind


def test_connection_refused_is_typed(client: httpx.Client) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(FetchError) as err:
        _get(client, f"http://127.0.0.1:{port}/x", timeout=2)
    assert err.value.kind == "connection"


def test_not_well_formed_feed_with_entries_is_kept_with_a_warning(
    feed_server: FeedServer, client: httpx.Client
) -> None:
    body = rss([Entry("1", "t", "x", PUB)]).replace("</channel></rss>", "<bogus></channel></rss>")
    url = feed_server.set("/bozo", body)
    got = _get(client, url)
    assert len(got.entries) == 1 and got.warning is not None
