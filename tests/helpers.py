"""Helpers shared by integration tests: producing news items, a group's commits, running the CLI."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from kafka import KafkaProducer

from stream.core.settings import KafkaSettings
from stream.kafka.admin import group_lag

ROOT = Path(__file__).resolve().parents[1]


def news_item(i: int, published: dt.datetime | None = None) -> dict[str, object]:
    words = ["markets rally", "factory closes", "health alert", "new policy", "央行降准", "疫情反弹"]
    item: dict[str, object] = {
        "id": f"item-{i}",
        "source": f"wire{i % 3}",
        "url": f"https://news.example/{i}",
        "title": f"{words[i % len(words)]} {i}",
        "text": " ".join(words[(i + k) % len(words)] for k in range(1 + i % 7)),
    }
    if published is not None:
        item["published_at"] = published.isoformat()
    return item


def produce(
    bootstrap: str,
    topic: str,
    payloads: Iterable[bytes | dict[str, object]],
    timestamps_ms: Sequence[int] | None = None,
) -> int:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, batch_size=256 * 1024)
    n = 0
    for i, payload in enumerate(payloads):
        value = payload if isinstance(payload, bytes) else json.dumps(payload, ensure_ascii=False).encode()
        ts = timestamps_ms[i] if timestamps_ms is not None else None
        producer.send(topic, value=value, key=str(i).encode(), timestamp_ms=ts)
        n += 1
    producer.flush()
    producer.close()
    return n


def yuqing_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "stream.cli", *args]


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    return env


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(yuqing_cmd(*args), capture_output=True, text=True, timeout=timeout, env=cli_env(), cwd=ROOT)


def committed_total(bootstrap: str, group: str) -> int:
    """The group's committed offsets summed over its partitions.  Through the admin API: a
    KafkaConsumer carrying the group id would disturb the group's joins."""
    return sum(max(c, 0) for _, _, c, _ in group_lag(KafkaSettings(bootstrap_servers=[bootstrap]), group))


def start_consumer(
    bootstrap: str, topic: str, group: str, packages: Sequence[Path], dsn: str, *extra: str,
    until_idle: float | None = 8, env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """`yuqing run` on the CPU in the background (exiting after `until_idle` idle seconds, or
    running until stopped when None); its output goes to a log that `output_of` reads."""
    idle = ["--until-idle", str(until_idle)] if until_idle is not None else []
    args = ["run", "--bootstrap", bootstrap, "--topic", topic, "--group", group, "--store", dsn,
            "--device", "cpu", *idle, *extra, "--models", *map(str, packages)]
    # Output to a file, not a pipe: a pipe nobody reads fills up and blocks the consumer.
    log_path = Path(dsn[len("chdb://") :]).parent / f"consumer-{time.monotonic_ns()}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(yuqing_cmd(*args), cwd=ROOT, env={**cli_env(), **(env or {})}, stdout=log,
                                stderr=subprocess.STDOUT)
    _LOGS[proc.pid] = log_path
    return proc


_LOGS: dict[int, Path] = {}


def output_of(proc: subprocess.Popen[bytes]) -> str:
    return _LOGS[proc.pid].read_text(errors="replace")[-4000:]
