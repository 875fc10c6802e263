"""Run every panel's SQL, expanded as Grafana would, on the real ClickHouse engine.

Each dashboard runs in up to three scenarios:
* ``default``: variables at their defaults (latest model versions, "All", empty keyword);
* ``filtered``: one real item's topic, source and language picked, plus a word of its title;
* ``hostile``: a keyword full of quotes, backslashes and SQL (it must run and change nothing).

A panel passes when its SQL runs and returns what its visualisation needs: a DateTime first column
in ascending order for time series (format 0), numbers for stats and bar charts, and at least one
row in the default and filtered scenarios.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from dashboards.expand import (
    ExpandError,
    QueryContext,
    VariableValue,
    auto_interval,
    expand,
    expand_macros,
    resolve_relative,
)
from dashboards.grafana import DATASOURCE_UID, FORMAT_TABLE, FORMAT_TIME_SERIES, PLUGIN_ID
from stream.core.errors import StoreError
from stream.core.store import Store

HOSTILE_KEYWORD = "x') OR 1=1 -- \\' \"; DROP TABLE scored; ${db} $__timeFilter(id) 100% 舆情"
_NUMERIC = re.compile(r"^(U?Int\d+|Float\d+|Decimal.*)$")


@dataclass
class QueryResultCheck:
    """The outcome of one panel target (or alert query) in one scenario."""

    dashboard: str
    panel: str
    scenario: str
    ok: bool
    rows: int = 0
    columns: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    problem: str | None = None
    sql: str = ""
    first_row: tuple[Any, ...] | None = None
    result_rows: list[tuple[Any, ...]] = field(default_factory=list)

    def describe(self) -> str:
        cols = ", ".join(f"{n}:{t}" for n, t in self.columns)
        status = "ok  " if self.ok else "FAIL"
        text = (f"{status} {self.dashboard} · {self.panel} [{self.scenario}] {self.rows} rows ({cols}) "
                f"{self.seconds * 1000:.0f} ms")
        return text + (f"\n       {self.problem}" if self.problem else "")


def _base_type(type_name: str) -> str:
    inner = type_name
    for wrapper in ("Nullable", "LowCardinality"):
        while inner.startswith(wrapper + "("):
            inner = inner[len(wrapper) + 1 : -1]
    return inner


def _is_numeric(type_name: str) -> bool:
    return bool(_NUMERIC.match(_base_type(type_name)))


def _is_time(type_name: str) -> bool:
    return _base_type(type_name).startswith(("DateTime", "Date"))


def panels_of(data: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside (collapsed) rows."""
    for panel in data.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def _shape_problem(panel: Mapping[str, Any], target: Mapping[str, Any], columns: list[tuple[str, str]],
                   rows: list[tuple[Any, ...]], need_rows: bool) -> str | None:
    panel_type = panel.get("type")
    fmt = target.get("format")
    if target.get("editorType") != "sql":
        return f"editorType is {target.get('editorType')!r}, expected 'sql'"
    expected_format = FORMAT_TIME_SERIES if panel_type == "timeseries" else FORMAT_TABLE
    if fmt != expected_format:
        return f"format {fmt!r} does not suit a {panel_type} panel (expected {expected_format})"
    expected_query_type = "timeseries" if fmt == FORMAT_TIME_SERIES else "table"
    if target.get("queryType") != expected_query_type:
        return f"queryType {target.get('queryType')!r}, expected {expected_query_type!r}"
    if need_rows and not rows:
        return "no rows (the panel would be empty on the demo data)"
    types = [t for _, t in columns]
    if fmt == FORMAT_TIME_SERIES:
        if not types or not _is_time(types[0]):
            return f"a time series needs a DateTime first column, got {columns[:1]}"
        if not any(_is_numeric(t) for t in types[1:]):
            return "a time series needs at least one numeric column"
        times = [r[0] for r in rows]
        if any(a > b for a, b in itertools.pairwise(times)):
            return "time column not in ascending order (the plugin's long-to-wide conversion needs ORDER BY time)"
    elif panel_type in ("stat", "bargauge", "gauge"):
        if not any(_is_numeric(t) for t in types):
            return f"a {panel_type} panel needs a numeric column"
    elif panel_type in ("barchart", "piechart"):
        x_field = (panel.get("options") or {}).get("xField")
        names = [n for n, _ in columns]
        if x_field and x_field not in names:
            return f"xField {x_field!r} is not a column ({names})"
        if not any(_is_numeric(t) for t in types):
            return f"a {panel_type} needs a numeric column"
    return None


def _run(store: Store, sql: str) -> tuple[list[tuple[str, str]], list[tuple[Any, ...]]]:
    result = store.query(sql)
    rows = [tuple(r) for r in result.result_rows]
    columns = [(str(n), str(t.name)) for n, t in zip(result.column_names, result.column_types, strict=True)]
    if not rows and not columns:  # an empty result may come without a header: ask for the types
        columns = [(str(r[0]), str(r[1])) for r in store.rows(f"DESCRIBE ({sql})")]
    return columns, rows


def _first_column(store: Store, sql: str) -> list[str]:
    _, rows = _run(store, sql)
    return [str(r[0]) for r in rows]


# -- variables -------------------------------------------------------------------------------
def _variable_sql(var: Mapping[str, Any]) -> str:
    query = var.get("query")
    if isinstance(query, dict):
        return str(query.get("rawSql") or query.get("query") or "")
    return str(query or "")


def _resolve_variables(store: Store, data: Mapping[str, Any], ctx: QueryContext, scenario: str,
                       picks: Mapping[str, str]) -> tuple[dict[str, VariableValue], list[str]]:
    """Variables in dashboard order (later ones may use earlier ones), as `scenario` sets them."""
    values: dict[str, VariableValue] = {}
    problems: list[str] = []
    for var in data.get("templating", {}).get("list", []):
        name, kind = var.get("name", ""), var.get("type")
        current = QueryContext(ctx.start, ctx.end, ctx.interval_s, values)
        if kind == "datasource":
            values[name] = VariableValue((DATASOURCE_UID,))
        elif kind == "constant":
            values[name] = VariableValue((store.database if name == "db" else str(var.get("query", "")),))
        elif kind == "textbox":
            default = str(var.get("query") or "")
            values[name] = VariableValue((picks.get(name, default) if scenario != "default" else default,))
        elif kind in ("custom", "query"):
            try:
                if kind == "custom":
                    options = [o.strip() for o in str(var.get("query", "")).split(",") if o.strip()]
                else:
                    options = _first_column(store, expand(_variable_sql(var), current))
            except (ExpandError, StoreError) as exc:
                problems.append(f"variable ${name}: {exc}")
                options = []
            if not options:
                problems.append(f"variable ${name} has no options")
                options = [""]
            multi = bool(var.get("multi"))
            pick = picks.get(name) if scenario != "default" else None
            if pick is not None:
                values[name] = VariableValue((pick,), multi=multi)
            elif multi and var.get("includeAll") and scenario == "default":
                values[name] = VariableValue(tuple(options), multi=True, all_selected=True,
                                             all_value=var.get("allValue") or None)
            else:
                values[name] = VariableValue((options[0],), multi=multi)
    return values, problems


def _keyword_of(title: str) -> str:
    """A word of a title: its longest Latin word, else its first two CJK characters."""
    words = sorted(re.findall(r"[A-Za-z]{4,}", title), key=len, reverse=True)
    if words:
        return words[0].upper()  # upper case: the filter must be case-insensitive
    cjk = re.findall(r"[\u4e00-\u9fff]{2}", title)
    return cjk[0] if cjk else title[:3]


def _picks(store: Store, values: Mapping[str, VariableValue], ctx: QueryContext) -> dict[str, str]:
    """Variable values that select one real item: the newest one scored by both current models."""
    sentiment = values.get("sentiment_model")
    topic = values.get("topic_model")
    if sentiment is None or topic is None:
        return {}
    db = store.database
    rows = store.rows(
        f"""
        SELECT s.source, s.lang, t.label, s.title
        FROM (SELECT id, source, lang, title, published_at FROM {db}.scored FINAL
              WHERE task = 'sentiment' AND model_version = {{sv:String}}
                AND published_at >= {{start:DateTime64(3)}} AND published_at <= {{end:DateTime64(3)}}) AS s
        INNER JOIN (SELECT id, label FROM {db}.scored FINAL
                    WHERE task = 'topic' AND model_version = {{tv:String}}) AS t USING id
        ORDER BY s.published_at DESC
        LIMIT 1""",
        {"sv": sentiment.values[0], "tv": topic.values[0], "start": ctx.start, "end": ctx.end},
    )
    if not rows:
        return {}
    source, lang, topic_label, title = (str(v) for v in rows[0])
    return {"source": source, "lang": lang, "topic": topic_label, "keyword": _keyword_of(title)}


# -- dashboards ------------------------------------------------------------------------------
def check_dashboard(store: Store, name: str, data: Mapping[str, Any], now: dt.datetime) -> list[QueryResultCheck]:
    time_range = data.get("time") or {"from": "now-24h", "to": "now"}
    try:
        start = resolve_relative(time_range["from"], now)
        end = resolve_relative(time_range["to"], now)
    except ExpandError as exc:
        return [QueryResultCheck(name, "time range", "-", False, problem=str(exc))]
    base = QueryContext(start, end, auto_interval(start, end), {})
    has_textbox = any(v.get("type") == "textbox" for v in data.get("templating", {}).get("list", []))
    results: list[QueryResultCheck] = []
    defaults, problems = _resolve_variables(store, data, base, "default", {})
    picks = _picks(store, defaults, base)
    scenarios: list[tuple[str, dict[str, str]]] = [("default", {})]
    variables = data.get("templating", {}).get("list", [])
    if any(v.get("name") in picks or v.get("multi") for v in variables):
        scenarios.append(("filtered", picks))
    if has_textbox:
        scenarios.append(("hostile", {**picks, "keyword": HOSTILE_KEYWORD}))
    for scenario, scenario_picks in scenarios:
        if scenario == "default":
            values = defaults
        else:
            values, more = _resolve_variables(store, data, base, scenario, scenario_picks)
            problems += more
        for problem in dict.fromkeys(problems):
            results.append(QueryResultCheck(name, "variables", scenario, False, problem=problem))
        problems = []
        for panel in panels_of(data):
            results.extend(_check_panel(store, name, panel, base, values, scenario))
    return results


def _check_panel(store: Store, name: str, panel: Mapping[str, Any], base: QueryContext,
                 values: Mapping[str, VariableValue], scenario: str) -> list[QueryResultCheck]:
    label = f"#{panel.get('id', '?')} {panel.get('title', '(untitled)')}"
    out: list[QueryResultCheck] = []
    targets = [t for t in panel.get("targets", []) if not t.get("hide")]
    if panel.get("type") not in ("text", "news", "dashlist") and not targets:
        return [QueryResultCheck(name, label, scenario, False, problem="panel has no query")]
    datasource = panel.get("datasource") or {}
    for target in targets:
        source = target.get("datasource") or datasource
        if source.get("type") != PLUGIN_ID:
            out.append(QueryResultCheck(name, label, scenario, False,
                                        problem=f"datasource {source!r} is not the ClickHouse plugin"))
            continue
        interval = auto_interval(base.start, base.end, int(panel.get("maxDataPoints") or 1000), panel.get("interval"))
        ctx = QueryContext(base.start, base.end, interval, values)
        ref = f" ({target.get('refId')})" if len(targets) > 1 else ""
        check = QueryResultCheck(name, label + ref, scenario, False)
        started = time.perf_counter()
        try:
            check.sql = expand(str(target.get("rawSql", "")), ctx)
            check.columns, rows = _run(store, check.sql)
        except (ExpandError, StoreError) as exc:
            check.problem = str(exc)
        else:
            check.rows, check.result_rows = len(rows), rows[:1000]
            check.first_row = rows[0] if rows else None
            check.problem = _shape_problem(panel, target, check.columns, rows, need_rows=scenario != "hostile")
            check.ok = check.problem is None
        check.seconds = time.perf_counter() - started
        out.append(check)
    return out


# -- alert rules -----------------------------------------------------------------------------
def check_alert_rules(store: Store, document: Mapping[str, Any], built_database: str,
                      now: dt.datetime) -> list[QueryResultCheck]:
    """Run each Grafana alert rule's ClickHouse query over its relative time range ending `now`.

    Alert SQL names the database it was built for; here that name is mapped onto the check's store.
    A rule's query must return one numeric column (the value) plus string label columns.
    """
    results: list[QueryResultCheck] = []
    rename = re.compile(rf"\b{re.escape(built_database)}\.")
    for group in document.get("groups", []):
        for rule in group.get("rules", []):
            for query in rule.get("data", []):
                if query.get("datasourceUid") == "__expr__":
                    continue
                label = f"{rule.get('title', rule.get('uid'))} ({query.get('refId')})"
                check = QueryResultCheck("alert rules", label, "now", False)
                if query.get("datasourceUid") != DATASOURCE_UID:
                    check.problem = f"datasourceUid {query.get('datasourceUid')!r} is not {DATASOURCE_UID!r}"
                    results.append(check)
                    continue
                span = query.get("relativeTimeRange", {})
                ctx = QueryContext(now - dt.timedelta(seconds=int(span.get("from", 3600))),
                                   now - dt.timedelta(seconds=int(span.get("to", 0))),
                                   int(query.get("model", {}).get("intervalMs", 60000)) // 1000, {})
                started = time.perf_counter()
                try:
                    sql = str(query.get("model", {}).get("rawSql", ""))
                    if "${" in sql or re.search(r"\$(?!__)\w", sql):
                        raise ExpandError("alert queries cannot use dashboard variables")
                    check.sql = expand_macros(rename.sub(f"{store.database}.", sql), ctx)
                    check.columns, rows = _run(store, check.sql)
                except (ExpandError, StoreError) as exc:
                    check.problem = str(exc)
                else:
                    check.rows, check.result_rows = len(rows), rows
                    check.first_row = rows[0] if rows else None
                    numeric = [n for n, t in check.columns if _is_numeric(t)]
                    others = [n for n, t in check.columns if not _is_numeric(t) and _base_type(t) != "String"]
                    if len(numeric) != 1 or others:
                        check.problem = f"needs exactly one numeric column and string labels, got {check.columns}"
                    elif not rows:
                        check.problem = "no rows"
                    check.ok = check.problem is None
                check.seconds = time.perf_counter() - started
                results.append(check)
    return results
