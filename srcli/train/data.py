"""Training data: HR folders -> aligned (HR, LR) pairs -> batches of random, augmented patches.

The LR of each image is made once, from the whole mod-cropped HR, with the evaluation's own
MATLAB bicubic and uint8 rounding (``srcli.eval.protocol.make_lr``), so the model trains on
exactly the degradation it is scored on. A random LR patch of side ``p`` at (y, x) and the HR
patch of side ``P = s * p`` at (s*y, s*x) then cover the same scene.

All images are packed into one flat uint8 buffer per resolution and a batch is cut out with a
single gather, on whichever device holds the buffers: on a GPU the data never leaves it.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from srcli.errors import DatasetError, ImageReadError
from srcli.eval.datasets import folder_images
from srcli.eval.protocol import PROTOCOL_VERSION, make_lr, modcrop
from srcli.io.images import IMAGE_SUFFIXES, read_rgb_uint8

log = logging.getLogger("srcli")

#: Called as ``progress(done, total, image_name)`` while pairs are prepared.
PrepProgress = Callable[[int, int, str], None]


@dataclass
class Pair:
    """One training or validation image: the mod-cropped HR and its LR, both (3, H, W) uint8."""

    name: str
    hr: torch.Tensor
    lr: torch.Tensor


def list_images(
    folders: Sequence[str | os.PathLike[str]], role: str = "training", recursive: bool = False
) -> list[Path]:
    """Every image inside ``folders`` (and their subfolders if ``recursive``), sorted per folder.

    A missing or image-less folder is a ``DatasetError``; hidden files and folders are ignored.
    """
    if not folders:
        raise DatasetError(f"give at least one {role} folder")
    paths: list[Path] = []
    for folder in folders:
        folder = Path(folder)
        if not folder.exists():
            raise DatasetError(f"{role} folder {folder} does not exist")
        if not recursive:
            found = folder_images(folder).images
        elif folder.is_dir():
            found = sorted(
                p
                for p in folder.rglob("*")
                if p.is_file()
                and p.suffix.lower() in IMAGE_SUFFIXES
                and not any(part.startswith(".") for part in p.relative_to(folder).parts)
            )
        else:
            raise DatasetError(f"{role} folder {folder} is not a folder")
        if not found:
            raise DatasetError(f"{role} folder {folder} holds no images (.png, .jpg, .bmp, .tif, .webp)")
        paths.extend(found)
    return paths


def read_hr(paths: Iterable[Path], scale: int, role: str = "training") -> list[tuple[str, torch.Tensor]]:
    """Read every HR image and mod-crop it to a multiple of ``scale``; an unreadable file is a ``DatasetError``."""
    out = []
    for path in paths:
        try:
            hr = read_rgb_uint8(path)
        except ImageReadError as exc:
            raise DatasetError(f"{role} image {exc}") from None
        out.append((path.name, modcrop(hr, scale)))
    return out


def check_patch_fit(
    images: list[tuple[str, torch.Tensor]], patch_size: int, skip_small: bool = False
) -> list[tuple[str, torch.Tensor]]:
    """Keep the images at least ``patch_size`` on both sides; smaller ones are an error unless ``skip_small``."""
    small = [(name, hr) for name, hr in images if min(hr.shape[-2:]) < patch_size]
    if not small:
        return images
    examples = ", ".join(f"{n} ({hr.shape[-1]}x{hr.shape[-2]})" for n, hr in small[:3])
    more = f" and {len(small) - 3} more" if len(small) > 3 else ""
    if not skip_small or len(small) == len(images):
        raise DatasetError(
            f"{len(small)} of {len(images)} training image(s) are smaller than the {patch_size} px patch: "
            f"{examples}{more}; use a smaller --patch-size"
            + (" or --skip-small to leave them out" if len(small) < len(images) else "")
        )
    log.warning(
        "leaving out %d training image(s) smaller than the %d px patch: %s%s", len(small), patch_size, examples, more
    )
    keep = {id(hr) for _, hr in small}
    return [(n, hr) for n, hr in images if id(hr) not in keep]


def _lr_uint8(hr: torch.Tensor, scale: int, device: torch.device | str) -> torch.Tensor:
    """The protocol's LR of a mod-cropped HR as uint8 (make_lr's values are exactly k / 255)."""
    lr = make_lr(hr.to(device), scale)
    return torch.round(lr * 255.0).to(torch.uint8).cpu()


def _cache_file(cache_dir: Path, name: str, hr: torch.Tensor, scale: int) -> Path:
    """Cache path keyed by the HR pixels, the scale and the protocol version (a changed image gets a new LR)."""
    digest = hashlib.sha256(hr.contiguous().numpy().tobytes())
    digest.update(f"{tuple(hr.shape)}|x{scale}|protocol{PROTOCOL_VERSION}".encode())
    return cache_dir / f"x{scale}" / f"{Path(name).stem}-{digest.hexdigest()[:16]}.png"


def _read_cached(path: Path) -> torch.Tensor | None:
    if not path.is_file():
        return None
    try:
        return read_rgb_uint8(path)
    except ImageReadError:  # a torn write from a killed run: make it again
        return None


def _write_cached(path: Path, lr: torch.Tensor) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    Image.fromarray(lr.permute(1, 2, 0).contiguous().numpy()).save(tmp, format="PNG")
    tmp.replace(path)


def make_pairs(
    images: list[tuple[str, torch.Tensor]],
    scale: int,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    device: torch.device | str = "cpu",
    progress: PrepProgress | None = None,
) -> list[Pair]:
    """Attach the protocol's LR to each HR, reading it from ``cache_dir`` when it was made before."""
    cache = Path(cache_dir) if cache_dir is not None else None
    pairs = []
    for i, (name, hr) in enumerate(images):
        cached_path = _cache_file(cache, name, hr, scale) if cache is not None else None
        lr = _read_cached(cached_path) if cached_path is not None else None
        if lr is None or tuple(lr.shape) != (3, hr.shape[-2] // scale, hr.shape[-1] // scale):
            lr = _lr_uint8(hr, scale, device)
            if cached_path is not None:
                _write_cached(cached_path, lr)
        pairs.append(Pair(name, hr, lr))
        if progress:
            progress(i + 1, len(images), name)
    return pairs


def load_val_pairs(paths: Sequence[Path], scale: int, device: torch.device | str = "cpu") -> list[Pair]:
    """Validation pairs; images too small to score at ``scale`` (as ``srcli eval`` skips them) are left out."""
    pairs = []
    for name, hr in read_hr(paths, scale, role="validation"):
        if min(hr.shape[-2:]) < 2 * scale + 11:  # SSIM's 11x11 window after the border crop
            log.warning("validation image %s is too small to score at x%d; left out", name, scale)
            continue
        pairs.append(Pair(name, hr, _lr_uint8(hr, scale, device)))
    if not pairs:
        raise DatasetError(f"no validation image can be scored at x{scale}")
    return pairs


class PatchSampler:
    """Batches of aligned random (LR, HR) patches with random flips and 90° rotations.

    Each epoch visits every image once in a random order (one patch per visit); batches run on
    across epoch boundaries. All randomness comes from one seeded ``torch.Generator`` whose state
    (with the rest of the current epoch) is in ``state_dict()``, so a resumed run draws exactly
    the batches an uninterrupted one would have.
    """

    def __init__(
        self,
        pairs: Sequence[Pair],
        scale: int,
        patch_size: int,
        batch_size: int,
        *,
        seed: int = 0,
        augment: bool = True,
        device: torch.device | str = "cpu",
    ) -> None:
        if patch_size % scale:
            raise ValueError(f"patch size {patch_size} is not a multiple of the scale {scale}")
        self.scale = scale
        self.patch = patch_size
        self.lr_patch = patch_size // scale
        self.batch_size = batch_size
        self.augment = augment
        self.device = torch.device(device)
        self.num_images = len(pairs)
        self.generator = torch.Generator().manual_seed(seed)
        self._queue = torch.empty(0, dtype=torch.int64)
        lr_h = torch.tensor([p.lr.shape[-2] for p in pairs], dtype=torch.int64)
        lr_w = torch.tensor([p.lr.shape[-1] for p in pairs], dtype=torch.int64)
        if int(torch.minimum(lr_h, lr_w).min()) < self.lr_patch:
            raise ValueError("an image is smaller than the patch (check_patch_fit should have left it out)")
        # Largest valid LR top-left corner per image (kept on the CPU, where the generator draws).
        self._max_y, self._max_x = lr_h - self.lr_patch, lr_w - self.lr_patch
        self._hr = self._pack([p.hr for p in pairs])
        self._lr = self._pack([p.lr for p in pairs])

    def _pack(self, images: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(flat uint8 pixels, start offset, width, H*W) per image, on the sampler's device."""
        sizes = torch.tensor([im.numel() for im in images], dtype=torch.int64)
        offsets = torch.cumsum(sizes, 0) - sizes
        widths = torch.tensor([im.shape[-1] for im in images], dtype=torch.int64)
        planes = torch.tensor([im.shape[-1] * im.shape[-2] for im in images], dtype=torch.int64)
        flat = torch.cat([im.reshape(-1) for im in images])
        return tuple(t.to(self.device) for t in (flat, offsets, widths, planes))  # type: ignore[return-value]

    @property
    def iters_per_epoch(self) -> int:
        """Batches per pass over the images."""
        return -(-self.num_images // self.batch_size)

    def _take(self, n: int) -> torch.Tensor:
        while self._queue.numel() < n:
            self._queue = torch.cat([self._queue, torch.randperm(self.num_images, generator=self.generator)])
        out, self._queue = self._queue[:n], self._queue[n:]
        return out

    def _gather(
        self,
        packed: tuple[torch.Tensor, ...],
        idx: torch.Tensor,
        top: torch.Tensor,
        left: torch.Tensor,
        size: int,
        flips: torch.Tensor,
    ) -> torch.Tensor:
        """Cut (B, 3, size, size) patches at (top, left) of images ``idx``, flipped / transposed per ``flips``."""
        flat, offsets, widths, planes = packed
        i = torch.arange(size, device=self.device)
        rows = torch.where(flips[:, 0:1], size - 1 - i, i)  # (B, S): vertical flip reverses the rows
        cols = torch.where(flips[:, 1:2], size - 1 - i, i)
        t = flips[:, 2, None, None]
        # Transposing the (flipped) patch swaps which output axis indexes rows and which columns.
        row_grid = torch.where(t, rows[:, None, :], rows[:, :, None])
        col_grid = torch.where(t, cols[:, :, None], cols[:, None, :])
        w = widths[idx][:, None, None]
        pix = (top[:, None, None] + row_grid) * w + left[:, None, None] + col_grid  # (B, S, S)
        chan = torch.arange(3, device=self.device)[None, :] * planes[idx][:, None]  # (B, 3)
        index = offsets[idx][:, None, None, None] + chan[:, :, None, None] + pix[:, None]
        return flat[index]

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(LR, HR) float32 batches in [0, 1]: (B, 3, p, p) and (B, 3, s*p, s*p), on the sampler's device."""
        b, g = self.batch_size, self.generator
        idx = self._take(b)
        # Uniform integer corners in [0, max]; float64 keeps floor(u * (max + 1)) <= max.
        top = (torch.rand(b, generator=g, dtype=torch.float64) * (self._max_y[idx] + 1)).floor().to(torch.int64)
        left = (torch.rand(b, generator=g, dtype=torch.float64) * (self._max_x[idx] + 1)).floor().to(torch.int64)
        flips = torch.rand(b, 3, generator=g) < 0.5  # vertical flip, horizontal flip, transpose
        flips &= self.augment
        idx, top, left, flips = (t.to(self.device, non_blocking=True) for t in (idx, top, left, flips))
        lr = self._gather(self._lr, idx, top, left, self.lr_patch, flips)
        hr = self._gather(self._hr, idx, top * self.scale, left * self.scale, self.patch, flips)
        return lr.float().div_(255.0), hr.float().div_(255.0)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The generator state and the rest of the current epoch's order."""
        return {"generator": self.generator.get_state(), "queue": self._queue.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Continue exactly where ``state_dict()`` was taken."""
        self.generator.set_state(state["generator"])
        self._queue = state["queue"].clone()
