"""``srcli.evaluate``: score a model (or a folder of SR results) on a benchmark, as the papers do."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from srcli._version import __version__
from srcli.errors import DatasetError, ImageReadError, SrcliError
from srcli.eval.datasets import DISPLAY_NAMES, dataset_files, folder_images, resolve_dataset_name
from srcli.eval.protocol import PROTOCOL_DESCRIPTION, make_lr, modcrop, score
from srcli.registry import InferenceProtocol

log = logging.getLogger("srcli")

#: Called as ``progress(done, total, image_name)`` after each image.
EvalProgress = Callable[[int, int, str], None]


@dataclass
class ImageScore:
    """The metrics of one image."""

    name: str
    psnr: float
    ssim: float
    hr_size: tuple[int, int]


@dataclass
class EvalResult:
    """The outcome of one (model, data set, scale) evaluation, with the protocol that produced it."""

    model: str
    dataset: str
    scale: int
    psnr: float
    ssim: float
    images: list[ImageScore]
    skipped: list[str]
    protocol: dict[str, Any]
    seconds: float
    published: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def _hr_images(
    dataset: str | None, data_dir: str | Path | None, cache_dir, offline, reporter
) -> tuple[str, list[Path], list[str]]:
    """(display name, image paths, skipped-file notes) for a named data set or a user folder."""
    if data_dir is not None:
        listing = folder_images(data_dir)
        skipped = [f"{p.name}: not an image" for p in listing.skipped]
        label = DISPLAY_NAMES.get(resolve_dataset_name(dataset), dataset) if dataset else Path(data_dir).name
        return label, listing.images, skipped
    if dataset is None:
        raise DatasetError("give a dataset name or --data-dir")
    key = resolve_dataset_name(dataset)
    return DISPLAY_NAMES[key], dataset_files(key, cache_dir=cache_dir, offline=offline, reporter=reporter), []


def _find_sr(sr_dir: Path, hr_path: Path) -> Path | None:
    """The SR file in ``sr_dir`` for ``hr_path``: same name, or same stem with any suffix / a ``_x4``-style tail."""
    exact = sr_dir / hr_path.name
    if exact.is_file():
        return exact
    candidates = sorted(p for p in sr_dir.iterdir() if p.stem == hr_path.stem or p.stem.startswith(hr_path.stem + "_"))
    return candidates[0] if len(candidates) == 1 else None


def evaluate(
    model: str | None,
    dataset: str | None,
    scale: int,
    *,
    data_dir: str | Path | None = None,
    sr_dir: str | Path | None = None,
    weights: str | Path | None = None,
    self_ensemble: bool = False,
    precision: str = "fp32",
    device: str = "auto",
    protocol: InferenceProtocol | None = None,
    compile: bool = False,
    cache_dir: str | Path | None = None,
    offline: bool | None = None,
    progress: EvalProgress | None = None,
    download_reporter=None,  # noqa: ANN001 - srcli.hub.download.ProgressReporter
) -> EvalResult:
    """Score ``model`` at ``scale`` on ``dataset`` (or the HR images in ``data_dir``).

    With ``sr_dir``, no model runs: the SR images in that folder (matched to the HR by name)
    are scored instead. Images that cannot be read, or whose SR size does not match, are
    skipped with a note in ``EvalResult.skipped``; the mean is over the images scored.
    ``compile`` runs the model under ``torch.compile``: it pays for a tiled protocol (ASID's equal 64 px
    tiles compile once), not for whole images of many sizes (each size compiles again).
    """
    import torch

    from srcli.io.images import read_rgb_uint8

    started = time.perf_counter()
    label, hr_paths, skipped = _hr_images(dataset, data_dir, cache_dir, offline, download_reporter)
    loaded = None
    run = None
    record: dict[str, Any] = {
        **PROTOCOL_DESCRIPTION,
        "srcli": __version__,
        "scale": scale,
        "lr_source": "srcli MATLAB-compatible imresize from HR",
    }
    if sr_dir is None:
        from srcli.engine.inference import optimise_for_inference, pick_device, run_model
        from srcli.hub.loading import load_model

        if model is None:
            raise SrcliError("give a model, or --sr-dir to score existing results")
        dev = pick_device(device)
        loaded = load_model(
            model,
            scale,
            weights=weights,
            cache_dir=cache_dir,
            offline=offline,
            device=str(dev),
            reporter=download_reporter,
        )
        if compile:
            loaded = optimise_for_inference(loaded, dev, channels_last=False, compile=True)
        proto = protocol or loaded.spec.protocol
        record.update(
            model=loaded.spec.name,
            dtype=precision,
            device=str(dev),
            inference=proto.describe(),
            self_ensemble=self_ensemble,
            compiled=compile,
            weights=str(loaded.weights_path) if loaded.weights_path else None,
            weights_sha256=loaded.weights_sha256,
        )

        def run(lr: torch.Tensor) -> torch.Tensor:
            return run_model(
                loaded,
                lr[None].to(dev),
                protocol=proto,
                self_ensemble=self_ensemble,
                precision=precision,
                full_batches=compile,
            )[0].cpu()
    else:
        sr_dir = Path(sr_dir)
        if not sr_dir.is_dir():
            raise DatasetError(f"{sr_dir}: not a folder")
        record.update(model=model or "external", sr_dir=str(sr_dir), inference="scored from --sr-dir")

    scores: list[ImageScore] = []
    for i, hr_path in enumerate(hr_paths):
        try:
            hr = modcrop(read_rgb_uint8(hr_path), scale)
            if min(hr.shape[-2:]) < 2 * scale + 11:
                raise ImageReadError(f"{hr_path}: too small ({hr.shape[-1]}x{hr.shape[-2]}) for x{scale}")
            if run is not None:
                sr = run(make_lr(hr, scale))
            else:
                sr_path = _find_sr(sr_dir, hr_path)
                if sr_path is None:
                    raise ImageReadError(f"{hr_path.name}: no matching SR image in {sr_dir}")
                sr = read_rgb_uint8(sr_path).to(torch.float32) / 255.0
                if sr.shape[-2:] != hr.shape[-2:]:
                    raise ImageReadError(
                        f"{sr_path}: size {sr.shape[-1]}x{sr.shape[-2]} does not match the mod-cropped HR "
                        f"{hr.shape[-1]}x{hr.shape[-2]}"
                    )
            p, s = score(sr, hr, scale)
            scores.append(ImageScore(hr_path.name, p, s, (int(hr.shape[-2]), int(hr.shape[-1]))))
        except ImageReadError as exc:
            log.warning("skipped %s", exc)
            skipped.append(str(exc))
        if progress:
            progress(i + 1, len(hr_paths), hr_path.name)
    if not scores:
        raise DatasetError(f"{label}: no image could be scored ({len(skipped)} skipped)")
    mean_psnr = sum(s.psnr for s in scores) / len(scores)
    mean_ssim = sum(s.ssim for s in scores) / len(scores)
    result = EvalResult(
        model=record["model"],
        dataset=label,
        scale=scale,
        psnr=mean_psnr,
        ssim=mean_ssim,
        images=scores,
        skipped=skipped,
        protocol=record,
        seconds=time.perf_counter() - started,
    )
    result.published = _published(record["model"], label, scale, self_ensemble)
    return result


def _published(model: str, dataset: str, scale: int, self_ensemble: bool) -> list[dict[str, Any]]:
    """Published values for this row, from the papers' tables encoded in the package."""
    from srcli.errors import UnknownDatasetError, UnknownModelError
    from srcli.eval.published import published_for
    from srcli.registry import get_model

    try:
        model = get_model(model).name
        dataset = resolve_dataset_name(dataset)
    except (UnknownModelError, UnknownDatasetError):  # a method or folder no paper table knows
        return []
    out = []
    for table, row in published_for(model, dataset, scale, self_ensemble=self_ensemble):
        value = row.results.get(dataset)
        if value is None:
            continue
        out.append(
            {
                "table": table.id,
                "source": table.source,
                "method": row.method,
                "psnr": value[0],
                "ssim": value[1],
                "flags": list(row.flags),
            }
        )
    return out
