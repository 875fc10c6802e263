"""feeds.toml validation: unknown keys and bad values are ConfigErrors, never tracebacks."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.core.errors import ConfigError
from stream.feeds.config import load_feeds, parse_feeds

ROOT = Path(__file__).resolve().parents[2]


def _feed(**extra: object) -> dict[str, object]:
    return {"url": "http://127.0.0.1:8000/a.xml", "source": "a", **extra}


def test_defaults_and_per_feed_overrides() -> None:
    cfg = parse_feeds({"interval": 120, "feeds": [_feed(), _feed(url="https://x.org/b", source="b", interval=30)]})
    a, b = cfg.feeds
    assert cfg.interval_for(a) == 120 and cfg.interval_for(b) == 30
    assert cfg.timeout_for(a) == 20


def test_lang_is_reduced_to_its_primary_subtag() -> None:
    assert parse_feeds({"feeds": [_feed(lang="zh-CN")]}).feeds[0].lang == "zh"


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"feeds": [_feed(langauge="en")]}, "unknown key 'feeds.0.langauge'"),
        ({"intervall": 5, "feeds": [_feed()]}, "unknown key 'intervall'"),
        ({"feeds": [_feed(url="ftp://x/y")]}, "must be an http:// or https:// URL"),
        ({"feeds": [_feed(interval=0)]}, "feeds.0.interval"),
        ({"feeds": [_feed(lang="chinese!")]}, "is not a language tag"),
        ({"feeds": [_feed(), _feed(url="http://other/x")]}, "share the source 'a'"),
        ({"feeds": [{"source": "a"}]}, "feeds.0.url is required"),
        ({"feeds": []}, "feeds"),
        ({}, "feeds is required"),
    ],
)
def test_bad_files_are_config_errors(data: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_feeds(data)
    assert needle in str(err.value)
    assert err.value.exit_code == 3


def test_interval_flag_overrides_the_file_default(tmp_path: Path) -> None:
    path = tmp_path / "feeds.toml"
    path.write_text('interval = 100\n[[feeds]]\nurl = "http://h/x"\nsource = "x"\n')
    assert load_feeds(path).interval == 100
    assert load_feeds(path, default_interval=7).interval == 7


def test_malformed_toml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "feeds.toml"
    path.write_text("[[feeds]\nurl=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_feeds(path)


def test_example_file_is_valid() -> None:
    cfg = load_feeds(ROOT / "deploy" / "feeds.example.toml")
    assert [f.source for f in cfg.feeds] == ["example-zh", "example-en", "example-mixed"]
    assert cfg.feeds[0].lang == "zh"
