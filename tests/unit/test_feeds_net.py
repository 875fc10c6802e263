"""Where a fetch may connect (no loopback, private or link-local unless allowed) and its total deadline.

The servers are real, on loopback: 127.0.0.1, 127.0.0.2 and ::1.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import time
from typing import Any

import httpx
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from stream.feeds.fetch import FetchError, Validators, fetch_feed
from stream.feeds.net import EVERY_NETWORK, IPNetwork, non_public_kind, parse_ip, refusal
from tests.feeds_fixtures import Entry, FeedServer, rss, serve_feeds

PUB = dt.datetime(2026, 2, 27, 8, 0, tzinfo=dt.UTC)
FEED = rss([Entry("1", "标题", "正文", PUB)])


def _refused(client: httpx.Client, url: str, allowed: tuple[IPNetwork, ...] = ()) -> FetchError:
    with pytest.raises(FetchError) as err:
        fetch_feed(client, url, Validators(), 5, allowed)
    assert err.value.kind == "blocked", err.value
    return err.value


# -- the address rule ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped: judged as the IPv4 address it reaches
        ("10.0.0.1", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.254", "private"),
        ("192.168.1.1", "private"),
        ("::ffff:192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.169.254", "link-local"),  # cloud metadata
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("100.100.100.200", "non-global"),  # carrier-grade NAT space: a cloud metadata service
        ("192.0.2.10", "private"),  # documentation
    ],
)
def test_non_public_addresses_are_named(address: str, kind: str) -> None:
    assert non_public_kind(parse_ip(address)) == kind
    assert refusal(address, ()) == f"{parse_ip(address)} is a {kind} address"
    assert refusal(address, EVERY_NETWORK) is None


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "172.32.0.1", "11.0.0.1", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert refusal(address, ()) is None


@given(st.ip_addresses(v=4, network="10.0.0.0/8") | st.ip_addresses(v=4, network="172.16.0.0/12")
       | st.ip_addresses(v=4, network="192.168.0.0/16") | st.ip_addresses(v=6, network="fc00::/7")
       | st.ip_addresses(v=4, network="169.254.0.0/16") | st.ip_addresses(v=6, network="fe80::/10"))
def test_every_private_and_link_local_address_is_refused(ip: Any) -> None:
    assert refusal(str(ip), ()) is not None
    if ip.version == 4:
        assert refusal(f"::ffff:{ip}", ()) is not None


@given(st.ip_addresses(), st.ip_addresses())
@example(ipaddress.ip_address("::ffff:10.0.0.1"), ipaddress.ip_address("10.0.0.2"))
@example(ipaddress.ip_address("10.0.0.1"), ipaddress.ip_address("::ffff:10.0.0.2"))
def test_allowed_networks_open_exactly_themselves(ip: Any, other: Any) -> None:
    net = ipaddress.ip_network(ip)  # a single address
    assert refusal(str(ip), (net,)) is None
    if parse_ip(str(other)) != parse_ip(str(ip)) and non_public_kind(parse_ip(str(other))):
        assert refusal(str(other), (net,)) is not None
    if non_public_kind(parse_ip(str(ip))) is None:  # the rule never refuses a public address
        assert ip.is_global and not ip.is_multicast


# -- the feed URL ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("host", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("localhost", "loopback"),
        ("[::1]", "loopback"),
        ("2130706433", "loopback"),  # 127.0.0.1 as one decimal number
        ("0x7f000001", "loopback"),  # ... and in hex
        ("127.1", "loopback"),
        ("[::ffff:127.0.0.1]", "loopback"),
        ("0", "unspecified"),  # 0.0.0.0 reaches this host on Linux
    ],
)
def test_loopback_in_any_spelling_is_refused(
    feed_server: FeedServer, client: httpx.Client, host: str, kind: str
) -> None:
    feed_server.set("/f", FEED)
    error = _refused(client, feed_server.url("/f", host=host))
    assert f"a {kind} address" in str(error) and "allow_private" in str(error)
    assert not feed_server.requests  # refused before connecting


@pytest.mark.parametrize(
    "url",
    [
        "http://10.1.2.3/feed", "http://172.20.0.5:8080/feed", "http://192.168.0.1/rss",
        "http://169.254.169.254/latest/meta-data/", "http://[fe80::1]/feed", "http://[fd00::5]/feed",
        "http://100.100.100.200/latest/meta-data/", "http://[ff02::1]/feed", "http://224.0.0.251/feed",
    ],
)
def test_private_link_local_and_multicast_literals_are_refused(client: httpx.Client, url: str) -> None:
    started = time.monotonic()
    _refused(client, url)
    assert time.monotonic() - started < 1  # no connection was tried


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "2130706433", "0x7f000001", "127.1"])
def test_allow_private_reaches_the_local_server(feed_server: FeedServer, client: httpx.Client, host: str) -> None:
    feed_server.set("/f", FEED)
    got = fetch_feed(client, feed_server.url("/f", host=host), Validators(), 5, EVERY_NETWORK)
    assert [e.title for e in got.entries] == ["标题"]


def test_allow_private_reaches_ipv6_loopback(client: httpx.Client) -> None:
    with serve_feeds("::1") as server:
        server.set("/f", FEED)
        url = server.url("/f")
        assert url.startswith("http://[::1]:")
        _refused(client, url)
        assert [e.title for e in fetch_feed(client, url, Validators(), 5, EVERY_NETWORK).entries] == ["标题"]


def test_an_allowed_network_opens_only_itself(client: httpx.Client) -> None:
    allowed = (ipaddress.ip_network("127.0.0.2/32"),)
    with serve_feeds("127.0.0.2") as inside, serve_feeds("127.0.0.1") as outside:
        inside.set("/f", FEED)
        outside.set("/f", FEED)
        assert len(fetch_feed(client, inside.url("/f"), Validators(), 5, allowed).entries) == 1
        _refused(client, outside.url("/f"), allowed)
        assert not outside.requests


# -- redirects -------------------------------------------------------------------------------
@pytest.mark.parametrize("spelling", ["127.0.0.1", "localhost", "2130706433", "[::ffff:127.0.0.1]"])
def test_a_redirect_to_loopback_is_refused_unless_allowed(client: httpx.Client, spelling: str) -> None:
    # The feed host (127.0.0.2) is allowed; the hop it redirects to (127.0.0.1) is not.
    allowed = (ipaddress.ip_network("127.0.0.2/32"),)
    with serve_feeds("127.0.0.2") as start, serve_feeds("127.0.0.1") as target:
        target.set("/feed", FEED)
        url = start.set("/start", "", status=302, headers={"Location": target.url("/feed", host=spelling)})
        error = _refused(client, url, allowed)
        assert "is a loopback address" in str(error)
        assert len(start.requests) == 1 and not target.requests
        if spelling != "[::ffff:127.0.0.1]":  # a dual-stack socket is not guaranteed here
            got = fetch_feed(client, url, Validators(), 5, EVERY_NETWORK)
            assert [e.title for e in got.entries] == ["标题"] and len(target.requests) == 1


def test_a_rebinding_name_is_connected_where_it_was_checked(
    client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name that answers an allowed address to the check and loopback afterwards (DNS rebinding)."""
    real = socket.getaddrinfo
    answers = iter(["127.0.0.2"] + ["127.0.0.1"] * 10)
    lookups = []

    def rebinding(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "rebind.test":
            return real(host, port, *args, **kwargs)
        lookups.append(host)
        return real(next(answers), port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    with serve_feeds("127.0.0.2") as allowed_server, serve_feeds("127.0.0.1", allowed_server.port) as evil:
        allowed_server.set("/f", rss([Entry("1", "allowed", "x", PUB)]))
        evil.set("/f", rss([Entry("1", "evil", "x", PUB)]))
        got = fetch_feed(
            client, f"http://rebind.test:{allowed_server.port}/f", Validators(), 5,
            (ipaddress.ip_network("127.0.0.2/32"),),
        )
        assert [e.title for e in got.entries] == ["allowed"]
        assert lookups == ["rebind.test"] and not evil.requests
        assert allowed_server.requests[0].headers["host"] == f"rebind.test:{allowed_server.port}"


# -- the total deadline ----------------------------------------------------------------------
def test_a_trickling_body_ends_by_the_deadline(feed_server: FeedServer, client: httpx.Client) -> None:
    # Each byte comes well within any per-read timeout; the whole body would take ~20 s.
    url = feed_server.set("/trickle", FEED, trickle=0.05)
    started = time.monotonic()
    with pytest.raises(FetchError) as err:
        fetch_feed(client, url, Validators(), 0.6, EVERY_NETWORK)
    elapsed = time.monotonic() - started
    assert err.value.kind == "timeout"
    assert str(err.value) == f"{url} did not answer in full within the 0.6s deadline"
    assert 0.55 <= elapsed < 1.6


def test_the_deadline_covers_every_redirect_hop(feed_server: FeedServer, client: httpx.Client) -> None:
    # Three hops of 0.4 s each: every hop is quick enough on its own, together they are not.
    feed_server.set("/feed", FEED, delay=0.4)
    feed_server.set("/r2", "", status=302, headers={"Location": "/feed"}, delay=0.4)
    url = feed_server.set("/r1", "", status=301, headers={"Location": feed_server.url("/r2")}, delay=0.4)
    started = time.monotonic()
    with pytest.raises(FetchError) as err:
        fetch_feed(client, url, Validators(), 1.0, EVERY_NETWORK)
    assert err.value.kind == "timeout" and time.monotonic() - started < 1.5
    assert len(fetch_feed(client, url, Validators(), 5, EVERY_NETWORK).entries) == 1  # with time enough


@pytest.mark.parametrize("location", ["http://0177.0.0.1/feed", "http://[::1/feed", "gopher://127.0.0.1/x"])
def test_an_unusable_redirect_is_a_fetch_error(feed_server: FeedServer, client: httpx.Client, location: str) -> None:
    url = feed_server.set("/start", "", status=302, headers={"Location": location})
    with pytest.raises(FetchError) as err:
        fetch_feed(client, url, Validators(), 5, EVERY_NETWORK)
    assert err.value.kind in {"connection", "http"} and url in str(err.value)


def test_an_unparsable_feed_url_is_a_fetch_error(client: httpx.Client) -> None:
    with pytest.raises(FetchError) as err:
        fetch_feed(client, "http://0177.0.0.1/feed", Validators(), 5)
    assert err.value.kind == "http" and "Invalid IPv4 address" in str(err.value)
