"""PSNR versus parameters (the papers' Figure 1), drawn with Pillow: published points and ours; and any
metric against parameters or speed (MP/s from ``srcli bench``), ours only."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from srcli.eval.published import load_tables


@dataclass(frozen=True)
class PlotPoint:
    """One labelled point: ``params`` in units, ``psnr`` in dB; ``ours`` marks a measured point."""

    label: str
    params: float
    psnr: float
    ours: bool = False


def parse_params(text: str | None) -> float | None:
    """``"694K"`` -> 694000.0, ``"13.37M"`` -> 13370000.0; ``None`` for anything else."""
    match = re.fullmatch(r"\s*([\d.]+)\s*([KMG]?)\s*", text or "")
    if not match:
        return None
    return float(match.group(1)) * {"": 1, "K": 1e3, "M": 1e6, "G": 1e9}[match.group(2)]


def published_points(dataset: str, scale: int) -> list[PlotPoint]:
    """Every published row with a parameter count and a PSNR for ``dataset`` at ``scale`` (first table wins)."""
    points: dict[str, PlotPoint] = {}
    for table in load_tables().values():
        for row in table.rows:
            params = parse_params(row.params)
            value = row.results.get(dataset)
            if row.scale != scale or params is None or value is None or row.method in points:
                continue
            points[row.method] = PlotPoint(row.method, params, value[0])
    return list(points.values())


@dataclass(frozen=True)
class ScatterPoint:
    """One labelled point of any scatter: ``x`` (drawn on a log scale, must be > 0) and ``y``; ``ours``
    marks a point measured by srcli (red), else published (blue)."""

    label: str
    x: float
    y: float
    ours: bool = False


def _params_tick(value: float) -> str:
    """A parameter count as an axis label: ``500K``, ``1M``."""
    return f"{value / 1e6:g}M" if value >= 1e6 else f"{value / 1e3:g}K"


def _nice_step(span: float) -> float:
    """A 1, 2 or 5 times a power of ten step that cuts ``span`` into about 4 to 10 intervals."""
    if span <= 0 or not math.isfinite(span):
        return 1.0
    power = 10 ** math.floor(math.log10(span / 5))
    for mult in (1, 2, 5, 10):
        if span / (mult * power) <= 10:
            return mult * power
    return 10 * power


def draw_psnr_vs_params(points: list[PlotPoint], out: str | Path, title: str) -> Path:
    """Draw a log-x scatter of ``points`` to the PNG ``out`` (written to a temporary name, then renamed)."""
    return draw_scatter(
        [ScatterPoint(p.label, p.params, p.psnr, p.ours) for p in points],
        out,
        title,
        x_label="parameters (log scale)",
        y_label="PSNR (dB)",
        y_pad=0.2,
        y_step=lambda span: 0.5 if span > 2 else 0.1,
        y_digits=1,
    )


def draw_scatter(
    points: list[ScatterPoint],
    out: str | Path,
    title: str,
    *,
    x_label: str,
    y_label: str,
    x_tick: Callable[[float], str] = _params_tick,
    y_pad: float | None = None,
    y_step: Callable[[float], float] = _nice_step,
    y_digits: int | None = None,
) -> Path:
    """Draw a log-x scatter of ``points`` to the PNG ``out`` (written to a temporary name, then renamed).

    The axes span the points plus a margin (0.15 decades on x; ``y_pad`` on y, default 5 % of the range);
    x gridlines sit at 1, 2 and 5 per decade, labelled by ``x_tick``; y gridlines every ``y_step(span)``,
    labelled with ``y_digits`` decimals (default: enough for the step). The legend names the published
    (blue) and measured (red) points present. Raises ``ValueError`` without points or with an x <= 0.
    """
    from PIL import Image, ImageDraw, ImageFont

    if not points:
        raise ValueError("nothing to plot: no point has both an x value and a score")
    if any(not p.x > 0 for p in points):
        raise ValueError("a log-scale x needs values > 0")
    width, height, margin = 1000, 640, 80
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    xs = [math.log10(p.x) for p in points]
    ys = [p.y for p in points]
    pad = y_pad if y_pad is not None else max(0.05 * (max(ys) - min(ys)), 1e-3 * max(1.0, abs(max(ys))))
    x0, x1 = min(xs) - 0.15, max(xs) + 0.15
    y0, y1 = min(ys) - pad, max(ys) + pad

    def to_px(x: float, y: float) -> tuple[float, float]:
        return (
            margin + (x - x0) / (x1 - x0) * (width - 2 * margin),
            height - margin - (y - y0) / (y1 - y0) * (height - 2 * margin),
        )

    draw.rectangle([margin, margin, width - margin, height - margin], outline="black")
    for decade in range(math.floor(x0), math.ceil(x1) + 1):
        for mult in (1, 2, 5):
            x = decade + math.log10(mult)
            if x0 <= x <= x1:
                px, _ = to_px(x, y0)
                draw.line([px, margin, px, height - margin], fill=(225, 225, 225))
                draw.text((px - 12, height - margin + 6), x_tick(mult * 10**decade), fill="black", font=font)
    step = y_step(y1 - y0)
    digits = y_digits if y_digits is not None else max(0, -math.floor(math.log10(step)))
    y = math.ceil(y0 / step) * step
    while y <= y1:
        _, py = to_px(x0, y)
        draw.line([margin, py, width - margin, py], fill=(225, 225, 225))
        draw.text((margin - 45, py - 6), f"{y:.{digits}f}", fill="black", font=font)
        y += step
    for p in sorted(points, key=lambda p: p.ours):
        px, py = to_px(math.log10(p.x), p.y)
        colour = (200, 30, 30) if p.ours else (40, 80, 200)
        r = 6 if p.ours else 4
        draw.ellipse([px - r, py - r, px + r, py + r], fill=colour)
        draw.text((px + 8, py - 6), p.label, fill=colour, font=font)
    draw.text((margin, 30), title, fill="black", font=font)
    draw.text((width // 2 - 60, height - 35), x_label, fill="black", font=font)
    draw.text((10, margin - 25), y_label, fill="black", font=font)
    legend = "   ".join(
        text
        for text, shown in (
            ("blue: published", any(not p.ours for p in points)),
            ("red: measured by srcli", any(p.ours for p in points)),
        )
        if shown
    )
    draw.text((width - margin - 250, margin + 8), legend, fill="black", font=font)
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp.png")
    img.save(tmp)
    tmp.replace(out)
    return out


def bench_speeds(paths: list[str | Path]) -> dict[tuple[str, int], float]:
    """``{(model, scale): MP/s}`` from ``srcli bench --json`` outputs (one ``BenchResult.to_dict()`` record, or a
    list of them, per file). Model names are the registry's canonical ones; where several records give the same
    (model, scale), the first one read wins. The speed is ``mp_per_s`` (output megapixels per second of the
    median run). Raises ``UsageError`` for a file that cannot be read or holds no such record."""
    import json

    from srcli.errors import SrcliError, UsageError
    from srcli.registry import get_model

    speeds: dict[tuple[str, int], float] = {}
    for path in paths:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UsageError(f"{path}: cannot read the bench results ({exc})") from None
        records = data if isinstance(data, list) else [data]
        found = 0
        for record in records:
            if not isinstance(record, dict) or not {"model", "scale", "mp_per_s"} <= record.keys():
                continue
            try:
                name = get_model(str(record["model"])).name
            except SrcliError:
                name = str(record["model"])
            speeds.setdefault((name, int(record["scale"])), float(record["mp_per_s"]))
            found += 1
        if not found:
            raise UsageError(f"{path}: no srcli bench record (model, scale, mp_per_s) in it")
    return speeds
