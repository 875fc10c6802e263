"""The dashboards as built from code: structure, query rules, committed files, alert rules."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from dashboards import build
from dashboards.grafana import DATASOURCE_UID, FORMAT_TABLE, FORMAT_TIME_SERIES, PLUGIN_ID
from dashboards.sqlcheck import panels_of, unsafe_references

BOARDS = {uid: make("yuqing") for uid, make in build.DASHBOARDS.items()}


def targets(data: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(p, t) for p in panels_of(data) for t in p.get("targets", [])]


def variables(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in data["templating"]["list"]}


def test_four_dashboards_with_stable_unique_panel_ids() -> None:
    assert set(BOARDS) == {"yuqing-overview", "yuqing-drilldown", "yuqing-pipeline", "yuqing-story"}
    for data in BOARDS.values():
        ids = [p["id"] for p in panels_of(data)]
        assert ids == list(range(1, len(ids) + 1))
        assert data["schemaVersion"] >= 39  # Grafana 11
        for panel in panels_of(data):
            assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24


def test_every_target_is_raw_sql_for_the_clickhouse_plugin() -> None:
    for data in BOARDS.values():
        for panel, target in targets(data):
            assert target["editorType"] == "sql"
            assert target["datasource"] == {"type": PLUGIN_ID, "uid": "${datasource}"}
            expected = FORMAT_TIME_SERIES if panel["type"] == "timeseries" else FORMAT_TABLE
            assert target["format"] == expected, panel["title"]
            assert target["queryType"] == ("timeseries" if expected == FORMAT_TIME_SERIES else "table")
        ds = variables(data)["datasource"]
        assert ds["query"] == PLUGIN_ID and ds["current"]["value"] == DATASOURCE_UID


def test_every_panel_counts_from_scored_final() -> None:
    for data in BOARDS.values():
        for panel, target in targets(data):
            sql = target["rawSql"]
            for match in re.finditer(r"\}\.(scored|items|entities|item_stories|stories)\b(\s+\w+)?", sql):
                assert (match.group(2) or "").strip() == "FINAL", f"{panel['title']}: {match.group(1)} without FINAL"
            assert "scored_minute" not in sql and "count(DISTINCT" not in sql


def test_content_panels_follow_the_selected_model_versions() -> None:
    for uid in ("yuqing-overview", "yuqing-drilldown"):
        data = BOARDS[uid]
        for task in ("sentiment", "risk", "category", "entities"):
            var = variables(data)[f"{task}_model"]
            sql = var["query"]["rawSql"]
            source = "FROM ${db:raw}.entities\n" if task == "entities" else f"WHERE task = '{task}'\n"
            assert source in sql and "ORDER BY max(scored_at) DESC" in sql
            assert var["refresh"] == 1 and var["sort"] == 0 and "current" not in var  # the first option wins
        for panel, target in targets(data):
            sql = target["rawSql"]
            if ".scored" in sql:
                assert "decodeURLComponent('${sentiment_model:percentencode}')" in sql, panel["title"]
            # every head is read at its own variable's version
            for head in ("risk", "category"):
                pinned = f"task = '{head}' AND model_version = decodeURLComponent('${{{head}_model:percentencode}}')"
                assert f"task = '{head}'" not in sql or pinned in sql, panel["title"]
            if ".entity_mentions" in sql:
                assert "model_version = decodeURLComponent('${entities_model:percentencode}')" in sql, panel["title"]
            # titles, urls and texts are only in items now
            assert not re.search(r"\bs\.(title|url|text)\b", sql), panel["title"]
        assert "topic_model" not in str(data) and "'topic'" not in str(data), uid  # the task is `risk` now


def test_story_panels_read_the_picked_story_of_the_selected_model() -> None:
    data = BOARDS["yuqing-story"]
    story = variables(data)["story"]
    assert story["refresh"] == 2 and "current" not in story  # re-read per time range; the top story first
    assert "ORDER BY count() DESC" in story["query"]["rawSql"]
    for panel, target in targets(data):
        sql = target["rawSql"]
        assert "story_id = decodeURLComponent('${story:percentencode}')" in sql, panel["title"]
        if ".scored" in sql:
            assert "decodeURLComponent('${sentiment_model:percentencode}')" in sql, panel["title"]
    # The Overview's Top stories link there with the story and the time range.
    top = next(p for p in panels_of(BOARDS["yuqing-overview"]) if p["title"] == "Top stories")
    overrides = top["fieldConfig"]["overrides"]
    links = [prop["value"] for o in overrides for prop in o["properties"] if prop["id"] == "links"]
    assert links == [[{"title": "Story drill-down", "url": "/d/yuqing-story/story?${__url_time_range}"
                       "&${sentiment_model:queryparam}&var-story=${__data.fields.story:percentencode}"}]]


def test_every_variable_reaches_sql_percent_encoded() -> None:
    names = variables(BOARDS["yuqing-drilldown"])
    for name in ("risk", "category", "source", "lang"):
        assert names[name]["multi"] and names[name]["includeAll"] and names[name]["allValue"] == "__all__"
    assert names["keyword"]["type"] == "textbox"
    for data in BOARDS.values():
        constants = frozenset(v["name"] for v in data["templating"]["list"] if v["type"] in ("constant", "datasource"))
        sqls = [target["rawSql"] for _, target in targets(data)]
        sqls += [v["query"]["rawSql"] for v in data["templating"]["list"] if v["type"] == "query"]
        for sql in sqls:
            assert unsafe_references(sql, constants) == [], sql
            assert ":sqlstring" not in sql and ":singlequote" not in sql


@pytest.mark.parametrize("sql", [
    "x = ${v:sqlstring}", "x = '$v'", "x = '[[v]]'", "x = '${v}'", "decodeURLComponent('${v:raw}')",
    "decodeURLComponent(${v:percentencode})", "x = '${v:percentencode}'",
])
def test_unsafe_variable_uses_are_found(sql: str) -> None:
    assert unsafe_references(sql, frozenset({"db"})) != []
    assert unsafe_references("${db:raw}.t WHERE decodeURLComponent('${v:percentencode}') = 'a' AND $__timeFilter(t)",
                             frozenset({"db"})) == []


def test_committed_files_match_a_fresh_build() -> None:
    stale = build.stale(build.artifacts())
    assert stale == [], f"run `yuqing dashboards build`: {stale}"


def test_freshness_flags_edited_missing_and_stray_json(tmp_path: Path) -> None:
    files = build.artifacts(out_dir=tmp_path, alerts_file=tmp_path / "alerts.yaml")
    build.write(files)
    assert build.stale(files) == []
    edited, missing = tmp_path / "yuqing-overview.json", tmp_path / "yuqing-pipeline.json"
    edited.write_text(edited.read_text(encoding="utf-8").replace(": ", ":", 1), encoding="utf-8")
    missing.unlink()
    (tmp_path / "alerts.yaml").write_text("# hand edit\n" + files[tmp_path / "alerts.yaml"], encoding="utf-8")
    (tmp_path / "old-board.json").write_text("{}", encoding="utf-8")
    assert build.stale(files) == [edited, missing, tmp_path / "alerts.yaml", tmp_path / "old-board.json"]


def test_typescript_modules_cover_dashboard_and_each_panel() -> None:
    data = BOARDS["yuqing-overview"]
    module = build.render_ts(data, "x.json")
    assert 'import type { Dashboard } from "@grafana/schema";' in module.text
    assert "export const dashboard: Wire<Dashboard> =" in module.text
    assert "Wire<PanelOf<p_timeseries.Options, p_timeseries.FieldConfig>>" in module.text
    assert "Wire<PanelOf<p_stat.Options, Record<string, unknown>>>" in module.text
    panel_regions = [r for r in module.regions if r.label.startswith("panel ")]
    assert len(panel_regions) == len(list(panels_of(data)))
    lines = module.text.splitlines()
    first = panel_regions[4]
    assert module.where(first.first + 1) == first.label
    assert lines[first.first - 1].startswith("export const panel5:")


def test_alert_rules_mirror_the_default_rules(tmp_path: Path) -> None:
    doc = yaml.safe_load(build.alert_rules_yaml("yuqing"))
    rules = {r["uid"]: r for r in doc["groups"][0]["rules"]}
    assert set(rules) == {"yuqing-negative-surge", "yuqing-volume-spike"}
    surge, spike = rules["yuqing-negative-surge"], rules["yuqing-volume-spike"]
    assert surge["data"][0]["relativeTimeRange"] == {"from": 3600, "to": 0}
    assert "countIf(s.label != 'neutral') >= 20" in surge["data"][0]["model"]["rawSql"]
    assert "task = 'risk'" in surge["data"][0]["model"]["rawSql"]
    assert surge["data"][1]["model"]["conditions"][0]["evaluator"] == {"type": "gt", "params": [0.5]}
    assert spike["data"][1]["model"]["conditions"][0]["evaluator"] == {"type": "gt", "params": [3.0]}
    for rule in rules.values():
        assert rule["data"][0]["datasourceUid"] == DATASOURCE_UID
        sql = rule["data"][0]["model"]["rawSql"]
        assert "FINAL" in sql and "scored_minute" not in sql
        assert "${" not in sql  # alert queries cannot use dashboard variables


def test_database_is_a_build_parameter() -> None:
    other = build.DASHBOARDS["yuqing-overview"]("newsdb")
    assert build.database_of(other) == "newsdb"
    assert "FROM newsdb.scored" in build.alert_rules_yaml("newsdb")


def test_load_dashboards_rejects_bad_json(tmp_path: Path) -> None:
    from stream.core.errors import DataError

    with pytest.raises(DataError, match="no dashboard JSON"):
        build.load_dashboards(tmp_path)
    (tmp_path / "x.json").write_text("{nope", encoding="utf-8")
    with pytest.raises(DataError, match="not valid JSON"):
        build.load_dashboards(tmp_path)
