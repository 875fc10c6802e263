"""JSONL files (or stdin) as a Source: the embedded default runs the same pipeline without Kafka."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from stream.core.errors import ConfigError
from stream.core.interfaces import Standalone
from stream.core.items import classify
from stream.core.records import Batch, SourceRecord


class FileSource(Standalone):
    """Reads `file:PATH` (a JSONL file, a directory of *.jsonl, or `-` for stdin) once.

    The "topic" is the file name and the "offset" the line number, so rows keep a provenance and
    re-running the same file is idempotent in the store.
    """

    def __init__(self, path: str, max_message_bytes: int) -> None:
        self.max_message_bytes = max_message_bytes
        self._records = self._read(path)
        self.exhausted = False

    def _read(self, path: str) -> Iterator[SourceRecord]:
        if path == "-":
            yield from self._lines("stdin", sys.stdin.buffer)
            return
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"source file {path} does not exist")
        files = sorted(p.glob("*.jsonl")) if p.is_dir() else [p]
        for f in files:
            with f.open("rb") as fh:
                yield from self._lines(f.name, fh)

    @staticmethod
    def _lines(name: str, fh: IO[bytes]) -> Iterator[SourceRecord]:
        for number, line in enumerate(fh):
            value = line.rstrip(b"\r\n")
            if value.strip():
                yield SourceRecord(name, 0, number, None, None, value)

    def next_batch(self, max_items: int, max_wait_ms: int) -> Batch:
        batch = Batch()
        for record in self._records:
            batch.add(record, classify(record, self.max_message_bytes))
            if len(batch) >= max_items:
                return batch
        self.exhausted = True
        return batch

    def commit(self, batch: Batch) -> None:
        """Nothing to commit: a file is read whole each run and the store de-duplicates."""

    def pause(self) -> None:
        """Reading stops by itself while the loop waits for the store."""

    def resume(self) -> None:
        """See pause()."""

    def close(self) -> None:
        """Files are closed as they are read."""
