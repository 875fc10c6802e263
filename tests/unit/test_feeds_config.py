"""feeds.toml validation: unknown keys and bad values are ConfigErrors, never tracebacks."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from stream.core.errors import ConfigError
from stream.feeds.config import load_feeds, parse_feeds
from stream.feeds.net import EVERY_NETWORK

ROOT = Path(__file__).resolve().parents[2]


def _feed(**extra: object) -> dict[str, object]:
    return {"url": "http://127.0.0.1:8000/a.xml", "source": "a", **extra}


def test_defaults_and_per_feed_overrides() -> None:
    cfg = parse_feeds({"interval": 120, "feeds": [_feed(), _feed(url="https://x.org/b", source="b", interval=30)]})
    a, b = cfg.feeds
    assert cfg.interval_for(a) == 120 and cfg.interval_for(b) == 30
    assert cfg.timeout_for(a) == 30


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
        ({"feeds": [_feed(allow_private="yes")]}, "allow_private: must be true, false or a list of networks"),
        ({"allow_private": 1, "feeds": [_feed()]}, "allow_private: must be true, false or a list of networks"),
        ({"feeds": [_feed(allow_private=["10.0.0.1/8"])]}, "10.0.0.1/8 has host bits set"),
        ({"feeds": [_feed(allow_private=["intranet"])]}, "'intranet' does not appear to be an IPv4 or IPv6"),
        ({"feeds": [_feed(allow_private=[10])]}, "allow_private: must be true, false or a list of networks"),
        ({"feeds": [_feed(url="http://0177.0.0.1/x")]}, "Invalid IPv4 address"),
        ({"feeds": [_feed(timeout=-1)]}, "feeds.0.timeout"),
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
    assert [f.source for f in cfg.feeds] == ["example-zh", "example-en", "example-mixed", "intranet-press"]
    assert cfg.feeds[0].lang == "zh"
    assert cfg.allowed_for(cfg.feeds[0]) == ()
    assert cfg.allowed_for(cfg.feeds[3]) == (ipaddress.ip_network("10.20.0.0/16"),)


def test_allow_private_defaults_and_overrides() -> None:
    cfg = parse_feeds(
        {
            "allow_private": True,
            "feeds": [
                _feed(),
                _feed(url="http://b/x", source="b", allow_private=False),
                _feed(url="http://c/x", source="c", allow_private=["127.0.0.2", "fd00::/8"]),
            ],
        }
    )
    a, b, c = (cfg.allowed_for(f) for f in cfg.feeds)
    assert a == EVERY_NETWORK and b == ()
    assert c == (ipaddress.ip_network("127.0.0.2/32"), ipaddress.ip_network("fd00::/8"))
    default = parse_feeds({"feeds": [_feed()]})
    assert default.allowed_for(default.feeds[0]) == ()  # public addresses only
