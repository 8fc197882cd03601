"""``srcli.upscale``: super-resolve one image in memory (tensor, array, Pillow image or file path).

Stateless and thread-safe: every call builds what it needs from its arguments, through the engine's one
options record (``RunOptions``, resolved once per call as ``srcli upscale`` resolves it). Passing a
``LoadedModel`` (from ``srcli.load_model``) as ``model`` skips loading the weights each call; one
``LoadedModel`` may serve several threads at once.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from srcli.errors import UsageError

if TYPE_CHECKING:
    import numpy as np

    from srcli.engine.options import ResolvedRun, RunOptions
    from srcli.hub.loading import LoadedModel


def _resolve(
    model: str | LoadedModel | None, given: dict[str, Any], options: RunOptions | None
) -> tuple[ResolvedRun, LoadedModel | None]:
    """The run of one call, resolved once: ``options`` (default ``RunOptions()``) with the arguments given
    replacing its fields, and the ``LoadedModel`` passed as ``model`` (then its name, scale and device rule)."""
    from srcli.engine.options import RunOptions, check_run, resolve_run
    from srcli.hub.loading import LoadedModel

    run = replace(options or RunOptions(), **given)
    loaded = None
    if isinstance(model, LoadedModel):
        loaded = model
        if run.scale is not None and run.scale != loaded.scale:
            raise UsageError(f"scale={run.scale} but the loaded model '{loaded.spec.name}' is x{loaded.scale}")
        held = next(iter(loaded.module.parameters()), None)
        where = str(held.device) if held is not None else "cpu"
        asked = given.get("device", "auto")
        kind, _, index = asked.partition(":")
        if asked != "auto" and (where.partition(":")[0] != kind or (index and asked != where)):
            raise UsageError(f"device='{asked}' but the loaded model is on {where}")
        run = replace(run, model=loaded.spec.name, scale=loaded.scale, device=where, weights=None)
    elif model is not None:
        run = replace(run, model=model)
    if run.compile:
        raise UsageError("srcli.upscale does not compile (every call would compile again): compile a LoadedModel")
    return resolve_run(check_run(run)), loaded


def _array_to_frame(array: np.ndarray) -> tuple[Any, bool, int | None]:
    """(H, W[, C]) uint8 / uint16 / float array -> (Frame, grey, bit depth: 8, 16, or ``None`` for float)."""
    import numpy as np

    from srcli.io.imagefile import Frame

    dtype = array.dtype
    depth: int | None = None
    if dtype == np.uint8:
        a, depth = array.astype(np.float32) / 255.0, 8
    elif dtype == np.uint16:
        a, depth = array.astype(np.float32) / 65535.0, 16
    elif np.issubdtype(dtype, np.floating):
        a = np.clip(array.astype(np.float32), 0.0, 1.0)
    else:
        raise UsageError(f"arrays must be uint8, uint16 or float in [0, 1], not {dtype}")
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4):
        raise UsageError(f"arrays must be (H, W), (H, W, 1-4), not {array.shape}")
    channels = a.shape[2]
    grey = channels in (1, 2)
    colour = np.repeat(a[..., :1], 3, axis=2) if grey else a[..., :3]
    alpha = a[..., -1] if channels in (2, 4) else None
    return Frame(rgb=np.ascontiguousarray(colour), alpha=alpha, duration_ms=None), grey, depth


def _frame_to_array(frame: Any) -> np.ndarray:
    """A result frame (kept at the caller's depth by ``_process_frame``) as one array: (H, W) or (H, W, C)."""
    import numpy as np

    colour = frame.rgb[..., None] if frame.rgb.ndim == 2 else frame.rgb
    parts = [colour] + ([frame.alpha[..., None]] if frame.alpha is not None else [])
    out = np.concatenate(parts, axis=2) if len(parts) > 1 else colour
    return out[..., 0] if out.shape[2] == 1 else out


def upscale(
    image: Any,
    model: str | LoadedModel | None = None,
    scale: int | None = None,
    *,
    weights: str | os.PathLike[str] | None = None,
    device: str | None = None,
    precision: str | None = None,
    tile: int | str | None = None,
    tile_overlap: int | None = None,
    batch: int | None = None,
    self_ensemble: bool | None = None,
    outscale: float | None = None,
    threads: int | None = None,
    alpha: str = "resize",
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool | None = None,
    options: RunOptions | None = None,
) -> Any:
    """Super-resolve ``image`` with ``model`` at ``scale`` and return it in the form it came in.

    ``image`` may be:

    - a ``torch.Tensor`` (3, H, W) or (N, 3, H, W), float in [0, 1] or uint8: returned the same way;
    - a numpy array (H, W), (H, W, 3) or (H, W, 4) (alpha), uint8, uint16 or float in [0, 1];
    - a ``PIL.Image.Image``: returned as a Pillow image of the same mode family;
    - a path: read like ``srcli upscale`` reads files (EXIF orientation applied, 16 bits kept);
      returned as a numpy array of the file's bit depth (alpha as a fourth channel).

    How the model runs is the engine's ``RunOptions`` (``srcli.engine.options``), resolved once per call:
    ``options`` (default ``RunOptions()``: ``srcli.registry.DEFAULT_MODEL``, survey-net, at its largest
    scale, 4), with every argument given (not ``None``) replacing its field; the arguments mean what the
    ``srcli upscale`` options of the same names mean. ``model`` may be a ``LoadedModel`` (from
    ``srcli.load_model``): its weights are not loaded again and it runs where it is. ``threads`` sets
    torch's CPU threads for the process. Stateless and re-entrant: nothing is kept between calls.
    """
    import numpy as np
    import torch

    from srcli.engine.upscale import upscale_tensor
    from srcli.pipeline.images import _process_frame

    if alpha not in ("resize", "model", "drop"):
        raise UsageError(f"alpha must be resize, model or drop, not '{alpha}'")
    given = {
        key: value
        for key, value in {
            "scale": scale,
            "weights": os.fspath(weights) if weights is not None else None,
            "device": device,
            "precision": precision,
            "tile": tile,
            "tile_overlap": tile_overlap,
            "batch": batch,
            "self_ensemble": self_ensemble,
            "outscale": outscale,
            "threads": threads,
            "cache_dir": os.fspath(cache_dir) if cache_dir is not None else None,
            "offline": offline,
        }.items()
        if value is not None
    }
    resolved, loaded = _resolve(model, given, options)
    if loaded is None:
        loaded = resolved.load()
    run_device = resolved.device
    engine = resolved.engine

    if isinstance(image, torch.Tensor):
        single = image.dim() == 3
        x = image[None] if single else image
        if x.dim() != 4 or x.shape[1] != 3:
            raise UsageError(f"tensors must be (3, H, W) or (N, 3, H, W), not {tuple(image.shape)}")
        as_uint8 = x.dtype == torch.uint8
        xf = x.float() / 255.0 if as_uint8 else x.float()
        y = upscale_tensor(loaded, xf.to(run_device), engine).image.to(image.device)
        y = y.mul(255.0).round_().clamp_(0, 255).to(torch.uint8) if as_uint8 else y.to(image.dtype)
        return y[0] if single else y

    def run_array(array: np.ndarray) -> np.ndarray:
        frame, grey, depth = _array_to_frame(array)
        result = _process_frame(
            loaded, frame, grey=grey, alpha_mode=alpha, engine=engine, device=run_device, tiles=None, bit_depth=depth
        )
        out = _frame_to_array(result.frame)
        return out if depth is not None else out.astype(array.dtype)

    if isinstance(image, np.ndarray):
        return run_array(image)
    from PIL import Image

    if isinstance(image, Image.Image):
        mode = image.mode
        if mode in ("I;16", "I;16L", "I;16B", "I"):
            arr = np.asarray(image).astype(np.uint16)
        elif mode in ("L", "LA", "RGB", "RGBA"):
            arr = np.asarray(image)
        else:
            arr = np.asarray(image.convert("RGBA" if "transparency" in image.info or "A" in mode else "RGB"))
        out = run_array(arr)
        return Image.fromarray(out) if out.dtype == np.uint8 else Image.fromarray(out.astype(np.uint16), "I;16")
    if isinstance(image, (str, os.PathLike)):
        from srcli.io.imagefile import read_image

        decoded = read_image(image)
        frame = decoded.frames[0]
        result = _process_frame(
            loaded,
            frame,
            grey=decoded.grey,
            alpha_mode=alpha,
            engine=engine,
            device=run_device,
            tiles=None,
            bit_depth=decoded.bit_depth,
        )
        return _frame_to_array(result.frame)
    raise UsageError(f"cannot upscale a {type(image).__name__}: pass a tensor, array, Pillow image or path")
