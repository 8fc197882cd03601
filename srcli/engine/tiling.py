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


def _forward_one(loaded: LoadedModel, x: torch.Tensor, precision: Precision) -> tuple[torch.Tensor, int]:
    """The whole of ``x`` in one pass, again in fp32 if reduced precision gave non-finite output: (y, refined)."""
    y = forward_whole(loaded, x, precision)
    if precision != "fp32" and not bool(torch.isfinite(y).all()):
        return forward_whole(loaded, x, "fp32"), 1
    return y, 0


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

    The merge is ``tiled_forward_bands``'s; its finished rows are gathered here into one tensor.
    """
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"tiled_forward takes one image (1, C, H, W), got {tuple(x.shape)}")
    _, c, h, w = x.shape
    if tile >= h and tile >= w:
        y, refined = _forward_one(loaded, x, precision)  # one tile: no merge, no copy
        if progress is not None:
            progress(1, 1)
        return TiledOutput(y, 1, refined)
    scale = loaded.scale
    out = torch.empty(1, c, h * scale, w * scale, dtype=torch.float32, device=accumulate_on or x.device)

    def gather(row: int, band: torch.Tensor) -> None:
        out[:, :, row : row + band.shape[-2]] = band

    done = tiled_forward_bands(
        loaded,
        x,
        gather,
        tile=tile,
        overlap=overlap,
        batch=batch,
        precision=precision,
        accumulate_on=accumulate_on,
        progress=progress,
        full_batches=full_batches,
    )
    return TiledOutput(out, done.tiles, done.refined_tiles)


#: Receives finished output rows, top to bottom, each row once: (first output row, band (1, C, rows, sW)).
BandSink = Callable[[int, torch.Tensor], None]
#: Most output rows handed to a sink at once (a finished band goes in pieces, so its division and the sink's
#: conversions stay small).
SINK_ROWS = 256


@dataclass
class BandedOutput:
    """What ``tiled_forward_bands`` did (the rows went to the sink)."""

    height: int
    width: int
    tiles: int
    refined_tiles: int
    #: Output rows the largest band buffer held (the merge's memory is about ``rows x width x (C + 1) x 4`` bytes).
    buffer_rows: int


def _band_capacity(boxes: list[tuple[int, int]], th: int, batch: int) -> int:
    """LR rows the band buffer must hold: from the top of a batch's first tile to the bottom of its lowest."""
    need = th
    for start in range(0, len(boxes), batch):
        items = boxes[start : start + batch]
        need = max(need, max(top for top, _ in items) + th - items[0][0])
    return need


def tiled_forward_bands(
    loaded: LoadedModel,
    x: torch.Tensor,
    sink: BandSink,
    *,
    tile: int,
    overlap: int,
    batch: int = 1,
    precision: Precision = "fp32",
    accumulate_on: torch.device | None = None,
    progress: TileProgress | None = None,
    full_batches: bool = False,
) -> BandedOutput:
    """Super-resolve one image ``x`` (1, C, H, W) tile by tile, handing the merged output to ``sink`` in bands of rows.

    Tiles, batches and options are ``tiled_forward``'s (which gathers these bands into one tensor). Each
    output pixel sums its tiles' feathered outputs in the order the tiles run, then divides by the weight sum,
    so the rows are the floats a merge into one whole-image canvas gives, bit for bit, in any precision.
    The merge holds only the rows that tiles still to run can touch: after each batch, the rows above the
    next tile's top are final, divided by their weight sum and sent to ``sink`` in pieces of at most
    ``SINK_ROWS`` rows (not clamped, float32, on ``accumulate_on``); the band buffer is then about one
    tile row of the output instead of the whole image (plus its weight sum).

    In reduced precision, the tiles of a band are checked for non-finite output before the band is
    finished (one host-device synchronisation per band) and those that are not finite are merged with
    weight 0 and re-run in fp32 at once, before the band is finished.
    """
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"tiled_forward_bands takes one image (1, C, H, W), got {tuple(x.shape)}")
    scale = loaded.scale
    _, c, h, w = x.shape
    th, tw = min(tile, h), min(tile, w)
    tops, lefts = spread_starts(h, th, overlap), spread_starts(w, tw, overlap)
    boxes = [(top, left) for top in tops for left in lefts]
    total = len(boxes)

    if total == 1:
        y, refined = _forward_one(loaded, x, precision)
        if progress is not None:
            progress(1, 1)
        y = y.to(accumulate_on or x.device)
        for row in range(0, h * scale, SINK_ROWS):
            sink(row, y[:, :, row : row + SINK_ROWS])
        return BandedOutput(h * scale, w * scale, 1, refined, h * scale)

    acc_device = accumulate_on or x.device
    cap = _band_capacity(boxes, th, batch) * scale
    # The band buffer: output rows [lo, lo + cap).
    out = torch.zeros(1, c, cap, w * scale, dtype=torch.float32, device=acc_device)
    wsum = torch.zeros(1, 1, cap, w * scale, dtype=torch.float32, device=acc_device)
    lo = 0
    ramp = overlap * scale
    row_w = {top: feather_ramp(th * scale, ramp, top > 0, top + th < h, acc_device).view(-1, 1) for top in tops}
    col_w = {left: feather_ramp(tw * scale, ramp, left > 0, left + tw < w, acc_device).view(1, -1) for left in lefts}
    check_finite = precision != "fp32"
    pending: list[tuple[list[tuple[int, int]], torch.Tensor]] = []
    refined = 0

    def merge(y: torch.Tensor, items: list[tuple[int, int]], ok: torch.Tensor | None) -> None:
        # Rows relative to the band.
        y = y.to(acc_device, non_blocking=True)
        if ok is not None:
            ok = ok.to(acc_device, non_blocking=True)
            y = torch.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0)
        for i, (top, left) in enumerate(items):
            weight = row_w[top] * col_w[left]
            if ok is not None:
                weight = weight * ok[i]
            rows = slice(top * scale - lo, (top + th) * scale - lo)
            cols = slice(left * scale, (left + tw) * scale)
            out[0, :, rows, cols] += y[i] * weight
            wsum[0, 0, rows, cols] += weight

    def refine_pending() -> None:
        # Tiles whose reduced-precision output was not finite: merged with weight 0, run again in fp32 now.
        nonlocal refined
        if not pending:
            return
        finite = torch.cat([ok for _, ok in pending]).cpu().tolist()
        done = [box for items, _ in pending for box in items]
        pending.clear()
        bad = [box for box, good in zip(done, finite, strict=True) if not good]
        refined += len(bad)
        for start in range(0, len(bad), batch):
            items = bad[start : start + batch]
            patches = torch.cat([x[..., top : top + th, left : left + tw] for top, left in items])
            merge(forward_whole(loaded, patches.contiguous(), "fp32"), items, None)

    def finish(until: int) -> None:
        # Output rows [lo, until) are final: send them and move the rest of the band up.
        nonlocal lo
        n = until - lo
        if n <= 0:
            return
        for row in range(0, n, SINK_ROWS):
            rows = slice(row, min(row + SINK_ROWS, n))
            sink(lo + row, out[:, :, rows] / wsum[:, :, rows])
        keep = cap - n
        if keep > 0:
            out[:, :, :keep] = out[:, :, n:].clone()
            wsum[:, :, :keep] = wsum[:, :, n:].clone()
        out[:, :, keep:] = 0
        wsum[:, :, keep:] = 0
        lo = until

    for start in range(0, total, batch):
        items = boxes[start : start + batch]
        crops = [x[..., top : top + th, left : left + tw] for top, left in items]
        if full_batches:
            crops += crops[-1:] * (batch - len(crops))
        y = forward_whole(loaded, torch.cat(crops).contiguous(), precision)[: len(items)]
        ok = _finite_per_item(y) if check_finite else None
        if ok is not None:
            pending.append((items, ok))
        merge(y, items, ok)
        if progress is not None:
            progress(min(start + batch, total), total)
        until = boxes[start + batch][0] * scale if start + batch < total else h * scale
        if until > lo:
            refine_pending()
            finish(until)
    return BandedOutput(h * scale, w * scale, total, refined, cap)
