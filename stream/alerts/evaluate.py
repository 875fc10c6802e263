"""Evaluate the rules as of a moment: which alerts are due, after cool-downs and de-duplication.

`Evaluator.evaluate(at)` reads the store and the alert state and returns the alerts to fire; it
records nothing (the caller records each alert before notifying, so a crash never loses the
record of what fired).  Windows are half-open, ``[at - window, at)``, on ``published_at``.

An item scored after its window was evaluated (a slow feed, a consumer catching up) is in no
later window.  So `evaluate(at, scored_since=...)` also evaluates, per rule, the past windows
that hold items scored since then: windows aligned to multiples of the rule's window, so every
evaluator picks the same ones and the same alert ids.  Cool-downs apply in both directions of
time and an alert id fires once, so a window seen again (the next cycle, a restart) stays quiet.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from stream.alerts.alert import SHOWN_SAMPLES, Alert, Sample, make_alert_id
from stream.alerts.matching import term_pattern
from stream.alerts.queries import (
    LABEL_TASKS,
    TIME,
    Versions,
    group_expr,
    items_query,
    late_windows,
    latest_versions,
    representative_title,
    scope_label,
    stories_of,
    story_coverage,
    story_titles,
    version_coverage,
)
from stream.alerts.rules import AnyRule, NegativeSurgeRule, StorySurgeRule, VolumeSpikeRule, WatchListRule
from stream.alerts.state import AlertState
from stream.core.store import Store
from stream.core.times import format_duration

log = logging.getLogger(__name__)

__all__ = ["LATE_HORIZON", "AnyRule", "Evaluator"]

SAMPLE_IDS = 10  # item ids kept with a surge or spike alert
WATCH_IDS = 1000  # item ids one watch-list alert can report (the rest wait for the next cycle)
LATE_HORIZON = dt.timedelta(hours=24)  # windows that ended longer ago are not evaluated again

_KIND_LABEL = {
    "negative_surge": "负面激增 negative surge",
    "volume_spike": "声量突增 volume spike",
    "watch_list": "关注词命中 watch list",
    "story_surge": "事件发酵 story surge",
}


class Evaluator:
    def __init__(
        self,
        store: Store,
        rules: Sequence[AnyRule],
        state: AlertState,
        late_horizon: dt.timedelta = LATE_HORIZON,
    ) -> None:
        self.store = store
        self.rules = list(rules)
        self.state = state
        self.late_horizon = late_horizon
        # Per evaluation: (start, end) -> latest versions, window -> late window ends; rules
        # with the same lookback or window share one lookup.
        self._versions: dict[tuple[dt.datetime, dt.datetime], Versions] = {}
        self._late: dict[tuple[dt.timedelta, bool], list[dt.datetime]] = {}
        self._now = dt.datetime.min.replace(tzinfo=dt.UTC)

    def evaluate(self, at: dt.datetime, scored_since: dt.datetime | None = None) -> list[Alert]:
        """The alerts due at `at` (aware UTC), in rule order; with `scored_since`, also those of
        the past windows (within the late horizon) holding items scored at or after it."""
        self._versions, self._late, self._now = {}, {}, at
        due: list[Alert] = []
        for rule in self.rules:
            if not rule.enabled:
                continue
            moments = self._late_moments(rule, at, scored_since) if scored_since is not None else []
            fired: list[Alert] = []
            for moment in [*moments, at]:
                if isinstance(rule, NegativeSurgeRule):
                    candidates = self._negative_surge(rule, moment)
                elif isinstance(rule, VolumeSpikeRule):
                    candidates = self._volume_spike(rule, moment)
                elif isinstance(rule, StorySurgeRule):
                    candidates = self._story_surge(rule, moment)
                else:
                    candidates = self._watch_list(rule, moment, fired)
                fired.extend(self._past_cooldown(rule, moment, candidates, fired))
            due.extend(fired)
        return due

    # -- shared ------------------------------------------------------------------------------
    def _versions_for(self, rule: AnyRule, start: dt.datetime, end: dt.datetime) -> Versions:
        key = (start, end)
        if key not in self._versions:
            self._versions[key] = latest_versions(self.store, start, end)
        return self._versions[key].pinned(
            sentiment=rule.sentiment_version,
            risk=rule.risk_version,
            category=rule.category_version,
            entities=rule.entities_version,
        )

    def _covered_from(
        self, versions: Versions, rule: VolumeSpikeRule | StorySurgeRule, start: dt.datetime, at: dt.datetime
    ) -> dt.datetime | None:
        """When the versions a rule reads began covering [start, at): the head that drives the
        item list, and risk or category when the rule groups or filters by them."""
        read = [task for task in LABEL_TASKS if versions.of(task) is not None]
        if not read:
            return None
        by = rule.by if isinstance(rule, VolumeSpikeRule) else "all"
        picked = {"risk": rule.scope.risk, "category": rule.scope.category}
        tasks = (read[0], *(t for t in read[1:] if t in picked and (by == t or picked[t])))
        return version_coverage(self.store, versions, tasks, start, at)

    def _late_moments(self, rule: AnyRule, at: dt.datetime, since: dt.datetime) -> list[dt.datetime]:
        """Ends of the aligned windows before the current one that hold items scored since `since`
        (for a story rule, also items assigned to a story since then)."""
        key = (rule.window, isinstance(rule, StorySurgeRule))
        if key not in self._late:
            self._late[key] = late_windows(
                self.store, rule.window, since, at - self.late_horizon, at - rule.window, stories=key[1]
            )
        moments = self._late[key]
        if moments:
            log.info("%s: %d past window(s) hold items scored late", rule.name, len(moments))
        return moments

    def _past_cooldown(
        self, rule: AnyRule, at: dt.datetime, candidates: list[Alert], earlier: list[Alert]
    ) -> list[Alert]:
        """Drop what fired already (same alert id) and scopes that fired within a cool-down of
        `at`, before or after it (`earlier`: due in this evaluation, not yet recorded)."""
        if not candidates:
            return []
        near: set[str] = set()
        if rule.cooldown > dt.timedelta(0):
            near = self.state.fired_near(rule.name, at - rule.cooldown, at + rule.cooldown)
            near |= {a.scope for a in earlier if abs(a.window_end - at) < rule.cooldown}
        known = self.state.known(rule.name, [a.alert_id for a in candidates]) | {a.alert_id for a in earlier}
        due = []
        for alert in candidates:
            if alert.scope in near or alert.alert_id in known:
                log.debug("%s %s: fired already or in cool-down", rule.name, alert.scope)
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
            sample_ids=tuple(s.id for s in samples),
            message=f"[{_KIND_LABEL[rule.kind]}] {rule.name} · {scope}: {message}",
            fired_at=self._now,
            samples=tuple(samples[:SHOWN_SAMPLES]),
        )

    # -- negative surge ----------------------------------------------------------------------
    def _negative_surge(self, rule: NegativeSurgeRule, at: dt.datetime) -> list[Alert]:
        start = at - rule.window
        query = items_query(self.store.database, self._versions_for(rule, start, at), rule.scope, start, at)
        if query is None:
            return []
        # Neutral items are left out of the share and of min_items unless the rule includes them.
        counted = "uniqExact(id)" if rule.include_neutral else "uniqExactIf(id, NOT neutral)"
        sql = (
            # uniqExact: an item is counted once even if a join or an old layout repeats its row.
            f"SELECT {group_expr(rule.by)} AS grp, {counted} AS n, uniqExactIf(id, neg) AS negs, "
            "uniqExactIf(id, neutral) AS neutrals, "
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
        for grp, n, negs, neutrals, top in self.store.rows(sql, params):
            if rule.by in ("risk", "category", "source") and not grp:
                continue  # items without that head's label (no such model) are no group
            scope = scope_label(rule.by, str(grp), rule.scope)
            share = negs / n
            samples = [Sample(str(i), str(t), str(u), str(s)) for _, i, t, u, s in top]
            which = "items" if rule.include_neutral else "non-neutral items"
            left_out = f"; {neutrals} neutral left out" if neutrals and not rule.include_neutral else ""
            alerts.append(
                self._alert(
                    rule,
                    at,
                    scope,
                    share,
                    rule.threshold,
                    int(n),
                    samples,
                    f"{share:.0%} of {n} {which} negative in {format_duration(rule.window)} "
                    f"(threshold {rule.threshold:.0%}, min {rule.min_items} items{left_out})",
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
        covered_from = self._covered_from(versions, rule, start, at)
        if covered_from is None:
            return []
        usable = [k for k in range(1, rule.baseline_windows + 1) if covered_from < at - k * rule.window]
        if len(usable) < 2:
            log.info("%s: the model version began at %s, too recent for a baseline", rule.name, covered_from)
            return []
        window_ms = int(rule.window.total_seconds() * 1000)
        # Bucket 0 is [at - window, at), bucket k is the k-th window before it.
        sql = (
            "SELECT grp, bucket, uniqExact(id) AS n, "
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
            if now_count < rule.min_items or (rule.by in ("risk", "category", "source") and not grp):
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

    # -- story surge -------------------------------------------------------------------------
    def _story_surge(self, rule: StorySurgeRule, at: dt.datetime) -> list[Alert]:
        start = at - rule.lookback
        versions = self._versions_for(rule, start, at)
        query = items_query(self.store.database, versions, rule.scope, start, at)
        if query is None:
            return []
        usable: list[int] = []
        if rule.method == "ratio":
            # A baseline window counts only once the model versions and the stories job both covered
            # it: before that, every story would look new.
            versions_from = self._covered_from(versions, rule, start, at)
            stories_from = story_coverage(self.store, start, at)
            if versions_from is None or stories_from is None:
                return []
            covered_from = max(versions_from, stories_from)
            usable = [k for k in range(1, rule.baseline_windows + 1) if covered_from < at - k * rule.window]
            if not usable:
                log.info("%s: stories or model versions began at %s, too recent for a baseline", rule.name,
                         covered_from)
                return []
        # Bucket 0 is [at - window, at), bucket k the k-th window before it; only stories with at
        # least min_items in bucket 0 are read further.
        members = (
            "SELECT st.story_id AS story, "
            "intDiv({at_ms:Int64} - toUnixTimestamp64Milli(i.published_at) - 1, {window_ms:Int64}) AS bucket, "
            "i.published_at AS published_at, i.id AS id, i.title AS title, i.url AS url, i.source AS source "
            f"FROM ({query.sql}) AS i INNER JOIN (SELECT id, story_id FROM {self.store.database}.item_stories FINAL "
            f"WHERE published_at >= {{start:{TIME}}} AND published_at < {{end:{TIME}}}) AS st ON i.id = st.id"
        )
        sql = (
            f"WITH members AS ({members}), "
            "hot AS (SELECT story FROM members WHERE bucket = 0 GROUP BY story "
            "HAVING uniqExact(id) >= {min_items:UInt64}) "
            "SELECT story, bucket, uniqExact(id) AS n, "
            "arraySlice(arrayReverseSort(groupArray((published_at, id, title, url, source))), 1, "
            "{samples:UInt32}) AS top "
            "FROM members WHERE story IN (SELECT story FROM hot) GROUP BY story, bucket ORDER BY story, bucket"
        )
        params: dict[str, Any] = {
            **query.params,
            "samples": SAMPLE_IDS,
            "min_items": rule.min_items,
            "at_ms": int(at.timestamp() * 1000),
            "window_ms": int(rule.window.total_seconds() * 1000),
        }
        counts: dict[str, dict[int, int]] = defaultdict(dict)
        current: dict[str, list[tuple[str, str, str, str]]] = {}
        for story, bucket, n, top in self.store.rows(sql, params):
            counts[str(story)][int(bucket)] = int(n)
            if bucket == 0:
                current[str(story)] = [(str(i), str(t), str(u), str(s)) for _, i, t, u, s in top]
        titles = story_titles(self.store, list(current))
        alerts = []
        for story, series in sorted(counts.items()):
            now_count = series.get(0, 0)
            title = representative_title(titles.get(story, {})) or current[story][0][1]
            samples = [Sample(i, t, u, s, story, title) for i, t, u, s in current[story]]
            message = f"{now_count} items in {format_duration(rule.window)} on «{title}» ({story})"
            if rule.method == "ratio" and rule.threshold is not None:
                mean = sum(series.get(k, 0) for k in usable) / len(usable)
                value, threshold = now_count / max(mean, 1.0), rule.threshold
                if value < threshold:
                    continue
                message += (
                    f", {value:.1f}x its mean of {mean:.1f} over the previous "
                    f"{format_duration(len(usable) * rule.window)} "
                    f"(threshold {threshold:g}x, min {rule.min_items} items)"
                )
            else:
                value, threshold = float(now_count), float(rule.min_items)
                message += f" (threshold {rule.min_items} items)"
            alerts.append(
                self._alert(rule, at, f"story={story}", value, threshold, now_count, samples, message)
            )
        return alerts

    # -- watch list --------------------------------------------------------------------------
    def _watch_list(self, rule: WatchListRule, at: dt.datetime, earlier: list[Alert]) -> list[Alert]:
        start = at - rule.window
        versions = self._versions_for(rule, start, at)
        query = items_query(self.store.database, versions, rule.scope, start, at)
        if query is None:
            return []
        negative = " AND neg" if rule.negative_only else ""
        order = " ORDER BY published_at, id LIMIT 1 BY id LIMIT {limit:UInt64}"
        # Each match: the item and the 1-based indexes of what it matched, terms first, then entities.
        matches = []
        if rule.terms:
            matches += self.store.rows(
                "SELECT id, title, url, source, published_at, "
                "arrayFilter(i -> match(hay, {terms:Array(String)}[i]), "
                "range(1, length({terms:Array(String)}) + 1)) AS hits "
                f"FROM ({query.sql}) WHERE notEmpty(hits){negative}{order}",
                {**query.params, "terms": [term_pattern(t) for t in rule.terms], "limit": WATCH_IDS * len(rule.terms)},
            )
        specs = rule.entity_specs
        if specs and versions.entities is not None:
            # An entity matches a mention with its normalized form and, when the rule names one, its type.
            mentions = (
                "SELECT id, groupUniqArray(arrayJoin(arrayFilter(k -> normalized = {e_names:Array(String)}[k] "
                "AND ({e_types:Array(String)}[k] = '' OR type = {e_types:Array(String)}[k]), "
                "range(1, length({e_names:Array(String)}) + 1)))) AS hits "
                f"FROM {self.store.database}.entity_mentions "
                "WHERE model_version = {entities_version:String} AND has({e_names:Array(String)}, normalized) "
                f"AND published_at >= {{start:{TIME}}} AND published_at < {{end:{TIME}}} GROUP BY id"
            )
            offset = len(rule.terms)
            matches += [
                (*row[:5], [int(k) + offset for k in row[5]])
                for row in self.store.rows(
                    "SELECT i.id AS id, i.title AS title, i.url AS url, i.source AS source, "
                    f"i.published_at AS published_at, e.hits AS hits FROM ({query.sql}) AS i "
                    f"INNER JOIN ({mentions}) AS e ON i.id = e.id WHERE notEmpty(e.hits){negative}{order}",
                    {
                        **query.params,
                        "entities_version": versions.entities,
                        "e_names": [e.normalized for e in specs],
                        "e_types": [e.type for e in specs],
                        "limit": WATCH_IDS * len(specs),
                    },
                )
            ]
        if not matches:
            return []
        watched = [f"term={t}" for t in rule.terms] + [f"entity={e}" for e in rule.entities]
        stories = stories_of(self.store, [str(row[0]) for row in matches])
        titles = story_titles(self.store, [story for story, _ in stories.values()])
        per_scope: dict[int, list[Sample]] = defaultdict(list)
        for item_id, title, url, source, _published, hits in sorted(matches, key=lambda r: (r[4], r[0])):
            story, lang = stories.get(str(item_id), ("", ""))
            sample = Sample(str(item_id), str(title), str(url), str(source), story,
                            representative_title(titles.get(story, {}), lang) if story else "")
            for index in hits:
                per_scope[int(index) - 1].append(sample)
        reported = self.state.reported_ids(rule.name, start)
        for alert in earlier:  # a late window and the current one can share items
            reported.setdefault(alert.scope, set()).update(alert.sample_ids)
        alerts = []
        for index, samples in sorted(per_scope.items()):
            scope = watched[index]
            seen = reported.get(scope, set())
            new = [s for s in samples if s.id not in seen][:WATCH_IDS]
            if not new:
                continue
            newest_first = list(reversed(new))
            what = "mention" if index < len(rule.terms) else "name the entity"
            alerts.append(
                self._alert(
                    rule,
                    at,
                    scope,
                    float(len(new)),
                    1.0,
                    len(new),
                    # Newest first: notifications show the first few, the stored ids keep them all.
                    newest_first,
                    f"{len(new)} new item{'s' if len(new) != 1 else ''} {what} {scope.split('=', 1)[1]!r}"
                    + (" (negative)" if rule.negative_only else "")
                    + _stories_named(new),
                    discriminator="\x1e".join(sorted(s.id for s in new)),
                )
            )
        return alerts


def _stories_named(samples: Sequence[Sample], shown: int = 3) -> str:
    """'; stories: «title» (story id) ×2, ...': the stories the items belong to, most items first,
    each by the title its first item names it with."""
    counts: dict[str, int] = defaultdict(int)
    titles: dict[str, str] = {}
    for s in samples:
        if s.story_id:
            counts[s.story_id] += 1
            titles.setdefault(s.story_id, s.story_title)
    if not counts:
        return ""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    named = [f"«{titles[story] or story}» ({story})" + (f" ×{n}" if n > 1 else "") for story, n in ranked[:shown]]
    more = f" and {len(ranked) - shown} more" if len(ranked) > shown else ""
    return f"; stor{'ies' if len(ranked) > 1 else 'y'}: {', '.join(named)}{more}"
