"""The one settings object: defaults < TOML file < YUQING_* environment < CLI flags.

Nested keys use a double underscore in the environment: ``YUQING_KAFKA__BOOTSTRAP_SERVERS``.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from stream.core.errors import ConfigError

DEFAULT_DSN = "chdb://./yuqing-data/clickhouse"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSettings(_Section):
    # NoDecode: the environment gives "a:9092,b:9092", not JSON; the validator splits it.
    bootstrap_servers: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["127.0.0.1:9092"])
    topics: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["news"])
    group_id: str = "yuqing"
    client_id: str = "yuqing"
    dlq_suffix: str = ".dlq"
    # A dead letter larger than this (key + value) goes to the dead-letter topic as a prefix, with
    # headers giving its size and sha256; below the producer's and the broker's 1 MiB defaults.
    dlq_max_bytes: int = Field(default=900_000, gt=0)
    # Tries per batch to produce a dead letter before it is given up (recorded on its dead_letters row).
    dlq_attempts: int = Field(default=3, ge=1)
    alerts_topic: str | None = None
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: SecretStr | None = None
    max_message_bytes: int = Field(default=1_000_000, gt=0)
    # A consumer that died without leaving holds its partitions this long; heartbeats run in a
    # background thread, so a short timeout is safe and makes restarts after kill -9 quick.
    session_timeout_ms: int = Field(default=10_000, ge=6_000)

    @field_validator("bootstrap_servers", "topics", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    def client_options(self) -> dict[str, Any]:
        """Connection keyword arguments shared by kafka-python's consumer, producer and admin."""
        opts: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            opts["sasl_mechanism"] = self.sasl_mechanism
            opts["sasl_plain_username"] = self.sasl_username
            if self.sasl_password is not None:
                opts["sasl_plain_password"] = self.sasl_password.get_secret_value()
        for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            if getattr(self, key):
                opts[key] = getattr(self, key)
        if self.ssl_password is not None:
            opts["ssl_password"] = self.ssl_password.get_secret_value()
        return opts


class StoreSettings(_Section):
    dsn: str = DEFAULT_DSN
    # Kept apart from the DSN so it can come from a secret; it wins over a password in the DSN.
    password: SecretStr | None = None
    database: str = "yuqing"
    # Days of scored rows kept; 0 keeps them forever.
    ttl_days: int = Field(default=0, ge=0)

    @field_validator("dsn")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        scheme = value.split("://", 1)[0] if "://" in value else ""
        if scheme not in ("chdb", "http", "https"):
            raise ValueError(
                f"store DSN {mask_dsn(value)!r} must start with chdb://, http:// or https://"
            )
        return value


class BatchSettings(_Section):
    max_items: int = Field(default=256, gt=0)
    max_wait_ms: int = Field(default=200, ge=0)


class ModelSettings(_Section):
    packages: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    variant: Literal["auto", "fp32", "int8", "fp16"] = "auto"
    intra_op_threads: int = Field(default=0, ge=0)
    # Sub-batches scored at once; 0: on CPU one per usable core, each on one thread (scorer.run_plan).
    parallel_runs: int = Field(default=0, ge=0)
    # A batch where more than this share of the texts fails (or where a plain text fails too) is a
    # model outage, not bad input: nothing is dead-lettered or committed, the batch is retried.
    max_failure_share: float = Field(default=0.5, gt=0, le=1)
    # Tries of one batch through an outage (backing off) before `yuqing run` exits with code 6.
    max_attempts: int = Field(default=5, ge=1)

    @field_validator("packages", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value


class MetricsSettings(_Section):
    port: int | None = Field(default=None, ge=0, le=65535)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="YUQING_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    batch: BatchSettings = Field(default_factory=BatchSettings)
    models: ModelSettings = Field(default_factory=ModelSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Highest first: CLI flags (init) > environment > TOML > defaults.
        return (init_settings, env_settings, _TomlSource(settings_cls, _CURRENT_TOML))

    def masked(self) -> dict[str, Any]:
        """The effective settings as plain data, every secret masked."""
        data = self.model_dump(mode="json")  # SecretStr dumps as '**********'
        data["store"]["dsn"] = mask_dsn(self.store.dsn)
        return data


_CURRENT_TOML: dict[str, Any] = {}


class _TomlSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


def mask_dsn(dsn: str) -> str:
    """Replace the password of a DSN with asterisks."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":****@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist", hint="check --config") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}", hint="fix the file") from None


def load_settings(
    config: Path | None = None, overrides: dict[str, Any] | None = None
) -> Settings:
    """Build the settings from defaults, an optional TOML file, the environment and CLI overrides.

    ``overrides`` is nested like the TOML (``{"kafka": {"group_id": "g"}}``); ``None`` values are
    dropped so an unset CLI flag never hides the environment or the file.
    """
    global _CURRENT_TOML
    toml_data = read_toml(config) if config is not None else {}
    cli = _drop_none(overrides or {})
    # Sections given on the command line merge into those from the environment/file rather than
    # replacing them, so a flag for kafka.group_id keeps kafka.bootstrap_servers from elsewhere.
    _CURRENT_TOML = toml_data
    try:
        base = Settings()
        if not cli:
            return base
        merged = _deep_merge(base.model_dump(), cli)
        return Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc), hint="see `yuqing config show` and README") from None
    except SettingsError as exc:
        raise ConfigError(f"invalid settings in the environment: {exc}") from None
    finally:
        _CURRENT_TOML = {}


def _drop_none(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            inner = _drop_none(value)
            if inner:
                out[key] = inner
        elif value is not None and value != () and value != []:
            out[key] = value
    return out


def _describe(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        where = ".".join(str(part) for part in err["loc"]) or "settings"
        if err["type"] == "extra_forbidden":
            problems.append(f"unknown setting {where!r}")
        else:
            problems.append(f"{where}: {err['msg']}")
    return "invalid settings: " + "; ".join(problems)
