"""`srcli compare`: the papers' figure and its HTML page, checked against the evaluation and computed crops.

The quick tests use the bicubic baseline (no weights); the IMDN ones (official x4 weights served from
../shared by the local mirror) are marked slow. Crops are checked pixel for pixel against the model
output computed here directly, and the scores against `srcli eval --per-image --json` on the same files.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import math
import re
import shutil
import subprocess
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from srcli.cli import main
from srcli.errors import UsageError
from srcli.eval.compare import (
    BOX_COLOUR,
    LINE_HEIGHT,
    PAD,
    TEXT_GAP,
    AutoCrop,
    Crop,
    auto_crop_size,
    choose_crop,
    disagreement_map,
    parse_crop,
)
from srcli.eval.html_report import DIVIDER_COLOUR, Column, score_table_html
from srcli.eval.per_image import format_metric
from srcli.eval.protocol import make_lr, modcrop, to_uint8_levels
from srcli.io.images import read_rgb_uint8
from tests.conftest import require_shared

SCALE = 4
ZOOM = 4
BICUBIC_IMAGES = ("butterfly.png", "head.png")


# ----------------------------------------------------------------------------------------- helpers


def cli(*args: str) -> tuple[int, str]:
    """Run ``srcli ARGS`` in this process; (exit status, standard output)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(list(args))
    return status, out.getvalue()


def direct_output(model: str, hr: torch.Tensor, weights: Path | None = None) -> np.ndarray:
    """The model's x4 output on the MATLAB-bicubic LR of ``hr``, computed here without srcli compare:
    (H, W, 3) uint8, clamped and rounded as the evaluation does."""
    from srcli.engine.inference import forward_whole
    from srcli.hub.loading import load_model

    loaded = load_model(model, SCALE, weights=weights)
    sr = forward_whole(loaded, make_lr(hr, SCALE)[None])[0]
    return to_uint8_levels(sr).to(torch.uint8).permute(1, 2, 0).numpy()


def zoomed(image: np.ndarray, crop: list[int], zoom: int) -> np.ndarray:
    """``crop`` = [x, y, w, h] of ``image``, every pixel a ``zoom`` x ``zoom`` block."""
    x, y, w, h = crop
    piece = image[y : y + h, x : x + w]
    return np.kron(piece, np.ones((zoom, zoom, 1), dtype=np.uint8))


def expected_layout(images: list[dict[str, Any]], columns: int, lines: int, zoom: int) -> dict[str, Any]:
    """Figure size and each row's (top, overview width, overview scale) from the documented layout rules."""
    width, top, rows = 0, PAD, []
    for image in images:
        img_w, img_h = image["size"]
        tile_w, tile_h = image["crop"][2] * zoom, image["crop"][3] * zoom
        scale = min(1.0, tile_h / img_h)
        ov_w, ov_h = round(img_w * scale), round(img_h * scale)
        rows.append({"top": top, "ov_w": ov_w, "scale": scale, "tile": (tile_w, tile_h)})
        width = max(width, PAD + ov_w + PAD + columns * (tile_w + PAD))
        top += max(tile_h, ov_h) + TEXT_GAP + lines * LINE_HEIGHT + PAD
    return {"size": (width, top), "rows": rows}


def tile_at(figure: np.ndarray, row: dict[str, Any], column: int) -> np.ndarray:
    """The pixels of crop column ``column`` (0: the reference) of a row."""
    tile_w, tile_h = row["tile"]
    left = PAD + row["ov_w"] + PAD + column * (tile_w + PAD)
    return figure[row["top"] : row["top"] + tile_h, left : left + tile_w]


def eval_per_image(model: str, hr_dir: Path) -> dict[str, dict[str, float]]:
    """``srcli eval -m MODEL --data-dir HR_DIR --per-image --json``: image name -> {psnr, ssim}."""
    status, out = cli("eval", "-m", model, "-s", str(SCALE), "--data-dir", str(hr_dir), "--per-image", "--json")
    assert status == 0
    (result,) = json.loads(out)
    return {img["name"]: {"psnr": img["psnr"], "ssim": img["ssim"]} for img in result["images"]}


class _Images(HTMLParser):
    """Collects every ``<img src>`` and every tag name of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "img":
            self.sources.append(dict(attrs).get("src") or "")


def browser() -> str | None:
    """A Chromium-family binary on PATH, if any."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


# ----------------------------------------------------------------------------------------- crop choice


def test_parse_crop() -> None:
    assert parse_crop("auto") == AutoCrop()
    assert parse_crop(" AUTO:48 ") == AutoCrop(48)
    assert parse_crop("10, 20,30,40") == Crop(10, 20, 30, 40)
    for bad in ("auto:0", "auto:x", "1,2,3", "1,2,3,-4", "1,2,0,4", "a,b,c,d"):
        with pytest.raises(UsageError):
            parse_crop(bad)


def test_auto_crop_size_is_a_sixth_of_the_shorter_side() -> None:
    assert auto_crop_size(512, 288) == 48
    assert auto_crop_size(60, 50) == 16  # the minimum
    assert auto_crop_size(12, 40) == 12  # never larger than the image


def test_choose_crop_maximises_the_window_sum() -> None:
    generator = torch.Generator().manual_seed(7)
    score = torch.rand(37, 45, generator=generator, dtype=torch.float64)
    size, border = 9, 3
    best, where = -1.0, None
    for y in range(border, 37 - size - border + 1):  # brute force, row-major: the first maximum wins
        for x in range(border, 45 - size - border + 1):
            total = float(score[y : y + size, x : x + size].sum())
            if total > best + 1e-9:
                best, where = total, (x, y)
    assert choose_crop(score, size, border) == Crop(*where, size, size)
    assert choose_crop(score, size, border) == choose_crop(score.clone(), size, border)  # deterministic


def test_choose_crop_keeps_clear_of_the_border_and_breaks_ties() -> None:
    score = torch.zeros(40, 50, dtype=torch.float64)
    score[0:6, 0:6] = 5.0  # hottest in the border: the window must stay 4 px in
    crop = choose_crop(score, 8, border=4)
    assert (crop.x, crop.y) == (4, 4)
    assert choose_crop(torch.zeros(40, 50), 8, border=4) == Crop(21, 16, 8, 8)  # all equal: centred
    flat = torch.ones(40, 50)
    assert choose_crop(flat, 8, border=4) == Crop(4, 4, 8, 8)  # ties: top, then left


def test_disagreement_map_is_the_variance_of_y() -> None:
    a = np.zeros((4, 5, 3), np.uint8)
    b = np.full((4, 5, 3), 255, np.uint8)
    assert torch.equal(disagreement_map([a, a.copy()]), torch.zeros(4, 5, dtype=torch.float64))
    y_range = 65.481 + 128.553 + 24.966  # Y(255) - Y(0)
    assert torch.allclose(disagreement_map([a, b]), torch.full((4, 5), (y_range / 2) ** 2, dtype=torch.float64))


def test_score_table_sorts_and_highlights_per_group() -> None:
    columns = [Column("image", "image"), Column("psnr", "PSNR", numeric=True, higher_is_better=True)]
    rows = [{"image": "a", "psnr": 30.0}, {"image": "a", "psnr": 31.0}, {"image": "b", "psnr": math.nan}]
    page = score_table_html(columns, rows, group="image")
    assert page.count("srcli-best") == 1 and 'data-sort="31.0">31.0' in page
    assert 'data-type="number"' in page and ">-</td>" in page  # NaN shown as missing


# ----------------------------------------------------------------------------------------- bicubic, quick


@pytest.fixture(scope="module")
def bicubic_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``srcli compare butterfly.png head.png -m bicubic`` with a figure, a page and JSON, once per module."""
    set5 = require_shared() / "data" / "benchmarks" / "Set5"
    out = tmp_path_factory.mktemp("compare-bicubic")
    paths = [set5 / name for name in BICUBIC_IMAGES]
    args = ["compare", *map(str, paths), "-m", "bicubic", "-s", str(SCALE), "--zoom", str(ZOOM), "--device", "cpu"]
    status, text = cli(*args, "-o", str(out / "figure.png"), "--html", str(out / "page.html"), "--json")
    assert status == 0
    return {"json": json.loads(text), "dir": out, "paths": paths, "args": args}


def test_bicubic_figure_layout_and_pixels(bicubic_run: dict[str, Any]) -> None:
    report = bicubic_run["json"]
    figure = np.asarray(Image.open(bicubic_run["dir"] / "figure.png").convert("RGB"))
    layout = expected_layout(report["images"], columns=2, lines=3, zoom=ZOOM)  # HR + bicubic; name, PSNR, SSIM
    assert (figure.shape[1], figure.shape[0]) == layout["size"]
    for path, image, row in zip(bicubic_run["paths"], report["images"], layout["rows"], strict=True):
        hr = modcrop(read_rgb_uint8(path), SCALE)
        hr_rgb = hr.permute(1, 2, 0).numpy()
        assert image["size"] == [hr.shape[-1], hr.shape[-2]]
        assert np.array_equal(tile_at(figure, row, 0), zoomed(hr_rgb, image["crop"], ZOOM))
        assert np.array_equal(tile_at(figure, row, 1), zoomed(direct_output("bicubic", hr), image["crop"], ZOOM))
        x, y = image["crop"][:2]  # the box's top-left corner on the (reduced) whole image
        corner = figure[row["top"] + math.floor(y * row["scale"]), PAD + math.floor(x * row["scale"])]
        assert tuple(corner) == BOX_COLOUR


def test_auto_crop_is_inside_and_deterministic(bicubic_run: dict[str, Any]) -> None:
    for path, image in zip(bicubic_run["paths"], bicubic_run["json"]["images"], strict=True):
        x, y, w, h = image["crop"]
        width, height = image["size"]
        assert image["crop_source"] == "auto" and w == h == auto_crop_size(width, height)
        assert SCALE <= x <= width - SCALE - w and SCALE <= y <= height - SCALE - h
        hr = modcrop(read_rgb_uint8(path), SCALE)
        again = choose_crop(
            disagreement_map([hr.permute(1, 2, 0).numpy(), direct_output("bicubic", hr)]), w, border=SCALE
        )
        assert [again.x, again.y, again.w, again.h] == image["crop"]


def test_bicubic_scores_equal_eval_per_image(bicubic_run: dict[str, Any], tmp_path: Path) -> None:
    hr_dir = tmp_path / "hr"
    hr_dir.mkdir()
    for path in bicubic_run["paths"]:
        shutil.copy(path, hr_dir / path.name)
    expected = eval_per_image("bicubic", hr_dir)
    got = {image["name"]: image["scores"]["bicubic"] for image in bicubic_run["json"]["images"]}
    assert got == expected  # the same floats, not merely close
    assert bicubic_run["json"]["metrics"] == ["psnr", "ssim"]


def test_printed_scores_use_evals_digits(bicubic_run: dict[str, Any]) -> None:
    status, text = cli(*bicubic_run["args"], "--crop", "8,8,32,32", "-o", str(bicubic_run["dir"] / "fixed.png"))
    assert status == 0
    for image in bicubic_run["json"]["images"]:
        scores = image["scores"]["bicubic"]
        assert f"{scores['psnr']:.2f}" in text and f"{scores['ssim']:.4f}" in text  # as eval --per-image
        assert f"{image['name']} x{SCALE}, crop 8,8,32,32 (given)" in text
    assert format_metric("psnr", 30.123456) == "30.12" and format_metric("ssim", 0.876543) == "0.8765"
    figure = Image.open(bicubic_run["dir"] / "fixed.png")
    layout = expected_layout([{**i, "crop": [8, 8, 32, 32]} for i in bicubic_run["json"]["images"]], 2, 3, ZOOM)
    assert figure.size == layout["size"]


def test_html_page_is_self_contained(bicubic_run: dict[str, Any]) -> None:
    page = (bicubic_run["dir"] / "page.html").read_text(encoding="utf-8")
    parser = _Images()
    parser.feed(page)
    images = len(bicubic_run["json"]["images"])
    assert len(parser.sources) == images * 3  # per image: the whole image, and one slider (HR, bicubic)
    for source in parser.sources:
        assert source.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1], validate=True))) as decoded:
            decoded.load()
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]*", "", page).lower()
    assert "http" not in text and "url(" not in text and "@import" not in text  # no network reference at all
    assert not [t for t, attrs in parser.tags if t in ("link", "iframe") or (t == "script" and attrs.get("src"))]
    assert page.count('class="srcli-slider"') == images and page.count("<table") == images + 1  # + all images


@pytest.mark.slow
def test_usage_errors(bicubic_run: dict[str, Any], tmp_path: Path) -> None:
    butterfly = str(bicubic_run["paths"][0])
    out = str(tmp_path / "f.png")
    assert cli("compare", butterfly, "-m", "bicubic")[0] == UsageError.exit_code  # neither -o nor --html
    assert cli("compare", butterfly, "-m", "bicubic", "--crop", "200,200,64,64", "-o", out)[0] == 2  # outside
    assert cli("compare", butterfly, "-m", "bicubic", "--metrics", "nope", "-o", out)[0] == 2
    assert cli("compare", butterfly, "-m", "bicubic", "--lr", "-o", out)[0] == 2  # nothing beside bicubic
    assert cli("compare", butterfly, "-m", "bicubic", "--weights", out, "-o", out)[0] == 2  # no learned model
    assert not Path(out).exists()


@pytest.mark.slow
def test_extra_metrics_appear_with_the_quality_module(bicubic_run: dict[str, Any]) -> None:
    quality = pytest.importorskip("srcli.eval.quality")
    if "gmsd" not in quality.QUALITY_METRICS:
        pytest.skip("GMSD is not registered")
    butterfly = bicubic_run["paths"][0]
    out = bicubic_run["dir"]
    status, text = cli(
        "compare", str(butterfly), "-m", "bicubic", "--metrics", "GMSD", "--json", "-o", str(out / "g.png")
    )
    assert status == 0
    report = json.loads(text)
    assert report["metrics"] == ["psnr", "ssim", "gmsd"]
    hr = modcrop(read_rgb_uint8(butterfly), SCALE)
    sr = torch.from_numpy(direct_output("bicubic", hr)).permute(2, 0, 1).to(torch.float64) / 255.0
    expected = quality.quality_scores(sr, hr, SCALE, ["gmsd"])["gmsd"]
    assert report["images"][0]["scores"]["bicubic"]["gmsd"] == pytest.approx(expected, rel=1e-12)
    lines = 4  # name, PSNR, SSIM, GMSD
    layout = expected_layout(report["images"], 2, lines, zoom=round(256 / report["images"][0]["crop"][2]))
    assert Image.open(out / "g.png").size == layout["size"]


# ----------------------------------------------------------------------------------------- the browser


def _chromium(binary: str, page: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / "profile"
    profile.mkdir(exist_ok=True)
    return subprocess.run(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            f"--user-data-dir={profile}",
            *args,
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )


@pytest.mark.slow
def test_slider_renders_in_headless_chromium(bicubic_run: dict[str, Any], tmp_path: Path) -> None:
    binary = browser()
    if binary is None:
        pytest.skip("no Chromium on PATH (Debian: apt-get install -y chromium)")
    page = bicubic_run["dir"] / "page.html"
    shot = tmp_path / "shot.png"
    done = _chromium(binary, page, tmp_path, f"--screenshot={shot}", "--window-size=1200,1000")
    assert shot.is_file(), done.stderr[-2000:]
    screen = np.asarray(Image.open(shot).convert("RGB")).astype(np.int16)

    # The first slider: HR crop left of the divider, bicubic crop right of it, divider in the middle.
    image = bicubic_run["json"]["images"][0]
    hr = modcrop(read_rgb_uint8(bicubic_run["paths"][0]), SCALE)
    before = zoomed(hr.permute(1, 2, 0).numpy(), image["crop"], ZOOM).astype(np.int16)
    after = zoomed(direct_output("bicubic", hr), image["crop"], ZOOM).astype(np.int16)
    height, width = before.shape[:2]
    colour = tuple(int(DIVIDER_COLOUR[i : i + 2], 16) for i in (1, 3, 5))
    mask = np.all(screen == colour, axis=2)
    column_counts = mask.sum(axis=0)
    columns = np.flatnonzero(column_counts >= height)
    assert columns.size >= 1, "no divider line as tall as the crop"
    divider = int(columns[0])
    rows = np.flatnonzero(mask[:, divider])
    top = int(rows[0])
    assert int(rows[-1]) - top + 1 == height  # the divider spans the frame exactly
    left = divider + 1 - width // 2
    shown = screen[top : top + height, left : left + width]
    half = width // 2
    assert np.abs(shown[:, : half - 2] - before[:, : half - 2]).mean() < 1.0
    assert np.abs(shown[:, half + 2 :] - after[:, half + 2 :]).mean() < 1.0
    assert np.abs(before[:, half + 2 :] - after[:, half + 2 :]).mean() > 2.0  # two different images show

    dom = _chromium(binary, page, tmp_path, "--dump-dom")
    assert dom.stdout.count('data-ready="1"') == len(bicubic_run["json"]["images"])  # the script ran


# ----------------------------------------------------------------------------------------- IMDN, slow


@pytest.fixture(scope="module")
def imdn_env(_shared_mirror_server: tuple[str, Path]) -> Iterator[None]:
    """The shared mirror (official weights from ../shared over local HTTP) for the module's IMDN runs."""
    url, cache_dir = _shared_mirror_server
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SRCLI_MIRRORS", url)
        patch.setenv("SRCLI_CACHE_DIR", str(cache_dir))
        patch.delenv("SRCLI_OFFLINE", raising=False)
        yield


@pytest.mark.slow
def test_imdn_figure_crops_and_scores_equal_eval(imdn_env: None, tmp_path: Path) -> None:
    bird = require_shared() / "data" / "benchmarks" / "Set5" / "bird.png"
    figure_path, page_path = tmp_path / "figure.png", tmp_path / "page.html"
    status, text = cli(
        "compare", str(bird), "-m", "bicubic,imdn", "-s", "4", "--zoom", "3", "--device", "cpu",
        "-o", str(figure_path), "--html", str(page_path), "--json",
    )  # fmt: skip
    assert status == 0
    report = json.loads(text)
    (image,) = report["images"]
    assert report["models"] == ["bicubic", "imdn"]

    figure = np.asarray(Image.open(figure_path).convert("RGB"))
    layout = expected_layout(report["images"], columns=3, lines=3, zoom=3)
    assert (figure.shape[1], figure.shape[0]) == layout["size"]
    hr = modcrop(read_rgb_uint8(bird), SCALE)
    imdn = direct_output("imdn", hr)
    assert np.array_equal(tile_at(figure, layout["rows"][0], 2), zoomed(imdn, image["crop"], 3))
    assert np.array_equal(tile_at(figure, layout["rows"][0], 1), zoomed(direct_output("bicubic", hr), image["crop"], 3))

    hr_dir = tmp_path / "hr"
    hr_dir.mkdir()
    shutil.copy(bird, hr_dir / bird.name)
    for model in ("bicubic", "imdn"):
        assert image["scores"][model] == eval_per_image(model, hr_dir)["bird.png"]
    assert image["scores"]["imdn"]["psnr"] > image["scores"]["bicubic"]["psnr"]

    parser = _Images()
    parser.feed(page_path.read_text(encoding="utf-8"))
    assert len(parser.sources) == 1 + 2 * 2  # whole image + a slider per model


@pytest.mark.slow
def test_lr_input_puts_bicubic_beside_the_model(imdn_env: None, tmp_path: Path) -> None:
    bird = require_shared() / "data" / "benchmarks" / "Set5" / "bird.png"
    hr = modcrop(read_rgb_uint8(bird), SCALE)
    lr = make_lr(hr, SCALE)
    lr_path = tmp_path / "bird_lr.png"
    Image.fromarray((lr * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()).save(lr_path)
    figure_path = tmp_path / "figure.png"
    status, text = cli(
        "compare", str(lr_path), "--lr", "-m", "imdn", "--crop", "100,40,40,40", "--zoom", "2", "--device", "cpu",
        "-o", str(figure_path), "--json",
    )  # fmt: skip
    assert status == 0
    report = json.loads(text)
    (image,) = report["images"]
    assert report["lr_input"] and report["models"] == ["imdn"] and image["reference"] == "bicubic"
    assert image["scores"] == {} and image["size"] == [hr.shape[-1], hr.shape[-2]]
    figure = np.asarray(Image.open(figure_path).convert("RGB"))
    layout = expected_layout(report["images"], columns=2, lines=2, zoom=2)  # no score lines
    assert (figure.shape[1], figure.shape[0]) == layout["size"]
    # The same pixels as from the HR: the LR file holds exactly the protocol's LR.
    assert np.array_equal(tile_at(figure, layout["rows"][0], 0), zoomed(direct_output("bicubic", hr), image["crop"], 2))
    assert np.array_equal(tile_at(figure, layout["rows"][0], 1), zoomed(direct_output("imdn", hr), image["crop"], 2))


def test_per_image_table_for_eval_pages() -> None:
    from srcli.eval.html_report import page_html, per_image_table_html

    rows = [
        {"image": "a.png", "model": "bicubic", "psnr": 30.0, "ssim": 0.8},
        {"image": "a.png", "model": "imdn", "psnr": 32.0, "ssim": 0.9},
    ]
    page = page_html("srcli eval", [per_image_table_html(rows, ["psnr", "ssim"])])
    assert page.startswith("<!DOCTYPE html>") and page.count('class="srcli-best"') == 2
    assert ">32.00</td>" in page and ">0.9000</td>" in page and "dataset" not in page.split("<tbody>")[0]
