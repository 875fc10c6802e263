"""Fixtures of the feed tests: a real local HTTP feed server and the ingest's own client."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from stream.feeds.fetch import make_client
from tests.feeds_fixtures import FeedServer, serve_feeds


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    with serve_feeds() as server:
        yield server


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with make_client("yuqing-test") as c:
        yield c
