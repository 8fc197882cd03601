"""Paper-protocol image metrics: Y-channel PSNR and SSIM as the MATLAB evaluation scripts compute them.

The protocol behind SR paper tables (RCAN/EDSR ``Evaluate_PSNR_SSIM.m``, BasicSR with
``test_y_channel``): 8-bit RGB images, luma from MATLAB's ``rgb2ycbcr`` (BT.601 studio range)
on ``im2double`` input, i.e. float and not rounded; ``scale`` pixels shaved from every side;
PSNR with peak 255; SSIM as Wang et al.'s 2003 ``ssim_index.m`` (11x11 Gaussian, sigma 1.5,
'valid' filtering, no downsampling). Everything is computed in float64.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["crop_border", "gaussian_taps", "psnr", "rgb_to_y", "ssim", "ssim_maps"]

_SSIM_WIN = 11
_SSIM_SIGMA = 1.5
_SSIM_K1 = 0.01
_SSIM_K2 = 0.03


def rgb_to_y(img: torch.Tensor) -> torch.Tensor:
    """Luma of an RGB image in [0, 255]: ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255``.

    This is MATLAB's ``rgb2ycbcr`` on a double image, scaled back to [16, 235], and it is not
    rounded (rounding is what ``rgb2ycbcr`` does on uint8 input, which papers do not use).

    Args:
        img: RGB of shape (3, H, W) or (N, 3, H, W); converted to float64.

    Returns:
        float64 Y of shape (H, W) or (N, H, W) (the channel dim is dropped).
    """
    if img.dim() not in (3, 4) or img.shape[-3] != 3:
        raise ValueError(f"rgb_to_y needs (3, H, W) or (N, 3, H, W), got shape {tuple(img.shape)}")
    img = img.to(torch.float64)
    r, g, b = img.unbind(dim=-3)
    return 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0


def crop_border(img: torch.Tensor, border: int) -> torch.Tensor:
    """Remove ``border`` pixels from every side of the last two dims (a view, not a copy)."""
    if border < 0:
        raise ValueError(f"border must be >= 0, got {border}")
    if img.dim() < 2:
        raise ValueError(f"crop_border needs at least 2 dims, got shape {tuple(img.shape)}")
    if border == 0:
        return img
    h, w = img.shape[-2], img.shape[-1]
    if h <= 2 * border or w <= 2 * border:
        raise ValueError(f"cannot crop {border} px from each side of a {h}x{w} image")
    return img[..., border : h - border, border : w - border]


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.numel() == 0:
        raise ValueError("images are empty")
    return a.to(torch.float64), b.to(torch.float64)


def psnr(a: torch.Tensor, b: torch.Tensor, peak: float = 255.0) -> float:
    """PSNR in dB, ``10 log10(peak^2 / mean((a - b)^2))``, in float64; ``inf`` if identical.

    ``a`` and ``b`` are same-shape tensors on the ``peak`` scale (Y in [16, 235] for the
    paper protocol). A batch is pooled into one MSE: call per image and average PSNRs
    to follow the papers.
    """
    a, b = _check_pair(a, b)
    mse = torch.mean((a - b) ** 2).item()
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(peak * peak / mse)


def gaussian_taps(device: torch.device) -> torch.Tensor:
    """The 1-D factor of MATLAB ``fspecial('gaussian', 11, 1.5)``: 11 float64 taps summing to 1.

    The 2-D window is the outer product of this factor with itself, so filtering by it along
    columns then rows equals the 2-D ``filter2``, with an 11-wide unfolding buffer instead of a
    121-wide one (the blocks that made the evaluation's heap grow with image size).
    """
    r = (_SSIM_WIN - 1) / 2
    t = torch.arange(_SSIM_WIN, dtype=torch.float64, device=device) - r
    g = torch.exp(-(t * t) / (2 * _SSIM_SIGMA**2))
    return g / g.sum()


def ssim_maps(a: torch.Tensor, b: torch.Tensor, peak: float) -> tuple[torch.Tensor, torch.Tensor]:
    """SSIM and contrast-structure maps of (N, 1, H, W) float64 images, as ``ssim_index.m`` makes them.

    K1 = 0.01, K2 = 0.03, ``C = (K * peak)^2``; moments as the MATLAB code computes them
    (``E[x^2] - mu^2``, not a centred second pass), with 'valid' filtering (no padding), so each
    map is (N, H - 10, W - 10). MS-SSIM (``ssim_index_new.m``) needs the second map too.
    """
    g = gaussian_taps(a.device)
    n = a.shape[0]
    # The five moment images filtered at once: by columns, then by rows.
    stack = torch.cat([a, b, a * a, b * b, a * b], dim=1).flatten(0, 1)[:, None]
    stack = F.conv2d(F.conv2d(stack, g.view(1, 1, -1, 1)), g.view(1, 1, 1, -1))
    mu1, mu2, e11, e22, e12 = stack.view(n, 5, *stack.shape[-2:]).unbind(dim=1)
    c1 = (_SSIM_K1 * peak) ** 2
    c2 = (_SSIM_K2 * peak) ** 2
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    cs_map = (2 * (e12 - mu12) + c2) / ((e11 - mu1_sq) + (e22 - mu2_sq) + c2)
    ssim_map = (2 * mu12 + c1) / (mu1_sq + mu2_sq + c1) * cs_map
    return ssim_map, cs_map


def ssim(a: torch.Tensor, b: torch.Tensor, peak: float = 255.0) -> float:
    """SSIM of two single-channel (H, W) images, as Wang et al. (2003) ``ssim_index.m``.

    11x11 Gaussian window (sigma 1.5, sum 1), K1 = 0.01, K2 = 0.03, ``C = (K * peak)^2``,
    'valid' filtering (no padding, so H and W must be >= 11), no downsampling; returns the
    mean of the SSIM map. Computed in float64.
    """
    a, b = _check_pair(a, b)
    if a.dim() != 2:
        raise ValueError(f"ssim needs single-channel (H, W) images, got shape {tuple(a.shape)}")
    if a.shape[0] < _SSIM_WIN or a.shape[1] < _SSIM_WIN:
        raise ValueError(f"ssim needs images of at least {_SSIM_WIN}x{_SSIM_WIN}, got {tuple(a.shape)}")
    return ssim_maps(a[None, None], b[None, None], peak)[0].mean().item()
