"""Evaluate the rules as of a moment: which alerts are due, after cool-downs and de-duplication.

`Evaluator.evaluate(at)` reads the store and the alert state and returns the alerts to fire; it
records nothing (the caller records each alert before notifying, so a crash never loses the
record of what fired).  Windows are half-open, ``[at - window, at)``, on ``published_at``.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from stream.alerts.alert import Alert, Sample, make_alert_id
from stream.alerts.matching import term_pattern
from stream.alerts.queries import (
    Versions,
    group_expr,
    items_query,
    latest_versions,
    scope_label,
    version_coverage,
)
from stream.alerts.rules import NegativeSurgeRule, VolumeSpikeRule, WatchListRule
from stream.alerts.state import AlertState
from stream.core.store import Store
from stream.core.times import format_duration

log = logging.getLogger(__name__)

AnyRule = NegativeSurgeRule | VolumeSpikeRule | WatchListRule

SAMPLE_IDS = 10  # item ids kept with a surge or spike alert
WATCH_IDS = 1000  # item ids one watch-list alert can report (the rest wait for the next cycle)
SHOWN_SAMPLES = 5  # items (title, link) carried to notifications

_KIND_LABEL = {
    "negative_surge": "负面激增 negative surge",
    "volume_spike": "声量突增 volume spike",
    "watch_list": "关注词命中 watch list",
}


class Evaluator:
    def __init__(self, store: Store, rules: Sequence[AnyRule], state: AlertState) -> None:
        self.store = store
        self.rules = list(rules)
        self.state = state
        # (start, end) -> latest versions; rules with the same lookback share one lookup a cycle.
        self._versions: dict[tuple[dt.datetime, dt.datetime], Versions] = {}

    def evaluate(self, at: dt.datetime) -> list[Alert]:
        """The alerts due at `at` (aware UTC), in rule order."""
        self._versions = {}
        due: list[Alert] = []
        for rule in self.rules:
            if not rule.enabled:
                continue
            if isinstance(rule, NegativeSurgeRule):
                candidates = self._negative_surge(rule, at)
            elif isinstance(rule, VolumeSpikeRule):
                candidates = self._volume_spike(rule, at)
            else:
                candidates = self._watch_list(rule, at)
            due.extend(self._past_cooldown(rule, at, candidates))
        return due

    # -- shared ------------------------------------------------------------------------------
    def _versions_for(self, rule: AnyRule, start: dt.datetime, end: dt.datetime) -> Versions:
        key = (start, end)
        if key not in self._versions:
            self._versions[key] = latest_versions(self.store, start, end)
        return self._versions[key].pinned(rule.sentiment_version, rule.topic_version)

    def _past_cooldown(self, rule: AnyRule, at: dt.datetime, candidates: list[Alert]) -> list[Alert]:
        if not candidates:
            return []
        last = self.state.last_fired(rule.name)
        due = []
        for alert in candidates:
            previous = last.get(alert.scope)
            if previous is not None and at - previous < rule.cooldown:
                log.debug("%s %s: in cool-down since %s", rule.name, alert.scope, previous)
                continue
            # Also covers an evaluator whose clock is behind the one that fired last.
            if previous is not None and previous > at:
                continue
            due.append(alert)
        return due

    def _bucket(self, rule: AnyRule, at: dt.datetime) -> str:
        """Two fires of one (rule, scope) are at least a cool-down apart, so they never share a
        bucket of that length; two evaluators firing the same incident almost always do."""
        length = rule.cooldown if rule.cooldown > dt.timedelta(0) else rule.window
        return str(int(at.timestamp() // length.total_seconds()))

    def _alert(
        self,
        rule: AnyRule,
        at: dt.datetime,
        scope: str,
        value: float,
        threshold: float,
        item_count: int,
        samples: list[Sample],
        message: str,
        discriminator: str | None = None,
        sample_ids: Sequence[str] | None = None,
    ) -> Alert:
        return Alert(
            alert_id=make_alert_id(rule.name, scope, discriminator or self._bucket(rule, at)),
            rule=rule.name,
            kind=rule.kind,
            severity=rule.severity,
            scope=scope,
            window_start=at - rule.window,
            window_end=at,
            value=value,
            threshold=threshold,
            item_count=item_count,
            sample_ids=tuple(sample_ids if sample_ids is not None else [s.id for s in samples]),
            message=f"[{_KIND_LABEL[rule.kind]}] {rule.name} · {scope}: {message}",
            fired_at=at,
            samples=tuple(samples[:SHOWN_SAMPLES]),
        )

    # -- negative surge ----------------------------------------------------------------------
    def _negative_surge(self, rule: NegativeSurgeRule, at: dt.datetime) -> list[Alert]:
        start = at - rule.window
        query = items_query(self.store.database, self._versions_for(rule, start, at), rule.scope, start, at)
        if query is None:
            return []
        sql = (
            f"SELECT {group_expr(rule.by)} AS grp, count() AS n, countIf(neg) AS negs, "
            "arraySlice(arrayReverseSort(groupArrayIf((neg_score, id, title, url, source), neg)), 1, "
            "{samples:UInt32}) AS top "
            f"FROM ({query.sql}) GROUP BY grp "
            "HAVING n >= {min_items:UInt64} AND negs >= {threshold:Float64} * n ORDER BY grp"
        )
        params: dict[str, Any] = {
            **query.params,
            "samples": SAMPLE_IDS,
            "min_items": rule.min_items,
            "threshold": rule.threshold,
        }
        alerts = []
        for grp, n, negs, top in self.store.rows(sql, params):
            if rule.by in ("topic", "source") and not grp:
                continue  # items without a topic (no topic model) are not a topic
            scope = scope_label(rule.by, str(grp), rule.scope)
            share = negs / n
            samples = [Sample(str(i), str(t), str(u), str(s)) for _, i, t, u, s in top]
            alerts.append(
                self._alert(
                    rule,
                    at,
                    scope,
                    share,
                    rule.threshold,
                    int(n),
                    samples,
                    f"{share:.0%} of {n} items negative in {format_duration(rule.window)} "
                    f"(threshold {rule.threshold:.0%}, min {rule.min_items} items)",
                )
            )
        return alerts

    # -- volume spike ------------------------------------------------------------------------
    def _volume_spike(self, rule: VolumeSpikeRule, at: dt.datetime) -> list[Alert]:
        start = at - rule.lookback
        versions = self._versions_for(rule, start, at)
        query = items_query(self.store.database, versions, rule.scope, start, at)
        if query is None:
            return []
        # Only baseline windows the chosen versions had begun scoring by their end count: right
        # after a new model version rolls out, its empty past is not a quiet baseline.
        tasks = ("sentiment", "topic") if rule.by == "topic" or rule.scope.topic else ("sentiment",)
        if versions.sentiment is None:
            tasks = ("topic",)
        covered_from = version_coverage(self.store, versions, tasks, start, at)
        if covered_from is None:
            return []
        usable = [k for k in range(1, rule.baseline_windows + 1) if covered_from < at - k * rule.window]
        if len(usable) < 2:
            log.info("%s: the model version began at %s, too recent for a baseline", rule.name, covered_from)
            return []
        window_ms = int(rule.window.total_seconds() * 1000)
        # Bucket 0 is [at - window, at), bucket k is the k-th window before it.
        sql = (
            "SELECT grp, bucket, count() AS n, "
            "arraySlice(arrayReverseSort(groupArray((published_at, id, title, url, source))), 1, "
            "{samples:UInt32}) AS top "
            f"FROM (SELECT {group_expr(rule.by)} AS grp, "
            "intDiv({at_ms:Int64} - toUnixTimestamp64Milli(published_at) - 1, {window_ms:Int64}) AS bucket, "
            f"published_at, id, title, url, source FROM ({query.sql})) "
            "GROUP BY grp, bucket ORDER BY grp, bucket"
        )
        params: dict[str, Any] = {
            **query.params,
            "samples": SAMPLE_IDS,
            "at_ms": int(at.timestamp() * 1000),
            "window_ms": window_ms,
        }
        windows = rule.baseline_windows
        counts: dict[str, list[int]] = defaultdict(lambda: [0] * (windows + 1))
        current: dict[str, list[Sample]] = {}
        for grp, bucket, n, top in self.store.rows(sql, params):
            if 0 <= bucket <= windows:
                counts[str(grp)][int(bucket)] = int(n)
            if bucket == 0:
                current[str(grp)] = [Sample(str(i), str(t), str(u), str(s)) for _, i, t, u, s in top]
        alerts = []
        for grp, series in counts.items():
            now_count, baseline = series[0], [series[k] for k in usable]
            if now_count < rule.min_items or (rule.by in ("topic", "source") and not grp):
                continue
            mean = sum(baseline) / len(baseline)
            if rule.method == "zscore":
                std = math.sqrt(sum((c - mean) ** 2 for c in baseline) / len(baseline))
                # A quiet baseline has a tiny sample deviation; counts vary at least like a
                # Poisson process, so never divide by less than sqrt(mean) (or 1).
                value = (now_count - mean) / max(std, math.sqrt(mean), 1.0)
                how = f"z = {value:.1f} (threshold {rule.threshold:g})"
            else:
                value = now_count / max(mean, 1.0)
                how = f"{value:.1f}x the baseline (threshold {rule.threshold:g}x)"
            if value < rule.threshold:
                continue
            scope = scope_label(rule.by, grp, rule.scope)
            alerts.append(
                self._alert(
                    rule,
                    at,
                    scope,
                    value,
                    rule.threshold,
                    now_count,
                    current.get(grp, []),
                    f"{now_count} items in {format_duration(rule.window)} against a mean of {mean:.1f} "
                    f"over the previous {format_duration(len(usable) * rule.window)}; {how}",
                )
            )
        return alerts

    # -- watch list --------------------------------------------------------------------------
    def _watch_list(self, rule: WatchListRule, at: dt.datetime) -> list[Alert]:
        start = at - rule.window
        query = items_query(self.store.database, self._versions_for(rule, start, at), rule.scope, start, at)
        if query is None:
            return []
        sql = (
            "SELECT id, title, url, source, published_at, "
            "arrayFilter(i -> match(hay, {terms:Array(String)}[i]), "
            "range(1, length({terms:Array(String)}) + 1)) AS hits "
            f"FROM ({query.sql}) WHERE notEmpty(hits)"
            + (" AND neg" if rule.negative_only else "")
            + " ORDER BY published_at, id LIMIT {limit:UInt64}"
        )
        params = {
            **query.params,
            "terms": [term_pattern(t) for t in rule.terms],
            "limit": WATCH_IDS * len(rule.terms),
        }
        per_term: dict[int, list[Sample]] = defaultdict(list)
        for item_id, title, url, source, _published, hits in self.store.rows(sql, params):
            for index in hits:
                per_term[int(index) - 1].append(Sample(str(item_id), str(title), str(url), str(source)))
        if not per_term:
            return []
        reported = self.state.reported_ids(rule.name, start)
        alerts = []
        for index, samples in sorted(per_term.items()):
            term = rule.terms[index]
            scope = f"term={term}"
            seen = reported.get(scope, set())
            new = [s for s in samples if s.id not in seen][:WATCH_IDS]
            if not new:
                continue
            ids = [s.id for s in new]
            alerts.append(
                self._alert(
                    rule,
                    at,
                    scope,
                    float(len(new)),
                    1.0,
                    len(new),
                    # Newest first for people; the stored ids keep them all.
                    list(reversed(new)),
                    f"{len(new)} new item{'s' if len(new) != 1 else ''} mention {term!r}"
                    + (" (negative)" if rule.negative_only else ""),
                    discriminator="\x1e".join(sorted(ids)),
                    sample_ids=ids,
                )
            )
        return alerts
