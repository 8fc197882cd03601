"""``--devices`` for video: the segments of a video are the unit of work, one worker process per device.

The one-device job (``run_video_job``) cuts its output into segments as it encodes: a segment starts at
the first frame at least ``segment_seconds`` after the previous segment's first frame. That rule depends on
the frames' timestamps only, which the main process knows before any decoding (``VideoFile.scan``'s packet
list, from the first picture on). So it cuts the video into the same segments up front
(``segment_starts``), and each becomes a ``SegmentTask``: its frame range (first index, first pts, the next
segment's first pts), its file name (``seg_NNNNN``) and the settings the one-device run would use.

A worker (one per device, ``spawn``; it loads the model once and keeps it) seeks to a segment's start by
timestamp, decodes exactly that segment's frames, runs them through the model and encodes them with the
same ``SegmentWriter`` into the same work folder (``video_writers.work_dir``) under the same name. The main
process records each complete segment in the same manifest (in timestamp order, so that ``--resume`` - on
one device or several - keeps the contiguous ones), then joins them, muxes the audio and checks the output
with the one-device code (``_finish_video``). With the same frames and encoder settings the segment files
are those of a one-device run, byte for byte (the tests check it).

Faults (as ``device_pool``): a worker that dies costs only the segment it held. If its model had started
(the worker says so before it starts) the segment is run again, counted in ``retries``; its temporary file
is removed (a file under its final name is always complete). A segment whose worker dies ``MAX_ATTEMPTS``
times fails its video. A dead worker is started again (at most ``MAX_RESTARTS`` times per device).

A damaged frame is shown as the previous frame (``--on-bad-frame skip``): for a segment after the first,
the worker also decodes and upscales the frame before the segment (``SegmentTask.prime``) to stand in for
a damaged first frame, and writes it nowhere. ``--frames`` (a folder of frames) is not split across devices.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from srcli.atomic import stale_temp_files
from srcli.errors import UsageError
from srcli.pipeline.messages import error_text
from srcli.pipeline.video import (
    PlannedVideo,
    VideoPlan,
    _finish_video,
    _open_source,
    _settings_key,
    describe_source,
    encode_settings,
    frames_per_pass,
    report_for_video_plan,
    run_each_video,
)
from srcli.pipeline.video_report import StageStats, VideoEvents, VideoFileReport, VideoJobReport, VideoOptions
from srcli.pipeline.video_sources import FrameFolder, Item, Source, VideoFile
from srcli.pipeline.video_stream import ModelStage, run_stages
from srcli.pipeline.video_writers import Manifest, SegmentWriter, open_work_dir
from srcli.pipeline.worker_pool import (
    MAX_ATTEMPTS,
    PoolReportFields,
    ProcessPool,
    Retries,
    StatsRecord,
    WorkerChannel,
    close_report,
    describe_workers,
    exit_cause,
    may_restart,
    serve,
)

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from srcli.engine.options import RunOptions
    from srcli.engine.upscale import EngineOptions
    from srcli.hub.loading import LoadedModel

log = logging.getLogger("srcli.upscale")

__all__ = [
    "SegmentHook",
    "SegmentTask",
    "VideoPoolReport",
    "VideoWorkerStats",
    "count_result",
    "run_video_job_on_devices",
    "segment_starts",
]


# ---------------------------------------------------------------------------------------------
# The segments


@dataclass(frozen=True)
class SegmentTask:
    """One segment of one video: the frames it holds, where it goes, and what the worker needs to make it."""

    #: Position of the video in ``plan.items``, and of the segment in the video (its file is ``seg_NNNNN``).
    video: int
    number: int
    item: PlannedVideo
    #: Index (in the output) and pts of the segment's first frame; pts of the next segment's (``None``: the last).
    first_index: int
    first_pts: int
    next_pts: int | None
    #: (index, pts) of the frame before the segment: decoded to stand in for a damaged first frame (``None``: none).
    prime: tuple[int, int] | None
    #: The source's time base and the pts of the packets from ``prime`` (or the first frame) to the segment's end.
    time_base: Fraction
    expected: tuple[int, ...]
    #: The first frame's pts of the whole video (the encoder's timeline starts there) and the segment length.
    origin: int
    segment_ticks: int
    out_bits: int
    work: Path

    @property
    def key(self) -> tuple[int, int]:
        """What identifies the task in messages."""
        return (self.video, self.number)

    @property
    def name(self) -> str:
        """The segment's file name without its extension (``seg_00003``)."""
        return f"seg_{self.number:05d}"


#: Called in the worker just before the model starts on a segment (tests use it to kill a worker there).
SegmentHook = Callable[[SegmentTask], None]


def segment_starts(pts: Sequence[int], ticks: int) -> list[int]:
    """Positions in ``pts`` (the frames in output order) where a segment starts, as ``SegmentWriter`` cuts them.

    A segment starts at the first frame and then at each frame at least ``ticks`` after its segment's first frame.
    """
    starts: list[int] = []
    first: int | None = None
    for i, p in enumerate(pts):
        if first is None or p - first >= ticks:
            starts.append(i)
            first = p
    return starts


# ---------------------------------------------------------------------------------------------
# The worker side


class _SegmentManifest(Manifest):
    """The manifest a worker's ``SegmentWriter`` sees: the segments before its own (for the name), never saved.

    The main process alone writes the real manifest.
    """

    def __init__(self, task: SegmentTask) -> None:
        super().__init__(task.work / ".unused", {}, "", task.origin, [{} for _ in range(task.number)])
        self.time_base = f"{task.time_base.numerator}/{task.time_base.denominator}"

    def save(self) -> None:
        """Nothing: the main process records the segment once its result arrives."""


class _OneSegmentWriter(SegmentWriter):
    """``SegmentWriter`` for one segment: a frame before ``first_index`` only stands in for a damaged first frame."""

    def __init__(self, task: SegmentTask, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.first_index = task.first_index

    def add(self, item: Item) -> None:
        """Encode ``item``; the primer frame (before the segment) is kept as the previous frame, not written."""
        if item.index < self.first_index:
            if item.rgb is not None:
                self.last = item.rgb
            return
        super().add(item)


class _Range(Source):
    """The frames of ``inner`` before ``stop_pts`` (all of them for ``None``)."""

    def __init__(self, inner: Source, stop_pts: int | None) -> None:
        self.inner, self.stop_pts = inner, stop_pts

    def items(self, start_index: int, start_pts: int | None, report: VideoFileReport, mode: Any) -> Iterator[Item]:
        """``inner``'s items from ``start_index`` / ``start_pts`` until the first at ``stop_pts`` or after."""
        it = self.inner.items(start_index, start_pts, report, mode)
        try:
            for item in it:
                if self.stop_pts is not None and item.pts >= self.stop_pts:
                    return
                yield item
        finally:
            it.close()

    def close(self) -> None:
        """Stop reading ``inner``."""
        self.inner.close()


def _task_source(task: SegmentTask, options: VideoOptions) -> Source:
    """The source of ``task``'s video, with the timing the main process's scan found (no second scan)."""
    item = task.item
    if item.kind == "frames":
        return FrameFolder(item.input, options.fps, options.max_pixels)
    source = VideoFile(item.input, options.max_pixels)
    source.time_base = task.time_base
    source.expected = list(task.expected)
    return source


class _SegmentRunner:
    """One device's model, loaded once, and the making of one segment."""

    def __init__(self, options: VideoOptions, run: RunOptions) -> None:
        """Resolve ``run`` (device, threads, precision) and load and prepare its model."""
        from srcli.engine.host_memory import keep_freed_memory
        from srcli.engine.options import resolve_run
        from srcli.pipeline.model_setup import set_up_model

        self.options = options
        self.resolved = resolve_run(run)
        if self.resolved.device.type == "cpu":
            keep_freed_memory()
        assert run.scale is not None
        scratch = VideoJobReport(run.model, run.scale, run.outscale, "", "")
        loaded, engine = set_up_model(
            self.resolved, scratch, needed=True, default_batch=lambda d: frames_per_pass(options, d)
        )
        assert loaded is not None
        self.loaded: LoadedModel = loaded
        self.engine: EngineOptions = engine
        self.description, self.precision, self.compiled = scratch.device, scratch.precision, scratch.compiled

    def run(self, task: SegmentTask) -> dict[str, Any]:
        """Decode, upscale and encode ``task``'s frames into its segment file; what the main process records."""
        options = self.options
        rep = VideoFileReport(input=str(task.item.input), output=None, status="planned")
        source = _task_source(task, options)
        model = ModelStage(self.loaded, self.engine, self.resolved.device, source.bits)
        model.out_bits = task.out_bits
        used: dict[str, Any] = {}

        def make_settings(width: int, height: int) -> Any:
            used["settings"] = encode_settings(task.item, source, options, width, height)
            return used["settings"]

        manifest = _SegmentManifest(task)
        writer = _OneSegmentWriter(
            task, task.work, manifest, make_settings, task.time_base, task.segment_ticks, task.out_bits, None
        )
        start_index, start_pts = task.prime or (task.first_index, task.first_pts)
        if task.number == 0:
            start_pts = None  # the whole video's start, exactly as a one-device run decodes it
        stats = {"decode": StageStats(), "model": StageStats(), "encode": StageStats()}
        per_pass = frames_per_pass(options, self.resolved.device)
        run_stages(
            _Range(source, task.next_pts),
            writer,
            model,
            rep,
            stats,
            VideoEvents(),
            options,
            start_index,
            start_pts,
            per_pass,
            False,
        )
        segment = manifest.segments[-1]
        segment["next_pts"] = task.next_pts
        if segment["first_pts"] != task.first_pts or segment["first_index"] != task.first_index:
            raise RuntimeError(
                f"segment {task.number} starts at frame {segment['first_index']} (pts {segment['first_pts']}), "
                f"not at frame {task.first_index} (pts {task.first_pts}) as planned"
            )
        return {
            "segment": segment,
            "out_width": rep.out_width,
            "out_height": rep.out_height,
            "colour": asdict(used["settings"].color) if "settings" in used else {},
            "bad_frames": [b for b in rep.bad_frames if b["index"] >= task.first_index],
            "decoder_errors": rep.decoder_errors,
            "stages": {k: (v.frames, v.seconds) for k, v in stats.items()},
        }


def _worker_main(conn: Connection, options: VideoOptions, run: RunOptions, hook: SegmentHook | None) -> None:
    """A worker process: load the model, then make each segment it is sent, one at a time.

    Messages to the main process (``serve``): ``("ready", description, precision, compiled)`` or
    ``("start_failed", error)``, then per segment ``("started", key)`` (before its model starts) and
    ``("result", key, fields)`` or ``("failed", key, message)``.
    """
    serve(conn, lambda: _SegmentRunner(options, run), lambda channel, runner: _make_segments(channel, runner, hook))


def _make_segments(channel: WorkerChannel, runner: _SegmentRunner, hook: SegmentHook | None) -> None:
    """Make each ``("segment", task)`` received, until ``stop``.

    SIGTERM abandons the segment in progress (``run_stages`` removes its partial file) and ends the worker.
    """
    while (message := channel.receive()) is not None:
        task: SegmentTask = message[1]
        channel.send(("started", task.key))
        try:
            if hook is not None:
                hook(task)
            result = runner.run(task)
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            channel.send(("failed", task.key, error_text(exc)))
            continue
        channel.send(("result", task.key, result))


# ---------------------------------------------------------------------------------------------
# The report


@dataclass
class VideoWorkerStats(StatsRecord):
    """What one device's worker did (restarts included)."""

    slot: int
    device: str
    description: str = ""
    segments: int = 0
    frames: int = 0
    failed: int = 0
    model_seconds: float = 0.0
    restarts: int = 0


@dataclass
class VideoPoolReport(PoolReportFields[VideoWorkerStats], VideoJobReport):
    """``VideoJobReport`` for a video job run by several workers: who did what, and how many segments ran again."""

    @classmethod
    def for_plan(cls, plan: VideoPlan, executor: str) -> VideoPoolReport:
        """The report of ``plan`` as ``report_for_video_plan`` makes it, for ``executor``."""
        return cls.from_report(report_for_video_plan(plan), executor)


# ---------------------------------------------------------------------------------------------
# The main process


#: The job's worker processes (``worker_pool.ProcessPool``) with per-device video stats.
_SegmentPool = ProcessPool[VideoWorkerStats]


def _segment_pool(plan: VideoPlan, devices: Sequence[str], hook: SegmentHook | None) -> _SegmentPool:
    """The job's worker processes, each running this module's ``_worker_main``."""
    return ProcessPool(plan.options, devices, _worker_main, (hook,), "srcli-video-worker", VideoWorkerStats)


class _VideoFailed(Exception):
    """A segment failed; the video fails with this message."""


@dataclass
class _Prepared:
    """A video ready to be cut: its source (scanned), stream choices, work folder, manifest and segment tasks."""

    source: Source
    choices: list[Any]
    work: Path
    manifest: Manifest
    tasks: list[SegmentTask]
    #: Segments already complete (``--resume``), by number.
    done: dict[int, dict[str, Any]]


def _prepare(plan: VideoPlan, video: int, item: PlannedVideo, rep: VideoFileReport) -> _Prepared:
    """Scan ``item``'s source, open its work folder (resumed or fresh) and cut it into segment tasks."""
    options = plan.options
    source = _open_source(item, rep, options)
    out_bits, choices = describe_source(item, rep, source, options)
    assert source.expected is not None
    tb = source.time_base
    first = source.first_picture_pts() if isinstance(source, VideoFile) else source.expected[0]
    if first is None:
        raise _VideoFailed(f"{item.input}: no frame could be decoded")
    pts = [p for p in source.expected if p >= first]
    ticks = max(1, round(Fraction(options.segment_seconds) / tb))
    starts = segment_starts(pts, ticks)
    work, manifest = open_work_dir(item.output, _settings_key(plan, item), options.resume)
    tasks = []
    for number, lo in enumerate(starts):
        hi = starts[number + 1] if number + 1 < len(starts) else len(pts)
        prime = (lo - 1, pts[lo - 1]) if lo > 0 and options.on_bad_frame == "skip" else None
        tasks.append(
            SegmentTask(
                video=video,
                number=number,
                item=item,
                first_index=lo,
                first_pts=pts[lo],
                next_pts=pts[hi] if hi < len(pts) else None,
                prime=prime,
                time_base=tb,
                expected=tuple(pts[lo - 1 if prime else lo : hi]),
                origin=pts[0],
                segment_ticks=ticks,
                out_bits=out_bits,
                work=work,
            )
        )
    done: dict[int, dict[str, Any]] = {}
    for number, (seg, task) in enumerate(zip(manifest.segments, tasks, strict=False)):
        if seg.get("first_pts") != task.first_pts or seg.get("next_pts") != task.next_pts:
            break
        done[number] = seg
    if manifest.segments and len(done) < len(manifest.segments):
        log.warning(
            "%s: %d segment(s) of the interrupted run do not fit; made again",
            item.output,
            len(manifest.segments) - len(done),
        )
    manifest.segments = [done[n] for n in sorted(done)]
    manifest.origin = pts[0]
    manifest.time_base = f"{tb.numerator}/{tb.denominator}"
    manifest.save()
    if done:
        rep.resumed_segments = len(done)
        rep.resumed_frames = manifest.frames
        log.info("%s: resuming with %d complete segment(s)", item.output, len(done))
    return _Prepared(source, choices, work, manifest, tasks, done)


def _remove_partial(task: SegmentTask) -> None:
    """Remove the temporary file a dead worker may have left for ``task``'s segment."""
    for stale in stale_temp_files(task.work):
        if stale.name.startswith(f".{task.name}."):
            stale.unlink(missing_ok=True)


def run_video_job_on_devices(
    plan: VideoPlan,
    devices: Sequence[str],
    *,
    events: VideoEvents | None = None,
    item_hook: SegmentHook | None = None,
) -> VideoPoolReport:
    """Run the video job ``plan`` on ``devices`` (``parse_devices``), one worker process each; the report.

    The same files come out as from ``run_video_job`` (see the module docstring for how the segments are cut,
    made and joined, and the faults a job survives). ``events`` is driven from this process: ``frames_done``
    and ``segment_done`` as segments complete. ``item_hook``, a picklable callable, runs in a worker just before
    the model starts on each segment (for tests). Videos run one after another; the segments of each run on
    every worker at once. Raises the workers' error when none could load the model.
    """
    devices = list(devices)
    if not devices:
        raise UsageError("--devices: no device given")
    if plan.options.frames:
        raise UsageError("--devices runs a video's segments on several devices; --frames runs on one device (--device)")
    events = events or VideoEvents()
    report = VideoPoolReport.for_plan(plan, "devices")
    todo = plan.numbered_to_run
    pool: _SegmentPool | None = None
    started = time.perf_counter()
    if todo:
        pool = _segment_pool(plan, devices, item_hook)
        report.workers = pool.stats
    try:
        if pool is not None:
            _start_workers(pool, report)
        started = time.perf_counter()

        def run_one(video: int, item: PlannedVideo, rep: VideoFileReport) -> None:
            assert pool is not None
            _run_video(pool, plan, video, item, rep, report, events)

        run_each_video(plan, report, todo, events, run_one)
    finally:
        if pool is not None:
            _stop_workers(pool)
    close_report(report, started)
    return report


def _start_workers(pool: _SegmentPool, report: VideoPoolReport) -> None:
    """Start every worker and wait until each has loaded its model or failed; raise if none could."""
    errors: list[BaseException] = []
    precisions: list[str] = []
    for slot in range(len(pool.runs)):
        pool.start(slot)
    while any(not w.ready for w in pool.live()):
        pool.wait()
        for w in pool.live():
            alive = w.process.is_alive()
            for message in pool.receive(w):
                if message[0] == "ready":
                    w.ready = True
                    pool.stats[w.slot].description = message[1]
                    precisions.append(message[2])
                    report.compiled = report.compiled or bool(message[3])
                elif message[0] == "start_failed":
                    w.start_error = message[1]
                    errors.append(message[1])
                    log.warning("the worker on %s could not start: %s", w.device, error_text(message[1]))
            if not alive:  # everything it sent has been read above
                if not w.ready and w.start_error is None:
                    errors.append(RuntimeError(f"the worker on {w.device} {exit_cause(w.process.exitcode)}"))
                pool.forget(w)
    for w in pool.live():
        if not w.ready:
            pool.forget(w)
    if not pool.workers:
        raise errors[0] if errors else RuntimeError("no worker could start")
    report.device = describe_workers(pool.stats[w.slot].description for w in pool.live())
    report.precision = ", ".join(dict.fromkeys(p for p in precisions if p))


def _stop_workers(pool: _SegmentPool) -> None:
    """Ask every worker to stop, then wait for it (SIGTERM and SIGKILL for one that does not)."""
    for w in pool.live():
        if w.ready and not w.assigned:
            pool.send(w, ("stop",))
        else:
            with contextlib.suppress(OSError, ValueError):
                w.process.terminate()
    for w in pool.live():
        w.process.join(timeout=30)
    pool.kill_all()


def _run_video(
    pool: _SegmentPool,
    plan: VideoPlan,
    video: int,
    item: PlannedVideo,
    rep: VideoFileReport,
    report: VideoPoolReport,
    events: VideoEvents,
) -> None:
    """Make ``item``'s segments on the pool's workers, then join, mux and check them as a one-device run does."""
    prepared = _prepare(plan, video, item, rep)
    manifest, tasks = prepared.manifest, prepared.tasks
    queue: deque[SegmentTask] = deque(t for t in tasks if t.number not in prepared.done)
    retries = Retries(report, (t.number for t in tasks))
    complete: dict[int, dict[str, Any]] = dict(prepared.done)
    stages = {"decode": StageStats(), "model": StageStats(), "encode": StageStats()}
    rep.stages = stages
    results: list[dict[str, Any]] = []
    frames_done = manifest.frames
    events.file_started(rep, rep.source_frames, frames_done)
    failure: list[str] = []

    def record(w: Any, task: SegmentTask, result: dict[str, Any]) -> None:
        nonlocal frames_done
        complete[task.number] = result["segment"]
        manifest.segments = [complete[n] for n in sorted(complete)]
        manifest.save()
        results.append(result)
        frames_done += count_result(result, stages, pool.stats[w.slot])
        events.frames_done(frames_done)
        events.segment_done(rep, len(complete))

    def handle(w: Any, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "started":
            w.assigned[message[1]] = True
            return
        by_key = {t.key: t for t in tasks}
        task = by_key[message[1]]
        w.assigned.pop(task.key, None)
        if kind == "result":
            record(w, task, message[2])
        elif kind == "failed":
            pool.stats[w.slot].failed += 1
            failure.append(f"segment {task.number}: {message[2]}")
            queue.clear()

    def ended(w: Any) -> None:
        for message in pool.receive(w):
            handle(w, message)
        pool.forget(w)
        stats = pool.stats[w.slot]
        cause = exit_cause(w.process.exitcode)
        by_key = {t.key: t for t in tasks}
        held = [by_key[k] for k in w.assigned if k in by_key]
        if held:
            log.warning("the worker on %s %s; its segment goes back in the queue", w.device, cause)
        for task in held:
            _remove_partial(task)
            if w.assigned[task.key] and not retries.died(task.number):
                failure.append(
                    f"segment {task.number}: the worker died each of the {MAX_ATTEMPTS} times it ran it "
                    f"(last: on {w.device}, {cause})"
                )
                queue.clear()
                continue
            if not failure:
                queue.appendleft(task)
        if (queue or any(x.assigned for x in pool.live())) and may_restart(stats):
            pool.start(w.slot)

    try:
        while queue or any(w.assigned for w in pool.live()):
            for w in pool.live():
                if w.ready and not w.assigned and queue:
                    task = queue.popleft()
                    if pool.send(w, ("segment", task)):
                        w.assigned[task.key] = False
                    else:
                        queue.appendleft(task)
            if not pool.workers:
                failure.append("no worker left to run it")
                break
            for ready in pool.wait():
                for w in pool.live():
                    if ready is w.conn:
                        for message in pool.receive(w):
                            if message[0] == "ready":
                                w.ready = True
                                pool.stats[w.slot].description = message[1]
                            elif message[0] == "start_failed":
                                w.start_error = message[1]
                            else:
                                handle(w, message)
            for w in pool.live():
                if not w.process.is_alive():
                    ended(w)
    except KeyboardInterrupt:
        pool.terminate_all()
        for w in pool.live():
            w.process.join(timeout=30)
            for message in pool.receive(w):
                if message[0] == "result":
                    handle(w, message)
            for key in w.assigned:
                _remove_partial(next(t for t in tasks if t.key == key))
            w.assigned.clear()
        raise
    if failure:
        raise _VideoFailed("; ".join(failure))
    _join(prepared, item, rep, results, plan.options)


def count_result(result: dict[str, Any], stages: dict[str, StageStats], stats: VideoWorkerStats) -> int:
    """Add a segment's result (``_SegmentRunner.run``) to the video's stage timings and its worker's work.

    Returns the segment's frame count.
    """
    frames = int(result["segment"]["frames"])
    for name, (done, seconds) in result["stages"].items():
        stages[name].frames += done
        stages[name].seconds += seconds
    stats.segments += 1
    stats.frames += frames
    stats.model_seconds += result["stages"]["model"][1]
    return frames


def _join(
    prepared: _Prepared, item: PlannedVideo, rep: VideoFileReport, results: list[dict[str, Any]], options: VideoOptions
) -> None:
    """Gather the workers' findings into ``rep`` and join the segments as ``run_video_job`` does."""
    manifest = prepared.manifest
    rep.segments = len(manifest.segments)
    rep.frames = manifest.frames
    for result in results:
        if rep.out_width is None and result["out_width"]:
            rep.out_height, rep.out_width = result["out_height"], result["out_width"]
        if not rep.colour and result["colour"]:
            rep.colour = result["colour"]
        rep.bad_frames.extend(result["bad_frames"])
        rep.decoder_errors += result["decoder_errors"]
    rep.bad_frames.sort(key=lambda b: b["index"])
    rep.model_seconds = rep.stages["model"].seconds
    if not rep.colour and rep.out_width and rep.out_height:
        rep.colour = asdict(encode_settings(item, prepared.source, options, rep.out_width, rep.out_height).color)
    _finish_video(item, rep, prepared.source, manifest, prepared.work, prepared.choices, options)
