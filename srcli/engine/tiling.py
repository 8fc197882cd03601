"""Seamless tiled inference: overlapping tiles, batched, merged with a feathered weight.

Each tile's output is weighted by a raised-cosine ramp across the parts it shares with its
neighbours (and by 1 elsewhere, image borders included); the merged image is the weighted sum
divided by the weight sum. Pixels near a tile's inner edge, where the model saw the least
context, therefore count the least, and no tile boundary shows.

Tiles all have the same size, so they stack into batches. The grid spreads the tile origins
evenly instead of leaving a thin last tile. In reduced precision a tile whose output is not
finite is dropped from the merge (without a host-device synchronisation in the loop) and run
again in fp32 at the end.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from srcli.engine.devices import Precision
from srcli.engine.inference import forward_whole
from srcli.hub.loading import LoadedModel

#: Called after each batch of tiles with (tiles done, tiles in all).
TileProgress = Callable[[int, int], None]


def spread_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Origins of tiles of side ``tile`` covering ``size`` with at least ``overlap`` shared pixels.

    The origins are spread evenly from 0 to ``size - tile``, so neighbours share about the same
    amount and no sliver tile appears at the end.
    """
    if tile >= size:
        return [0]
    overlap = min(overlap, tile - 1)
    count = math.ceil((size - overlap) / (tile - overlap))
    count = max(count, 2)
    span = size - tile
    return [round(i * span / (count - 1)) for i in range(count)]


def feather_ramp(length: int, ramp: int, fade_in: bool, fade_out: bool, device: torch.device) -> torch.Tensor:
    """A 1-D weight of ``length`` that rises over ``ramp`` samples where ``fade_in`` and falls where ``fade_out``.

    The raised-cosine samples are offset by half a pixel so no weight is exactly 0: the weight sum
    of the merge is then positive everywhere.
    """
    w = torch.ones(length, dtype=torch.float32, device=device)
    ramp = min(ramp, length // 2)
    if ramp <= 0:
        return w
    t = (torch.arange(ramp, dtype=torch.float32, device=device) + 0.5) / ramp
    rise = 0.5 - 0.5 * torch.cos(math.pi * t)
    if fade_in:
        w[:ramp] = rise
    if fade_out:
        w[length - ramp :] = rise.flip(0)
    return w


@dataclass
class TiledOutput:
    """The merged output and what happened on the way."""

    image: torch.Tensor
    tiles: int
    #: Tiles whose reduced-precision output was not finite and were run again in fp32.
    refined_tiles: int


def _finite_per_item(y: torch.Tensor) -> torch.Tensor:
    """(B,) bool: whether each item of the batch is all finite (stays on the device)."""
    return torch.isfinite(y).flatten(1).all(dim=1)


def tiled_forward(
    loaded: LoadedModel,
    x: torch.Tensor,
    *,
    tile: int,
    overlap: int,
    batch: int = 1,
    precision: Precision = "fp32",
    accumulate_on: torch.device | None = None,
    progress: TileProgress | None = None,
    full_batches: bool = False,
) -> TiledOutput:
    """Super-resolve one image ``x`` (1, 3, H, W) in [0, 1] tile by tile; output (1, 3, sH, sW), not clamped.

    ``tile`` is the LR tile side (clamped to the image), ``overlap`` the LR pixels neighbours share,
    ``batch`` the tiles per forward pass. ``accumulate_on`` holds the merged image (default: the
    input's device; the CPU for outputs too large for the accelerator). ``full_batches`` fills a short
    last batch up to ``batch`` by repeating its last tile, so every forward pass has the same shape (a
    compiled model then compiles once per tile size); the extra outputs are dropped.
    """
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"tiled_forward takes one image (1, C, H, W), got {tuple(x.shape)}")
    scale = loaded.scale
    _, c, h, w = x.shape
    th, tw = min(tile, h), min(tile, w)
    tops, lefts = spread_starts(h, th, overlap), spread_starts(w, tw, overlap)
    boxes = [(top, left) for top in tops for left in lefts]
    total = len(boxes)

    if total == 1:
        y = forward_whole(loaded, x, precision)
        refined = 0
        if precision != "fp32" and not bool(torch.isfinite(y).all()):
            y, refined = forward_whole(loaded, x, "fp32"), 1
        if progress is not None:
            progress(1, 1)
        return TiledOutput(y, 1, refined)

    acc_device = accumulate_on or x.device
    out = torch.zeros(1, c, h * scale, w * scale, dtype=torch.float32, device=acc_device)
    wsum = torch.zeros(1, 1, h * scale, w * scale, dtype=torch.float32, device=acc_device)
    ramp = overlap * scale
    # One weight per distinct (top, left) edge situation: at most 9, built once.
    row_w = {top: feather_ramp(th * scale, ramp, top > 0, top + th < h, acc_device).view(-1, 1) for top in tops}
    col_w = {left: feather_ramp(tw * scale, ramp, left > 0, left + tw < w, acc_device).view(1, -1) for left in lefts}
    checks: list[torch.Tensor] = []

    def merge(y: torch.Tensor, items: list[tuple[int, int]], ok: torch.Tensor | None) -> None:
        y = y.to(acc_device, non_blocking=True)
        if ok is not None:
            ok = ok.to(acc_device, non_blocking=True)
            y = torch.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0)
        for i, (top, left) in enumerate(items):
            weight = row_w[top] * col_w[left]
            if ok is not None:
                weight = weight * ok[i]
            rows = slice(top * scale, (top + th) * scale)
            cols = slice(left * scale, (left + tw) * scale)
            out[0, :, rows, cols] += y[i] * weight
            wsum[0, 0, rows, cols] += weight

    check_finite = precision != "fp32"
    for start in range(0, total, batch):
        items = boxes[start : start + batch]
        crops = [x[..., top : top + th, left : left + tw] for top, left in items]
        if full_batches:
            crops += crops[-1:] * (batch - len(crops))
        y = forward_whole(loaded, torch.cat(crops).contiguous(), precision)[: len(items)]
        ok = _finite_per_item(y) if check_finite else None
        if ok is not None:
            checks.append(ok)
        merge(y, items, ok)
        if progress is not None:
            progress(min(start + batch, total), total)

    refined = 0
    if checks:
        # One synchronisation per image, after the loop.
        finite = torch.cat(checks).cpu().tolist()
        bad = [box for box, good in zip(boxes, finite, strict=True) if not good]
        refined = len(bad)
        for start in range(0, len(bad), batch):
            items = bad[start : start + batch]
            patches = torch.cat([x[..., top : top + th, left : left + tw] for top, left in items])
            merge(forward_whole(loaded, patches.contiguous(), "fp32"), items, None)
    return TiledOutput(out / wsum, total, refined)
