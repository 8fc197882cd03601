"""``srcli.upscale``: super-resolve one image in memory (tensor, array, Pillow image or file path).

Stateless and thread-safe: every call builds what it needs from its arguments. Passing a
``LoadedModel`` (from ``srcli.load_model``) as ``model`` skips loading the weights each call;
one ``LoadedModel`` may serve several threads at once.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from srcli.errors import UsageError

if TYPE_CHECKING:
    import numpy as np

    from srcli.hub.loading import LoadedModel


def _loaded(
    model: str | LoadedModel,
    scale: int | None,
    weights: str | os.PathLike[str] | None,
    device: str,
    cache_dir: str | None,
    offline: bool | None,
) -> LoadedModel:
    from srcli.engine.devices import pick_device
    from srcli.hub.loading import LoadedModel, load_model
    from srcli.registry import get_model

    if isinstance(model, LoadedModel):
        if scale is not None and scale != model.scale:
            raise UsageError(f"scale={scale} but the loaded model '{model.spec.name}' is x{model.scale}")
        return model
    scale = scale or max(get_model(model).weight_scales or get_model(model).scales)
    return load_model(
        model, scale, weights=weights, cache_dir=cache_dir, offline=offline, device=str(pick_device(device))
    )


def _array_to_frame(array: np.ndarray) -> tuple[Any, bool, Any]:
    """(H, W[, C]) uint8 / uint16 / float array -> (Frame, grey, dtype)."""
    import numpy as np

    from srcli.io.imagefile import Frame

    dtype = array.dtype
    if dtype == np.uint8:
        a = array.astype(np.float32) / 255.0
    elif dtype == np.uint16:
        a = array.astype(np.float32) / 65535.0
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
    return Frame(rgb=np.ascontiguousarray(colour), alpha=alpha, duration_ms=None), grey, dtype


def _frame_to_array(frame: Any, grey: bool, dtype: Any) -> np.ndarray:
    import numpy as np

    colour = frame.rgb[..., :1] if grey else frame.rgb
    parts = [colour] + ([frame.alpha[..., None]] if frame.alpha is not None else [])
    out = np.concatenate(parts, axis=2) if len(parts) > 1 else colour
    if out.shape[2] == 1:
        out = out[..., 0]
    if dtype == np.uint8:
        return np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)
    if dtype == np.uint16:
        return np.clip(np.round(out * 65535.0), 0, 65535).astype(np.uint16)
    return out.astype(dtype)


def upscale(
    image: Any,
    model: str | LoadedModel = "imdn",
    scale: int | None = None,
    *,
    weights: str | os.PathLike[str] | None = None,
    device: str = "auto",
    precision: str = "auto",
    tile: int | str = "auto",
    tile_overlap: int | None = None,
    batch: int | None = None,
    self_ensemble: bool = False,
    outscale: float | None = None,
    alpha: str = "resize",
    cache_dir: str | None = None,
    offline: bool | None = None,
) -> Any:
    """Super-resolve ``image`` with ``model`` at ``scale`` and return it in the form it came in.

    ``image`` may be:

    - a ``torch.Tensor`` (3, H, W) or (N, 3, H, W), float in [0, 1] or uint8: returned the same way;
    - a numpy array (H, W), (H, W, 3) or (H, W, 4) (alpha), uint8, uint16 or float in [0, 1];
    - a ``PIL.Image.Image``: returned as a Pillow image of the same mode family;
    - a path: read like ``srcli upscale`` reads files (EXIF orientation applied, 16 bits kept);
      returned as a numpy array of the file's bit depth (alpha as a fourth channel).

    The other arguments mean what the ``srcli upscale`` options of the same names mean.
    """
    import numpy as np
    import torch

    from srcli.engine.devices import resolve_precision
    from srcli.engine.upscale import EngineOptions, upscale_tensor
    from srcli.pipeline.images import _process_frame

    loaded = _loaded(model, scale, weights, device, cache_dir, offline)
    run_device = next(iter(loaded.module.parameters()), torch.empty(0)).device
    engine = EngineOptions(
        precision=resolve_precision(loaded.spec, run_device, precision),
        tile=tile,
        overlap=tile_overlap,
        batch=batch,
        self_ensemble=self_ensemble,
        outscale=outscale,
    )
    if alpha not in ("resize", "model", "drop"):
        raise UsageError(f"alpha must be resize, model or drop, not '{alpha}'")

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
        frame, grey, dtype = _array_to_frame(array)
        result = _process_frame(
            loaded,
            frame,
            grey=grey,
            alpha_mode=alpha,
            engine=engine,
            device=run_device,
            tiles=None,  # type: ignore[arg-type]
        )
        return _frame_to_array(result.frame, grey, dtype)

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
            tiles=None,  # type: ignore[arg-type]
        )
        return _frame_to_array(result.frame, decoded.grey, np.uint16 if decoded.bit_depth == 16 else np.uint8)
    raise UsageError(f"cannot upscale a {type(image).__name__}: pass a tensor, array, Pillow image or path")
