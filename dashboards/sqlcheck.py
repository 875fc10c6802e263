"""Run every panel's SQL, expanded as Grafana would, on the real ClickHouse engine.

Each dashboard runs in up to three scenarios:
* ``default``: variables at their defaults (latest model versions, "All", empty keyword);
* ``filtered``: one real item's risk, category, source and language picked, plus a word of its title;
* ``hostile``: every variable set to a value full of quotes, backslashes, macros and SQL (it must
  run and match nothing, since no item has that value).

A panel passes when every variable reaches its SQL only as ``decodeURLComponent('${v:percentencode}')``
(constants aside), and its SQL runs and returns what its visualisation needs: a DateTime first
column in ascending order for time series (format 0), numbers for stats and bar charts, and at least
one row in the default and filtered scenarios.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dashboards.expand import (
    VARIABLE,
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
# Values no quoting but percent-encoding survives: ClickHouse reads \ as an escape inside '...'.
HOSTILE_VALUES: tuple[str, ...] = (
    HOSTILE_KEYWORD,
    "'",
    "\\",
    "\\'",
    "ends in a backslash \\",
    "'); DROP TABLE scored; --",
    "$__timeFilter(published_at) OR 1=1",
    "${db:raw}.alerts",
    "100% %27 %5C",
    "two\nlines\r\n",
    "{braces}",
    "舆情 · 監測 🚨",
)
_ENCODED = re.compile(r"decodeURLComponent\('\$\{(\w+):percentencode\}'\)")
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
                       picks: Mapping[str, str | Sequence[str]]) -> tuple[dict[str, VariableValue], list[str]]:
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
            text = picks.get(name, default) if scenario != "default" else default
            values[name] = VariableValue((text if isinstance(text, str) else ",".join(text),))
        elif kind in ("custom", "query"):
            try:
                if kind == "custom":
                    options = [o.strip() for o in str(var.get("query", "")).split(",") if o.strip()]
                else:
                    options = _first_column(store, expand(_variable_sql(var), current))
            except (ExpandError, StoreError) as exc:
                problems.append(f"variable ${name}: {exc}")
                options = []
            pick = picks.get(name) if scenario != "default" else None
            if not options and pick is None:  # a picked value needs no options (a hostile one has none)
                problems.append(f"variable ${name} has no options")
                options = [""]
            multi = bool(var.get("multi"))
            if pick is not None:
                values[name] = VariableValue((pick,) if isinstance(pick, str) else tuple(pick), multi=multi)
            elif multi and var.get("includeAll") and scenario in ("default", "picked"):
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
    """Variable values that select one real item: the newest one scored by every current model."""
    versions = {head: values.get(f"{head}_model") for head in ("sentiment", "risk", "category")}
    if any(v is None for v in versions.values()):
        return {}
    db = store.database
    in_range = "published_at >= {start:DateTime64(3)} AND published_at <= {end:DateTime64(3)}"

    def head(name: str, columns: str) -> str:
        return (f"SELECT id, {columns} FROM {db}.scored FINAL "
                f"WHERE task = '{name}' AND model_version = {{{name}:String}} AND {in_range}")

    rows = store.rows(
        f"""
        SELECT s.source, s.lang, r.label, c.label, x.title
        FROM ({head('sentiment', 'source, lang, published_at')}) AS s
        INNER JOIN ({head('risk', 'label')}) AS r USING id
        INNER JOIN ({head('category', 'label')}) AS c USING id
        INNER JOIN (SELECT id, title FROM {db}.items FINAL WHERE {in_range}) AS x USING id
        ORDER BY s.published_at DESC, s.id
        LIMIT 1""",
        {**{name: v.values[0] for name, v in versions.items() if v is not None}, "start": ctx.start, "end": ctx.end},
    )
    if not rows:
        return {}
    source, lang, risk, category, title = (str(v) for v in rows[0])
    return {"source": source, "lang": lang, "risk": risk, "category": category, "keyword": _keyword_of(title)}


def unsafe_references(sql: str, constants: frozenset[str]) -> list[str]:
    """Variable references that do not reach SQL as ``decodeURLComponent('${v:percentencode}')``."""
    spans = [m.span(0) for m in _ENCODED.finditer(sql)]
    found = []
    for match in VARIABLE.finditer(sql):
        name = match.group(1) or match.group(2) or match.group(4)
        if name.startswith("__") or name in constants:  # Grafana's globals and the plugin's macros; constants
            continue
        if not any(a <= match.start() and match.end() <= b for a, b in spans):
            found.append(match.group(0))
    return found


def _constants(data: Mapping[str, Any]) -> frozenset[str]:
    return frozenset(v.get("name", "") for v in data.get("templating", {}).get("list", [])
                     if v.get("type") in ("constant", "datasource"))


# -- dashboards ------------------------------------------------------------------------------
def _base_context(data: Mapping[str, Any], now: dt.datetime, span: dt.timedelta | None = None) -> QueryContext:
    if span is not None:
        start, end = now - span, now
    else:
        time_range = data.get("time") or {"from": "now-24h", "to": "now"}
        start, end = resolve_relative(time_range["from"], now), resolve_relative(time_range["to"], now)
    return QueryContext(start, end, auto_interval(start, end), {})


def _scenario(store: Store, name: str, data: Mapping[str, Any], base: QueryContext, scenario: str,
              picks: Mapping[str, str | Sequence[str]],
              resolved: tuple[dict[str, VariableValue], list[str]] | None = None,
              strict: bool = True) -> list[QueryResultCheck]:
    values, problems = resolved or _resolve_variables(store, data, base, scenario, picks)
    results = [QueryResultCheck(name, "variables", scenario, False, problem=p) for p in dict.fromkeys(problems)]
    constants = _constants(data) if strict else None
    for panel in panels_of(data):
        results.extend(_check_panel(store, name, panel, base, values, scenario, constants))
    return results


def check_dashboard(store: Store, name: str, data: Mapping[str, Any], now: dt.datetime) -> list[QueryResultCheck]:
    try:
        base = _base_context(data, now)
    except ExpandError as exc:
        return [QueryResultCheck(name, "time range", "-", False, problem=str(exc))]
    defaults = _resolve_variables(store, data, base, "default", {})
    picks = _picks(store, defaults[0], base)
    results = _scenario(store, name, data, base, "default", {}, defaults)
    variables = data.get("templating", {}).get("list", [])
    if any(v.get("name") in picks or v.get("multi") for v in variables):
        results += _scenario(store, name, data, base, "filtered", picks)
    hostile = {v.get("name", ""): HOSTILE_KEYWORD for v in variables if v.get("type") in ("query", "custom", "textbox")}
    if hostile:
        results += _scenario(store, name, data, base, "hostile", hostile)
    for var in variables:
        if unsafe := unsafe_references(_variable_sql(var), _constants(data)):
            results.append(QueryResultCheck(name, f"variable ${var.get('name')}", "-", False,
                                            problem=f"not percent-encoded: {', '.join(unsafe)}"))
    return results


def run_with(store: Store, name: str, data: Mapping[str, Any], now: dt.datetime,
             picks: Mapping[str, str | Sequence[str]], span: dt.timedelta | None = None,
             strict: bool = True) -> list[QueryResultCheck]:
    """Every panel with the given variables set (a sequence: several values picked), the others at
    their defaults (All, the latest model versions, an empty keyword), over the dashboard's time
    range or the `span` ending `now`.  ``strict=False`` runs SQL that takes variables unencoded."""
    return _scenario(store, name, data, _base_context(data, now, span), "picked", picks, strict=strict)


def _check_panel(store: Store, name: str, panel: Mapping[str, Any], base: QueryContext,
                 values: Mapping[str, VariableValue], scenario: str,
                 constants: frozenset[str] | None) -> list[QueryResultCheck]:
    """One panel's targets; `constants` None: variables need not be percent-encoded."""
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
            raw = str(target.get("rawSql", ""))
            if constants is not None and (unsafe := unsafe_references(raw, constants)):
                raise ExpandError(f"variables not percent-encoded: {', '.join(unsafe)}")
            check.sql = expand(raw, ctx)
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
