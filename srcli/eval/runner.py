"""``srcli.evaluate``: score a model (or a folder of SR results) on a benchmark, as the papers do."""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from srcli._version import __version__
from srcli.errors import DatasetError, ImageReadError, UsageError
from srcli.eval.datasets import DISPLAY_NAMES, dataset_files, folder_images, resolve_dataset_name
from srcli.eval.protocol import PROTOCOL_DESCRIPTION, make_lr
from srcli.registry import InferenceProtocol

if TYPE_CHECKING:
    from srcli.engine.options import CheckedRun, ResolvedRun, RunOptions

log = logging.getLogger("srcli")

#: The package's source folder: a git checkout when ``srcli`` runs from its repository (editable install).
_SOURCE_ROOT = Path(__file__).resolve().parents[2]

#: Called as ``progress(done, total, image_name)`` after each image.
EvalProgress = Callable[[int, int, str], None]


#: The metrics ``evaluate`` computes unless told otherwise: the papers' protocol.
DEFAULT_METRICS: tuple[str, ...] = ("psnr", "ssim")


@dataclass
class ImageScore:
    """The metrics of one image."""

    name: str
    psnr: float
    ssim: float
    #: The scored (mod-cropped) HR size as (width, height), the order every srcli size is given in.
    hr_size: tuple[int, int]
    #: Every metric computed, by name, in the order asked (``psnr`` and ``ssim`` included);
    #: ``None`` where a metric cannot be computed on this image (MS-SSIM on one under 176 px).
    metrics: dict[str, float | None] = field(default_factory=dict)


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
    #: Where the numbers came from: srcli version and git commit, torch version, CPU threads, UTC start time.
    environment: dict[str, Any] = field(default_factory=dict)
    #: sha256 of every HR file scored, by file name.
    dataset_sha256: dict[str, str] = field(default_factory=dict)
    #: The mean of every metric computed, by name, in the order asked (``psnr`` and ``ssim`` included):
    #: over the images where it could be computed, ``None`` where it could be on none.
    metrics: dict[str, float | None] = field(default_factory=dict)

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


def git_commit(root: str | Path | None = None) -> str | None:
    """The commit checked out in ``root`` (default: srcli's own source folder), or ``None`` outside a checkout.

    Reads ``.git/HEAD`` and the ref it names (loose, else in ``packed-refs``) directly; a ``.git`` file
    (worktree, submodule) is followed to its git folder.
    """
    git = Path(root if root is not None else _SOURCE_ROOT) / ".git"
    try:
        if git.is_file():
            text = git.read_text(encoding="utf-8").strip()
            if not text.startswith("gitdir:"):
                return None
            git = (git.parent / text.removeprefix("gitdir:").strip()).resolve()
        head = (git / "HEAD").read_text(encoding="utf-8").strip()
        if not head.startswith("ref:"):
            return head or None  # a detached HEAD holds the commit itself
        ref = head.removeprefix("ref:").strip()
        common = git
        if (git / "commondir").is_file():  # a worktree keeps its branches in the main git folder
            common = (git / (git / "commondir").read_text(encoding="utf-8").strip()).resolve()
        for folder in dict.fromkeys((git, common)):
            loose = folder / ref
            if loose.is_file():
                return loose.read_text(encoding="utf-8").strip() or None
        for folder in dict.fromkeys((git, common)):
            packed = folder / "packed-refs"
            if packed.is_file():
                for line in packed.read_text(encoding="utf-8").splitlines():
                    sha, _, name = line.partition(" ")
                    if name.strip() == ref and not line.startswith(("#", "^")):
                        return sha
    except (OSError, UnicodeDecodeError):
        return None
    return None


def run_environment(started: datetime | None = None) -> dict[str, Any]:
    """What an evaluation ran with: srcli version and git commit, torch version and CPU threads, and the
    UTC time it ``started`` (default: now) in ISO 8601."""
    import torch

    return {
        "srcli": __version__,
        "git_commit": git_commit(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "timestamp": _iso(started or datetime.now(timezone.utc)),
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _eval_run(
    model: str,
    scale: int | None,
    given: dict[str, Any],
    options: RunOptions | CheckedRun | ResolvedRun | None,
) -> ResolvedRun:
    """The resolved run of one evaluation: ``options`` (default: fp32, the papers' protocol) with the
    arguments given overriding its fields; a checked or resolved ``options`` is taken as it is."""
    from srcli.engine.options import CheckedRun, ResolvedRun, RunOptions, check_run, resolve_run
    from srcli.registry import get_model

    if isinstance(options, (CheckedRun, ResolvedRun)):
        have = options.options
        if get_model(model).name != have.model or (scale is not None and scale != have.scale):
            raise UsageError(f"model '{model}' x{scale} differs from the options' '{have.model}' x{have.scale}")
        if given:
            raise UsageError(f"pass {', '.join(sorted(given))} in options or as arguments, not both")
        return options if isinstance(options, ResolvedRun) else resolve_run(options)
    run = replace(options or RunOptions(precision="fp32"), model=model, **given)
    if scale is not None:
        run = replace(run, scale=scale)
    if run.outscale is not None:
        raise UsageError("evaluate scores the model's own scale: leave outscale unset")
    return resolve_run(check_run(run))


def evaluate(
    model: str | None = None,
    dataset: str | None = None,
    scale: int | None = None,
    *,
    data_dir: str | Path | None = None,
    sr_dir: str | Path | None = None,
    weights: str | Path | None = None,
    self_ensemble: bool | None = None,
    precision: str | None = None,
    device: str | None = None,
    protocol: InferenceProtocol | None = None,
    compile: bool | None = None,
    threads: int | None = None,
    cache_dir: str | Path | None = None,
    offline: bool | None = None,
    options: RunOptions | CheckedRun | ResolvedRun | None = None,
    progress: EvalProgress | None = None,
    download_reporter=None,  # noqa: ANN001 - srcli.hub.download.ProgressReporter
    devices: list[str] | None = None,
    ray: str | None = None,
    item_hook: Callable[[Path], None] | None = None,
    metrics: Sequence[str] | None = None,
) -> EvalResult:
    """Score ``model`` at ``scale`` on ``dataset`` (or the HR images in ``data_dir``).

    How the model runs is a ``RunOptions`` (``srcli.engine.options``), resolved once: ``options``, or
    ``RunOptions(precision="fp32")`` (the papers' protocol), with ``model``, ``scale`` and every other
    argument given (not ``None``) replacing its field. ``scale=None`` is the model's largest (4).
    The paper's inference protocol (``protocol`` overrides it) decides tiling; ``options.batch`` sets
    the tiles per forward pass of a tiled protocol. ``compile`` runs the model under ``torch.compile``:
    it pays for a tiled protocol (ASID's equal 64 px tiles compile once), not for whole images of
    many sizes (each size compiles again).

    With ``sr_dir``, no model runs: the SR images in that folder (matched to the HR by name) are scored
    instead, at ``scale`` (required unless ``model`` names a model). Images that cannot be read, or
    whose SR size does not match, are skipped with a note in ``EvalResult.skipped``; the mean is over
    the images scored. The result records the environment and the sha256 of every HR file scored.

    ``devices`` (e.g. ``["cuda:0", "cuda:1"]`` or ``["cpu", "cpu"]``, see ``parse_devices``) scores the images
    on one worker process per device; ``ray`` (``auto``, ``ray://HOST:PORT`` or ``local``) on Ray actors
    (``srcli.eval.distributed``). Each worker loads the model once; the result is the one a single process
    gives (same images, order and means; on a CPU, with the same threads per worker as that process). Its
    ``protocol.device`` and ``environment`` then name the workers (and count the ``retries``).
    ``item_hook``, a picklable callable, runs in a worker just before each HR path (for tests).

    ``metrics`` (default ``("psnr", "ssim")``, the papers' protocol) names what to compute per image, any of
    ``srcli.eval.per_image.available_metrics()`` (``ms-ssim``, ``gmsd``, ``fsim``, ``fsimc``); PSNR and SSIM
    are always computed. Every image goes through ``srcli.eval.per_image`` (``load_hr``,
    ``load_protocol_model``, ``score_image``), as ``srcli compare`` and the workers of ``devices`` / ``ray``
    do, so all three give the same numbers. ``EvalResult.metrics`` holds the means, each image's
    ``metrics`` its values.
    """
    import torch

    from srcli.eval.per_image import load_hr, load_protocol_model, parse_metrics, score_image
    from srcli.io.images import read_rgb_uint8

    names = parse_metrics(metrics, always=DEFAULT_METRICS)

    started = time.perf_counter()
    started_at = datetime.now(timezone.utc)
    given = {
        key: value
        for key, value in {
            "weights": str(weights) if weights is not None else None,
            "self_ensemble": self_ensemble,
            "precision": precision,
            "device": device,
            "compile": compile,
            "threads": threads,
            "cache_dir": str(cache_dir) if cache_dir is not None else None,
            "offline": offline,
        }.items()
        if value is not None
    }
    if devices is not None and ray is not None:
        raise UsageError("devices and ray are two ways to scale out: give one of them")
    scale_out = devices is not None or ray is not None
    if scale_out and sr_dir is not None:
        raise UsageError("devices / ray run a model: they do not apply to sr_dir")
    run = None
    resolved = None
    if sr_dir is None:
        if model is None:
            if options is None:
                raise UsageError("give a model, or sr_dir to score existing results")
            from srcli.engine.options import RunOptions

            model = (options if isinstance(options, RunOptions) else options.options).model
        resolved = _eval_run(model, scale, given, options)
        scale = resolved.scale
    elif scale is None:
        if model is None:
            raise UsageError("give the scale of the SR images in sr_dir")
        from srcli.engine.options import default_scale
        from srcli.registry import get_model

        scale = default_scale(get_model(model))
    assert scale is not None
    label, hr_paths, skipped = _hr_images(
        dataset,
        data_dir,
        resolved.options.cache_dir if resolved else cache_dir,
        resolved.options.offline if resolved else offline,
        download_reporter,
    )
    record: dict[str, Any] = {
        **PROTOCOL_DESCRIPTION,
        "srcli": __version__,
        "scale": scale,
        "lr_source": "srcli MATLAB-compatible imresize from HR",
    }
    if resolved is not None and not scale_out:  # with devices / ray, the workers load it and say what ran
        run = load_protocol_model(resolved, protocol=protocol, reporter=download_reporter)
        record.update(run.record())
    elif resolved is None:
        sr_dir = Path(sr_dir)  # type: ignore[arg-type]
        if not sr_dir.is_dir():
            raise DatasetError(f"{sr_dir}: not a folder")
        record.update(model=model or "external", sr_dir=str(sr_dir), inference="scored from --sr-dir")

    environment = run_environment(started_at)
    if resolved is not None:
        environment["device"] = resolved.describe_device()
    scores: list[ImageScore] = []
    hashes: dict[str, str] = {}
    if resolved is not None and scale_out:
        from srcli.eval.distributed import score_on_workers

        outcome = score_on_workers(
            resolved.options,
            hr_paths,
            scale,
            protocol=protocol,
            metrics=tuple(names),
            devices=devices,
            ray=ray,
            progress=progress,
            item_hook=item_hook,
        )
        if outcome.infos:
            record.update(outcome.infos[0]["record"])
            record["device"] = ", ".join(dict.fromkeys(info["record"]["device"] for info in outcome.infos))
        environment.update(
            device=", ".join(outcome.workers),
            threads=resolved.options.threads,
            executor="ray" if ray is not None else "devices",
            retries=outcome.retries,
        )
        for hr_path, value in zip(hr_paths, outcome.results, strict=True):
            if isinstance(value, str):  # an image that cannot be scored: skipped, as below
                log.warning("skipped %s", value)
                skipped.append(value)
                continue
            values, (width, height) = value
            scores.append(_image_score(hr_path.name, values, (width, height)))
            hashes[hr_path.name] = _sha256(hr_path)
    for i, hr_path in enumerate(() if scale_out else hr_paths):
        try:
            hr = load_hr(hr_path, scale)
            if run is not None:
                sr = run(make_lr(hr, scale))
            else:
                sr_path = _find_sr(sr_dir, hr_path)  # type: ignore[arg-type]
                if sr_path is None:
                    raise ImageReadError(f"{hr_path.name}: no matching SR image in {sr_dir}")
                sr = read_rgb_uint8(sr_path).to(torch.float32) / 255.0
                if sr.shape[-2:] != hr.shape[-2:]:
                    raise ImageReadError(
                        f"{sr_path}: size {sr.shape[-1]}x{sr.shape[-2]} does not match the mod-cropped HR "
                        f"{hr.shape[-1]}x{hr.shape[-2]}"
                    )
            values = score_image(sr, hr, scale, names)
            scores.append(_image_score(hr_path.name, values, (int(hr.shape[-1]), int(hr.shape[-2]))))
            hashes[hr_path.name] = _sha256(hr_path)
        except ImageReadError as exc:
            log.warning("skipped %s", exc)
            skipped.append(str(exc))
        if progress:
            progress(i + 1, len(hr_paths), hr_path.name)
    if not scores:
        raise DatasetError(f"{label}: no image could be scored ({len(skipped)} skipped)")
    mean_psnr = sum(s.psnr for s in scores) / len(scores)
    mean_ssim = sum(s.ssim for s in scores) / len(scores)
    means = {name: _mean([s.metrics.get(name) for s in scores]) for name in names}
    means.update(psnr=mean_psnr, ssim=mean_ssim)
    self_ens = bool(record.get("self_ensemble", False))
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
        environment=environment,
        dataset_sha256=hashes,
        metrics=means,
    )
    result.published = _published(record["model"], label, scale, self_ens)
    return result


def _image_score(name: str, values: dict[str, float], hr_size: tuple[int, int]) -> ImageScore:
    """An ``ImageScore`` from ``score_image``'s values; NaN (not computable on this image) becomes ``None``."""
    kept = {key: (None if math.isnan(v) else v) for key, v in values.items()}
    return ImageScore(name, values["psnr"], values["ssim"], hr_size, kept)


def _mean(values: Sequence[float | None]) -> float | None:
    """The mean of the values that are not ``None``; ``None`` when every one is."""
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _iso(moment: datetime) -> str:
    """``2025-01-31T12:00:00Z``: ISO 8601 in UTC, to the second."""
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


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
