"""Tests for the paper-protocol metrics: Y conversion, border crop, PSNR and SSIM.

Expected values are worked out by hand or by a pure-Python window-by-window SSIM written here
from Wang et al. (2003), independent of torch.
"""

from __future__ import annotations

import math
import random

import pytest
import torch

from srcli.eval.metrics import crop_border, psnr, rgb_to_y, ssim

C1 = (0.01 * 255) ** 2
C2 = (0.03 * 255) ** 2

# --------------------------------------------------------------------------- rgb_to_y


@pytest.mark.parametrize(
    ("rgb", "y"),
    [
        ((255, 255, 255), 235.0),  # 16 + 65.481 + 128.553 + 24.966 = 16 + 219
        ((0, 0, 0), 16.0),
        ((255, 0, 0), 16 + 65.481),
        ((0, 255, 0), 16 + 128.553),
        ((0, 0, 255), 16 + 24.966),
        ((1, 2, 3), 16 + (65.481 + 2 * 128.553 + 3 * 24.966) / 255),  # 17.5587..., not rounded
    ],
)
def test_rgb_to_y_values(rgb: tuple[int, int, int], y: float) -> None:
    img = torch.tensor(rgb, dtype=torch.float64).view(3, 1, 1).expand(3, 2, 3)
    out = rgb_to_y(img)
    assert out.dtype == torch.float64 and tuple(out.shape) == (2, 3)
    torch.testing.assert_close(out, torch.full((2, 3), y, dtype=torch.float64), rtol=0, atol=1e-12)


def test_rgb_to_y_batch_and_errors() -> None:
    img = torch.rand(4, 3, 5, 6, dtype=torch.float64) * 255
    out = rgb_to_y(img)
    assert tuple(out.shape) == (4, 5, 6)
    torch.testing.assert_close(out[2], rgb_to_y(img[2]), rtol=0, atol=0)
    for bad in (torch.rand(4, 5, 6), torch.rand(5, 6), torch.rand(1, 1, 5, 6)):
        with pytest.raises(ValueError):
            rgb_to_y(bad)


# --------------------------------------------------------------------------- crop_border


def test_crop_border() -> None:
    img = torch.arange(3 * 10 * 12).view(3, 10, 12)
    out = crop_border(img, 2)
    assert tuple(out.shape) == (3, 6, 8)
    assert torch.equal(out, img[:, 2:8, 2:10])
    assert tuple(crop_border(torch.zeros(2, 3, 9, 9), 4).shape) == (2, 3, 1, 1)
    assert tuple(crop_border(torch.zeros(7, 5), 0).shape) == (7, 5)
    with pytest.raises(ValueError):
        crop_border(torch.zeros(8, 8), 4)
    with pytest.raises(ValueError):
        crop_border(torch.zeros(8, 8), -1)


# --------------------------------------------------------------------------- psnr


def test_psnr_identical_is_inf() -> None:
    a = torch.rand(20, 30, dtype=torch.float64) * 255
    assert psnr(a, a.clone()) == math.inf


def test_psnr_constant_offset() -> None:
    a = torch.rand(3, 16, 16, dtype=torch.float64) * 200
    value = psnr(a, a + 1)
    assert value == pytest.approx(10 * math.log10(255**2), abs=1e-9)
    assert value == pytest.approx(48.1308, abs=5e-5)


def test_psnr_one_pixel() -> None:
    a = torch.full((8, 12), 100.0, dtype=torch.float64)
    b = a.clone()
    b[3, 5] += 10  # MSE = 10^2 / (8 * 12)
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / (100 / 96)), abs=1e-9)
    assert psnr(b, a) == psnr(a, b)


def test_psnr_peak_and_errors() -> None:
    a = torch.zeros(4, 4, dtype=torch.float64)
    assert psnr(a, a + 0.1, peak=1.0) == pytest.approx(20.0, abs=1e-9)
    with pytest.raises(ValueError):
        psnr(torch.zeros(4, 4), torch.zeros(4, 5))


# --------------------------------------------------------------------------- ssim


def _ref_ssim(a: list[list[float]], b: list[list[float]]) -> float:
    """Wang et al. (2003), one 11x11 window at a time, with centred (co)variances."""
    w = [[math.exp(-((i - 5) ** 2 + (j - 5) ** 2) / (2 * 1.5**2)) for j in range(11)] for i in range(11)]
    total = sum(map(sum, w))
    w = [[v / total for v in row] for row in w]
    h, wd = len(a), len(a[0])
    values = []
    for r in range(h - 10):
        for c in range(wd - 10):
            cells = [(w[i][j], a[r + i][c + j], b[r + i][c + j]) for i in range(11) for j in range(11)]
            mx = sum(k * x for k, x, _ in cells)
            my = sum(k * y for k, _, y in cells)
            vx = sum(k * (x - mx) ** 2 for k, x, _ in cells)
            vy = sum(k * (y - my) ** 2 for k, _, y in cells)
            cxy = sum(k * (x - mx) * (y - my) for k, x, y in cells)
            values.append(((2 * mx * my + C1) * (2 * cxy + C2)) / ((mx * mx + my * my + C1) * (vx + vy + C2)))
    return sum(values) / len(values)


@pytest.mark.parametrize(("h", "w"), [(16, 16), (12, 20)])
def test_ssim_matches_window_loop(h: int, w: int) -> None:
    rng = random.Random(h * 100 + w)
    a = [[rng.uniform(0, 255) for _ in range(w)] for _ in range(h)]
    # Correlated, noisier, slightly darker copy: SSIM well inside (0, 1).
    b = [[0.8 * x + rng.gauss(0, 25) for x in row] for row in a]
    expected = _ref_ssim(a, b)
    assert 0.05 < expected < 0.95
    got = ssim(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64))
    assert got == pytest.approx(expected, abs=1e-10)


def test_ssim_identical_is_one() -> None:
    a = torch.rand(24, 24, dtype=torch.float64) * 255
    assert ssim(a, a.clone()) == pytest.approx(1.0, abs=1e-14)


@pytest.mark.parametrize(("m1", "m2"), [(100.0, 120.0), (16.0, 235.0), (0.0, 3.0)])
def test_ssim_constant_images_closed_form(m1: float, m2: float) -> None:
    # Zero variances and covariance: the contrast-structure term is C2 / C2 = 1.
    a = torch.full((16, 16), m1, dtype=torch.float64)
    b = torch.full((16, 16), m2, dtype=torch.float64)
    expected = (2 * m1 * m2 + C1) / (m1**2 + m2**2 + C1)
    assert ssim(a, b) == pytest.approx(expected, rel=1e-10)


def test_ssim_symmetric_and_peak_invariant() -> None:
    a = torch.rand(20, 18, dtype=torch.float64) * 255
    b = (a + torch.randn(20, 18, dtype=torch.float64) * 10).clamp(0, 255)
    assert ssim(a, b) == pytest.approx(ssim(b, a), abs=1e-14)
    # C1 and C2 scale with peak^2, so rescaling images and peak together leaves SSIM unchanged.
    assert ssim(a / 255, b / 255, peak=1.0) == pytest.approx(ssim(a, b), abs=1e-12)


def test_ssim_errors() -> None:
    with pytest.raises(ValueError):
        ssim(torch.zeros(3, 16, 16), torch.zeros(3, 16, 16))
    with pytest.raises(ValueError):
        ssim(torch.zeros(10, 16), torch.zeros(10, 16))
    with pytest.raises(ValueError):
        ssim(torch.zeros(16, 16), torch.zeros(16, 17))
