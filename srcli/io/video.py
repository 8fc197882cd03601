"""Video files: probe and decode with PyAV, encode segments and mux with the ffmpeg binary.

Two FFmpeg builds are used, each where it is the simplest route:

- **PyAV** (the ``av`` package, FFmpeg's libraries in-process) reads: container and stream facts
  (codecs, sizes, pixel formats, colour tags, frame rates, time bases, declared frame counts and
  durations, chapters, dispositions) come back as data; the demux-only pass gives every packet's
  timestamp and duration; decoding gives each picture with its timestamp, converted to packed RGB
  by a libavfilter graph in the same call (autorotation included). Nothing is parsed from text.
- **The ffmpeg binary** bundled with ``imageio-ffmpeg`` (``IMAGEIO_FFMPEG_EXE`` points elsewhere)
  writes: it encodes the segments (the RGB -> YUV conversion, colour tags and the encoder in one
  process, at a lower CPU priority than the model) and muxes them (concat with stream copy, the
  source's audio, subtitles, chapters and metadata copied or transcoded, in one command). Its encoder
  list is the one asked about ``--codec`` / ``--pix-fmt`` (``encoder_pixel_formats``): PyAV's wheel
  is another build with other encoders (no 10-bit VP9, no libaom), so it cannot answer for the binary.

Frames travel as packed RGB, 8 bits (``rgb24``) or 16 bits (``rgb48le``) per sample, and never touch
the disk. Timestamps are carried exactly, so variable frame rate survives: decoded frames keep
their stream pts; the encoder is fed an IVF stream (a 32-byte header, then a 12-byte size + pts
header per frame) of raw RGB, which carries one 64-bit timestamp per frame in any time base, and
``-enc_time_base`` keeps the source's. IVF has no frame durations, so ``mux`` sets the duration of
the last frame (a GIF's held last frame, a truncated source's declared end) with the ``setts``
bitstream filter.

Encoded video is written in NUT segments (NUT keeps any time base and takes every codec used here;
VP8/VP9 go in Matroska, see ``EncodeSettings.segment_format``); ``mux`` joins them with the concat
demuxer (explicit durations, so the joins fall on the source's timestamps).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import struct
import subprocess
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

import numpy as np

from srcli.atomic import write_text
from srcli.errors import SrcliError

log = logging.getLogger("srcli.video")

#: Suffixes ``srcli upscale`` treats as video files (``.gif`` only on request, see ``srcli.cli.upscale``).
VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mkv", ".webm", ".mov", ".avi", ".mpg", ".mpeg", ".ts", ".m2ts", ".mts", ".wmv", ".flv", ".ogv"}
)
#: Containers srcli writes, by extension: the ffmpeg muxer and the default encoder.
CONTAINERS: dict[str, tuple[str, str]] = {
    "mp4": ("mp4", "libx264"),
    "m4v": ("mp4", "libx264"),
    "mov": ("mov", "libx264"),
    "mkv": ("matroska", "libx264"),
    "webm": ("webm", "libvpx-vp9"),
    "avi": ("avi", "libx264"),
}
#: Short codec names accepted by ``--codec`` (any other ffmpeg encoder name is passed through).
CODEC_ALIASES = {
    "h264": "libx264",
    "x264": "libx264",
    "avc": "libx264",
    "h265": "libx265",
    "hevc": "libx265",
    "x265": "libx265",
    "vp9": "libvpx-vp9",
    "av1": "libsvtav1",
    "ffv1": "ffv1",
}
#: Encoder -> (codec as ffmpeg names it in a stream, default CRF or None for lossless/no CRF).
_ENCODERS: dict[str, tuple[str, float | None]] = {
    "libx264": ("h264", 18),
    "libx265": ("hevc", 20),
    "libvpx-vp9": ("vp9", 30),
    "libsvtav1": ("av1", 30),
    "libaom-av1": ("av1", 30),
    "ffv1": ("ffv1", None),
}
#: Video codecs each container takes (None: any).
_CONTAINER_VIDEO = {"webm": {"vp8", "vp9", "av1"}, "mp4": {"h264", "hevc", "vp9", "av1", "mpeg4"}}
#: Audio codecs a container takes as they are (None: any), and what the others become there.
_AUDIO_COPY: dict[str, set[str] | None] = {
    "mp4": {"aac", "mp3", "ac3", "eac3", "opus", "flac", "alac"},
    "mov": {"aac", "mp3", "ac3", "eac3", "alac", "pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_s24be", "pcm_f32le"},
    "matroska": None,
    "webm": {"opus", "vorbis"},
    "avi": {"mp3", "ac3", "pcm_s16le", "pcm_u8"},
}
_AUDIO_TRANSCODE = {
    "mp4": ["aac", "-b:a", "192k"],
    "mov": ["aac", "-b:a", "192k"],
    "webm": ["libopus", "-b:a", "160k"],
    "avi": ["libmp3lame", "-b:a", "192k"],
}
_TEXT_SUBTITLES = {"subrip", "srt", "ass", "ssa", "webvtt", "mov_text", "text", "microdvd", "subviewer", "jacosub"}
_SUBTITLE_COPY: dict[str, set[str] | None] = {
    "mp4": {"mov_text"},
    "mov": {"mov_text"},
    "matroska": None,
    "webm": {"webvtt"},
    "avi": set(),
}
_SUBTITLE_TRANSCODE = {"mp4": "mov_text", "mov": "mov_text", "webm": "webvtt"}
_CHAPTER_CONTAINERS = {"mp4", "mov", "matroska", "webm"}
#: Heights from which a picture counts as HD (BT.709 rather than BT.601 when untagged).
HD_HEIGHT, HD_WIDTH = 720, 1280
# ffmpeg names of colour matrices -> the scale filter's names for the same matrix.
_SCALE_MATRIX = {
    "bt709": "bt709",
    "smpte170m": "bt601",
    "bt470bg": "bt601",
    "smpte240m": "smpte240m",
    "bt2020nc": "bt2020",
    "bt2020c": "bt2020",
    "fcc": "fcc",
}
IVF_TAGS = {8: b"RGB\x18", 16: b"RGB0"}  # ffmpeg's raw tags for rgb24 and rgb48le ("RGB" + bits per pixel)


class VideoError(SrcliError):
    """A video cannot be read, encoded or muxed; the message is one line naming the file."""


# ------------------------------------------------------------------------------------------------- ffmpeg


@lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """The ffmpeg binary from imageio-ffmpeg (or ``IMAGEIO_FFMPEG_EXE``)."""
    try:
        import imageio_ffmpeg
    except ImportError:  # pragma: no cover - a declared dependency
        raise VideoError("video needs the imageio-ffmpeg package: pip install imageio-ffmpeg") from None
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as exc:  # no binary for this platform
        raise VideoError(f"no ffmpeg binary available: {exc}") from None


#: Niceness of the encoder process and of the decoding thread: the model's threads (or the one feeding the GPU)
#: come first; with bounded queues the others only need to keep pace.
FFMPEG_NICE = 5


def lower_priority(proc: subprocess.Popen[bytes]) -> None:
    """Lower ``proc``'s CPU priority (POSIX; best effort, right after start so its threads inherit it)."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, proc.pid, os.getpriority(os.PRIO_PROCESS, 0) + FFMPEG_NICE)


def lower_thread_priority() -> None:
    """Lower the calling thread's CPU priority (Linux, where a thread id takes a nice value of its own; threads
    it starts afterwards, such as a decoder's, inherit it). Best effort, a no-op elsewhere."""
    native = getattr(threading, "get_native_id", None)
    if native is None or not hasattr(os, "setpriority"):
        return
    with contextlib.suppress(OSError):
        tid = native()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + FFMPEG_NICE)


def _run(args: list[str], *, timeout: float | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [ffmpeg_exe(), "-nostdin", "-hide_banner", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def _last_error(stderr: str, path: str | Path | None = None) -> str:
    """The most telling line of an ffmpeg error log: the last error-looking one, without the path prefix."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    noise = ("Exiting with exit code", "At least one output file", "Conversion failed")
    lines = [ln for ln in lines if not ln.startswith(noise)]
    if not lines:
        return "ffmpeg failed without a message"
    text = lines[-1]
    text = re.sub(r"^\[[^\]]+\]\s*", "", text)
    text = re.sub(r"^\[(error|fatal|warning|info)\]\s*", "", text)
    if path is not None:
        text = text.removeprefix(f"{path}: ")
    return text if len(text) <= 200 else text[:197] + "..."


class StderrTail:
    """The last lines a child process wrote to its stderr, read by a thread that owns the pipe.

    Only the reading thread ever touches (and finally closes) the pipe; other threads wait for it with
    ``join`` and read ``text``. (Closing the pipe from another thread while the reader sat in ``read`` is
    what raised ``ValueError: I/O operation on closed file`` there now and then.)
    """

    def __init__(self, stream: IO[bytes], name: str, lines: int = 40) -> None:
        self._lines: deque[bytes] = deque(maxlen=lines)
        self._stream = stream
        self._thread = threading.Thread(target=self._read, daemon=True, name=name)
        self._thread.start()

    def _read(self) -> None:
        try:
            for raw in self._stream:
                self._lines.append(raw)
        except (OSError, ValueError):  # the process died mid-line
            pass
        finally:
            with contextlib.suppress(OSError, ValueError):
                self._stream.close()

    def join(self, timeout: float | None = 10) -> None:
        """Wait until the child closed its end (it exited) and every line is in."""
        self._thread.join(timeout)

    def text(self) -> str:
        """What was read so far, decoded."""
        return b"".join(list(self._lines)).decode("utf-8", "replace")


@lru_cache(maxsize=16)
def encoder_pixel_formats(encoder: str) -> tuple[str, ...]:
    """Pixel formats the binary's ``encoder`` accepts (empty when not listed); ``VideoError`` if it has none.

    Asked of the binary (``ffmpeg -h encoder=NAME``, its help text on stdout) because the binary encodes;
    PyAV's libraries are another build with other encoders and formats.
    """
    proc = _run(["-h", f"encoder={encoder}"])
    text = proc.stdout.decode("utf-8", "replace") + proc.stderr.decode("utf-8", "replace")
    if not re.search(rf"Encoder {re.escape(encoder)}\b", text):
        raise VideoError(f"--codec {encoder}: this ffmpeg has no such encoder")
    match = re.search(r"Supported pixel formats:([^\n]*)", text)
    return tuple(match.group(1).split()) if match else ()


def pixel_format_bits(pix_fmt: str | None) -> int:
    """Bits per sample of an ffmpeg pixel format name (8 when not stated)."""
    if not pix_fmt:
        return 8
    match = re.search(r"p(\d{2})(le|be)?$|(\d{2})(le|be)$", pix_fmt)
    if match:
        return int(match.group(1) or match.group(3))
    if pix_fmt in ("rgb48le", "rgb48be", "bgr48le", "rgba64le", "gray16le", "gray16be"):
        return 16
    return 8


# ------------------------------------------------------------------------------------------------ probing

# ITU-T H.273 code points (what FFmpeg's AVColor* enums hold) -> FFmpeg's names for them.
_RANGE_NAMES = {1: "tv", 2: "pc"}
_PRIMARIES_NAMES = {
    1: "bt709",
    4: "bt470m",
    5: "bt470bg",
    6: "smpte170m",
    7: "smpte240m",
    8: "film",
    9: "bt2020",
    10: "smpte428",
    11: "smpte431",
    12: "smpte432",
    22: "ebu3213",
}
_TRANSFER_NAMES = {
    1: "bt709",
    4: "gamma22",
    5: "gamma28",
    6: "smpte170m",
    7: "smpte240m",
    8: "linear",
    9: "log100",
    10: "log316",
    11: "iec61966-2-4",
    12: "bt1361e",
    13: "iec61966-2-1",
    14: "bt2020-10",
    15: "bt2020-12",
    16: "smpte2084",
    17: "smpte428",
    18: "arib-std-b67",
}
_MATRIX_NAMES = {
    0: "gbr",
    1: "bt709",
    4: "fcc",
    5: "bt470bg",
    6: "smpte170m",
    7: "smpte240m",
    8: "ycgco",
    9: "bt2020nc",
    10: "bt2020c",
    11: "smpte2085",
    12: "chroma-derived-nc",
    13: "chroma-derived-c",
    14: "ictcp",
}
# Disposition flags (AV_DISPOSITION_*).
_DEFAULT, _ATTACHED_PIC = 0x1, 0x400


@dataclass(frozen=True)
class ColorTags:
    """Colour description of a video stream, in ffmpeg's names (``None``: not stated)."""

    range: str | None = None
    matrix: str | None = None
    primaries: str | None = None
    transfer: str | None = None


@dataclass(frozen=True)
class Stream:
    """One stream of a media file, as its container and codec parameters describe it."""

    index: int
    kind: str  # video, audio, subtitle, data, attachment
    codec: str
    description: str
    language: str | None = None
    default: bool = False
    attached_pic: bool = False
    width: int | None = None
    height: int | None = None
    pix_fmt: str | None = None
    sar: Fraction | None = None
    fps: Fraction | None = None
    color: ColorTags = ColorTags()
    sample_rate: int | None = None
    time_base: Fraction | None = None
    #: Frames the container says the stream holds (MP4/MOV sample tables, AVI headers); ``None``: not said.
    declared_frames: int | None = None
    #: The stream's duration as the container states it, in seconds; ``None``: not stated.
    declared_seconds: float | None = None
    #: False when this FFmpeg has no decoder for ``codec``.
    decodable: bool = True


@dataclass(frozen=True)
class MediaInfo:
    """What a media file's container says about it."""

    path: Path
    format: str
    duration: float | None
    start: float
    streams: tuple[Stream, ...]
    chapters: int

    @property
    def video(self) -> Stream | None:
        """The first video stream that is a picture sequence (not cover art)."""
        return next((s for s in self.streams if s.kind == "video" and not s.attached_pic), None)

    def of_kind(self, kind: str) -> list[Stream]:
        """Streams of ``kind`` (video streams exclude cover art)."""
        return [s for s in self.streams if s.kind == kind and not s.attached_pic]


def _av() -> Any:
    """The ``av`` module (PyAV), with FFmpeg's own log lines kept off the terminal (errors come as exceptions)."""
    try:
        import av
    except ImportError:  # pragma: no cover - a declared dependency
        raise VideoError("video needs the PyAV package: pip install av") from None
    return av


def _av_reason(exc: BaseException) -> str:
    """PyAV's error as one short clause (``Invalid data found when processing input``)."""
    text = getattr(exc, "strerror", None) or str(exc)
    return " ".join(str(text).split()) or type(exc).__name__


def open_container(path: str | Path) -> Any:
    """Open ``path`` for reading with PyAV; ``VideoError("<path>: <cause>")`` when it cannot be read."""
    av = _av()
    path = Path(path)
    if not path.exists():
        raise VideoError(f"{path}: no such file")
    if path.is_dir():
        raise VideoError(f"{path}: is a folder, not a video")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: empty file (0 bytes)")
    try:
        return av.open(str(path), "r")
    except av.error.FFmpegError as exc:
        raise VideoError(f"{path}: not a video this ffmpeg can read ({_av_reason(exc)})") from None
    except (OSError, ValueError) as exc:
        raise VideoError(f"{path}: cannot be opened ({_av_reason(exc)})") from None


def _tag_seconds(text: str | None) -> float | None:
    """Matroska's per-stream ``DURATION`` tag (``00:00:01.000000000``) in seconds."""
    match = re.fullmatch(r"(\d+):(\d+):(\d+(?:\.\d+)?)", (text or "").strip())
    if not match:
        return None
    return int(match.group(1)) * 3600 + int(match.group(2)) * 60 + float(match.group(3))


def _has_decoder(codec: str) -> bool:
    av = _av()
    try:
        av.codec.Codec(codec, "r")
    except (av.codec.codec.UnknownCodecError, ValueError):
        return False
    return True


def _stream_of(s: Any) -> Stream:
    """A PyAV stream as a ``Stream`` record."""
    kind = s.type if s.type in ("video", "audio", "subtitle", "data", "attachment") else "data"
    cc = None
    with contextlib.suppress(Exception):
        cc = s.codec_context
    codec = (getattr(cc, "name", None) if cc is not None else None) or "none"
    if codec == "none" and kind == "attachment":
        codec = str(s.metadata.get("mimetype", "attachment"))
    disposition = int(getattr(s, "disposition", 0) or 0)
    language = s.metadata.get("language")
    tb = Fraction(s.time_base) if s.time_base else None
    declared_frames = int(s.frames) if getattr(s, "frames", 0) else None
    declared_seconds = None
    if s.duration and tb is not None:
        declared_seconds = float(s.duration * tb)
    else:
        declared_seconds = _tag_seconds(s.metadata.get("DURATION") or s.metadata.get("duration"))
    info: dict[str, Any] = {}
    if kind == "video" and cc is not None:
        fmt = getattr(cc, "pix_fmt", None)
        info["width"], info["height"] = (cc.width or None), (cc.height or None)
        info["pix_fmt"] = fmt
        sar = cc.sample_aspect_ratio
        if sar and sar.numerator and sar.denominator and Fraction(sar) != 1:
            info["sar"] = Fraction(sar)
        rate = s.average_rate or s.guessed_rate or s.base_rate
        info["fps"] = Fraction(rate) if rate else None
        # 2 is "unspecified" for every tag (and 0, except for the matrix, where it means RGB): left out.
        colorspace = getattr(cc, "colorspace", None)
        info["color"] = ColorTags(
            range=_RANGE_NAMES.get(int(getattr(cc, "color_range", 0) or 0)),
            matrix=_MATRIX_NAMES.get(2 if colorspace is None else int(colorspace)),
            primaries=_PRIMARIES_NAMES.get(int(getattr(cc, "color_primaries", 0) or 0)),
            transfer=_TRANSFER_NAMES.get(int(getattr(cc, "color_trc", 0) or 0)),
        )
        description = f"{codec}, {fmt or 'unknown pixel format'}, {cc.width}x{cc.height}"
    elif kind == "audio" and cc is not None:
        info["sample_rate"] = cc.sample_rate or None
        description = f"{codec}, {cc.sample_rate} Hz"
    else:
        description = codec
    return Stream(
        index=s.index,
        kind=kind,
        codec=codec,
        description=description,
        language=language if language and language != "und" else None,
        default=bool(disposition & _DEFAULT),
        attached_pic=bool(disposition & _ATTACHED_PIC),
        time_base=tb,
        declared_frames=declared_frames,
        declared_seconds=declared_seconds,
        decodable=_has_decoder(codec) if kind in ("video", "audio") else True,
        **info,
    )


def probe(path: str | Path) -> MediaInfo:
    """Streams, duration and chapters of ``path`` (headers only); ``VideoError("<path>: <cause>")`` if unreadable."""
    path = Path(path)
    with open_container(path) as container:
        streams = tuple(_stream_of(s) for s in container.streams)
        chapters = 0
        with contextlib.suppress(AttributeError, Exception):
            chapters = len(container.chapters())
        duration = container.duration / 1_000_000 if container.duration else None
        start = container.start_time / 1_000_000 if container.start_time else 0.0
        return MediaInfo(path, container.format.name, duration, start, streams, chapters)


@dataclass
class StreamTiming:
    """Packet timing of one stream from a demux-only pass (``time_base`` units, source timestamps)."""

    time_base: Fraction
    pts: list[int] = field(default_factory=list)  # every packet's pts, in presentation order (video only)
    count: int = 0
    #: Packets the demuxer flagged as damaged (cut short, failed checksum).
    corrupt: int = 0
    first: int | None = None
    end: int | None = None  # max(pts + duration)

    @property
    def seconds(self) -> float | None:
        """Duration from the first packet to the end of the last."""
        if self.first is None or self.end is None:
            return None
        return float((self.end - self.first) * self.time_base)


@dataclass
class PacketScan:
    """What a demux-only pass found: per requested stream its ``StreamTiming``, and why it stopped early, if it did."""

    timings: list[StreamTiming]
    #: The demuxer's error when reading stopped before the end of the file (damaged data), else ``None``.
    error: str | None = None


def packet_timing(path: str | Path, streams: list[int]) -> PacketScan:
    """Demux (no decoding) the streams with these indexes; per stream its packets' timing.

    Video pts are kept one by one (sorted, de-duplicated) for frame counting and gap detection, other
    streams only their extent. Packets without pts (AVI, raw streams) count at their dts. Packets the
    demuxer flags as discarded (before an edit list's start) are not counted.
    """
    av = _av()
    path = Path(path)
    timings: dict[int, StreamTiming] = {}
    error = None
    with open_container(path) as container:
        chosen = [container.streams[i] for i in streams]
        keep_pts = {s.index for s in chosen if s.type == "video"}
        for s in chosen:
            timings[s.index] = StreamTiming(Fraction(s.time_base) if s.time_base else Fraction(1, 1000))
        try:
            for packet in container.demux(chosen):
                pts = packet.pts if packet.pts is not None else packet.dts
                if pts is None:
                    continue  # the flush packet at the end
                if getattr(packet, "is_discard", False):
                    continue
                t = timings[packet.stream.index]
                t.count += 1
                t.corrupt += bool(getattr(packet, "is_corrupt", False))
                duration = int(packet.duration or 0)
                t.first = pts if t.first is None else min(t.first, pts)
                t.end = pts + duration if t.end is None else max(t.end, pts + duration)
                if packet.stream.index in keep_pts:
                    t.pts.append(pts)
        except av.error.FFmpegError as exc:
            error = _av_reason(exc)
    for i in keep_pts:
        timings[i].pts = sorted(set(timings[i].pts))
    return PacketScan([timings[i] for i in streams], error)


# ----------------------------------------------------------------------------------------------- colour


def is_hd(width: int, height: int) -> bool:
    """HD by the usual player rule (BT.709 assumed for untagged HD, BT.601 below)."""
    return height >= HD_HEIGHT or width >= HD_WIDTH


def decode_matrix(tags: ColorTags, width: int, height: int) -> str:
    """The scale filter's name of the matrix to turn the source's YUV into RGB (guessed by size if untagged)."""
    if tags.matrix in _SCALE_MATRIX:
        return _SCALE_MATRIX[tags.matrix]
    return "bt709" if is_hd(width, height) else "bt601"


def output_colour(source: ColorTags, src_size: tuple[int, int], out_size: tuple[int, int]) -> ColorTags:
    """Colour tags of the output: the source's where stated; BT.709 for HD outputs.

    The RGB values keep the source's primaries and transfer, so those tags carry over (BT.709 when
    unstated and the output is HD, SMPTE 170M for SD). The matrix is the one the encoder applies: BT.709
    for HD outputs (an SD source upscaled to HD is re-encoded with it, as players expect), BT.2020 kept
    for BT.2020 sources, and the source's (or BT.601) for SD outputs.
    """
    hd_out = is_hd(*out_size)
    default = "bt709" if hd_out else "smpte170m"
    if source.matrix in ("bt2020nc", "bt2020c"):
        matrix = source.matrix
    elif hd_out:
        matrix = "bt709"
    else:
        matrix = source.matrix if source.matrix in _SCALE_MATRIX else ("bt709" if is_hd(*src_size) else "smpte170m")
    return ColorTags(
        range=source.range or "tv",
        matrix=matrix,
        primaries=source.primaries or default,
        transfer=source.transfer or default,
    )


# -------------------------------------------------------------------------------------------------- decode

PIPE_FORMATS = {8: "rgb24", 16: "rgb48le"}


@dataclass
class DecodedFrame:
    """One decoded picture: source timestamp and packed RGB samples (H, W, 3), uint8 or uint16."""

    pts: int
    rgb: np.ndarray


def rotation_filters(degrees: float) -> list[tuple[str, str]]:
    """The filters that turn a picture stored with a display matrix of ``degrees`` (counter-clockwise) upright."""
    turn = round(degrees / 90) % 4
    return {0: [], 1: [("transpose", "cclock")], 2: [("hflip", ""), ("vflip", "")], 3: [("transpose", "clock")]}[turn]


class FrameReader:
    """Decode the video stream ``stream`` of ``path`` into packed RGB frames with their timestamps (PyAV).

    ``bits`` (8 or 16) picks rgb24 or rgb48le; ``matrix`` and ``in_range`` say how the source's YUV
    becomes RGB (the ``scale`` filter's names). Pictures stored turned (a display matrix) come out upright.
    ``seek`` (seconds, source timeline) starts decoding at the keyframe before that point; callers drop
    by pts what precedes their exact resume point. A packet the decoder rejects is counted in
    ``error_count`` (its picture is then missing from ``frames()``), and decoding goes on.
    """

    def __init__(
        self,
        path: str | Path,
        stream: int,
        *,
        bits: int = 8,
        matrix: str = "bt601",
        in_range: str = "tv",
        seek: float | None = None,
    ) -> None:
        self.path = Path(path)
        self.bits = bits
        self._matrix, self._range = matrix, in_range
        self._container = open_container(self.path)
        self._stream = self._container.streams[stream]
        # Slice threads only: with frame threads a rejected packet can take the frames decoding beside it down
        # silently (no error, fewer pictures), and every lost picture must be seen. Decoding is far faster
        # than any model, so it still keeps pace.
        self._stream.thread_type = "SLICE"
        self.time_base = Fraction(self._stream.time_base) if self._stream.time_base else Fraction(1, 1000)
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.frame_rate = Fraction(rate) if rate else None
        self.error_count = 0
        self._errors: deque[str] = deque(maxlen=50)
        self._seek = seek
        self._closed = False
        self._released = False
        #: The thread that made the reader and iterates ``frames()``: only it may close the container (PyAV
        #: objects are not thread-safe); ``close`` from any other thread only asks it to stop.
        self._owner = threading.get_ident()

    @property
    def errors(self) -> list[str]:
        """The last decoding errors (one clause each)."""
        return list(self._errors)

    def _graph(self, frame: Any) -> Any:
        av = _av()
        graph = av.filter.Graph()
        nodes = [
            graph.add_buffer(
                width=frame.width, height=frame.height, format=frame.format.name, time_base=self._stream.time_base
            )
        ]
        chain = rotation_filters(getattr(frame, "rotation", 0) or 0)
        chain.append(
            (
                "scale",
                f"in_color_matrix={self._matrix}:in_range={self._range}:flags=bicubic+accurate_rnd+full_chroma_int",
            )
        )
        chain.append(("format", PIPE_FORMATS[self.bits]))
        nodes += [graph.add(name, args) for name, args in chain]
        nodes.append(graph.add("buffersink"))
        graph.link_nodes(*nodes).configure()
        return graph

    def _packets(self) -> Iterator[Any]:
        av = _av()
        if self._seek is not None and self._seek > 0:
            with contextlib.suppress(av.error.FFmpegError):
                self._container.seek(int(self._seek / self.time_base), stream=self._stream, backward=True)
        try:
            yield from self._container.demux(self._stream)
        except av.error.FFmpegError as exc:  # the demuxer gave up mid-file: what was read is decoded
            self.error_count += 1
            self._errors.append(_av_reason(exc))

    def frames(self) -> Iterator[DecodedFrame]:
        """Decoded frames in presentation order; ``VideoError`` if the file cannot be read at all."""
        self._owner = threading.get_ident()  # the consuming thread, should it differ from the maker
        try:
            yield from self._decode()
        finally:
            self._release()

    def _decode(self) -> Iterator[DecodedFrame]:
        av = _av()
        dtype = np.dtype("<u2") if self.bits == 16 else np.dtype(np.uint8)
        graph = None
        shape: tuple[int, int, str] | None = None
        for packet in self._packets():
            if self._closed:
                return
            try:
                decoded = packet.decode()
            except av.error.FFmpegError as exc:
                self.error_count += 1
                self._errors.append(_av_reason(exc))
                continue
            for frame in decoded:
                if getattr(frame, "is_corrupt", False):
                    self.error_count += 1
                key = (frame.width, frame.height, frame.format.name)
                if graph is None or key != shape:
                    graph, shape = self._graph(frame), key
                pts = frame.pts if frame.pts is not None else frame.best_effort_timestamp
                graph.push(frame)
                out = graph.pull()
                rgb = out.to_ndarray()
                if rgb.dtype != dtype:
                    rgb = rgb.astype(dtype)
                yield DecodedFrame(int(pts or 0), rgb)

    def _release(self) -> None:
        if not self._released:
            self._released = True
            with contextlib.suppress(Exception):
                self._container.close()

    def close(self) -> None:
        """Stop decoding. From the thread that reads (it made the reader, or iterates ``frames()``) the file is
        released at once; from any other thread this only asks that thread to stop, and it releases the file."""
        self._closed = True
        if self._owner == threading.get_ident():
            self._release()


# -------------------------------------------------------------------------------------------------- encode


@dataclass(frozen=True)
class EncodeSettings:
    """How the video stream is encoded (the same for every segment, so segments join without re-encoding)."""

    encoder: str
    pix_fmt: str
    crf: float | None
    preset: str | None
    color: ColorTags
    sar: Fraction | None = None
    extra: tuple[str, ...] = ()

    @property
    def segment_format(self) -> tuple[str, str]:
        """(muxer, extension) of the segment files: NUT keeps any time base exactly; VP8/VP9 streams go in
        Matroska, whose colour elements keep the primaries and transfer their bitstream cannot state."""
        if self.encoder.startswith(("libvpx", "vp8", "vp9")):
            return "matroska", "mkv"
        return "nut", "nut"

    def args(self) -> list[str]:
        """ffmpeg output options for the encoder."""
        args = ["-c:v", self.encoder, "-pix_fmt", self.pix_fmt]
        if self.crf is not None:
            args += ["-crf", f"{self.crf:g}"]
            if self.encoder in ("libvpx-vp9", "libaom-av1"):
                args += ["-b:v", "0"]  # constant quality, not a bitrate cap
        if self.preset is not None:
            if self.encoder == "libvpx-vp9":
                args += (
                    ["-deadline", self.preset] if not self.preset.lstrip("-").isdigit() else ["-cpu-used", self.preset]
                )
            elif self.encoder == "libaom-av1":
                args += ["-cpu-used", self.preset]
            else:
                args += ["-preset", self.preset]
        if self.encoder == "libx265":
            args += ["-x265-params", "log-level=error"]
        if self.encoder == "libsvtav1":
            args += ["-svtav1-params", "enable-stat-report=0"]
        c = self.color
        for opt, value in (
            ("-color_range", c.range),
            ("-colorspace", c.matrix),
            ("-color_primaries", c.primaries),
            ("-color_trc", c.transfer),
        ):
            if value:
                args += [opt, value]
        return [*args, *self.extra]

    def filter(self, width: int, height: int) -> str:
        """The filter chain from the RGB pipe to the encoder's pixel format (matrix, range, SAR, even size)."""
        chain = []
        if needs_even(self.pix_fmt) and (width % 2 or height % 2):
            chain.append(f"crop={width // 2 * 2}:{height // 2 * 2}:0:0")
        if not self.pix_fmt.startswith(("rgb", "bgr", "gbr")):
            matrix = _SCALE_MATRIX.get(self.color.matrix or "", "bt709")
            chain.append(
                f"scale=out_color_matrix={matrix}:out_range={self.color.range or 'tv'}"
                ":flags=bicubic+accurate_rnd+full_chroma_int"
            )
        chain.append(f"format={self.pix_fmt}")
        # ffmpeg takes the colour description from the frames, over the encoder options: state it on them.
        c = self.color
        params = [
            f"{k}={v}"
            for k, v in (
                ("range", c.range),
                ("color_primaries", c.primaries),
                ("color_trc", c.transfer),
                ("colorspace", c.matrix),
            )
            if v
        ]
        if params:
            chain.append("setparams=" + ":".join(params))
        if self.sar is not None:
            chain.append(f"setsar={self.sar.numerator}/{self.sar.denominator}")
        return ",".join(chain)


def needs_even(pix_fmt: str) -> bool:
    """True for chroma-subsampled formats (4:2:0 / 4:2:2), which need an even width (and height for 4:2:0)."""
    return bool(re.match(r"^(yuv|yuvj|nv)(420|422|411|410)", pix_fmt))


class SegmentEncoder:
    """One ffmpeg encoder fed raw RGB frames with timestamps through an IVF pipe, writing a NUT file.

    ``time_base`` is the unit of the pts given to ``write``. The output is written under ``path``
    directly (callers give a temporary name and rename once ``close`` returned).
    """

    def __init__(
        self, path: str | Path, width: int, height: int, bits: int, time_base: Fraction, settings: EncodeSettings
    ) -> None:
        if not (0 < width < 65536 and 0 < height < 65536):
            raise VideoError(f"frames of {width} x {height} pixels are too large to encode")
        self.path = Path(path)
        self.width, self.height, self.bits = width, height, bits
        self.frames = 0
        args = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-nostats", "-loglevel", "error", "-y"]
        args += ["-f", "ivf", "-c:v", "rawvideo", "-i", "pipe:0", "-map", "0:v", "-vf", settings.filter(width, height)]
        args += ["-fps_mode", "passthrough", "-enc_time_base", f"{time_base.numerator}/{time_base.denominator}"]
        args += [*settings.args(), "-f", settings.segment_format[0], str(self.path)]
        self._proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        lower_priority(self._proc)
        assert self._proc.stderr is not None
        self._stderr = StderrTail(self._proc.stderr, "srcli-encoder-stderr")
        assert self._proc.stdin is not None
        self._stdin = self._proc.stdin
        header = struct.pack(
            "<4sHH4sHHIII4x",
            b"DKIF",
            0,
            32,
            IVF_TAGS[bits],
            width,
            height,
            time_base.denominator,
            time_base.numerator,
            0,
        )
        self._write(header)

    def _write(self, data: bytes | memoryview) -> None:
        try:
            self._stdin.write(data)
        except (BrokenPipeError, OSError):
            self._proc.wait()
            raise VideoError(f"the encoder stopped: {self._error()}") from None

    def _error(self) -> str:
        self._stderr.join(timeout=5)
        return _last_error(self._stderr.text())

    def write(self, pts: int, rgb: np.ndarray) -> None:
        """Send one frame (H, W, 3) of ``bits`` at ``pts`` (time-base units, increasing)."""
        if rgb.shape != (self.height, self.width, 3):
            raise VideoError(f"frame of shape {rgb.shape} does not match the stream ({self.height}, {self.width}, 3)")
        data = np.ascontiguousarray(rgb, dtype="<u2" if self.bits == 16 else np.uint8)
        self._write(struct.pack("<IQ", data.nbytes, pts & 0xFFFFFFFFFFFFFFFF))
        self._write(memoryview(data).cast("B"))
        self.frames += 1

    def close(self) -> None:
        """Finish the file; ``VideoError`` if ffmpeg failed."""
        with contextlib.suppress(BrokenPipeError, OSError):
            self._stdin.close()
        self._proc.wait()
        if self._proc.returncode != 0:
            raise VideoError(f"encoding failed ({self._error()})")
        self._stderr.join(timeout=5)

    def abort(self) -> None:
        """Kill the encoder and remove its output."""
        if self._proc.poll() is None:
            self._proc.kill()
        with contextlib.suppress(Exception):
            self._stdin.close()
        with contextlib.suppress(Exception):
            self._proc.wait(timeout=10)
        self._stderr.join(timeout=5)
        self.path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------- mux


@dataclass
class StreamChoice:
    """What happens to one source stream in the output."""

    stream: Stream
    action: str  # copy, transcode, drop
    args: list[str] = field(default_factory=list)
    note: str = ""


def plan_streams(info: MediaInfo | None, muxer: str, *, keep_audio: bool = True) -> list[StreamChoice]:
    """Which audio, subtitle and attachment streams of ``info`` go into a ``muxer`` file, and how.

    Streams are copied when the container takes their codec, otherwise transcoded (audio to AAC, Opus
    or MP3; text subtitles to the container's text format) with a note; what cannot be carried
    (bitmap subtitles in MP4, anything in AVI subtitles, data streams, cover art) is dropped with a note.
    """
    if info is None:
        return []
    choices: list[StreamChoice] = []
    video = info.video
    for s in info.streams:
        if video is not None and s.index == video.index:
            continue
        if s.kind == "audio":
            if not keep_audio:
                choices.append(StreamChoice(s, "drop", note="--no-audio"))
                continue
            allowed = _AUDIO_COPY.get(muxer)
            if allowed is None or s.codec in allowed:
                choices.append(StreamChoice(s, "copy", ["copy"]))
            else:
                target = _AUDIO_TRANSCODE[muxer]
                choices.append(
                    StreamChoice(s, "transcode", list(target), f"audio {s.codec} cannot go into {muxer}: {target[0]}")
                )
        elif s.kind == "subtitle":
            allowed = _SUBTITLE_COPY.get(muxer, set())
            if allowed is None or s.codec in allowed:
                choices.append(StreamChoice(s, "copy", ["copy"]))
            elif s.codec in _TEXT_SUBTITLES and muxer in _SUBTITLE_TRANSCODE:
                target = _SUBTITLE_TRANSCODE[muxer]
                choices.append(StreamChoice(s, "transcode", [target], f"subtitles {s.codec} -> {target}"))
            else:
                why = f"{s.codec} subtitles cannot go into {muxer}; use .mkv to keep them"
                choices.append(StreamChoice(s, "drop", note=why))
        elif s.kind == "attachment":
            if muxer == "matroska":
                choices.append(StreamChoice(s, "copy", ["copy"]))
            else:
                choices.append(StreamChoice(s, "drop", note=f"attachment ({s.codec}) kept only in .mkv"))
        elif s.kind == "video":
            what = "cover art" if s.attached_pic else "extra video stream"
            choices.append(StreamChoice(s, "drop", note=f"{what} #{s.index} not carried (only the first is upscaled)"))
        else:
            choices.append(StreamChoice(s, "drop", note=f"{s.kind} stream #{s.index} ({s.codec}) not carried"))
    return choices


def check_codec_for_container(encoder: str, muxer: str) -> None:
    """``VideoError`` when ``muxer`` cannot hold what ``encoder`` makes (e.g. H.264 in WebM)."""
    codec = _ENCODERS.get(encoder, (encoder, None))[0]
    allowed = _CONTAINER_VIDEO.get(muxer)
    if allowed is not None and encoder in _ENCODERS and codec not in allowed:
        raise VideoError(f"{muxer} cannot hold {codec} video: use --codec {' or '.join(sorted(allowed))}")


def default_crf(encoder: str) -> float | None:
    """The CRF srcli uses for ``encoder`` when ``--crf`` is not given (visually near-lossless)."""
    return _ENCODERS.get(encoder, ("", None))[1]


def _seconds(value: Fraction) -> str:
    """A duration for the concat demuxer, to the microsecond."""
    micro = round(value * 1_000_000)
    return f"{micro // 1_000_000}.{micro % 1_000_000:06d}"


def write_concat_list(path: Path, segments: list[tuple[Path, Fraction | None]]) -> None:
    """The concat demuxer's script: each segment with its duration (so joins fall on source timestamps)."""
    lines = ["ffconcat version 1.0"]
    for file, duration in segments:
        name = str(file.resolve()).replace("'", "'\\''")
        lines.append(f"file '{name}'")
        if duration is not None:
            lines.append(f"duration {_seconds(duration)}")
    write_text(path, "\n".join(lines) + "\n")


@dataclass(frozen=True)
class LastFrame:
    """The last frame of the joined video: its pts and how long it lasts, in ``time_base`` units, counted from
    the first segment's start (the concat output's timeline before ``-itsoffset``)."""

    pts: int
    duration: int
    time_base: Fraction


def _segment_time_base(path: Path) -> Fraction | None:
    """The time base a segment file's video stream was written in (the concat demuxer passes it on)."""
    with contextlib.suppress(VideoError, Exception), open_container(path) as container:
        tb = container.streams.video[0].time_base
        return Fraction(tb) if tb else None
    return None


def last_frame_filter(last: LastFrame, first_segment: Path, offset: Fraction, muxer: str) -> list[str]:
    """``-bsf:v setts=...`` arguments that give the last frame its duration (empty when it cannot be set).

    IVF carries no durations, so the encoder gives every packet a guessed one, and the last frame's decides
    how long the video lasts (a GIF's held last frame, a damaged source held to its declared end). Two
    packets can matter: the one shown last (highest pts), whose duration Matroska and others keep, gets
    ``end - PTS``; the one decoded last, whose duration MP4 and MOV keep as the last sample's (their track
    ends at its dts plus its duration, counted from the first dts), gets ``end + STARTDTS - DTS``. Without
    B-frame reordering at the end they are one packet and both give the same. Other packets pass unchanged.
    Timestamps are those of the segments' own time base.
    """
    tb = _segment_time_base(first_segment)
    if tb is None or last.duration <= 0:
        return []
    start = (Fraction(last.pts) * last.time_base + offset) / tb
    end = round((Fraction(last.pts + last.duration) * last.time_base + offset) / tb)
    threshold = f"{float(start - Fraction(1, 2)):.6f}"
    shown_last = f"if(gte(PTS\\,{threshold})\\,{end}-PTS\\,DURATION)"
    decoded_last = f"{end}+STARTDTS-DTS"
    if muxer in ("mp4", "mov"):
        expr = f"if(eq(NEXT_DTS\\,NOPTS)\\,{decoded_last}\\,{shown_last})"
    else:
        expr = f"if(gte(PTS\\,{threshold})\\,{end}-PTS\\,if(eq(NEXT_DTS\\,NOPTS)\\,{decoded_last}\\,DURATION))"
    return ["-bsf:v", f"setts=pts=PTS:dts=DTS:duration='{expr}'"]


def mux(
    concat_list: Path,
    output: Path,
    muxer: str,
    *,
    source: MediaInfo | None,
    choices: list[StreamChoice],
    video_offset: Fraction,
    last_frame: LastFrame | None = None,
    first_segment: Path | None = None,
) -> None:
    """Join the segments listed in ``concat_list`` (video copied) with the source's kept streams into ``output``.

    ``video_offset``: seconds between the source's start and its first video frame, so the video keeps
    its place against the audio and subtitles. ``last_frame`` (with ``first_segment``, whose time base
    the joined stream has) sets how long the last frame lasts.
    """
    args = ["-loglevel", "error", "-y"]
    if video_offset:
        args += ["-itsoffset", _seconds(video_offset)]
    args += ["-f", "concat", "-safe", "0", "-i", str(concat_list)]
    kept = [c for c in choices if c.action != "drop"]
    if source is not None:
        args += ["-i", str(source.path)]
    args += ["-map", "0:v:0", "-c:v", "copy"]
    if last_frame is not None and first_segment is not None:
        args += last_frame_filter(last_frame, first_segment, video_offset, muxer)
    counters = {"audio": 0, "subtitle": 0, "attachment": 0}
    letter = {"audio": "a", "subtitle": "s", "attachment": "t"}
    for c in kept:
        kind = c.stream.kind
        args += ["-map", f"1:{c.stream.index}", f"-c:{letter[kind]}:{counters[kind]}", *c.args]
        counters[kind] += 1
    if source is not None:
        args += ["-map_metadata", "1", "-map_chapters", "1" if muxer in _CHAPTER_CONTAINERS else "-1"]
        if source.video is not None:
            args += ["-map_metadata:s:v:0", f"1:s:{source.video.index}"]
    if muxer in ("mp4", "mov"):
        args += ["-movflags", "+faststart"]
    args += ["-f", muxer, str(output)]
    proc = _run(args)
    if proc.returncode != 0:
        raise VideoError(f"{output.name}: muxing failed ({_last_error(proc.stderr.decode('utf-8', 'replace'))})")


# ------------------------------------------------------------------------------------------------- checks


@dataclass
class Summary:
    """What a finished file holds, for comparing an output with its source."""

    info: MediaInfo
    frames: int
    video_seconds: float | None
    audio_seconds: list[float | None]
    pts: list[int]
    time_base: Fraction


def summarize(path: str | Path) -> Summary:
    """Streams, video frame count and stream durations of ``path`` (demux only)."""
    info = probe(path)
    video = info.video
    if video is None:
        raise VideoError(f"{path}: no video stream")
    audio = info.of_kind("audio")
    scan = packet_timing(path, [video.index] + [a.index for a in audio])
    if scan.error:
        raise VideoError(f"{path}: cannot read the packets ({scan.error})")
    v = scan.timings[0]
    # The container's own statement where it makes one (MP4's track duration: its per-packet durations are
    # decode-time steps, so their extent is not when the last frame ends), else the packets' extent.
    seconds = video.declared_seconds if video.declared_seconds is not None else v.seconds
    return Summary(info, len(v.pts), seconds, [t.seconds for t in scan.timings[1:]], v.pts, v.time_base)
