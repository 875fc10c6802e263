"""A thin layer over clickhouse-connect: one code path for chdb:// (embedded) and http(s)://."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError
from clickhouse_connect.driver.query import QueryResult

from stream.core.errors import ConfigError, StoreError
from stream.core.schema import Copy, migrations, migrations_table
from stream.core.settings import StoreSettings, mask_dsn

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _error_code(exc: BaseException) -> int | None:
    match = re.search(r"Code: (\d+)", str(exc))
    return int(match.group(1)) if match else None


def _wrap(exc: BaseException, what: str, dsn: str) -> StoreError:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    code = _error_code(exc)
    if "Cannot lock file" in str(exc) or "Another server instance" in str(exc) or (
        "EmbeddedServer" in str(exc) and "chdb" in dsn
    ):
        return StoreError(
            f"the embedded store at {mask_dsn(dsn)} is open in another process",
            hint="stop that process (a chdb path opens in one process at a time) or use a ClickHouse server",
            code=code,
        )
    return StoreError(f"store {mask_dsn(dsn)}: {what} failed: {text}", code=code)


class Store:
    """Opens the store named by a DSN and creates/migrates the yuqing schema."""

    def __init__(self, settings: StoreSettings) -> None:
        if not _IDENT.match(settings.database):
            raise ConfigError(f"store database name {settings.database!r} is not a plain identifier")
        self.settings = settings
        self.database = settings.database
        self.dsn = settings.dsn
        self.client: Client = self._connect()

    @property
    def embedded(self) -> bool:
        return self.dsn.startswith("chdb://")

    def _connect(self) -> Client:
        kwargs: dict[str, Any] = {}
        dsn = self.dsn
        if self.embedded:
            # clickhouse-connect reads chdb://./x as host '.'; hand it an absolute path.
            path = Path(self.dsn[len("chdb://") :]).expanduser().resolve()
            path.mkdir(parents=True, exist_ok=True)
            dsn = f"chdb://{path}"
        else:
            parts = urlsplit(self.dsn)
            if not parts.hostname:
                raise ConfigError(f"store DSN {mask_dsn(self.dsn)!r} names no host")
            if self.settings.password is not None:
                kwargs["password"] = self.settings.password.get_secret_value()
            kwargs["connect_timeout"] = 10
        try:
            return clickhouse_connect.get_client(dsn=dsn, **kwargs)
        except ConfigError:
            raise
        except Exception as exc:  # the driver raises several unrelated types here
            raise _wrap(exc, "connecting", self.dsn) from exc

    # -- queries ---------------------------------------------------------------------------
    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        try:
            return self.client.command(sql, parameters=parameters)
        except (ClickHouseError, OSError) as exc:
            raise _wrap(exc, "command", self.dsn) from exc

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> QueryResult:
        try:
            return self.client.query(sql, parameters=parameters)
        except (ClickHouseError, OSError) as exc:
            raise _wrap(exc, "query", self.dsn) from exc

    def rows(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.query(sql, parameters).result_rows]

    def scalar(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        rows = self.rows(sql, parameters)
        return rows[0][0] if rows else None

    def insert(self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str]) -> None:
        if not rows:
            return
        try:
            self.client.insert(f"{self.database}.{table}", list(rows), column_names=list(columns))
        except (ClickHouseError, OSError) as exc:
            raise _wrap(exc, f"insert into {table}", self.dsn) from exc

    def ping(self) -> bool:
        try:
            return bool(self.client.ping()) if not self.embedded else self.scalar("SELECT 1") == 1
        except Exception:
            return False

    # -- schema ----------------------------------------------------------------------------
    def init_schema(self) -> list[int]:
        """Apply the migrations not yet applied; returns the versions applied now."""
        db = self.database
        self.command(f"CREATE DATABASE IF NOT EXISTS {db}")
        self.command(migrations_table(db))
        done = {int(r[0]) for r in self.rows(f"SELECT version FROM {db}.schema_migrations FINAL")}
        applied = []
        for migration in migrations(db, self.settings.ttl_days):
            if migration.version in done:
                continue
            for statement in migration.statements:
                if isinstance(statement, Copy):
                    if int(self.scalar(statement.when) or 0):
                        self.command(statement.sql)
                else:
                    self.command(statement)
            self.insert(
                "schema_migrations",
                [[migration.version, migration.description, dt.datetime.now(dt.UTC)]],
                ["version", "description", "applied_at"],
            )
            applied.append(migration.version)
        return applied

    def schema_version(self) -> int:
        return int(self.scalar(f"SELECT max(version) FROM {self.database}.schema_migrations") or 0)

    def close(self) -> None:
        # Closing twice or after a failure must not hide the real error.
        with suppress(Exception):
            self.client.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def open_store(settings: StoreSettings, *, init: bool = True) -> Iterator[Store]:
    store = Store(settings)
    try:
        if init:
            store.init_schema()
        yield store
    finally:
        store.close()
