"""The engine behind ``srcli upscale``: tile planning, out-of-memory fallback, self-ensemble, outscale.

Input and output are float tensors (N, 3, H, W) in [0, 1] on the model's device. Nothing here
keeps state between calls: every setting arrives in an ``EngineOptions`` and every decision
taken (tile, precision, fallbacks) comes back in the ``UpscaleResult``, so a caller that wants
the next image to start from a reduced tile passes it on itself.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING

import torch

from srcli.archs.imresize import imresize
from srcli.engine.devices import Precision
from srcli.engine.inference import _ensemble_transforms, forward_whole, optimise_for_inference
from srcli.engine.tiling import SINK_ROWS, BandSink, TileProgress, tiled_forward, tiled_forward_bands
from srcli.errors import DeviceOutOfMemoryError, UsageError
from srcli.hub.loading import LoadedModel

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger("srcli.engine")

#: Smallest tile side the out-of-memory fallback goes down to.
MIN_TILE = 32
#: Share of the free accelerator memory a forward pass may plan to use.
MEMORY_BUDGET = 0.6
#: Most model passes ``outscale`` chains before the final resize.
MAX_PASSES = 3


@dataclass(frozen=True)
class EngineOptions:
    """How to run a model over an image. ``tile``: ``"auto"``, 0 (whole image) or a side in LR pixels."""

    precision: Precision = "fp32"
    tile: int | str = "auto"
    #: LR pixels shared by neighbouring tiles; ``None``: the registry's value for the model.
    overlap: int | None = None
    #: Tiles per forward pass; ``None``: 4 on CUDA, 1 elsewhere.
    batch: int | None = None
    self_ensemble: bool = False
    #: Final scale factor when it differs from the model's (extra model passes, then a resize).
    outscale: float | None = None
    #: Peak device bytes per LR pixel of a forward pass (``probe_bytes_per_pixel``); ``None``: measured per
    #: call where ``tile="auto"`` needs it. A batch job measures it once and passes it on.
    bytes_per_pixel: float | None = None
    #: Give every forward pass the same batch size (a short last batch of tiles or frames is filled by
    #: repetition and the extra outputs dropped): set for a compiled model, which compiles once per shape.
    full_batches: bool = False


@dataclass
class UpscaleDecisions:
    """The decisions taken to super-resolve one image, and the time it took."""

    precision: Precision
    #: LR tile side used in the end (``None``: whole image in one pass).
    tile: int | None
    overlap: int
    batch: int
    tiles: int
    refined_tiles: int
    oom_retries: int
    model_passes: int
    seconds: float


@dataclass
class UpscaleResult(UpscaleDecisions):
    """The output of ``upscale_tensor`` and the decisions taken to produce it."""

    image: torch.Tensor


def is_out_of_memory(exc: BaseException) -> bool:
    """True for an allocation failure on any device (CUDA, MPS or the CPU allocator)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def _free_memory(device: torch.device) -> int | None:
    """Bytes the caching allocator can still hand out on ``device``; ``None`` where unknown."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


def probe_bytes_per_pixel(loaded: LoadedModel, device: torch.device, precision: Precision) -> float | None:
    """Peak bytes per LR input pixel of one forward pass, measured on a small probe (CUDA only, else ``None``)."""
    if device.type != "cuda":
        return None
    spec = loaded.spec
    side = max(64, spec.min_size)
    side = -(-side // spec.pad_multiple) * spec.pad_multiple
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    forward_whole(loaded, torch.rand(1, 3, side, side, device=device), precision)
    peak = torch.cuda.max_memory_allocated(device) - base
    return max(peak, 1) / (side * side)


def plan_tile(
    loaded: LoadedModel, height: int, width: int, options: EngineOptions, device: torch.device
) -> tuple[int | None, int]:
    """(tile side or ``None`` for the whole image, tiles per batch) for an ``height`` x ``width`` input."""
    spec = loaded.spec
    batch = options.batch or (4 if device.type == "cuda" else 1)
    if options.tile == 0:
        return None, batch
    if isinstance(options.tile, int):
        return (None if options.tile >= max(height, width) else options.tile), batch
    if options.tile != "auto":
        raise UsageError(f"--tile must be 'auto', 0 or a positive number of pixels, not {options.tile!r}")
    if spec.preferred_tile is not None:
        tile = spec.preferred_tile
        return (None if tile >= max(height, width) else tile), batch
    free = _free_memory(device)
    if free is None:
        cap = spec.auto_tile
        return (None if max(height, width) <= cap else cap), batch
    per_pixel = options.bytes_per_pixel or probe_bytes_per_pixel(loaded, device, options.precision)
    assert per_pixel is not None
    pixels = MEMORY_BUDGET * free / per_pixel
    if height * width <= pixels:
        return None, batch
    side = int(math.sqrt(pixels / batch)) // 8 * 8
    return max(side, MIN_TILE), batch


def _model_pass(
    loaded: LoadedModel,
    x: torch.Tensor,
    tile: int | None,
    overlap: int,
    batch: int,
    options: EngineOptions,
    accumulate_on: torch.device | None,
    progress: TileProgress | None,
) -> tuple[torch.Tensor, int, int]:
    """One model pass (with self-ensemble if asked) over ``x`` (1, 3, H, W): (output, tiles, refined tiles)."""
    side = tile or max(x.shape[-2:])
    transforms = _ensemble_transforms() if options.self_ensemble else [(lambda t: t, lambda t: t)]
    acc, tiles, refined = None, 0, 0
    for fwd, inv in transforms:
        result = tiled_forward(
            loaded,
            fwd(x),
            tile=side,
            overlap=overlap,
            batch=batch,
            precision=options.precision,
            accumulate_on=accumulate_on,
            progress=progress,
            full_batches=options.full_batches,
        )
        y = inv(result.image)
        acc = y if acc is None else acc + y
        tiles += result.tiles
        refined += result.refined_tiles
    assert acc is not None
    return acc / len(transforms), tiles, refined


def _whole_batch_pass(
    loaded: LoadedModel, x: torch.Tensor, options: EngineOptions, progress: TileProgress | None
) -> tuple[torch.Tensor, int, int]:
    """One model pass over a batch ``x`` (N, 3, H, W) of whole images in one forward (with self-ensemble if
    asked): (output, images run, images re-run in fp32 because their reduced-precision output was not finite)."""
    transforms = _ensemble_transforms() if options.self_ensemble else [(lambda t: t, lambda t: t)]
    acc, refined = None, 0
    n = x.shape[0]
    fill = (options.batch or n) - n if options.full_batches else 0
    for fwd, inv in transforms:
        xt = fwd(x).contiguous()
        if fill > 0:
            y = forward_whole(loaded, torch.cat([xt, xt[-1:].expand(fill, -1, -1, -1)]), options.precision)[:n]
        else:
            y = forward_whole(loaded, xt, options.precision)
        if options.precision != "fp32":
            ok = torch.isfinite(y).flatten(1).all(dim=1)
            if not bool(ok.all()):
                bad = (~ok).nonzero().flatten()
                y[bad] = forward_whole(loaded, xt[bad].contiguous(), "fp32")
                refined += len(bad)
        y = inv(y)
        acc = y if acc is None else acc + y
        if progress is not None:
            progress(1, 1)
    assert acc is not None
    return acc / len(transforms), x.shape[0] * len(transforms), refined


def _passes_for(scale: int, outscale: float | None) -> int:
    """How many chained model passes reach ``outscale`` (the rest is a resize)."""
    if outscale is None:
        return 1
    if outscale <= 0:
        raise UsageError(f"--outscale must be positive, not {outscale}")
    passes = 1
    while scale**passes < outscale - 1e-9 and passes < MAX_PASSES:
        passes += 1
    return passes


def _merge_device(loaded: LoadedModel, x: torch.Tensor, device: torch.device) -> torch.device | None:
    """Where the tiled merge of ``x``'s output lives: the CPU when the merged output (float32 colour and weight,
    16 bytes a pixel) would take over a quarter of the accelerator's free memory; else ``None`` (the input's device).
    """
    out_pixels = x.shape[-2] * x.shape[-1] * loaded.scale**2
    free = _free_memory(device)
    return torch.device("cpu") if free is not None and out_pixels * 16 > free / 4 else None


def _plan_image(loaded: LoadedModel, x: torch.Tensor, options: EngineOptions) -> tuple[int, int | None, int, int]:
    """(overlap, tile, batch, model passes) for ``x`` (N, 3, H, W) on its device, as both entry points plan them."""
    overlap = loaded.spec.tile_overlap if options.overlap is None else options.overlap
    if overlap < 0:
        raise UsageError(f"--tile-overlap must be >= 0, not {overlap}")
    tile, batch = plan_tile(loaded, x.shape[-2], x.shape[-1], options, x.device)
    return overlap, tile, batch, _passes_for(loaded.scale, options.outscale)


def upscale_tensor(
    loaded: LoadedModel,
    x: torch.Tensor,
    options: EngineOptions = EngineOptions(),
    *,
    progress: TileProgress | None = None,
) -> UpscaleResult:
    """Super-resolve ``x`` (N, 3, H, W) in [0, 1] with ``loaded``; the output is clamped to [0, 1].

    Tiles are planned from free memory (or the registry's hints); on out-of-memory the batch, then
    the tile, is halved down to ``MIN_TILE`` before a ``DeviceOutOfMemoryError``. When each image fits
    whole (no tiles), the N images go through the model in one forward pass (video frames); on
    out-of-memory they go one at a time first.
    """
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected (N, 3, H, W), got {tuple(x.shape)}")
    device = x.device
    n, _, h, w = x.shape
    overlap, tile, batch, passes = _plan_image(loaded, x, options)
    retries = 0
    # Whole images share forward passes; tiled ones go one image at a time (their tiles are batched).
    group = n if tile is None else 1
    started = time.perf_counter()
    while True:
        try:
            outputs, tiles, refined = [], 0, 0
            for i in range(0, n, group):
                y = x[i : i + group]
                for _ in range(passes):
                    # A compiled model's last short batch of frames is filled, even when it holds one frame.
                    if y.shape[0] > 1 or (options.full_batches and tile is None and (options.batch or 1) > 1):
                        y, t, r = _whole_batch_pass(loaded, y, options, progress)
                    else:
                        accumulate_on = _merge_device(loaded, y, device)
                        y, t, r = _model_pass(loaded, y, tile, overlap, batch, options, accumulate_on, progress)
                    y = y.to(device).clamp_(0, 1)
                    tiles, refined = tiles + t, refined + r
                outputs.append(y)
            break
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            if device.type == "cuda":
                torch.cuda.empty_cache()
            retries += 1
            current = tile or max(h, w)
            if group > 1:
                group = 1
            elif batch > 1:
                batch //= 2
            elif current // 2 >= MIN_TILE:
                tile = current // 2
            else:
                raise DeviceOutOfMemoryError(
                    f"out of memory on {device} even with {current}-pixel tiles, one at a time; "
                    "try --device cpu, --precision bf16 or a smaller model"
                ) from None
            log.warning("out of memory on %s: retrying with tile %s, batch %d", device, tile, batch)
    y = torch.cat(outputs)
    if refined:
        log.warning("%d tile(s) gave non-finite values in %s and were run again in fp32", refined, options.precision)
    if options.outscale is not None:
        target = (round(h * options.outscale), round(w * options.outscale))
        if tuple(y.shape[-2:]) != target:
            y = imresize(y, size=target).clamp_(0, 1)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return UpscaleResult(
        image=y,
        precision=options.precision,
        tile=tile,
        overlap=overlap,
        batch=batch,
        tiles=tiles,
        refined_tiles=refined,
        oom_retries=retries,
        model_passes=passes,
        seconds=time.perf_counter() - started,
    )


def with_tile(options: EngineOptions, tile: int | None) -> EngineOptions:
    """``options`` with the tile a previous image settled on (after an out-of-memory fallback)."""
    return replace(options, tile=0 if tile is None else tile)


def prepare_for_job(
    loaded: LoadedModel,
    device: torch.device,
    options: EngineOptions,
    *,
    compile: bool = False,
    default_batch: int | None = None,
) -> tuple[LoadedModel, EngineOptions]:
    """A batch job's one-time set-up of ``loaded`` and ``options``, before its first input.

    NHWC weights where the model gains from them; for ``tile="auto"``, one memory probe for the whole job
    (``bytes_per_pixel``) rather than one per input; with ``compile``, ``torch.compile`` after the probe
    (which runs a shape of its own) and ``full_batches``, so that every pass has the job's batch size
    (``options.batch``, else ``default_batch``) and equal inputs compile once.
    """
    loaded = optimise_for_inference(loaded, device)
    if options.tile == "auto" and loaded.spec.preferred_tile is None:
        options = replace(options, bytes_per_pixel=probe_bytes_per_pixel(loaded, device, options.precision))
    if compile:
        loaded = optimise_for_inference(loaded, device, compile=True)
        options = replace(options, full_batches=True, batch=options.batch or default_batch)
    return loaded, options


@dataclass
class BandedResult(UpscaleDecisions):
    """The decisions ``upscale_banded`` took; the rows themselves went to its sink."""

    #: Output size in pixels.
    height: int
    width: int
    #: Whether the rows were assembled in bands (False: the whole output was made first, then sent as one band).
    banded: bool


def _bandable(options: EngineOptions, passes: int, tile: int | None) -> bool:
    """True when the output can be assembled in bands: tiled, one model pass, no ensemble, no final resize."""
    return tile is not None and passes == 1 and not options.self_ensemble and options.outscale is None


def upscale_banded(
    loaded: LoadedModel,
    x: torch.Tensor,
    sink: BandSink,
    options: EngineOptions = EngineOptions(),
    *,
    progress: TileProgress | None = None,
) -> BandedResult:
    """Super-resolve one image ``x`` (1, 3, H, W) in [0, 1] and hand the output to ``sink`` in bands of rows.

    ``sink(first_row, band)`` gets every output row once, top to bottom, at most ``SINK_ROWS`` at a time:
    ``band`` is (1, 3, rows, sW), float32 on the CPU, clamped to [0, 1], with exactly the values
    ``upscale_tensor`` returns for those rows (``srcli.engine.tiling.tiled_forward_bands``). With tiles
    (``--tile auto`` on inputs larger than the model's ``auto_tile`` on the CPU, or a given tile), the merge
    holds about one tile row of the output rather than the whole float32 image and its weight sum, so a
    large photo stays in bounded memory. Without tiles, with self-ensemble, or with an ``outscale`` that
    needs another pass or a resize, the whole output is made as ``upscale_tensor`` makes it and then sent
    in pieces.

    On out-of-memory the batch, then the tile, is halved as in ``upscale_tensor`` and the image starts
    again: rows already sent are sent again (a sink that writes into an array is unaffected; one that
    streams to a file should start the file again when ``first_row`` is 0).
    """
    if x.dim() != 4 or x.shape[0] != 1 or x.shape[1] != 3:
        raise ValueError(f"upscale_banded takes one image (1, 3, H, W), got {tuple(x.shape)}")
    device = x.device
    overlap, tile, batch, passes = _plan_image(loaded, x, options)
    if not _bandable(options, passes, tile):
        result = upscale_tensor(loaded, x, options, progress=progress)
        image = result.image.cpu()
        for row in range(0, image.shape[-2], SINK_ROWS):
            sink(row, image[:, :, row : row + SINK_ROWS])
        decisions = {f.name: getattr(result, f.name) for f in fields(UpscaleDecisions)}
        return BandedResult(**decisions, height=int(image.shape[-2]), width=int(image.shape[-1]), banded=False)

    def to_sink(row: int, band: torch.Tensor) -> None:
        sink(row, band.cpu().clamp_(0, 1))

    retries = 0
    started = time.perf_counter()
    while True:
        assert tile is not None
        accumulate_on = _merge_device(loaded, x, device)
        try:
            done = tiled_forward_bands(
                loaded,
                x,
                to_sink,
                tile=tile,
                overlap=overlap,
                batch=batch,
                precision=options.precision,
                accumulate_on=accumulate_on,
                progress=progress,
                full_batches=options.full_batches,
            )
            break
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            if device.type == "cuda":
                torch.cuda.empty_cache()
            retries += 1
            if batch > 1:
                batch //= 2
            elif tile // 2 >= MIN_TILE:
                tile //= 2
            else:
                raise DeviceOutOfMemoryError(
                    f"out of memory on {device} even with {tile}-pixel tiles, one at a time; "
                    "try --device cpu, --precision bf16 or a smaller model"
                ) from None
            log.warning("out of memory on %s: retrying with tile %s, batch %d", device, tile, batch)
    if done.refined_tiles:
        log.warning(
            "%d tile(s) gave non-finite values in %s and were run again in fp32", done.refined_tiles, options.precision
        )
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return BandedResult(
        height=done.height,
        width=done.width,
        precision=options.precision,
        tile=tile,
        overlap=overlap,
        batch=batch,
        tiles=done.tiles,
        refined_tiles=done.refined_tiles,
        oom_retries=retries,
        model_passes=1,
        seconds=time.perf_counter() - started,
        banded=True,
    )


#: Turns a band of output rows, (rows, sW, 3) float32 in [0, 1], into the rows to keep, e.g. uint8 (rows, sW, 3).
BandFinish = Callable[["np.ndarray"], "np.ndarray"]


def upscale_to_array(
    loaded: LoadedModel,
    x: torch.Tensor,
    options: EngineOptions = EngineOptions(),
    *,
    bit_depth: int | None = 8,
    finish: BandFinish | None = None,
    progress: TileProgress | None = None,
) -> tuple[np.ndarray, BandedResult]:
    """Super-resolve one image ``x`` (1, 3, H, W) into a numpy array kept at the file's bit depth.

    Each band of ``upscale_banded`` becomes (rows, sW, 3) float32 (as the image job's ``_to_numpy`` makes the
    whole output today) and then ``finish(rows)``; the default quantises to ``bit_depth`` (8: uint8, 16:
    uint16, ``None``: float32 kept) with the image writer's ``srcli.io.imagefile.quantize``, so the array
    holds exactly the samples the writer would make from ``upscale_tensor``'s float output. The output
    array takes its trailing shape and dtype from the first finished band. A caller with another last
    step per pixel (e.g. the luma of a grey source) passes it as ``finish``.
    """
    import numpy as np

    if finish is None:
        if bit_depth is None:

            def finish(rows: np.ndarray) -> np.ndarray:
                return rows
        else:
            from srcli.io.imagefile import quantize

            depth = bit_depth

            def finish(rows: np.ndarray) -> np.ndarray:
                return quantize(rows, depth)

    target: list[np.ndarray] = []
    h, w = x.shape[-2:]
    # The output's height, as upscale_tensor makes it (with an outscale: the final resize's target).
    height = h * loaded.scale if options.outscale is None else round(h * options.outscale)

    def store(row: int, band: torch.Tensor) -> None:
        assert finish is not None
        rows = finish(np.ascontiguousarray(band[0].permute(1, 2, 0).float().numpy()))
        if not target:
            target.append(np.empty((height, *rows.shape[1:]), dtype=rows.dtype))
        target[0][row : row + rows.shape[0]] = rows

    result = upscale_banded(loaded, x, store, options, progress=progress)
    return target[0], result
