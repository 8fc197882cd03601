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
from typing import TYPE_CHECKING, Any, Literal

from srcli.atomic import final_name_of, stale_temp_files
from srcli.errors import ImageWriteError
from srcli.pipeline.image_plan import ImagePlan, PlannedImage
from srcli.pipeline.job import AlphaMode, ImageOptions
from srcli.pipeline.messages import error_text, one_line
from srcli.pipeline.report import BatchReport
from srcli.pipeline.worker_pool import close_report

if TYPE_CHECKING:
    import numpy as np

    from srcli.engine.options import ResolvedRun
    from srcli.engine.upscale import EngineOptions
    from srcli.hub.loading import LoadedModel
    from srcli.io.imagefile import DecodedImage, Frame

log = logging.getLogger("srcli.upscale")

Status = Literal["done", "skipped", "failed", "planned"]
__all__ = ["FileReport", "ImageOptions", "JobEvents", "JobReport", "report_for_plan", "run_job"]


@dataclass
class FileReport:
    """What happened to one input."""

    input: str
    output: str | None
    status: Status
    message: str = ""
    #: Notes from planning (a format change and why) and from decoding.
    notes: list[str] = field(default_factory=list)
    #: The output existed and was replaced (this job's own earlier result, or --overwrite).
    replaced: bool = False
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

    def file_started(self, item: PlannedImage) -> None:
        """The model starts on ``item``."""

    def tiles(self, done: int, total: int) -> None:
        """Progress inside a large image."""

    def file_finished(self, report: FileReport) -> None:
        """``report`` is final (done, skipped or failed)."""


def report_for_plan(plan: ImagePlan, device: str = "", precision: str = "") -> JobReport:
    """A report with one ``FileReport`` per planned item: planned, skipped or failed (refused) as planned."""
    run = plan.options.run
    assert run.scale is not None
    report = JobReport(model=run.model, scale=run.scale, outscale=run.outscale, device=device, precision=precision)
    status = {"upscale": "planned", "skip": "skipped", "refuse": "failed"}
    for item in plan.items:
        report.files.append(
            FileReport(
                input=str(item.input),
                output=str(item.output),
                status=status[item.action],  # type: ignore[arg-type]
                message=item.reason,
                notes=list(item.notes),
                replaced=item.replaces,
                width=item.width,
                height=item.height,
                frames=item.frames,
                out_width=item.out_width if item.action == "upscale" else None,
                out_height=item.out_height if item.action == "upscale" else None,
            )
        )
    return report


# ---------------------------------------------------------------------------------------------
# Per-image processing


def _to_tensor(array: np.ndarray, device: Any) -> Any:
    """(H, W, C) float32 numpy -> (1, C, H, W) on ``device`` (pinned, non-blocking copy on CUDA)."""
    import torch

    t = torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


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
    bit_depth: int | None,
) -> _FrameResult:
    """Super-resolve one frame: colour through the model, alpha as ``alpha_mode`` says, grey back to luma.

    The result is kept at ``bit_depth`` (8: uint8, 16: uint16, with the writer's own ``quantize``; ``None``:
    float32 in [0, 1]) and assembled in bands of rows (``upscale_to_array``), so a large photo never holds
    its whole float32 output: the samples are exactly those the writer would make from the float output.
    A grey source gives one (H, W) plane, the mean of the model's three channels (``luma``).
    """
    import numpy as np

    from srcli.engine.upscale import upscale_to_array
    from srcli.io.imagefile import Frame, fill_transparent, luma, quantize, resize_alpha

    def at_depth(values: np.ndarray) -> np.ndarray:
        return values if bit_depth is None else quantize(values, bit_depth)

    rgb = frame.rgb
    alpha = frame.alpha if alpha_mode != "drop" else None
    if alpha is not None:
        # Colour under transparent pixels is arbitrary (often black): extend the visible colour
        # into it so the model does not smear a dark fringe across the edges.
        rgb = fill_transparent(rgb, alpha)
    out_rgb, result = upscale_to_array(
        loaded,
        _to_tensor(np.ascontiguousarray(rgb, dtype=np.float32), device),
        engine,
        finish=(lambda rows: at_depth(luma(rows))) if grey else at_depth,
        progress=tiles,
    )
    seconds, retries = result.seconds, result.oom_retries
    out_alpha = None
    if alpha is not None:
        out_h, out_w = out_rgb.shape[:2]
        if alpha_mode == "model":
            a3 = np.repeat(alpha[..., None], 3, axis=2).astype(np.float32)
            plane, res_a = upscale_to_array(
                loaded, _to_tensor(a3, device), engine, finish=lambda rows: rows.mean(axis=2)
            )
            seconds += res_a.seconds
            retries += res_a.oom_retries
        else:
            plane = resize_alpha(alpha, (out_w, out_h))
        out_alpha = at_depth(plane)
    return _FrameResult(
        frame=Frame(rgb=out_rgb, alpha=out_alpha, duration_ms=frame.duration_ms),
        seconds=seconds,
        tile=result.tile,
        tiles=result.tiles,
        refined=result.refined_tiles,
        oom_retries=retries,
    )


def read_item(item: PlannedImage, max_pixels: int | None) -> DecodedImage:
    """Decode ``item``'s input (the same checks as at planning)."""
    from srcli.io.imagefile import read_image

    return read_image(item.input, max_pixels=max_pixels)


def write_item(item: PlannedImage, decoded: DecodedImage, frames: list[Frame], options: ImageOptions) -> None:
    """Encode ``frames`` atomically as ``item.output`` in ``item.format``, both fixed by the plan."""
    from srcli.io.imagefile import NO_ALPHA_FORMATS, write_image_atomic

    assert item.format is not None
    if options.alpha != "drop" and decoded.has_alpha and item.format in NO_ALPHA_FORMATS:
        # The plan read the headers; a decoder that finds alpha they did not announce must not lose it.
        raise ImageWriteError(f"{item.input}: has transparency its header did not show; {item.format} cannot keep it")
    item.output.parent.mkdir(parents=True, exist_ok=True)
    write_image_atomic(
        item.output,
        frames,
        grey=decoded.grey,
        bit_depth=decoded.bit_depth,
        fmt=item.format,
        quality=options.quality,
        icc_profile=decoded.icc_profile,
        exif=decoded.exif,
        keep_metadata=options.keep_metadata,
        loop=decoded.loop,
    )


def remove_stale_temp_files(items: tuple[PlannedImage, ...]) -> None:
    """Remove the temporary files an interrupted run left for the outputs about to be written."""
    ours = {(i.output.parent, i.output.name) for i in items}
    for folder in {parent for parent, _ in ours}:
        for stale in stale_temp_files(folder):
            if (folder, final_name_of(stale)) in ours:
                log.info("removing %s, left by an interrupted run", stale)
                stale.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# The job


def announce_files(plan: ImagePlan, report: JobReport, events: JobEvents) -> float:
    """Start ``events`` and finish the files the plan already decided (a failure logged); the job's start time."""
    started = time.perf_counter()
    events.started(len(plan.items), report)
    for rep in report.files:
        if rep.status == "failed":
            log.error("%s", one_line(rep.input, rep.message))
        if rep.status != "planned":
            events.file_finished(rep)
    return started


def run_job(
    plan: ImagePlan,
    *,
    events: JobEvents | None = None,
    resolved: ResolvedRun | None = None,
    loaded: LoadedModel | None = None,
    reporter: Any = None,
) -> JobReport:
    """Run the image job ``plan`` (from ``plan_images``) in this process; returns the report.

    ``resolved`` is the plan's ``RunOptions`` bound to a device (resolved here when not given); ``loaded``
    a model already loaded for it. Nothing is re-planned: items are upscaled, skipped or refused as the
    plan says and written exactly where it says. Bad inputs fail one by one (``fail_fast`` stops at the
    first); a ``KeyboardInterrupt`` stops the batch after the writes in flight have finished or been
    cleaned up, and the report says so.
    """
    from srcli.engine.options import resolve_run
    from srcli.engine.upscale import with_tile
    from srcli.pipeline.model_setup import set_up_model

    events = events or JobEvents()
    options = plan.options
    report = report_for_plan(plan)
    reports = {item.input: rep for item, rep in zip(plan.items, report.files, strict=True)}
    todo = plan.to_run  # with --fail-fast, a file refused at planning stops the job before any work
    resolved = resolved or resolve_run(options.run)
    loaded, engine = set_up_model(resolved, report, needed=bool(todo), loaded=loaded, reporter=reporter)
    remove_stale_temp_files(todo)
    journal = plan.journal()

    started = announce_files(plan, report, events)
    stop = threading.Event()
    readers = ThreadPoolExecutor(max_workers=max(1, options.io_workers), thread_name_prefix="srcli-read")
    writers = ThreadPoolExecutor(max_workers=max(1, options.io_workers), thread_name_prefix="srcli-write")
    pending_writes: deque[tuple[PlannedImage, Future[None], float]] = deque()

    def finish_write(item: PlannedImage, future: Future[None], t0: float) -> None:
        rep = reports[item.input]
        try:
            future.result()
            journal.record(item.output, item.input, plan.fingerprint)
            rep.status = "done"
        except Exception as exc:
            rep.status, rep.message = "failed", error_text(exc)
            log.error("%s", one_line(rep.input, "cannot write output: " + rep.message))
            if options.fail_fast:
                stop.set()
        rep.seconds = time.perf_counter() - t0
        events.file_finished(rep)

    def drain(limit: int) -> None:
        while len(pending_writes) > limit:
            finish_write(*pending_writes.popleft())

    def reads() -> Iterator[tuple[PlannedImage, Future[DecodedImage]]]:
        ahead: deque[tuple[PlannedImage, Future[DecodedImage]]] = deque()
        queue = iter(todo)
        for item in queue:
            ahead.append((item, readers.submit(read_item, item, options.max_pixels)))
            if len(ahead) > options.io_workers:
                break
        while ahead:
            yield ahead.popleft()
            nxt = next(queue, None)
            if nxt is not None:
                ahead.append((nxt, readers.submit(read_item, nxt, options.max_pixels)))

    try:
        for item, future in reads():
            if stop.is_set():
                break
            rep = reports[item.input]
            t0 = time.perf_counter()
            try:
                decoded = future.result()
                rep.notes.extend(n for n in decoded.notes if n not in rep.notes)
                events.file_started(item)
                assert loaded is not None
                frames = upscale_frames(loaded, decoded, options.alpha, engine, resolved.device, rep, events.tiles)
                if rep.oom_retries:
                    # Later images start from the tile that worked.
                    engine = with_tile(engine, rep.tile)
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                rep.status, rep.message = "failed", error_text(exc)
                rep.seconds = time.perf_counter() - t0
                log.error("%s", one_line(rep.input, rep.message))
                events.file_finished(rep)
                if options.fail_fast:
                    break
                continue
            pending_writes.append((item, writers.submit(write_item, item, decoded, frames, options), t0))
            drain(options.io_workers)
        drain(0)
    except KeyboardInterrupt as exc:
        report.interrupt(exc)
        stop.set()
        # Let writes already running finish (or clean up their temporary file); drop the queued ones.
        readers.shutdown(wait=True, cancel_futures=True)
        for item, future, t0 in pending_writes:
            if future.cancel():
                rep = reports[item.input]
                rep.status, rep.message = "failed", "interrupted before writing"
            else:
                finish_write(item, future, t0)
        pending_writes.clear()
    finally:
        readers.shutdown(wait=True, cancel_futures=True)
        writers.shutdown(wait=True)
    close_report(report, started)
    return report


def upscale_frames(
    loaded: LoadedModel,
    decoded: DecodedImage,
    alpha: AlphaMode,
    engine: EngineOptions,
    device: Any,
    rep: FileReport,
    tiles: Callable[[int, int], None] | None = None,
) -> list[Frame]:
    """Super-resolve every frame of ``decoded``; the model's time, tiles and retries go into ``rep``."""
    from srcli.engine.upscale import with_tile

    frames: list[Frame] = []
    for frame in decoded.frames:
        fr = _process_frame(
            loaded,
            frame,
            grey=decoded.grey,
            alpha_mode=alpha,
            engine=engine,
            device=device,
            tiles=tiles,
            bit_depth=decoded.bit_depth,
        )
        frames.append(fr.frame)
        rep.model_seconds += fr.seconds
        rep.tiles += fr.tiles
        rep.refined_tiles += fr.refined
        rep.oom_retries += fr.oom_retries
        rep.tile = fr.tile
        if fr.oom_retries:
            engine = with_tile(engine, fr.tile)
    rep.out_height, rep.out_width = frames[0].rgb.shape[:2]
    return frames


def default_workers() -> int:
    """I/O threads: enough to hide decoding and encoding, few enough to leave cores to the model."""
    return max(1, min(4, (os.cpu_count() or 2) // 2))
