"""The HTML report's inline SVG charts, checked against a real run: each bar's height, whiskers and
chance line follow results.json, each control's bar its paired difference; tasks without data get no
chart and no details table; and a real headless Chromium draws them (skipped where it is absent)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest
from conftest import run_cli

from medmim_eval.exports.svg_charts import (
    BAR_W,
    CHANCE_COLOUR,
    CONTROL_COLOURS,
    DELTA_W,
    PLOT_H,
    model_colours,
)

SVG = "{http://www.w3.org/2000/svg}"
MODELS = ["majority", "random"]
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict]:
    """A run of two baselines on one synthetic task and its @blind control; the report, results, controls."""
    base = tmp_path_factory.mktemp("charts")
    env = {"MEDMIM_CACHE_DIR": str(base / "cache"), "XDG_CONFIG_HOME": str(base / "config"),
           "XDG_DATA_HOME": str(base / "data"), "HF_HUB_OFFLINE": "1"}
    out = base / "run"
    result = run_cli("run", "-m", ",".join(MODELS), "-t", "synth-temporal:closed,synth-temporal@blind:closed",
                     "-o", str(out), "-q", env=env)
    assert result.returncode == 0, result.stderr
    page = base / "report.html"
    result = run_cli("leaderboard", str(out), "--controls", "--ci", "--format", "html", "-o", str(page),
                     "--max-records", "0", env=env)
    assert result.returncode == 0, result.stderr
    controls = run_cli("leaderboard", str(out), "--controls", "--format", "json", env=env)
    assert controls.returncode == 0, controls.stderr
    results = json.loads((out / "results.json").read_text())
    return page, results, json.loads(controls.stdout)["controls"]


def _section(text: str, name: str) -> str:
    match = re.search(rf'<section id="{name}">(.*?)</section>', text, re.S)
    assert match, name
    return match.group(1)


def _figures(section: str) -> dict[tuple[str, str], ET.Element]:
    """Each figure's SVG, parsed as XML (so it must be well-formed), by (task, kind)."""
    found = re.findall(r'<figure data-task="([^"]+)" data-kind="(\w+)">(<svg.*?</svg>)</figure>', section, re.S)
    return {(task, kind): ET.fromstring(svg) for task, kind, svg in found}


def _bars(svg: ET.Element) -> dict[str, ET.Element]:
    """The bar groups of a score chart by their label (the last text of the group)."""
    return {group.findall(f"{SVG}text")[-1].text or "": group for group in svg.iter(f"{SVG}g")
            if group.get("class") == "bar"}


def test_every_bar_whisker_and_chance_line_follows_the_results(report: tuple[Path, dict, dict]) -> None:
    page, results, _ = report
    figures = _figures(_section(page.read_text(encoding="utf-8"), "charts"))
    assert set(figures) == {("synth-temporal", "closed"), ("synth-temporal@blind", "closed")}
    colours = model_colours(MODELS)
    for cell in results["cells"]:
        svg = figures[(cell["task"], cell["kind"])]
        bar = _bars(svg)[cell["model"]]
        rect = bar.find(f"{SVG}rect")
        assert rect is not None and rect.get("fill") == colours[cell["model"]]
        base = float(rect.get("y")) + float(rect.get("height"))  # type: ignore[arg-type]
        assert float(rect.get("height")) == pytest.approx(cell["score"] * PLOT_H / 100, abs=0.5)  # type: ignore[arg-type]
        whisker = bar.find(f"{SVG}path")
        assert whisker is not None
        ends = [float(v) for v in re.match(r"M[\d.]+ ([\d.]+)V([\d.]+)", whisker.get("d") or "").groups()]  # type: ignore[union-attr]
        assert ends == pytest.approx([base - cell["ci_low"] * PLOT_H / 100, base - cell["ci_high"] * PLOT_H / 100],
                                     abs=0.01)
        chance = next(g for g in svg.iter(f"{SVG}g") if g.get("class") == "chance").find(f"{SVG}line")
        assert chance is not None and chance.get("stroke") == CHANCE_COLOUR
        assert float(chance.get("y1")) == pytest.approx(base - cell["chance"] * PLOT_H / 100, abs=0.5)  # type: ignore[arg-type]


def test_each_control_bar_is_its_paired_difference(report: tuple[Path, dict, dict]) -> None:
    page, _, controls = report
    figures = _figures(_section(page.read_text(encoding="utf-8"), "controls"))
    svg = figures[("synth-temporal", "closed")]
    rows = {g.find(f"{SVG}text").text: g for g in svg.iter(f"{SVG}g") if g.get("class") == "delta"}  # type: ignore[union-attr]
    cells = [c for c in controls["cells"] if c["task"] == "synth-temporal" and c["kind"] == "closed"]
    assert len(rows) == len(cells) == 2
    extent = max(abs(c[k]) for c in cells for k in ("delta", "ci_low", "ci_high"))
    limit = next(step for step in (5, 10, 20, 25, 50, 100) if extent <= step)
    for cell in cells:
        rect = rows[f"{cell['model']} @{cell['control']}"].find(f"{SVG}rect")
        assert rect is not None and rect.get("fill") == CONTROL_COLOURS["blind"]
        assert float(rect.get("width")) == pytest.approx(max(1, abs(cell["delta"]) * DELTA_W / 2 / limit), abs=1)  # type: ignore[arg-type]


def test_tasks_without_data_get_no_chart_and_no_details_table(report: tuple[Path, dict, dict]) -> None:
    page, _, _ = report
    text = page.read_text(encoding="utf-8")
    details = re.findall(r"<h3>([^<]+)</h3>", _section(text, "details"))
    assert details == ["synth-temporal", "synth-temporal@blind"]
    assert "synth-reasoning" not in _section(text, "charts")
    assert "Reasoning" in _section(text, "tables")  # the leaderboard keeps the paper's layout, with dashes


def _colour_spans(pixels, colour: str, tolerance: int = 8) -> Counter:  # type: ignore[no-untyped-def]
    """(top, bottom) of ``colour`` in each column that has it, counted over columns (whiskers, caps and
    the chance line cross a bar, so its extent is read, not its runs)."""
    import numpy as np

    target = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
    mask = (np.abs(pixels[:, :, :3].astype(int) - target) <= tolerance).all(axis=2)
    spans: Counter = Counter()
    for x in np.nonzero(mask.any(axis=0))[0]:
        ys = np.nonzero(mask[:, x])[0]
        spans[(int(ys[0]), int(ys[-1]) + 1)] += 1
    return spans


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium), "
                                              "so the page is not checked in a real browser")
def test_headless_chromium_draws_bars_of_the_scored_heights(report: tuple[Path, dict, dict], tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    page, results, controls = report
    shot = tmp_path / "page.png"
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",  # type: ignore[list-item]
                           "--force-device-scale-factor=1", f"--user-data-dir={tmp_path / 'profile'}",
                           "--window-size=1300,2600", f"--screenshot={shot}", page.as_uri()],
                          capture_output=True, text=True, timeout=180)
    assert shot.exists(), done.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    colours = model_colours(MODELS)
    bottoms = set()
    for model in MODELS:
        spans = _colour_spans(pixels, colours[model])  # the bars of one model stand in distinct columns
        bars = sorted(span for span, columns in spans.items() if columns >= BAR_W // 2)
        expected = sorted(round(c["score"] * PLOT_H / 100) for c in results["cells"] if c["model"] == model)
        assert sorted(bottom - top for top, bottom in bars) == pytest.approx(expected, abs=1.5), (model, bars, expected)
        bottoms |= {bottom for _, bottom in bars}
    assert len(bottoms) == 1  # the two charts stand side by side on one baseline
    base = bottoms.pop()
    line = round(base - results["cells"][0]["chance"] * PLOT_H / 100)  # a 2 px line centred on this edge
    red = (np.abs(pixels.astype(int) - np.array([int(CHANCE_COLOUR[i:i + 2], 16) for i in (1, 3, 5)])) <= 8).all(axis=2)
    assert [y for y in range(red.shape[0]) if red[y].sum() >= 40] == [line - 1, line]
    # the controls' bars: 12 px high, |delta| scaled to the axis (the legend swatch adds a few pixels)
    cells = [c for c in controls["cells"] if c["kind"] == "closed"]
    extent = max(abs(c[k]) for c in cells for k in ("delta", "ci_low", "ci_high"))
    limit = next(step for step in (5, 10, 20, 25, 50, 100) if extent <= step)
    widths = sum(max(1, round(abs(c["delta"]) * DELTA_W / 2 / limit)) for c in cells)
    assert widths >= 20, "the run gives the controls too small a difference to check their bars"
    blind = (np.abs(pixels.astype(int) - np.array([int(CONTROL_COLOURS["blind"][i:i + 2], 16) for i in (1, 3, 5)]))
             <= 8).all(axis=2)
    assert 9 * widths <= blind.sum() <= 12 * widths + 400
