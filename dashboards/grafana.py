"""Glue between grafana-foundation-sdk and the ClickHouse datasource plugin.

The SDK has no builder for the ClickHouse plugin's queries, so `SqlQuery` is one: a raw-SQL target
(``editorType: "sql"``) with the plugin's ``format`` (0 time series, 1 table) and ``queryType``.
Panels point at the ``$datasource`` variable, whose default is the provisioned datasource uid.
"""

from __future__ import annotations

import json
from typing import Any

from grafana_foundation_sdk.builders import barchart, dashboard, stat, table, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

from dashboards.queries import ALL, latest_versions

PLUGIN_ID = "grafana-clickhouse-datasource"
DATASOURCE_UID = "yuqing-clickhouse"
DATASOURCE_NAME = "yuqing ClickHouse"
FORMAT_TIME_SERIES = 0
FORMAT_TABLE = 1

SENTIMENT_COLORS = {"negative": "red", "positive": "green", "neutral": "blue"}


class SqlQuery(cogvariants.Dataquery):
    """One raw-SQL target of the ClickHouse plugin."""

    def __init__(self, sql: str, *, fmt: int, ref_id: str = "A") -> None:
        self.sql = sql.strip()
        self.fmt = fmt
        self.ref_id = ref_id

    def to_json(self) -> dict[str, object]:
        return {
            "refId": self.ref_id,
            "datasource": datasource_json(),
            "editorType": "sql",
            "format": self.fmt,
            "queryType": "timeseries" if self.fmt == FORMAT_TIME_SERIES else "table",
            "rawSql": self.sql,
        }


class Sql(cogbuilder.Builder[SqlQuery]):
    def __init__(self, sql: str, *, fmt: int, ref_id: str = "A") -> None:
        self._query = SqlQuery(sql, fmt=fmt, ref_id=ref_id)

    def build(self) -> SqlQuery:
        return self._query


def datasource_ref() -> model.DataSourceRef:
    return model.DataSourceRef(type_val=PLUGIN_ID, uid="${datasource}")


def datasource_json() -> dict[str, object]:
    return {"type": PLUGIN_ID, "uid": "${datasource}"}


# -- variables -------------------------------------------------------------------------------
def datasource_variable() -> dashboard.DatasourceVariable:
    return (
        dashboard.DatasourceVariable("datasource")
        .label("Data source")
        .type(PLUGIN_ID)
        .current(model.VariableOption(selected=True, text=DATASOURCE_NAME, value=DATASOURCE_UID))
    )


def database_constant(database: str) -> dashboard.ConstantVariable:
    """The ClickHouse database holding the yuqing tables (hidden; set by `yuqing dashboards build`)."""
    return dashboard.ConstantVariable("db").value(database)


def model_variable(task: str) -> dashboard.QueryVariable:
    """The `<task>_model` variable: the task's model versions, newest first (the default)."""
    title = task.capitalize()
    return sql_variable(f"{task}_model", f"{title} model", latest_versions(task),
                        description=f"{title} model version (default: the latest).")


def sql_variable(name: str, label: str, sql: str, *, multi: bool = False, all_value: str | None = None,
                 description: str | None = None, per_time_range: bool = False) -> dashboard.QueryVariable:
    """A variable whose options are the first column of `sql` (the plugin shows a second column, when
    there is one, as each option's text); `per_time_range`: re-read when the time range changes.

    Multi-value variables get an "All" option with the custom value ``__all__`` (Grafana formats a
    custom all value only for ``text`` and ``percentencode``, which leaves it as is), so queries
    test for it (`dashboards.queries.in_selection`) instead of receiving every option.
    """
    sql = sql.strip()
    query: dict[str, object] = {"refId": f"var-{name}", "queryType": "sql", "editorType": "sql", "rawSql": sql}
    var = (
        dashboard.QueryVariable(name)
        .label(label)
        .datasource(datasource_ref())
        .query(query)
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED if per_time_range
                 else model.VariableRefresh.ON_DASHBOARD_LOAD)
        .sort(model.VariableSort.DISABLED)
        .multi(multi)
        .include_all(multi)
    )
    if multi:
        var = var.all_value(all_value or ALL)
    if description:
        var = var.description(description)
    return var


def textbox_variable(name: str, label: str, description: str) -> dashboard.TextBoxVariable:
    return dashboard.TextBoxVariable(name).label(label).description(description).default_value("")


# -- panels ----------------------------------------------------------------------------------
def _legend(placement: str = "bottom", *, as_table: bool = False, calcs: list[str] | None = None,
            show: bool = True) -> common_builders.VizLegendOptions:
    return (
        common_builders.VizLegendOptions()
        .show_legend(show)
        .display_mode(common.LegendDisplayMode.TABLE if as_table else common.LegendDisplayMode.LIST)
        .placement(common.LegendPlacement(placement))
        .calcs(calcs or [])
    )


def _tooltip() -> common_builders.VizTooltipOptions:
    return common_builders.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI).sort(common.SortOrder.DESCENDING)


def _thresholds(*steps: tuple[float | None, str]) -> dashboard.ThresholdsConfig:
    return (
        dashboard.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=v, color=c) for v, c in steps])
    )


def color_by_name(name: str, color: str) -> tuple[str, list[model.DynamicConfigValue]]:
    return name, [model.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": color})]


def timeseries_panel(title: str, sql: str, *, description: str, unit: str = "short", bars: bool = False,
                     stacked: bool = False, min_interval: str | None = None, display_name: str | None = None,
                     colors: dict[str, str] | None = None) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(datasource_ref())
        .with_target(Sql(sql, fmt=FORMAT_TIME_SERIES))
        .unit(unit)
        .legend(_legend())
        .tooltip(_tooltip())
        .draw_style(common.GraphDrawStyle.BARS if bars else common.GraphDrawStyle.LINE)
        .fill_opacity(70 if bars else 12)
        .line_width(1)
        .show_points(common.VisibilityMode.NEVER)
        .stacking(common_builders.StackingConfig().mode(
            common.StackingMode.NORMAL if stacked else common.StackingMode.NONE))
        .thresholds(_thresholds((None, "green")))
        .color_scheme(dashboard.FieldColor().mode(model.FieldColorModeId.PALETTE_CLASSIC))
    )
    if min_interval:
        panel = panel.interval(min_interval)
    if display_name:
        panel = panel.display_name(display_name)
    for name, color in (colors or {}).items():
        panel = panel.override_by_name(*color_by_name(name, color))
    return panel


def table_panel(title: str, sql: str, *, description: str,
                widths: dict[str, int] | None = None, units: dict[str, str] | None = None,
                links: dict[str, dict[str, str]] | None = None, null_text: dict[str, str] | None = None) -> table.Panel:
    """A table; `links`: column -> data link ({"title", "url"}); `null_text`: column -> what a NULL shows."""
    panel = (
        table.Panel()
        .title(title)
        .description(description)
        .datasource(datasource_ref())
        .with_target(Sql(sql, fmt=FORMAT_TABLE))
        .show_header(True)
        .cell_height(common.TableCellHeight.SM)
        .footer(common_builders.TableFooterOptions().show(False).reducer(["sum"]).count_rows(False))
        .filterable(True)
        .cell_options(common.TableAutoCellOptions(wrap_text=False))
        .thresholds(_thresholds((None, "text")))
    )
    for name, width in (widths or {}).items():
        panel = panel.override_by_name(name, [model.DynamicConfigValue(id_val="custom.width", value=width)])
    for name, unit in (units or {}).items():
        panel = panel.override_by_name(name, [model.DynamicConfigValue(id_val="unit", value=unit)])
    for name, link in (links or {}).items():
        panel = panel.override_by_name(name, [model.DynamicConfigValue(id_val="links", value=[link])])
    for name, text in (null_text or {}).items():
        mapping = {"type": "special", "options": {"match": "null", "result": {"text": text}}}
        panel = panel.override_by_name(name, [model.DynamicConfigValue(id_val="mappings", value=[mapping])])
    return panel


def stat_panel(title: str, sql: str, *, description: str, unit: str = "short",
               thresholds: tuple[tuple[float | None, str], ...] = ((None, "blue"),),
               decimals: int | None = None) -> stat.Panel:
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(datasource_ref())
        .with_target(Sql(sql, fmt=FORMAT_TABLE))
        .unit(unit)
        .graph_mode(common.BigValueGraphMode.NONE)
        .color_mode(common.BigValueColorMode.VALUE)
        .text_mode(common.BigValueTextMode.VALUE)
        .justify_mode(common.BigValueJustifyMode.AUTO)
        .orientation(common.VizOrientation.AUTO)
        .reduce_options(common_builders.ReduceDataOptions().values(False).calcs(["lastNotNull"]).fields(""))
        .wide_layout(True)
        .show_percent_change(False)
        .thresholds(_thresholds(*thresholds))
        .color_scheme(dashboard.FieldColor().mode(model.FieldColorModeId.THRESHOLDS))
    )
    if decimals is not None:
        panel = panel.decimals(decimals)
    return panel


def barchart_panel(title: str, sql: str, *, description: str, x_field: str, unit: str = "short",
                   stacked: bool = False, horizontal: bool = True, colors: dict[str, str] | None = None,
                   max_value: float | None = None) -> barchart.Panel:
    panel = (
        barchart.Panel()
        .title(title)
        .description(description)
        .datasource(datasource_ref())
        .with_target(Sql(sql, fmt=FORMAT_TABLE))
        .x_field(x_field)
        .orientation(common.VizOrientation.HORIZONTAL if horizontal else common.VizOrientation.VERTICAL)
        .stacking(common.StackingMode.NORMAL if stacked else common.StackingMode.NONE)
        .show_value(common.VisibilityMode.AUTO)
        .bar_width(0.8)
        .group_width(0.7)
        .x_tick_label_rotation(0)
        .x_tick_label_spacing(0)
        .legend(_legend(show=stacked))
        .tooltip(_tooltip())
        .fill_opacity(80)
        .line_width(1)
        .gradient_mode(common.GraphGradientMode.NONE)
        .unit(unit)
        .thresholds(_thresholds((None, "green")))
        .color_scheme(dashboard.FieldColor().mode(model.FieldColorModeId.PALETTE_CLASSIC))
    )
    if max_value is not None:
        panel = panel.min(0).max(max_value)
    for name, color in (colors or {}).items():
        panel = panel.override_by_name(*color_by_name(name, color))
    return panel


def new_dashboard(uid: str, title: str, *, description: str, tags: list[str], time_from: str,
                  refresh: str = "1m") -> dashboard.Dashboard:
    return (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["yuqing", *tags])
        .timezone("browser")
        .time(time_from, "now")
        .refresh(refresh)
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .editable()
    )


def as_json(builder: dashboard.Dashboard) -> dict[str, Any]:
    """The dashboard as plain JSON data (what Grafana stores and the checks read)."""

    data: dict[str, Any] = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    # The SDK writes interval-variable settings on every variable; Grafana's schema has them on none.
    for var in data.get("templating", {}).get("list", []):
        for key in ("auto", "auto_min", "auto_count"):
            var.pop(key, None)
    # Stable panel ids keep links and Grafana's per-panel state valid across rebuilds.
    for number, panel in enumerate(data.get("panels", []), start=1):
        panel.setdefault("id", number)
    return data
