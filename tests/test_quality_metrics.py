"""Tests for srcli.eval.quality: GMSD, FSIM / FSIMc and MS-SSIM as the authors' MATLAB code computes them.

Three kinds of evidence:

1. Published MATLAB outputs on fixed image pairs (``test_matches_published_matlab_values``):
   piq's test suite (``tests/test_gmsd.py``, ``tests/test_fsim.py``, v0.8.0: "Baseline values are
   from original MATLAB code") and pyiqa's calibration table (``ResultsCalibra/results_official.csv``,
   the "(org)" rows of ``ResultsCalibra.md``: the original MATLAB scripts, fed ``rgb2gray`` for GMSD,
   SSIM and MS-SSIM). The images are not in this repository; see tests/data/quality/SOURCES.toml.
   They are read from ../shared/data/quality (or $SRCLI_QUALITY_REFS) and these checks skip without them.
2. Independent NumPy transcriptions of GMSD.m, FeatureSIM.m (with its phasecong2) and msssim.m
   (with ssim_index_new.m), written here statement by statement from the MATLAB semantics
   (conv2 'same', imfilter 'symmetric', MATLAB median / std2 / round) with no code shared with the
   module, run on odd-sized images, where the even-sized references above cannot reach.
3. Properties: identity values, symmetry, batching, and monotonic response to blur on Set5.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from srcli.eval.metrics import crop_border, rgb_to_y, ssim
from srcli.eval.protocol import to_uint8_levels
from srcli.eval.quality import QUALITY_METRICS, _ssim_and_cs, fsim, fsimc, gmsd, ms_ssim, quality_scores
from tests.conftest import SHARED, require_shared

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

HERE = Path(__file__).resolve().parent
MANIFEST = HERE / "data" / "quality" / "SOURCES.toml"
MS_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)

# --------------------------------------------------------------------------- helpers


def _synthetic_pair(h: int, w: int, channels: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth-plus-texture image on uint8 levels and a noisier, slightly blurred version of it."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    planes = []
    for c in range(channels):
        base = 128 + 60 * np.sin(xx / (7.0 + c)) * np.cos(yy / 11.0) + 30 * ((xx // 9 + yy // 13) % 2)
        planes.append(base + rng.normal(0, 6, (h, w)))
    ref = np.clip(np.round(np.stack(planes)), 0, 255)
    dist = ref.copy()
    dist[:, 1:-1, 1:-1] = (ref[:, :-2, 1:-1] + ref[:, 2:, 1:-1] + ref[:, 1:-1, :-2] + ref[:, 1:-1, 2:]) / 4
    dist = np.clip(np.round(dist + rng.normal(0, 8, dist.shape)), 0, 255)
    shape = (h, w) if channels == 1 else (channels, h, w)
    return torch.from_numpy(dist).reshape(shape), torch.from_numpy(ref).reshape(shape)


def _rgb2gray_uint8(rgb: torch.Tensor) -> torch.Tensor:
    """MATLAB ``rgb2gray`` on a uint8 (3, H, W) image: fixed weights, rounded to uint8."""
    coef = torch.tensor([0.298936021293775, 0.587043074451121, 0.114020904255103], dtype=torch.float64)
    return torch.floor(torch.einsum("chw,c->hw", rgb.to(torch.float64), coef) + 0.5)


# ---- NumPy transcriptions of the MATLAB code (written from the .m files' semantics, not from quality.py)


def _np_conv2_same(a: np.ndarray, k: np.ndarray) -> np.ndarray:
    """MATLAB ``conv2(a, k, 'same')``: the full 2-D convolution, then its central part starting at floor(size(k)/2)."""
    kh, kw = k.shape
    h, w = a.shape
    full = np.zeros((h + kh - 1, w + kw - 1))
    for i in range(kh):
        for j in range(kw):
            full[i : i + h, j : j + w] += k[i, j] * a
    return full[kh // 2 : kh // 2 + h, kw // 2 : kw // 2 + w]


def _np_gmsd(y1: np.ndarray, y2: np.ndarray) -> float:
    ave = np.full((2, 2), 0.25)
    y1 = _np_conv2_same(y1, ave)[::2, ::2]
    y2 = _np_conv2_same(y2, ave)[::2, ::2]
    dx = np.array([[1.0, 0.0, -1.0]] * 3) / 3
    g1 = np.hypot(_np_conv2_same(y1, dx), _np_conv2_same(y1, dx.T))
    g2 = np.hypot(_np_conv2_same(y2, dx), _np_conv2_same(y2, dx.T))
    q = (2 * g1 * g2 + 170) / (g1**2 + g2**2 + 170)
    return float(q.std(ddof=1))  # std2


def _np_frange(n: int) -> np.ndarray:
    if n % 2:
        return np.arange(-(n - 1) / 2, (n - 1) / 2 + 1) / (n - 1)
    return np.arange(-n / 2, n / 2) / n


def _np_phasecong2(im: np.ndarray) -> np.ndarray:
    rows, cols = im.shape
    imagefft = np.fft.fft2(im)
    x, y = np.meshgrid(_np_frange(cols), _np_frange(rows))
    radius = np.sqrt(x**2 + y**2)
    lp = np.fft.ifftshift(1.0 / (1.0 + (radius / 0.45) ** 30))  # lowpassfilter([rows cols], .45, 15)
    theta = np.fft.ifftshift(np.arctan2(-y, x))
    radius = np.fft.ifftshift(radius)
    radius[0, 0] = 1
    log_gabor = []
    for s in range(4):
        fo = 1.0 / (6 * 2**s)
        lg = np.exp(-(np.log(radius / fo) ** 2) / (2 * np.log(0.55) ** 2)) * lp
        lg[0, 0] = 0
        log_gabor.append(lg)
    theta_sigma = math.pi / 4 / 1.2
    energy_all = np.zeros((rows, cols))
    an_all = np.zeros((rows, cols))
    for o in range(4):
        angl = o * math.pi / 4
        ds = np.sin(theta) * math.cos(angl) - np.cos(theta) * math.sin(angl)
        dc = np.cos(theta) * math.cos(angl) + np.sin(theta) * math.sin(angl)
        spread = np.exp(-(np.abs(np.arctan2(ds, dc)) ** 2) / (2 * theta_sigma**2))
        sum_e = np.zeros((rows, cols))
        sum_o = np.zeros((rows, cols))
        sum_an = np.zeros((rows, cols))
        eo, ifft_filters = [], []
        em_n = 0.0
        for s in range(4):
            filt = log_gabor[s] * spread
            ifft_filters.append(np.real(np.fft.ifft2(filt)) * math.sqrt(rows * cols))
            eo.append(np.fft.ifft2(imagefft * filt))
            sum_an += np.abs(eo[s])
            sum_e += eo[s].real
            sum_o += eo[s].imag
            if s == 0:
                em_n = float(np.sum(filt**2))
        x_energy = np.sqrt(sum_e**2 + sum_o**2) + 1e-4
        mean_e, mean_o = sum_e / x_energy, sum_o / x_energy
        energy = np.zeros((rows, cols))
        for s in range(4):
            e, od = eo[s].real, eo[s].imag
            energy += e * mean_e + od * mean_o - np.abs(e * mean_o - od * mean_e)
        median_e2n = np.median(np.abs(eo[0]) ** 2)
        noise_power = (-median_e2n / math.log(0.5)) / em_n
        est_sum_an2 = sum(f**2 for f in ifft_filters).sum()
        est_sum_aiaj = sum(ifft_filters[i] * ifft_filters[j] for i in range(3) for j in range(i + 1, 4)).sum()
        tau = math.sqrt((2 * noise_power * est_sum_an2 + 4 * noise_power * est_sum_aiaj) / 2)
        t = (tau * math.sqrt(math.pi / 2) + 2.0 * math.sqrt((2 - math.pi / 2) * tau**2)) / 1.7
        energy_all += np.maximum(energy - t, 0)
        an_all += sum_an
    return energy_all / an_all


def _np_feature_sim(ref: np.ndarray, dis: np.ndarray) -> tuple[float, float]:
    """FeatureSIM.m: (FSIM, FSIMc) of (H, W) grey or (3, H, W) RGB arrays."""
    rows, cols = ref.shape[-2:]
    if ref.ndim == 3:
        y1 = 0.299 * ref[0] + 0.587 * ref[1] + 0.114 * ref[2]
        y2 = 0.299 * dis[0] + 0.587 * dis[1] + 0.114 * dis[2]
        i1 = 0.596 * ref[0] - 0.274 * ref[1] - 0.322 * ref[2]
        i2 = 0.596 * dis[0] - 0.274 * dis[1] - 0.322 * dis[2]
        q1 = 0.211 * ref[0] - 0.523 * ref[1] + 0.312 * ref[2]
        q2 = 0.211 * dis[0] - 0.523 * dis[1] + 0.312 * dis[2]
    else:
        y1, y2 = ref, dis
        i1 = i2 = q1 = q2 = np.ones((rows, cols))
    f = max(1, int(math.floor(min(rows, cols) / 256 + 0.5)))  # MATLAB round
    ave = np.full((f, f), 1.0 / f**2)
    i1, i2, q1, q2, y1, y2 = (_np_conv2_same(c, ave)[::f, ::f] for c in (i1, i2, q1, q2, y1, y2))
    pc1, pc2 = _np_phasecong2(y1), _np_phasecong2(y2)
    dx = np.array([[3.0, 0, -3], [10, 0, -10], [3, 0, -3]]) / 16
    dy = np.array([[3.0, 10, 3], [0, 0, 0], [-3, -10, -3]]) / 16
    g1 = np.sqrt(_np_conv2_same(y1, dx) ** 2 + _np_conv2_same(y1, dy) ** 2)
    g2 = np.sqrt(_np_conv2_same(y2, dx) ** 2 + _np_conv2_same(y2, dy) ** 2)
    pc_sim = (2 * pc1 * pc2 + 0.85) / (pc1**2 + pc2**2 + 0.85)
    g_sim = (2 * g1 * g2 + 160) / (g1**2 + g2**2 + 160)
    pcm = np.maximum(pc1, pc2)
    fsim_value = np.sum(g_sim * pc_sim * pcm) / np.sum(pcm)
    i_sim = (2 * i1 * i2 + 200) / (i1**2 + i2**2 + 200)
    q_sim = (2 * q1 * q2 + 200) / (q1**2 + q2**2 + 200)
    chroma = np.real(np.power((i_sim * q_sim).astype(complex), 0.03))
    fsimc_value = np.sum(g_sim * pc_sim * chroma * pcm) / np.sum(pcm)
    return float(fsim_value), float(fsimc_value)


def _np_msssim(img1: np.ndarray, img2: np.ndarray) -> float:
    """msssim.m (defaults: K [.01 .03], fspecial('gaussian', 11, 1.5), 5 levels, 'product')."""
    t = np.arange(-5, 6)
    win = np.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * 1.5**2))
    win /= win.sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def filter2_valid(a: np.ndarray) -> np.ndarray:
        return np.einsum("ijkl,kl->ij", np.lib.stride_tricks.sliding_window_view(a, win.shape), win)

    mssim, mcs = [], []
    im1, im2 = img1.astype(np.float64), img2.astype(np.float64)
    for _ in range(5):
        mu1, mu2 = filter2_valid(im1), filter2_valid(im2)
        s1 = filter2_valid(im1 * im1) - mu1**2
        s2 = filter2_valid(im2 * im2) - mu2**2
        s12 = filter2_valid(im1 * im2) - mu1 * mu2
        mssim.append(np.mean((2 * mu1 * mu2 + c1) * (2 * s12 + c2) / ((mu1**2 + mu2**2 + c1) * (s1 + s2 + c2))))
        mcs.append(np.mean((2 * s12 + c2) / (s1 + s2 + c2)))
        # imfilter(im, ones(2)/4, 'symmetric', 'same'): an even kernel is anchored at its element (1,1).
        down = []
        for im in (im1, im2):
            p = np.pad(im, ((0, 1), (0, 1)), mode="symmetric")
            filtered = (p[:-1, :-1] + p[1:, :-1] + p[:-1, 1:] + p[1:, 1:]) / 4
            down.append(filtered[::2, ::2])
        im1, im2 = down
    return float(np.prod([mcs[i] ** MS_WEIGHTS[i] for i in range(4)]) * mssim[4] ** MS_WEIGHTS[4])


# --------------------------------------------------------------------------- 1. published MATLAB values


def _reference_dir() -> Path:
    override = os.environ.get("SRCLI_QUALITY_REFS")
    return Path(override) if override else SHARED / "data" / "quality"


@pytest.fixture(scope="module")
def refs() -> dict[str, torch.Tensor]:
    """The reference images of SOURCES.toml as float64 tensors ((H, W) grey or (3, H, W) RGB), checked by sha256."""
    root = _reference_dir()
    entries = tomllib.loads(MANIFEST.read_text())["quality"]
    missing = [e["name"] for e in entries if not (root / e["name"]).is_file()]
    if missing:
        pytest.skip(f"MATLAB reference images absent from {root} ({len(missing)} of {len(entries)}; SOURCES.toml)")
    images = {}
    for e in entries:
        path = root / e["name"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == e["sha256"], f"{path} is not the pinned file"
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB") if im.mode not in ("L", "RGB") else im, dtype=np.float64)
        t = torch.from_numpy(arr.copy())
        images[e["name"]] = t.permute(2, 0, 1) if t.dim() == 3 else t
    return images


_GREY = "rgb2gray"  # the reference was computed on MATLAB rgb2gray of the RGB pair
_PIQ = "piq v0.8.0 tests (MATLAB baselines)"
_PYIQA = "pyiqa ResultsCalibra/results_official.csv ((org) = original MATLAB scripts)"

# (metric, distorted, reference, preprocessing, published value as printed, source)
PUBLISHED = [
    ("gmsd", "piq/goldhill_jpeg.gif", "piq/goldhill.gif", None, "0.138012587141798", _PIQ),
    ("gmsd", "piq/i01_01_5.bmp", "piq/I01.BMP", None, "0.094124655829098", _PIQ),
    ("fsim", "piq/goldhill_jpeg.gif", "piq/goldhill.gif", None, "0.89691", _PIQ),
    ("fsim", "piq/i01_01_5.bmp", "piq/I01.BMP", None, "0.93674", _PIQ),
    ("fsimc", "piq/i01_01_5.bmp", "piq/I01.BMP", None, "0.92587", _PIQ),
    *[
        ("gmsd", f"pyiqa/dist_dir/{n}.bmp", f"pyiqa/ref_dir/{n}.bmp", _GREY, v, _PYIQA)
        for n, v in [
            ("I03", "0.220347639470143"),
            ("I04", "0.0005220585050504579"),
            ("I06", "0.0004482814810014102"),
            ("I08", "0.134631933046914"),
            ("I19", "0.204996493556054"),
        ]
    ],
    # pyiqa's "fsim" row is FeatureSIM.m's colour output (FSIMc) on the RGB pair.
    *[
        ("fsimc", f"pyiqa/dist_dir/{n}.bmp", f"pyiqa/ref_dir/{n}.bmp", None, v, _PYIQA)
        for n, v in [("I03", "0.6890"), ("I04", "0.9702"), ("I06", "0.9927"), ("I08", "0.9575"), ("I19", "0.8220")]
    ],
    # The scale-1 SSIM of MS-SSIM is ssim_index.m's: the "ssim" (org) row, no downsampling.
    *[
        ("ms-ssim scale 1", f"pyiqa/dist_dir/{n}.bmp", f"pyiqa/ref_dir/{n}.bmp", _GREY, v, _PYIQA)
        for n, v in [("I03", "0.6993"), ("I04", "0.9978"), ("I06", "0.9989"), ("I08", "0.9669"), ("I19", "0.6519")]
    ],
    # MS-SSIM: pyiqa's (org) row agrees only within 1e-3 relative on these three (I08: 0.95653, not
    # 0.9566 to the digit) and not at all on I03 / I19 below, where pyiqa's own port (0.6698 / 0.8418)
    # agrees with msssim.m as transcribed above (0.6700 / 0.8418): that row came from another MS-SSIM
    # script. The scale-1 rows above and the transcription test are the real MS-SSIM checks.
    *[
        ("ms-ssim", f"pyiqa/dist_dir/{n}.bmp", f"pyiqa/ref_dir/{n}.bmp", _GREY, v, _PYIQA)
        for n, v in [("I04", "0.9996"), ("I06", "0.9998"), ("I08", "0.9566")]
    ],
    *[
        pytest.param(
            "ms-ssim",
            f"pyiqa/dist_dir/{n}.bmp",
            f"pyiqa/ref_dir/{n}.bmp",
            _GREY,
            v,
            _PYIQA,
            marks=pytest.mark.xfail(strict=True, reason="pyiqa's (org) MS-SSIM is not msssim.m (0.4-0.5% apart)"),
        )
        for n, v in [("I03", "0.6733"), ("I19", "0.8462")]
    ],
]


def _score(metric: str, x: torch.Tensor, y: torch.Tensor) -> float:
    if metric == "ms-ssim scale 1":
        return float(_ssim_and_cs(x[None, None], y[None, None])[0][0])
    return float({"gmsd": gmsd, "fsim": fsim, "fsimc": fsimc, "ms-ssim": ms_ssim}[metric](x, y))


@pytest.mark.parametrize(("metric", "dist", "ref", "prep", "published", "source"), PUBLISHED)
def test_matches_published_matlab_values(refs, metric, dist, ref, prep, published, source) -> None:
    x, y = refs[dist], refs[ref]
    if prep == _GREY:
        x, y = _rgb2gray_uint8(x), _rgb2gray_uint8(y)
    value = _score(metric, x, y)
    expected = float(published)
    message = f"{metric} {dist}: {value!r} vs {published} ({source})"
    assert abs(value - expected) <= 1e-3 * abs(expected), message
    if metric != "ms-ssim":  # see above
        # Every printed digit: within half a unit of the last one.
        decimals = len(published.split(".")[1])
        assert abs(value - expected) <= max(0.5 * 10.0**-decimals, 1e-12 * abs(expected)), message


# --------------------------------------------------------------------------- 2. NumPy transcriptions, odd sizes


@pytest.mark.parametrize(("h", "w"), [(33, 47), (40, 31)])
def test_gmsd_matches_matlab_transcription(h: int, w: int) -> None:
    x, y = _synthetic_pair(h, w, seed=h)
    assert float(gmsd(x, y)) == pytest.approx(_np_gmsd(x.numpy(), y.numpy()), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize(("h", "w", "channels"), [(45, 38, 3), (36, 51, 1)])
def test_fsim_matches_matlab_transcription(h: int, w: int, channels: int) -> None:
    x, y = _synthetic_pair(h, w, channels, seed=w)
    want_fsim, want_fsimc = _np_feature_sim(y.numpy(), x.numpy())
    assert float(fsim(x, y)) == pytest.approx(want_fsim, rel=1e-10)
    if channels == 3:
        assert float(fsimc(x, y)) == pytest.approx(want_fsimc, rel=1e-10)


def test_fsim_downsampling_factor_three_matches_transcription() -> None:
    # min(H, W) = 641 -> F = round(2.504) = 3 (and 640 -> round(2.5) = 3: MATLAB rounds half away from 0).
    x, y = _synthetic_pair(641, 643, 3, seed=3)
    want_fsim, want_fsimc = _np_feature_sim(y.numpy(), x.numpy())
    assert float(fsim(x, y)) == pytest.approx(want_fsim, rel=1e-10)
    assert float(fsimc(x, y)) == pytest.approx(want_fsimc, rel=1e-10)


@pytest.mark.parametrize(("h", "w"), [(181, 187), (176, 200)])
def test_ms_ssim_matches_matlab_transcription(h: int, w: int) -> None:
    x, y = _synthetic_pair(h, w, seed=w)
    assert float(ms_ssim(x, y)) == pytest.approx(_np_msssim(x.numpy(), y.numpy()), rel=1e-10)


def test_ms_ssim_scale_one_is_the_protocol_ssim() -> None:
    x, y = _synthetic_pair(64, 70, seed=5)
    ssim_mean, _ = _ssim_and_cs(x[None, None].double(), y[None, None].double())
    assert float(ssim_mean[0]) == pytest.approx(ssim(x, y), rel=1e-12)


# --------------------------------------------------------------------------- 3. properties


def test_identity_values() -> None:
    x, _ = _synthetic_pair(40, 46, 3, seed=7)
    assert float(gmsd(x, x)) == 0.0
    assert float(fsim(x, x)) == pytest.approx(1.0, abs=1e-12)
    assert float(fsimc(x, x)) == pytest.approx(1.0, abs=1e-12)
    x, _ = _synthetic_pair(176, 181, 3, seed=8)
    assert float(ms_ssim(x, x)) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("metric", [gmsd, fsim, fsimc, ms_ssim])
@pytest.mark.slow
def test_shapes_batching_and_symmetry(metric) -> None:
    h, w = (176, 180) if metric is ms_ssim else (40, 46)
    x, y = _synthetic_pair(h, w, 3, seed=11)
    x2, y2 = _synthetic_pair(h, w, 3, seed=12)
    batch = metric(torch.stack([x, x2]), torch.stack([y, y2]))
    assert batch.shape == (2,) and batch.dtype == torch.float64
    single = metric(x, y)
    assert single.dim() == 0
    torch.testing.assert_close(batch, torch.stack([single, metric(x2, y2)]), rtol=1e-12, atol=0)
    torch.testing.assert_close(metric(y, x), single, rtol=1e-12, atol=0)
    if metric is not fsimc:
        # uint8 and float give the same; so do (H, W) and (1, H, W) grey
        g, r = x[0], y[0]
        assert float(metric(g.to(torch.uint8), r.to(torch.uint8))) == float(metric(g, r))
        assert float(metric(g[None], r[None])) == float(metric(g, r))


def test_input_errors() -> None:
    x, y = _synthetic_pair(180, 180, 1)
    with pytest.raises(ValueError):
        gmsd(x, y[:-1])
    with pytest.raises(ValueError):
        fsimc(x, y)  # needs colour
    with pytest.raises(ValueError):
        ms_ssim(x[:175], y[:175])  # 175 / 16 < 11 at the fifth scale
    with pytest.raises(ValueError):
        fsim(torch.zeros(2, 4, 4), torch.zeros(2, 4, 4))  # two channels
    with pytest.raises(ValueError):
        quality_scores(torch.zeros(3, 200, 200), torch.zeros(3, 200, 200, dtype=torch.uint8), 2, ["psnr"])


def _gaussian_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    r = math.ceil(3 * sigma)
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = (g / g.sum()).to(img)
    c = img.shape[0]
    out = F.pad(img[None], (r, r, r, r), mode="reflect")
    out = F.conv2d(out, g.view(1, 1, -1, 1).expand(c, 1, -1, 1).contiguous(), groups=c)
    return F.conv2d(out, g.view(1, 1, 1, -1).expand(c, 1, 1, -1).contiguous(), groups=c)[0]


@pytest.mark.slow
def test_more_blur_scores_worse_on_set5() -> None:
    path = require_shared() / "data" / "benchmarks" / "Set5" / "butterfly.png"
    with Image.open(path) as im:
        hr = torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)  # uint8 (3, 256, 256)
    hr = hr[:, 32:224, 32:224].contiguous()  # 192 x 192: 184 x 184 after the crop, enough for MS-SSIM
    scale = 4
    identity = quality_scores(hr.double() / 255, hr, scale)
    assert list(identity) == ["gmsd", "fsim", "ms-ssim", "fsimc"]
    assert identity["gmsd"] == 0.0
    for name in ("fsim", "ms-ssim", "fsimc"):
        assert identity[name] == pytest.approx(1.0, abs=1e-12)

    blurred = [_gaussian_blur(hr.double() / 255, s) for s in (0.7, 1.5)]
    scores = [quality_scores(b, hr, scale) for b in blurred]
    for name, higher_is_better in QUALITY_METRICS.items():
        values = [identity[name]] + [s[name] for s in scores]
        ordered = values == sorted(values, reverse=higher_is_better)
        assert ordered and len(set(values)) == len(values), f"{name} is not monotonic in blur: {values}"

    # quality_scores is the protocol's Y channel (and cropped RGB levels for FSIMc), nothing more.
    sr_rgb = crop_border(to_uint8_levels(blurred[0]), scale)
    hr_rgb = crop_border(hr.double(), scale)
    sr_y, hr_y = rgb_to_y(sr_rgb), rgb_to_y(hr_rgb)
    direct = {
        "gmsd": float(gmsd(sr_y, hr_y)),
        "fsim": float(fsim(sr_y, hr_y)),
        "ms-ssim": float(ms_ssim(sr_y, hr_y)),
        "fsimc": float(fsimc(sr_rgb, hr_rgb)),
    }
    assert scores[0] == direct
    assert quality_scores(blurred[0], hr, scale, ["gmsd"]) == {"gmsd": direct["gmsd"]}
