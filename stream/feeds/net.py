"""Where a feed fetch may connect, and by when it must be over.

Every TCP connection of a fetch (to the feed URL and to each redirect hop) is opened by
GuardedBackend: it resolves the host once, refuses it when any of its addresses is not public
(loopback, private, link-local, multicast, unspecified, reserved, shared or documentation
space) unless the feed allows that network, and then connects to exactly those checked
addresses.  The check is on the address connected to, not on the name, so a name that
resolves elsewhere a moment later (DNS rebinding) cannot slip past it.  The Host header, TLS
SNI and certificate checks still use the URL's host name: httpcore passes it to start_tls.

Each connect, read and write is also capped by the time left to the fetch's total deadline,
so a server that trickles a byte a second cannot stretch a fetch past it.

The policy (deadline, allowed networks) of the fetch in progress is a context variable:
httpx runs a synchronous request, redirects included, in the calling thread.
"""

from __future__ import annotations

import ipaddress
import math
import socket
import ssl
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# allow_private = true
EVERY_NETWORK: tuple[IPNetwork, ...] = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))


class BlockedAddress(Exception):
    """A connection refused because of the address it would reach."""


@dataclass(frozen=True)
class FetchPolicy:
    deadline: float = math.inf  # time.monotonic() by which the whole fetch must be over
    allowed: tuple[IPNetwork, ...] = ()  # non-public networks this fetch may reach

    def cap(self, timeout: float | None, expired: type[Exception]) -> float | None:
        """`timeout` shortened to the time left; raises `expired` once the deadline has passed."""
        if math.isinf(self.deadline):
            return timeout
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise expired("the fetch deadline has passed")
        return left if timeout is None else min(timeout, left)


# Outside fetch_feed: no deadline, public addresses only.
_DEFAULT_POLICY = FetchPolicy()
_POLICY: ContextVar[FetchPolicy] = ContextVar("feed_fetch_policy", default=_DEFAULT_POLICY)


@contextmanager
def fetch_policy(policy: FetchPolicy) -> Iterator[None]:
    token = _POLICY.set(policy)
    try:
        yield
    finally:
        _POLICY.reset(token)


def _without_zone(address: str) -> IPAddress:
    return ipaddress.ip_address(address.split("%", 1)[0])  # "fe80::1%eth0"


def _unmapped(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def parse_ip(address: str) -> IPAddress:
    """An address as connected to: the IPv6 zone dropped, an IPv4-mapped IPv6 address as IPv4."""
    return _unmapped(_without_zone(address))


def non_public_kind(ip: IPAddress) -> str | None:
    """What kind of non-public address `ip` is, or None for a public one."""
    for kind in ("loopback", "link_local", "multicast", "unspecified", "reserved", "private"):
        if getattr(ip, f"is_{kind}"):
            return kind.replace("_", "-")
    # 100.64/10 (carrier-grade NAT, where some clouds keep their metadata service) and the like
    return None if ip.is_global else "non-global"


def refusal(address: str, allowed: Iterable[IPNetwork]) -> str | None:
    """Why connecting to `address` is refused, or None when it is public or in `allowed`."""
    raw = _without_zone(address)
    ip = _unmapped(raw)
    kind = non_public_kind(ip)
    # An allowed network may be written either way, "::ffff:10.0.0.1" or "10.0.0.1".
    if kind is None or any(a.version == net.version and a in net for a in (ip, raw) for net in allowed):
        return None
    return f"{ip} is a {kind} address"


class DeadlineStream(httpcore.NetworkStream):
    """A connection whose every operation ends by the deadline of the fetch in progress."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _POLICY.get().cap(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _POLICY.get().cap(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        timeout = _POLICY.get().cap(timeout, httpcore.ConnectTimeout)
        return DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class GuardedBackend(httpcore.SyncBackend):
    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        policy = _POLICY.get()
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        for address in addresses:  # any bad address refuses the name: the resolver's order is not ours
            reason = refusal(address, policy.allowed)
            if reason:
                raise BlockedAddress(f"{host} resolves to {reason}; allow_private lets a feed reach it")
        failure: httpcore.ConnectError | None = None
        for address in addresses:
            try:
                stream = super().connect_tcp(
                    address, port, policy.cap(timeout, httpcore.ConnectTimeout), local_address, socket_options
                )
            except httpcore.ConnectError as exc:  # refused or unreachable: the next address may answer
                failure = exc
                continue
            return DeadlineStream(stream)
        raise failure or httpcore.ConnectError(f"{host} has no address")


class GuardedTransport(httpx.HTTPTransport):
    """httpx's transport over GuardedBackend, without keep-alive.

    httpx has no public way to give its transport a network backend, so the pool is replaced.
    Keep-alive is off because a pooled connection would carry the next fetch of the same host
    (maybe another feed, with other allowed networks) without a check of its own; feeds are
    polled minutes apart, so nothing is lost.
    """

    def __init__(self) -> None:
        super().__init__()
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_keepalive_connections=0,
            network_backend=GuardedBackend(),
        )
