"""Shared fixtures: the real Kafka broker (started once per session) and real chdb stores.

A process can hold one chdb path open at a time, so in-process stores share one session path
and each test gets its own random database; tests that run consumers in subprocesses give
them their own path and read it only after the subprocess exits.
"""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream.core.settings import StoreSettings
from stream.core.store import Store

ROOT = Path(__file__).resolve().parents[1]
KAFKA_HOST, KAFKA_PORT = "127.0.0.1", int(os.environ.get("YUQING_KAFKA_PORT", "9092"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """The real broker on 127.0.0.1:9092, started by deploy/local/kafka.sh if it is not up."""
    if not _port_open(KAFKA_HOST, KAFKA_PORT):
        subprocess.run(["bash", str(ROOT / "deploy/local/kafka.sh"), "up"], check=True)
    return f"{KAFKA_HOST}:{KAFKA_PORT}"


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def topic_name() -> str:
    return unique_name("t")


@pytest.fixture
def group_name() -> str:
    return unique_name("g")


@pytest.fixture(scope="session")
def chdb_session_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chdb") / "store"


@pytest.fixture
def store_settings(chdb_session_path: Path) -> StoreSettings:
    """Settings for the session's chdb path with a random database for this test."""
    return StoreSettings(dsn=f"chdb://{chdb_session_path}", database=unique_name("yuqing_test"))


@pytest.fixture
def store(store_settings: StoreSettings) -> Iterator[Store]:
    """A real ClickHouse (chdb) store with the schema created in a fresh database."""
    st = Store(store_settings)
    st.init_schema()
    try:
        yield st
    finally:
        st.command(f"DROP DATABASE IF EXISTS {store_settings.database}")
        st.close()


@pytest.fixture(scope="session")
def tiny_packages(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two real ONNX model packages (sentiment, topic) exported from tiny random BERTs, gate passed."""
    from tests.tiny_models import build_tiny_packages

    return build_tiny_packages(tmp_path_factory.mktemp("packages"))


@pytest.fixture(scope="session")
def tiny_multihead(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real format-2 ONNX package (sentiment, category, risk, entities, embedding) from a tiny BERT."""
    from tests.tiny_models import build_tiny_multihead

    return build_tiny_multihead(tmp_path_factory.mktemp("multihead"))
