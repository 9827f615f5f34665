"""The run's pictures: loss.svg and tasks.svg, written with no plotting library, and where they are said."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET

import pytest

from minillm.cli import main
from minillm.plots.charts import plot_loss, plot_tasks
from minillm.plots.svg import linear_ticks, log_ticks
from minillm.runfolder.metrics import read_metrics

NS = {"svg": "http://www.w3.org/2000/svg"}
TASKS = ("copy", "a<b & c", "yes")


def records() -> list[dict]:
    """A run's metrics: train every 10 steps to 100, evaluations at 50 and 100 (the final one)."""
    recs = [{"step": s, "kind": "train", "loss": 5.0 / (1 + s / 20)} for s in range(10, 101, 10)]
    recs.insert(5, {"step": 50, "kind": "eval", "loss": 1.5, "exact_match": 0.25, "n": 8,
                    "per_task": {"copy": 0.0, "a<b & c": 0.5, "yes": 0.25}})
    recs.append({"step": 100, "kind": "final_eval", "loss": 0.9, "exact_match": 0.75, "n": 20,
                 "per_task": {"copy": 0.5, "a<b & c": 1.0, "yes": 0.75}})
    return recs


def parse(path) -> tuple[dict[str, list[tuple[float, float]]], tuple[float, float, float, float], list]:
    """({series label: polyline points in pixels}, the plot area (x0, y0, x1, y1), every text)."""
    root = ET.parse(path).getroot()  # well-formed XML, or this raises
    area = root.find(".//svg:rect[@id='plot-area']", NS)
    x0, y0 = float(area.get("x")), float(area.get("y"))
    box = (x0, y0, x0 + float(area.get("width")), y0 + float(area.get("height")))
    series = {}
    for g in root.findall(".//svg:g[@class='series']", NS):
        (poly,) = g.findall("svg:polyline", NS)  # one polyline per series
        pts = [tuple(map(float, p.split(","))) for p in poly.get("points").split()]
        series[g.get("data-label")] = pts
    return series, box, ["".join(t.itertext()) for t in root.iter(f"{{{NS['svg']}}}text")]


def inside(pts, box) -> bool:
    x0, y0, x1, y1 = box
    return all(math.isfinite(x) and math.isfinite(y) and x0 <= x <= x1 and y0 <= y <= y1
               for x, y in pts)


def test_loss_svg_has_each_series_with_its_points_inside_the_plot_area(tmp_path):
    assert plot_loss(records(), tmp_path / "loss.svg")
    series, box, texts = parse(tmp_path / "loss.svg")
    assert set(series) == {"train loss", "held-out loss", "held-out exact match"}
    assert len(series["train loss"]) == 10 and len(series["held-out loss"]) == 2
    assert len(series["held-out exact match"]) == 2
    assert all(inside(p, box) for p in series.values())
    # x: step 0 is the left edge, the last step (100) the right edge
    assert series["train loss"][-1][0] == pytest.approx(box[2], abs=0.1)
    assert series["train loss"][0][0] == pytest.approx(box[0] + (box[2] - box[0]) / 10, abs=0.1)
    # the right axis is 0-1 from the bottom: exact match 0.25 at a quarter, 0.75 at three quarters
    (_, ya), (_, yb) = series["held-out exact match"]
    height = box[3] - box[1]
    assert (box[3] - ya, box[3] - yb) == (pytest.approx(0.25 * height, abs=0.1),
                                           pytest.approx(0.75 * height, abs=0.1))
    assert "held-out exact match" in texts and "step" in texts


def test_the_loss_axis_is_logarithmic(tmp_path):
    recs = [{"step": s, "kind": "train", "loss": v} for s, v in ((1, 100.0), (2, 10.0), (3, 1.0))]
    assert plot_loss(recs, tmp_path / "loss.svg")
    series, box, texts = parse(tmp_path / "loss.svg")
    (_, y100), (_, y10), (_, y1) = series["train loss"]
    assert y100 < y10 < y1  # larger loss, higher up (SVG's y grows downwards)
    assert y10 - y100 == pytest.approx(y1 - y10, abs=0.2)  # equal ratios, equal distances
    assert {"1", "10", "100"} <= set(texts)
    assert set(series) == {"train loss", "held-out loss"}  # no evaluation: no exact match axis


def test_tasks_svg_has_one_line_per_task_named_in_its_legend(tmp_path):
    assert plot_tasks(records(), tmp_path / "tasks.svg")
    series, box, texts = parse(tmp_path / "tasks.svg")
    assert set(series) == {*TASKS, "overall"}
    assert all(len(p) == 2 and inside(p, box) for p in series.values())
    assert set(TASKS) <= set(texts)  # the legend names the tasks (escaped in the file, parsed back)
    # exact match 1.0 of "a<b & c" at the final step: the top right corner of the plot area
    assert series["a<b & c"][-1] == (pytest.approx(box[2], abs=0.1), pytest.approx(box[1], abs=0.1))
    assert "final evaluation: all 20" in " ".join(texts)


def test_points_that_cannot_be_drawn_are_left_out(tmp_path):
    recs = [{"step": 10, "kind": "train", "loss": 2.0}, {"step": 20, "kind": "train", "loss": math.inf},
            {"step": 30, "kind": "train", "loss": 0.0}, {"step": 40, "kind": "train", "loss": 1.0}]
    assert plot_loss(recs, tmp_path / "loss.svg")
    series, box, _ = parse(tmp_path / "loss.svg")
    assert len(series["train loss"]) == 2 and inside(series["train loss"], box)


def test_nothing_to_draw_writes_nothing(tmp_path):
    assert not plot_loss([], tmp_path / "loss.svg")
    assert not plot_tasks([{"step": 10, "kind": "train", "loss": 1.0}], tmp_path / "tasks.svg")
    assert not list(tmp_path.iterdir())


def test_ticks_are_round_and_cover_the_range():
    assert linear_ticks(0, 100) == [0, 20, 40, 60, 80, 100]
    assert linear_ticks(0, 1) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert log_ticks(0.01, 10) == [0.01, 0.1, 1, 10]
    assert log_ticks(0.5, 5) == [0.5, 1, 2, 5]


def test_train_writes_both_pictures_and_says_where(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--preset", "tiny", "--out", str(out), "--no-progress"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == f"loss curve: {out / 'loss.svg'}; per-task exact match: {out / 'tasks.svg'}"
    recs = read_metrics(str(out / "metrics.jsonl"))
    evals = [r for r in recs if r["kind"] in ("eval", "final_eval")]
    assert [r["kind"] for r in evals] == ["eval", "final_eval"]  # tiny: step 10, then step 20
    assert all(len(r["per_task"]) == 9 for r in evals)  # periodic evaluations keep per-task figures
    series, box, texts = parse(out / "tasks.svg")
    assert set(series) == {*evals[-1]["per_task"], "overall"}
    assert all(len(p) == len(evals) and inside(p, box) for p in series.values())
    loss, box, _ = parse(out / "loss.svg")
    assert len(loss["train loss"]) == sum(r["kind"] == "train" for r in recs)
    assert all(inside(p, box) for p in loss.values())
    # --overwrite --no-plot: no picture of the old run is left, and none is named
    assert main(["train", "--preset", "tiny", "--out", str(out), "--overwrite", "--no-progress",
                 "--no-plot"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("last checkpoint: step 20 -> ")
    assert not (out / "loss.svg").exists() and not (out / "tasks.svg").exists()
    assert json.loads((out / "trainer_state.json").read_text())["step"] == 20
