"""Tests for the MATLAB-compatible imresize, quantize_uint8 and the Bicubic model.

Reference values come from outside the implementation: a per-pixel pure-Python evaluation
of MATLAB's formula (written here from the definition, with its own mirror rule), weights
worked out by hand, polynomial reproduction, and the published Set5 bicubic PSNRs.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from srcli.archs.imresize import Bicubic, imresize, quantize_uint8
from srcli.eval.metrics import crop_border, psnr, rgb_to_y

# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only ``shared/`` folder next to the repository; skip (or fail if required) when absent."""
    path = Path(__file__).resolve().parents[1].parent / "shared"
    if not path.is_dir():
        msg = f"shared folder not found at {path}"
        if os.environ.get("SRCLI_REQUIRE_SHARED") == "1":
            pytest.fail(f"{msg} (SRCLI_REQUIRE_SHARED=1)")
        pytest.skip(msg)
    return path


# --------------------------------------------------------------------------- reference


def _ref_cubic(t: float) -> float:
    a = abs(t)
    if a <= 1:
        return 1.5 * a**3 - 2.5 * a**2 + 1
    if a <= 2:
        return -0.5 * a**3 + 2.5 * a**2 - 4 * a + 2
    return 0.0


def _ref_reflect(j: int, n: int) -> int:
    """1-based symmetric padding by repeated reflection: 0 -> 1, -1 -> 2, n + 1 -> n."""
    while j < 1 or j > n:
        j = 1 - j if j < 1 else 2 * n + 1 - j
    return j


def _ref_taps(n_in: int, i_out: int, scale: float, antialias: bool) -> list[tuple[int, float]]:
    """(0-based source, weight) pairs for 0-based output pixel ``i_out``, straight from MATLAB's formula."""
    x = i_out + 1
    u = x / scale + 0.5 * (1 - 1 / scale)
    if antialias and scale < 1:
        width = 4 / scale

        def h(d: float) -> float:
            return scale * _ref_cubic(scale * d)
    else:
        width = 4.0
        h = _ref_cubic
    left = math.floor(u - width / 2)
    taps = [(j, h(u - j)) for j in range(left, left + math.ceil(width) + 2)]
    total = sum(w for _, w in taps)
    return [(_ref_reflect(j, n_in) - 1, w / total) for j, w in taps]


def _ref_imresize(img: np.ndarray, out_hw: tuple[int, int], scales: tuple[float, float], antialias: bool):
    """Direct 2-D (non-separable) sum over the product of the H and W taps of every output pixel."""
    c, h, w = img.shape
    out = np.zeros((c, *out_hw))
    taps_h = [_ref_taps(h, i, scales[0], antialias) for i in range(out_hw[0])]
    taps_w = [_ref_taps(w, j, scales[1], antialias) for j in range(out_hw[1])]
    for ch in range(c):
        for i in range(out_hw[0]):
            for j in range(out_hw[1]):
                out[ch, i, j] = sum(wp * wq * img[ch, p, q] for p, wp in taps_h[i] for q, wq in taps_w[j])
    return out


# --------------------------------------------------------------------------- against the reference


@pytest.mark.parametrize(
    ("shape", "scale", "antialias"),
    [
        ((2, 8, 10), 0.5, True),
        ((2, 8, 10), 0.5, False),
        ((1, 9, 7), 1 / 3, True),
        ((1, 11, 9), 0.75, True),
        ((1, 11, 9), 0.75, False),
        ((2, 5, 6), 2, True),
        ((1, 4, 5), 3, True),
        ((1, 6, 5), 1.7, True),
        ((1, 3, 2), 0.25, True),  # kernel (16 taps) much wider than the image: repeated reflection
    ],
)
def test_matches_reference_scale(shape: tuple[int, int, int], scale: float, antialias: bool) -> None:
    img = np.random.default_rng(0).random(shape)
    got = imresize(torch.from_numpy(img), scale=scale, antialias=antialias)
    out_hw = (math.ceil(shape[1] * scale), math.ceil(shape[2] * scale))
    assert tuple(got.shape) == (shape[0], *out_hw)
    ref = _ref_imresize(img, out_hw, (scale, scale), antialias)
    np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("size", [(5, 13), (14, 4), (7, 7)])
def test_matches_reference_size(size: tuple[int, int]) -> None:
    # Different factors per dim (one up, one down): also exercises the W-first order.
    img = np.random.default_rng(1).random((2, 7, 9))
    got = imresize(torch.from_numpy(img), size=size)
    ref = _ref_imresize(img, size, (size[0] / 7, size[1] / 9), True)
    np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- hand-computed weights


def _weights_via_api(n_in: int, n_out: int, antialias: bool = True) -> torch.Tensor:
    """The (n_out, n_in) W-resize matrix, read off by resizing unit impulses (H = 1 stays identity)."""
    impulses = torch.eye(n_in, dtype=torch.float64).view(n_in, 1, n_in)
    return imresize(impulses, size=(1, n_out), antialias=antialias)[:, 0, :].T


def test_hand_weights_4_to_2_antialiased() -> None:
    # s = 1/2, h(d) = 0.5 * cubic(d / 2), width 8. Output 1: u = 2 + 0.5 * (1 - 2) = 1.5, taps j = -3..6,
    # d = u - j = 4.5 .. -4.5. cubic(0.25) = 0.8671875, cubic(0.75) = 0.2265625,
    # cubic(1.25) = -0.0703125, cubic(1.75) = -0.0234375, cubic(2.25) = 0; already sum to 1.
    # Halved: j=-2: -0.01171875, -1: -0.03515625, 0: 0.11328125, 1: 0.43359375, 2: 0.43359375,
    # 3: 0.11328125, 4: -0.03515625, 5: -0.01171875. Mirror (n = 4): 0->1, -1->2, -2->3, 5->4.
    # Pixel 1: 0.11328125 + 0.43359375; 2: -0.03515625 + 0.43359375; 3: -0.01171875 + 0.11328125;
    # 4: -0.03515625 - 0.01171875. Output 2 is the mirror image.
    row = [0.546875, 0.3984375, 0.1015625, -0.046875]
    expected = torch.tensor([row, row[::-1]], dtype=torch.float64)
    torch.testing.assert_close(_weights_via_api(4, 2), expected, rtol=0, atol=1e-15)


def test_hand_weights_4_to_2_no_antialias() -> None:
    # Plain cubic: u = 1.5, taps j = -1..4 at d = 2.5..-2.5: cubic(0.5) = 0.5625, cubic(1.5) = -0.0625.
    # j = 0 mirrors to pixel 1: 0.5625 - 0.0625 = 0.5.
    row = [0.5, 0.5625, -0.0625, 0.0]
    expected = torch.tensor([row, row[::-1]], dtype=torch.float64)
    torch.testing.assert_close(_weights_via_api(4, 2, antialias=False), expected, rtol=0, atol=1e-15)


def test_hand_weights_upscale_x2_edge() -> None:
    # s = 2: output 1 has u = 0.5 + 0.25 = 0.75. Taps j = -1..4 at d = 1.75, 0.75, -0.25, -1.25, ...
    # j = -1 -> pixel 2, j = 0 -> pixel 1. Pixel 1: cubic(0.75) + cubic(0.25) = 1.09375;
    # pixel 2: cubic(1.75) + cubic(1.25) = -0.09375.
    # Output 2: u = 1.25; d = 1.25 (j=0->1), 0.25 (j=1), -0.75 (j=2), -1.75 (j=3).
    # Pixel 1: -0.0703125 + 0.8671875 = 0.796875; pixel 2: 0.2265625; pixel 3: -0.0234375.
    w = _weights_via_api(4, 8)
    torch.testing.assert_close(w[0], torch.tensor([1.09375, -0.09375, 0, 0], dtype=torch.float64))
    torch.testing.assert_close(w[1], torch.tensor([0.796875, 0.2265625, -0.0234375, 0], dtype=torch.float64))
    torch.testing.assert_close(w.sum(dim=1), torch.ones(8, dtype=torch.float64), rtol=0, atol=1e-15)


# --------------------------------------------------------------------------- invariants


@pytest.mark.parametrize("scale", [0.5, 1 / 3, 0.25, 0.7, 1.0, 2, 3, 4, 1.5])
def test_constant_stays_constant(scale: float) -> None:
    img = torch.full((3, 13, 17), 0.37, dtype=torch.float64)
    out = imresize(img, scale=scale)
    torch.testing.assert_close(out, torch.full_like(out, 0.37), rtol=0, atol=1e-13)


def _ramp_out(n_out: int, scale: float) -> torch.Tensor:
    """Input coordinate (0-based) that each output pixel samples: ``u - 1``."""
    x = torch.arange(1, n_out + 1, dtype=torch.float64)
    return x / scale + 0.5 * (1 - 1 / scale) - 1


@pytest.mark.parametrize("scale", [2, 3, 4, 1.7])
def test_upscale_reproduces_linear_and_quadratic(scale: float) -> None:
    # Keys' cubic with a = -0.5 reproduces polynomials up to degree 2 away from the borders.
    n = 24
    k = torch.arange(n, dtype=torch.float64)
    for poly in (lambda t: 3 * t - 2, lambda t: t * t):
        img = poly(k).view(1, 1, n).expand(1, 3, n)
        out = imresize(img, scale=scale)[0, 1]
        margin = int(3 * scale) + 2
        expected = poly(_ramp_out(out.numel(), scale))
        torch.testing.assert_close(out[margin:-margin], expected[margin:-margin], rtol=0, atol=1e-10)


@pytest.mark.parametrize("scale", [0.5, 1 / 3, 0.25])
def test_downscale_preserves_ramp(scale: float) -> None:
    # For these factors every output centre sits on or midway between pixels, so the (symmetric,
    # normalised) stretched kernel averages a ramp to its centre value.
    n = 48
    img = torch.arange(n, dtype=torch.float64).view(1, 1, n).expand(1, 4, n)
    out = imresize(img, scale=scale)[0, 0]  # rows are all equal (constant along H)
    margin = int(2 / scale)
    expected = _ramp_out(out.numel(), scale)
    torch.testing.assert_close(out[margin:-margin], expected[margin:-margin], rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("shape", "kwargs", "out_hw"),
    [
        ((3, 10, 7), {"scale": 1 / 3}, (4, 3)),
        ((3, 5, 5), {"scale": 0.5}, (3, 3)),
        ((1, 7, 9), {"scale": 2.5}, (18, 23)),
        ((2, 3, 10, 8), {"scale": 0.25}, (3, 2)),
        ((2, 3, 10, 8), {"size": (6, 4)}, (6, 4)),
        ((1, 256, 255), {"scale": 1 / 3}, (86, 85)),
    ],
)
def test_output_shape_is_ceil(shape: tuple[int, ...], kwargs: dict, out_hw: tuple[int, int]) -> None:
    out = imresize(torch.rand(shape, dtype=torch.float64), **kwargs)
    assert tuple(out.shape) == (*shape[:-2], *out_hw)


def test_batch_matches_single_images() -> None:
    batch = torch.rand(3, 2, 9, 11, dtype=torch.float64)
    out = imresize(batch, scale=0.5)
    for i in range(3):
        torch.testing.assert_close(out[i], imresize(batch[i], scale=0.5), rtol=0, atol=1e-14)


def test_dtypes() -> None:
    x64 = torch.rand(1, 3, 12, 10, dtype=torch.float64)
    ref = imresize(x64, scale=0.5)
    out32 = imresize(x64.float(), scale=0.5)
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), ref, rtol=0, atol=1e-5)
    out_bf = imresize(x64.bfloat16(), scale=2)
    assert out_bf.dtype == torch.bfloat16 and tuple(out_bf.shape) == (1, 3, 24, 20)
    with pytest.raises(TypeError):
        imresize(torch.zeros(1, 4, 4, dtype=torch.uint8), scale=2)


def test_identity_returns_copy() -> None:
    x = torch.rand(1, 5, 6, dtype=torch.float64)
    out = imresize(x, scale=1.0)
    torch.testing.assert_close(out, x, rtol=0, atol=0)
    out.zero_()
    assert x.abs().sum() > 0


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"scale": 2, "size": (4, 4)}, {"scale": 0}, {"scale": -1.0}, {"size": (0, 3)}, {"size": (3,)}],
)
def test_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        imresize(torch.rand(1, 4, 4), **kwargs)


# --------------------------------------------------------------------------- quantize_uint8


def test_quantize_rounds_half_away_from_zero() -> None:
    k = torch.arange(255, dtype=torch.float64)
    x = (k + 0.5) / 255
    assert torch.equal(x * 255, k + 0.5)  # exact ties, so the test means what it says
    q = quantize_uint8(x)
    torch.testing.assert_close(q * 255, k + 1, rtol=0, atol=1e-12)
    # torch.round would send 0.5 -> 0 and 2.5 -> 2 (half to even); MATLAB gives 1 and 3.
    assert round(q[0].item() * 255) == 1 and round(q[2].item() * 255) == 3


def test_quantize_clamps_and_levels() -> None:
    x = torch.tensor([-0.2, 0.0, 0.3 / 255, 0.7 / 255, 100.49 / 255, 1.0, 1.7], dtype=torch.float64)
    expected = torch.tensor([0, 0, 0, 1, 100, 255, 255], dtype=torch.float64) / 255
    torch.testing.assert_close(quantize_uint8(x), expected, rtol=0, atol=0)
    q32 = quantize_uint8(torch.rand(2, 3, 4, 5))
    assert q32.dtype == torch.float32
    levels = q32.double() * 255
    torch.testing.assert_close(levels, levels.round(), rtol=0, atol=1e-4)


# --------------------------------------------------------------------------- Bicubic model


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_module(scale: int) -> None:
    model = Bicubic(scale)
    assert list(model.parameters()) == [] and list(model.buffers()) == []
    x = torch.rand(2, 3, 5, 7)
    out = model(x)
    assert tuple(out.shape) == (2, 3, 5 * scale, 7 * scale)
    torch.testing.assert_close(out, imresize(x, scale=scale), rtol=0, atol=0)


@pytest.mark.parametrize("scale", [0, -2, 1.5])
def test_bicubic_rejects_bad_scale(scale: float) -> None:
    with pytest.raises(ValueError):
        Bicubic(scale)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- Set5 bicubic baseline

# Published Set5 bicubic PSNR (Y, crop = scale) and the authors' pipeline figures from shared/README.md.
_SET5_PUBLISHED = {2: 33.66, 3: 30.39, 4: 28.42}
_SET5_CALIBRATED = {2: 33.68, 3: 30.40, 4: 28.43}


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_set5_bicubic_psnr(shared_dir: Path, scale: int) -> None:
    set5 = shared_dir / "data" / "benchmarks" / "Set5"
    paths = sorted(set5.glob("*.png"))
    if len(paths) != 5:
        msg = f"expected 5 Set5 PNGs in {set5}, found {len(paths)}"
        if os.environ.get("SRCLI_REQUIRE_SHARED") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    values = []
    for p in paths:
        rgb = np.array(Image.open(p).convert("RGB"))
        h, w = rgb.shape[0] // scale * scale, rgb.shape[1] // scale * scale  # modcrop(img, scale)
        hr = torch.from_numpy(rgb[:h, :w]).permute(2, 0, 1).to(torch.float64) / 255
        lr = quantize_uint8(imresize(hr, scale=1 / scale))
        sr = quantize_uint8(imresize(lr, scale=scale))
        y_hr = crop_border(rgb_to_y(hr * 255), scale)
        y_sr = crop_border(rgb_to_y(sr * 255), scale)
        values.append(psnr(y_hr, y_sr))
    mean = sum(values) / len(values)
    assert abs(mean - _SET5_PUBLISHED[scale]) <= 0.03, f"x{scale}: {mean:.4f} dB, values {values}"
    # Tighter: the README's MATLAB-faithful figures are rounded to 0.01 dB.
    assert abs(mean - _SET5_CALIBRATED[scale]) <= 0.01, f"x{scale}: {mean:.4f} dB"
