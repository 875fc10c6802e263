"""One exception family for the whole project; the CLI maps each class to an exit code.

A user sees the one-line message (what went wrong and how to fix it), never a traceback.
"""

from __future__ import annotations


class YuqingError(Exception):
    """Base of every error yuqing raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(YuqingError):
    """Bad settings: unknown keys, malformed TOML, invalid values."""

    exit_code = 3


class DataError(YuqingError):
    """Bad input data: a dataset, a CSV/JSONL file, a message we refuse."""

    exit_code = 4


class ServiceUnavailable(YuqingError):
    """Kafka or the store cannot be reached (or the store path is locked)."""

    exit_code = 5


class StoreError(ServiceUnavailable):
    """The ClickHouse store refused or failed; the driver's code is kept."""

    def __init__(self, message: str, *, hint: str | None = None, code: int | None = None) -> None:
        super().__init__(message, hint=hint)
        self.code = code


class KafkaUnavailable(ServiceUnavailable):
    """No broker answered at the bootstrap servers."""


class ModelError(YuqingError):
    """A model checkpoint or package that cannot be loaded or trusted."""

    exit_code = 6


class ModelUnavailable(ModelError):
    """The models fail on (nearly) every text of a batch: a lost GPU, memory exhausted.  Nothing of
    the batch is dead-lettered or committed; `yuqing run` exits 6 so that it is restarted."""


class PackageIntegrityError(ModelError):
    """A model package whose files do not match its manifest."""


class ParityError(ModelError):
    """An exported model disagrees with its source beyond tolerance."""

    exit_code = 7
