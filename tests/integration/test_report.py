"""`yuqing report` on a real store, opened in headless Chromium: the charts must draw."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image, ImageChops

from stream.alerts import LiveRunner, parse_rules
from stream.cli import cli
from stream.core.settings import StoreSettings
from stream.core.store import Store
from tests.integration.alerts_rows import demo_traffic, insert, item_rows, negative_surge_plant
from tests.integration.stories_rows import assign

pytestmark = pytest.mark.integration

T = dt.datetime(2025, 3, 10, 12, 0, tzinfo=dt.UTC)
CHROMIUM = next(
    (shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)),
    None,
)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (make system-deps)")
ROOT = Path(__file__).resolve().parents[2]
BRIEF_CSS = resources.files("stream.brief").joinpath("assets/brief.css").read_text("utf-8")
# Distinct characters of the brief's own title and headings, one per cell of the glyph page.
GLYPHS = "舆情日报负面要闻"
CELL = 160
LATIN_FONTS = Path("/usr/share/fonts/truetype/dejavu")


def _report(store_settings: StoreSettings, out: Path, *args: str) -> str:
    result = CliRunner().invoke(
        cli,
        ["report", "--out", str(out), "--store", store_settings.dsn, *args],
        env={"YUQING_STORE__DATABASE": store_settings.database},
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    return result.output


def _chromium(profile: Path, *args: str, env: dict[str, str] | None = None) -> str:
    assert CHROMIUM is not None
    done = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _dump_dom(page: Path, profile: Path) -> str:
    return _chromium(profile, "--dump-dom", page.as_uri())


def _screenshot(page: Path, png: Path, size: tuple[int, int], env: dict[str, str] | None = None) -> Image.Image:
    _chromium(
        png.with_suffix(".profile"),
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        "--virtual-time-budget=5000",  # let the page's script draw before the shot
        f"--window-size={size[0]},{size[1]}",
        f"--screenshot={png}",
        page.as_uri(),
        env=env,
    )
    return Image.open(png)


def _glyph_page(path: Path) -> Path:
    """Each of GLYPHS large in its own fixed cell, in the brief's own fonts (its CSS)."""
    cells = "".join(f'<div class="glyph" style="left:{i * CELL}px">{g}</div>' for i, g in enumerate(GLYPHS))
    path.write_text(
        f'<!DOCTYPE html><html lang="zh-CN"><head><meta charset="utf-8"><style>{BRIEF_CSS}\n'
        f".glyph {{ position: fixed; top: 0; width: {CELL}px; height: {CELL}px; font-size: {CELL * 3 // 4}px;"
        f" line-height: {CELL}px; text-align: center; }}</style></head><body>{cells}</body></html>",
        encoding="utf-8",
    )
    return path


def tofu(shot: Image.Image) -> list[str]:
    """Why the glyph cells do not show real CJK glyphs: a cell without ink (nothing drawn), or two
    cells alike (a missing-glyph box is the same for every character).  Empty when they all do."""
    ink = shot.convert("L").point(lambda v: 255 if v < 128 else 0)
    cells = dict(zip(GLYPHS, (ink.crop((i * CELL, 0, (i + 1) * CELL, CELL)) for i in range(len(GLYPHS))), strict=True))
    area = CELL * CELL
    problems = [f"{g}: nothing drawn" for g, cell in cells.items() if cell.histogram()[255] < area // 200]
    for (a, ca), (b, cb) in itertools.combinations(cells.items(), 2):
        if ImageChops.difference(ca, cb).histogram()[255] < area // 100:
            problems.append(f"{a} and {b} render alike")
    return problems


@pytest.fixture
def planted(store: Store) -> Store:
    insert(store, demo_traffic(T))
    insert(store, negative_surge_plant(T))
    insert(
        store,
        item_rows(
            "evil",
            T - dt.timedelta(minutes=3),
            title="<img src=x onerror=alert(1)> 化工厂爆炸",
            source="weibo",
            negative=True,
        ),
    )
    rules = {"rule": [{"name": "surge", "kind": "negative_surge", "by": "risk", "threshold": 0.5, "min_items": 30}]}
    with LiveRunner(store, parse_rules(rules)) as runner:
        assert len(runner.cycle(T)) == 1
    # The surge is one event: 40 of its 50 items in one story (two near-copies), 10 not assigned
    # yet; a second, smaller story of ordinary traffic, Chinese and English.
    assign(store, "surge-000", [f"surge-{n:03d}" for n in range(40)],
           duplicate_of={"surge-001": "surge-000", "surge-002": "surge-000"})
    other = [str(i) for (i,) in store.rows(
        f"SELECT id FROM {store.database}.scored FINAL WHERE task = 'sentiment' AND startsWith(id, 'd02') "
        "ORDER BY lang, id LIMIT 2 BY lang")]
    assign(store, other[0], other)
    return store


def _rows(page: str, table: str) -> list[str]:
    body = re.search(rf'<table class="{table}">.*?<tbody>(.*?)</tbody>', page, re.S)
    assert body, f"no {table} table"
    return re.findall(r"<tr[^>]*>.*?</tr>", body.group(1), re.S)


def test_brief_contents(planted: Store, store_settings: StoreSettings, tmp_path: Path) -> None:
    out = tmp_path / "brief.html"
    output = _report(store_settings, out, "--since", "2025-03-09T12:00:00Z", "--until", "2025-03-10T12:00:00Z")
    assert "1 alert(s)" in output
    page = out.read_text(encoding="utf-8")
    total = planted.scalar(
        f"SELECT count() FROM {planted.database}.scored FINAL WHERE task = 'sentiment' "
        "AND published_at >= {s:DateTime64(3,'UTC')} AND published_at < {e:DateTime64(3,'UTC')}",
        {"s": T - dt.timedelta(hours=24), "e": T},
    )
    assert f"<b>{total}</b>" in page
    assert "risk=社会" in page  # the fired alert
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert re.search(r'href="https://news\.example/weibo/evil"', page)
    assert "2025-03-09 12:00 – 2025-03-10 12:00 UTC" in page
    # 24 hourly buckets, the last one holding the surge.
    assert page.count('class="bar neg"') == 24


def test_brief_top_stories_and_one_negative_item_per_story(planted: Store, store_settings: StoreSettings,
                                                           tmp_path: Path) -> None:
    out = tmp_path / "brief.html"
    _report(store_settings, out, "--since", "2025-03-09T12:00:00Z", "--until", "2025-03-10T12:00:00Z")
    page = out.read_text(encoding="utf-8")
    assert page.index("今日要闻 · Top stories") < page.index("情感趋势 · Sentiment over time")
    stories = _rows(page, "stories")
    assert len(stories) == 2
    top, second = stories
    # The surge story: its 40 items by language and source, mostly negative, and its representative
    # titles (English: surge-002 is a near-copy, so surge-006).
    assert 'data-story="surge-000"' in top and '<td class="story-title">事故通报 0 / 事故通报 6</td>' in top
    assert '<td class="count">40</td>' in top and '<td class="count">90%</td>' in top
    assert '<td class="langs">zh 30 · en 10</td>' in top
    assert '<td class="story-sources">reuters 10 · weibo 10 · xinhua 10 · zhihu 10</td>' in top
    assert '<td class="count">4</td>' in second and "en 2 · zh 2" in second and " / " in second  # titles zh / en
    # Most negative items: one per story, and the unassigned items of the surge each on their own.
    items = _rows(page, "items")
    listed = re.findall(r"surge-(\d{3})", "".join(items))
    in_story = [n for n in listed if int(n) < 40]
    assert len(in_story) == 1, listed
    assert "同一事件另有 35 条负面 · 35 more on this story" in "".join(items)  # 36 of the 40 are negative
    assert len([n for n in listed if int(n) >= 40]) == 9  # surge-040..049, all negative but surge-040
    assert len(items) == 20


def test_the_brief_without_stories_lists_items_as_before(store: Store, store_settings: StoreSettings,
                                                        tmp_path: Path) -> None:
    insert(store, negative_surge_plant(T))
    out = tmp_path / "brief.html"
    _report(store_settings, out, "--since", "2025-03-09T12:00:00Z", "--until", "2025-03-10T12:00:00Z")
    page = out.read_text(encoding="utf-8")
    assert len(_rows(page, "items")) == 20 and 'class="stories"' not in page
    assert "今日要闻 · Top stories</h2><p class=\"empty\">" in page


def test_since_accepts_durations_and_rfc3339(planted: Store, store_settings: StoreSettings, tmp_path: Path) -> None:
    assert "items" in _report(store_settings, tmp_path / "a.html", "--since", "7d")
    output = _report(
        store_settings,
        tmp_path / "b.html",
        "--since",
        "2025-03-10T19:00:00+08:00",
        "--until",
        "2025-03-10T20:00:00+08:00",
    )
    assert "2025-03-10 11:00 – 2025-03-10 12:00 UTC" in output
    bad = CliRunner().invoke(cli, ["report", "--since", "yesterday", "--store", store_settings.dsn])
    assert bad.exit_code != 0


def _tied(store: Store) -> None:
    """Negative items whose P(negative) ties at 0.9 (the rest neutral or positive in different
    measure), published at different times, and entities with their items' sentiment."""
    rows = []
    for item_id, minutes, pos in (("t-pos-old", 50, 0.08), ("t-neu-old", 40, 0.0), ("t-neu-new", 10, 0.0),
                                  ("t-pos-new", 5, 0.08), ("t-mid", 30, 0.04)):
        rows += item_rows(item_id, T - dt.timedelta(minutes=minutes), sentiment="negative", category="society",
                          probs={"negative": 0.9, "neutral": round(0.1 - pos, 2), "positive": pos},
                          title=f"华为 {item_id}", entities=[("华为", "ORG")])
    rows += item_rows("top", T - dt.timedelta(minutes=45), sentiment="negative", category="finance",
                      probs={"negative": 0.95, "neutral": 0.05, "positive": 0.0}, title="《华为》亏损",
                      entities=[("《华为》", "ORG"), ("深圳", "LOC")])
    for n in range(4):
        rows += item_rows(f"n{n}", T - dt.timedelta(minutes=20 + n), sentiment="neutral", category="finance",
                          probs={"negative": 0.3, "neutral": 0.6, "positive": 0.1}, entities=[("深圳", "LOC")])
    rows += item_rows("p0", T - dt.timedelta(minutes=15), sentiment="positive", category="finance",
                      entities=[("华为", "LOC")])
    insert(store, rows)


def test_brief_by_category_entities_and_a_ranked_negative_list(store: Store, store_settings: StoreSettings,
                                                               tmp_path: Path) -> None:
    _tied(store)
    pages = []
    for name in ("a.html", "b.html"):
        _report(store_settings, tmp_path / name, "--since", "2025-03-10T10:00:00Z", "--until", "2025-03-10T12:00:00Z")
        pages.append((tmp_path / name).read_text(encoding="utf-8"))
    page = pages[0]
    # Ties at 0.900 ranked by less positive mass, then the newest: the same on every run.
    order = re.findall(r"/weibo/(\w[\w-]*)\"", "".join(_rows(page, "items")))
    assert order == ["top", "t-neu-new", "t-neu-old", "t-mid", "t-pos-new", "t-pos-old"]
    assert re.findall(r"/weibo/(\w[\w-]*)\"", "".join(_rows(pages[1], "items"))) == order
    assert '<td class="num">0.950</td>' in page and page.count('<td class="num">0.900</td>') == 5
    categories = _rows(page, "categories")
    # finance: 6 items, 1 negative, 4 neutral, 1 positive -> 50% of the non-neutral; society all negative.
    assert categories[0].startswith('<tr><td class="name">finance</td><td class="count">6</td><td class="count">1'
                                    '</td><td class="count">4</td><td class="count">1</td><td class="count">50%')
    assert '<td class="name">society</td><td class="count">5</td>' in categories[1] and "100%" in categories[1]
    entities = _rows(page, "entities")
    # 华为 as an ORG: five plain spellings and one in quotes, one entity named as most write it; as a
    # place it is another.
    assert '<td class="name">华为</td><td>ORG</td><td class="count">6</td><td class="count">6</td>' in entities[0]
    assert '<td class="name">深圳</td><td>LOC</td><td class="count">5</td><td class="count">1</td>' in entities[1]
    assert '<td class="name">华为</td><td>LOC</td><td class="count">1</td><td class="count">0</td>' in entities[2]
    assert len(entities) == 3


@needs_chromium
def test_brief_charts_draw_in_headless_chromium(planted: Store, store_settings: StoreSettings, tmp_path: Path) -> None:
    out = tmp_path / "brief.html"
    _report(store_settings, out, "--since", "2025-03-09T12:00:00Z", "--until", "2025-03-10T12:00:00Z")
    dom = _dump_dom(out, tmp_path / "profile")
    # The page's own script counted the shapes the browser laid out, per chart, after load.
    assert 'data-charts-rendered="3/3"' in dom
    rendered = dict(re.findall(r'data-chart="(\w+)"[^>]*data-rendered="(\d+)"', dom))
    assert set(rendered) == {"timeline", "risks", "sources"}
    assert int(rendered["timeline"]) >= 48  # 24 buckets x (negative + positive)
    assert int(rendered["risks"]) >= 2 * 5  # track + bar per risk topic
    assert int(rendered["sources"]) >= 2 * 4
    assert "<img" not in dom  # escaped data stayed text
    assert len(re.findall(r'<tr data-story="[^"]+">', dom)) == 2  # the top stories table laid out


def test_the_brief_names_a_cjk_font_stack() -> None:
    stack = re.search(r"body \{[^}]*font: [^,]+, ([^;]+);", BRIEF_CSS)
    assert stack, "body has no font shorthand"
    families = [f.strip().strip('"') for f in stack.group(1).split(",")]
    cjk = ["Noto Sans CJK SC", "Source Han Sans SC", "PingFang SC", "Microsoft YaHei", "WenQuanYi Micro Hei"]
    assert [f for f in families if f in cjk] == cjk
    assert families[-1] == "sans-serif"


@needs_chromium
def test_chinese_text_renders_as_real_glyphs(tmp_path: Path) -> None:
    shot = _screenshot(_glyph_page(tmp_path / "glyphs.html"), tmp_path / "glyphs.png", (CELL * len(GLYPHS), CELL))
    assert shot.size == (CELL * len(GLYPHS), CELL)
    assert tofu(shot) == [], "CJK text renders as missing glyphs: install fonts-noto-cjk (make system-deps)"


@needs_chromium
@pytest.mark.skipif(not LATIN_FONTS.is_dir(), reason=f"{LATIN_FONTS} (fonts-dejavu-core) is not installed")
def test_the_detector_flags_fonts_without_cjk(tmp_path: Path) -> None:
    # fontconfig limited to one Latin font folder: Chinese has nothing to fall back on.
    conf = tmp_path / "fonts.conf"
    conf.write_text(
        '<?xml version="1.0"?>\n<!DOCTYPE fontconfig SYSTEM "fonts.dtd">\n'
        f"<fontconfig><dir>{LATIN_FONTS}</dir><cachedir>{tmp_path / 'fc-cache'}</cachedir></fontconfig>\n",
        encoding="utf-8",
    )
    env = {**os.environ, "FONTCONFIG_FILE": str(conf)}
    shot = _screenshot(_glyph_page(tmp_path / "glyphs.html"), tmp_path / "glyphs.png", (CELL * len(GLYPHS), CELL), env)
    problems = tofu(shot)
    assert problems
    assert {g for g in GLYPHS if any(g in p for p in problems)} == set(GLYPHS)  # every character is flagged


@needs_chromium
def test_brief_screenshot(planted: Store, store_settings: StoreSettings, tmp_path: Path) -> None:
    """A shot of a real brief: a laid-out page with text, charts and the negative bars' red."""
    out = tmp_path / "brief.html"
    _report(store_settings, out, "--since", "2025-03-09T12:00:00Z", "--until", "2025-03-10T12:00:00Z")
    shot = _screenshot(out, tmp_path / "brief.png", (1200, 1500)).convert("RGB")
    assert shot.size == (1200, 1500)
    colours = [rgb for _, rgb in shot.getcolors(maxcolors=1200 * 1500) or [] if isinstance(rgb, tuple)]
    assert len(colours) > 50  # text, charts and tables, not a blank page
    assert any(r > 180 and g < 110 and b < 110 for r, g, b in colours)  # the negative bars' red
