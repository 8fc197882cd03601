"""A synthetic test chart: an input every installation can upscale without a download.

The chart holds what shows a super-resolution model's behaviour at a glance: a zone plate
(frequencies up to Nyquist, where aliasing and ringing show), a Siemens star (edges at every
angle), sharp text-like bars, colour and grey ramps (banding, colour shifts) and a flat patch
(noise, tile seams). It is drawn with numpy, antialiased by supersampling, so it is the same on
every machine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: Default side of the chart, in pixels.
CHART_SIZE = 192
_SUPERSAMPLE = 4


def _zone_plate(n: int) -> np.ndarray:
    """A radial chirp cos(k r^2) whose frequency reaches about 0.4 cycles per pixel at the rim."""
    y, x = (np.mgrid[0:n, 0:n] + 0.5) / n - 0.5
    r2 = x * x + y * y
    k = np.pi * 0.8 * n / 0.5  # d(k r^2)/dr / 2pi = 0.4 cycles per pixel at r = 0.5 (in chart pixels)
    return 0.5 + 0.5 * np.cos(k * r2 * 0.5)


def _siemens_star(n: int, spokes: int = 24) -> np.ndarray:
    y, x = (np.mgrid[0:n, 0:n] + 0.5) / n - 0.5
    theta = np.arctan2(y, x)
    star = (np.sin(spokes * theta) > 0).astype(np.float64)
    r = np.sqrt(x * x + y * y)
    return np.where(r < 0.48, star, 0.85)


def _bars(h: int, w: int) -> np.ndarray:
    """Groups of vertical bars getting thinner from left to right (1/8 .. 1/2 of the sampling rate)."""
    out = np.ones((h, w))
    x = np.arange(w)
    groups = [16, 12, 8, 6, 4, 3]
    span = w // len(groups)
    for i, period in enumerate(groups):
        sl = slice(i * span, (i + 1) * span)
        out[:, sl] = ((x[sl] // (period * _SUPERSAMPLE // 2)) % 2).astype(np.float64)
    return out


def render_chart(size: int = CHART_SIZE) -> np.ndarray:
    """The chart as an (size, size, 3) uint8 RGB array."""
    if size < 64:
        raise ValueError(f"the chart needs at least 64 pixels, got {size}")
    n = size * _SUPERSAMPLE
    half = n // 2
    canvas = np.zeros((n, n, 3))
    # Top left: zone plate (drawn at chart resolution, so its frequencies are chart frequencies).
    zp = _zone_plate(half // _SUPERSAMPLE)
    canvas[:half, :half] = np.kron(zp, np.ones((_SUPERSAMPLE, _SUPERSAMPLE)))[..., None]
    # Top right: Siemens star, supersampled.
    canvas[:half, half:] = _siemens_star(half)[..., None]
    # Bottom left: bars over a grey ramp.
    quarter = half // 2
    canvas[half : half + quarter, :half] = _bars(quarter, half)[..., None]
    ramp = np.linspace(0, 1, half)[None, :, None]
    canvas[half + quarter :, :half] = ramp
    # Bottom right: colour ramps (hue sweep over value) and a flat patch.
    y, x = np.mgrid[0:half, 0:half] / half
    hue = x * 6.0
    rgb = np.stack(
        [np.clip(np.abs(hue - 3) - 1, 0, 1), np.clip(2 - np.abs(hue - 2), 0, 1), np.clip(2 - np.abs(hue - 4), 0, 1)], -1
    )
    value = (1 - y)[..., None]
    patch = rgb * value + (1 - value) * 0.08
    flat = slice(half - half // 4, half)
    patch[flat, flat] = (0.55, 0.45, 0.35)
    canvas[half:, half:] = patch
    small = canvas.reshape(size, _SUPERSAMPLE, size, _SUPERSAMPLE, 3).mean(axis=(1, 3))
    return np.clip(np.round(small * 255), 0, 255).astype(np.uint8)


def write_chart(path: str | Path, size: int = CHART_SIZE) -> Path:
    """Render the chart and save it (format from the suffix, PNG by default) atomically."""
    from srcli.io.imagefile import Frame, write_image_atomic

    path = Path(path)
    if not path.suffix:
        path = path.with_suffix(".png")
    rgb = render_chart(size).astype(np.float32) / 255.0
    fmt = {"jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP", "tif": "TIFF", "tiff": "TIFF", "bmp": "BMP"}.get(
        path.suffix.lower().lstrip("."), "PNG"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image_atomic(
        path,
        [Frame(rgb=rgb, alpha=None, duration_ms=None)],
        grey=False,
        bit_depth=8,
        fmt=fmt,
        quality=None,
        icc_profile=None,
        exif=None,
        keep_metadata=False,
        loop=None,
    )
    return path
