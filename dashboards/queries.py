"""SQL building blocks shared by the dashboards.

Rules every panel follows (README "Dashboards" explains them):
* ``scored`` is read with ``FINAL``: its key is (task, model_version, id), so every delivery of an
  item collapses to one row, and each (id, model_version) counts once whatever the time range;
  ``items`` (keyed by id) and ``entities`` (by model_version, id; the ``entity_mentions`` view
  reads it with FINAL) likewise.
* One model version per head: ``$sentiment_model``, ``$risk_model``, ``$category_model``,
  ``$entities_model``, each defaulting to the version that scored most recently.
* An item's title, url and text are in ``items`` (kept once per id), joined on id where a panel
  shows or searches them; its risk and category rows are joined on id too.
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
ENTITIES = f"model_version = {value('entities_model')}"
KEYWORD = f"positionCaseInsensitiveUTF8(concat(x.title, ' ', x.text), {value('keyword')}) > 0"



def neutral_share(label: str = "label") -> str:
    """The share of a group of sentiment rows labelled neutral."""
    return f"countIf({label} = 'neutral') / count()"


def negative_share(label: str = "label") -> str:
    """The share of the group's non-neutral rows labelled negative, as the brief and the
    negative-surge rule count it (NULL when every row is neutral)."""
    return f"countIf({label} = 'negative') / nullIf(countIf({label} != 'neutral'), 0)"


def sentiment_counts(label: str = "label") -> str:
    """A group's rows per sentiment label, as bar-chart columns."""
    return (f"countIf({label} = 'negative') AS negative, countIf({label} = 'neutral') AS neutral, "
            f"countIf({label} = 'positive') AS positive")


def head_filter(head: str) -> str:
    """The rows of a sequence head scored by the version its `<head>_model` variable picks."""
    return f"task = '{head}' AND model_version = {value(head + '_model')}"


def latest_versions(task: str) -> str:
    """Model versions of a head, the one that scored most recently first (the variable's default);
    `entities` reads the entities table."""
    source = table('entities') if task == "entities" else f"{table('scored')}\nWHERE task = '{task}'"
    return f"""
SELECT model_version
FROM {source}
GROUP BY model_version
ORDER BY max(scored_at) DESC"""


def options(column: str, where: str, source: str = "scored") -> str:
    """A multi-value variable's options: the distinct values of `column` in `source` for the current
    model version.

    Without FINAL: an option list may hold a value only a superseded delivery had (it then selects
    nothing), and reading it stays cheap.
    """
    return f"""
SELECT DISTINCT {column} FROM {table(source)} WHERE {where} ORDER BY {column}"""


def in_selection(column: str, variable: str) -> str:
    """`column` is one of the values picked in a multi-value variable, or All is picked."""
    picked = value(variable)
    inner = f"substring({picked}, 2, length({picked}) - 2)"  # '{a,b}' -> 'a,b'
    return f"({picked} = '{ALL}' OR position(concat(',', {inner}, ','), concat(',', {column}, ',')) > 0)"


def _head_join(head: str) -> str:
    # LEFT: an item keeps counting where a head has no row (a package without it); its label is ''.
    return f"""
LEFT JOIN (
    SELECT id, label
    FROM {table('scored')} FINAL
    WHERE {head_filter(head)} AND $__timeFilter(published_at)
) AS {head[0]} USING id"""


def _text_join(columns: str) -> str:
    # An item's url, title and text are kept once, in `items` (LEFT: a missing row is an empty text).
    return f"""
LEFT JOIN (
    SELECT id, {columns}
    FROM {table('items')} FINAL
    WHERE $__timeFilter(published_at)
) AS x USING id"""


def scored_items(columns: str = "id, label", *, sentiment_filter: str = "", heads: tuple[str, ...] = (),
                 text: str = "") -> str:
    """A FROM clause: the sentiment rows of the current model in the time range (alias ``s``),
    joined on id with the label of each of `heads` (alias ``r`` for risk, ``c`` for category) and,
    with `text` (columns of ``items``: 'title, url'), with the item's text row (alias ``x``)."""
    extra = f" AND {sentiment_filter}" if sentiment_filter else ""
    return f"""
(
    SELECT {columns}
    FROM {table('scored')} FINAL
    WHERE {SENTIMENT} AND $__timeFilter(published_at){extra}
) AS s""" + "".join(_head_join(h) for h in heads) + (_text_join(text) if text else "")


def selection() -> str:
    """The drill-down selection: one row per item with its sentiment, risk, category, title and
    url, all filters applied."""
    return f"""
sel AS (
    SELECT s.id AS id, s.published_at AS published_at, s.source AS source, s.lang AS lang, s.label AS label,
           s.score AS score, r.label AS risk, c.label AS category, x.title AS title, x.url AS url
    FROM {scored_items("id, published_at, source, lang, label, score", heads=("risk", "category"),
                       text="title, url, text")}
    WHERE {in_selection('s.source', 'source')}
      AND {in_selection('s.lang', 'lang')}
      AND {in_selection('r.label', 'risk')}
      AND {in_selection('c.label', 'category')}
      AND {KEYWORD}
)"""


def story_items(columns: str = "id, published_at, source, lang, label, score", story: str = "",
                text: str = "") -> str:
    """Sentiment rows of the current model in the time range joined on id with their story row
    (`st.story_id`, `st.duplicate_of`, `st.similarity`) and, with `text`, their text row (``x``);
    items the stories job has not assigned yet are left out.  `story`: only that story (a variable's name)."""
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
) AS st USING id""" + (_text_join(text) if text else "")


def top_entities(limit: int, within: str = "") -> str:
    """The entities (one normalized form and type) named by most items in the time range, of the
    picked types: their commonest spelling, mentions, items and the negative share of those items
    (the entity package's own sentiment, neutral left out).  `within`: a subquery of the item ids
    to count in."""
    only = f"\n  AND id IN ({within})" if within else ""
    return f"""
SELECT {most_frequent('text')} AS entity, type, count() AS mentions, uniqExact(id) AS items,
       uniqExactIf(id, sentiment = 'negative') / nullIf(uniqExactIf(id, sentiment != 'neutral'), 0) AS negative
FROM {table('entity_mentions')}
WHERE {ENTITIES} AND $__timeFilter(published_at)
  AND {in_selection('type', 'entity_type')}{only}
GROUP BY normalized, type
ORDER BY items DESC, mentions DESC, normalized, type
LIMIT {limit}"""


def _tally(column: str) -> str:
    """The values of `column` in the group with their counts, most first (ties by value)."""
    counts = f"CAST(sumMap(map({column}, toUInt64(1))), 'Array(Tuple(String, UInt64))')"
    return f"arraySort(p -> (-toInt64(p.2), p.1), {counts})"


def most_frequent(column: str) -> str:
    """The commonest value of `column` in the group (ties: the first in sort order)."""
    return f"{_tally(column)}[1].1"


def counted(column: str, limit: int = 0) -> str:
    """An aggregate: the values of `column` in the group with their counts, most first ('zh 5 · en 3');
    with `limit`, the first `limit` and '+N' for the rest."""
    pairs = _tally(column)
    shown = f"arraySlice({pairs}, 1, {limit})" if limit else pairs
    text = f"arrayStringConcat(arrayMap(p -> concat(p.1, ' ', toString(p.2)), {shown}), ' · ')"
    if not limit:
        return text
    return f"concat({text}, if(length({pairs}) > {limit}, concat(' +', toString(length({pairs}) - {limit})), ''))"


def story_titles(titles: str) -> str:
    """A story's representative titles (a Map lang -> title), one per language: 'title zh / title en'."""
    return f"arrayStringConcat(mapValues({titles}), ' / ')"
