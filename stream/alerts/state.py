"""What has fired already: the basis of cool-downs and of "one incident fires once".

`StoreState` reads and writes the `alerts` table, so a restarted evaluator (or a second one on
the same store) knows what its predecessor fired.  `MemoryState` answers the same questions from
memory for dry runs (`yuqing alerts test`), which must not write.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Protocol

from stream.alerts.alert import Alert
from stream.alerts.queries import TIME
from stream.core.schema import ALERT_COLUMNS
from stream.core.store import Store
from stream.core.times import as_utc


class AlertState(Protocol):
    def last_fired(self, rule: str) -> dict[str, dt.datetime]:
        """scope -> the end of the window of the latest alert of `rule` for that scope."""
        ...

    def reported_ids(self, rule: str, since: dt.datetime) -> dict[str, set[str]]:
        """scope -> item ids named by alerts of `rule` whose window ended at or after `since`."""
        ...

    def record(self, alert: Alert) -> None: ...


class StoreState:
    def __init__(self, store: Store) -> None:
        self.store = store

    def last_fired(self, rule: str) -> dict[str, dt.datetime]:
        rows = self.store.rows(
            f"SELECT scope, max(window_end) FROM {self.store.database}.alerts FINAL "
            "WHERE rule = {rule:String} GROUP BY scope",
            {"rule": rule},
        )
        return {str(scope): as_utc(end) for scope, end in rows}

    def reported_ids(self, rule: str, since: dt.datetime) -> dict[str, set[str]]:
        rows = self.store.rows(
            f"SELECT scope, groupUniqArray(arrayJoin(sample_ids)) FROM {self.store.database}.alerts FINAL "
            f"WHERE rule = {{rule:String}} AND window_end >= {{since:{TIME}}} GROUP BY scope",
            {"rule": rule, "since": since},
        )
        return {str(scope): set(ids) for scope, ids in rows}

    def record(self, alert: Alert) -> None:
        self.store.insert("alerts", [alert.row()], ALERT_COLUMNS)


class MemoryState:
    def __init__(self) -> None:
        self.fired: list[Alert] = []
        self._last: dict[str, dict[str, dt.datetime]] = defaultdict(dict)

    def last_fired(self, rule: str) -> dict[str, dt.datetime]:
        return dict(self._last[rule])

    def reported_ids(self, rule: str, since: dt.datetime) -> dict[str, set[str]]:
        out: dict[str, set[str]] = defaultdict(set)
        for alert in self.fired:
            if alert.rule == rule and alert.window_end >= since:
                out[alert.scope].update(alert.sample_ids)
        return dict(out)

    def record(self, alert: Alert) -> None:
        self.fired.append(alert)
        previous = self._last[alert.rule].get(alert.scope)
        if previous is None or alert.window_end > previous:
            self._last[alert.rule][alert.scope] = alert.window_end
