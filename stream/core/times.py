"""The one time grammar of the project.

Durations: "500ms", "90s", "15m", "24h", "7d", "2w" (or a number of seconds).  Points in time:
RFC 3339 (a bare date is midnight UTC), "now", or a duration meaning that long ago.  Item
timestamps (`published_at`) accept RFC 3339 only (`parse_rfc3339`).  Everything is aware UTC.
"""

from __future__ import annotations

import datetime as dt
import re

from stream.core.errors import ConfigError

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|[smhdw])\s*$")


def parse_duration(text: str | int | float | dt.timedelta) -> dt.timedelta:
    """'500ms', '90s', '15m', '1h', '7d', '2w' (or a number of seconds) -> timedelta; ConfigError otherwise."""
    if isinstance(text, dt.timedelta):
        return text
    if isinstance(text, bool):
        raise ConfigError(f"{text!r} is not a duration")
    if isinstance(text, int | float):
        if text < 0:
            raise ConfigError(f"duration {text!r} is negative")
        return dt.timedelta(seconds=text)
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(f"{text!r} is not a duration", hint="use a number and a unit: 500ms, 30s, 15m, 1h, 7d, 2w")
    return dt.timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def format_duration(value: dt.timedelta) -> str:
    """The shortest exact spelling: 3600s -> '1h', 5400s -> '90m', 0.5s -> '500ms'."""
    millis = round(value.total_seconds() * 1000)
    if millis % 1000:
        return f"{millis}ms"
    seconds = millis // 1000
    if seconds == 0:
        return "0s"
    for unit in ("w", "d", "h", "m"):
        if seconds % _UNITS[unit] == 0:
            return f"{seconds // int(_UNITS[unit])}{unit}"
    return f"{seconds}s"


def parse_time(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """An RFC 3339 time ('2024-05-01T08:00:00+08:00', 'Z' accepted; a bare date is midnight UTC),
    'now', or a duration meaning that long before `now`.  Always returns an aware UTC datetime."""
    now = now or utcnow()
    text = text.strip()
    if text.lower() == "now":
        return now
    if _DURATION.match(text):
        return now - parse_duration(text)
    try:
        return parse_rfc3339(text)
    except (ValueError, OverflowError):
        raise ConfigError(
            f"{text!r} is neither an RFC 3339 time nor a duration",
            hint="e.g. 24h, 7d or 2024-05-01T00:00:00Z",
        ) from None


def parse_rfc3339(text: str) -> dt.datetime:
    """RFC 3339 with 'Z' or an offset (a naive time or a bare date is UTC) -> aware UTC datetime.
    Raises ValueError (or OverflowError at the ends of the calendar) on anything else."""
    value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def as_utc(value: dt.datetime) -> dt.datetime:
    """The store returns naive UTC datetimes; make them aware."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
