from __future__ import annotations

from pathlib import Path

import pytest

from stream.core.errors import ConfigError
from stream.core.settings import load_settings, mask_dsn


def test_defaults() -> None:
    s = load_settings()
    assert s.kafka.bootstrap_servers == ["127.0.0.1:9092"]
    assert s.store.dsn.startswith("chdb://")
    assert s.batch.max_items == 256


def test_precedence_file_env_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "yuqing.toml"
    cfg.write_text('[kafka]\ngroup_id = "from-file"\nclient_id = "file-client"\n[batch]\nmax_items = 10\n')
    assert load_settings(cfg).kafka.group_id == "from-file"
    monkeypatch.setenv("YUQING_KAFKA__GROUP_ID", "from-env")
    s = load_settings(cfg)
    assert s.kafka.group_id == "from-env"
    assert s.kafka.client_id == "file-client"  # the file still supplies what env does not
    s = load_settings(cfg, {"kafka": {"group_id": "from-flag", "topics": None}, "batch": {"max_items": 5}})
    assert s.kafka.group_id == "from-flag"
    assert s.kafka.client_id == "file-client"  # a flag in a section keeps the rest of that section
    assert s.batch.max_items == 5


def test_env_lists_split_on_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YUQING_KAFKA__BOOTSTRAP_SERVERS", "a:9092,b:9092")
    assert load_settings().kafka.bootstrap_servers == ["a:9092", "b:9092"]


def test_unknown_key_is_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[kafka]\nbootstrap = 'x'\n")
    with pytest.raises(ConfigError, match=r"unknown setting 'kafka\.bootstrap'"):
        load_settings(cfg)


def test_malformed_toml(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[kafka\n")
    with pytest.raises(ConfigError, match=r"not valid TOML"):
        load_settings(cfg)


def test_bad_dsn_scheme() -> None:
    with pytest.raises(ConfigError, match=r"must start with chdb://"):
        load_settings(None, {"store": {"dsn": "postgres://x"}})


def test_secrets_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YUQING_KAFKA__SASL_PASSWORD", "hunter2")
    monkeypatch.setenv("YUQING_STORE__DSN", "https://user:s3cret@ch.example:8443")
    s = load_settings()
    shown = str(s.masked())
    assert "hunter2" not in shown and "s3cret" not in shown
    assert s.kafka.sasl_password is not None and s.kafka.sasl_password.get_secret_value() == "hunter2"
    assert mask_dsn("http://u:pw@h:8123") == "http://u:****@h:8123"
