"""The video job behind ``srcli upscale clip.mp4 -o out.mp4``: decode -> model -> encode, streamed.

This module plans the job (an output path per input, refusals and skips, encoder and pixel format)
and runs it, one input after the other; the parts live beside it:

- ``video_report``: the options, the report and the progress callbacks (re-exported here);
- ``video_sources``: the frames of a video file (ffmpeg) or of a folder of images;
- ``video_stream``: the three stages (decoder thread, model, encoder thread) joined by bounded
  queues, so that no frame is written to disk in between;
- ``video_writers``: segment files and their manifest, or a folder of frames.

The encoder writes segments of ``segment_seconds`` into a hidden work folder beside the output,
recorded in a manifest as each one completes; ``resume`` starts after the last complete segment.
When all frames are in, the segments are joined (video copied) with the source's audio,
subtitles and chapters, the result is checked against the source (frame count, durations,
streams) and only then renamed to the output name, so that name never holds a partial file.

Damaged frames (a packet the decoder could not turn into a picture) are found by comparing the
decoded timestamps with the source's packets; ``on_bad_frame`` either shows the previous frame in
their place (timing and frame count kept) or stops the job.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import time
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from srcli.errors import UsageError
from srcli.io.video import (
    CODEC_ALIASES,
    CONTAINERS,
    ColorTags,
    EncodeSettings,
    StreamChoice,
    VideoError,
    check_codec_for_container,
    default_crf,
    encoder_pixel_formats,
    mux,
    output_colour,
    pixel_format_bits,
    plan_streams,
    summarize,
    write_concat_list,
)
from srcli.pipeline.inputs import check_template, output_name
from srcli.pipeline.messages import error_text, one_line
from srcli.pipeline.video_report import (
    BadFrameMode,
    StageStats,
    VideoEvents,
    VideoFileReport,
    VideoJobReport,
    VideoOptions,
)
from srcli.pipeline.video_sources import TIMESTAMPS_FILE, FrameFolder, Source, VideoFile, frame_files, parse_fps
from srcli.pipeline.video_stream import ModelStage, run_stages
from srcli.pipeline.video_writers import (
    FrameWriter,
    Interrupted,
    Manifest,
    SegmentWriter,
    drop_empty_work_dir,
    open_work_dir,
    write_timestamps,
)

if TYPE_CHECKING:
    from srcli.engine.upscale import EngineOptions
    from srcli.hub.loading import LoadedModel

__all__ = [
    "TIMESTAMPS_FILE",
    "BadFrameMode",
    "StageStats",
    "VideoEvents",
    "VideoFileReport",
    "VideoJobReport",
    "VideoOptions",
    "frame_files",
    "parse_fps",
    "plan_video_job",
    "run_video_job",
]

log = logging.getLogger("srcli.upscale")


# ------------------------------------------------------------------------------------------------ planning


@dataclass
class _Planned:
    source_path: Path
    kind: Literal["video", "frames"]
    output: Path
    report: VideoFileReport


def _container_of(path: Path) -> str:
    ext = path.suffix.lower().lstrip(".")
    if ext not in CONTAINERS:
        raise UsageError(
            f"{path.name}: video output must be one of {', '.join('.' + c for c in CONTAINERS)} "
            "(or --frames for a folder of frames)"
        )
    return ext


def frames_per_pass(options: VideoOptions, device: Any) -> int:
    """Frames per forward pass: ``--batch``, else 4 on CUDA (batching pays there) and 1 elsewhere."""
    return options.batch or (4 if device.type == "cuda" else 1)


def plan_video_job(arguments: list[str], options: VideoOptions) -> list[_Planned]:
    """Pair every video (or folder of frames) with its output path; settle skips and refusals."""
    check_template(options.name)
    if options.segment_seconds <= 0:
        raise UsageError(f"--segment-seconds must be positive, not {options.segment_seconds:g}")
    if options.on_bad_frame not in ("skip", "stop"):
        raise UsageError(f"--on-bad-frame must be skip or stop, not '{options.on_bad_frame}'")
    if options.format is not None and options.format.lower().lstrip(".") not in CONTAINERS and not options.frames:
        raise UsageError(f"--format '{options.format}' for video: use one of {', '.join(CONTAINERS)}")
    paths = [Path(a).expanduser() for a in arguments]
    for p in paths:
        if not p.exists():
            raise UsageError(f"{p}: no such file or folder")
    single = len(paths) == 1
    out = options.output
    planned: list[_Planned] = []
    claimed: dict[Path, Path] = {}
    for src in paths:
        kind: Literal["video", "frames"] = "frames" if src.is_dir() else "video"
        if kind == "frames" and options.fps is None and not (src / TIMESTAMPS_FILE).is_file():
            raise UsageError(f"{src}: a folder of frames needs --fps (e.g. --fps 24 or --fps 30000/1001)")
        if options.frames:
            dest = out if single else out / src.stem
        elif single and out.suffix:
            dest = out
        else:
            ext = (options.format or "").lower().lstrip(".")
            if not ext:
                own = src.suffix.lower().lstrip(".")
                ext = own if kind == "video" and own in CONTAINERS else "mp4"
            name = output_name(options.name, src, model=options.model, scale=options.outscale or options.scale, ext=ext)
            dest = out / name
        report = VideoFileReport(input=str(src), output=str(dest), status="planned")
        if not options.frames:
            try:
                _check_encoding(options, _container_of(dest))
            except (UsageError, VideoError) as exc:
                if single:
                    raise UsageError(str(exc)) from None
                report.status, report.message = "failed", str(exc)
        resolved = dest.resolve()
        if resolved == src.resolve():
            report.status, report.message = "failed", "refused: the output would overwrite the input"
        elif resolved in claimed:
            report.status, report.message = "failed", f"refused: output name collides with {claimed[resolved]}"
        elif options.skip_existing and dest.exists() and not options.frames:
            report.status, report.message = "skipped", "output exists (--skip-existing)"
        claimed.setdefault(resolved, src)
        planned.append(_Planned(src, kind, dest, report))
    return planned


def _check_encoding(options: VideoOptions, container: str) -> None:
    """Refuse, before any work, an encoder this ffmpeg lacks, one the container cannot hold, or a bad --pix-fmt."""
    encoder = _encoder_name(options, container)
    check_codec_for_container(encoder, CONTAINERS[container][0])
    supported = encoder_pixel_formats(encoder)
    if options.pix_fmt and supported and options.pix_fmt not in supported:
        raise UsageError(f"--pix-fmt {options.pix_fmt}: {encoder} takes {', '.join(supported)}")


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


def _settings_key(options: VideoOptions, source: Path) -> dict[str, Any]:
    """What must not change between an interrupted run and its resumption."""
    st = source.stat()
    return {
        "source": str(source.resolve()),
        "source_size": st.st_size,
        "source_mtime_ns": st.st_mtime_ns if source.is_file() else None,
        "model": options.model,
        "scale": options.scale,
        "outscale": options.outscale,
        "weights": options.weights,
        "codec": options.codec,
        "crf": options.crf,
        "preset": options.preset,
        "pix_fmt": options.pix_fmt,
        "precision": options.precision,
        "self_ensemble": options.self_ensemble,
        "tile": options.tile,
        "segment_seconds": options.segment_seconds,
        "fps": str(options.fps) if options.fps else None,
    }


# ------------------------------------------------------------------------------------------------ the job


def run_video_job(
    arguments: list[str],
    options: VideoOptions,
    *,
    events: VideoEvents | None = None,
    loaded: LoadedModel | None = None,
) -> VideoJobReport:
    """Upscale the videos (or folders of frames) in ``arguments``; returns the report.

    A bad input fails on its own (``fail_fast`` stops at the first); a ``KeyboardInterrupt`` stops
    after cleaning up the segment in progress, and ``resume`` continues from the complete ones.
    """
    events = events or VideoEvents()
    planned = plan_video_job(arguments, options)
    report = VideoJobReport(options.model, options.scale, options.outscale, "", options.precision)
    report.files = [p.report for p in planned]
    if options.dry_run:
        return report

    from srcli.pipeline.model_setup import set_up_model

    todo = [p for p in planned if p.report.status == "planned"]
    device, loaded, engine = set_up_model(
        options, report, needed=bool(todo), loaded=loaded, default_batch=lambda d: frames_per_pass(options, d)
    )
    started = time.perf_counter()
    events.started(report)
    for p in planned:
        if p.report.status != "planned":
            if p.report.status == "failed":
                log.error("%s", one_line(p.report.input, p.report.message))
            events.file_finished(p.report)
    for p in todo:
        t0 = time.perf_counter()
        try:
            assert loaded is not None
            _run_one(p, options, loaded, engine, device, events)
        except (KeyboardInterrupt, Interrupted):
            report.interrupted = True
            p.report.status = "failed"
            p.report.message = "interrupted: run again with --resume to continue from the complete segments"
            p.report.seconds = time.perf_counter() - t0
            events.file_finished(p.report)
            break
        except Exception as exc:
            drop_empty_work_dir(p.output)
            p.report.status = "failed"
            p.report.message = one_line(p.report.input, error_text(exc))
            p.report.seconds = time.perf_counter() - t0
            log.error("%s", p.report.message)
            events.file_finished(p.report)
            if options.fail_fast:
                break
            continue
        p.report.seconds = time.perf_counter() - t0
        events.file_finished(p.report)
    for p in planned:
        if p.report.status == "planned":
            p.report.status = "skipped"
            p.report.message = "not processed (interrupted)" if report.interrupted else "not processed (--fail-fast)"
    report.seconds = time.perf_counter() - started
    return report


def _run_one(
    p: _Planned, options: VideoOptions, loaded: LoadedModel, engine: EngineOptions, device: Any, events: VideoEvents
) -> None:
    rep = p.report
    source: Source
    if p.kind == "video":
        vf = VideoFile(p.source_path, options.max_pixels)
        vf.scan()
        source = vf
    else:
        source = FrameFolder(p.source_path, options.fps, options.max_pixels)
    assert source.expected is not None
    rep.width, rep.height = source.width, source.height
    rep.source_frames = len(source.expected)
    tb = source.time_base
    deltas = [b - a for a, b in zip(source.expected, source.expected[1:], strict=False)]
    rep.variable_frame_rate = bool(deltas) and max(deltas) - min(deltas) > 1
    if source.frame_rate:
        rep.frame_rate = f"{source.frame_rate.numerator}/{source.frame_rate.denominator}"
    out_bits = source.bits
    choices: list[StreamChoice] = []
    container = ""
    if options.frames:
        rep.encoder = "png" if options.frame_format == "png" else options.frame_format
    else:
        container = _container_of(p.output)
        muxer = CONTAINERS[container][0]
        encoder = _encoder_name(options, container)
        check_codec_for_container(encoder, muxer)
        pix_fmt = _choose_pix_fmt(encoder, options.pix_fmt, source.pix_fmt, source.bits)
        out_bits = 16 if pixel_format_bits(pix_fmt) > 8 else 8
        crf = options.crf if options.crf is not None else default_crf(encoder)
        if options.crf is not None and encoder == "ffv1":
            rep.notes.append("ffv1 is lossless: --crf ignored")
            crf = None
        rep.encoder, rep.pix_fmt, rep.crf = encoder, pix_fmt, crf
        choices = plan_streams(source.info, muxer, keep_audio=not options.no_audio)
        for c in choices:
            rep.streams.append(
                {"index": c.stream.index, "kind": c.stream.kind, "codec": c.stream.codec, "action": c.action}
            )
            if c.note and c.note != "--no-audio":
                rep.notes.append(c.note)
                if c.action == "drop" and c.stream.kind in ("subtitle", "attachment"):
                    log.warning("%s: %s", p.source_path, c.note)
        if container == "avi" and rep.variable_frame_rate:
            rep.notes.append("AVI cannot hold a variable frame rate; use .mkv or .mp4 to keep the timing")
    model_stage = ModelStage(loaded, engine, device, source.bits)
    model_stage.out_bits = out_bits
    colour_out: dict[str, ColorTags] = {}

    def make_settings(width: int, height: int) -> EncodeSettings:
        if source.info is None or not (source.pix_fmt or "").startswith(("yuv", "nv", "p0", "gray")):
            # RGB pictures (frames, GIF, PNG-coded video) are sRGB: BT.709 primaries.
            colour = ColorTags("tv", "bt709", "bt709", "bt709")
        else:
            colour = output_colour(source.colour, (source.width, source.height), (width, height))
        colour_out["tags"] = colour
        assert rep.encoder and rep.pix_fmt
        return EncodeSettings(rep.encoder, rep.pix_fmt, rep.crf, options.preset, colour, source.sar)

    per_pass = frames_per_pass(options, device)
    stats = {"decode": StageStats(), "model": StageStats(), "encode": StageStats()}
    rep.stages = stats
    start_index, start_pts = 0, None
    manifest: Manifest | None = None
    work: Path | None = None
    writer: SegmentWriter | FrameWriter
    key = _settings_key(options, p.source_path)
    if options.frames:
        p.output.mkdir(parents=True, exist_ok=True)
        ext = options.frame_format.lower().lstrip(".")
        writer = FrameWriter(p.output, ext, options.io_workers, out_bits)
        resume_skip = options.resume
    else:
        resume_skip = False
        work, manifest = open_work_dir(p.output, key, options.resume)
        if manifest.segments:
            rep.resumed_segments = len(manifest.segments)
            rep.resumed_frames = manifest.frames
            start_index = manifest.frames
            start_pts = manifest.segments[-1].get("next_pts")
            log.info("%s: resuming after %d segment(s), %d frame(s)", p.output, len(manifest.segments), start_index)
        segment_ticks = max(1, round(Fraction(options.segment_seconds) / tb))
        writer = SegmentWriter(work, manifest, make_settings, tb, segment_ticks, out_bits, options.stop_after_segments)
    done_already = manifest is not None and manifest.complete
    events.file_started(rep, rep.source_frames, start_index)

    if not done_already:
        run_stages(
            source,
            writer,
            model_stage,
            rep,
            stats,
            events,
            options,
            start_index,
            start_pts,
            per_pass,
            resume_skip,
        )
    rep.model_seconds = stats["model"].seconds
    if "tags" in colour_out:
        rep.colour = asdict(colour_out["tags"])

    if options.frames:
        assert isinstance(writer, FrameWriter)
        write_timestamps(p.output / TIMESTAMPS_FILE, writer.pts, tb)
        rep.frames = len(writer.pts)
        rep.output = str(p.output)
        rep.status = "done"
        if rep.source_frames is not None and abs(rep.frames - rep.source_frames) > 1:
            rep.status, rep.message = "failed", f"{rep.frames} frames written for {rep.source_frames} in the source"
        return

    assert manifest is not None and work is not None
    rep.segments = len(manifest.segments)
    rep.frames = manifest.frames
    if not rep.colour:
        h, w = rep.out_height or 0, rep.out_width or 0
        rep.colour = asdict(make_settings(w, h).color) if (w and h) else {}
    _finish_video(p, source, manifest, work, choices, container, options)


def _finish_video(
    p: _Planned,
    source: Source,
    manifest: Manifest,
    work: Path,
    choices: list[StreamChoice],
    container: str,
    options: VideoOptions,
) -> None:
    """Join the segments and the source's other streams, check the result, and rename it into place."""
    rep = p.report
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
    muxer = CONTAINERS[container][0]
    tmp = p.output.with_name(f".{p.output.name}.{secrets.token_hex(4)}.partial")
    p.output.parent.mkdir(parents=True, exist_ok=True)
    origin = Fraction(manifest.origin or 0) * tb
    offset = origin - Fraction(source.info.start).limit_denominator(1_000_000) if source.info else Fraction(0)
    t0 = time.perf_counter()
    try:
        mux(concat, tmp, muxer, source=source.info, choices=choices, video_offset=max(offset, Fraction(0)))
        rep.stages["mux"] = StageStats(rep.frames, time.perf_counter() - t0)
        if options.verify:
            t0 = time.perf_counter()
            problems = _verify(tmp, source, rep, choices, tb)
            rep.stages["verify"] = StageStats(rep.frames, time.perf_counter() - t0)
            rep.verified = not problems
            if problems:
                keep = p.output.with_name(f"{p.output.stem}.unverified{p.output.suffix}")
                os.replace(tmp, keep)
                rep.output = str(keep)
                raise VideoError(f"the output does not match the source ({'; '.join(problems)}); left at {keep}")
        os.replace(tmp, p.output)
    finally:
        tmp.unlink(missing_ok=True)
    shutil.rmtree(work, ignore_errors=True)
    rep.output = str(p.output)
    rep.status = "done"


def _verify(path: Path, source: Source, rep: VideoFileReport, choices: list[StreamChoice], tb: Fraction) -> list[str]:
    """Compare the written file with its source: frames, video and audio durations, streams."""
    summary = summarize(path)
    problems: list[str] = []
    expected = source.expected or []
    deltas = [b - a for a, b in zip(expected, expected[1:], strict=False)]
    frame = float(max(deltas) * tb) if deltas else 0.05
    checks: dict[str, Any] = {"frame_seconds": round(frame, 6)}
    checks["frames"] = {"output": summary.frames, "source": len(expected), "written": rep.frames}
    if summary.frames != rep.frames:
        problems.append(f"{summary.frames} frames in the file, {rep.frames} encoded")
    if abs(summary.frames - len(expected)) > 1:
        problems.append(f"{summary.frames} frames, the source has {len(expected)}")
    src_seconds = float((source.end_pts - expected[0]) * source.time_base) if source.end_pts and expected else None
    checks["video_seconds"] = {"output": summary.video_seconds, "source": src_seconds}
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
