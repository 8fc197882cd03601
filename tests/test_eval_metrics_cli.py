"""`srcli eval --metrics`: the quality metrics beyond PSNR / SSIM in every output, the HTML page and the plot.

The scores ``srcli eval`` reports must be the ones ``srcli.eval.quality.quality_scores`` and
``srcli.eval.per_image.score_image`` give for the same SR image (bicubic on Set5 x4, no weights needed).
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from srcli.errors import UsageError
from tests.cli_probe import run_fresh
from tests.conftest import require_shared

REPO = Path(__file__).resolve().parents[1]
ALL = ("psnr", "ssim", "gmsd", "fsim", "ms-ssim", "fsimc")
SET5 = ("baby.png", "bird.png", "butterfly.png", "head.png", "woman.png")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m srcli ARGS`` from the repository, on the CPU, with a wide console."""
    env = {**os.environ, "COLUMNS": "220"}
    return subprocess.run(
        [sys.executable, "-m", "srcli", *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=600
    )


def _set5() -> Path:
    return require_shared() / "data" / "benchmarks" / "Set5"


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One bicubic Set5 x4 run with every metric and every output, and the default run beside it."""
    tmp = tmp_path_factory.mktemp("metrics")
    bench = tmp / "bench.json"
    # The fields of ``BenchResult.to_dict()`` that --plot-x mps reads (a record as srcli bench --json writes).
    bench.write_text(json.dumps({"model": "bicubic", "scale": 4, "mp_per_s": 250.0, "device": "cpu"}))
    paths = {name: tmp / name for name in ("r.csv", "r.md", "page.html", "plot.png")}
    common = ("eval", "-m", "bicubic", "--data-dir", str(_set5()), "-s", "4", "--device", "cpu")
    full = _run(
        *common,
        "--metrics",
        ",".join(ALL),
        "--json",
        "--per-image",
        "--csv",
        str(paths["r.csv"]),
        "--markdown",
        str(paths["r.md"]),
        "--html",
        str(paths["page.html"]),
        "--plot",
        str(paths["plot.png"]),
        "--plot-metric",
        "gmsd",
        "--plot-x",
        "mps",
        "--bench-json",
        str(bench),
    )
    assert full.returncode == 0, full.stderr
    default = _run(*common, "--json")
    assert default.returncode == 0, default.stderr
    return {"full": json.loads(full.stdout), "default": json.loads(default.stdout), **paths}


def test_metric_names_known_without_torch_are_the_available_ones() -> None:
    from srcli.eval.per_image import METRIC_NAMES, available_metrics, check_metric_names

    assert set(available_metrics()) == set(METRIC_NAMES)
    assert check_metric_names(["GMSD,fsim", "psnr"]) == ["psnr", "ssim", "gmsd", "fsim"]
    with pytest.raises(UsageError, match="unknown metric.*lpips.*choose from psnr, ssim, ms-ssim"):
        check_metric_names(["lpips"])


@pytest.mark.slow
def test_per_image_values_equal_the_metrics_computed_directly(outputs: dict[str, Any]) -> None:
    from srcli.engine.options import RunOptions, check_run, resolve_run
    from srcli.eval.per_image import load_hr, load_protocol_model, score_image
    from srcli.eval.protocol import make_lr, score
    from srcli.eval.quality import quality_scores

    (result,) = outputs["full"]
    assert list(result["metrics"]) == ["psnr", "ssim", "gmsd", "fsim", "ms-ssim", "fsimc"]
    assert [img["name"] for img in result["images"]] == list(SET5)
    model = load_protocol_model(resolve_run(check_run(RunOptions(model="bicubic", scale=4, device="cpu"))))
    for img in result["images"]:
        hr = load_hr(_set5() / img["name"], 4)
        sr = model(make_lr(hr, 4))
        direct = dict(zip(("psnr", "ssim"), score(sr, hr, 4), strict=True))
        direct.update(quality_scores(sr, hr, 4, ["gmsd", "fsim", "ms-ssim", "fsimc"]))
        assert img["metrics"] == pytest.approx(direct, rel=1e-9, abs=0)
        assert img["metrics"] == pytest.approx(score_image(sr, hr, 4, ALL), rel=1e-9, abs=0)
        assert (img["psnr"], img["ssim"]) == (img["metrics"]["psnr"], img["metrics"]["ssim"])
    for name in ALL:  # the summary is the mean over the images
        mean = sum(img["metrics"][name] for img in result["images"]) / len(SET5)
        assert result["metrics"][name] == pytest.approx(mean, rel=1e-12)
    assert 0 < result["metrics"]["gmsd"] < 0.35 and 0.5 < result["metrics"]["fsim"] < 1


@pytest.mark.slow
def test_psnr_and_ssim_are_those_of_the_default_run(outputs: dict[str, Any]) -> None:
    (full,), (default,) = outputs["full"], outputs["default"]
    assert (full["psnr"], full["ssim"]) == (default["psnr"], default["ssim"])
    assert [(i["name"], i["psnr"], i["ssim"]) for i in full["images"]] == [
        (i["name"], i["psnr"], i["ssim"]) for i in default["images"]
    ]
    assert list(default["metrics"]) == ["psnr", "ssim"]
    assert full["published"] == default["published"]  # the papers' comparison: PSNR / SSIM only
    assert all(set(p) >= {"psnr", "ssim"} and "gmsd" not in p for p in full["published"])


@pytest.mark.slow
def test_csv_and_markdown_have_a_column_per_metric(outputs: dict[str, Any]) -> None:
    (result,) = outputs["full"]
    (row,) = list(csv.DictReader(io.StringIO(outputs["r.csv"].read_text())))
    for name in ALL:
        assert float(row[name]) == pytest.approx(result["metrics"][name], abs=1e-4)
    header, rule, line = outputs["r.md"].read_text().splitlines()
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert cols[:9] == ["model", "dataset", "scale", "psnr", "ssim", "gmsd", "fsim", "ms-ssim", "fsimc"]
    assert "published_psnr" in cols and "published_gmsd" not in cols
    cells = dict(zip(cols, (c.strip() for c in line.strip("|").split("|")), strict=True))
    assert float(cells["fsimc"]) == pytest.approx(result["metrics"]["fsimc"], abs=1e-4)


class _Rows(HTMLParser):
    """The text of every table cell, per ``<tr>``, per ``<table>``; and whether any resource is external."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.external: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.external += [v for k, v in attrs if k in ("src", "href") and v and not v.startswith("data:")]
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


@pytest.mark.slow
def test_html_page_has_a_sortable_row_per_image_with_every_metric(outputs: dict[str, Any]) -> None:
    (result,) = outputs["full"]
    text = outputs["page.html"].read_text(encoding="utf-8")
    page = _Rows()
    page.feed(text)
    assert not page.external  # self-contained: nothing to fetch
    assert "<script>" in text and 'data-type="number"' in text  # the sorting script and numeric columns
    means, per_image = page.tables
    header, *rows = per_image
    assert header == ["image", "model", "dataset", "scale", "PSNR", "SSIM", "GMSD", "FSIM", "MS-SSIM", "FSIMc"]
    assert [r[0] for r in rows] == list(SET5)
    for row, img in zip(rows, result["images"], strict=True):
        assert row[4] == f"{img['metrics']['psnr']:.2f}" and row[6] == f"{img['metrics']['gmsd']:.4f}"
    assert means[1][:3] == ["bicubic", "Set5", "4"]


@pytest.mark.slow
def test_plot_of_a_metric_against_bench_speed_writes_a_png(outputs: dict[str, Any]) -> None:
    with Image.open(outputs["plot.png"]) as img:
        assert img.format == "PNG" and img.size == (1000, 640)
        rgb = np.asarray(img.convert("RGB")).reshape(-1, 3)
        assert ((rgb[:, 0] > 150) & (rgb[:, 1] < 80)).any()  # our (red) point


def test_plot_of_a_metric_against_parameters(tmp_path: Path) -> None:
    from srcli.eval.plot import ScatterPoint, draw_scatter

    points = [ScatterPoint("imdn", 715_176, 0.072, True), ScatterPoint("rgt", 13_365_543, 0.061, True)]
    out = draw_scatter(points, tmp_path / "g.png", "GMSD vs parameters", x_label="parameters", y_label="GMSD")
    with Image.open(out) as img:
        assert img.size == (1000, 640)
    with pytest.raises(ValueError, match="log-scale"):
        draw_scatter([ScatterPoint("bicubic", 0, 0.1)], tmp_path / "b.png", "t", x_label="x", y_label="y")


def test_bench_json_records_are_read_by_model_and_scale(tmp_path: Path) -> None:
    from srcli.eval.plot import bench_speeds

    one, many = tmp_path / "one.json", tmp_path / "many.json"
    one.write_text(json.dumps({"model": "IMDN", "scale": 4, "mp_per_s": 3.5}))
    many.write_text(
        json.dumps([{"model": "imdn", "scale": 4, "mp_per_s": 9.0}, {"model": "rgt", "scale": 2, "mp_per_s": 0.5}])
    )
    assert bench_speeds([one, many]) == {("imdn", 4): 3.5, ("rgt", 2): 0.5}  # the first record read wins
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(UsageError, match="no srcli bench record"):
        bench_speeds([tmp_path / "bad.json"])


def test_bad_metric_options_are_refused_in_one_line_before_torch(tmp_path: Path) -> None:
    base = ["eval", "-m", "bicubic", "-d", "set5", "-s", "4"]
    cases = [
        (["--metrics", "psnr,lpips"], "unknown metric(s) lpips; choose from psnr, ssim, ms-ssim, gmsd, fsim, fsimc"),
        (["--plot", "p.png", "--plot-metric", "vif"], "unknown metric(s) vif"),
        (["--plot", "p.png", "--plot-x", "flops"], "--plot-x takes params or mps"),
        (["--plot", "p.png", "--plot-x", "mps"], "--plot-x mps needs --bench-json"),
        (["--plot-metric", "gmsd"], "go with --plot"),
    ]
    seen = run_fresh([base + extra for extra, _ in cases], cwd=tmp_path)
    for (code, err, torch_loaded), (_, message) in zip(seen, cases, strict=True):
        assert code == 2 and message in err and not torch_loaded
        assert len(err.strip().splitlines()) == 1


def test_score_on_workers_passes_the_metrics_to_each_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    from srcli.engine.options import RunOptions
    from srcli.eval import distributed

    seen: list[Any] = []
    monkeypatch.setattr(distributed, "map_on_devices", lambda factory, *args, **kwargs: seen.append(factory))
    distributed.score_on_workers(RunOptions(model="bicubic"), [], 4, devices=["cpu"], metrics=("psnr", "ssim", "gmsd"))
    assert seen == [distributed.EvalWorker(4, None, ("psnr", "ssim", "gmsd"))]


@pytest.mark.slow
def test_a_worker_process_scores_the_metrics_as_this_process() -> None:
    import torch

    from srcli.eval.runner import evaluate

    kwargs: dict[str, Any] = {"data_dir": _set5(), "device": "cpu", "threads": 1, "metrics": ["gmsd"]}
    threads = torch.get_num_threads()
    try:
        here = evaluate("bicubic", None, 4, **kwargs)
        there = evaluate("bicubic", None, 4, devices=["cpu"], **kwargs)
    finally:
        torch.set_num_threads(threads)  # evaluate sets this process's threads; leave them as they were
    assert list(there.metrics) == ["psnr", "ssim", "gmsd"]
    assert [(i.name, i.metrics) for i in there.images] == [(i.name, i.metrics) for i in here.images]
    assert there.metrics == here.metrics
