"""MATLAB-compatible ``imresize`` (bicubic) in torch, and a parameter-free ``Bicubic`` model.

Paper tables build their LR inputs with MATLAB's ``imresize(img, 1/scale, 'bicubic')`` and
score a "Bicubic" baseline with the same call in the other direction. Reproducing those
numbers needs MATLAB's exact definition, not ``torch.nn.functional.interpolate``:

* Keys cubic kernel with ``a = -0.5``, support 4;
* when shrinking (scale < 1) with antialiasing, the kernel is stretched to
  ``h(x) = s * cubic(s * x)`` with support ``4 / s``;
* output pixel ``x`` (1-based) samples input coordinate ``u = x / s + 0.5 * (1 - 1 / s)``;
* weights are normalised to sum 1 per output pixel;
* out-of-range taps are folded back with symmetric padding (index 0 -> 1, i.e. the edge
  pixel is repeated);
* the output size for a scale factor is ``ceil(in * s)``.

Each 1-D resize is linear, so it is a dense ``(out, in)`` matrix with the boundary handling
folded in, and a 2-D resize is ``W_h @ X @ W_w^T``. The matrices are built in float64 and
cached. MATLAB also drops kernel taps whose weight is zero for every output pixel; that is
only a storage optimisation and has no effect on a dense matrix, so it is not replicated.

Dimension order: MATLAB resizes the dimension with the smaller scale factor first (stable
sort, so H before W when the factors are equal). This is done here too, but with no rounding
between the passes the two orders agree up to float round-off (about 1e-16 relative in
float64): ``(W_h X) W_w^T == W_h (X W_w^T)``.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

__all__ = ["Bicubic", "imresize", "quantize_uint8"]

_CUBIC_SUPPORT = 4.0


def _cubic(x: torch.Tensor) -> torch.Tensor:
    """Keys cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``)."""
    ax = x.abs()
    ax2 = ax * ax
    ax3 = ax2 * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return near + far


@functools.lru_cache(maxsize=64)
def _weights_f64(in_size: int, out_size: int, scale: float, antialias: bool) -> torch.Tensor:
    """Dense float64 ``(out_size, in_size)`` resize matrix on the CPU (MATLAB ``contributions``)."""
    stretch = antialias and scale < 1
    kernel_width = _CUBIC_SUPPORT / scale if stretch else _CUBIC_SUPPORT

    # 1-based coordinates, exactly as MATLAB writes them.
    x = torch.arange(1, out_size + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = torch.floor(u - kernel_width / 2.0)
    taps = math.ceil(kernel_width) + 2  # MATLAB's P: one spare tap on each side
    idx = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]  # (out, taps)
    dist = u[:, None] - idx
    w = scale * _cubic(scale * dist) if stretch else _cubic(dist)
    w = w / w.sum(dim=1, keepdim=True)

    # Symmetric padding: 1-based index i maps through [1..n, n..1] periodically.
    mirror = torch.cat([torch.arange(in_size), torch.arange(in_size - 1, -1, -1)])
    src = mirror[torch.remainder(idx.long() - 1, 2 * in_size)]  # 0-based source pixel

    mat = torch.zeros(out_size, in_size, dtype=torch.float64)
    rows = torch.arange(out_size)[:, None].expand_as(src)
    # Several taps can land on the same pixel after mirroring: accumulate, do not overwrite.
    mat.index_put_((rows.reshape(-1), src.reshape(-1)), w.reshape(-1), accumulate=True)
    return mat


@functools.lru_cache(maxsize=64)
def _weights(
    in_size: int, out_size: int, scale: float, antialias: bool, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """The resize matrix cast to ``dtype`` on ``device``. Shared between calls: never modify it."""
    return _weights_f64(in_size, out_size, scale, antialias).to(device=device, dtype=dtype)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # float64 stays float64; half/bfloat16 are resized in float32 so that the accumulation
    # over up to 4/s taps does not lose precision (and half matmul is slow on CPU).
    return dtype if dtype in (torch.float64, torch.float32) else torch.float32


def imresize(
    x: torch.Tensor,
    scale: float | None = None,
    size: tuple[int, int] | None = None,
    antialias: bool = True,
) -> torch.Tensor:
    """Resize like MATLAB's ``imresize(x, scale, 'bicubic')`` (or ``imresize(x, size, ...)``).

    Args:
        x: float tensor whose last two dims are (H, W), normally (C, H, W) or (N, C, H, W).
            Values are not clamped or rounded: the caller quantises (see ``quantize_uint8``).
        scale: one factor for both dims; the output size is ``ceil(in * scale)``.
        size: output (H, W) instead of ``scale``; the per-dim factor is then ``out / in``.
        antialias: stretch the kernel when shrinking, as MATLAB does by default.

    Returns:
        The resized tensor, same dtype and device as ``x``. float64 inputs are computed in
        float64, float32 in float32, lower precisions in float32.
    """
    if not torch.is_floating_point(x):
        raise TypeError(f"imresize needs a floating-point tensor, got {x.dtype}")
    if x.dim() < 2:
        raise ValueError(f"imresize needs at least 2 dims (..., H, W), got shape {tuple(x.shape)}")
    if (scale is None) == (size is None):
        raise ValueError("imresize needs exactly one of scale or size")

    in_h, in_w = int(x.shape[-2]), int(x.shape[-1])
    if in_h < 1 or in_w < 1:
        raise ValueError(f"imresize got an empty image of shape {tuple(x.shape)}")
    if scale is not None:
        scale = float(scale)
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a positive finite number, got {scale}")
        out_h, out_w = math.ceil(in_h * scale), math.ceil(in_w * scale)
        scale_h = scale_w = scale
    else:
        assert size is not None
        if len(size) != 2:
            raise ValueError(f"size must be (H, W), got {size!r}")
        out_h, out_w = int(size[0]), int(size[1])
        if out_h < 1 or out_w < 1:
            raise ValueError(f"size must be positive, got {size!r}")
        scale_h, scale_w = out_h / in_h, out_w / in_w

    cdtype = _compute_dtype(x.dtype)
    y = x.to(cdtype)

    def resize_h(t: torch.Tensor) -> torch.Tensor:
        if scale_h == 1.0:  # the scale-1 matrix is the identity (cubic(0) = 1, cubic(+-1, +-2) = 0)
            return t
        return torch.matmul(_weights(in_h, out_h, scale_h, antialias, cdtype, x.device), t)

    def resize_w(t: torch.Tensor) -> torch.Tensor:
        if scale_w == 1.0:
            return t
        return torch.matmul(t, _weights(in_w, out_w, scale_w, antialias, cdtype, x.device).T)

    # MATLAB order: smaller factor first, H first on ties (see the module docstring).
    y = resize_h(resize_w(y)) if scale_w < scale_h else resize_w(resize_h(y))
    # Always return a new tensor, even for an identity resize, so callers may modify it.
    return x.clone() if y is x else y.to(x.dtype)


def quantize_uint8(x: torch.Tensor) -> torch.Tensor:
    """Quantise a [0, 1] float image to 8 bits like MATLAB's ``im2uint8`` / ``imwrite``.

    Computes ``round(clamp(x * 255, 0, 255)) / 255`` with MATLAB rounding (half away from
    zero; ``torch.round`` rounds half to even, which differs on exact ties). The result is a
    float tensor of the input's dtype holding values ``k / 255``.
    """
    if not torch.is_floating_point(x):
        raise TypeError(f"quantize_uint8 needs a floating-point tensor, got {x.dtype}")
    # float64 makes x * 255 exact for float32/16 inputs, so ties are decided on the true value.
    v = (x.to(torch.float64) * 255.0).clamp(0.0, 255.0)
    fl = torch.floor(v)
    k = fl + (v - fl >= 0.5).to(torch.float64)  # v - floor(v) is exact for v in [0, 255]
    return (k / 255.0).to(x.dtype)


class Bicubic(nn.Module):
    """The "Bicubic" baseline: MATLAB bicubic upsampling by an integer factor, no parameters."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        if int(scale) != scale or scale < 1:
            raise ValueError(f"Bicubic scale must be a positive integer, got {scale!r}")
        self.scale = int(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Upsample (N, C, H, W) to (N, C, H * scale, W * scale)."""
        return imresize(x, scale=self.scale)

    def extra_repr(self) -> str:
        return f"scale={self.scale}"
