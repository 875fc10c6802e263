"""Compare two model versions on the items both scored (`yuqing diff`).

Each version's rows are read with FINAL, one row per id (the latest delivery: ``scored`` is keyed
by (task, model_version, id)), so re-deliveries never count twice; the two sides are then joined
on id.  Every sequence head both versions have (sentiment, category, risk, ...) is compared
(agreement, kappa, confusion); so are their entities (``entities``, one row per (model_version,
id)): per item both analysed, the sets of (normalized form, type) are intersected, giving B's
precision and recall against A.  Everything is computed in ClickHouse; only the tables and the
top changed items come back.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from stream.core.errors import DataError
from stream.core.store import Store

RankBy = Literal["min", "b"]
# Heads in the order they are reported; others (a custom task) follow by name.
HEAD_ORDER: tuple[str, ...] = ("sentiment", "category", "risk")
ENTITY_TYPES: tuple[str, ...] = ("PER", "LOC", "ORG")

@dataclass(frozen=True)
class ChangedItem:
    id: str
    title: str
    label_a: str
    score_a: float
    label_b: str
    score_b: float


@dataclass(frozen=True)
class VersionDiff:
    version_a: str
    version_b: str
    task: str
    since: dt.datetime | None
    until: dt.datetime | None
    items_a: int  # distinct ids version A scored in the range
    items_b: int
    confusion: dict[str, dict[str, int]]  # A's label -> B's label -> items (common items)
    labels_all_a: dict[str, int]  # every item A scored in the range, by label
    labels_all_b: dict[str, int]
    changed: list[ChangedItem] = field(default_factory=list)
    rank_by: RankBy = "min"

    @property
    def labels(self) -> list[str]:
        names = set(self.confusion) | {b for row in self.confusion.values() for b in row}
        return sorted(names | set(self.labels_all_a) | set(self.labels_all_b))

    @property
    def common(self) -> int:
        return sum(n for row in self.confusion.values() for n in row.values())

    @property
    def agree(self) -> int:
        return sum(row.get(label, 0) for label, row in self.confusion.items())

    @property
    def agreement(self) -> float | None:
        return self.agree / self.common if self.common else None

    @property
    def labels_a(self) -> dict[str, int]:
        """A's labels on the common items."""
        return {label: sum(self.confusion.get(label, {}).values()) for label in self.labels}

    @property
    def labels_b(self) -> dict[str, int]:
        return {label: sum(row.get(label, 0) for row in self.confusion.values()) for label in self.labels}

    @property
    def kappa(self) -> float | None:
        """Cohen's kappa: agreement corrected for what the two label mixes agree on by chance."""
        n = self.common
        if not n:
            return None
        a, b = self.labels_a, self.labels_b
        expected = sum(a[label] * b[label] for label in self.labels) / (n * n)
        observed = self.agree / n
        return 1.0 if expected == 1.0 else (observed - expected) / (1.0 - expected)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version_a": self.version_a,
            "version_b": self.version_b,
            "task": self.task,
            "since": _iso(self.since),
            "until": _iso(self.until),
            "items_a": self.items_a,
            "items_b": self.items_b,
            "common": self.common,
            "agree": self.agree,
            "agreement": self.agreement,
            "kappa": self.kappa,
            "labels": self.labels,
            "confusion": {a: {b: self.confusion.get(a, {}).get(b, 0) for b in self.labels} for a in self.labels},
            "label_counts_common": {"a": self.labels_a, "b": self.labels_b},
            "label_counts_all": {"a": self.labels_all_a, "b": self.labels_all_b},
            "rank_by": self.rank_by,
            "changed": [asdict(c) for c in self.changed],
        }


def _iso(when: dt.datetime | None) -> str | None:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z" if when else None


def _ch_time(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


@dataclass(frozen=True)
class EntityCounts:
    """Entity mentions (distinct (normalized, type) per item) on the items both versions analysed."""

    a: int
    b: int
    matched: int  # in both sets

    @property
    def precision(self) -> float | None:
        """Of B's entities, the share A found too."""
        return self.matched / self.b if self.b else None

    @property
    def recall(self) -> float | None:
        """Of A's entities, the share B found too."""
        return self.matched / self.a if self.a else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "precision": self.precision, "recall": self.recall}


@dataclass(frozen=True)
class EntityDiff:
    items_a: int  # items version A wrote an entity set for in the range (possibly empty)
    items_b: int
    common: int
    total: EntityCounts
    by_type: dict[str, EntityCounts]

    def to_dict(self) -> dict[str, Any]:
        return {
            "items_a": self.items_a,
            "items_b": self.items_b,
            "common": self.common,
            **self.total.to_dict(),
            "by_type": {t: c.to_dict() for t, c in self.by_type.items()},
        }


@dataclass(frozen=True)
class ModelDiff:
    """Every head two versions share, and their entities when both have an entity head."""

    heads: list[VersionDiff]
    entities: EntityDiff | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "heads": {d.task: d.to_dict() for d in self.heads},
            "entities": self.entities.to_dict() if self.entities else None,
        }


def _version_tasks(store: Store, versions: tuple[str, str]) -> dict[str, list[str]]:
    """Per version, its heads: the tasks of its scored rows, and 'entities' when it wrote entity rows."""
    rows = store.rows(
        f"SELECT model_version, task FROM {store.database}.scored "
        "WHERE model_version IN ({a:String}, {b:String}) GROUP BY model_version, task "
        f"UNION ALL SELECT model_version, 'entities' FROM {store.database}.entities "
        "WHERE model_version IN ({a:String}, {b:String}) GROUP BY model_version",
        {"a": versions[0], "b": versions[1]},
    )
    tasks: dict[str, list[str]] = {v: [] for v in versions}
    for version, task in rows:
        tasks[version].append(task)
    return {v: sorted(t, key=_head_rank) for v, t in tasks.items()}


def _head_rank(task: str) -> tuple[int, str]:
    return (HEAD_ORDER.index(task) if task in HEAD_ORDER else len(HEAD_ORDER) + (task == "entities"), task)


def _known_versions(store: Store, limit: int = 8) -> str:
    rows = store.rows(
        f"SELECT model_version, any(task), uniqExact(id) FROM {store.database}.scored "
        f"GROUP BY model_version ORDER BY max(scored_at) DESC LIMIT {int(limit)}"
    )
    return ", ".join(f"{v} ({t}, {n} items)" for v, t, n in rows) or "none: the store has no scored rows"


def resolve_tasks(store: Store, version_a: str, version_b: str, task: str | None = None) -> list[str]:
    """The heads both versions have ('entities' last), or `task` alone; a DataError names what
    is wrong and what exists."""
    tasks = _version_tasks(store, (version_a, version_b))
    for version in (version_a, version_b):
        if not tasks[version]:
            raise DataError(
                f"model version {version!r} has no scored rows", hint=f"known versions: {_known_versions(store)}"
            )
    if task is not None:
        for version in (version_a, version_b):
            if task not in tasks[version]:
                raise DataError(f"model version {version!r} has no {task!r} rows (it has {tasks[version]})")
        return [task]
    common = [t for t in tasks[version_a] if t in tasks[version_b]]
    if not common:
        raise DataError(
            f"{version_a!r} scores {tasks[version_a]} and {version_b!r} scores {tasks[version_b]}: "
            "versions of different tasks cannot be compared"
        )
    return common


def resolve_task(store: Store, version_a: str, version_b: str, task: str | None) -> str:
    """The one sequence head both versions have (or `task`)."""
    common = [t for t in resolve_tasks(store, version_a, version_b, task) if t != "entities"]
    if not common:
        raise DataError(f"{version_a!r} and {version_b!r} share no labelled head", hint="compare them with diff_models")
    if len(common) > 1:
        raise DataError(f"both versions have rows for several tasks {common}", hint="pick one with --task")
    return common[0]


def _range(since: dt.datetime | None, until: dt.datetime | None) -> tuple[str, dict[str, Any]]:
    """A filter on published_at for [since, until) and its parameters."""
    if since and until and since >= until:
        raise DataError(f"--since ({_iso(since)}) must be before --until ({_iso(until)})")
    where, params = "1", {}
    if since is not None:
        where += " AND published_at >= {since:DateTime64(3, 'UTC')}"
        params["since"] = _ch_time(since)
    if until is not None:
        where += " AND published_at < {until:DateTime64(3, 'UTC')}"
        params["until"] = _ch_time(until)
    return where, params


def diff_models(
    store: Store,
    version_a: str,
    version_b: str,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    task: str | None = None,
    top: int = 20,
    rank_by: RankBy = "min",
) -> ModelDiff:
    """Compare A and B on every head both have (or `task` only), and on their entities."""
    if version_a == version_b:
        raise DataError("give two different model versions to compare")
    _range(since, until)  # refuse an empty range before reading anything
    tasks = resolve_tasks(store, version_a, version_b, task)
    heads = [
        diff_versions(store, version_a, version_b, since=since, until=until, task=t, top=top, rank_by=rank_by)
        for t in tasks
        if t != "entities"
    ]
    entities = diff_entities(store, version_a, version_b, since=since, until=until) if "entities" in tasks else None
    return ModelDiff(heads, entities)


def diff_entities(
    store: Store, version_a: str, version_b: str, *, since: dt.datetime | None = None, until: dt.datetime | None = None
) -> EntityDiff:
    """B's entities against A's on the items both analysed: per item, the sets of (normalized
    form, type) intersected; precision = matched / B's, recall = matched / A's."""
    where, params = _range(since, until)

    def side(version: str) -> str:
        # One row per id (keyed by (model_version, id)): the latest delivery's whole set.
        return (
            "SELECT id, arrayDistinct(arrayZip(entity_normalized, entity_type)) AS ents "
            f"FROM {store.database}.entities FINAL WHERE model_version = {{{version}:String}} AND {where}"
        )

    def of_type(column: str, kind: str) -> str:
        return f"sum(length(arrayFilter(e -> e.2 = '{kind}', {column})))"

    counts = ["sum(length(a.ents))", "sum(length(b.ents))", "sum(length(arrayIntersect(a.ents, b.ents)))"]
    for kind in ENTITY_TYPES:
        counts += [of_type("a.ents", kind), of_type("b.ents", kind),
                   of_type("arrayIntersect(a.ents, b.ents)", kind)]
    params = {**params, "a": version_a, "b": version_b}
    common, *numbers = store.rows(
        f"SELECT count(), {', '.join(counts)} FROM ({side('a')}) AS a INNER JOIN ({side('b')}) AS b USING id", params
    )[0]
    items = {
        v: int(store.scalar(f"SELECT count() FROM ({side(v)})", params) or 0) for v in ("a", "b")
    }
    values = [int(n or 0) for n in numbers]
    return EntityDiff(
        items_a=items["a"],
        items_b=items["b"],
        common=int(common),
        total=EntityCounts(*values[:3]),
        by_type={kind: EntityCounts(*values[3 + 3 * k: 6 + 3 * k]) for k, kind in enumerate(ENTITY_TYPES)},
    )


def diff_versions(
    store: Store,
    version_a: str,
    version_b: str,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    task: str | None = None,
    top: int = 20,
    rank_by: RankBy = "min",
) -> VersionDiff:
    """Compare A and B on the items (ids) both scored, published in [since, until)."""
    if version_a == version_b:
        raise DataError("give two different model versions to compare")
    where, params = _range(since, until)
    task = resolve_task(store, version_a, version_b, task)
    params = {**params, "a": version_a, "b": version_b, "task": task}
    where = f"task = {{task:String}} AND {where}"

    def side(version: str, suffix: str) -> str:
        # One row per id: the sorting key is (task, model_version, id), so FINAL keeps the latest
        # delivery of each item whatever its published_at.
        return (
            f"SELECT id, label AS label_{suffix}, score AS score_{suffix} "
            f"FROM {store.database}.scored FINAL WHERE model_version = {{{version}:String}} AND {where}"
        )

    a_side, b_side = side("a", "a"), side("b", "b")
    joined = f"({a_side}) AS sa INNER JOIN ({b_side}) AS sb USING (id)"

    confusion: dict[str, dict[str, int]] = {}
    for label_a, label_b, n in store.rows(
        f"SELECT label_a, label_b, count() FROM {joined} GROUP BY label_a, label_b", params
    ):
        confusion.setdefault(label_a, {})[label_b] = int(n)

    labels_all: dict[str, dict[str, int]] = {"a": {}, "b": {}}
    for suffix, sub in (("a", a_side), ("b", b_side)):
        for label, n in store.rows(f"SELECT label_{suffix}, count() FROM ({sub}) GROUP BY 1 ORDER BY 1", params):
            labels_all[suffix][label] = int(n)

    rank = "least(score_a, score_b)" if rank_by == "min" else "score_b"
    rows = store.rows(
        f"SELECT id, label_a, score_a, label_b, score_b FROM {joined} "
        f"WHERE label_a != label_b ORDER BY {rank} DESC, id LIMIT {int(top)}",
        params,
    ) if top > 0 else []
    # Titles live once per item in `items`.
    titles = {
        str(i): str(t)
        for i, t in store.rows(
            f"SELECT id, title FROM {store.database}.items FINAL WHERE has({{ids:Array(String)}}, id)",
            {"ids": [str(r[0]) for r in rows]},
        )
    } if rows else {}
    changed = [
        ChangedItem(id=str(r[0]), title=titles.get(str(r[0]), ""), label_a=r[1], score_a=float(r[2]), label_b=r[3],
                    score_b=float(r[4]))
        for r in rows
    ]

    return VersionDiff(
        version_a=version_a,
        version_b=version_b,
        task=task,
        since=since,
        until=until,
        items_a=sum(labels_all["a"].values()),
        items_b=sum(labels_all["b"].values()),
        confusion=confusion,
        labels_all_a=labels_all["a"],
        labels_all_b=labels_all["b"],
        changed=changed,
        rank_by=rank_by,
    )
