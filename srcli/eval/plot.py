"""PSNR versus parameters (the papers' Figure 1), drawn with Pillow: published points and ours."""

from __future__ import annotations

import math
import re
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


def draw_psnr_vs_params(points: list[PlotPoint], out: str | Path, title: str) -> Path:
    """Draw a log-x scatter of ``points`` to the PNG ``out`` (written to a temporary name, then renamed)."""
    from PIL import Image, ImageDraw, ImageFont

    if not points:
        raise ValueError("nothing to plot: no point has both a parameter count and a PSNR")
    width, height, margin = 1000, 640, 80
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    xs = [math.log10(p.params) for p in points]
    ys = [p.psnr for p in points]
    x0, x1 = min(xs) - 0.15, max(xs) + 0.15
    y0, y1 = min(ys) - 0.2, max(ys) + 0.2

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
                value = mult * 10**decade
                draw.text(
                    (px - 12, height - margin + 6),
                    f"{value / 1e6:g}M" if value >= 1e6 else f"{value / 1e3:g}K",
                    fill="black",
                    font=font,
                )
    step = 0.5 if y1 - y0 > 2 else 0.1
    y = math.ceil(y0 / step) * step
    while y <= y1:
        _, py = to_px(x0, y)
        draw.line([margin, py, width - margin, py], fill=(225, 225, 225))
        draw.text((margin - 45, py - 6), f"{y:.1f}", fill="black", font=font)
        y += step
    for p in sorted(points, key=lambda p: p.ours):
        px, py = to_px(math.log10(p.params), p.psnr)
        colour = (200, 30, 30) if p.ours else (40, 80, 200)
        r = 6 if p.ours else 4
        draw.ellipse([px - r, py - r, px + r, py + r], fill=colour)
        draw.text((px + 8, py - 6), p.label, fill=colour, font=font)
    draw.text((margin, 30), title, fill="black", font=font)
    draw.text((width // 2 - 60, height - 35), "parameters (log scale)", fill="black", font=font)
    draw.text((10, margin - 25), "PSNR (dB)", fill="black", font=font)
    draw.text((width - margin - 250, margin + 8), "blue: published   red: measured by srcli", fill="black", font=font)
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp.png")
    img.save(tmp)
    tmp.replace(out)
    return out
