"""Grafana-managed alert rules (provisioning file) mirroring yuqing's default alert rules.

`yuqing alerts` evaluates the rules of ``alerts.toml`` itself and writes the ``alerts`` table; these
are the same two ideas as Grafana rules, for teams that route notifications through Grafana:

* negative surge: per risk topic, share of negative items among the non-neutral ones over the last
  hour > 0.5 with at least 20 non-neutral items (neutral items are left out, as `yuqing alerts`
  leaves them out by default);
* volume spike: z-score of the last hour's item count against the 168 hours before it > 3.

Both read the most recent model versions from ``scored FINAL``, so each (id, model_version) counts
once.  Alert queries cannot use dashboard variables, so the database name is fixed at build time
and the datasource is the provisioned uid.
"""

from __future__ import annotations

from typing import Any

from dashboards.grafana import DATASOURCE_UID, FORMAT_TABLE

NEGATIVE_SHARE = 0.5
MIN_ITEMS = 20
VOLUME_Z = 3.0
BASELINE_HOURS = 168


def _latest(db: str, task: str) -> str:
    return (f"(SELECT model_version FROM {db}.scored WHERE task = '{task}' "
            "GROUP BY model_version ORDER BY max(scored_at) DESC LIMIT 1)")


def negative_surge_sql(db: str) -> str:
    return f"""
SELECT r.label AS risk,
       if(countIf(s.label != 'neutral') >= {MIN_ITEMS},
          countIf(s.label = 'negative') / countIf(s.label != 'neutral'), 0) AS negative_share
FROM (
    SELECT id, label FROM {db}.scored FINAL
    WHERE task = 'sentiment' AND model_version = {_latest(db, 'sentiment')} AND $__timeFilter(published_at)
) AS s
INNER JOIN (
    SELECT id, label FROM {db}.scored FINAL
    WHERE task = 'risk' AND model_version = {_latest(db, 'risk')} AND $__timeFilter(published_at)
) AS r USING id
GROUP BY risk""".strip()


def volume_z_sql(db: str) -> str:
    # Hour buckets counted back from the end of the range: b = 0 is the last hour, 1..168 the baseline
    # (hours without items count as zero, hence sums over a fixed number of hours).
    n = BASELINE_HOURS
    return f"""
SELECT (sumIf(items, b = 0) - sumIf(items, b > 0) / {n})
       / greatest(sqrt(greatest(sumIf(items * items, b > 0) / {n} - pow(sumIf(items, b > 0) / {n}, 2), 0)), 1)
       AS volume_z
FROM (
    SELECT intDiv(toUInt32(greatest(dateDiff('second', published_at, $__toTime), 0)), 3600) AS b,
           count() AS items
    FROM {db}.scored FINAL
    WHERE task = 'sentiment' AND model_version = {_latest(db, 'sentiment')} AND $__timeFilter(published_at)
    GROUP BY b
    HAVING b <= {n}
)""".strip()


def _query(sql: str, seconds: int) -> dict[str, Any]:
    return {
        "refId": "A",
        "relativeTimeRange": {"from": seconds, "to": 0},
        "datasourceUid": DATASOURCE_UID,
        "model": {
            "refId": "A",
            "datasource": {"type": "grafana-clickhouse-datasource", "uid": DATASOURCE_UID},
            "editorType": "sql",
            "format": FORMAT_TABLE,
            "queryType": "table",
            "rawSql": sql,
            "intervalMs": 60000,
            "maxDataPoints": 43200,
        },
    }


def _threshold(above: float) -> dict[str, Any]:
    return {
        "refId": "C",
        "datasourceUid": "__expr__",
        "model": {
            "refId": "C",
            "type": "threshold",
            "expression": "A",
            "datasource": {"type": "__expr__", "uid": "__expr__"},
            "conditions": [{"evaluator": {"type": "gt", "params": [above]}}],
        },
    }


def _rule(uid: str, title: str, sql: str, seconds: int, above: float, summary: str, kind: str) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "condition": "C",
        "data": [_query(sql, seconds), _threshold(above)],
        "noDataState": "OK",
        "execErrState": "Error",
        "for": "0s",
        "isPaused": False,
        "annotations": {"summary": summary},
        "labels": {"source": "yuqing", "rule": kind, "severity": "warning"},
    }


def provisioning(database: str, folder: str = "yuqing") -> dict[str, Any]:
    """The alerting provisioning document (apiVersion 1) for Grafana's unified alerting."""
    return {
        "apiVersion": 1,
        "groups": [
            {
                "orgId": 1,
                "name": "yuqing",
                "folder": folder,
                "interval": "1m",
                "rules": [
                    _rule(
                        "yuqing-negative-surge",
                        "Negative surge",
                        negative_surge_sql(database),
                        3600,
                        NEGATIVE_SHARE,
                        f"Over the last hour more than {NEGATIVE_SHARE:.0%} of the non-neutral items on risk "
                        f"topic {{{{ $labels.risk }}}} are negative (at least {MIN_ITEMS} non-neutral items).",
                        "negative_surge",
                    ),
                    _rule(
                        "yuqing-volume-spike",
                        "Volume spike",
                        volume_z_sql(database),
                        (BASELINE_HOURS + 1) * 3600,
                        VOLUME_Z,
                        f"The last hour's item count is more than {VOLUME_Z:g} standard deviations above "
                        f"the hourly mean of the previous {BASELINE_HOURS} hours.",
                        "volume_spike",
                    ),
                ],
            }
        ],
    }
