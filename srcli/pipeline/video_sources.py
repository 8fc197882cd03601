"""Where the video job's frames come from: a video file (decoded with PyAV) or a folder of images.

Both are a ``Source``: picture size, bit depth, time base, the timestamps the source holds and
``items()``, which yields each frame as an ``Item`` (index in the output, pts, pixels). A damaged
frame of a video file (a packet the decoder could not turn into a picture) is found by comparing the
decoded timestamps with the packets' and either stops the job or comes out as an ``Item`` without
pixels, shown as the previous frame; a file cut short (fewer packets than its container declares) is
found by ``VideoFile.scan``. Also here: ``frame_files`` (natural order), ``parse_fps`` and
the reading of a folder's ``timestamps.txt``.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from srcli.errors import UsageError
from srcli.io.images import IMAGE_SUFFIXES
from srcli.io.video import (
    ColorTags,
    DecodedFrame,
    FrameReader,
    MediaInfo,
    VideoError,
    decode_matrix,
    packet_timing,
    pixel_format_bits,
    probe,
)
from srcli.pipeline.video_report import BadFrameMode, VideoFileReport

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger("srcli.upscale")

#: Written beside frames by ``frames=True`` (mkvmerge's "timestamp format v2": one time in ms per line).
TIMESTAMPS_FILE = "timestamps.txt"


def fps_conflict(folder: Path) -> str:
    """The refusal of ``--fps`` for a folder whose ``timestamps.txt`` already times its frames."""
    return (
        f"{folder}: --fps conflicts with its {TIMESTAMPS_FILE}, which times every frame; "
        f"leave out --fps to keep those times, or remove {TIMESTAMPS_FILE} to time the frames by --fps"
    )


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


def read_timestamps(path: Path) -> tuple[list[Fraction], Fraction | None]:
    """A timestamps file (ms per line, ``#`` comments) -> (seconds per frame, end of the last frame or ``None``).

    The end comes from a ``# end <ms>`` comment (written by ``--frames``; other tools skip it as a comment).
    ``VideoError`` naming the file and line for anything else.
    """
    out: list[Fraction] = []
    end = None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise VideoError(f"{path}: cannot be read ({exc})") from None
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        try:
            if line.startswith("# end "):
                end = Fraction(line.removeprefix("# end ").strip()) / 1000
            elif line and not line.startswith("#"):
                out.append(Fraction(line) / 1000)
        except (ValueError, ZeroDivisionError):
            raise VideoError(f"{path}: line {number} is not a time in milliseconds: {line[:40]!r}") from None
    return out, end


@dataclass
class Item:
    """A frame between stages: its index in the output, source pts, pixels (``None``: repeat the previous)."""

    index: int
    pts: int
    rgb: np.ndarray | None
    bad: bool = False


class Source:
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
    ) -> Iterator[Item]:
        """Each frame from ``start_index`` (at ``start_pts`` and after, when resuming) as an ``Item``."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop reading."""


class VideoFile(Source):
    """A video file decoded with PyAV; ``scan()`` (packet timing, audio durations, damage) precedes ``items()``."""

    def __init__(self, path: Path, max_pixels: int | None) -> None:
        self.path = path
        info = probe(path)
        video = info.video
        if video is None:
            kinds = sorted({s.kind for s in info.streams}) or ["no streams"]
            raise VideoError(f"{path}: no video stream ({', '.join(kinds)} only); nothing to upscale")
        if video.codec == "none" or not video.decodable or video.pix_fmt in (None, "none"):
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
        self.time_base = video.time_base or Fraction(1, 1000)
        self.missing_frames = 0
        self._reader: FrameReader | None = None

    def scan(self, report: VideoFileReport, mode: BadFrameMode) -> None:
        """The demux-only pass: the video's packet timestamps (frame count, gaps) and the audio durations.

        A source whose packets end before what its container declares (frames, or the video stream's
        duration) is damaged, typically cut short: with ``mode`` ``stop`` that fails here, before any
        work, naming how many of the declared frames are there; with ``skip`` the missing frames are
        reported and the last frame is held to the declared end, so the output keeps the declared duration.
        """
        audio = self.info.of_kind("audio") if self.info else []
        scan = packet_timing(self.path, [self.video.index] + [a.index for a in audio])
        v = scan.timings[0]
        self.time_base = v.time_base
        self.expected = v.pts
        self.end_pts = v.end
        self.audio_seconds = {a.index: t.seconds for a, t in zip(audio, scan.timings[1:], strict=True)}
        if not v.pts:
            why = f" ({scan.error})" if scan.error else ""
            raise VideoError(f"{self.path}: the video stream holds no readable frames{why}")
        declared = self.video.declared_frames
        report.declared_frames = declared
        report.declared_seconds = self.video.declared_seconds
        tb = self.time_base
        deltas = [b - a for a, b in zip(v.pts, v.pts[1:], strict=False)]
        step = min(deltas) if deltas else None
        declared_end = None
        if self.video.declared_seconds is not None:
            declared_end = v.pts[0] + round(Fraction(self.video.declared_seconds).limit_denominator(10**9) / tb)
        found_end = v.end if v.end is not None else v.pts[-1]
        missing = max(0, declared - len(v.pts)) if declared else 0
        # The duration says so too (Matroska declares no frame count): short by more than the longest frame.
        longest = max(deltas) if deltas else None
        short_by_time = (
            declared_end is not None and longest is not None and declared_end - found_end > longest + round(0.001 / tb)
        )
        if not missing and short_by_time and step:
            missing = round((declared_end - found_end) / step)  # type: ignore[operator]
        if not missing:
            return
        intact = len(v.pts) - v.corrupt
        data_ends = float((found_end - v.pts[0]) * tb)
        of_what = f"{declared} frames" if declared else f"{self.video.declared_seconds:.3f} s"
        if mode == "stop":
            detail = f" of {self.video.declared_seconds:.3f} s" if self.video.declared_seconds else ""
            raise VideoError(
                f"{self.path}: damaged: only {intact} of the {of_what} its container declares are in the file "
                f"(the data ends at {data_ends:.3f} s{detail}; cut short?); "
                "--on-bad-frame skip upscales what is there and holds the last frame to the declared end"
            )
        self.missing_frames = missing
        report.missing_frames = missing
        if declared_end is not None and declared_end > found_end:
            self.end_pts = declared_end
        note = (
            f"damaged source: {intact} of the {of_what} its container declares are in the file; "
            f"the last frame is held to the declared end ({float((self.end_pts - v.pts[0]) * tb):.3f} s)"
        )
        report.notes.append(note)
        log.warning("%s: %s", self.path, note)

    def first_picture_pts(self) -> int | None:
        """The pts of the first picture the decoder gives (``None``: none): where ``items()`` starts a whole video.

        Packets before it (edit lists, leading B-frames) are not frames; an executor that splits the video by
        timestamp needs this to cut it where a whole run does.
        """
        reader = self._reader_for(None)
        try:
            first = next(iter(reader.frames()), None)
            return None if first is None else first.pts
        finally:
            reader.close()

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
    ) -> Iterator[Item]:
        """Decoded frames as ``Item``s; a packet without a picture stops (``stop``) or comes as a damaged item."""
        tb = self.time_base
        expected = [p for p in (self.expected or []) if start_pts is None or p >= start_pts]
        seek = None
        if start_pts is not None:
            # Land a little before the resume point (keyframe seek; the decoder starts at the keyframe before the
            # seek point); the frames between it and the resume point are dropped here by timestamp.
            seek = max(0.0, float(start_pts * tb) - 1.0) or None
        reader, frames = self._decoded(seek, start_pts)
        index = start_index

        def bad(pts: int) -> Item:
            """The damaged frame at ``pts``: an error (``stop``) or an item without pixels (``skip``)."""
            nonlocal index
            t = float(pts * tb)
            if mode == "stop":
                raise VideoError(
                    f"{self.path}: frame {index} at {t:.3f} s could not be decoded (damaged data); "
                    "--on-bad-frame skip shows the previous frame in its place"
                )
            log.warning("%s: frame %d at %.3f s is damaged: the previous frame is shown instead", self.path, index, t)
            report.bad_frames.append({"index": index, "time": round(t, 6)})
            item = Item(index, pts, None, bad=True)
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
                yield Item(index, frame.pts, frame.rgb)
                index += 1
            while j < len(expected):
                yield bad(expected[j])
                j += 1
        finally:
            report.decoder_errors += reader.error_count
            reader.close()

    def close(self) -> None:
        """Stop decoding (see ``FrameReader.close`` for which thread releases the file)."""
        if self._reader is not None:
            self._reader.close()


def _first_error(reader: FrameReader) -> str:
    errors = reader.errors
    return errors[0] if errors else "the decoder gave no picture"


class FrameFolder(Source):
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
        stamps, end = read_timestamps(stamps_file) if stamps_file.is_file() else (None, None)
        if stamps is not None and fps is not None:
            raise UsageError(fps_conflict(path))
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
            times = stamps + ([end] if end is not None else [])
            unit = Fraction(1, 1000) if all((s * 1000).denominator == 1 for s in times) else Fraction(1, 1_000_000)
            self.time_base = unit
            self.expected = [round(s / unit) for s in stamps]
            if any(b <= a for a, b in zip(self.expected, self.expected[1:], strict=False)):
                raise VideoError(f"{stamps_file}: timestamps must increase")
            last = self.expected[-1] - self.expected[-2] if len(self.expected) > 1 else round(Fraction(1, 25) / unit)
            self.end_pts = self.expected[-1] + last
            if end is not None and round(end / unit) > self.expected[-1]:
                self.end_pts = round(end / unit)  # the last frame's own length, from the "# end" line
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
    ) -> Iterator[Item]:
        """The image files from ``start_index`` on, at their timestamps; all must have the first one's size."""
        from srcli.io.imagefile import read_image

        assert self.expected is not None
        for index in range(start_index, len(self.files)):
            decoded = read_image(self.files[index], max_pixels=self._max_pixels)
            if decoded.size != (self.width, self.height):
                raise VideoError(
                    f"{self.files[index]}: {decoded.size[0]} x {decoded.size[1]} pixels, but the first frame has "
                    f"{self.width} x {self.height}; all frames must have the same size"
                )
            yield Item(index, self.expected[index], _quantize(decoded.frames[0].rgb, self.bits))


def _quantize(rgb: np.ndarray, bits: int) -> np.ndarray:
    from srcli.io.imagefile import quantize

    return quantize(rgb, 16 if bits == 16 else 8)
