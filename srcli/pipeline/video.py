"""The video job behind ``srcli upscale clip.mp4 -o out.mp4``: decode -> model -> encode, streamed.

Three stages run at once, joined by bounded queues so that none runs ahead of memory and the
device never waits on I/O: a thread reads frames from the ffmpeg decoder (``srcli.io.video``), the
calling thread runs the model on batches of frames, and a thread feeds the encoder. No frame is
written to disk in between.

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

import itertools
import json
import logging
import os
import queue
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from srcli.errors import UsageError
from srcli.io.images import IMAGE_SUFFIXES
from srcli.io.video import (
    CODEC_ALIASES,
    CONTAINERS,
    ColorTags,
    DecodedFrame,
    EncodeSettings,
    FrameReader,
    MediaInfo,
    SegmentEncoder,
    StreamChoice,
    VideoError,
    check_codec_for_container,
    decode_matrix,
    default_crf,
    encoder_pixel_formats,
    mux,
    output_colour,
    packet_timing,
    pixel_format_bits,
    plan_streams,
    probe,
    summarize,
    write_concat_list,
)
from srcli.pipeline.inputs import DEFAULT_NAME, check_template, output_name
from srcli.pipeline.messages import error_text, one_line
from srcli.pipeline.report import BatchReport

if TYPE_CHECKING:
    import numpy as np

    from srcli.engine.upscale import EngineOptions
    from srcli.hub.loading import LoadedModel

log = logging.getLogger("srcli.upscale")

BadFrameMode = Literal["skip", "stop"]
Status = Literal["done", "skipped", "failed", "planned"]
#: Written beside frames by ``frames=True`` (mkvmerge's "timestamp format v2": one time in ms per line).
TIMESTAMPS_FILE = "timestamps.txt"
FRAME_NAME = "frame_{n:06d}.{ext}"
MANIFEST = "manifest.json"
_END = object()


@dataclass
class VideoOptions:
    """Everything ``srcli upscale`` decides before the first video frame."""

    model: str
    scale: int
    output: Path
    weights: str | None = None
    name: str = DEFAULT_NAME
    #: Container of the outputs when ``output`` is a folder (mp4, mkv, webm, mov, avi; default: the input's).
    format: str | None = None
    codec: str | None = None
    crf: float | None = None
    preset: str | None = None
    pix_fmt: str | None = None
    no_audio: bool = False
    #: Write a folder of frames (PNG unless ``frame_format``) instead of a video file.
    frames: bool = False
    frame_format: str = "png"
    resume: bool = False
    on_bad_frame: BadFrameMode = "stop"
    segment_seconds: float = 60.0
    #: Frame rate of a folder of frames without a timestamps file.
    fps: Fraction | None = None
    skip_existing: bool = False
    dry_run: bool = False
    fail_fast: bool = False
    max_pixels: int | None = 64 * 1024 * 1024  # per frame
    device: str = "auto"
    precision: str = "auto"
    tile: int | str = "auto"
    tile_overlap: int | None = None
    #: Frames per forward pass when frames fit whole (tiles per pass otherwise); None: 4 on CUDA, 1 elsewhere.
    batch: int | None = None
    self_ensemble: bool = False
    outscale: float | None = None
    io_workers: int = 2
    #: Frames each queue between stages holds (besides one batch).
    queue_frames: int = 4
    verify: bool = True
    cache_dir: str | None = None
    offline: bool | None = None
    #: For tests: behave as if interrupted once this many segments are complete in this run.
    stop_after_segments: int | None = None


@dataclass
class StageStats:
    """Frames a stage handled and the seconds it was busy (not waiting on its neighbours)."""

    frames: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        fps = self.frames / self.seconds if self.seconds > 0 else None
        return {"frames": self.frames, "busy_seconds": round(self.seconds, 4), "fps": round(fps, 3) if fps else None}


@dataclass
class VideoFileReport:
    """What happened to one video (or folder of frames)."""

    input: str
    output: str | None
    status: Status
    message: str = ""
    notes: list[str] = field(default_factory=list)
    width: int | None = None
    height: int | None = None
    out_width: int | None = None
    out_height: int | None = None
    #: Frames in the output, and in the source (packets of its video stream).
    frames: int = 0
    source_frames: int | None = None
    bad_frames: list[dict[str, Any]] = field(default_factory=list)
    decoder_errors: int = 0
    frame_rate: str | None = None
    variable_frame_rate: bool = False
    encoder: str | None = None
    pix_fmt: str | None = None
    crf: float | None = None
    colour: dict[str, str | None] = field(default_factory=dict)
    streams: list[dict[str, Any]] = field(default_factory=list)
    segments: int = 0
    resumed_segments: int = 0
    resumed_frames: int = 0
    seconds: float = 0.0
    model_seconds: float = 0.0
    stages: dict[str, StageStats] = field(default_factory=dict)
    verified: bool | None = None
    checks: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stages"] = {k: v.to_dict() for k, v in self.stages.items()}
        wall = self.seconds
        d["stages"]["end_to_end"] = {
            "frames": self.frames - self.resumed_frames,
            "seconds": round(wall, 4),
            "fps": round((self.frames - self.resumed_frames) / wall, 3) if wall > 0 else None,
        }
        return d


@dataclass
class VideoJobReport(BatchReport):
    """The whole run: per-video reports (``VideoFileReport``) and totals."""

    files: list[VideoFileReport] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary and the per-video records (with per-stage throughput)."""
        return {"kind": "video", **self.summary(), "files": [f.to_dict() for f in self.files]}


class VideoEvents:
    """Callbacks the CLI implements to show progress; every method is optional."""

    def started(self, report: VideoJobReport) -> None:
        """The plan is made and the model loaded."""

    def file_started(self, report: VideoFileReport, total: int | None, done: int) -> None:
        """Frames start flowing: ``total`` frames expected, ``done`` already there (resume)."""

    def frames_done(self, done: int) -> None:
        """``done`` frames of the current video are encoded (called from the encoder thread)."""

    def file_finished(self, report: VideoFileReport) -> None:
        """``report`` is final."""


class _Interrupted(Exception):
    """The test hook's stand-in for Ctrl-C."""


# ------------------------------------------------------------------------------------------------ inputs


def _natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def frame_files(folder: Path) -> list[Path]:
    """The image files of a folder of frames, in natural order (frame_2 before frame_10)."""
    files = [
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    ]
    return sorted(files, key=lambda p: _natural_key(p.name))


def parse_fps(text: str) -> Fraction:
    """``24``, ``12.5``, ``29.97`` (= 30000/1001), ``30000/1001`` -> a positive Fraction (``UsageError`` otherwise)."""
    try:
        value = Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        raise UsageError(f"--fps '{text}': give a number such as 24, 29.97 or 30000/1001") from None
    if value <= 0:
        raise UsageError(f"--fps must be positive, not {text}")
    if "/" not in text and value.denominator != 1:
        # 23.976, 29.97, 59.94 are the NTSC rates N*1000/1001 written short.
        ntsc = Fraction(round(value * Fraction(1001, 1000)) * 1000, 1001)
        value = ntsc if abs(ntsc - value) < Fraction(15, 10000) else value.limit_denominator(1001)
    return value


def _read_timestamps(path: Path) -> list[Fraction]:
    """A timestamps file (ms per line, '#' comments) -> seconds."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(Fraction(line) / 1000)
    return out


@dataclass
class _Item:
    """A frame between stages: its index in the output, source pts, pixels (``None``: repeat the previous)."""

    index: int
    pts: int
    rgb: np.ndarray | None
    bad: bool = False


class _Source:
    """Common face of a video file and a folder of frames."""

    path: Path
    width: int
    height: int
    bits: int
    time_base: Fraction
    #: Presentation timestamps of the frames the source holds, in ``time_base`` (None: unknown).
    expected: list[int] | None
    #: End of the video (pts + duration of the last frame), ``time_base`` units.
    end_pts: int | None
    info: MediaInfo | None
    colour: ColorTags
    sar: Fraction | None
    pix_fmt: str | None
    audio_seconds: dict[int, float | None]
    frame_rate: Fraction | None

    def items(
        self, start_index: int, start_pts: int | None, report: VideoFileReport, mode: BadFrameMode
    ) -> Iterator[_Item]:
        raise NotImplementedError

    def close(self) -> None:
        """Stop reading."""


class _VideoFile(_Source):
    def __init__(self, path: Path, max_pixels: int | None) -> None:
        self.path = path
        info = probe(path)
        video = info.video
        if video is None:
            kinds = sorted({s.kind for s in info.streams}) or ["no streams"]
            raise VideoError(f"{path}: no video stream ({', '.join(kinds)} only); nothing to upscale")
        if video.codec == "none" or video.pix_fmt in (None, "none"):
            raise VideoError(f"{path}: unsupported video stream ({video.description}); this ffmpeg cannot decode it")
        if not video.width or not video.height:
            raise VideoError(f"{path}: the video stream has no picture size ({video.description})")
        if max_pixels is not None and video.width * video.height > max_pixels:
            raise VideoError(
                f"{path}: frames of {video.width} x {video.height} pixels are over the limit of "
                f"{max_pixels / 1e6:.1f} MP; raise it with --max-pixels"
            )
        self.info = info
        self.video = video
        self.width, self.height = video.width, video.height
        self.pix_fmt = video.pix_fmt
        self.bits = 16 if pixel_format_bits(video.pix_fmt) > 8 else 8
        self.colour = video.color
        self.sar = video.sar
        self.frame_rate = video.fps
        self.audio_seconds = {}
        self.expected = None
        self.end_pts = None
        self.time_base = Fraction(1, 1000)
        self._reader: FrameReader | None = None

    def scan(self) -> None:
        """The demux-only pass: the video's packet timestamps (frame count, gaps) and the audio durations."""
        audio = self.info.of_kind("audio") if self.info else []
        timings = packet_timing(self.path, [self.video.index] + [a.index for a in audio])
        v = timings[0]
        self.time_base = v.time_base
        self.expected = v.pts
        self.end_pts = v.end
        self.audio_seconds = {a.index: t.seconds for a, t in zip(audio, timings[1:], strict=True)}
        if not v.pts:
            raise VideoError(f"{self.path}: the video stream holds no frames")

    def _reader_for(self, seek: float | None) -> FrameReader:
        return FrameReader(
            self.path,
            self.video.index,
            bits=self.bits,
            matrix=decode_matrix(self.colour, self.width, self.height),
            in_range=self.colour.range or ("pc" if (self.pix_fmt or "").startswith("yuvj") else "tv"),
            seek=seek,
        )

    def _decoded(self, seek: float | None, start_pts: int | None) -> tuple[FrameReader, Iterator[DecodedFrame]]:
        reader = self._reader = self._reader_for(seek)
        frames = (f for f in reader.frames() if start_pts is None or f.pts >= start_pts)
        return reader, frames

    def items(
        self, start_index: int, start_pts: int | None, report: VideoFileReport, mode: BadFrameMode
    ) -> Iterator[_Item]:
        tb = self.time_base
        expected = [p for p in (self.expected or []) if start_pts is None or p >= start_pts]
        seek = None
        if start_pts is not None:
            # Land a little before the resume point (keyframe seek; ffmpeg drops what precedes the
            # seek point); the frames between it and the resume point are dropped here by timestamp.
            start = self.info.start if self.info else 0.0
            seek = max(0.0, float(start_pts * tb) - start - 1.0) or None
        reader, frames = self._decoded(seek, start_pts)
        index = start_index

        def bad(pts: int) -> _Item:
            nonlocal index
            t = float(pts * tb)
            if mode == "stop":
                raise VideoError(
                    f"{self.path}: frame {index} at {t:.3f} s could not be decoded (damaged data); "
                    "--on-bad-frame skip shows the previous frame in its place"
                )
            log.warning("%s: frame %d at %.3f s is damaged: the previous frame is shown instead", self.path, index, t)
            report.bad_frames.append({"index": index, "time": round(t, 6)})
            item = _Item(index, pts, None, bad=True)
            index += 1
            return item

        try:
            first = next(frames, None)
            if first is not None and seek is not None and expected and first.pts > expected[0]:
                # The seek went past the resume point: decode from the start instead.
                reader.close()
                reader, frames = self._decoded(None, start_pts)
                first = next(frames, None)
            if first is None:
                if expected:
                    raise VideoError(f"{self.path}: no frame could be decoded ({_first_error(reader)})")
                return
            j = 0
            if start_pts is None:
                # Packets before the first picture (edit lists, leading B-frames) are not frames.
                while j < len(expected) and expected[j] < first.pts:
                    j += 1
            h, w = first.rgb.shape[:2]
            self.width, self.height = w, h  # turned by a display matrix, the decoder's size is the one
            for frame in itertools.chain([first], frames):
                if frame.rgb.shape[:2] != (h, w):
                    raise VideoError(
                        f"{self.path}: the picture size changes mid-stream ({w} x {h} -> "
                        f"{frame.rgb.shape[1]} x {frame.rgb.shape[0]}); not supported"
                    )
                while j < len(expected) and expected[j] < frame.pts:
                    yield bad(expected[j])
                    j += 1
                if j < len(expected) and expected[j] == frame.pts:
                    j += 1
                yield _Item(index, frame.pts, frame.rgb)
                index += 1
            while j < len(expected):
                yield bad(expected[j])
                j += 1
        finally:
            report.decoder_errors += reader.error_count
            reader.close()

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()


def _first_error(reader: FrameReader) -> str:
    errors = reader.errors
    return errors[0] if errors else "the decoder gave no picture"


class _FrameFolder(_Source):
    """A folder of images read as the frames of a video (timestamps from ``timestamps.txt`` or ``fps``)."""

    def __init__(self, path: Path, fps: Fraction | None, max_pixels: int | None) -> None:
        from srcli.io.imagefile import probe_image, read_image

        self.path = path
        self.files = frame_files(path)
        if not self.files:
            raise VideoError(f"{path}: no image files in the folder")
        self.info = None
        self.audio_seconds = {}
        stamps_file = path / TIMESTAMPS_FILE
        stamps = _read_timestamps(stamps_file) if stamps_file.is_file() else None
        if stamps is not None and len(stamps) != len(self.files):
            raise VideoError(
                f"{stamps_file}: {len(stamps)} timestamps for {len(self.files)} frames; "
                "fix it, or remove it and pass --fps"
            )
        if stamps is None and fps is None:
            raise UsageError(f"{path}: a folder of frames needs --fps (e.g. --fps 24 or --fps 30000/1001)")
        if fps is not None and stamps is None:
            self.time_base = 1 / fps
            self.expected = list(range(len(self.files)))
            self.end_pts = len(self.files)
            self.frame_rate = fps
        else:
            assert stamps is not None
            unit = Fraction(1, 1000) if all((s * 1000).denominator == 1 for s in stamps) else Fraction(1, 1_000_000)
            self.time_base = unit
            self.expected = [round(s / unit) for s in stamps]
            if any(b <= a for a, b in zip(self.expected, self.expected[1:], strict=False)):
                raise VideoError(f"{stamps_file}: timestamps must increase")
            last = self.expected[-1] - self.expected[-2] if len(self.expected) > 1 else round(Fraction(1, 25) / unit)
            self.end_pts = self.expected[-1] + last
            span = (self.expected[-1] - self.expected[0]) * unit
            self.frame_rate = Fraction(len(self.expected) - 1) / span if span else None
        width, height, _ = probe_image(self.files[0], max_pixels=max_pixels)
        self.width, self.height = width, height
        self.bits = 16 if read_image(self.files[0], max_pixels=max_pixels).bit_depth == 16 else 8
        self.pix_fmt = None
        self.colour = ColorTags()
        self.sar = None
        self._max_pixels = max_pixels

    def items(
        self, start_index: int, start_pts: int | None, report: VideoFileReport, mode: BadFrameMode
    ) -> Iterator[_Item]:
        from srcli.io.imagefile import read_image

        assert self.expected is not None
        for index in range(start_index, len(self.files)):
            decoded = read_image(self.files[index], max_pixels=self._max_pixels)
            if decoded.size != (self.width, self.height):
                raise VideoError(
                    f"{self.files[index]}: {decoded.size[0]} x {decoded.size[1]} pixels, but the first frame has "
                    f"{self.width} x {self.height}; all frames must have the same size"
                )
            yield _Item(index, self.expected[index], _quantize(decoded.frames[0].rgb, self.bits))


def _quantize(rgb: np.ndarray, bits: int) -> np.ndarray:
    from srcli.io.imagefile import quantize

    return quantize(rgb, 16 if bits == 16 else 8)


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


# ------------------------------------------------------------------------------------------------ manifest


@dataclass
class _Manifest:
    path: Path
    key: dict[str, Any]
    time_base: str = ""
    origin: int | None = None
    segments: list[dict[str, Any]] = field(default_factory=list)

    def save(self) -> None:
        data = {
            "version": 1,
            "key": self.key,
            "time_base": self.time_base,
            "origin": self.origin,
            "segments": self.segments,
        }
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        os.replace(tmp, self.path)

    @classmethod
    def load(cls, path: Path) -> _Manifest | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(path, data["key"], data["time_base"], data["origin"], list(data["segments"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    @property
    def frames(self) -> int:
        return sum(int(s["frames"]) for s in self.segments)

    @property
    def complete(self) -> bool:
        return bool(self.segments) and self.segments[-1].get("next_pts") is None


def _work_dir(output: Path) -> Path:
    return output.parent / f".{output.name}.srcli-parts"


# ------------------------------------------------------------------------------------------------ stages


def _put(q: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Put ``item`` unless ``stop`` is set first (so no thread blocks forever on a full queue)."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue[Any], stop: threading.Event) -> Any:
    while True:
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            if stop.is_set():
                return _END


@dataclass
class _OnDevice:
    """An upscaled frame (H, W, 3) still on the accelerator, and the event after which it is complete."""

    tensor: Any
    ready: Any

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.tensor.shape)


class _ModelStage:
    """Frames (uint8 / uint16, H x W x 3) through the model in batches, back as uint8 / uint16 arrays.

    On CUDA the results stay on the device (``_OnDevice``) and ``host`` copies each one out on a side
    stream from the encoder thread, so the model thread goes on with the next batch meanwhile.
    """

    def __init__(self, loaded: LoadedModel, engine: EngineOptions, device: Any, in_bits: int) -> None:
        self.loaded, self.engine, self.device = loaded, engine, device
        self.in_max = 65535.0 if in_bits == 16 else 255.0
        self.out_bits = 8
        self._pinned: Any = None
        self._copy_stream: Any = None

    def __call__(self, frames: list[np.ndarray]) -> tuple[list[Any], float]:
        import numpy as np
        import torch

        from srcli.engine.upscale import upscale_tensor

        stack = np.stack(frames)
        try:
            t = torch.from_numpy(stack)
        except TypeError:  # torch < 2.3 has no uint16
            t = torch.from_numpy(stack.astype(np.int32))
        if self.device.type == "cuda":
            # Ship the 8/16-bit samples (a quarter of float32's bytes) from page-locked memory, reused from
            # batch to batch (upscale_tensor waits for the device, so the previous copy is over), and
            # convert on the device.
            if self._pinned is None or self._pinned.shape != t.shape or self._pinned.dtype != t.dtype:
                self._pinned = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
            t = self._pinned.copy_(t).to(self.device, non_blocking=True)
        x = t.permute(0, 3, 1, 2).float().div_(self.in_max)
        result = upscale_tensor(self.loaded, x, self.engine)
        out_max = 65535.0 if self.out_bits == 16 else 255.0
        y = result.image.mul(out_max).round_()
        dtype = torch.uint8 if self.out_bits == 8 else torch.int32
        y = y.to(dtype).permute(0, 2, 3, 1).contiguous()
        if self.device.type == "cuda":
            ready = torch.cuda.Event()
            ready.record()
            return [_OnDevice(f, ready) for f in y.unbind(0)], result.seconds
        out = y.cpu().numpy()
        if self.out_bits == 16:
            out = out.astype(np.uint16)
        return list(out), result.seconds

    def host(self, frame: Any) -> np.ndarray:
        """``frame`` in host memory (a no-op for arrays)."""
        if not isinstance(frame, _OnDevice):
            return frame
        import numpy as np
        import torch

        if self._copy_stream is None:
            self._copy_stream = torch.cuda.Stream(self.device)
        with torch.cuda.stream(self._copy_stream):
            self._copy_stream.wait_event(frame.ready)
            # The allocator must not hand this memory to the next batch before the copy has read it.
            frame.tensor.record_stream(self._copy_stream)
            out = frame.tensor.to("cpu").numpy()
        return out.astype(np.uint16) if self.out_bits == 16 else out


class _SegmentWriter:
    """The encoder stage for video outputs: frames into segment files, each recorded once complete."""

    def __init__(
        self,
        work: Path,
        manifest: _Manifest,
        make_settings: Callable[[int, int], EncodeSettings],
        time_base: Fraction,
        segment_ticks: int,
        out_bits: int,
        stop_after: int | None,
    ) -> None:
        self.work, self.manifest, self.make_settings = work, manifest, make_settings
        self.time_base, self.segment_ticks, self.out_bits = time_base, segment_ticks, out_bits
        self.stop_after = stop_after
        self.encoder: SegmentEncoder | None = None
        self.current: dict[str, Any] | None = None
        self.settings: EncodeSettings | None = None
        self.last: np.ndarray | None = None
        self.pending: list[_Item] = []
        self.written = 0
        self.closed_this_run = 0

    def add(self, item: _Item) -> None:
        if item.rgb is None:
            if self.last is None:
                self.pending.append(item)  # a damaged first frame: shown as the next good one
                return
            item.rgb = self.last
        if self.pending:
            waiting, self.pending = self.pending, []
            for p in waiting:
                p.rgb = item.rgb
                self._write(p)
        self._write(item)
        self.last = item.rgb

    def _write(self, item: _Item) -> None:
        assert item.rgb is not None
        if self.manifest.origin is None:
            self.manifest.origin = item.pts
            self.manifest.time_base = f"{self.time_base.numerator}/{self.time_base.denominator}"
        if self.current is None or item.pts - int(self.current["first_pts"]) >= self.segment_ticks:
            self._rotate(item)
        assert self.encoder is not None and self.current is not None
        self.encoder.write(item.pts - self.manifest.origin, item.rgb)
        self.current["frames"] += 1
        self.written += 1

    def _open(self, item: _Item) -> None:
        assert item.rgb is not None
        h, w = item.rgb.shape[:2]
        if self.settings is None:
            self.settings = self.make_settings(w, h)
        k = len(self.manifest.segments)
        final = self.work / f"seg_{k:05d}.{self.settings.segment_format[1]}"
        self.current = {"file": final.name, "first_index": item.index, "frames": 0, "first_pts": item.pts}
        self.encoder = SegmentEncoder(
            final.with_name(final.name + ".partial"), w, h, self.out_bits, self.time_base, self.settings
        )

    def _close(self, next_pts: int | None) -> None:
        if self.encoder is None or self.current is None:
            return
        enc, seg = self.encoder, self.current
        self.encoder, self.current = None, None
        enc.close()
        os.replace(enc.path, self.work / seg["file"])
        seg["next_pts"] = next_pts
        self.manifest.segments.append(seg)
        self.manifest.save()
        self.closed_this_run += 1

    def _rotate(self, item: _Item) -> None:
        if self.current is not None:
            self._close(item.pts)
            if self.stop_after is not None and self.closed_this_run >= self.stop_after:
                raise _Interrupted
        self._open(item)

    def finish(self) -> None:
        for p in self.pending:  # only damaged frames and nothing else
            raise VideoError(f"frame {p.index} could not be decoded and no other frame can stand in for it")
        self._close(None)

    def abort(self) -> None:
        if self.encoder is not None:
            self.encoder.abort()
            self.encoder, self.current = None, None


class _FrameWriter:
    """The encoder stage for ``--frames``: each frame an image file, written atomically by a thread pool."""

    def __init__(self, folder: Path, ext: str, workers: int, out_bits: int) -> None:
        self.folder, self.ext, self.out_bits = folder, ext, out_bits
        self.pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="srcli-frames")
        self.futures: list[Future[None]] = []
        self.last: np.ndarray | None = None
        self.pending: list[_Item] = []
        self.written = 0
        self.pts: dict[int, int] = {}

    def path(self, index: int) -> Path:
        return self.folder / FRAME_NAME.format(n=index + 1, ext=self.ext)

    def add(self, item: _Item) -> None:
        self.pts[item.index] = item.pts
        if item.rgb is None and self.path(item.index).exists():
            self.written += 1  # kept from an interrupted run
            return
        if item.rgb is None:
            if self.last is None:
                self.pending.append(item)
                return
            item.rgb = self.last
        for p in self.pending:
            p.rgb = item.rgb
            self._submit(p)
        self.pending = []
        self._submit(item)
        self.last = item.rgb

    def _submit(self, item: _Item) -> None:
        from srcli.io.imagefile import Frame, format_of_extension, write_image_atomic

        fmt = format_of_extension("." + self.ext) or "PNG"
        bits = 16 if self.out_bits == 16 and fmt in ("PNG", "TIFF") else 8
        assert item.rgb is not None
        frame = Frame(rgb=item.rgb, alpha=None)
        self.futures.append(
            self.pool.submit(write_image_atomic, self.path(item.index), [frame], grey=False, bit_depth=bits, fmt=fmt)
        )
        # Bound the writes in flight (memory), surfacing the first failure.
        while len(self.futures) > 2 * self.pool._max_workers:
            self.futures.pop(0).result()
        self.written += 1

    def finish(self) -> None:
        for f in self.futures:
            f.result()
        self.futures.clear()
        self.pool.shutdown(wait=True)

    def abort(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


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

    from srcli.engine.devices import describe_device, pick_device, resolve_precision
    from srcli.engine.upscale import EngineOptions
    from srcli.hub.loading import load_model
    from srcli.registry import get_model

    device = pick_device(options.device)
    precision = resolve_precision(get_model(options.model), device, options.precision)
    report.device, report.precision = describe_device(device), precision
    todo = [p for p in planned if p.report.status == "planned"]
    if loaded is None and todo:
        loaded = load_model(
            options.model,
            options.scale,
            weights=options.weights,
            cache_dir=options.cache_dir,
            offline=options.offline,
            device=str(device),
        )
    engine = EngineOptions(
        precision=precision,
        tile=options.tile,
        overlap=options.tile_overlap,
        batch=options.batch,
        self_ensemble=options.self_ensemble,
        outscale=options.outscale,
    )
    from dataclasses import replace

    from srcli.engine.inference import optimise_for_inference
    from srcli.engine.upscale import probe_bytes_per_pixel

    # NHWC weights where the model gains from it; one memory probe per job instead of one per batch.
    if loaded is not None:
        loaded = optimise_for_inference(loaded, device)
        if engine.tile == "auto" and loaded.spec.preferred_tile is None:
            engine = replace(engine, bytes_per_pixel=probe_bytes_per_pixel(loaded, device, precision))
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
        except (KeyboardInterrupt, _Interrupted):
            report.interrupted = True
            p.report.status = "failed"
            p.report.message = "interrupted: run again with --resume to continue from the complete segments"
            p.report.seconds = time.perf_counter() - t0
            events.file_finished(p.report)
            break
        except Exception as exc:
            _drop_empty_work_dir(p.output)
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


def _drop_empty_work_dir(output: Path) -> None:
    """After a failure, keep the work folder only if it holds segments a --resume can use."""
    work = _work_dir(output)
    manifest = _Manifest.load(work / MANIFEST) if work.is_dir() else None
    if work.is_dir() and (manifest is None or not manifest.segments):
        shutil.rmtree(work, ignore_errors=True)


def _run_one(
    p: _Planned, options: VideoOptions, loaded: LoadedModel, engine: EngineOptions, device: Any, events: VideoEvents
) -> None:
    rep = p.report
    source: _Source
    if p.kind == "video":
        vf = _VideoFile(p.source_path, options.max_pixels)
        vf.scan()
        source = vf
    else:
        source = _FrameFolder(p.source_path, options.fps, options.max_pixels)
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
    model_stage = _ModelStage(loaded, engine, device, source.bits)
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

    frames_per_pass = options.batch or (4 if device.type == "cuda" else 1)
    stats = {"decode": StageStats(), "model": StageStats(), "encode": StageStats()}
    rep.stages = stats
    start_index, start_pts = 0, None
    manifest: _Manifest | None = None
    work: Path | None = None
    writer: _SegmentWriter | _FrameWriter
    key = _settings_key(options, p.source_path)
    if options.frames:
        p.output.mkdir(parents=True, exist_ok=True)
        ext = options.frame_format.lower().lstrip(".")
        writer = _FrameWriter(p.output, ext, options.io_workers, out_bits)
        resume_skip = options.resume
    else:
        resume_skip = False
        work = _work_dir(p.output)
        manifest = _Manifest.load(work / MANIFEST) if (work / MANIFEST).is_file() else None
        if manifest is not None and (not options.resume or manifest.key != key):
            if manifest.segments:
                why = "the interrupted run used other settings" if options.resume else "--resume not given"
                log.warning("%s: starting over (%s); removing %d segment(s)", p.output, why, len(manifest.segments))
            manifest = None
        if manifest is None:
            if work.exists():
                shutil.rmtree(work)
            work.mkdir(parents=True)
            manifest = _Manifest(work / MANIFEST, key)
            manifest.save()
        else:
            for stale in work.glob("*.partial"):
                stale.unlink(missing_ok=True)
            manifest.segments = [s for s in manifest.segments if (work / s["file"]).is_file()]
            # Only a contiguous run of segments counts.
            kept: list[dict[str, Any]] = []
            for s in manifest.segments:
                if kept and (kept[-1].get("next_pts") != s["first_pts"]):
                    break
                kept.append(s)
            manifest.segments = kept
            if kept:
                rep.resumed_segments = len(kept)
                rep.resumed_frames = manifest.frames
                start_index = manifest.frames
                start_pts = kept[-1].get("next_pts")
                log.info("%s: resuming after %d segment(s), %d frame(s)", p.output, len(kept), start_index)
        segment_ticks = max(1, round(Fraction(options.segment_seconds) / tb))
        writer = _SegmentWriter(work, manifest, make_settings, tb, segment_ticks, out_bits, options.stop_after_segments)
    done_already = manifest is not None and manifest.complete
    events.file_started(rep, rep.source_frames, start_index)

    if not done_already:
        _stream(
            source,
            writer,
            model_stage,
            rep,
            stats,
            events,
            options,
            start_index,
            start_pts,
            frames_per_pass,
            resume_skip,
        )
    rep.model_seconds = stats["model"].seconds
    if "tags" in colour_out:
        rep.colour = asdict(colour_out["tags"])

    if options.frames:
        assert isinstance(writer, _FrameWriter)
        _write_timestamps(p.output / TIMESTAMPS_FILE, writer.pts, tb)
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


def _stream(
    source: _Source,
    writer: _SegmentWriter | _FrameWriter,
    model: _ModelStage,
    rep: VideoFileReport,
    stats: dict[str, StageStats],
    events: VideoEvents,
    options: VideoOptions,
    start_index: int,
    start_pts: int | None,
    frames_per_pass: int,
    skip_written: bool,
) -> None:
    """Run the three stages until the source is exhausted, an error, or an interruption."""
    stop = threading.Event()
    q_in: queue.Queue[Any] = queue.Queue(maxsize=options.queue_frames + frames_per_pass)
    q_out: queue.Queue[Any] = queue.Queue(maxsize=options.queue_frames + frames_per_pass)
    errors: list[BaseException] = []
    done_frames = [start_index]

    def decode() -> None:
        try:
            it = source.items(start_index, start_pts, rep, options.on_bad_frame)
            while not stop.is_set():
                t0 = time.perf_counter()
                item = next(it, None)
                stats["decode"].seconds += time.perf_counter() - t0
                if item is None:
                    break
                stats["decode"].frames += 1
                if not _put(q_in, item, stop):
                    break
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            errors.append(exc)
            stop.set()
        finally:
            source.close()
            _put(q_in, _END, stop)

    def encode() -> None:
        try:
            while True:
                item = _get(q_out, stop)
                if item is _END:
                    break
                t0 = time.perf_counter()
                if item.rgb is not None:
                    item.rgb = model.host(item.rgb)
                writer.add(item)
                stats["encode"].seconds += time.perf_counter() - t0
                stats["encode"].frames += 1
                done_frames[0] += 1
                events.frames_done(done_frames[0])
            if not stop.is_set():
                t0 = time.perf_counter()
                writer.finish()
                stats["encode"].seconds += time.perf_counter() - t0
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            errors.append(exc)
            stop.set()

    decoder = threading.Thread(target=decode, name="srcli-decode", daemon=True)
    encoder = threading.Thread(target=encode, name="srcli-encode", daemon=True)
    decoder.start()
    encoder.start()
    finished = False
    try:
        ended = False
        while not ended and not stop.is_set():
            batch: list[_Item] = []
            first = _get(q_in, stop)
            if first is _END:
                break
            batch.append(first)
            while sum(1 for b in batch if b.rgb is not None) < frames_per_pass:
                try:
                    nxt = q_in.get_nowait()
                except queue.Empty:
                    break
                if nxt is _END:
                    ended = True
                    break
                batch.append(nxt)
            todo = [b for b in batch if b.rgb is not None]
            if skip_written and isinstance(writer, _FrameWriter):
                todo = [b for b in todo if not writer.path(b.index).exists() or _mark_kept(b)]
            if todo:
                t0 = time.perf_counter()
                outputs, _ = model([b.rgb for b in todo])  # type: ignore[misc]
                stats["model"].seconds += time.perf_counter() - t0
                stats["model"].frames += len(todo)
                for b, y in zip(todo, outputs, strict=True):
                    b.rgb = y
                if rep.out_width is None:
                    rep.out_height, rep.out_width = outputs[0].shape[:2]
            for b in batch:
                if not _put(q_out, b, stop):
                    break
        _put(q_out, _END, stop)
        encoder.join()
        finished = not errors and not stop.is_set()
    except BaseException:
        stop.set()
        raise
    finally:
        stop.set()
        source.close()
        decoder.join(timeout=30)
        encoder.join(timeout=60)
        if not finished:
            # The segment in progress is incomplete: remove it (complete ones stay for --resume).
            writer.abort()
    if errors:
        raise errors[0]


def _mark_kept(item: _Item) -> bool:
    """A frame already written by an interrupted run: not upscaled again (the writer keeps the file)."""
    item.rgb = None
    return False


def _write_timestamps(path: Path, pts: dict[int, int], tb: Fraction) -> None:
    lines = ["# timestamp format v2"]
    for index in sorted(pts):
        ms = pts[index] * tb * 1000
        lines.append(f"{float(ms):.6f}".rstrip("0").rstrip("."))
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _finish_video(
    p: _Planned,
    source: _Source,
    manifest: _Manifest,
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


def _verify(path: Path, source: _Source, rep: VideoFileReport, choices: list[StreamChoice], tb: Fraction) -> list[str]:
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
