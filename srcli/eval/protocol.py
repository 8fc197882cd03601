"""The standard SR benchmark protocol, step by step (see research/peers.md §3 for why each matters).

HR → RGB → crop bottom/right to a multiple of the scale → LR = MATLAB bicubic downscale rounded
to uint8 → model → clamp and round to uint8 → crop ``scale`` pixels from every border → Y
(BT.601, float64, not rounded) → PSNR (peak 255) and SSIM (Wang 2003) per image.
"""

from __future__ import annotations

import torch

from srcli.archs.imresize import imresize, quantize_uint8
from srcli.eval.metrics import crop_border, psnr, rgb_to_y, ssim

#: Bumped whenever a step below changes in a way that can change a number.
PROTOCOL_VERSION = "1"

PROTOCOL_DESCRIPTION = {
    "version": PROTOCOL_VERSION,
    "hr": "RGB (grey/palette expanded), cropped bottom/right to a multiple of the scale",
    "lr": "MATLAB imresize bicubic (a=-0.5, antialiased) of the HR, rounded to uint8",
    "sr_quantisation": "clamp to [0,1], round half away from zero to uint8",
    "border_crop": "scale pixels from every side",
    "channel": "Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255, float64, not rounded",
    "psnr": "peak 255",
    "ssim": "Wang 2003: Gaussian 11x11, sigma 1.5, K1 0.01, K2 0.03, valid filtering, no downsampling",
    "aggregate": "mean of per-image values",
}


def modcrop(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """Crop bottom/right of (C, H, W) so H and W are multiples of ``scale``."""
    h, w = hr.shape[-2:]
    return hr[..., : h - h % scale, : w - w % scale]


def make_lr(hr_uint8: torch.Tensor, scale: int) -> torch.Tensor:
    """The LR input for a mod-cropped HR (3, H, W) uint8: float32 (3, H/s, W/s) in [0, 1], on k/255 levels."""
    hr = hr_uint8.to(torch.float64) / 255.0
    return quantize_uint8(imresize(hr, scale=1.0 / scale)).to(torch.float32)


def to_uint8_levels(img01: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 1] and round to the 256 uint8 levels; returns float64 in [0, 255]."""
    return torch.round(quantize_uint8(img01.to(torch.float64).clamp(0, 1)) * 255.0)


def score(sr01: torch.Tensor, hr_uint8: torch.Tensor, scale: int) -> tuple[float, float]:
    """PSNR and SSIM on Y of an SR result (3, H, W, [0,1]) against its mod-cropped HR (3, H, W, uint8)."""
    if sr01.shape[-2:] != hr_uint8.shape[-2:]:
        raise ValueError(f"SR size {tuple(sr01.shape[-2:])} differs from HR size {tuple(hr_uint8.shape[-2:])}")
    sr_y = crop_border(rgb_to_y(to_uint8_levels(sr01)), scale)
    hr_y = crop_border(rgb_to_y(hr_uint8.to(torch.float64)), scale)
    return psnr(sr_y, hr_y), ssim(sr_y, hr_y)
