"""Compare two model versions on the items both scored (`yuqing diff`).

Each version's rows are read with FINAL, one row per id (the latest delivery: ``scored`` is keyed
by (task, model_version, id)), so re-deliveries never count twice; the two sides are then joined
on id.  Everything is computed
in ClickHouse; only the confusion table and the top changed items come back.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from stream.core.errors import DataError
from stream.core.store import Store

RankBy = Literal["min", "b"]

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


def _version_tasks(store: Store, versions: tuple[str, str]) -> dict[str, list[str]]:
    rows = store.rows(
        f"SELECT model_version, task FROM {store.database}.scored "
        "WHERE model_version IN ({a:String}, {b:String}) GROUP BY model_version, task",
        {"a": versions[0], "b": versions[1]},
    )
    tasks: dict[str, list[str]] = {v: [] for v in versions}
    for version, task in rows:
        tasks[version].append(task)
    return tasks


def _known_versions(store: Store, limit: int = 8) -> str:
    rows = store.rows(
        f"SELECT model_version, any(task), uniqExact(id) FROM {store.database}.scored "
        f"GROUP BY model_version ORDER BY max(scored_at) DESC LIMIT {int(limit)}"
    )
    return ", ".join(f"{v} ({t}, {n} items)" for v, t, n in rows) or "none: the store has no scored rows"


def resolve_task(store: Store, version_a: str, version_b: str, task: str | None) -> str:
    """The task both versions belong to; a DataError names what is wrong and what exists."""
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
        return task
    common = sorted(set(tasks[version_a]) & set(tasks[version_b]))
    if not common:
        raise DataError(
            f"{version_a!r} scores {tasks[version_a]} and {version_b!r} scores {tasks[version_b]}: "
            "versions of different tasks cannot be compared"
        )
    if len(common) > 1:
        raise DataError(f"both versions have rows for several tasks {common}", hint="pick one with --task")
    return common[0]


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
    if since and until and since >= until:
        raise DataError(f"--since ({_iso(since)}) must be before --until ({_iso(until)})")
    task = resolve_task(store, version_a, version_b, task)
    params: dict[str, Any] = {"a": version_a, "b": version_b, "task": task}
    where = "task = {task:String}"
    if since is not None:
        where += " AND published_at >= {since:DateTime64(3, 'UTC')}"
        params["since"] = _ch_time(since)
    if until is not None:
        where += " AND published_at < {until:DateTime64(3, 'UTC')}"
        params["until"] = _ch_time(until)

    def side(version: str, suffix: str) -> str:
        # One row per id: the sorting key is (task, model_version, id), so FINAL keeps the latest
        # delivery of each item whatever its published_at.
        return (
            f"SELECT id, label AS label_{suffix}, score AS score_{suffix}, title AS title_{suffix} "
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
    changed = [
        ChangedItem(id=r[0], title=r[1], label_a=r[2], score_a=float(r[3]), label_b=r[4], score_b=float(r[5]))
        for r in store.rows(
            f"SELECT id, if(title_b != '', title_b, title_a), label_a, score_a, label_b, score_b FROM {joined} "
            f"WHERE label_a != label_b ORDER BY {rank} DESC, id LIMIT {int(top)}",
            params,
        )
    ] if top > 0 else []

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
