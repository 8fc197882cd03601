"""Running a loaded model on [0, 1] tensors: value ranges, padding, tiled averaging, self-ensemble.

Input and output are float tensors (N, 3, H, W) in [0, 1]; the output is *not* clamped, so the
caller decides how to quantise. The functions hold no state: the same ``LoadedModel`` can be
shared between threads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Literal

import torch
import torch.nn.functional as F

from srcli.engine.devices import pick_device  # noqa: F401  (re-exported for callers of this module)
from srcli.hub.loading import LoadedModel
from srcli.registry import InferenceProtocol

Precision = Literal["fp32", "bf16", "fp16"]
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
#: Tiles per forward pass of a tiled protocol on an accelerator (ASID's 64 px tiles: a few MB each).
DEFAULT_TILE_BATCH = 32


#: Families whose convolutions run faster with channels-last (NHWC) weights and activations: cuDNN's tensor-core
#: kernels and oneDNN's CPU kernels are NHWC, so NCHW tensors are reordered around every convolution (on this
#: project's 2-core CPU, 96 x 96 input at x4: IMDN, RLFN and SurveyNet 19-39% faster, see README). The attention
#: models reshape to tokens between their few convolutions, where NHWC buys little. benchmarks/speed_table.py
#: times both on CUDA.
CHANNELS_LAST_FAMILIES = frozenset({"IMDN", "RLFN", "SurveyNet"})


def prefers_channels_last(loaded: LoadedModel, device: torch.device) -> bool:
    """True when ``loaded`` runs faster channels-last on ``device`` (conv-only families on CUDA and the CPU)."""
    return device.type in ("cuda", "cpu") and loaded.spec.family in CHANNELS_LAST_FAMILIES


def optimise_for_inference(
    loaded: LoadedModel,
    device: torch.device,
    *,
    channels_last: bool | None = None,
    compile: bool = False,
    compile_mode: str | None = None,
) -> LoadedModel:
    """Speed settings that leave the outputs within rounding of the plain module.

    ``channels_last``: store the weights NHWC (``True``) or NCHW (``False``; ``None``: as
    ``prefers_channels_last`` says); convolutions with NHWC weights produce NHWC activations whatever
    the input layout. The module is converted in place.
    ``compile``: wrap the module in ``torch.compile`` (the first call of each input shape compiles,
    seconds to minutes; worth it for long runs of equal-sized tiles). Returns the model to run.
    """
    if channels_last is None:
        channels_last = prefers_channels_last(loaded, device)
    loaded.module.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    if compile:
        compiled = torch.compile(loaded.module, mode=compile_mode, dynamic=False)
        loaded = replace(loaded, module=compiled)
    return loaded


def _pad_to(x: torch.Tensor, multiple: int, min_size: int) -> torch.Tensor:
    """Pad bottom/right by mirroring so both sides are >= ``min_size`` and divisible by ``multiple``."""
    h, w = x.shape[-2:]

    def target(n: int) -> int:
        n = max(n, min_size)
        return -(-n // multiple) * multiple

    ph, pw = target(h) - h, target(w) - w
    if ph == 0 and pw == 0:
        return x
    # Reflect needs pad < size; replicate covers tiny inputs.
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def forward_whole(loaded: LoadedModel, x: torch.Tensor, precision: Precision = "fp32") -> torch.Tensor:
    """One forward pass on the whole input, with the model's value range and padding rules."""
    spec, scale = loaded.spec, loaded.scale
    lo, hi = spec.value_range
    h, w = x.shape[-2:]
    padded = _pad_to(x, spec.pad_multiple, spec.min_size)
    model_in = padded * (hi - lo) + lo
    with torch.inference_mode():
        if precision == "fp32":
            y = loaded.module(model_in)
        else:
            with torch.autocast(device_type=x.device.type, dtype=_DTYPES[precision]):
                y = loaded.module(model_in)
    y = (y.float() - lo) / (hi - lo)
    return y[..., : h * scale, : w * scale]


def _starts(size: int, tile: int, overlap: int, stride: int | None = None) -> list[int]:
    """Tile origins covering ``size`` every ``tile - overlap`` (or ``stride``) pixels; the last ends at the border."""
    if size <= tile:
        return [0]
    stride = stride or tile - overlap
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)
    return starts


def forward_tiled_average(
    loaded: LoadedModel,
    x: torch.Tensor,
    tile: int,
    overlap: int,
    precision: Precision = "fp32",
    *,
    batch: int = 1,
    full_batches: bool = False,
) -> torch.Tensor:
    """Cut into overlapping tiles, run each, and average the overlaps (the ASID authors' test protocol).

    ``batch`` tiles go through the model per forward pass. Every tile of one image has the same
    shape and the models treat batch items independently, so batching changes only the speed
    (and the last bits of rounding), not the protocol. ``full_batches`` fills a short last batch by
    repeating its last tile (outputs dropped), so a compiled model sees one shape.
    """
    scale = loaded.scale
    n, c, h, w = x.shape
    # The ASID authors' tester: square tiles of min(tile, h, w), origins every ``tile - overlap`` pixels
    # (40 for 64 / 24) plus one flush with the border. Where a short side makes the tile smaller than
    # that stride their loop would leave gaps; there we step by half a tile instead.
    stride = tile - overlap
    tile = min(tile, h, w)
    if stride > tile:
        stride = max(1, tile // 2)
    out = torch.zeros(n, c, h * scale, w * scale, dtype=torch.float32, device=x.device)
    weight = torch.zeros(1, 1, h * scale, w * scale, dtype=torch.float32, device=x.device)
    boxes = [(top, left) for top in _starts(h, tile, overlap, stride) for left in _starts(w, tile, overlap, stride)]
    batch = max(1, batch)
    for start in range(0, len(boxes), batch):
        items = boxes[start : start + batch]
        patches = [x[..., top : top + tile, left : left + tile] for top, left in items]
        ph, pw = patches[0].shape[-2:]
        if full_batches:
            patches += patches[-1:] * (batch - len(patches))
        # (len(items) * n, c, ph, pw): item-major, so rows i*n .. (i+1)*n - 1 belong to tile i.
        y = forward_whole(loaded, torch.cat(patches) if len(patches) > 1 else patches[0], precision)
        for i, (top, left) in enumerate(items):
            rows = slice(top * scale, (top + ph) * scale)
            cols = slice(left * scale, (left + pw) * scale)
            out[..., rows, cols] += y[i * n : (i + 1) * n]
            weight[..., rows, cols] += 1
    return out / weight


_Transform = tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]


def _ensemble_transforms() -> list[_Transform]:
    """The 8 flips / rotations of the dihedral group, each with its inverse."""
    transforms: list[_Transform] = []
    for k in range(4):
        for flip in (False, True):

            def fwd(t: torch.Tensor, k: int = k, flip: bool = flip) -> torch.Tensor:
                t = torch.rot90(t, k, dims=(-2, -1))
                return torch.flip(t, dims=(-1,)) if flip else t

            def inv(t: torch.Tensor, k: int = k, flip: bool = flip) -> torch.Tensor:
                t = torch.flip(t, dims=(-1,)) if flip else t
                return torch.rot90(t, -k, dims=(-2, -1))

            transforms.append((fwd, inv))
    return transforms


def run_model(
    loaded: LoadedModel,
    x: torch.Tensor,
    *,
    protocol: InferenceProtocol | None = None,
    self_ensemble: bool = False,
    precision: Precision = "fp32",
    tile_batch: int | None = None,
    full_batches: bool = False,
) -> torch.Tensor:
    """Super-resolve ``x`` (N, 3, H, W) in [0, 1] as the paper's protocol says (or as ``protocol`` overrides).

    ``self_ensemble`` averages the 8 flipped / rotated passes (the papers' "+" rows). ``tile_batch``:
    tiles per forward pass of a tiled protocol (default: 1 on the CPU, where batching gains nothing,
    ``DEFAULT_TILE_BATCH`` on an accelerator); ``full_batches`` fills a short last batch of tiles (for a
    compiled model, which then sees one shape).
    """
    protocol = protocol or loaded.spec.protocol
    if tile_batch is None:
        tile_batch = 1 if x.device.type == "cpu" else DEFAULT_TILE_BATCH

    def once(t: torch.Tensor) -> torch.Tensor:
        if protocol.mode == "tiled" and protocol.tile and protocol.overlap is not None:
            return forward_tiled_average(
                loaded, t, protocol.tile, protocol.overlap, precision, batch=tile_batch, full_batches=full_batches
            )
        return forward_whole(loaded, t, precision)

    if not self_ensemble:
        return once(x)
    acc = None
    for fwd, inv in _ensemble_transforms():
        y = inv(once(fwd(x)))
        acc = y if acc is None else acc + y
    return acc / 8
