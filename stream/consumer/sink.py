"""The store as a Sink: items, scored rows, entity sets and dead letters in one write, and the
dead-letter topic.

A batch is written table by table: dead letters, then `items` (an item's text once per id), then
`scored` (one row per item and sequence head), then `entities` (one row per item and package).  The
loop commits offsets only after all of it returned, so a retry rewrites the same keys (every table
is a ReplacingMergeTree) and collapses under FINAL.

A store error is either an outage (raise: the loop backs off and retries the whole write,
committing nothing) or a refusal of some rows, told apart by the ClickHouse error code that
`stream.core.store` keeps on StoreError (the same for chdb and HTTP).  Refused rows are isolated
by bisecting the insert: the halves are written, and a row refused on its own makes its message a
``store_rejected`` dead letter with the server's message; that message's rows are then left out of
the tables still to write, and the other messages land.  A row the client cannot encode counts as
refused too (`stream.core.items` makes that impossible for message content).

| ClickHouse error                                   | code | class   |
|----------------------------------------------------|------|---------|
| CANNOT_PARSE_TEXT / _INPUT_ASSERTION_FAILED         | 6/27 | refusal |
| CANNOT_PARSE_DATE / _DATETIME / _NUMBER            | 38/41/72 | refusal |
| TYPE_MISMATCH, CANNOT_CONVERT_TYPE                 | 53/70 | refusal |
| ARGUMENT_OUT_OF_BOUND, VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE, DECIMAL_OVERFLOW | 69/321/407 | refusal |
| INCORRECT_DATA, TOO_LARGE_ARRAY_SIZE, TOO_LARGE_STRING_SIZE | 117/128/131 | refusal |
| CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN              | 349  | refusal |
| FUNCTION_THROW_IF_VALUE_IS_NON_ZERO, VIOLATED_CONSTRAINT | 395/469 | refusal |
| MEMORY_LIMIT_EXCEEDED for the query or user        | 241  | refusal (a smaller insert fits) |
| TOO_MANY_PARTS "partitions for single INSERT block" | 252 | refusal (each half spans fewer) |
| MEMORY_LIMIT_EXCEEDED "(total)": the whole server  | 241  | outage  |
| TOO_MANY_PARTS: merges behind                      | 252  | outage  |
| UNKNOWN_TABLE / UNKNOWN_DATABASE (detached, being restored) | 60/81 | outage |
| TIMEOUT_EXCEEDED, SOCKET_TIMEOUT, NETWORK_ERROR    | 159/209/210 | outage |
| READONLY, TABLE_IS_READ_ONLY, NOT_ENOUGH_SPACE, KEEPER_EXCEPTION | 164/242/243/999 | outage |
| any other code, or none (connection refused, HTTP timeouts) | | outage |

An unknown code is an outage: a refusal taken for an outage stalls the partition (visible in
lag and retry metrics, fixable), while an outage taken for a refusal would divert good rows.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Sequence
from typing import Any

from stream.consumer.metrics import DEAD_LETTERS_UNSTORED, INSERT_SECONDS
from stream.core.errors import StoreError
from stream.core.items import error_text, kafka_time
from stream.core.records import BadRecord, EntityRow, ScoredRow, SourceRecord
from stream.core.schema import (
    DEAD_LETTER_COLUMNS,
    ENTITY_COLUMNS,
    ITEM_COLUMNS,
    PIPELINE_STATS_COLUMNS,
    SCORED_COLUMNS,
)
from stream.core.store import Store
from stream.kafka.dlq import DeadLetterTopic

log = logging.getLogger(__name__)

ROWS_REFUSED_CODES = frozenset({6, 27, 38, 41, 53, 69, 70, 72, 117, 128, 131, 321, 349, 395, 407, 469})
MEMORY_LIMIT_EXCEEDED, TOO_MANY_PARTS = 241, 252

MessageKey = tuple[str, int, int]  # (topic, partition, offset)


def refuses_rows(exc: StoreError) -> bool:
    """True when the store refused these rows for what they hold (see the table above)."""
    if exc.code == TOO_MANY_PARTS:
        return "Too many partitions for single INSERT block" in exc.message
    if exc.code == MEMORY_LIMIT_EXCEEDED:
        return "(total)" not in exc.message
    return exc.code in ROWS_REFUSED_CODES


def _when(ms: int | None) -> dt.datetime:
    return kafka_time(ms) or dt.datetime.now(dt.UTC)


def _key(record: SourceRecord) -> MessageKey:
    return (record.topic, record.partition, record.offset)


def _origin(row: ScoredRow | EntityRow) -> list[Any]:
    """Where an item comes from, in the column order `items` and `scored` share."""
    item, rec = row.item, row.record
    return [item.lang, item.published_at, _when(rec.timestamp_ms), rec.topic, rec.partition, rec.offset]


def item_values(row: ScoredRow | EntityRow, stored_at: dt.datetime) -> list[Any]:
    item = row.item
    return [item.id, item.source, item.url, item.title, item.text, *_origin(row), stored_at]


def scored_values(row: ScoredRow) -> list[Any]:
    pred = row.prediction
    return [row.item.id, row.item.source, *_origin(row), row.task, row.scorer_name, row.model_version,
            pred.label, pred.score, pred.probs, pred.truncated, row.scored_at]


def entity_values(row: EntityRow) -> list[Any]:
    item, ents = row.item, row.entities
    return [
        item.id,
        row.model_version,
        item.source,
        item.lang,
        item.published_at,
        row.sentiment,
        [e.text for e in ents],
        [e.normalized for e in ents],
        [e.type for e in ents],
        [e.start for e in ents],
        [e.end for e in ents],
        [e.score for e in ents],
        row.scored_at,
    ]


def dead_letter_values(bad: BadRecord, now: dt.datetime) -> list[Any]:
    rec = bad.record
    return [
        rec.topic,
        rec.partition,
        rec.offset,
        _when(rec.timestamp_ms),
        bad.kind,
        error_text(bad.error),
        rec.value,
        now,
        bad.dlq_status,
        error_text(bad.dlq_error),
    ]


def _server_message(exc: StoreError) -> str:
    """The server's own words, without the DSN and operation that StoreError puts before them."""
    cause = exc.__cause__
    text = str(cause).strip() if cause is not None else ""
    return text.splitlines()[0] if text else exc.message


class ClickHouseSink:
    """Writes items, scored rows, entity sets and dead letters; raises StoreError (retryable) when
    the store fails."""

    def __init__(self, store: Store, dlq: DeadLetterTopic | None) -> None:
        self.store = store
        self.dlq = dlq

    def dead_letter(self, bad: Sequence[BadRecord]) -> list[BadRecord]:
        """Produce `bad` to the dead-letter topic (if there is one); each comes back with its status."""
        if self.dlq is None or not bad:
            return list(bad)
        return self.dlq.send(bad)

    def write_batch(
        self, scored: Sequence[ScoredRow], entities: Sequence[EntityRow], bad: Sequence[BadRecord]
    ) -> list[BadRecord]:
        """Write it all; returns the messages whose rows the store refused, as not yet written rejects."""
        started = time.perf_counter()
        if bad:
            now = dt.datetime.now(dt.UTC)
            values = [dead_letter_values(b, now) for b in bad]
            for i, reason in self._insert("dead_letters", values, DEAD_LETTER_COLUMNS):
                rec = bad[i].record
                DEAD_LETTERS_UNSTORED.inc()
                log.error("the store refused the dead letter of %s[%d]@%d (dead-letter topic: %s): %s",
                          rec.topic, rec.partition, rec.offset, bad[i].dlq_status or "none", reason)
        refused: dict[MessageKey, BadRecord] = {}
        self._write_items([*scored, *entities], refused)
        rows = [r for r in scored if _key(r.record) not in refused]
        self._write("scored", rows, [scored_values(r) for r in rows], SCORED_COLUMNS, refused)
        sets = [r for r in entities if _key(r.record) not in refused]
        self._write("entities", sets, [entity_values(r) for r in sets], ENTITY_COLUMNS, refused)
        INSERT_SECONDS.observe(time.perf_counter() - started)
        return list(refused.values())

    def _write_items(self, rows: Sequence[ScoredRow | EntityRow], refused: dict[MessageKey, BadRecord]) -> None:
        """One `items` row per id of the batch (its last message's); a refused one refuses every
        message of that id, which would otherwise have rows without a text."""
        last: dict[str, ScoredRow | EntityRow] = {}
        messages: dict[str, dict[MessageKey, SourceRecord]] = {}
        for row in rows:
            last[row.item.id] = row
            messages.setdefault(row.item.id, {})[_key(row.record)] = row.record
        now = dt.datetime.now(dt.UTC)
        chosen = list(last.values())
        for i, reason in self._insert("items", [item_values(r, now) for r in chosen], ITEM_COLUMNS):
            for record in messages[chosen[i].item.id].values():
                refused.setdefault(_key(record), BadRecord(record, "store_rejected", error_text(reason)))

    def _write(
        self,
        table: str,
        rows: Sequence[ScoredRow | EntityRow],
        values: list[list[Any]],
        columns: Sequence[str],
        refused: dict[MessageKey, BadRecord],
    ) -> None:
        for i, reason in self._insert(table, values, columns):
            rec = rows[i].record
            refused.setdefault(_key(rec), BadRecord(rec, "store_rejected", error_text(reason)))

    def _insert(self, table: str, values: list[list[Any]], columns: Sequence[str]) -> list[tuple[int, str]]:
        """Insert `values`; returns (index, reason) for each row refused on its own.  An outage raises."""
        if not values:
            return []
        try:
            self.store.insert(table, values, columns)
            return []
        except StoreError as exc:
            if not refuses_rows(exc):
                raise
            reason = f"{table}: {_server_message(exc)}"
        except (ValueError, TypeError, OverflowError) as exc:  # the client could not encode a row
            reason = f"{table}: {type(exc).__name__}: {exc}"
        if len(values) == 1:
            return [(0, reason)]
        half = len(values) // 2
        left = self._insert(table, values[:half], columns)
        right = self._insert(table, values[half:], columns)
        return left + [(i + half, why) for i, why in right]

    def write_stats(self, rows: list[list[Any]]) -> None:
        self.store.insert("pipeline_stats", rows, PIPELINE_STATS_COLUMNS)

    def close(self) -> None:
        if self.dlq is not None:
            self.dlq.close()
