"""The CLI's spine, as a user runs it: schema, sql, settings, one-line errors with exit codes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stream.core.settings import KafkaSettings, StoreSettings
from stream.core.store import Store
from stream.kafka.admin import ensure_topic
from tests.helpers import (
    ROOT,
    cli_env,
    committed_total,
    news_item,
    output_of,
    produce,
    run_cli,
    start_consumer,
    yuqing_cmd,
)

pytestmark = pytest.mark.integration


def test_db_init_then_sql_counts_zero(tmp_path: Path) -> None:
    dsn = f"chdb://{tmp_path / 'store'}"
    first = run_cli("db", "init", "--store", dsn)
    assert first.returncode == 0 and "applied [1, 2, 3, 4, 5, 6, 7])" in first.stdout
    again = run_cli("db", "init", "--store", dsn)
    assert again.returncode == 0 and "already current" in again.stdout
    out = run_cli("sql", "SELECT count() AS n FROM yuqing.scored", "--store", dsn, "--format", "json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [{"n": 0}]
    tsv = run_cli("sql", "SELECT 1 AS a, '中文' AS b", "--store", dsn, "--format", "tsv")
    assert tsv.stdout.splitlines() == ["a\tb", "1\t中文"]


def test_config_show_masks_secrets_and_layers(tmp_path: Path) -> None:
    cfg = tmp_path / "yuqing.toml"
    cfg.write_text('[kafka]\ngroup_id = "from-file"\nsasl_password = "file-secret"\n')
    proc = subprocess.run(
        yuqing_cmd("--config", str(cfg), "config", "show"),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**cli_env(), "YUQING_STORE__DSN": "https://u:dsn-secret@ch.example:8443"},
    )
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    assert shown["kafka"]["group_id"] == "from-file"
    assert "file-secret" not in proc.stdout and "dsn-secret" not in proc.stdout
    assert shown["store"]["dsn"] == "https://u:****@ch.example:8443"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--config", "{cfg}", "config", "show"], 3, "unknown setting 'kafka.bootstrap'"),
        (["db", "init", "--store", "postgres://x"], 3, "must start with chdb://"),
        (["status", "--bootstrap", "127.0.0.1:1", "--group", "g"], 5, "no Kafka broker answered"),
        (
            ["run", "--source", "file:/nonexistent.jsonl", "--models", "{pkg}", "--store", "chdb://{tmp}/s"],
            3,
            "does not exist",
        ),
    ],
)
def test_mistakes_are_one_line_errors(
    tmp_path: Path, tiny_packages: list[Path], args: list[str], code: int, message: str
) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[kafka]\nbootstrap = 'x'\n")
    argv = [a.format(cfg=cfg, pkg=tiny_packages[0], tmp=tmp_path) for a in args]
    proc = run_cli(*argv)
    assert proc.returncode == code, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if line.startswith("error:")]) == 1


def test_a_locked_embedded_store_is_a_clear_error(tmp_path: Path) -> None:
    dsn = f"chdb://{tmp_path / 'store'}"
    # Hold the store open in another process, then try to use it.
    script = (
        "import time; from stream.core.store import Store; from stream.core.settings import StoreSettings; "
        f"s = Store(StoreSettings(dsn={dsn!r})); print('open', flush=True); time.sleep(30)"
    )
    owner = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=cli_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None and owner.stdout.readline().strip() == "open"
        proc = run_cli("sql", "SELECT 1", "--store", dsn)
        assert proc.returncode == 5
        assert "open in another process" in proc.stderr and "Traceback" not in proc.stderr
    finally:
        owner.kill()
        owner.wait()


def test_status_reports_lag(
    kafka_bootstrap: str, topic_name: str, group_name: str, tiny_packages: list[Path], tmp_path: Path
) -> None:
    produce(kafka_bootstrap, topic_name, (news_item(i) for i in range(30)))
    run = run_cli(
        "run",
        "--bootstrap",
        kafka_bootstrap,
        "--topic",
        topic_name,
        "--group",
        group_name,
        "--store",
        f"chdb://{tmp_path / 's'}",
        "--until-idle",
        "2",
        "--models",
        str(tiny_packages[0]),
    )
    assert run.returncode == 0, run.stderr
    produce(kafka_bootstrap, topic_name, (news_item(i) for i in range(30, 35)))
    time.sleep(0.5)
    status = run_cli("status", "--bootstrap", kafka_bootstrap, "--group", group_name)
    assert status.returncode == 0, status.stderr
    assert "total lag 5" in status.stdout


def test_until_idle_ends_a_member_that_the_group_gave_nothing(
    kafka_bootstrap: str, topic_name: str, group_name: str, tiny_packages: list[Path], tmp_path: Path
) -> None:
    """A live member holds the only partition and has drained it; a second one joins with
    --until-idle.  The range assignor gives the partition to the smaller member id (the client id
    leads it), so the newcomer holds nothing: a member the settled group gave nothing is idle, not
    waiting for a rebalance, and it ends; the items are in the holder's store only, once."""
    ensure_topic(KafkaSettings(bootstrap_servers=[kafka_bootstrap]), topic_name, partitions=1)
    produce(kafka_bootstrap, topic_name, (news_item(i) for i in range(40)))

    def member(k: int, client_id: str, until_idle: float | None) -> subprocess.Popen[bytes]:
        dsn = f"chdb://{tmp_path / f's{k}'}"
        return start_consumer(kafka_bootstrap, topic_name, group_name, tiny_packages[:1], dsn,
                              until_idle=until_idle, env={"YUQING_KAFKA__CLIENT_ID": client_id})

    holder = member(0, "a-holder", None)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and committed_total(kafka_bootstrap, group_name) < 40:
            time.sleep(0.5)
        assert committed_total(kafka_bootstrap, group_name) == 40
        newcomer = member(1, "z-newcomer", 3)
        try:
            assert newcomer.wait(timeout=90) == 0, output_of(newcomer)
        finally:
            newcomer.kill()
        assert holder.poll() is None  # the holder kept running all along
        holder.send_signal(signal.SIGTERM)
        assert holder.wait(timeout=60) == 0, output_of(holder)
    finally:
        holder.kill()
    counts = []
    for k in (0, 1):
        with Store(StoreSettings(dsn=f"chdb://{tmp_path / f's{k}'}")) as store:
            counts.append(store.scalar(f"SELECT count() FROM {store.database}.scored FINAL"))
    assert counts == [40, 0]

