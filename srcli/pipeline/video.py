"""The video job behind ``srcli upscale clip.mp4 -o out.mp4``: plan once, then decode -> model -> encode, streamed.

``plan_video_job`` takes every decision before anything loads and returns an immutable ``VideoPlan``:
per input its final output path, what the input is (a video file or a folder of frames), whether it
is upscaled, skipped or refused and why, whether an existing output is replaced, what the probe
says (size, frames, duration, frame rate), the encoder, pixel format and CRF, and notes. It checks
the options, refuses collisions and outputs that are inputs (``OutputClaims``), existing files this
job did not write (``decide_existing`` and the output folder's journal), and that the output folders
can be written. ``--dry-run`` prints it; ``run_video_job`` executes it and never plans again.

The parts live beside this module:

- ``video_report``: the options, the report and the progress callbacks (re-exported here);
- ``video_sources``: the frames of a video file (PyAV) or of a folder of images;
- ``video_stream``: the three stages (decoder thread, model, encoder thread) joined by bounded
  queues, so that no frame is written to disk in between;
- ``video_writers``: segment files and their manifest, or a folder of frames.

The encoder writes segments of ``segment_seconds`` into a hidden work folder beside the output,
recorded in a manifest as each one completes; ``resume`` starts after the last complete segment.
When all frames are in, the segments are joined (video copied) with the source's audio,
subtitles and chapters, the result is checked against the source (frame count, durations against
the declared ones, streams) and only then given the output name (``commit_file``) and recorded in
the journal. ``--frames`` writes the frame set into the work folder and swaps it in when complete.

Damaged frames (a packet the decoder could not turn into a picture) are found by comparing the
decoded timestamps with the source's packets, and a source cut short by comparing its packets with
what its container declares; ``on_bad_frame`` either stops the job or shows the previous frame in
a damaged frame's place and holds the last frame to the declared end.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from srcli.atomic import commit_file, stale_temp_files, temp_name
from srcli.engine.options import check_run
from srcli.errors import UsageError
from srcli.io.images import IMAGE_SUFFIXES
from srcli.io.video import (
    CODEC_ALIASES,
    CONTAINERS,
    ColorTags,
    EncodeSettings,
    LastFrame,
    MediaInfo,
    StreamChoice,
    VideoError,
    check_codec_for_container,
    default_crf,
    encoder_pixel_formats,
    mux,
    output_colour,
    pixel_format_bits,
    plan_streams,
    probe,
    summarize,
    write_concat_list,
)
from srcli.pipeline.inputs import check_template, output_name
from srcli.pipeline.job import JobPlan
from srcli.pipeline.messages import error_text, one_line
from srcli.pipeline.outputs import (
    Action,
    Decision,
    OutputClaims,
    OutputJournal,
    decide_existing,
    job_fingerprint,
)
from srcli.pipeline.video_report import (
    BAD_FRAME_MODES,
    BadFrameMode,
    StageStats,
    VideoEvents,
    VideoFileReport,
    VideoJobReport,
    VideoOptions,
)
from srcli.pipeline.video_sources import (
    TIMESTAMPS_FILE,
    FrameFolder,
    Source,
    VideoFile,
    fps_conflict,
    frame_files,
    parse_fps,
    read_timestamps,
)
from srcli.pipeline.video_stream import ModelStage, run_stages
from srcli.pipeline.video_writers import (
    FrameWriter,
    Interrupted,
    Manifest,
    SegmentWriter,
    commit_frames_folder,
    drop_empty_work_dir,
    frame_set_files,
    open_work_dir,
    other_files,
    write_timestamps,
)
from srcli.pipeline.worker_pool import close_report

if TYPE_CHECKING:
    from srcli.engine.options import ResolvedRun
    from srcli.engine.upscale import EngineOptions
    from srcli.hub.loading import LoadedModel

__all__ = [
    "TIMESTAMPS_FILE",
    "BadFrameMode",
    "PlannedVideo",
    "StageStats",
    "VideoEvents",
    "VideoFileReport",
    "VideoJobReport",
    "VideoOptions",
    "VideoPlan",
    "VideoRunner",
    "frame_files",
    "parse_fps",
    "plan_video_job",
    "report_for_video_plan",
    "run_each_video",
    "run_video_job",
]

log = logging.getLogger("srcli.upscale")

#: Image formats ``--frames`` writes (``--format`` picks one; PNG by default).
FRAME_FORMATS = ("png", "tif", "tiff", "jpg", "jpeg", "webp", "bmp")


# ------------------------------------------------------------------------------------------------ the plan


@dataclass(frozen=True)
class PlannedVideo:
    """One input and everything decided about it before any work."""

    input: Path
    #: What the input is: a video file (or GIF), or a folder of frames.
    kind: Literal["video", "frames"]
    #: The final output: a video file, or (``--frames``) a folder of frames.
    output: Path
    action: Action
    reason: str = ""
    #: The output exists and will be replaced (this job's own earlier result, or ``--overwrite``).
    replaces: bool = False
    notes: tuple[str, ...] = ()
    width: int | None = None
    height: int | None = None
    #: Frames: declared by the container (video files; ``None`` when not declared) or counted (folders).
    frames: int | None = None
    #: Seconds: the video stream's declared duration, or the folder's timestamps / ``--fps``.
    duration: float | None = None
    frame_rate: Fraction | None = None
    out_width: int | None = None
    out_height: int | None = None
    #: Output container extension (``None`` for ``--frames``), encoder, pixel format and CRF.
    container: str | None = None
    encoder: str | None = None
    pix_fmt: str | None = None
    crf: float | None = None


@dataclass(frozen=True)
class VideoPlan(JobPlan[VideoOptions, PlannedVideo]):
    """The whole video job, resolved: options (checked), the model, every input, notices."""


def frames_per_pass(options: VideoOptions, device: Any) -> int:
    """Frames per forward pass: ``--batch``, else 4 on CUDA (batching pays there) and 1 elsewhere."""
    return options.run.batch or (4 if device.type == "cuda" else 1)


def _container_of(path: Path) -> str:
    ext = path.suffix.lower().lstrip(".")
    if ext not in CONTAINERS:
        raise UsageError(
            f"{path.name}: video output must be one of {', '.join('.' + c for c in CONTAINERS)} "
            "(or --frames for a folder of frames)"
        )
    return ext


def _encoder_name(options: VideoOptions, container: str) -> str:
    if options.codec:
        return CODEC_ALIASES.get(options.codec.lower(), options.codec)
    return CONTAINERS[container][1]


def _choose_pix_fmt(encoder: str, requested: str | None, source_fmt: str | None, bits: int) -> str:
    supported = encoder_pixel_formats(encoder)
    if requested:
        if supported and requested not in supported:
            raise UsageError(f"--pix-fmt {requested}: {encoder} takes {', '.join(supported)}")
        return requested
    candidates = []
    if source_fmt and source_fmt.startswith("yuv") and not source_fmt.startswith("yuvj"):
        candidates.append(source_fmt)
    if bits > 8:
        candidates.append("yuv420p10le")
    candidates.append("yuv420p")
    for c in candidates:
        if not supported or c in supported:
            return c
    return supported[0]


def _check_job_options(options: VideoOptions) -> None:
    """Refuse, in one line each, the options no input could run with."""
    check_template(options.name)
    if not options.segment_seconds > 0:
        raise UsageError(f"--segment-seconds must be positive, not {options.segment_seconds:g}")
    if options.on_bad_frame not in BAD_FRAME_MODES:
        raise UsageError(f"--on-bad-frame must be skip or stop, not '{options.on_bad_frame}'")
    if options.crf is not None and options.crf < 0:
        raise UsageError(f"--crf must be >= 0, not {options.crf:g}")
    if options.max_pixels is not None and options.max_pixels <= 0:
        raise UsageError(f"--max-pixels must be positive (0 on the command line: no limit), not {options.max_pixels}")
    if options.io_workers < 1:
        raise UsageError(f"--io-workers must be >= 1, not {options.io_workers}")
    if options.queue_frames < 1:
        raise UsageError(f"queue_frames must be >= 1, not {options.queue_frames}")
    if options.fps is not None and options.fps <= 0:
        raise UsageError(f"--fps must be positive, not {options.fps}")
    if options.frames:
        if options.frame_format.lower().lstrip(".") not in FRAME_FORMATS:
            raise UsageError(f"--format '{options.frame_format}' for --frames: use one of {', '.join(FRAME_FORMATS)}")
    elif options.format is not None and options.format.lower().lstrip(".") not in CONTAINERS:
        raise UsageError(f"--format '{options.format}' for video: use one of {', '.join(CONTAINERS)}")


def _fingerprint(options: VideoOptions) -> str:
    run = options.run
    return job_fingerprint(
        {
            "job": "frames" if options.frames else "video",
            "model": run.model,
            "scale": run.scale,
            "outscale": run.outscale,
            "weights": str(Path(run.weights).resolve()) if run.weights else None,
            "self_ensemble": run.self_ensemble,
            "codec": options.codec,
            "crf": options.crf,
            "preset": options.preset,
            "pix_fmt": options.pix_fmt,
            "no_audio": options.no_audio,
            "frame_format": options.frame_format if options.frames else None,
            "fps": str(options.fps) if options.fps else None,
        }
    )


def _destination(src: Path, kind: str, options: VideoOptions, single: bool) -> Path:
    out = options.output
    if options.frames:
        return out if single else out / src.stem
    if single and out.suffix:
        return out
    ext = (options.format or "").lower().lstrip(".")
    if not ext:
        own = src.suffix.lower().lstrip(".")
        ext = own if kind == "video" and own in CONTAINERS else "mp4"
    run = options.run
    assert run.scale is not None
    return out / output_name(options.name, src, model=run.model, scale=run.outscale or run.scale, ext=ext)


def _decide_frames_folder(
    dest: Path, src: Path, options: VideoOptions, journal: OutputJournal, fingerprint: str
) -> Decision:
    """``--frames`` into ``dest``: a new or empty folder is written; one that holds a frame set is refused unless
    it is this job's own earlier result or ``--overwrite`` (then replaced whole, once the new set is complete),
    or left with ``--skip-existing``; one that holds anything else is refused."""
    if dest.exists() and not dest.is_dir():
        return Decision("refuse", f"refused: {dest} is a file, and --frames writes a folder")
    others = other_files(dest)
    if others:
        shown = ", ".join(p.name for p in others[:3]) + (" ..." if len(others) > 3 else "")
        return Decision(
            "refuse",
            f"refused: {dest} holds files that are not frames ({shown}); --frames writes into a new or empty "
            "folder, or replaces an earlier frame set",
        )
    existing = frame_set_files(dest)
    if not existing:
        return Decision("upscale")
    if options.skip_existing:
        return Decision("skip", "the folder already holds frames (--skip-existing)")
    count = sum(1 for p in existing if p.name != TIMESTAMPS_FILE)
    if journal.owns(dest / TIMESTAMPS_FILE, src, fingerprint) or options.overwrite:
        return Decision("upscale", replaces=True)
    return Decision(
        "refuse",
        f"refused: {dest} already holds {count} frames not written by this job from this input with these "
        "settings; --overwrite replaces them (once the new set is complete), --skip-existing leaves them",
    )


def _probe_folder(src: Path, options: VideoOptions) -> dict[str, Any]:
    """What a folder of frames says about itself: frame count, size, duration and rate (``VideoError`` if bad)."""
    from srcli.errors import ImageReadError
    from srcli.io.imagefile import probe_image

    files = frame_files(src)
    if not files:
        raise VideoError(f"{src}: no image files in the folder")
    stamps_file = src / TIMESTAMPS_FILE
    facts: dict[str, Any] = {"frames": len(files)}
    if stamps_file.is_file():
        stamps, end = read_timestamps(stamps_file)
        if len(stamps) != len(files):
            raise VideoError(
                f"{stamps_file}: {len(stamps)} timestamps for {len(files)} frames; fix it, or remove it and pass --fps"
            )
        if len(stamps) > 1:
            last = end if end is not None else stamps[-1] + (stamps[-1] - stamps[-2])
            facts["duration"] = float(last - stamps[0])
            span = stamps[-1] - stamps[0]
            facts["frame_rate"] = (len(stamps) - 1) / span if span else None
    else:
        assert options.fps is not None
        facts["duration"] = float(len(files) / options.fps)
        facts["frame_rate"] = options.fps
    try:
        facts["width"], facts["height"], _ = probe_image(files[0], max_pixels=options.max_pixels)
    except ImageReadError as exc:
        raise VideoError(str(exc)) from None
    return facts


def _probe_video(src: Path, options: VideoOptions) -> tuple[MediaInfo, dict[str, Any]]:
    """What a video file's headers say (``VideoError`` naming the file when it cannot be upscaled)."""
    info = probe(src)
    video = info.video
    if video is None:
        kinds = sorted({s.kind for s in info.streams}) or ["no streams"]
        raise VideoError(f"{src}: no video stream ({', '.join(kinds)} only); nothing to upscale")
    if video.codec == "none" or not video.decodable or video.pix_fmt in (None, "none"):
        raise VideoError(f"{src}: unsupported video stream ({video.description}); this ffmpeg cannot decode it")
    if not video.width or not video.height:
        raise VideoError(f"{src}: the video stream has no picture size ({video.description})")
    if options.max_pixels is not None and video.width * video.height > options.max_pixels:
        raise VideoError(
            f"{src}: frames of {video.width} x {video.height} pixels are over the limit of "
            f"{options.max_pixels / 1e6:.1f} MP; raise it with --max-pixels"
        )
    facts = {
        "width": video.width,
        "height": video.height,
        "frames": video.declared_frames,
        "duration": video.declared_seconds,
        "frame_rate": video.fps,
    }
    return info, facts


def _plan_one(
    src: Path,
    options: VideoOptions,
    *,
    single: bool,
    claims: OutputClaims,
    journal: OutputJournal,
    fingerprint: str,
) -> PlannedVideo:
    kind: Literal["video", "frames"] = "frames" if src.is_dir() else "video"
    dest = _destination(src, kind, options, single)
    base = PlannedVideo(src, kind, dest, "upscale")
    info: MediaInfo | None = None
    try:
        if kind == "frames":
            facts = _probe_folder(src, options)
        else:
            info, facts = _probe_video(src, options)
    except VideoError as exc:
        return replace(base, action="refuse", reason=str(exc))
    factor = options.run.output_scale
    planned = replace(
        base,
        **facts,
        out_width=round(facts["width"] * factor),
        out_height=round(facts["height"] * factor),
    )
    notes: list[str] = []
    if not options.frames:
        try:
            container = _container_of(dest)
            muxer = CONTAINERS[container][0]
            encoder = _encoder_name(options, container)
            check_codec_for_container(encoder, muxer)
            video = info.video if info is not None else None
            source_fmt = video.pix_fmt if video is not None else None
            bits = 16 if pixel_format_bits(source_fmt) > 8 else 8
            if kind == "frames":
                bits = _folder_bits(src)
            pix_fmt = _choose_pix_fmt(encoder, options.pix_fmt, source_fmt, bits)
        except (UsageError, VideoError) as exc:
            if single:
                raise UsageError(str(exc)) from None
            return replace(planned, action="refuse", reason=str(exc))
        crf = options.crf if options.crf is not None else default_crf(encoder)
        if options.crf is not None and encoder == "ffv1":
            notes.append("ffv1 is lossless: --crf ignored")
            crf = None
        for c in plan_streams(info, muxer, keep_audio=not options.no_audio):
            if c.note and c.note != "--no-audio":
                notes.append(c.note)
        planned = replace(planned, container=container, encoder=encoder, pix_fmt=pix_fmt, crf=crf)
    else:
        planned = replace(planned, encoder=options.frame_format.lower().lstrip("."))
    planned = replace(planned, notes=tuple(notes))
    refusal = claims.refusal(dest, src)
    if refusal:
        return replace(planned, action="refuse", reason=refusal)
    if options.frames:
        decision = _decide_frames_folder(dest, src, options, journal, fingerprint)
    else:
        decision = decide_existing(
            dest,
            src,
            journal=journal,
            fingerprint=fingerprint,
            skip_existing=options.skip_existing,
            overwrite=options.overwrite,
        )
    return replace(planned, action=decision.action, reason=decision.reason, replaces=decision.replaces)


def _folder_bits(folder: Path) -> int:
    from srcli.io.imagefile import read_image

    files = frame_files(folder)
    return 16 if files and read_image(files[0]).bit_depth == 16 else 8


def plan_video_job(arguments: list[str], options: VideoOptions, *, create_folders: bool = True) -> VideoPlan:
    """Resolve the video job for ``arguments`` (video files, GIFs, folders of frames) once.

    Raises ``UsageError`` for what stops the whole job (a bad option, a missing input, ``--fps`` where it
    cannot apply, an unwritable output folder; for a single input also an encoder or pixel format that
    cannot be used); one bad input among several is refused in its ``PlannedVideo`` and the others go on.
    Reads only headers (and a folder's first frame). With ``create_folders`` (not for a dry run) the
    output folders are made and checked by writing to them.
    """
    checked = check_run(options.run)
    options = replace(options, run=checked.options)
    _check_job_options(options)
    paths = [Path(a).expanduser() for a in arguments]
    if not paths:
        raise UsageError("no input videos given")
    for p in paths:
        if not p.exists():
            raise UsageError(f"{p}: no such file or folder")
        if p.is_dir():
            if (p / TIMESTAMPS_FILE).is_file() and options.fps is not None:
                raise UsageError(fps_conflict(p))
            if not (p / TIMESTAMPS_FILE).is_file() and options.fps is None:
                raise UsageError(f"{p}: a folder of frames needs --fps (e.g. --fps 24 or --fps 30000/1001)")
        elif options.fps is not None:
            raise UsageError(f"{p}: --fps times a folder of frames; a video file keeps its own timestamps")
    single = len(paths) == 1
    out = options.output
    if not single and out.suffix.lower() in {f".{c}" for c in CONTAINERS} | IMAGE_SUFFIXES and not out.is_dir():
        raise UsageError(f"-o {out} names one file, but there are {len(paths)} inputs: give an output folder")
    fingerprint = _fingerprint(options)
    journal_root = out.parent if single else out
    journal = OutputJournal(journal_root)
    claims = OutputClaims(paths)
    planned = [
        _plan_one(src, options, single=single, claims=claims, journal=journal, fingerprint=fingerprint) for src in paths
    ]
    planned = claims.refuse_collisions(planned)
    plan = VideoPlan(
        options=options,
        spec=checked.spec,
        items=tuple(planned),
        notices=checked.notices,
        journal_root=journal_root,
        fingerprint=fingerprint,
    )
    plan.check_output_folders(create=create_folders)
    return plan


def report_for_video_plan(plan: VideoPlan, device: str = "", precision: str = "") -> VideoJobReport:
    """A report with one ``VideoFileReport`` per planned input: planned, skipped or failed (refused)."""
    run = plan.options.run
    assert run.scale is not None
    report = VideoJobReport(run.model, run.scale, run.outscale, device, precision)
    status = {"upscale": "planned", "skip": "skipped", "refuse": "failed"}
    for item in plan.items:
        rate = item.frame_rate
        message = item.reason
        if item.action == "refuse" and message:
            message = one_line(str(item.input), message)
        report.files.append(
            VideoFileReport(
                input=str(item.input),
                output=str(item.output),
                status=status[item.action],  # type: ignore[arg-type]
                message=message,
                notes=list(item.notes),
                replaced=item.replaces,
                width=item.width,
                height=item.height,
                out_width=item.out_width if item.action == "upscale" else None,
                out_height=item.out_height if item.action == "upscale" else None,
                declared_frames=item.frames if item.kind == "video" else None,
                declared_seconds=item.duration if item.kind == "video" else None,
                source_frames=item.frames if item.kind == "frames" else None,
                frame_rate=f"{rate.numerator}/{rate.denominator}" if rate else None,
                encoder=item.encoder,
                pix_fmt=item.pix_fmt,
                crf=item.crf,
            )
        )
    return report


# ------------------------------------------------------------------------------------------------ the job


def _settings_key(plan: VideoPlan, item: PlannedVideo) -> dict[str, Any]:
    """What must not change between an interrupted run and its resumption."""
    options, run = plan.options, plan.options.run
    st = item.input.stat()
    return {
        "source": str(item.input.resolve()),
        "source_size": st.st_size,
        "source_mtime_ns": st.st_mtime_ns if item.input.is_file() else None,
        "settings": plan.fingerprint,
        "encoder": item.encoder,
        "pix_fmt": item.pix_fmt,
        "crf": item.crf,
        "precision": run.precision,
        "tile": run.tile,
        "segment_seconds": options.segment_seconds,
    }


def run_video_job(
    plan: VideoPlan,
    *,
    events: VideoEvents | None = None,
    loaded: LoadedModel | None = None,
    resolved: ResolvedRun | None = None,
    reporter: Any = None,
) -> VideoJobReport:
    """Run the video job ``plan`` (from ``plan_video_job``); returns the report.

    ``resolved`` is the plan's ``RunOptions`` bound to a device (resolved here when not given); ``loaded``
    a model already loaded for it. Nothing is re-planned: inputs are upscaled, skipped or refused as the
    plan says and written exactly where it says. A bad input fails on its own (``fail_fast`` stops at
    the first); a ``KeyboardInterrupt`` stops after cleaning up the segment in progress, and ``resume``
    continues from the complete ones.
    """
    from srcli.engine.options import resolve_run
    from srcli.pipeline.model_setup import set_up_model

    events = events or VideoEvents()
    options = plan.options
    report = report_for_video_plan(plan)
    todo = plan.to_run  # --fail-fast: an input refused at planning stops the job before any work
    resolved = resolved or resolve_run(options.run)
    loaded, engine = set_up_model(
        resolved,
        report,
        needed=bool(todo),
        loaded=loaded,
        reporter=reporter,
        default_batch=lambda d: frames_per_pass(options, d),
    )
    started = time.perf_counter()

    def run_one(video: int, item: PlannedVideo, rep: VideoFileReport) -> None:
        assert loaded is not None
        _run_one(item, rep, plan, loaded, engine, resolved, events)

    run_each_video(plan, report, plan.numbered_to_run, events, run_one)
    close_report(report, started)
    return report


#: Makes one video of a plan (its index in the plan, the planned video, its report), or raises.
VideoRunner = Callable[[int, PlannedVideo, VideoFileReport], None]


def run_each_video(
    plan: VideoPlan,
    report: VideoJobReport,
    todo: Sequence[tuple[int, PlannedVideo]],
    events: VideoEvents,
    run_one: VideoRunner,
) -> None:
    """Announce the job, then make each video of ``todo`` in turn with ``run_one``, as every executor does.

    Records each made video in the output journal (a folder of frames by its timestamps file) and drives
    ``events``; a video that fails is reported (and with ``--fail-fast`` stops the job); Ctrl-C marks the
    video in progress and the report interrupted, and ``--resume`` continues from its complete segments.
    """
    journal = plan.journal()
    events.started(report)
    for rep in report.files:
        if rep.status != "planned":
            if rep.status == "failed":
                log.error("%s", one_line(rep.input, rep.message))
            events.file_finished(rep)
    for video, item in todo:
        rep = report.files[video]
        t0 = time.perf_counter()
        try:
            run_one(video, item, rep)
        except (KeyboardInterrupt, Interrupted) as exc:
            report.interrupt(exc)
            rep.status = "failed"
            rep.message = "interrupted: run again with --resume to continue from the complete segments"
            rep.seconds = time.perf_counter() - t0
            events.file_finished(rep)
            break
        except Exception as exc:
            drop_empty_work_dir(item.output)
            rep.status = "failed"
            rep.message = one_line(rep.input, error_text(exc))
            rep.seconds = time.perf_counter() - t0
            log.error("%s", rep.message)
            events.file_finished(rep)
            if plan.options.fail_fast:
                break
            continue
        if rep.status == "done":
            recorded = item.output / TIMESTAMPS_FILE if plan.options.frames else item.output
            journal.record(recorded, item.input, plan.fingerprint)
        rep.seconds = time.perf_counter() - t0
        events.file_finished(rep)


def _open_source(item: PlannedVideo, rep: VideoFileReport, options: VideoOptions) -> Source:
    if item.kind == "video":
        vf = VideoFile(item.input, options.max_pixels)
        vf.scan(rep, options.on_bad_frame)
        return vf
    return FrameFolder(item.input, options.fps, options.max_pixels)


def describe_source(
    item: PlannedVideo, rep: VideoFileReport, source: Source, options: VideoOptions
) -> tuple[int, list[StreamChoice]]:
    """Record what ``source`` is in ``rep`` (size, frame count, rate, streams); the output's bits and stream choices.

    The output holds 16-bit samples where its pixel format has more than 8 bits (``--frames``: where the source
    has); the choices say which of the source's other streams are copied, converted or dropped.
    """
    assert source.expected is not None
    rep.width, rep.height = source.width, source.height
    rep.source_frames = len(source.expected)
    deltas = [b - a for a, b in zip(source.expected, source.expected[1:], strict=False)]
    rep.variable_frame_rate = bool(deltas) and max(deltas) - min(deltas) > 1
    if source.frame_rate:
        rep.frame_rate = f"{source.frame_rate.numerator}/{source.frame_rate.denominator}"
    out_bits = source.bits
    choices: list[StreamChoice] = []
    if not options.frames:
        assert item.container is not None and item.encoder is not None and item.pix_fmt is not None
        out_bits = 16 if pixel_format_bits(item.pix_fmt) > 8 else 8
        choices = plan_streams(source.info, CONTAINERS[item.container][0], keep_audio=not options.no_audio)
        for c in choices:
            rep.streams.append(
                {"index": c.stream.index, "kind": c.stream.kind, "codec": c.stream.codec, "action": c.action}
            )
            if c.action == "drop" and c.stream.kind in ("subtitle", "attachment"):
                log.warning("%s: %s", item.input, c.note)
        if item.container == "avi" and rep.variable_frame_rate:
            rep.notes.append("AVI cannot hold a variable frame rate; use .mkv or .mp4 to keep the timing")
    return out_bits, choices


def encode_settings(
    item: PlannedVideo, source: Source, options: VideoOptions, width: int, height: int
) -> EncodeSettings:
    """The encoder settings of ``item``'s segments for frames of ``width`` x ``height`` (colour depends on the size).

    Called once the first frame is decoded (``source.width`` is then the decoder's, display matrix applied).
    """
    if source.info is None or not (source.pix_fmt or "").startswith(("yuv", "nv", "p0", "gray")):
        # RGB pictures (frames, GIF, PNG-coded video) are sRGB: BT.709 primaries.
        colour = ColorTags("tv", "bt709", "bt709", "bt709")
    else:
        colour = output_colour(source.colour, (source.width, source.height), (width, height))
    assert item.encoder and item.pix_fmt
    return EncodeSettings(item.encoder, item.pix_fmt, item.crf, options.preset, colour, source.sar)


def _run_one(
    item: PlannedVideo,
    rep: VideoFileReport,
    plan: VideoPlan,
    loaded: LoadedModel,
    engine: EngineOptions,
    resolved: ResolvedRun,
    events: VideoEvents,
) -> None:
    options = plan.options
    source = _open_source(item, rep, options)
    tb = source.time_base
    out_bits, choices = describe_source(item, rep, source, options)
    model_stage = ModelStage(loaded, engine, resolved.device, source.bits)
    model_stage.out_bits = out_bits
    colour_out: dict[str, ColorTags] = {}

    def make_settings(width: int, height: int) -> EncodeSettings:
        """The encoder settings for frames of ``width`` x ``height`` (the colour tags depend on the output size)."""
        settings = encode_settings(item, source, options, width, height)
        colour_out["tags"] = settings.color
        return settings

    per_pass = frames_per_pass(options, resolved.device)
    stats = {"decode": StageStats(), "model": StageStats(), "encode": StageStats()}
    rep.stages = stats
    start_index, start_pts = 0, None
    key = _settings_key(plan, item)
    work, manifest = open_work_dir(item.output, key, options.resume)
    writer: SegmentWriter | FrameWriter
    if options.frames:
        writer = FrameWriter(work, options.frame_format.lower().lstrip("."), options.io_workers, out_bits)
        resume_skip = options.resume
    else:
        resume_skip = False
        if manifest.segments:
            rep.resumed_segments = len(manifest.segments)
            rep.resumed_frames = manifest.frames
            start_index = manifest.frames
            start_pts = manifest.segments[-1].get("next_pts")
            log.info("%s: resuming after %d segment(s), %d frame(s)", item.output, len(manifest.segments), start_index)
        segment_ticks = max(1, round(Fraction(options.segment_seconds) / tb))
        writer = SegmentWriter(
            work,
            manifest,
            make_settings,
            tb,
            segment_ticks,
            out_bits,
            options.stop_after_segments,
            on_segment=lambda n: events.segment_done(rep, n),
        )
    done_already = not options.frames and manifest.complete
    events.file_started(rep, rep.source_frames, start_index)
    if not done_already:
        run_stages(
            source, writer, model_stage, rep, stats, events, options, start_index, start_pts, per_pass, resume_skip
        )
    rep.model_seconds = stats["model"].seconds
    if "tags" in colour_out:
        rep.colour = asdict(colour_out["tags"])

    if options.frames:
        assert isinstance(writer, FrameWriter)
        rep.frames = len(writer.pts)
        if rep.source_frames is not None and abs(rep.frames - rep.source_frames) > 1:
            raise VideoError(f"{rep.frames} frames written for {rep.source_frames} in the source")
        write_timestamps(work / TIMESTAMPS_FILE, writer.pts, tb, end=source.end_pts)
        commit_frames_folder(work, item.output)
        rep.output = str(item.output)
        rep.status = "done"
        return

    assert isinstance(writer, SegmentWriter)
    rep.segments = len(manifest.segments)
    rep.frames = manifest.frames
    if not rep.colour:
        h, w = rep.out_height or 0, rep.out_width or 0
        rep.colour = asdict(make_settings(w, h).color) if (w and h) else {}
    _finish_video(item, rep, source, manifest, work, choices, options)


def _finish_video(
    item: PlannedVideo,
    rep: VideoFileReport,
    source: Source,
    manifest: Manifest,
    work: Path,
    choices: list[StreamChoice],
    options: VideoOptions,
) -> None:
    """Join the segments and the source's other streams, check the result, and give it its final name."""
    tb = Fraction(manifest.time_base) if manifest.time_base else source.time_base
    segs = manifest.segments
    if not segs:
        raise VideoError("no frame was encoded")
    listed: list[tuple[Path, Fraction | None]] = []
    for k, s in enumerate(segs):
        end = segs[k + 1]["first_pts"] if k + 1 < len(segs) else source.end_pts
        duration = (int(end) - int(s["first_pts"])) * tb if end is not None and int(end) > int(s["first_pts"]) else None
        listed.append((work / s["file"], duration))
    concat = work / "concat.txt"
    write_concat_list(concat, listed)
    assert item.container is not None
    muxer = CONTAINERS[item.container][0]
    output = item.output
    for stale in stale_temp_files(output.parent):
        if stale.name.startswith(f".{output.name}."):
            stale.unlink(missing_ok=True)  # left by a killed run
    tmp = temp_name(output)
    origin = manifest.origin or 0
    offset = Fraction(origin) * tb - Fraction(source.info.start).limit_denominator(1_000_000) if source.info else 0
    offset = max(Fraction(offset), Fraction(0))
    last = None
    expected = source.expected or []
    if expected and source.end_pts is not None:
        last_pts = expected[-1]
        last = LastFrame(last_pts - origin, int(source.end_pts) - last_pts, tb)
    t0 = time.perf_counter()
    try:
        mux(
            concat,
            tmp,
            muxer,
            source=source.info,
            choices=choices,
            video_offset=offset,
            last_frame=last,
            first_segment=work / segs[0]["file"],
        )
        rep.stages["mux"] = StageStats(rep.frames, time.perf_counter() - t0)
        if options.verify:
            t0 = time.perf_counter()
            problems = _verify(tmp, source, rep, choices, tb)
            rep.stages["verify"] = StageStats(rep.frames, time.perf_counter() - t0)
            rep.verified = not problems
            if problems:
                keep = output.with_name(f"{output.stem}.unverified{output.suffix}")
                commit_file(tmp, keep)
                rep.output = str(keep)
                raise VideoError(f"the output does not match the source ({'; '.join(problems)}); left at {keep}")
        commit_file(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    shutil.rmtree(work, ignore_errors=True)
    rep.output = str(output)
    rep.status = "done"


def _verify(path: Path, source: Source, rep: VideoFileReport, choices: list[StreamChoice], tb: Fraction) -> list[str]:
    """Compare the written file with its source: frames, video (against the declared end) and audio durations,
    streams."""
    summary = summarize(path)
    problems: list[str] = []
    expected = source.expected or []
    deltas = [b - a for a, b in zip(expected, expected[1:], strict=False)]
    frame = float(max(deltas) * tb) if deltas else 0.05
    checks: dict[str, Any] = {"frame_seconds": round(frame, 6)}
    checks["frames"] = {
        "output": summary.frames,
        "source": len(expected),
        "written": rep.frames,
        "declared": rep.declared_frames,
        "missing": rep.missing_frames,
    }
    if summary.frames != rep.frames:
        problems.append(f"{summary.frames} frames in the file, {rep.frames} encoded")
    if abs(summary.frames - len(expected)) > 1:
        problems.append(f"{summary.frames} frames, the source has {len(expected)}")
    # end_pts is the declared end where the container declares one past the last packet (a held last frame).
    src_seconds = float((source.end_pts - expected[0]) * source.time_base) if source.end_pts and expected else None
    checks["video_seconds"] = {"output": summary.video_seconds, "source": src_seconds, "declared": rep.declared_seconds}
    if (
        src_seconds is not None
        and summary.video_seconds is not None
        and abs(summary.video_seconds - src_seconds) > frame + 1e-3
    ):
        problems.append(f"video lasts {summary.video_seconds:.3f} s, the source {src_seconds:.3f} s")
    kept_audio = [c for c in choices if c.stream.kind == "audio" and c.action != "drop"]
    kept_subs = [c for c in choices if c.stream.kind == "subtitle" and c.action != "drop"]
    out_audio = summary.info.of_kind("audio")
    out_subs = summary.info.of_kind("subtitle")
    checks["streams"] = {
        "video": len(summary.info.of_kind("video")),
        "audio": [len(out_audio), len(kept_audio)],
        "subtitle": [len(out_subs), len(kept_subs)],
    }
    if len(summary.info.of_kind("video")) != 1:
        problems.append(f"{len(summary.info.of_kind('video'))} video streams")
    if len(out_audio) != len(kept_audio):
        problems.append(f"{len(out_audio)} audio streams, {len(kept_audio)} expected")
    if len(out_subs) != len(kept_subs):
        problems.append(f"{len(out_subs)} subtitle streams, {len(kept_subs)} expected")
    audio_checks = []
    for c, seconds in zip(kept_audio, summary.audio_seconds, strict=False):
        src = source.audio_seconds.get(c.stream.index)
        audio_checks.append({"output": seconds, "source": src, "action": c.action})
        tolerance = frame + 1e-3 if c.action == "copy" else max(frame, 0.05)
        if src is not None and seconds is not None and abs(seconds - src) > tolerance:
            problems.append(f"audio #{c.stream.index} lasts {seconds:.3f} s, the source {src:.3f} s")
    checks["audio_seconds"] = audio_checks
    rep.checks = checks
    return problems
