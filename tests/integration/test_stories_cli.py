"""`yuqing stories run|evaluate`, `yuqing stories` and `yuqing similar` as a user runs them, on a
real chdb store holding the scored event set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stream.core.settings import StoreSettings
from stream.core.store import Store
from tests.helpers import run_cli
from tests.integration.story_job_rows import EVENTS, events, write_scored

pytestmark = pytest.mark.integration

RANGE = ("--from", "2026-01-01", "--to", "2027-01-01")


@pytest.fixture(scope="module")
def dsn(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A store with the event set scored and the job run once (by the command)."""
    path = tmp_path_factory.mktemp("stories") / "store"
    with Store(StoreSettings(dsn=f"chdb://{path}")) as store:
        store.init_schema()
        write_scored(store, events())
    dsn = f"chdb://{path}"
    run = run_cli("stories", "run", "--once", "--store", dsn, "--no-progress")
    assert run.returncode == 0, run.stderr
    assert "326 item(s) assigned" in run.stdout
    return dsn


def test_the_sql_contract_lists_every_item_with_its_story(dsn: str) -> None:
    out = run_cli("sql", "SELECT id, story_id, duplicate_of FROM yuqing.item_stories FINAL", "--store", dsn,
                  "--format", "json")
    assert out.returncode == 0, out.stderr
    rows = {r["id"]: r for r in json.loads(out.stdout)}
    gold = {x.item.id: x for x in events()}
    assert set(rows) == set(gold)
    assert all(r["story_id"] in rows for r in rows.values())
    originals = [r for r in rows.values() if r["duplicate_of"] == ""]
    assert 0 < len(originals) < len(rows)
    # Every gold near-copy is marked, pointing at its original.
    assert all(rows[i]["duplicate_of"] == x.duplicate_of for i, x in gold.items() if x.duplicate_of)
    # A second run finds nothing to do.
    again = run_cli("stories", "run", "--once", "--store", dsn, "--no-progress")
    assert again.returncode == 0 and again.stdout.startswith("0 item(s) assigned"), again.stdout


def test_top_stories_table_and_json(dsn: str) -> None:
    out = run_cli("stories", *RANGE, "--store", dsn, "--format", "json", "--limit", "5")
    assert out.returncode == 0, out.stderr
    top = json.loads(out.stdout)
    assert len(top) == 5
    assert [s["items"] for s in top] == sorted((s["items"] for s in top), reverse=True)
    assert all(s["size"] >= 2 and s["growth"] == s["items"] - s["before"] for s in top)
    quake = next(s for s in top if "地震" in s["titles"].get("zh", ""))
    assert set(quake["titles"]) == {"zh", "en"} and sum(quake["sentiment"].values()) == quake["size"]
    table = run_cli("stories", *RANGE, "--store", dsn, "--limit", "3")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].startswith("top stories, items published 2026-01-01 00:00")
    assert lines[1].startswith(" 1. ") and f"[{top[0]['story_id']}]" in lines[1]
    assert any(line.startswith("    zh: ") for line in lines) and any(line.startswith("    en: ") for line in lines)
    english = json.loads(run_cli("stories", *RANGE, "--store", dsn, "--lang", "en", "--format", "json").stdout)
    assert english and all("en" in s["languages"] for s in english)
    empty = run_cli("stories", "--from", "2020-01-01", "--to", "2020-02-01", "--store", dsn)
    assert empty.returncode == 0 and empty.stdout.startswith("no stories"), empty.stdout


def test_bad_range_is_a_one_line_error(dsn: str) -> None:
    out = run_cli("stories", "--from", "2026-06-01", "--to", "2026-05-01", "--store", dsn)
    assert out.returncode == 3 and out.stderr.strip() == "error: --to is not after --from"
    bad = run_cli("stories", "--from", "yesterday-ish", "--store", dsn)
    assert bad.returncode == 2 and "neither an RFC 3339 time nor a duration" in bad.stderr


def test_similar_finds_the_item_and_its_story(dsn: str) -> None:
    target = next(x for x in events() if x.item.id == "e15-3")
    out = run_cli("similar", target.item.title, "--store", dsn, "--limit", "4", "--format", "json")
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert len(found) == 4 and found[0]["id"] == "e15-3" and found[0]["similarity"] > 0.6
    assert [f["similarity"] for f in found] == sorted((f["similarity"] for f in found), reverse=True)
    assert found[0]["story_size"] >= 2
    text = run_cli("similar", "云南地震", "--store", dsn, "--limit", "2")
    assert text.returncode == 0 and len(text.stdout.splitlines()) == 2 and "story " in text.stdout
    assert run_cli("similar", "   ", "--store", dsn).returncode == 3


def test_stories_evaluate_is_wired(tmp_path: Path) -> None:
    out = run_cli("stories", "evaluate", str(EVENTS), "--embedder", "use", "--split", "test", "--json")
    assert out.returncode == 0, out.stderr
    (row,) = json.loads(out.stdout)
    assert row["embedder"] == "use" and row["items"] == 155 and row["ari"] > 0.7
