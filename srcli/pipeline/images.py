"""The batch image job behind ``srcli upscale``: read, super-resolve, write, never lose a file.

Reading and writing run in worker threads so that the device does not wait on PNG decoding and
encoding; the main thread only runs the model. Every file succeeds or fails on its own: a bad
file gives one line naming it and its cause, the batch goes on, and the report says what
happened to each. Outputs are written to a temporary name and renamed, so a file under its
final name is always complete, and ``skip_existing`` can resume an interrupted batch.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from srcli.errors import UsageError
from srcli.pipeline.inputs import (
    DEFAULT_NAME,
    INPUT_SUFFIXES,
    InputFile,
    check_template,
    collect_inputs,
    output_name,
    stale_temp_files,
)
from srcli.pipeline.messages import error_text, one_line
from srcli.pipeline.report import BatchReport

if TYPE_CHECKING:
    import numpy as np

    from srcli.engine.upscale import EngineOptions
    from srcli.hub.loading import LoadedModel
    from srcli.io.imagefile import DecodedImage, Frame

log = logging.getLogger("srcli.upscale")

AlphaMode = Literal["resize", "model", "drop"]
Status = Literal["done", "skipped", "failed", "planned"]
#: Output formats ``--format`` accepts, by the extension they get.
FORMAT_EXTENSIONS = {
    "png": "png",
    "jpg": "jpg",
    "jpeg": "jpg",
    "webp": "webp",
    "tif": "tif",
    "tiff": "tif",
    "bmp": "bmp",
}


@dataclass
class JobOptions:
    """Everything ``srcli upscale`` decides before the first file."""

    model: str
    scale: int
    output: Path
    weights: str | None = None
    name: str = DEFAULT_NAME
    format: str | None = None
    quality: int | None = None
    recursive: bool = False
    skip_existing: bool = False
    dry_run: bool = False
    fail_fast: bool = False
    alpha: AlphaMode = "resize"
    keep_metadata: bool = False
    #: Refuse inputs above this many pixels (all frames); ``None``: no limit.
    max_pixels: int | None = 64 * 1024 * 1024
    device: str = "auto"
    precision: str = "auto"
    tile: int | str = "auto"
    tile_overlap: int | None = None
    batch: int | None = None
    self_ensemble: bool = False
    outscale: float | None = None
    #: ``torch.compile`` the model (first pass of each input shape compiles; pays on many equal tiles).
    compile: bool = False
    io_workers: int = 2
    cache_dir: str | None = None
    offline: bool | None = None


@dataclass
class FileReport:
    """What happened to one input."""

    input: str
    output: str | None
    status: Status
    message: str = ""
    width: int | None = None
    height: int | None = None
    out_width: int | None = None
    out_height: int | None = None
    frames: int | None = None
    seconds: float = 0.0
    model_seconds: float = 0.0
    tile: int | None = None
    tiles: int = 0
    refined_tiles: int = 0
    oom_retries: int = 0


@dataclass
class JobReport(BatchReport):
    """The whole batch: per-file reports (``FileReport``) and totals."""

    files: list[FileReport] = field(default_factory=list)

    @property
    def model_seconds(self) -> float:
        """Sum of the model's compute time over every file."""
        return sum(f.model_seconds for f in self.files)

    @property
    def input_megapixels(self) -> float:
        """Input megapixels of the files done (all frames)."""
        return sum((f.width or 0) * (f.height or 0) * (f.frames or 1) for f in self.files if f.status == "done") / 1e6

    @property
    def output_megapixels(self) -> float:
        """Output megapixels written (all frames)."""
        done = (f for f in self.files if f.status == "done")
        return sum((f.out_width or 0) * (f.out_height or 0) * (f.frames or 1) for f in done) / 1e6

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary and the per-file records."""
        return {
            **self.summary(),
            "model_seconds": round(self.model_seconds, 4),
            "output_megapixels": round(self.output_megapixels, 4),
            "files": [asdict(f) for f in self.files],
        }


class JobEvents:
    """Callbacks the CLI implements to show progress; every method is optional."""

    def started(self, total: int, report: JobReport) -> None:
        """The plan is made and the model loaded; ``total`` files will be looked at."""

    def file_started(self, item: InputFile) -> None:
        """The model starts on ``item``."""

    def tiles(self, done: int, total: int) -> None:
        """Progress inside a large image."""

    def file_finished(self, report: FileReport) -> None:
        """``report`` is final (done, skipped or failed)."""


@dataclass
class _Planned:
    item: InputFile
    output: Path
    report: FileReport


def _requested_extension(fmt: str | None) -> str | None:
    if fmt is None:
        return None
    ext = FORMAT_EXTENSIONS.get(fmt.lower().lstrip("."))
    if ext is None:
        raise UsageError(f"--format '{fmt}': use one of {', '.join(sorted(set(FORMAT_EXTENSIONS.values())))}")
    return ext


def _source_extension(path: Path) -> str:
    """The output extension when the format stays the source's: its own suffix (``jpeg`` stays ``jpeg``)."""
    ext = path.suffix.lower().lstrip(".")
    return "png" if ext == "apng" or f".{ext}" not in INPUT_SUFFIXES else ext


def _single_output_file(arguments: list[str], output: Path) -> bool:
    """True when ``-o`` names one output file (one input file, an image suffix on ``output``)."""
    return (
        len(arguments) == 1
        and Path(arguments[0]).is_file()
        and output.suffix.lower() in INPUT_SUFFIXES
        and not output.is_dir()
    )


def plan_job(arguments: list[str], options: JobOptions) -> list[_Planned]:
    """Pair every input with its output path and settle what needs no model: collisions, overwrites, skips."""
    check_template(options.name)
    requested_ext = _requested_extension(options.format)
    items = collect_inputs(arguments, recursive=options.recursive)
    if not items:
        raise UsageError("no input images found in " + ", ".join(arguments))
    single = _single_output_file(arguments, options.output)
    scale_label = options.outscale if options.outscale is not None else options.scale
    inputs_resolved = {item.path.resolve(): item for item in items}
    claimed: dict[Path, Path] = {}
    planned: list[_Planned] = []
    for item in items:
        if single:
            out = options.output
        else:
            ext = requested_ext or _source_extension(item.path)
            name = output_name(options.name, item.path, model=options.model, scale=scale_label, ext=ext)
            out = options.output / item.relative_dir / name
        report = FileReport(input=str(item.path), output=str(out), status="planned")
        resolved = out.resolve()
        if resolved in inputs_resolved:
            report.status, report.message = "failed", "refused: the output would overwrite an input file"
        elif resolved in claimed:
            report.status, report.message = "failed", f"refused: output name collides with {claimed[resolved]}"
        elif options.skip_existing and out.exists():
            report.status, report.message = "skipped", "output exists (--skip-existing)"
        claimed.setdefault(resolved, item.path)
        planned.append(_Planned(item, out, report))
    return planned


# ---------------------------------------------------------------------------------------------
# Per-image processing


def _to_tensor(array: np.ndarray, device: Any) -> Any:
    """(H, W, C) float32 numpy -> (1, C, H, W) on ``device`` (pinned, non-blocking copy on CUDA)."""
    import torch

    t = torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _to_numpy(t: Any) -> np.ndarray:
    """(1, C, H, W) tensor -> (H, W, C) float32 numpy on the CPU."""
    import numpy as np

    return np.ascontiguousarray(t[0].permute(1, 2, 0).float().cpu().numpy())


@dataclass
class _FrameResult:
    frame: Frame
    seconds: float
    tile: int | None
    tiles: int
    refined: int
    oom_retries: int


def _process_frame(
    loaded: LoadedModel,
    frame: Frame,
    *,
    grey: bool,
    alpha_mode: AlphaMode,
    engine: EngineOptions,
    device: Any,
    tiles: Callable[[int, int], None] | None,
) -> _FrameResult:
    """Super-resolve one frame: colour through the model, alpha as ``alpha_mode`` says, grey back to luma."""
    import numpy as np

    from srcli.engine.upscale import upscale_tensor
    from srcli.io.imagefile import Frame, fill_transparent, luma, resize_alpha

    rgb = frame.rgb
    alpha = frame.alpha if alpha_mode != "drop" else None
    if alpha is not None:
        # Colour under transparent pixels is arbitrary (often black): extend the visible colour
        # into it so the model does not smear a dark fringe across the edges.
        rgb = fill_transparent(rgb, alpha)
    result = upscale_tensor(
        loaded, _to_tensor(np.ascontiguousarray(rgb, dtype=np.float32), device), engine, progress=tiles
    )
    out_rgb = _to_numpy(result.image)
    seconds, retries = result.seconds, result.oom_retries
    out_alpha = None
    if alpha is not None:
        out_h, out_w = out_rgb.shape[:2]
        if alpha_mode == "model":
            a3 = np.repeat(alpha[..., None], 3, axis=2).astype(np.float32)
            res_a = upscale_tensor(loaded, _to_tensor(a3, device), engine)
            out_alpha = _to_numpy(res_a.image).mean(axis=2)
            seconds += res_a.seconds
            retries += res_a.oom_retries
        else:
            out_alpha = resize_alpha(alpha, (out_w, out_h))
    if grey:
        out_rgb = np.repeat(luma(out_rgb)[..., None], 3, axis=2)
    return _FrameResult(
        frame=Frame(rgb=out_rgb, alpha=out_alpha, duration_ms=frame.duration_ms),
        seconds=seconds,
        tile=result.tile,
        tiles=result.tiles,
        refined=result.refined_tiles,
        oom_retries=retries,
    )


def _read(planned: _Planned, max_pixels: int | None) -> DecodedImage:
    from srcli.io.imagefile import read_image

    return read_image(planned.item.path, max_pixels=max_pixels)


def _write(planned: _Planned, decoded: DecodedImage, frames: list[Frame], options: JobOptions) -> Path:
    """Encode ``frames`` atomically under the planned name (its extension adjusted if the format must change)."""
    from srcli.io.imagefile import format_of_extension, output_format_for, write_image_atomic

    alpha_kept = options.alpha != "drop" and decoded.has_alpha
    planned_fmt = format_of_extension(planned.output.suffix)
    requested = options.format or (planned.output.suffix.lstrip(".") if planned_fmt else None)
    fmt, ext, note = output_format_for(decoded, requested, alpha_kept)
    out = planned.output
    if planned_fmt != fmt:
        # The format had to change (e.g. JPEG cannot keep the alpha channel): the suffix follows.
        out = out.with_name(out.name + "." + ext) if not out.suffix else out.with_suffix("." + ext)
    if note:
        planned.report.message = note
    if out.resolve() == planned.item.path.resolve():
        raise UsageError("refused: the output would overwrite the input file")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_image_atomic(
        out,
        frames,
        grey=decoded.grey,
        bit_depth=decoded.bit_depth,
        fmt=fmt,
        quality=options.quality,
        icc_profile=decoded.icc_profile,
        exif=decoded.exif,
        keep_metadata=options.keep_metadata,
        loop=decoded.loop,
    )
    return out


# ---------------------------------------------------------------------------------------------
# The job


def run_job(
    arguments: list[str],
    options: JobOptions,
    *,
    events: JobEvents | None = None,
    loaded: LoadedModel | None = None,
    reporter: Any = None,
) -> JobReport:
    """Run ``srcli upscale`` over ``arguments`` (files, folders, globs); returns the report.

    Bad inputs fail one by one (``fail_fast`` stops at the first); a ``KeyboardInterrupt`` stops the
    batch after the writes in flight have finished or been cleaned up, and the report says so.
    """
    events = events or JobEvents()
    planned = plan_job(arguments, options)
    report = JobReport(
        model=options.model, scale=options.scale, outscale=options.outscale, device="", precision=options.precision
    )
    report.files = [p.report for p in planned]
    if options.dry_run:
        return report

    from srcli.engine.upscale import with_tile
    from srcli.pipeline.model_setup import set_up_model

    todo = [p for p in planned if p.report.status == "planned"]
    device, loaded, engine = set_up_model(options, report, needed=bool(todo), loaded=loaded, reporter=reporter)
    # Temporary files an interrupted run left for the outputs this run is about to write.
    ours = {(p.output.parent, p.output.name) for p in todo}
    for folder in {parent for parent, _ in ours}:
        for stale in stale_temp_files(folder):
            if (folder, stale.name[1:].rsplit(".", 2)[0]) in ours:
                log.info("removing %s, left by an interrupted run", stale)
                stale.unlink(missing_ok=True)

    started = time.perf_counter()
    events.started(len(planned), report)
    for p in planned:
        if p.report.status != "planned":
            if p.report.status == "failed":
                log.error("%s", one_line(p.report.input, p.report.message))
            events.file_finished(p.report)
    stop = threading.Event()
    readers = ThreadPoolExecutor(max_workers=max(1, options.io_workers), thread_name_prefix="srcli-read")
    writers = ThreadPoolExecutor(max_workers=max(1, options.io_workers), thread_name_prefix="srcli-write")
    pending_writes: deque[tuple[_Planned, Future[Path], float]] = deque()

    def finish_write(p: _Planned, future: Future[Path], t0: float) -> None:
        try:
            out = future.result()
            p.report.output, p.report.status = str(out), "done"
        except Exception as exc:
            p.report.status, p.report.message = "failed", error_text(exc)
            log.error("%s", one_line(p.report.input, "cannot write output: " + p.report.message))
            if options.fail_fast:
                stop.set()
        p.report.seconds = time.perf_counter() - t0
        events.file_finished(p.report)

    def drain(limit: int) -> None:
        while len(pending_writes) > limit:
            finish_write(*pending_writes.popleft())

    def reads() -> Iterator[tuple[_Planned, Future[DecodedImage]]]:
        ahead: deque[tuple[_Planned, Future[DecodedImage]]] = deque()
        queue = iter(todo)
        for p in queue:
            ahead.append((p, readers.submit(_read, p, options.max_pixels)))
            if len(ahead) > options.io_workers:
                break
        while ahead:
            yield ahead.popleft()
            nxt = next(queue, None)
            if nxt is not None:
                ahead.append((nxt, readers.submit(_read, nxt, options.max_pixels)))

    try:
        for p, future in reads():
            if stop.is_set():
                break
            t0 = time.perf_counter()
            try:
                decoded = future.result()
                width, height = decoded.size
                p.report.width, p.report.height, p.report.frames = width, height, len(decoded.frames)
                events.file_started(p.item)
                frames: list[Frame] = []
                for frame in decoded.frames:
                    fr = _process_frame(
                        loaded,
                        frame,
                        grey=decoded.grey,
                        alpha_mode=options.alpha,
                        engine=engine,
                        device=device,
                        tiles=events.tiles,
                    )
                    frames.append(fr.frame)
                    p.report.model_seconds += fr.seconds
                    p.report.tiles += fr.tiles
                    p.report.refined_tiles += fr.refined
                    p.report.oom_retries += fr.oom_retries
                    p.report.tile = fr.tile
                    if fr.oom_retries:
                        # Later images start from the tile that worked.
                        engine = with_tile(engine, fr.tile)
                p.report.out_height, p.report.out_width = frames[0].rgb.shape[:2]
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                p.report.status, p.report.message = "failed", error_text(exc)
                p.report.seconds = time.perf_counter() - t0
                log.error("%s", one_line(p.report.input, p.report.message))
                events.file_finished(p.report)
                if options.fail_fast:
                    break
                continue
            pending_writes.append((p, writers.submit(_write, p, decoded, frames, options), t0))
            drain(options.io_workers)
        drain(0)
    except KeyboardInterrupt:
        report.interrupted = True
        stop.set()
        # Let writes already running finish (or clean up their temporary file); drop the queued ones.
        readers.shutdown(wait=True, cancel_futures=True)
        for p, future, t0 in pending_writes:
            if future.cancel():
                p.report.status, p.report.message = "failed", "interrupted before writing"
            else:
                finish_write(p, future, t0)
        pending_writes.clear()
    finally:
        readers.shutdown(wait=True, cancel_futures=True)
        writers.shutdown(wait=True)
    for p in planned:
        if p.report.status == "planned":
            p.report.status = "skipped"
            p.report.message = "not processed (interrupted)" if report.interrupted else "not processed (--fail-fast)"
    report.seconds = time.perf_counter() - started
    return report


def default_workers() -> int:
    """I/O threads: enough to hide decoding and encoding, few enough to leave cores to the model."""
    return max(1, min(4, (os.cpu_count() or 2) // 2))
