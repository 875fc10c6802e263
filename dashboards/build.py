"""Build every artifact from code: dashboard JSON, alert rules, and the TypeScript the schema check compiles.

`yuqing dashboards build` writes the JSON and the alert rules (committed: compose mounts them);
`yuqing dashboards check` rebuilds them in memory and fails when the committed files differ (someone
edited the JSON by hand, or forgot to rebuild). The TypeScript modules are never written here: the
schema check renders fresh ones into a short-lived folder (see typecheck.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dashboards import alert_rules, drilldown, overview, pipeline, story

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
GENERATED_DIR = PACKAGE_DIR / "generated"
SCHEMA_CHECK_DIR = PACKAGE_DIR / "schema_check"
# Alert rules live with the repository's Grafana provisioning (absent from an installed package).
ALERTS_FILE: Path | None = (
    REPO_ROOT / "deploy" / "grafana" / "provisioning" / "alerting" / "yuqing-alerts.yaml"
    if (REPO_ROOT / "deploy").is_dir()
    else None
)
DEFAULT_DATABASE = "yuqing"

DASHBOARDS: dict[str, Callable[[str], dict[str, Any]]] = {
    overview.UID: overview.build,
    drilldown.UID: drilldown.build,
    pipeline.UID: pipeline.build,
    story.UID: story.build,
}

# Panel type -> module of @grafana/schema with its Options (and FieldConfig where the plugin has one).
PANEL_SCHEMAS: dict[str, tuple[str, bool]] = {
    "timeseries": ("timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen.js", True),
    "table": ("table/panelcfg/x/TablePanelCfg_types.gen.js", True),
    "stat": ("stat/panelcfg/x/StatPanelCfg_types.gen.js", False),
    "barchart": ("barchart/panelcfg/x/BarChartPanelCfg_types.gen.js", True),
    "piechart": ("piechart/panelcfg/x/PieChartPanelCfg_types.gen.js", True),
    "bargauge": ("bargauge/panelcfg/x/BarGaugePanelCfg_types.gen.js", False),
    "text": ("text/panelcfg/x/TextPanelCfg_types.gen.js", False),
}


def dashboard_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


@dataclass(frozen=True)
class Region:
    """Lines [first, last] (1-based) of the .ts file that hold one literal, for error reports."""

    first: int
    last: int
    label: str


@dataclass(frozen=True)
class TsModule:
    text: str
    regions: list[Region] = field(default_factory=list)

    def where(self, line: int) -> str:
        """The innermost region holding `line` (panels sit after the dashboard literal)."""
        hits = [r for r in self.regions if r.first <= line <= r.last]
        return hits[-1].label if hits else "file"


def _ident(panel_type: str) -> str:
    return "p_" + re.sub(r"\W", "_", panel_type)


def render_ts(data: dict[str, Any], source_name: str) -> TsModule:
    """A TypeScript module that assigns the dashboard JSON to @grafana/schema types.

    The whole dashboard is checked against ``Dashboard``; then each panel again against its plugin's
    ``Options`` and ``FieldConfig`` (the Dashboard type leaves panel options open).
    """
    panels = [p for p in data.get("panels", []) if isinstance(p, dict)]
    types = sorted({p.get("type", "") for p in panels if p.get("type") in PANEL_SCHEMAS})
    lines = [
        f"// Rendered by `yuqing dashboards check` from {source_name} for tsc, then removed.",
        "// tsc checks the dashboard against @grafana/schema's Dashboard type, then each panel against",
        "// its plugin's Options and FieldConfig types.",
        'import type { Dashboard } from "@grafana/schema";',
    ]
    for panel_type in types:
        module = PANEL_SCHEMAS[panel_type][0]
        lines.append(f'import type * as {_ident(panel_type)} from "@grafana/schema/dist/esm/raw/composable/{module}";')
    lines.append('import type { PanelOf, Wire } from "../wire";')
    lines.append("")
    regions: list[Region] = []

    def literal(head: str, value: Any, label: str) -> None:
        body = json.dumps(value, indent=2, ensure_ascii=False).splitlines()
        first = len(lines) + 1
        lines.append(f"{head} {body[0]}")
        lines.extend(body[1:])
        lines[-1] += ";"
        regions.append(Region(first, len(lines), label))

    literal("export const dashboard: Wire<Dashboard> =", data, "dashboard")
    for index, panel in enumerate(panels, start=1):
        panel_type = panel.get("type", "")
        title = panel.get("title", "")
        lines.append("")
        lines.append(f"// panel {index}: {json.dumps(title, ensure_ascii=False)} ({panel_type})")
        if panel_type in PANEL_SCHEMAS:
            ns = _ident(panel_type)
            field_config = f"{ns}.FieldConfig" if PANEL_SCHEMAS[panel_type][1] else "Record<string, unknown>"
            target = f"Wire<PanelOf<{ns}.Options, {field_config}>>"
        else:
            target = "Wire<PanelOf<Record<string, unknown>, Record<string, unknown>>>"
        literal(f"export const panel{index}: {target} =", panel, f"panel {index} {title!r} ({panel_type})")
    return TsModule("\n".join(lines) + "\n", regions)


class _Literal(str):
    """A multi-line string written as a YAML block."""


def _literal_block(dumper: yaml.SafeDumper, value: _Literal) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Literal, _literal_block)


def _blocks(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _blocks(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_blocks(v) for v in value]
    if isinstance(value, str) and "\n" in value:
        return _Literal(value)
    return value


def alert_rules_yaml(database: str) -> str:
    doc = alert_rules.provisioning(database)
    header = (
        "# Generated by `yuqing dashboards build` (dashboards/alert_rules.py); do not edit.\n"
        "# Grafana-managed twins of yuqing's default alert rules; `yuqing dashboards check` runs their SQL.\n"
    )
    return header + yaml.dump(_blocks(doc), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120)


def artifacts(database: str = DEFAULT_DATABASE, *, out_dir: Path = GENERATED_DIR,
              alerts_file: Path | None = ALERTS_FILE) -> dict[Path, str]:
    """Every file `build` writes, path -> content."""
    files: dict[Path, str] = {}
    for uid, build in DASHBOARDS.items():
        files[out_dir / f"{uid}.json"] = dashboard_json(build(database))
    if alerts_file is not None:
        files[alerts_file] = alert_rules_yaml(database)
    return files


def write(files: dict[Path, str]) -> list[Path]:
    written = []
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            written.append(path)
    return written


def stale(files: dict[Path, str]) -> list[Path]:
    """Files on disk that differ from (or are missing for) a fresh build, and stray dashboard JSON
    beside them (a dashboard dropped from code would otherwise stay mounted)."""
    changed = [p for p, text in files.items() if not p.exists() or p.read_text(encoding="utf-8") != text]
    json_dirs = {p.parent for p in files if p.suffix == ".json"}
    return changed + sorted({p for d in json_dirs for p in d.glob("*.json")} - files.keys())


def load_dashboards(directory: Path) -> dict[str, dict[str, Any]]:
    """Every *.json dashboard in `directory`, by file name."""
    from stream.core.errors import DataError

    found: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise DataError(f"{path} does not hold a dashboard object")
        found[path.name] = data
    if not found:
        raise DataError(f"no dashboard JSON in {directory}", hint="run `yuqing dashboards build`")
    return found


def database_of(data: dict[str, Any]) -> str | None:
    """The value of a dashboard's hidden `db` constant."""
    for var in data.get("templating", {}).get("list", []):
        if var.get("name") == "db" and var.get("type") == "constant":
            return str(var.get("query"))
    return None
