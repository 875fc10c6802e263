"""SQL building blocks shared by the dashboards.

Rules every panel follows (README "Dashboards" explains them):
* ``scored`` is read with ``FINAL`` (a re-delivered item is never counted twice), or counts come
  from ``scored_minute`` with ``uniqExactMerge(items)``.
* One model version per task: ``$sentiment_model`` / ``$topic_model``, defaulting to the version
  that scored most recently.
* Template values reach SQL only through quoting formats: ``${v:sqlstring}`` for values picked from
  lists, and the free-text keyword as ``decodeURLComponent('${keyword:percentencode}')`` — a
  percent-encoded string holds only ``[A-Za-z0-9%._~-]``, so no input can close the literal.
"""

from __future__ import annotations


def table(name: str) -> str:
    """A yuqing table in the database named by the hidden ``$db`` constant."""
    return "${db:raw}." + name


SENTIMENT = "task = 'sentiment' AND model_version = ${sentiment_model:sqlstring}"
TOPIC = "task = 'topic' AND model_version = ${topic_model:sqlstring}"
KEYWORD = "positionCaseInsensitiveUTF8(concat(title, ' ', text), decodeURLComponent('${keyword:percentencode}')) > 0"


def latest_versions(task: str) -> str:
    """Model versions of a task, the one that scored most recently first (the variable's default)."""
    return f"""
SELECT model_version
FROM {table('scored')}
WHERE task = '{task}'
GROUP BY model_version
ORDER BY max(scored_at) DESC"""


def in_selection(column: str, variable: str) -> str:
    """`column` is one of the values picked in a multi-value variable, or All is picked."""
    return f"('__all__' IN (${{{variable}:sqlstring}}) OR {column} IN (${{{variable}:sqlstring}}))"


def selection(extra_sentiment_columns: str = "") -> str:
    """The drill-down selection: one row per item with its sentiment and topic, all filters applied."""
    columns = "id, published_at, source, lang, title, url, label, score" + (
        f", {extra_sentiment_columns}" if extra_sentiment_columns else ""
    )
    return f"""
sel AS (
    SELECT s.*, t.label AS topic
    FROM (
        SELECT {columns}
        FROM {table('scored')} FINAL
        WHERE {SENTIMENT}
          AND $__timeFilter(published_at)
          AND {in_selection('source', 'source')}
          AND {in_selection('lang', 'lang')}
          AND {KEYWORD}
    ) AS s
    INNER JOIN (
        SELECT id, label
        FROM {table('scored')} FINAL
        WHERE {TOPIC} AND $__timeFilter(published_at)
    ) AS t USING id
    WHERE {in_selection('t.label', 'topic')}
)"""


def sentiment_with_topic(sentiment_filter: str = "", columns: str = "id, label") -> str:
    """Sentiment rows of the current model joined to their topic (the overview's join)."""
    extra = f" AND {sentiment_filter}" if sentiment_filter else ""
    return f"""
(
    SELECT {columns}
    FROM {table('scored')} FINAL
    WHERE {SENTIMENT} AND $__timeFilter(published_at){extra}
) AS s
INNER JOIN (
    SELECT id, label
    FROM {table('scored')} FINAL
    WHERE {TOPIC} AND $__timeFilter(published_at)
) AS t USING id"""
