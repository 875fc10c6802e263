"""Turn a panel's SQL into what ClickHouse finally runs, the way Grafana and the plugin do.

Two steps, in Grafana's order:
1. Template variables (Grafana's template service, in the browser): ``$var``, ``${var}``,
   ``${var:format}``, ``[[var]]``.  Without a format the ClickHouse plugin's own formatter applies
   (a list becomes ``'a','b'``, a single value is inserted as is).  A custom "All" value is inserted
   unformatted, as Grafana does, except for ``text`` ("All") and ``percentencode`` (encoded).
   ``percentencode`` of a multi-value variable is the glob ``{a,b}`` percent-encoded.
2. The plugin's macros (its Go backend): ``$__timeFilter(col)``, ``$__timeFilter_ms(col)``,
   ``$__dateFilter(col)``, ``$__dateTimeFilter(d, t)``/``$__dt``, ``$__timeInterval(col)``,
   ``$__timeInterval_ms(col)``, ``$__interval_s``, ``$__fromTime``, ``$__toTime`` and their ``_ms`` forms.

Anything left that looks like a variable or macro is an error: the SQL would not run in Grafana.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote

from stream.core.errors import YuqingError

ALL = "$__all"


class ExpandError(YuqingError):
    """A panel's SQL uses a variable, format or macro that cannot be expanded."""


@dataclass(frozen=True)
class VariableValue:
    """The current value of a template variable.

    ``values`` holds one value for single-value variables; ``all_selected`` with an ``all_value``
    is Grafana's custom "All"; without one, "All" means every option (in ``values``).
    """

    values: tuple[str, ...]
    multi: bool = False
    all_selected: bool = False
    all_value: str | None = None


@dataclass(frozen=True)
class QueryContext:
    start: dt.datetime
    end: dt.datetime
    interval_s: int
    variables: Mapping[str, VariableValue]


# Grafana's template-service pattern: $var | [[var(:fmt)]] | ${var(.fieldPath)(:fmt)}
VARIABLE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^}]+))?(?::([^}]+))?\}")
_MACRO = re.compile(r"\$__(\w+)")


def _strict_uri(value: str) -> str:
    """Grafana's encodeURIComponentStrict: encodeURIComponent, then !'()* as %XX too (UTF-8 bytes)."""
    return quote(value, safe="-_.~")


def _format(values: Sequence[str], multi: bool, fmt: str | None) -> str:
    listy = multi or len(values) != 1
    one = values[0] if values else ""
    formatters: dict[str, Callable[[], str]] = {
        "raw": lambda: ",".join(values) if listy else one,
        "text": lambda: " + ".join(values) if listy else one,
        "csv": lambda: ",".join(values),
        "sqlstring": lambda: ",".join("'" + v.replace("'", "''") + "'" for v in values),
        "singlequote": lambda: ",".join("'" + v.replace("'", "\\'") + "'" for v in values),
        "doublequote": lambda: ",".join('"' + v.replace('"', '\\"') + '"' for v in values),
        "pipe": lambda: "|".join(values),
        "json": lambda: json.dumps(list(values) if listy else one, ensure_ascii=False, separators=(",", ":")),
        "percentencode": lambda: _strict_uri("{" + ",".join(values) + "}" if listy else one),
    }
    if fmt is None:  # the ClickHouse plugin's default: a list is quoted and joined, a value goes in as is
        return "'" + "','".join(values) + "'" if listy else one
    if fmt not in formatters:
        raise ExpandError(f"unsupported variable format {fmt!r}")
    return formatters[fmt]()


def interpolate(sql: str, variables: Mapping[str, VariableValue]) -> str:
    """Step 1: template variables; names starting with '__' that are not given are left for step 2."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(4)
        fmt = match.group(3) or match.group(6)
        if match.group(5):
            raise ExpandError(f"field paths (${{{name}.{match.group(5)}}}) are not supported")
        var = variables.get(name)
        if var is None:
            if name.startswith("__"):  # a plugin macro (step 2)
                return match.group(0)
            raise ExpandError(f"no value for variable ${name}")
        if var.all_selected and var.all_value is not None:
            # Grafana's CustomAllValue: "All" for text, the value percent-encoded for percentencode,
            # else the value as is (unformatted: the dashboard's own SQL).
            if fmt == "text":
                return "All"
            return _strict_uri(var.all_value) if fmt == "percentencode" else var.all_value
        return _format(var.values, var.multi, fmt)

    return VARIABLE.sub(replace, sql)


def _args(sql: str, open_at: int) -> tuple[list[str], int]:
    """Arguments of a macro call whose '(' is at `open_at`; returns them and the index after ')'."""
    depth, quote_char, start, args = 0, "", open_at + 1, []
    for i in range(open_at, len(sql)):
        ch = sql[i]
        if quote_char:
            if ch == quote_char and sql[i - 1] != "\\":
                quote_char = ""
            continue
        if ch in "'\"`":
            quote_char = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                args.append(sql[start:i].strip())
                return [a for a in args if a != ""], i + 1
        elif ch == "," and depth == 1:
            args.append(sql[start:i].strip())
            start = i + 1
    raise ExpandError("unbalanced parentheses in a macro call")


def expand_macros(sql: str, ctx: QueryContext) -> str:
    """Step 2: the ClickHouse plugin's macros, with the context's time range and interval."""
    start_s, end_s = int(ctx.start.timestamp()), int(ctx.end.timestamp())
    start_ms, end_ms = int(ctx.start.timestamp() * 1000), int(ctx.end.timestamp() * 1000)
    interval_s = max(ctx.interval_s, 1)

    def dt_s(seconds: int) -> str:
        return f"toDateTime({seconds})"

    def dt_ms(ms: int) -> str:
        return f"fromUnixTimestamp64Milli({ms})"

    def date(value: dt.datetime) -> str:
        return f"toDate('{value.astimezone(dt.UTC):%Y-%m-%d}')"

    def one(name: str, args: list[str]) -> str:
        if len(args) != 1:
            raise ExpandError(f"$__{name} takes 1 argument, got {len(args)}")
        return args[0]

    with_args: dict[str, Callable[[list[str]], str]] = {
        "timeFilter": lambda a: f"{one('timeFilter', a)} >= {dt_s(start_s)} AND {a[0]} <= {dt_s(end_s)}",
        "timeFilter_ms": lambda a: f"{one('timeFilter_ms', a)} >= {dt_ms(start_ms)} AND {a[0]} <= {dt_ms(end_ms)}",
        "dateFilter": lambda a: f"{one('dateFilter', a)} >= {date(ctx.start)} AND {a[0]} <= {date(ctx.end)}",
        "timeInterval": lambda a: f"toStartOfInterval(toDateTime({one('timeInterval', a)}), "
                                  f"INTERVAL {interval_s} second)",
        "timeInterval_ms": lambda a: f"toStartOfInterval(toDateTime64({one('timeInterval_ms', a)}, 3), "
                                     f"INTERVAL {interval_s * 1000} millisecond)",
    }

    def date_time_filter(a: list[str]) -> str:
        if len(a) != 2:
            raise ExpandError(f"$__dateTimeFilter takes 2 arguments, got {len(a)}")
        return (f"({a[0]} >= {date(ctx.start)} AND {a[0]} <= {date(ctx.end)}) AND "
                f"({a[1]} >= {dt_s(start_s)} AND {a[1]} <= {dt_s(end_s)})")

    with_args["dateTimeFilter"] = with_args["dt"] = date_time_filter
    plain: dict[str, str] = {
        "interval_s": str(interval_s),
        "fromTime": dt_s(start_s),
        "toTime": dt_s(end_s),
        "fromTime_ms": dt_ms(start_ms),
        "toTime_ms": dt_ms(end_ms),
    }

    out, pos = [], 0
    for match in _MACRO.finditer(sql):
        if match.start() < pos:
            continue
        name = match.group(1)
        out.append(sql[pos : match.start()])
        after = match.end()
        if name in with_args and after < len(sql) and sql[after] == "(":
            args, pos = _args(sql, after)
            out.append(with_args[name](args))
        elif name in plain:
            out.append(plain[name])
            pos = after
        else:
            raise ExpandError(f"unknown macro $__{name}")
    out.append(sql[pos:])
    return "".join(out)


def global_variables(ctx: QueryContext) -> dict[str, VariableValue]:
    """Grafana's built-in variables for the context's range and interval."""
    start_ms, end_ms = int(ctx.start.timestamp() * 1000), int(ctx.end.timestamp() * 1000)
    one = lambda v: VariableValue((str(v),))  # noqa: E731
    return {
        "__from": one(start_ms),
        "__to": one(end_ms),
        "__interval_ms": one(ctx.interval_s * 1000),
        "__interval": one(f"{ctx.interval_s}s"),
        "__range_s": one((end_ms - start_ms) // 1000),
        "__range_ms": one(end_ms - start_ms),
    }


def expand(sql: str, ctx: QueryContext) -> str:
    """Both steps; raises ExpandError for a variable without value, a bad format or an unknown macro."""
    return expand_macros(interpolate(sql, {**global_variables(ctx), **ctx.variables}), ctx)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> int:
    """'30s', '5m', '1h', '7d' -> seconds."""
    match = re.fullmatch(r"(\d+)([smhdw])", text.strip())
    if not match:
        raise ExpandError(f"cannot read duration {text!r}")
    return int(match.group(1)) * _UNITS[match.group(2)]


def resolve_relative(text: str, now: dt.datetime) -> dt.datetime:
    """Grafana's 'now' and 'now-6h' style times (no rounding suffixes)."""
    text = text.strip()
    if text == "now":
        return now
    match = re.fullmatch(r"now-(\d+[smhdw])", text)
    if not match:
        raise ExpandError(f"cannot read dashboard time {text!r}")
    return now - dt.timedelta(seconds=parse_duration(match.group(1)))


# Grafana rounds the automatic interval up to one of these.
_NICE = (1, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


def auto_interval(start: dt.datetime, end: dt.datetime, max_points: int = 1000, min_interval: str | None = None) -> int:
    """About Grafana's $__interval: range / data points, rounded to a nice step, at least `min_interval`."""
    raw = max((end - start).total_seconds() / max_points, 1)
    nice = next((step for step in _NICE if step >= raw), _NICE[-1])
    return max(nice, parse_duration(min_interval) if min_interval else 1)
