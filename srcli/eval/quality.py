"""Full-reference quality metrics beyond PSNR/SSIM: GMSD, FSIM, FSIMc and MS-SSIM, as the authors' MATLAB code.

Each function follows the paper and its authors' MATLAB reference implementation, vectorised in
torch and computed in float64. GMSD, FSIM and FSIMc reproduce the MATLAB outputs that piq's and
pyiqa's test suites record to every published digit; MS-SSIM's per-scale SSIM reproduces
``ssim_index.m``'s, and the whole of it a transcription of ``msssim.m`` (see
``tests/test_quality_metrics.py``).

- :func:`gmsd` -- Xue, Zhang, Mou, Bovik, "Gradient Magnitude Similarity Deviation", IEEE TIP 2014
  (``GMSD.m``).
- :func:`fsim`, :func:`fsimc` -- Zhang, Zhang, Mou, Zhang, "FSIM: a feature similarity index for
  image quality assessment", IEEE TIP 2011 (``FeatureSIM.m`` with its ``phasecong2``, after Kovesi).
- :func:`ms_ssim` -- Wang, Simoncelli, Bovik, "Multi-scale structural similarity for image quality
  assessment", Asilomar 2003 (``msssim.m`` with ``ssim_index_new.m``).

Inputs are on the 0-255 scale (the constants -- GMSD's c = 170, FSIM's T2 = 160, T3 = T4 = 200,
MS-SSIM's L = 255 -- assume it), float or integer, of shape (H, W), (C, H, W) or (N, C, H, W)
with C = 1 (grey) or 3 (RGB). RGB is reduced to luma Y = 0.299 R + 0.587 G + 0.114 B, not
rounded (FSIM's own conversion; GMSD.m and msssim.m take grey images, so a caller that wants
MATLAB's ``rgb2gray`` passes its rounded grey image instead). An unbatched input gives a 0-dim
float64 tensor, a batch gives shape (N,).

:func:`quality_scores` scores an SR result the way :func:`srcli.eval.protocol.score` does PSNR/SSIM:
uint8 levels, ``scale`` pixels cropped from each side, BT.601 Y channel (FSIMc, which needs colour,
on the cropped RGB).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F

from srcli.eval.metrics import _SSIM_WIN, crop_border, rgb_to_y, ssim_maps
from srcli.eval.protocol import to_uint8_levels

__all__ = ["QUALITY_METRICS", "fsim", "fsimc", "gmsd", "ms_ssim", "quality_scores"]

#: Names accepted by :func:`quality_scores`, and whether a higher value is better.
QUALITY_METRICS: dict[str, bool] = {"gmsd": False, "fsim": True, "fsimc": True, "ms-ssim": True}

# GMSD (GMSD.m)
_GMSD_C = 170.0
# FSIM (FeatureSIM.m)
_FSIM_T1 = 0.85
_FSIM_T2 = 160.0
_FSIM_T3 = 200.0
_FSIM_T4 = 200.0
_FSIM_LAMBDA = 0.03
# Phase congruency (FeatureSIM.m's phasecong2)
_PC_NSCALE = 4
_PC_NORIENT = 4
_PC_MIN_WAVELENGTH = 6.0
_PC_MULT = 2.0
_PC_SIGMA_ONF = 0.55
_PC_DTHETA_ON_SIGMA = 1.2
_PC_K = 2.0
_PC_EPSILON = 1e-4
# MS-SSIM (msssim.m)
_MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_MS_SSIM_PEAK = 255.0


# --------------------------------------------------------------------------- input handling


def _as_batch(img: torch.Tensor, name: str) -> torch.Tensor:
    """(H, W) / (C, H, W) / (N, C, H, W) with C in {1, 3} -> float64 (N, C, H, W)."""
    if not isinstance(img, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(img).__name__}")
    if img.dim() == 2:
        img = img[None, None]
    elif img.dim() == 3:
        img = img[None]
    elif img.dim() != 4:
        raise ValueError(f"{name} needs shape (H, W), (C, H, W) or (N, C, H, W), got {tuple(img.shape)}")
    if img.shape[1] not in (1, 3):
        raise ValueError(f"{name} needs 1 (grey) or 3 (RGB) channels, got shape {tuple(img.shape)}")
    if img.numel() == 0:
        raise ValueError(f"{name} is empty")
    return img.to(torch.float64)


def _pair(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Both images as float64 (N, C, H, W), and whether the input was batched."""
    if x.shape != y.shape:
        raise ValueError(f"images differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
    batched = x.dim() == 4
    return _as_batch(x, "x"), _as_batch(y, "y"), batched


def _luma(img: torch.Tensor) -> torch.Tensor:
    """(N, 1|3, H, W) -> (N, 1, H, W): grey as is, RGB as Y = 0.299 R + 0.587 G + 0.114 B."""
    if img.shape[1] == 1:
        return img
    r, g, b = img.unbind(dim=1)
    return (0.299 * r + 0.587 * g + 0.114 * b)[:, None]


def _result(values: torch.Tensor, batched: bool) -> torch.Tensor:
    return values if batched else values[0]


# --------------------------------------------------------------------------- MATLAB filtering


def _mean_downsample_conv2_same(img: torch.Tensor, factor: int) -> torch.Tensor:
    """``aveY = conv2(Y, fspecial('average', F), 'same'); aveY(1:F:end, 1:F:end)`` on (N, C, H, W).

    conv2 'same' zero-pads; for a kernel of size F its output at (1-based) j averages inputs
    j + floor(F/2) - F + 1 ... j + floor(F/2). So pad F - 1 - floor(F/2) zeros before and
    floor(F/2) after, and average F x F blocks from the first sample: ceil(H/F) x ceil(W/F) out.
    """
    if factor == 1:
        return img
    before, after = factor - 1 - factor // 2, factor // 2
    padded = F.pad(img, (before, after, before, after), mode="constant", value=0.0)
    return F.avg_pool2d(padded, kernel_size=factor, stride=factor)


def _conv2_same_3x3(img: torch.Tensor, kernel: list[list[float]]) -> torch.Tensor:
    """MATLAB ``conv2(img, kernel, 'same')`` for a 3x3 kernel: true convolution, zero padding."""
    k = torch.tensor(kernel, dtype=img.dtype, device=img.device).flip(0, 1)  # conv2 rotates the kernel
    return F.conv2d(img, k.view(1, 1, 3, 3), padding=1)


def _gradient_magnitude(img: torch.Tensor, kx: list[list[float]]) -> torch.Tensor:
    ky = [list(col) for col in zip(*kx, strict=True)]  # transpose: the y operator is dx'
    return torch.sqrt(_conv2_same_3x3(img, kx) ** 2 + _conv2_same_3x3(img, ky) ** 2)


# --------------------------------------------------------------------------- GMSD


_PREWITT_X = [[1 / 3, 0.0, -1 / 3]] * 3


def gmsd(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Gradient Magnitude Similarity Deviation (Xue et al. 2014), as ``GMSD.m``; 0 for identical images.

    Both images are averaged over 2x2 blocks and downsampled by 2 (``conv2(., ones(2)/4, 'same')``,
    zero padding, every second pixel), Prewitt gradients (/3, ``conv2 'same'``) give gradient
    magnitudes m1, m2, the GMS map is ``(2 m1 m2 + c) / (m1^2 + m2^2 + c)`` with c = 170, and the
    score is the standard deviation of that map normalised by N - 1 (MATLAB ``std2``). Lower is better.

    Args:
        x, y: same-shape images on the 0-255 scale, (H, W), (C, H, W) or (N, C, H, W), C = 1 or 3
            (RGB is reduced to Y = 0.299 R + 0.587 G + 0.114 B). At least 2x2 pixels.

    Returns:
        float64 tensor: 0-dim for an unbatched input, (N,) for a batch.
    """
    a, b, batched = _pair(x, y)
    a = _mean_downsample_conv2_same(_luma(a), 2)
    b = _mean_downsample_conv2_same(_luma(b), 2)
    if a.shape[-2] * a.shape[-1] < 2:
        raise ValueError(f"gmsd needs images of at least 2x2 pixels, got {tuple(x.shape)}")
    m1 = _gradient_magnitude(a, _PREWITT_X)
    m2 = _gradient_magnitude(b, _PREWITT_X)
    gms = (2 * m1 * m2 + _GMSD_C) / (m1 * m1 + m2 * m2 + _GMSD_C)
    return _result(gms.flatten(1).std(dim=1, correction=1), batched)


# --------------------------------------------------------------------------- FSIM / FSIMc


def _centred_frequencies(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Kovesi's normalised frequency range for n samples, in ifftshift order (0 first)."""
    if n % 2:
        r = (torch.arange(n, dtype=dtype, device=device) - (n - 1) / 2) / max(n - 1, 1)
    else:
        r = (torch.arange(n, dtype=dtype, device=device) - n / 2) / n
    return torch.fft.ifftshift(r)


@torch.no_grad()
def _log_gabor_bank(rows: int, cols: int, device: torch.device) -> torch.Tensor:
    """phasecong2's filters, (nscale, norient, rows, cols) float64, zero frequency at [0, 0]."""
    dtype = torch.float64
    yr = _centred_frequencies(rows, dtype, device)
    xr = _centred_frequencies(cols, dtype, device)
    y, x = torch.meshgrid(yr, xr, indexing="ij")
    radius = torch.sqrt(x * x + y * y)
    theta = torch.atan2(-y, x)  # -y: angles anti-clockwise
    # Butterworth low-pass (lowpassfilter(size, 0.45, 15)), from the radius before the DC fudge.
    lowpass = 1.0 / (1.0 + (radius / 0.45) ** 30)
    radius = radius.clone()
    radius[0, 0] = 1.0  # avoid log(0); the filter value there is reset to 0 below
    wavelengths = _PC_MIN_WAVELENGTH * _PC_MULT ** torch.arange(_PC_NSCALE, dtype=dtype, device=device)
    fo = (1.0 / wavelengths).view(-1, 1, 1)
    log_gabor = torch.exp(-(torch.log(radius / fo) ** 2) / (2 * math.log(_PC_SIGMA_ONF) ** 2)) * lowpass
    log_gabor[:, 0, 0] = 0.0
    theta_sigma = math.pi / _PC_NORIENT / _PC_DTHETA_ON_SIGMA
    angles = torch.arange(_PC_NORIENT, dtype=dtype, device=device).view(-1, 1, 1) * (math.pi / _PC_NORIENT)
    sin_t, cos_t = torch.sin(theta), torch.cos(theta)
    ds = sin_t * torch.cos(angles) - cos_t * torch.sin(angles)
    dc = cos_t * torch.cos(angles) + sin_t * torch.sin(angles)
    spread = torch.exp(-(torch.atan2(ds, dc).abs() ** 2) / (2 * theta_sigma**2))
    return log_gabor[:, None] * spread[None, :]


def _matlab_median(values: torch.Tensor) -> torch.Tensor:
    """MATLAB ``median`` over the last dim: the mean of the two middle values for an even count."""
    n = values.shape[-1]
    upper = values.kthvalue(n // 2 + 1, dim=-1).values
    if n % 2:
        return upper
    return (values.kthvalue(n // 2, dim=-1).values + upper) / 2


def _phase_congruency(img: torch.Tensor) -> torch.Tensor:
    """FeatureSIM.m's ``phasecong2`` (Kovesi's PC_2) of (N, 1, H, W) float64 -> (N, H, W).

    4 scales x 4 orientations of log-Gabor filters (min wavelength 6, mult 2, sigmaOnf 0.55,
    dThetaOnSigma 1.2), noise threshold from the median squared response at the smallest scale
    (Rayleigh model, k = 2, divided by 1.7), epsilon 1e-4.
    """
    n, _, rows, cols = img.shape
    bank = _log_gabor_bank(rows, cols, img.device)  # (S, O, H, W)
    eo = torch.fft.ifft2(torch.fft.fft2(img[:, 0])[:, None, None] * bank)  # (N, S, O, H, W)
    even, odd = eo.real, eo.imag
    amplitude = eo.abs()
    sum_e, sum_o = even.sum(dim=1), odd.sum(dim=1)  # (N, O, H, W)
    x_energy = torch.sqrt(sum_e**2 + sum_o**2) + _PC_EPSILON
    mean_e, mean_o = (sum_e / x_energy)[:, None], (sum_o / x_energy)[:, None]
    energy = (even * mean_e + odd * mean_o - (even * mean_o - odd * mean_e).abs()).sum(dim=1)

    # Noise: median of |EO|^2 at the smallest scale -> Rayleigh mean -> noise power per filter energy.
    median_e2n = _matlab_median((amplitude[:, 0] ** 2).flatten(2))  # (N, O)
    mean_e2n = -median_e2n / math.log(0.5)
    em_n = (bank[0] ** 2).sum(dim=(-2, -1))  # (O,)
    noise_power = mean_e2n / em_n
    # phasecong2 sums products of the spatial filters real(ifft2(filter)) * sqrt(rows*cols). By
    # Parseval those sums equal the same sums over the filters' even parts (F(k) + F(-k)) / 2 in
    # the frequency domain, which spares the inverse transforms.
    reflected = torch.roll(torch.flip(bank, dims=(-2, -1)), shifts=(1, 1), dims=(-2, -1))  # F(-k)
    even_part = (bank + reflected) / 2
    sum_an2 = (even_part**2).sum(dim=(0, 2, 3))  # (O,): sum over scales of sum(ifftFilt.^2)
    total = even_part.sum(dim=0)
    sum_aiaj = ((total**2).sum(dim=(-2, -1)) - sum_an2) / 2  # sum over scale pairs si < sj
    est_noise_energy2 = 2 * noise_power * sum_an2 + 4 * noise_power * sum_aiaj
    tau = torch.sqrt(est_noise_energy2 / 2)
    threshold = (tau * math.sqrt(math.pi / 2) + _PC_K * math.sqrt(2 - math.pi / 2) * tau) / 1.7
    energy = torch.clamp(energy - threshold[..., None, None], min=0.0)
    return energy.sum(dim=1) / amplitude.sum(dim=(1, 2))


_SCHARR_X = [[3 / 16, 0.0, -3 / 16], [10 / 16, 0.0, -10 / 16], [3 / 16, 0.0, -3 / 16]]


def _fsim_both(x: torch.Tensor, y: torch.Tensor, chromatic: bool) -> torch.Tensor:
    a, b, batched = _pair(x, y)
    if chromatic and a.shape[1] != 3:
        raise ValueError(f"fsimc needs RGB (3-channel) images, got shape {tuple(x.shape)}")
    rows, cols = a.shape[-2:]
    factor = max(1, math.floor(min(rows, cols) / 256 + 0.5))  # MATLAB round, half away from zero
    y1 = _mean_downsample_conv2_same(_luma(a), factor)
    y2 = _mean_downsample_conv2_same(_luma(b), factor)
    pc1, pc2 = _phase_congruency(torch.cat([y1, y2])).chunk(2)  # one filter bank for both
    g1 = _gradient_magnitude(y1, _SCHARR_X)[:, 0]
    g2 = _gradient_magnitude(y2, _SCHARR_X)[:, 0]
    pc_sim = (2 * pc1 * pc2 + _FSIM_T1) / (pc1**2 + pc2**2 + _FSIM_T1)
    g_sim = (2 * g1 * g2 + _FSIM_T2) / (g1**2 + g2**2 + _FSIM_T2)
    pc_max = torch.maximum(pc1, pc2)
    sim = g_sim * pc_sim
    if chromatic:

        def iq(img: torch.Tensor) -> torch.Tensor:
            r, g, bl = img.unbind(dim=1)
            chroma = torch.stack([0.596 * r - 0.274 * g - 0.322 * bl, 0.211 * r - 0.523 * g + 0.312 * bl], dim=1)
            return _mean_downsample_conv2_same(chroma, factor)

        c1, c2 = iq(a), iq(b)
        i_sim = (2 * c1[:, 0] * c2[:, 0] + _FSIM_T3) / (c1[:, 0] ** 2 + c2[:, 0] ** 2 + _FSIM_T3)
        q_sim = (2 * c1[:, 1] * c2[:, 1] + _FSIM_T4) / (c1[:, 1] ** 2 + c2[:, 1] ** 2 + _FSIM_T4)
        p = i_sim * q_sim
        # real(p .^ lambda): MATLAB's principal power of a negative base has real part |p|^l cos(l pi).
        sim = sim * torch.where(p >= 0, 1.0, math.cos(_FSIM_LAMBDA * math.pi)) * p.abs() ** _FSIM_LAMBDA
    score = (sim * pc_max).sum(dim=(-2, -1)) / pc_max.sum(dim=(-2, -1))
    return _result(score, batched)


def fsim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Feature SIMilarity index FSIM (Zhang et al. 2011), as ``FeatureSIM.m``'s first output; 1 for identical images.

    Luma (RGB -> Y = 0.299 R + 0.587 G + 0.114 B) is averaged over F x F blocks and downsampled by
    F = max(1, round(min(H, W) / 256)); phase congruency PC (Kovesi's phasecong2 with the FSIM
    parameters: 4 scales, 4 orientations, min wavelength 6, mult 2, sigmaOnf 0.55,
    dThetaOnSigma 1.2, k 2) and Scharr gradient magnitude G give
    ``S = S_PC * S_G`` with ``S_PC = (2 PC1 PC2 + 0.85) / (PC1^2 + PC2^2 + 0.85)`` and
    ``S_G = (2 G1 G2 + 160) / (G1^2 + G2^2 + 160)``, pooled with weights max(PC1, PC2).
    Higher is better. Images with no phase-congruent structure at all (e.g. both constant)
    give NaN, as in MATLAB.

    Args:
        x, y: same-shape images on the 0-255 scale, (H, W), (C, H, W) or (N, C, H, W), C = 1 or 3.

    Returns:
        float64 tensor: 0-dim for an unbatched input, (N,) for a batch.
    """
    return _fsim_both(x, y, chromatic=False)


def fsimc(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Colour FSIM, FSIMc (Zhang et al. 2011), as ``FeatureSIM.m``'s second output; 1 for identical images.

    :func:`fsim`'s similarity map times ``real((S_I * S_Q) ^ 0.03)``, where S_I, S_Q compare the
    YIQ chroma channels ``I = 0.596 R - 0.274 G - 0.322 B`` and ``Q = 0.211 R - 0.523 G + 0.312 B``
    (downsampled like the luma) with ``(2 C1 C2 + 200) / (C1^2 + C2^2 + 200)``.

    Args:
        x, y: same-shape RGB images on the 0-255 scale, (3, H, W) or (N, 3, H, W).

    Returns:
        float64 tensor: 0-dim for an unbatched input, (N,) for a batch.
    """
    return _fsim_both(x, y, chromatic=True)


# --------------------------------------------------------------------------- MS-SSIM


def _ssim_and_cs(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``ssim_index_new.m``: mean SSIM and mean contrast-structure of (N, 1, H, W), 'valid' filtering."""
    ssim_map, cs_map = ssim_maps(a, b, _MS_SSIM_PEAK)
    return ssim_map.flatten(1).mean(dim=1), cs_map.flatten(1).mean(dim=1)


def _downsample_symmetric(img: torch.Tensor) -> torch.Tensor:
    """``imfilter(im, ones(2)/4, 'symmetric', 'same')`` then ``(1:2:end, 1:2:end)``: ceil(H/2) x ceil(W/2).

    imfilter anchors an even kernel at its first element, so each sample averages a 2x2 block
    starting at it; an odd last row/column is mirrored (that is, repeated).
    """
    pad_w, pad_h = img.shape[-1] % 2, img.shape[-2] % 2
    if pad_w or pad_h:
        img = F.pad(img, (0, pad_w, 0, pad_h), mode="replicate")
    return F.avg_pool2d(img, kernel_size=2, stride=2)


def ms_ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Multi-scale SSIM (Wang, Simoncelli, Bovik 2003), as ``msssim.m``; 1 for identical images.

    Five scales with weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333); at each, SSIM maps as
    ``ssim_index_new.m`` (11x11 Gaussian, sigma 1.5, K1 0.01, K2 0.03, L 255, 'valid' filtering);
    between scales a 2x2 mean filter (symmetric border) and downsampling by 2. The score is
    ``prod_{j<5} mean(cs_j)^w_j * mean(ssim_5)^w_5``. Higher is better. (Where a mean cs is negative,
    MATLAB's result is complex; this returns its real part.)

    Args:
        x, y: same-shape images on the 0-255 scale, (H, W), (C, H, W) or (N, C, H, W), C = 1 or 3
            (RGB is reduced to Y = 0.299 R + 0.587 G + 0.114 B). The shorter side must be at least
            176 pixels (11 at the fifth scale), as ``msssim.m`` requires.

    Returns:
        float64 tensor: 0-dim for an unbatched input, (N,) for a batch.
    """
    a, b, batched = _pair(x, y)
    levels = len(_MS_SSIM_WEIGHTS)
    if min(a.shape[-2:]) / 2 ** (levels - 1) < _SSIM_WIN:
        raise ValueError(
            f"ms_ssim needs images of at least {_SSIM_WIN * 2 ** (levels - 1)} px on the shorter side, "
            f"got {tuple(x.shape)}"
        )
    a, b = _luma(a), _luma(b)
    score = torch.ones(a.shape[0], dtype=torch.complex128, device=a.device)
    for level, weight in enumerate(_MS_SSIM_WEIGHTS):
        ssim_mean, cs_mean = _ssim_and_cs(a, b)
        term = ssim_mean if level == levels - 1 else cs_mean
        score = score * term.to(torch.complex128) ** weight
        if level < levels - 1:
            a, b = _downsample_symmetric(a), _downsample_symmetric(b)
    return _result(score.real, batched)


# --------------------------------------------------------------------------- protocol


def quality_scores(
    sr01: torch.Tensor,
    hr_uint8: torch.Tensor,
    scale: int,
    metrics: Iterable[str] = ("gmsd", "fsim", "ms-ssim", "fsimc"),
) -> dict[str, float]:
    """GMSD / FSIM / MS-SSIM / FSIMc of an SR result under the SR evaluation protocol.

    The same steps as :func:`srcli.eval.protocol.score`: the SR (3, H, W) in [0, 1] is clamped and
    rounded to uint8 levels, ``scale`` pixels are cropped from every side of both images, and GMSD,
    FSIM and MS-SSIM are computed on the BT.601 Y channel (``rgb_to_y``, float64 in [16, 235]).
    FSIMc needs colour, so it is computed on the cropped RGB levels (0-255).

    Args:
        sr01: SR output, (3, H, W) float in [0, 1].
        hr_uint8: mod-cropped ground truth, (3, H, W) uint8 (or float on the 0-255 levels).
        scale: the SR scale (= border crop in pixels).
        metrics: names from :data:`QUALITY_METRICS`.

    Returns:
        {name: value} in the order asked.
    """
    names = list(metrics)
    unknown = [m for m in names if m not in QUALITY_METRICS]
    if unknown:
        raise ValueError(f"unknown quality metric(s) {unknown}; choose from {sorted(QUALITY_METRICS)}")
    if sr01.shape[-2:] != hr_uint8.shape[-2:]:
        raise ValueError(f"SR size {tuple(sr01.shape[-2:])} differs from HR size {tuple(hr_uint8.shape[-2:])}")
    sr_rgb = crop_border(to_uint8_levels(sr01), scale)
    hr_rgb = crop_border(hr_uint8.to(torch.float64), scale)
    sr_y, hr_y = rgb_to_y(sr_rgb), rgb_to_y(hr_rgb)
    funcs = {"gmsd": gmsd, "fsim": fsim, "ms-ssim": ms_ssim}
    out: dict[str, float] = {}
    for name in names:
        if name == "fsimc":
            out[name] = float(fsimc(sr_rgb, hr_rgb))
        else:
            out[name] = float(funcs[name](sr_y, hr_y))
    return out
