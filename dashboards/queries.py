"""SQL building blocks shared by the dashboards.

Rules every panel follows (README "Dashboards" explains them):
* ``scored`` is read with ``FINAL``: its key is (task, model_version, id), so every delivery of an
  item collapses to one row, and each (id, model_version) counts once whatever the time range.
* One model version per task: ``$sentiment_model`` / ``$topic_model``, defaulting to the version
  that scored most recently.
* A template value reaches SQL only percent-encoded, as ``decodeURLComponent('${v:percentencode}')``:
  Grafana's percentencode leaves only ``[A-Za-z0-9%._~-]``, so no value (a quote, a backslash, a
  macro, a newline) can close the literal or reach the plugin's macro expansion.
* A multi-value variable is percent-encoded in glob form, ``{a,b}``; `in_selection` matches a value
  when ``,value,`` is part of ``,a,b,``.  A picked value is never missed; a value that itself holds
  a comma (``a,b``) also matches when its parts (``a`` and ``b``) are picked, and the other way round.
"""

from __future__ import annotations

ALL = "__all__"  # the multi-value variables' custom "All" value (it stays as is when percent-encoded)


def table(name: str) -> str:
    """A yuqing table in the database named by the hidden ``$db`` constant."""
    return "${db:raw}." + name


def value(variable: str) -> str:
    """The literal value of a template variable, whatever characters it holds."""
    return f"decodeURLComponent('${{{variable}:percentencode}}')"


SENTIMENT = f"task = 'sentiment' AND model_version = {value('sentiment_model')}"
TOPIC = f"task = 'topic' AND model_version = {value('topic_model')}"
KEYWORD = f"positionCaseInsensitiveUTF8(concat(title, ' ', text), {value('keyword')}) > 0"


def latest_versions(task: str) -> str:
    """Model versions of a task, the one that scored most recently first (the variable's default)."""
    return f"""
SELECT model_version
FROM {table('scored')}
WHERE task = '{task}'
GROUP BY model_version
ORDER BY max(scored_at) DESC"""


def options(column: str, where: str) -> str:
    """A multi-value variable's options: the distinct values of `column` for the current model version.

    Without FINAL: an option list may hold a value only a superseded delivery had (it then selects
    nothing), and reading it stays cheap.
    """
    return f"""
SELECT DISTINCT {column} FROM {table('scored')} WHERE {where} ORDER BY {column}"""


def in_selection(column: str, variable: str) -> str:
    """`column` is one of the values picked in a multi-value variable, or All is picked."""
    picked = value(variable)
    inner = f"substring({picked}, 2, length({picked}) - 2)"  # '{a,b}' -> 'a,b'
    return f"({picked} = '{ALL}' OR position(concat(',', {inner}, ','), concat(',', {column}, ',')) > 0)"


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


def story_items(columns: str = "id, published_at, source, lang, title, url, label, score", story: str = "") -> str:
    """Sentiment rows of the current model in the time range joined on id with their story row
    (`st.story_id`, `st.duplicate_of`, `st.similarity`); items the stories job has not assigned yet
    are left out.  `story`: only that story (a variable's name)."""
    only = f" AND story_id = {value(story)}" if story else ""
    return f"""
(
    SELECT {columns}
    FROM {table('scored')} FINAL
    WHERE {SENTIMENT} AND $__timeFilter(published_at)
) AS s
INNER JOIN (
    SELECT id, story_id, duplicate_of, similarity
    FROM {table('item_stories')} FINAL
    WHERE $__timeFilter(published_at){only}
) AS st USING id"""


def counted(column: str, limit: int = 0) -> str:
    """An aggregate: the values of `column` in the group with their counts, most first ('zh 5 · en 3');
    with `limit`, the first `limit` and '+N' for the rest."""
    counts = f"CAST(sumMap(map({column}, toUInt64(1))), 'Array(Tuple(String, UInt64))')"
    pairs = f"arraySort(p -> (-toInt64(p.2), p.1), {counts})"
    shown = f"arraySlice({pairs}, 1, {limit})" if limit else pairs
    text = f"arrayStringConcat(arrayMap(p -> concat(p.1, ' ', toString(p.2)), {shown}), ' · ')"
    if not limit:
        return text
    return f"concat({text}, if(length({pairs}) > {limit}, concat(' +', toString(length({pairs}) - {limit})), ''))"


def story_titles(titles: str) -> str:
    """A story's representative titles (a Map lang -> title), one per language: 'title zh / title en'."""
    return f"arrayStringConcat(mapValues({titles}), ' / ')"
