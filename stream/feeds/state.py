"""Ingest state in one SQLite file: the ids already produced and each feed's HTTP validators.

An id is recorded only after Kafka acknowledged it, and a feed's ETag / Last-Modified only
after every new entry of that response was acknowledged: a crash in between re-sends (the
consumer drops duplicates by id) but never loses an entry behind a 304.
"""

from __future__ import annotations

import fcntl
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from stream.core.errors import ConfigError
from stream.feeds.fetch import Validators

# Ids that no poll has seen for this long are forgotten (the feed dropped them long ago).
DEFAULT_RETENTION_S = 90 * 86400

_SCHEMA = """
CREATE TABLE IF NOT EXISTS produced (
    id TEXT PRIMARY KEY,
    feed TEXT NOT NULL,
    produced_at REAL NOT NULL,
    last_seen REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS produced_feed ON produced (feed);
CREATE INDEX IF NOT EXISTS produced_last_seen ON produced (last_seen);
CREATE TABLE IF NOT EXISTS feeds (
    url TEXT PRIMARY KEY,
    etag TEXT,
    last_modified TEXT,
    updated_at REAL NOT NULL
);
"""


class IngestState:
    """Opened by one ingest process at a time (a lock file next to the database says so)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = (path.parent / f"{path.name}.lock").open("w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise ConfigError(
                f"ingest state {path} is in use by another ingest process",
                hint="give each ingest process its own --state",
            ) from None
        try:
            self.db = sqlite3.connect(path)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            self._lock.close()
            raise ConfigError(f"ingest state {path} is not a usable SQLite file: {exc}") from None

    # -- produced ids ----------------------------------------------------------------------
    def known(self, ids: Sequence[str]) -> set[str]:
        """The subset of ``ids`` already produced."""
        found: set[str] = set()
        for start in range(0, len(ids), 500):  # stay under SQLite's variable limit
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            found.update(r[0] for r in self.db.execute(f"SELECT id FROM produced WHERE id IN ({marks})", chunk))
        return found

    def record(self, feed_url: str, ids: Iterable[str], now: float | None = None) -> None:
        """Remember ids whose send Kafka acknowledged."""
        when = time.time() if now is None else now
        with self.db:
            self.db.executemany(
                "INSERT INTO produced (id, feed, produced_at, last_seen) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET last_seen = excluded.last_seen",
                [(i, feed_url, when, when) for i in ids],
            )

    def touch(self, ids: Iterable[str], now: float | None = None) -> None:
        """Mark ids as still present in their feed, so pruning keeps them."""
        when = time.time() if now is None else now
        with self.db:
            self.db.executemany("UPDATE produced SET last_seen = ? WHERE id = ?", [(when, i) for i in ids])

    def touch_feed(self, feed_url: str, now: float | None = None) -> None:
        """A 304: the feed still holds what it held, so all its ids count as seen."""
        when = time.time() if now is None else now
        with self.db:
            self.db.execute("UPDATE produced SET last_seen = ? WHERE feed = ?", (when, feed_url))

    def prune(self, retention_s: float = DEFAULT_RETENTION_S, now: float | None = None) -> int:
        when = time.time() if now is None else now
        with self.db:
            cursor = self.db.execute("DELETE FROM produced WHERE last_seen < ?", (when - retention_s,))
        return cursor.rowcount

    def count(self, feed_url: str | None = None) -> int:
        if feed_url is None:
            return int(self.db.execute("SELECT count(*) FROM produced").fetchone()[0])
        return int(self.db.execute("SELECT count(*) FROM produced WHERE feed = ?", (feed_url,)).fetchone()[0])

    # -- HTTP validators -------------------------------------------------------------------
    def validators(self, feed_url: str) -> Validators:
        row = self.db.execute("SELECT etag, last_modified FROM feeds WHERE url = ?", (feed_url,)).fetchone()
        return Validators(etag=row[0], last_modified=row[1]) if row else Validators()

    def save_validators(self, feed_url: str, validators: Validators) -> None:
        with self.db:
            self.db.execute(
                "INSERT INTO feeds (url, etag, last_modified, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(url) DO UPDATE SET etag = excluded.etag, "
                "last_modified = excluded.last_modified, updated_at = excluded.updated_at",
                (feed_url, validators.etag, validators.last_modified, time.time()),
            )

    def close(self) -> None:
        self.db.close()
        self._lock.close()

    def __enter__(self) -> IngestState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
