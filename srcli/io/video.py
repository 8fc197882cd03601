"""Video files through ffmpeg pipes: probe, decode raw frames with their timestamps, encode segments, mux.

ffmpeg is the binary bundled with ``imageio-ffmpeg`` (no system ffmpeg needed; ``IMAGEIO_FFMPEG_EXE``
points elsewhere). It has no ffprobe, so streams are read from the header dump of ``ffmpeg -i`` and
packet timing from ``-f framecrc`` with ``-c copy`` (a demux-only pass, no decoding).

Frames travel as packed RGB, 8 bits (``rgb24``) or 16 bits (``rgb48le``) per sample, and never touch
the disk. Timestamps are carried exactly, so variable frame rate survives:

- decoding: ``-copyts -fps_mode passthrough`` keeps every decoded frame once, at its stream
  timestamp; a ``showinfo`` filter at the end of the chain logs each frame's pts (and size) on stderr
  before its bytes reach stdout, in the same order;
- encoding: frames go into ffmpeg as an IVF stream (a 32-byte header, then a 12-byte size + pts
  header per frame) of raw RGB, which carries one 64-bit timestamp per frame in any time base;
  ``-enc_time_base`` keeps the source's, so nothing is rounded to a guessed frame rate.

Encoded video is written in NUT segments (NUT keeps any time base and takes every codec used here;
VP8/VP9 go in Matroska, see ``EncodeSettings.segment_format``);
``mux`` joins them with the concat demuxer (explicit durations, so the joins fall on the source's
timestamps) and adds the source's audio, subtitles and chapters.
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
from queue import Queue
from typing import IO

import numpy as np

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
_RANGES = {"tv", "pc"}
_MATRICES = set(_SCALE_MATRIX) | {"gbr", "ycgco", "unknown", "ictcp", "chroma-derived-nc", "chroma-derived-c"}
_PRIMARIES = {"bt709", "bt470m", "bt470bg", "smpte170m", "smpte240m", "film", "bt2020", "smpte428", "smpte431"}
_PRIMARIES |= {"smpte432", "jedec-p22", "ebu3213"}
_TRANSFERS = {"bt709", "gamma22", "gamma28", "smpte170m", "smpte240m", "linear", "log100", "log316", "bt1361e"}
_TRANSFERS |= {"iec61966-2-4", "iec61966-2-1", "bt2020-10", "bt2020-12", "smpte2084", "smpte428", "arib-std-b67"}
IVF_TAGS = {8: b"RGB\x18", 16: b"RGB0"}  # ffmpeg's raw tags for rgb24 and rgb48le ("RGB" + bits per pixel)
PIPE_FORMATS = {8: "rgb24", 16: "rgb48le"}
_NOPTS = -(2**63)  # AV_NOPTS_VALUE as framecrc prints it


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


#: Niceness of the decoder and encoder processes: the model's threads (or the one feeding the GPU) come first,
#: ffmpeg takes the rest of the CPU; with bounded queues it only needs to keep pace.
FFMPEG_NICE = 5


def lower_priority(proc: subprocess.Popen[bytes]) -> None:
    """Lower ``proc``'s CPU priority (POSIX; best effort, right after start so its threads inherit it)."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, proc.pid, os.getpriority(os.PRIO_PROCESS, 0) + FFMPEG_NICE)


def _run(args: list[str], *, timeout: float | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [ffmpeg_exe(), "-nostdin", "-hide_banner", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def _last_error(stderr: str, path: str | Path | None = None) -> str:
    """The most telling line of ffmpeg's stderr: the last error-looking one, without the path prefix."""
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


@lru_cache(maxsize=16)
def encoder_pixel_formats(encoder: str) -> tuple[str, ...]:
    """Pixel formats ``encoder`` accepts (empty when ffmpeg does not list them); ``VideoError`` if unknown."""
    proc = _run(["-h", f"encoder={encoder}"])
    text = proc.stdout.decode("utf-8", "replace") + proc.stderr.decode("utf-8", "replace")
    if f"Encoder {encoder} [" not in text and not re.search(rf"Encoder {re.escape(encoder)}\b", text):
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


@dataclass(frozen=True)
class ColorTags:
    """Colour description of a video stream, in ffmpeg's names (``None``: not stated)."""

    range: str | None = None
    matrix: str | None = None
    primaries: str | None = None
    transfer: str | None = None


@dataclass(frozen=True)
class Stream:
    """One stream of a media file, as ``ffmpeg -i`` describes it."""

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


@dataclass(frozen=True)
class MediaInfo:
    """What ``ffmpeg -i`` says about a file."""

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


_STREAM_RE = re.compile(
    r"^\s*Stream #0:(\d+)(?:\[0x[0-9a-fA-F]+\])?(?:\(([^)]*)\))?: (Video|Audio|Subtitle|Data|Attachment): (.*)$"
)


def _split_top(text: str) -> list[str]:
    """Split on ", " outside parentheses and brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return [p for p in parts if p]


def _rate(text: str) -> Fraction | None:
    """'23.98' / '25' / '90k' -> Fraction (23.98 -> 24000/1001, 29.97 -> 30000/1001)."""
    mult = 1000 if text.endswith("k") else 1
    try:
        value = float(text.rstrip("k")) * mult
    except ValueError:
        return None
    if value != int(value):
        # ffmpeg prints NTSC rates (N*1000/1001) rounded to two decimals.
        ntsc = Fraction(round(value * 1.001) * 1000, 1001)
        if abs(float(ntsc) - value) < 0.006:
            return ntsc
    return Fraction(value).limit_denominator(1000)


def parse_color(paren: str) -> ColorTags:
    """The parenthesised part after the pixel format: ``(tv, bt709, progressive)``, ``(pc, bt470bg/bt709/...)``."""
    tags: dict[str, str | None] = {"range": None, "matrix": None, "primaries": None, "transfer": None}
    for token in (t.strip() for t in paren.split(",")):
        if token in _RANGES:
            tags["range"] = token
        elif "/" in token:
            parts = token.split("/")
            if len(parts) == 3:
                for key, value in zip(("matrix", "primaries", "transfer"), parts, strict=True):
                    tags[key] = None if value in ("unknown", "reserved", "unspecified") else value
        elif token in _MATRICES or token in _PRIMARIES or token in _TRANSFERS:
            # One name stands for all three when they agree.
            tags["matrix"] = token if token in _MATRICES else None
            tags["primaries"] = token if token in _PRIMARIES else None
            tags["transfer"] = token if token in _TRANSFERS else None
    return ColorTags(**tags)


def _parse_stream(match: re.Match[str]) -> Stream:
    index, language, kind, rest = int(match.group(1)), match.group(2), match.group(3).lower(), match.group(4)
    default = "(default)" in rest
    attached = "(attached pic)" in rest
    rest = re.sub(
        r"\s*\((default|attached pic|forced|dub|original|comment|lyrics|karaoke|hearing impaired|"
        r"visual impaired|clean effects|captions|descriptions|metadata|dependent|still image)\)",
        "",
        rest,
    )
    parts = _split_top(rest)
    codec = parts[0].split(" ")[0] if parts else "none"
    info: dict[str, object] = {}
    if kind == "video":
        for part in parts[1:]:
            fmt = re.match(r"^([a-z0-9_]+)(?:\((.*)\))?$", part)
            size = re.match(r"^(\d+)x(\d+)(?: \[SAR (\d+):(\d+) DAR \d+:\d+\])?", part)
            if size:
                info["width"], info["height"] = int(size.group(1)), int(size.group(2))
                if size.group(3) and int(size.group(4)):
                    info["sar"] = Fraction(int(size.group(3)), int(size.group(4)))
            elif part.endswith(" fps"):
                info["fps"] = _rate(part[:-4])
            elif fmt and "pix_fmt" not in info and not part.endswith(("tbr", "tbn", "tbc", "kb/s")):
                info["pix_fmt"] = fmt.group(1)
                if fmt.group(2):
                    info["color"] = parse_color(fmt.group(2))
    elif kind == "audio":
        for part in parts[1:]:
            hz = re.match(r"^(\d+) Hz$", part)
            if hz:
                info["sample_rate"] = int(hz.group(1))
    return Stream(
        index=index,
        kind=kind,
        codec=codec,
        description=rest.strip(),
        language=language if language and language != "und" else None,
        default=default,
        attached_pic=attached,
        **info,  # type: ignore[arg-type]
    )


def probe(path: str | Path) -> MediaInfo:
    """Streams, duration and chapters of ``path``; ``VideoError("<path>: <cause>")`` when ffmpeg cannot read it."""
    path = Path(path)
    if not path.exists():
        raise VideoError(f"{path}: no such file")
    if path.is_dir():
        raise VideoError(f"{path}: is a folder, not a video")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: empty file (0 bytes)")
    proc = _run(["-i", str(path)], timeout=120)
    text = proc.stderr.decode("utf-8", "replace")
    head = re.search(r"^Input #0, ([^,]+(?:,[^ ]+)*), from ", text, re.M)
    if head is None:
        raise VideoError(f"{path}: not a video ffmpeg can read ({_last_error(text, path)})")
    duration, start = None, 0.0
    dur = re.search(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)", text)
    if dur:
        duration = int(dur.group(1)) * 3600 + int(dur.group(2)) * 60 + float(dur.group(3))
    st = re.search(r"start: (-?\d+(?:\.\d+)?)", text)
    if st:
        start = float(st.group(1))
    streams = tuple(_parse_stream(m) for m in (_STREAM_RE.match(ln) for ln in text.splitlines()) if m)
    chapters = len(re.findall(r"^\s*Chapter #0:\d+:", text, re.M))
    return MediaInfo(path, head.group(1), duration, start, streams, chapters)


@dataclass
class StreamTiming:
    """Packet timing of one stream from a demux-only pass (``time_base`` units, source timestamps)."""

    time_base: Fraction
    pts: list[int] = field(default_factory=list)  # every packet's pts, in presentation order (video only)
    count: int = 0
    first: int | None = None
    end: int | None = None  # max(pts + duration)

    @property
    def seconds(self) -> float | None:
        """Duration from the first packet to the end of the last."""
        if self.first is None or self.end is None:
            return None
        return float((self.end - self.first) * self.time_base)


def packet_timing(path: str | Path, streams: list[int]) -> list[StreamTiming]:
    """Demux (no decoding) the streams with these indexes; per stream its packets' timing.

    ``-copyts`` keeps the file's own timestamps; video pts are kept one by one (sorted, de-duplicated)
    for frame counting and gap detection, other streams only their extent.
    """
    if not streams:
        return []
    args = ["-loglevel", "error", "-copyts", "-i", str(path)]
    for index in streams:
        args += ["-map", f"0:{index}"]
    args += ["-c", "copy", "-f", "framecrc", "-"]
    proc = subprocess.Popen(
        [ffmpeg_exe(), "-nostdin", "-hide_banner", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    timings: dict[int, StreamTiming] = {}
    keep_pts: set[int] = set()
    stderr_tail: deque[bytes] = deque(maxlen=20)
    drain = threading.Thread(target=lambda: stderr_tail.extend(proc.stderr or []), daemon=True)
    drain.start()
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.decode("ascii", "replace")
        if line.startswith("#"):
            tb = re.match(r"#tb (\d+): (\d+)/(\d+)", line)
            if tb:
                timings[int(tb.group(1))] = StreamTiming(Fraction(int(tb.group(2)), int(tb.group(3))))
            kind = re.match(r"#media_type (\d+): video", line)
            if kind:
                keep_pts.add(int(kind.group(1)))
            continue
        fields_ = line.split(",")
        if len(fields_) < 5:
            continue
        try:
            idx, dts, pts, dur = int(fields_[0]), int(fields_[1]), int(fields_[2]), int(fields_[3])
        except ValueError:
            continue
        if pts == _NOPTS:  # AVI and raw streams: packets carry decode times only
            pts = dts
        t = timings.get(idx)
        if t is None:
            continue
        t.count += 1
        t.first = pts if t.first is None else min(t.first, pts)
        t.end = pts + dur if t.end is None else max(t.end, pts + dur)
        if idx in keep_pts:
            t.pts.append(pts)
    proc.wait()
    drain.join(timeout=5)
    if proc.returncode != 0:
        message = _last_error(b"".join(stderr_tail).decode("utf-8", "replace"), path)
        raise VideoError(f"{path}: cannot read the packets ({message})")
    for i in keep_pts:
        if i in timings:
            timings[i].pts = sorted(set(timings[i].pts))
    return [timings.get(i, StreamTiming(Fraction(1, 1000))) for i in range(len(streams))]


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


class _StderrWatcher:
    """Reads an ffmpeg's stderr in a thread: showinfo frame lines into a queue, errors kept for messages."""

    _FRAME = re.compile(r"\bn:\s*(\d+)\s+pts:\s*(-?\d+)\b.*?\bs:(\d+)x(\d+)")
    _TB = re.compile(r"config in time_base: (\d+)/(\d+), frame_rate: (\d+)/(\d+)")

    def __init__(self, stream: IO[bytes]) -> None:
        self.frames: Queue[tuple[int, int, int] | None] = Queue()
        self.time_base: Fraction | None = None
        self.frame_rate: Fraction | None = None
        self.errors: deque[str] = deque(maxlen=50)
        self.error_count = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True, name="srcli-ffmpeg-stderr")
        self._thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        try:
            for raw in stream:
                line = raw.decode("utf-8", "replace").rstrip()
                if "Parsed_showinfo" in line:
                    frame = self._FRAME.search(line)
                    if frame:
                        self.frames.put((int(frame.group(2)), int(frame.group(3)), int(frame.group(4))))
                        continue
                    tb = self._TB.search(line)
                    if tb:
                        self.time_base = Fraction(int(tb.group(1)), int(tb.group(2)))
                        if int(tb.group(4)):
                            self.frame_rate = Fraction(int(tb.group(3)), int(tb.group(4)))
                    continue
                if "[error]" in line or "[fatal]" in line:
                    self.error_count += 1
                    self.errors.append(re.sub(r"^\[[^\]]+\]\s*", "", line).replace("[error] ", "").strip())
        finally:
            self.frames.put(None)

    def last_error(self) -> str:
        return self.errors[-1] if self.errors else "ffmpeg failed without a message"

    def join(self) -> None:
        self._thread.join(timeout=10)


@dataclass
class DecodedFrame:
    """One decoded picture: source timestamp and packed RGB samples (H, W, 3), uint8 or uint16."""

    pts: int
    rgb: np.ndarray


class FrameReader:
    """Decode the video stream ``stream`` of ``path`` into packed RGB frames with their timestamps.

    ``bits`` (8 or 16) picks rgb24 or rgb48le. ``seek`` (seconds, source timeline) starts decoding
    near a later point (frames before it are dropped by ffmpeg; callers drop by pts what precedes
    their exact resume point). Iterate ``frames()``; ``time_base`` is known from the first frame on.
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
        pix = PIPE_FORMATS[bits]
        chain = (
            f"scale=in_color_matrix={matrix}:in_range={in_range}:flags=bicubic+accurate_rnd+full_chroma_int,"
            f"format={pix},showinfo=checksum=0"
        )
        args = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-nostats", "-loglevel", "level+info"]
        if seek is not None and seek > 0:
            args += ["-ss", f"{seek:.6f}"]
        args += ["-copyts", "-i", str(self.path), "-map", f"0:{stream}", "-an", "-sn", "-dn"]
        args += ["-vf", chain, "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", pix, "pipe:1"]
        self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        lower_priority(self._proc)
        assert self._proc.stderr is not None
        self._watch = _StderrWatcher(self._proc.stderr)
        self._closed = False

    @property
    def time_base(self) -> Fraction | None:
        """The decoded frames' time base (from the filter graph)."""
        return self._watch.time_base

    @property
    def frame_rate(self) -> Fraction | None:
        """The stream's nominal frame rate as the decoder sees it."""
        return self._watch.frame_rate

    @property
    def error_count(self) -> int:
        """Error lines ffmpeg logged while decoding (damaged data it concealed or dropped)."""
        return self._watch.error_count

    @property
    def errors(self) -> list[str]:
        """The last error lines ffmpeg logged."""
        return list(self._watch.errors)

    def frames(self) -> Iterator[DecodedFrame]:
        """Decoded frames in presentation order; raises ``VideoError`` if ffmpeg fails."""
        assert self._proc.stdout is not None
        out = self._proc.stdout
        dtype = np.dtype("<u2") if self.bits == 16 else np.dtype(np.uint8)
        while True:
            meta = self._watch.frames.get()
            if meta is None:
                break
            pts, w, h = meta
            buf = np.empty((h, w, 3), dtype=dtype)
            view = memoryview(buf).cast("B")
            got = 0
            while got < len(view):
                n = out.readinto(view[got:])
                if not n:
                    break
                got += n
            if got < len(view):
                break
            del view
            yield DecodedFrame(pts, buf)
            del buf
        # The stream is over: make sure ffmpeg ended well.
        rest = out.read()
        self._proc.wait()
        self._watch.join()
        if self._proc.returncode != 0 and not self._closed:
            raise VideoError(f"{self.path}: decoding failed ({_last_error(self._watch.last_error(), self.path)})")
        if rest:
            log.debug("%s: %d trailing bytes from the decoder", self.path, len(rest))

    def close(self) -> None:
        """Stop the decoder (early exit or error elsewhere)."""
        self._closed = True
        if self._proc.poll() is None:
            self._proc.kill()
        with contextlib.suppress(Exception):
            self._proc.wait(timeout=10)
        for stream in (self._proc.stdout, self._proc.stderr):
            with contextlib.suppress(Exception):
                stream.close()  # type: ignore[union-attr]


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
        self._stderr: deque[bytes] = deque(maxlen=40)
        assert self._proc.stderr is not None
        self._drain = threading.Thread(
            target=lambda: self._stderr.extend(self._proc.stderr or []), daemon=True, name="srcli-encoder-stderr"
        )
        self._drain.start()
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
        self._drain.join(timeout=5)
        return _last_error(b"".join(self._stderr).decode("utf-8", "replace"))

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
        self._drain.join(timeout=5)

    def abort(self) -> None:
        """Kill the encoder and remove its output."""
        if self._proc.poll() is None:
            self._proc.kill()
        with contextlib.suppress(Exception):
            self._stdin.close()
        with contextlib.suppress(Exception):
            self._proc.wait(timeout=10)
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
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def mux(
    concat_list: Path,
    output: Path,
    muxer: str,
    *,
    source: MediaInfo | None,
    choices: list[StreamChoice],
    video_offset: Fraction,
) -> None:
    """Join the segments listed in ``concat_list`` (video copied) with the source's kept streams into ``output``.

    ``video_offset``: seconds between the source's start and its first video frame, so the video keeps
    its place against the audio and subtitles.
    """
    args = ["-loglevel", "error", "-y"]
    if video_offset:
        args += ["-itsoffset", _seconds(video_offset)]
    args += ["-f", "concat", "-safe", "0", "-i", str(concat_list)]
    kept = [c for c in choices if c.action != "drop"]
    if source is not None:
        args += ["-i", str(source.path)]
    args += ["-map", "0:v:0", "-c:v", "copy"]
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
    timings = packet_timing(path, [video.index] + [a.index for a in audio])
    v = timings[0]
    return Summary(info, len(v.pts), v.seconds, [t.seconds for t in timings[1:]], v.pts, v.time_base)
