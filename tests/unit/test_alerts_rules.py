"""The rules file: validation, defaults, durations and times, watched-term patterns."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from stream.alerts.alert import Alert
from stream.alerts.matching import term_pattern
from stream.alerts.rules import (
    NegativeSurgeRule,
    StorySurgeRule,
    VolumeSpikeRule,
    WatchListRule,
    load_rules,
    parse_rules,
)
from stream.alerts.state import MemoryState
from stream.cli import cli, main
from stream.core.errors import ConfigError
from stream.core.times import format_duration, parse_duration, parse_time

ROOT = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2025, 3, 10, 12, 0, tzinfo=dt.UTC)


def _surge(**extra: object) -> dict[str, object]:
    return {"name": "s", "kind": "negative_surge", "threshold": 0.6, **extra}


def _story(**extra: object) -> dict[str, object]:
    return {"name": "st", "kind": "story_surge", **extra}


def test_story_surge_defaults_and_lookback() -> None:
    count, ratio = parse_rules({"rule": [_story(), _story(name="r", method="ratio", threshold=2.5, window="30m",
                                                          baseline="12h")]}).rules
    assert isinstance(count, StorySurgeRule) and isinstance(ratio, StorySurgeRule)
    assert count.method == "count" and count.min_items == 10 and count.threshold is None
    assert count.lookback == count.window == dt.timedelta(hours=1) and count.baseline_windows == 0
    assert ratio.baseline_windows == 24 and ratio.lookback == dt.timedelta(hours=12, minutes=30)


def test_the_shipped_rules_file_is_valid() -> None:
    config = load_rules(ROOT / "alerts.toml")
    kinds = {type(r) for r in config.rules}
    assert kinds == {NegativeSurgeRule, VolumeSpikeRule, WatchListRule, StorySurgeRule}
    assert all(r.enabled for r in config.rules)
    spike = next(r for r in config.rules if isinstance(r, VolumeSpikeRule))
    assert spike.baseline_windows == 24
    story = next(r for r in config.rules if isinstance(r, StorySurgeRule))
    assert story.method == "ratio" and story.baseline_windows == 6 and story.lookback == dt.timedelta(hours=7)


def test_defaults() -> None:
    config = parse_rules({"rule": [_surge(), {"name": "w", "kind": "watch_list", "terms": ["裁员"]}]})
    surge, watch = config.rules
    assert surge.window == dt.timedelta(hours=1) and surge.cooldown == dt.timedelta(hours=6)
    assert surge.severity == "warning" and surge.by == "all" and surge.min_items == 20
    assert watch.cooldown == dt.timedelta(0)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"rules": []}, "unknown key 'rules'"),
        ({"rule": [_surge(treshold=0.5)]}, "unknown key 'rule[0].treshold'"),
        ({"rule": [_surge(scope={"sources": ["a"]})]}, "unknown key 'rule[0].scope.sources'"),
        ({"rule": [_surge()], "webhook": [{"name": "h", "url": "http://x", "colour": 1}]}, "unknown key"),
        ({"rule": [{"name": "x", "threshold": 1}]}, "needs kind"),
        ({"rule": [{"name": "x", "kind": "surge"}]}, "kind must be"),
        ({"rule": [_surge(window="an hour")]}, "not a duration"),
        ({"rule": [_surge(threshold=1.5)]}, "threshold"),
        ({"rule": [_surge(by="keyword")]}, "needs scope.keyword"),
        ({"rule": [_surge(name="bad name!")]}, "rule[0].name"),
        ({"rule": [_surge(), _surge()]}, "rule names must be unique: s"),
        (
            {"rule": [{"name": "v", "kind": "volume_spike", "threshold": 3, "window": "1h", "baseline": "90m"}]},
            "whole windows",
        ),
        ({"rule": [{"name": "w", "kind": "watch_list", "terms": []}]}, "terms"),
        ({"rule": [_story(method="ratio")]}, "method = 'ratio' needs threshold"),
        ({"rule": [_story(threshold=3)]}, "threshold apply to method = 'ratio' only"),
        ({"rule": [_story(baseline="6h", threshold=2)]}, "baseline and threshold apply to method = 'ratio' only"),
        ({"rule": [_story(method="ratio", threshold=2, baseline="90m")]}, "whole windows"),
        ({"rule": [_story(method="ratio", threshold=2, baseline="30m")]}, "whole windows"),
        ({"rule": [_story(method="ratio", threshold=0)]}, "threshold"),
        ({"rule": [_story(min_items=0)]}, "min_items"),
        ({"rule": [_story(method="zscore")]}, "method"),
        ({"rule": [_story(by="risk")]}, "unknown key 'rule[0].by'"),
        ({"rule": [{"name": "w", "kind": "watch_list", "terms": ["  "]}]}, "empty term"),
        ({"rule": [_surge()], "webhook": [{"name": "h"}]}, "exactly one of url and url_env"),
        ({"rule": [_surge()], "webhook": [{"name": "h", "url": "http://x", "format": "teams"}]}, "format"),
        ({"rule": [_surge()], "webhook": [{"name": "h", "url": "http://x", "rules": ["nope"]}]}, "unknown rules"),
    ],
)
def test_invalid_rules_are_config_errors(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_rules(data)
    assert message in str(info.value)


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "a.toml"
    bad.write_text("[[rule]\nname=", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_rules(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_rules(tmp_path / "missing.toml")


def test_terms_are_normalised() -> None:
    config = parse_rules({"rule": [{"name": "w", "kind": "watch_list", "terms": [" data  breach ", "裁员", "裁员"]}]})
    assert config.rules[0].terms == ["data breach", "裁员"]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("15m", 900), ("1h", 3600), ("1.5h", 5400), ("7d", 604800), ("2w", 1209600), (90, 90)],
)
def test_parse_duration(text: str | int, seconds: int) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "1", "h", "-1h", "1y", "1 hour"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_duration(text)


def test_format_duration() -> None:
    assert [format_duration(dt.timedelta(seconds=s)) for s in (0, 45, 900, 5400, 3600, 86400)] == [
        "0s",
        "45s",
        "15m",
        "90m",
        "1h",
        "1d",
    ]


def test_parse_time() -> None:
    assert parse_time("24h", NOW) == NOW - dt.timedelta(hours=24)
    assert parse_time("now", NOW) == NOW
    assert parse_time("2025-03-01T08:00:00+08:00", NOW) == dt.datetime(2025, 3, 1, 0, 0, tzinfo=dt.UTC)
    assert parse_time("2025-03-01T00:00:00Z", NOW) == dt.datetime(2025, 3, 1, tzinfo=dt.UTC)
    assert parse_time("2025-03-01", NOW) == dt.datetime(2025, 3, 1, tzinfo=dt.UTC)
    with pytest.raises(ConfigError, match="RFC 3339"):
        parse_time("yesterday", NOW)


@pytest.mark.parametrize(
    ("term", "hits", "misses"),
    [
        ("recall", ["Product recall announced", "RECALL!"], ["recalled units", "myrecall"]),
        ("data breach", ["a Data  Breach at Acme"], ["databreach", "data breaches"]),
        ("裁员", ["某公司宣布裁员计划", "裁员"], ["裁 员"]),
        ("C++", ["C++ released"], ["C+"]),
        ("'; DROP TABLE x; --", ["x'; drop table x; --y"], ["DROP TABLE x"]),
        ("Tesla降价", ["特斯拉 Tesla降价了"], ["Teslas降价"]),
    ],
)
def test_term_pattern(term: str, hits: list[str], misses: list[str]) -> None:
    # Python's re agrees with RE2 on this subset (ASCII \b, (?i), escaped punctuation); the
    # integration tests run the same patterns in ClickHouse.
    pattern = re.compile(term_pattern(term), flags=re.ASCII)
    for text in hits:
        assert pattern.search(text), (term, text)
    for text in misses:
        assert not pattern.search(text), (term, text)


def test_memory_state_tracks_fires_near_a_moment_known_ids_and_reported_ids() -> None:
    state = MemoryState()

    def alert(alert_id: str, scope: str, at: dt.datetime, ids: tuple[str, ...]) -> Alert:
        return Alert(
            alert_id, "r", "watch_list", "info", scope, at - dt.timedelta(hours=1), at, 1, 1, len(ids), ids, "", at
        )

    state.record(alert("a1", "term=a", NOW, ("1", "2")))
    state.record(alert("a2", "term=a", NOW + dt.timedelta(minutes=5), ("3",)))
    state.record(alert("b1", "term=b", NOW, ("4",)))
    minute = dt.timedelta(minutes=1)
    # Strictly between: a fire exactly a cool-down away is not "near".
    assert state.fired_near("r", NOW - minute, NOW + minute) == {"term=a", "term=b"}
    assert state.fired_near("r", NOW, NOW + 5 * minute) == set()
    assert state.fired_near("r", NOW + minute, NOW + 10 * minute) == {"term=a"}
    assert state.fired_near("other", NOW - minute, NOW + minute) == set()
    assert state.known("r", ["a1", "zz", "b1"]) == {"a1", "b1"} and state.known("other", ["a1"]) == set()
    assert state.reported_ids("r", NOW + dt.timedelta(minutes=1)) == {"term=a": {"3"}}
    assert state.reported_ids("r", NOW) == {"term=a": {"1", "2", "3"}, "term=b": {"4"}}


RULES_TOML = """
[[rule]]
name = "surge-risk"
kind = "negative_surge"
by = "risk"
threshold = 0.5

[[rule]]
name = "spike-source"
kind = "volume_spike"
threshold = 4
"""


def test_alerts_check_lists_rules(tmp_path: Path) -> None:
    rules_file = tmp_path / "alerts.toml"
    rules_file.write_text(RULES_TOML, encoding="utf-8")
    result = CliRunner().invoke(cli, ["alerts", "check", "--rules", str(rules_file)])
    assert result.exit_code == 0, result.output
    assert "surge-risk [negative_surge, warning] window 1h, cool-down 6h" in result.output
    assert result.output.strip().endswith("2 rule(s), 0 webhook(s), valid")


def test_unknown_key_is_a_config_error_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(RULES_TOML + "\nsurprise = 1\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        main(["alerts", "check", "--rules", str(bad)])
    assert exit_info.value.code == 3
    err = capsys.readouterr().err
    assert "unknown key 'rule[1].surprise'" in err and "Traceback" not in err


def test_watched_entities_parse_with_an_optional_type() -> None:
    entities = ["华为:ORG", "Elon  Musk", "Re:Code", "ＨＵＡＷＥＩ：org", "华为 : ORG"]
    rule = parse_rules({"rule": [{"name": "w", "kind": "watch_list", "entities": entities}]}).rules[0]
    assert isinstance(rule, WatchListRule) and rule.terms == []
    # Spellings of one (entity, type) collapse to the first; a colon before no known type is part of the name.
    assert rule.entities == ["华为:ORG", "Elon Musk", "Re:Code", "HUAWEI:ORG"]
    assert [(e.normalized, e.type) for e in rule.entity_specs] == [
        ("华为", "ORG"), ("elon musk", ""), ("re:code", ""), ("huawei", "ORG")]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "w", "kind": "watch_list"}, "give terms or entities"),
        ({"name": "w", "kind": "watch_list", "entities": ["《》:ORG"]}, "has no name"),
        ({"name": "s", "kind": "negative_surge", "threshold": 0.5, "by": "topic"}, "called 'risk' now"),
        ({"name": "s", "kind": "negative_surge", "threshold": 0.5, "topic_version": "v"}, "called 'risk' now"),
        ({"name": "s", "kind": "negative_surge", "threshold": 0.5, "scope": {"topic": ["x"]}}, "called 'risk' now"),
    ],
)
def test_entity_and_renamed_topic_mistakes_are_config_errors(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_rules({"rule": [data]})


def test_negative_surge_leaves_neutral_out_by_default() -> None:
    default, counting = parse_rules({"rule": [_surge(), _surge(name="n", include_neutral=True, by="category")]}).rules
    assert isinstance(default, NegativeSurgeRule) and isinstance(counting, NegativeSurgeRule)
    assert not default.include_neutral and counting.include_neutral and counting.by == "category"
