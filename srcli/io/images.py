"""Reading images into tensors with the conversions the SR protocols expect."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from srcli.errors import ImageReadError

if TYPE_CHECKING:
    import torch

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})


def read_rgb_uint8(path: str | Path) -> torch.Tensor:
    """Read ``path`` as a (3, H, W) uint8 RGB tensor.

    Grey and palette images are expanded to three channels and alpha is dropped, as the
    benchmark protocol needs. EXIF orientation is *not* applied: benchmark files are scored
    on their stored pixels, as MATLAB's ``imread`` reads them. 16-bit images are reduced to
    8 bits by rounding.
    """
    # Imported here so that listing folders (IMAGE_SUFFIXES) does not load numpy and torch.
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in {"I;16", "I;16B", "I;16L", "I"}:
                arr = np.asarray(im, dtype=np.float64)
                grey = np.clip(np.round(arr / 257.0), 0, 255).astype(np.uint8)
                rgb = np.repeat(grey[..., None], 3, axis=2)
            else:
                rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise ImageReadError(f"{path}: no such file") from None
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not a readable image") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageReadError(f"{path}: cannot decode ({exc})") from None
    if rgb.size == 0:
        raise ImageReadError(f"{path}: image has no pixels")
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))
