"""What has fired already: the basis of cool-downs and of "one incident fires once".

`StoreState` reads and writes the `alerts` table, so a restarted evaluator (or a second one on
the same store) knows what its predecessor fired and which deliveries it left unfinished.
`MemoryState` answers the same questions from memory for dry runs (`yuqing alerts test`), which
must not write.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Protocol

from stream.alerts.alert import SHOWN_SAMPLES, Alert, DeliveryStatus, Sample
from stream.alerts.queries import TIME, representative_title, stories_of, story_titles
from stream.core.schema import ALERT_COLUMNS, ALERT_DELIVERY_COLUMNS
from stream.core.store import Store


class AlertState(Protocol):
    def fired_near(self, rule: str, start: dt.datetime, end: dt.datetime) -> set[str]:
        """The scopes with an alert of `rule` whose window ended strictly between start and end."""
        ...

    def reported_ids(self, rule: str, since: dt.datetime) -> dict[str, set[str]]:
        """scope -> item ids named by alerts of `rule` whose window ended at or after `since`."""
        ...

    def known(self, rule: str, alert_ids: Sequence[str]) -> set[str]:
        """Those of `alert_ids` already fired."""
        ...


class StoreState:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._table = f"{store.database}.alerts"

    def fired_near(self, rule: str, start: dt.datetime, end: dt.datetime) -> set[str]:
        rows = self.store.rows(
            f"SELECT DISTINCT scope FROM {self._table} FINAL WHERE rule = {{rule:String}} "
            f"AND window_end > {{start:{TIME}}} AND window_end < {{end:{TIME}}}",
            {"rule": rule, "start": start, "end": end},
        )
        return {str(scope) for (scope,) in rows}

    def reported_ids(self, rule: str, since: dt.datetime) -> dict[str, set[str]]:
        rows = self.store.rows(
            f"SELECT scope, groupUniqArray(arrayJoin(sample_ids)) FROM {self._table} FINAL "
            f"WHERE rule = {{rule:String}} AND window_end >= {{since:{TIME}}} GROUP BY scope",
            {"rule": rule, "since": since},
        )
        return {str(scope): set(ids) for scope, ids in rows}

    def known(self, rule: str, alert_ids: Sequence[str]) -> set[str]:
        if not alert_ids:
            return set()
        rows = self.store.rows(
            f"SELECT DISTINCT alert_id FROM {self._table} "
            "WHERE rule = {rule:String} AND has({ids:Array(String)}, alert_id)",
            {"rule": rule, "ids": list(alert_ids)},
        )
        return {str(alert_id) for (alert_id,) in rows}

    def record(self, alert: Alert, status: DeliveryStatus, at: dt.datetime) -> None:
        """Write the alert with its delivery status as of `at`; the latest round wins under FINAL."""
        row: list[Any] = [
            *alert.row(),
            status.delivery,
            status.attempts,
            list(status.delivered_to),
            status.last_error,
            at,
        ]
        self.store.insert("alerts", [row], ALERT_COLUMNS + ALERT_DELIVERY_COLUMNS)

    def pending(self, limit: int) -> list[tuple[Alert, DeliveryStatus]]:
        """Up to `limit` alerts whose delivery is unfinished, oldest first, with the titles, links
        and stories of their samples read back from the store."""
        columns = ", ".join(ALERT_COLUMNS)
        rows = self.store.rows(
            f"SELECT {columns}, attempts, delivered_to, last_error FROM {self._table} FINAL "
            "WHERE delivery = 'pending' ORDER BY window_end, alert_id LIMIT {limit:UInt32}",
            {"limit": limit},
        )
        if not rows:
            return []
        width, ids_at = len(ALERT_COLUMNS), ALERT_COLUMNS.index("sample_ids")
        wanted = sorted({str(i) for row in rows for i in row[ids_at][:SHOWN_SAMPLES]})
        stories = stories_of(self.store, wanted)
        titles = story_titles(self.store, [story for story, _ in stories.values()])

        def sample(item_id: str, title: str, url: str, source: str) -> Sample:
            story, lang = stories.get(item_id, ("", ""))
            named = representative_title(titles.get(story, {}), lang) if story else ""
            return Sample(item_id, title, url, source, story, named)

        known = {
            str(i): sample(str(i), str(t), str(u), str(s))
            for i, t, u, s in self.store.rows(
                f"SELECT id, title, url, source FROM {self.store.database}.items FINAL "
                "WHERE has({ids:Array(String)}, id)",
                {"ids": wanted},
            )
        }
        out = []
        for row in rows:
            attempts, done, error = row[width:]
            status = DeliveryStatus("pending", int(attempts), tuple(str(h) for h in done), str(error))
            out.append((Alert.from_row(row[:width], known), status))
        return out


class MemoryState:
    def __init__(self) -> None:
        self.fired: list[Alert] = []

    def fired_near(self, rule: str, start: dt.datetime, end: dt.datetime) -> set[str]:
        return {a.scope for a in self.fired if a.rule == rule and start < a.window_end < end}

    def reported_ids(self, rule: str, since: dt.datetime) -> dict[str, set[str]]:
        out: dict[str, set[str]] = defaultdict(set)
        for alert in self.fired:
            if alert.rule == rule and alert.window_end >= since:
                out[alert.scope].update(alert.sample_ids)
        return dict(out)

    def known(self, rule: str, alert_ids: Sequence[str]) -> set[str]:
        ids = set(alert_ids)
        return {a.alert_id for a in self.fired if a.rule == rule and a.alert_id in ids}

    def record(self, alert: Alert) -> None:
        self.fired.append(alert)
