"""Running a loaded model on [0, 1] tensors: value ranges, padding, tiled averaging, self-ensemble.

Input and output are float tensors (N, 3, H, W) in [0, 1]; the output is *not* clamped, so the
caller decides how to quantise. The functions hold no state: the same ``LoadedModel`` can be
shared between threads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

from srcli.hub.loading import LoadedModel
from srcli.registry import InferenceProtocol

Precision = Literal["fp32", "bf16", "fp16"]
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def pick_device(choice: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; anything else is passed to ``torch.device``."""
    if choice != "auto":
        return torch.device(choice)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


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


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    """Tile origins covering ``size`` with stride ``tile - overlap``; the last tile ends at the border."""
    if size <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)
    return starts


def forward_tiled_average(
    loaded: LoadedModel, x: torch.Tensor, tile: int, overlap: int, precision: Precision = "fp32"
) -> torch.Tensor:
    """Cut into overlapping tiles, run each, and average the overlaps (the ASID authors' test protocol)."""
    scale = loaded.scale
    n, c, h, w = x.shape
    out = torch.zeros(n, c, h * scale, w * scale, dtype=torch.float32, device=x.device)
    weight = torch.zeros(1, 1, h * scale, w * scale, dtype=torch.float32, device=x.device)
    for top in _starts(h, tile, overlap):
        for left in _starts(w, tile, overlap):
            patch = x[..., top : top + tile, left : left + tile]
            y = forward_whole(loaded, patch, precision)
            ph, pw = patch.shape[-2:]
            rows = slice(top * scale, (top + ph) * scale)
            cols = slice(left * scale, (left + pw) * scale)
            out[..., rows, cols] += y
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
) -> torch.Tensor:
    """Super-resolve ``x`` (N, 3, H, W) in [0, 1] as the paper's protocol says (or as ``protocol`` overrides).

    ``self_ensemble`` averages the 8 flipped / rotated passes (the papers' "+" rows).
    """
    protocol = protocol or loaded.spec.protocol

    def once(t: torch.Tensor) -> torch.Tensor:
        if protocol.mode == "tiled" and protocol.tile and protocol.overlap is not None:
            return forward_tiled_average(loaded, t, protocol.tile, protocol.overlap, precision)
        return forward_whole(loaded, t, precision)

    if not self_ensemble:
        return once(x)
    acc = None
    for fwd, inv in _ensemble_transforms():
        y = inv(once(fwd(x)))
        acc = y if acc is None else acc + y
    return acc / 8
