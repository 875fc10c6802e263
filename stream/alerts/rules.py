"""Alert rules and webhook targets, read from a TOML file (`alerts.toml`) and validated strictly.

Four kinds of rule share a header (name, severity, window, cool-down, scope filters):
* ``negative_surge``: the share of negative items in the window, per risk topic, category, source
  or keyword, is at least ``threshold`` with at least ``min_items`` items; neutral items are left
  out of both unless ``include_neutral``;
* ``volume_spike``: the items in the window against the previous windows of the baseline
  (a z-score, or a ratio to their mean);
* ``watch_list``: any item not yet reported that mentions one of ``terms`` (text) or of
  ``entities`` (named entities the model found, optionally of one type: ``"华为:ORG"``);
* ``story_surge``: one story (an event across outlets, from the stories job) gains at least
  ``min_items`` items in the window, or (``method = "ratio"``) also ``threshold`` times its own mean
  per window over the baseline before.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import tomllib
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from stream.core.errors import ConfigError
from stream.core.items import normalize_entity
from stream.core.times import parse_duration


def _duration(value: Any) -> dt.timedelta:
    try:
        return parse_duration(value)
    except ConfigError as exc:  # pydantic reports ValueErrors with their location
        raise ValueError(str(exc)) from None


Duration = Annotated[dt.timedelta, BeforeValidator(_duration)]
Severity = Literal["info", "warning", "critical"]
SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "critical": 2}
GroupBy = Literal["all", "risk", "category", "source", "keyword"]
ENTITY_TYPES: tuple[str, ...] = ("PER", "LOC", "ORG")

_NAME = re.compile(r"^[\w.\-]{1,100}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _no_topic(data: Any) -> Any:
    """The task `topic` is called `risk` now: say so instead of 'unknown key'."""
    if isinstance(data, dict):
        old = [k for k in ("topic", "topic_version") if k in data]
        old += ["by = 'topic'"] if data.get("by") == "topic" else []
        if old:
            raise ValueError(f"{', '.join(old)}: the task 'topic' is called 'risk' now "
                             "(risk, risk_version, by = 'risk')")
    return data


def _clean_terms(values: list[str]) -> list[str]:
    cleaned = [" ".join(v.split()) for v in values]
    if any(not v for v in cleaned):
        raise ValueError("empty term")
    return list(dict.fromkeys(cleaned))  # keep order, drop repeats


class Scope(_Strict):
    """Which items a rule looks at; an empty list does not filter."""

    source: list[str] = Field(default_factory=list)
    risk: list[str] = Field(default_factory=list)
    category: list[str] = Field(default_factory=list)
    lang: list[str] = Field(default_factory=list)
    # An item passes if its title or text mentions any of these (see matching.term_pattern).
    keyword: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        return _no_topic(data)

    @field_validator("keyword")
    @classmethod
    def _clean_keywords(cls, value: list[str]) -> list[str]:
        return _clean_terms(value)

    def describe(self) -> str:
        parts = [f"{k}={','.join(v)}" for k, v in self.model_dump().items() if v]
        return "; ".join(parts) or "all items"


class _RuleBase(_Strict):
    name: str
    description: str = ""
    severity: Severity = "warning"
    enabled: bool = True
    window: Duration = dt.timedelta(hours=1)
    cooldown: Duration = dt.timedelta(hours=6)
    scope: Scope = Field(default_factory=Scope)
    # Pin a model version per head; by default the version that scored most recently is used.
    sentiment_version: str | None = None
    risk_version: str | None = None
    category_version: str | None = None
    entities_version: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        return _no_topic(data)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("use 1-100 letters, digits, '_', '-' or '.'")
        return value

    @field_validator("window")
    @classmethod
    def _positive_window(cls, value: dt.timedelta) -> dt.timedelta:
        if value < dt.timedelta(seconds=1):
            raise ValueError("window must be at least 1s")
        return value

    @property
    def lookback(self) -> dt.timedelta:
        """How far back from the evaluation time this rule reads."""
        return self.window


class _GroupedRule(_RuleBase):
    by: GroupBy = "all"
    min_items: int = Field(default=20, ge=1)

    @model_validator(mode="after")
    def _keywords_to_group_by(self) -> _GroupedRule:
        if self.by == "keyword" and not self.scope.keyword:
            raise ValueError("by = 'keyword' needs scope.keyword (the keywords to group by)")
        return self


class NegativeSurgeRule(_GroupedRule):
    kind: Literal["negative_surge"]
    threshold: float = Field(gt=0, le=1, description="share of negative items, 0-1")
    # By default the share is negative / (negative + positive) and min_items counts those: a flood
    # of neutral items (wire copy, announcements) neither dilutes a surge nor makes one.
    include_neutral: bool = False


class VolumeSpikeRule(_GroupedRule):
    kind: Literal["volume_spike"]
    baseline: Duration = dt.timedelta(hours=24)
    method: Literal["zscore", "ratio"] = "zscore"
    threshold: float = Field(gt=0)

    @model_validator(mode="after")
    def _whole_windows(self) -> VolumeSpikeRule:
        windows = self.baseline / self.window
        if windows != int(windows) or not 2 <= windows <= 1000:
            raise ValueError("baseline must be 2 to 1000 whole windows long")
        return self

    @property
    def baseline_windows(self) -> int:
        return int(self.baseline / self.window)

    @property
    def lookback(self) -> dt.timedelta:
        return self.window + self.baseline


@dataclass(frozen=True)
class EntitySpec:
    """A watched entity: `name` as written in the rule, matched by its normalized form, and of
    `type` only when one is given."""

    name: str
    normalized: str
    type: str  # PER | LOC | ORG, '' for any


def parse_entity(value: str) -> EntitySpec:
    """'华为:ORG' -> (华为, 华为, ORG); 'Elon Musk' -> any type.  A colon not followed by a known
    type is part of the name."""
    name, sep, suffix = unicodedata.normalize("NFKC", value).rpartition(":")
    kind = suffix.strip().upper()
    if not sep or kind not in ENTITY_TYPES:
        name, kind = value, ""
    normalized = normalize_entity(name)
    if not normalized:
        raise ValueError(f"entity {value!r} has no name")
    return EntitySpec(" ".join(name.split()), normalized, kind)


class WatchListRule(_RuleBase):
    kind: Literal["watch_list"]
    terms: list[str] = Field(default_factory=list)
    # Named entities, 'name' or 'name:TYPE' (PER, LOC, ORG), matched on their normalized form.
    entities: list[str] = Field(default_factory=list)
    negative_only: bool = False
    cooldown: Duration = dt.timedelta(0)

    @field_validator("terms")
    @classmethod
    def _clean(cls, value: list[str]) -> list[str]:
        return _clean_terms(value)

    @field_validator("entities")
    @classmethod
    def _valid_entities(cls, value: list[str]) -> list[str]:
        specs = [parse_entity(v) for v in value]
        # Spelled two ways, one entity: keep the first spelling.
        return list({(s.normalized, s.type): s.name + (f":{s.type}" if s.type else "") for s in specs}.values())

    @model_validator(mode="after")
    def _something_watched(self) -> WatchListRule:
        if not self.terms and not self.entities:
            raise ValueError("give terms or entities (or both)")
        return self

    @property
    def entity_specs(self) -> list[EntitySpec]:
        return [parse_entity(v) for v in self.entities]


class StorySurgeRule(_RuleBase):
    kind: Literal["story_surge"]
    min_items: int = Field(default=10, ge=1, description="items the story gains in the window")
    # count: min_items is the test; ratio: also items >= threshold x max(mean per baseline window, 1).
    method: Literal["count", "ratio"] = "count"
    threshold: float | None = Field(default=None, gt=0)
    baseline: Duration = dt.timedelta(hours=24)

    @model_validator(mode="after")
    def _ratio_settings(self) -> StorySurgeRule:
        if self.method == "count":
            given = sorted({"threshold", "baseline"} & self.model_fields_set)
            if given:
                raise ValueError(f"{' and '.join(given)} apply to method = 'ratio' only")
            return self
        if self.threshold is None:
            raise ValueError("method = 'ratio' needs threshold (times the story's baseline)")
        windows = self.baseline / self.window
        if windows != int(windows) or not 1 <= windows <= 1000:
            raise ValueError("baseline must be 1 to 1000 whole windows long")
        return self

    @property
    def baseline_windows(self) -> int:
        return int(self.baseline / self.window) if self.method == "ratio" else 0

    @property
    def lookback(self) -> dt.timedelta:
        return self.window * (1 + self.baseline_windows)


AnyRule = NegativeSurgeRule | VolumeSpikeRule | WatchListRule | StorySurgeRule
Rule = Annotated[AnyRule, Field(discriminator="kind")]
KINDS: tuple[str, ...] = ("negative_surge", "volume_spike", "watch_list", "story_surge")
WebhookFormat = Literal["json", "slack", "feishu", "dingtalk", "wecom"]


class Webhook(_Strict):
    """Where fired alerts are posted.  Give the URL and secret directly or, better, name the
    environment variables that hold them (`url_env`, `secret_env`)."""

    name: str
    format: WebhookFormat = "json"
    url: SecretStr | None = None
    url_env: str | None = None
    # Feishu and DingTalk sign requests with it when set.
    secret: SecretStr | None = None
    secret_env: str | None = None
    timeout: float = Field(default=5.0, gt=0, le=120)
    retries: int = Field(default=3, ge=0, le=10)
    backoff: float = Field(default=0.5, ge=0, le=60)
    min_severity: Severity = "info"
    rules: list[str] = Field(default_factory=list, description="only these rules; empty = all")

    @model_validator(mode="after")
    def _one_url(self) -> Webhook:
        if (self.url is None) == (self.url_env is None):
            raise ValueError("give exactly one of url and url_env")
        if self.secret is not None and self.secret_env is not None:
            raise ValueError("give at most one of secret and secret_env")
        return self

    def resolved_url(self) -> str:
        if self.url is not None:
            return self.url.get_secret_value()
        value = os.environ.get(self.url_env or "")
        if not value:
            raise ConfigError(f"webhook {self.name!r}: environment variable {self.url_env} is not set")
        return value

    def resolved_secret(self) -> str | None:
        if self.secret is not None:
            return self.secret.get_secret_value()
        if self.secret_env is None:
            return None
        value = os.environ.get(self.secret_env)
        if not value:
            raise ConfigError(f"webhook {self.name!r}: environment variable {self.secret_env} is not set")
        return value

    def wants(self, rule: str, severity: str) -> bool:
        if self.rules and rule not in self.rules:
            return False
        return SEVERITY_RANK[severity] >= SEVERITY_RANK[self.min_severity]


class AlertsConfig(_Strict):
    rules: list[Rule] = Field(default_factory=list, alias="rule")
    webhooks: list[Webhook] = Field(default_factory=list, alias="webhook")

    @model_validator(mode="after")
    def _unique_names(self) -> AlertsConfig:
        for what, names in (
            ("rule", [r.name for r in self.rules]),
            ("webhook", [w.name for w in self.webhooks]),
        ):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{what} names must be unique: {', '.join(dupes)}")
        known = {r.name for r in self.rules}
        for hook in self.webhooks:
            unknown = [r for r in hook.rules if r not in known]
            if unknown:
                raise ValueError(f"webhook {hook.name!r} names unknown rules: {', '.join(unknown)}")
        return self

    @property
    def active_rules(self) -> list[AnyRule]:
        return [r for r in self.rules if r.enabled]


def parse_rules(data: dict[str, Any], source: str = "alerts config") -> AlertsConfig:
    try:
        return AlertsConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc)}", hint="see the comments in alerts.toml") from None


def load_rules(path: Path) -> AlertsConfig:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"rules file {path} does not exist", hint="pass --rules") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"rules file {path} is not valid TOML: {exc}") from None
    return parse_rules(data, str(path))


def _describe(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        loc = list(err["loc"])
        # ('rule', 0, 'volume_spike', 'baseline') -> rule[0].baseline: the kind tag is noise.
        parts: list[str] = []
        for i, part in enumerate(loc):
            if isinstance(part, int):
                parts[-1] = f"{parts[-1]}[{part}]" if parts else f"[{part}]"
            elif i > 0 and isinstance(loc[i - 1], int) and part in KINDS:
                continue
            else:
                parts.append(str(part))
        where = ".".join(parts) or "file"
        if err["type"] == "extra_forbidden":
            problems.append(f"unknown key {where!r}")
        elif err["type"] == "union_tag_invalid":
            problems.append(f"{where}: kind must be {_one_of()}")
        elif err["type"] == "union_tag_not_found":
            problems.append(f"{where}: needs kind = {_one_of()}")
        else:
            problems.append(f"{where}: {err['msg']}")
    return "; ".join(problems)


def _one_of() -> str:
    return f"{', '.join(KINDS[:-1])} or {KINDS[-1]}"
