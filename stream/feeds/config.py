"""feeds.toml: the feeds to poll and how often, validated before anything is fetched."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from stream.core.errors import ConfigError
from stream.core.settings import read_toml
from stream.feeds.net import EVERY_NETWORK, IPNetwork

_LANG = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$")


def _allowed_networks(value: object) -> tuple[IPNetwork, ...] | None:
    """allow_private: true (any network), false (public addresses only) or a list of networks."""
    if value is None or isinstance(value, tuple):
        return value
    if isinstance(value, bool):
        return EVERY_NETWORK if value else ()
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        try:
            return tuple(ipaddress.ip_network(v) for v in value)
        except ValueError as exc:
            raise ValueError(f"{exc} (give networks like '10.0.0.0/8' or single addresses)") from None
    raise ValueError('must be true, false or a list of networks such as ["10.1.0.0/16", "fd00::/8"]')


class FeedConfig(BaseModel):
    """One feed.  Unset `lang`/`interval`/... fall back to the feed's own language and the defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    source: str = Field(min_length=1, max_length=100)
    lang: str | None = None
    interval: float | None = Field(default=None, gt=0)
    timeout: float | None = Field(default=None, gt=0)
    allow_private: tuple[IPNetwork, ...] | None = None

    _networks = field_validator("allow_private", mode="before")(_allowed_networks)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"feed url {value!r} must be an http:// or https:// URL")
        try:
            httpx.URL(value)
        except httpx.InvalidURL as exc:
            raise ValueError(f"feed url {value!r}: {exc}") from None
        return value

    @field_validator("lang")
    @classmethod
    def _lang_tag(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not _LANG.match(value):
            raise ValueError(f"lang {value!r} is not a language tag like 'zh' or 'en-US'")
        return value.split("-")[0].lower()


class FeedsFile(BaseModel):
    """The whole file: defaults at the top level, then one ``[[feeds]]`` table per feed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    interval: float = Field(default=300.0, gt=0)
    # The whole fetch (connect, redirects, body) ends by then, however slowly the server sends.
    timeout: float = Field(default=30.0, gt=0)
    # Loopback, private, link-local and other non-public addresses are refused unless allowed.
    allow_private: tuple[IPNetwork, ...] = ()
    # A failing feed is retried after backoff_base, then twice as long each time, up to the max.
    backoff_base: float = Field(default=30.0, gt=0)
    backoff_max: float = Field(default=3600.0, gt=0)
    user_agent: str = "yuqing-ingest/0.1"
    feeds: list[FeedConfig] = Field(min_length=1)

    _networks = field_validator("allow_private", mode="before")(_allowed_networks)

    @model_validator(mode="after")
    def _unique(self) -> FeedsFile:
        for attr in ("url", "source"):
            seen: set[str] = set()
            for feed in self.feeds:
                value = getattr(feed, attr)
                if value in seen:
                    raise ValueError(f"two feeds share the {attr} {value!r}")
                seen.add(value)
        return self

    def interval_for(self, feed: FeedConfig) -> float:
        return feed.interval if feed.interval is not None else self.interval

    def timeout_for(self, feed: FeedConfig) -> float:
        return feed.timeout if feed.timeout is not None else self.timeout

    def allowed_for(self, feed: FeedConfig) -> tuple[IPNetwork, ...]:
        return feed.allow_private if feed.allow_private is not None else self.allow_private


def parse_feeds(data: dict[str, Any], *, origin: str = "feeds file") -> FeedsFile:
    try:
        return FeedsFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{origin}: {_describe(exc)}", hint="see deploy/feeds.example.toml") from None


def load_feeds(path: Path, *, default_interval: float | None = None) -> FeedsFile:
    """Read and validate feeds.toml; ``default_interval`` (the --interval flag) wins over the file's."""
    data = read_toml(path)
    if default_interval is not None:
        data = {**data, "interval": default_interval}
    return parse_feeds(data, origin=str(path))


def _describe(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        where = ".".join(str(part) for part in err["loc"]) or "file"
        if err["type"] == "extra_forbidden":
            problems.append(f"unknown key {where!r}")
        elif err["type"] == "missing":
            problems.append(f"{where} is required")
        else:
            problems.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(problems)
