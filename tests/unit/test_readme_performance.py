"""README's performance table is the recorded bench run (deploy/bench/bench-cpu.json), figure by figure."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _rows() -> dict[str, list[str]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Performance", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and "×" in cells[1]:
            rows[cells[0]] = re.findall(r"\d+\.\d+", cells[1])
    return rows


def test_every_figure_of_the_readme_table_is_the_recorded_run() -> None:
    report = json.loads((ROOT / "deploy" / "bench" / "bench-cpu.json").read_text(encoding="utf-8"))
    ratios = report["ratios"]
    cases = {c["name"]: c for c in report["cases"]}
    int8_b32 = cases["onnx-int8 b32"]["items_per_s"] / cases["onnx-fp32 b32"]["items_per_s"]
    expected = {
        "full analysis": [ratios["analysis_vs_single"]],
        "trimmed vocabulary": [ratios["trim_size"], ratios["trim_rss"]],
        "consumer end to end": [ratios["e2e_vs_raw_onnx"]],
        "int8 over fp32": [int8_b32],
        "the scorer as the consumer runs it": [ratios["scorer_vs_torch"]],
    }
    rows = _rows()
    assert len(rows) == len(expected)
    for start, values in expected.items():
        shown = next(figures for label, figures in rows.items() if label.startswith(start))
        assert len(shown) == len(values)
        for figure, value in zip(shown, values, strict=True):
            decimals = len(figure.split(".")[1])  # as printed: "3.10" is two decimals
            assert abs(float(figure) - value) <= 0.5 * 10 ** -decimals + 1e-9, (start, figure, value)
