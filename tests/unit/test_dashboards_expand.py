"""Grafana variable interpolation and ClickHouse-plugin macro expansion, as the SQL check applies them."""

from __future__ import annotations

import datetime as dt
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dashboards.expand import (
    ExpandError,
    QueryContext,
    VariableValue,
    auto_interval,
    expand,
    interpolate,
    resolve_relative,
)

START = dt.datetime(2026, 11, 20, 0, 0, tzinfo=dt.UTC)
END = dt.datetime(2026, 11, 21, 0, 0, tzinfo=dt.UTC)


def ctx(**variables: VariableValue) -> QueryContext:
    return QueryContext(START, END, 300, variables)


def test_time_macros_use_unix_seconds_and_the_interval() -> None:
    sql = "SELECT $__timeInterval(published_at) AS t FROM x WHERE $__timeFilter(published_at) LIMIT $__interval_s"
    out = expand(sql, ctx())
    assert "toStartOfInterval(toDateTime(published_at), INTERVAL 300 second)" in out
    start, end = int(START.timestamp()), int(END.timestamp())
    assert f"published_at >= toDateTime({start}) AND published_at <= toDateTime({end})" in out
    assert out.endswith("LIMIT 300")


def test_other_macros() -> None:
    out = expand("$__fromTime $__toTime $__fromTime_ms $__dateFilter(d) $__timeFilter_ms(ts)", ctx())
    assert out.startswith(f"toDateTime({int(START.timestamp())}) toDateTime({int(END.timestamp())}) ")
    assert f"fromUnixTimestamp64Milli({int(START.timestamp()) * 1000})" in out
    assert "d >= toDate('2026-11-20') AND d <= toDate('2026-11-21')" in out
    assert "ts >= fromUnixTimestamp64Milli(" in out


def test_macro_arguments_may_nest_parentheses_and_quotes() -> None:
    out = expand("$__timeFilter(toDateTime(coalesce(a, 'x)')))", ctx())
    assert out.startswith("toDateTime(coalesce(a, 'x)')) >= toDateTime(")


def test_unknown_macro_and_missing_variable_are_errors() -> None:
    with pytest.raises(ExpandError, match="unknown macro"):
        expand("SELECT $__nope(x)", ctx())
    with pytest.raises(ExpandError, match="no value for variable"):
        expand("SELECT ${missing:sqlstring}", ctx())
    with pytest.raises(ExpandError, match="1 argument"):
        expand("$__timeFilter(a, b)", ctx())
    with pytest.raises(ExpandError, match="format"):
        expand("${v:bogus}", ctx(v=VariableValue(("a",))))


def test_formats_and_the_plugin_default() -> None:
    one = VariableValue(("it's",))
    many = VariableValue(("a", "b'c"), multi=True)
    assert interpolate("${v:sqlstring}", {"v": one}) == "'it''s'"
    assert interpolate("${v:sqlstring}", {"v": many}) == "'a','b''c'"
    assert interpolate("${v:raw}", {"v": one}) == "it's"
    assert interpolate("${v:csv}", {"v": many}) == "a,b'c"
    assert interpolate('${v:json}', {"v": many}) == '["a","b\'c"]'
    # without a format the ClickHouse plugin quotes lists and inserts single values as they are
    assert interpolate("$v", {"v": many}) == "'a','b'c'"
    assert interpolate("[[v]]", {"v": one}) == "it's"
    # names starting with __ belong to the plugin's macros and are left alone
    assert interpolate("$__timeFilter(x) ${db:raw}", {"db": VariableValue(("yq",))}) == "$__timeFilter(x) yq"


def test_custom_all_value_goes_in_unformatted() -> None:
    all_sources = VariableValue(("a", "b"), multi=True, all_selected=True, all_value="'__all__'")
    assert interpolate("${s:sqlstring}", {"s": all_sources}) == "'__all__'"
    # ... except for text ("All") and percentencode (Grafana's CustomAllValue formats those)
    assert interpolate("${s:text}", {"s": all_sources}) == "All"
    assert interpolate("${s:percentencode}", {"s": all_sources}) == "%27__all__%27"
    plain = VariableValue(("a", "b"), multi=True, all_selected=True, all_value="__all__")
    assert interpolate("${s:percentencode}", {"s": plain}) == "__all__"
    every = VariableValue(("a", "b"), multi=True, all_selected=True)
    assert interpolate("${s:sqlstring}", {"s": every}) == "'a','b'"
    assert interpolate("${s:percentencode}", {"s": every}) == "%7Ba%2Cb%7D"


@pytest.mark.parametrize(
    ("values", "multi", "expected"),
    [  # what Grafana's encodeURIComponentStrict gives (JavaScript), glob form for multi-value variables
        (("a b",), False, "a%20b"),
        (("!'()*",), False, "%21%27%28%29%2A"),
        (("-_.~AZaz09",), False, "-_.~AZaz09"),
        (("\\'\n",), False, "%5C%27%0A"),
        (("舆情",), False, "%E8%88%86%E6%83%85"),
        (("🚨",), False, "%F0%9F%9A%A8"),
        (("100% $__x {}",), False, "100%25%20%24__x%20%7B%7D"),
        (("a",), True, "%7Ba%7D"),
        (("a", "b,c"), True, "%7Ba%2Cb%2Cc%7D"),
        ((), True, "%7B%7D"),
    ],
)
def test_percentencode_is_grafanas(values: tuple[str, ...], multi: bool, expected: str) -> None:
    assert interpolate("${v:percentencode}", {"v": VariableValue(values, multi=multi)}) == expected


@given(values=st.lists(st.text(), min_size=1, max_size=4), multi=st.booleans())
def test_percentencode_of_any_values_decodes_to_them(values: list[str], multi: bool) -> None:
    multi = multi or len(values) > 1
    out = interpolate("${v:percentencode}", {"v": VariableValue(tuple(values), multi=multi)})
    assert set(out) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789%-_.~")
    assert unquote(out) == ("{" + ",".join(values) + "}" if multi else values[0])


@pytest.mark.parametrize(
    "keyword", ["", "油价", "it's", "x') OR 1=1 --", "\\' ; DROP TABLE t", "${db} $__fromTime 100%"]
)
def test_percentencode_cannot_leave_the_string_literal(keyword: str) -> None:
    out = expand("decodeURLComponent('${keyword:percentencode}')", ctx(keyword=VariableValue((keyword,))))
    inner = out[len("decodeURLComponent('") : -2]
    assert set(inner) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789%-_.~")
    assert unquote(inner) == keyword


def test_grafana_global_variables() -> None:
    out = expand("$__from ${__to} $__interval", ctx())
    assert out == f"{int(START.timestamp()) * 1000} {int(END.timestamp()) * 1000} 300s"


def test_relative_times_and_auto_interval() -> None:
    now = END
    assert resolve_relative("now", now) == now
    assert resolve_relative("now-7d", now) == now - dt.timedelta(days=7)
    with pytest.raises(ExpandError):
        resolve_relative("now/d", now)
    assert auto_interval(START, END) == 120  # 86.4 s rounds up to 2 minutes
    assert auto_interval(START, START + dt.timedelta(minutes=10), min_interval="1m") == 60
