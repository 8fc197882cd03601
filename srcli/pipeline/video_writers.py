"""Where the video job's frames go: segment files of a video, or a folder of image files.

``SegmentWriter`` encodes frames into segments in a hidden work folder beside the output
(``work_dir``), each recorded in the ``Manifest`` once complete, so that ``--resume`` can start
after the last one; ``open_work_dir`` sets that folder up for a run (fresh, or resumed).
``FrameWriter`` writes ``--frames`` outputs, one image file per frame, into that work folder too;
``write_timestamps`` adds the timestamps file, and ``commit_frames_folder`` swaps the complete set
in for the output folder (an older set is removed only then). Both writers show the previous frame
in place of a damaged one. Every file is written through ``srcli.atomic``: under its final name it is
complete, or absent.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from srcli.atomic import commit_file, fsync_folder, is_temp_file, stale_temp_files, temp_name, write_text
from srcli.io.video import EncodeSettings, SegmentEncoder, VideoError
from srcli.pipeline.video_sources import Item

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger("srcli.upscale")

FRAME_NAME = "frame_{n:06d}.{ext}"
MANIFEST = "manifest.json"


class Interrupted(Exception):
    """The test hook's stand-in for Ctrl-C."""


@dataclass
class Manifest:
    """The complete segments of an output and the settings that made them, saved after each segment."""

    path: Path
    key: dict[str, Any]
    time_base: str = ""
    origin: int | None = None
    segments: list[dict[str, Any]] = field(default_factory=list)

    def save(self) -> None:
        """Write the manifest atomically (after each complete segment)."""
        data = {
            "version": 1,
            "key": self.key,
            "time_base": self.time_base,
            "origin": self.origin,
            "segments": self.segments,
        }
        write_text(self.path, json.dumps(data, indent=1))

    @classmethod
    def load(cls, path: Path) -> Manifest | None:
        """The manifest at ``path``, or ``None`` when it is missing or unreadable."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(path, data["key"], data["time_base"], data["origin"], list(data["segments"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    @property
    def frames(self) -> int:
        """Frames in the complete segments."""
        return sum(int(s["frames"]) for s in self.segments)

    @property
    def complete(self) -> bool:
        """True once the last segment (the one no other follows) is recorded."""
        return bool(self.segments) and self.segments[-1].get("next_pts") is None


def work_dir(output: Path) -> Path:
    """The hidden folder beside ``output`` that holds its segments until they are joined."""
    return output.parent / f".{output.name}.srcli-parts"


def open_work_dir(output: Path, key: dict[str, Any], resume: bool) -> tuple[Path, Manifest]:
    """The work folder of ``output`` and its manifest, holding only the segments a resumed run can keep.

    Without ``resume``, or when ``key`` (the settings) differs from the interrupted run's, the
    folder is emptied and a new manifest written.
    """
    work = work_dir(output)
    manifest = Manifest.load(work / MANIFEST) if (work / MANIFEST).is_file() else None
    if manifest is not None and (not resume or manifest.key != key):
        if manifest.segments:
            why = "the interrupted run used other settings" if resume else "--resume not given"
            log.warning("%s: starting over (%s); removing %d segment(s)", output, why, len(manifest.segments))
        manifest = None
    if manifest is None:
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        manifest = Manifest(work / MANIFEST, key)
        manifest.save()
        return work, manifest
    for stale in stale_temp_files(work):
        stale.unlink(missing_ok=True)
    manifest.segments = [s for s in manifest.segments if (work / s["file"]).is_file()]
    # Only a contiguous run of segments counts.
    kept: list[dict[str, Any]] = []
    for s in manifest.segments:
        if kept and (kept[-1].get("next_pts") != s["first_pts"]):
            break
        kept.append(s)
    manifest.segments = kept
    return work, manifest


def drop_empty_work_dir(output: Path) -> None:
    """After a failure, keep the work folder only if it holds segments a --resume can use."""
    work = work_dir(output)
    manifest = Manifest.load(work / MANIFEST) if work.is_dir() else None
    if work.is_dir() and (manifest is None or not manifest.segments):
        shutil.rmtree(work, ignore_errors=True)


class SegmentWriter:
    """The encoder stage for video outputs: frames into segment files, each recorded once complete."""

    def __init__(
        self,
        work: Path,
        manifest: Manifest,
        make_settings: Callable[[int, int], EncodeSettings],
        time_base: Fraction,
        segment_ticks: int,
        out_bits: int,
        stop_after: int | None,
        on_segment: Callable[[int], None] | None = None,
    ) -> None:
        self.work, self.manifest, self.make_settings = work, manifest, make_settings
        self.time_base, self.segment_ticks, self.out_bits = time_base, segment_ticks, out_bits
        self.stop_after = stop_after
        self.on_segment = on_segment
        #: pts of the last frame written (``None`` before the first).
        self.last_pts: int | None = None
        self.encoder: SegmentEncoder | None = None
        self.current: dict[str, Any] | None = None
        self.settings: EncodeSettings | None = None
        self.last: np.ndarray | None = None
        self.pending: list[Item] = []
        self.written = 0
        self.closed_this_run = 0

    def add(self, item: Item) -> None:
        """Encode ``item`` (a damaged one as the previous frame, or as the next good one at the start)."""
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

    def _write(self, item: Item) -> None:
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
        self.last_pts = item.pts

    def _open(self, item: Item) -> None:
        assert item.rgb is not None
        h, w = item.rgb.shape[:2]
        if self.settings is None:
            self.settings = self.make_settings(w, h)
        k = len(self.manifest.segments)
        final = self.work / f"seg_{k:05d}.{self.settings.segment_format[1]}"
        self.current = {"file": final.name, "first_index": item.index, "frames": 0, "first_pts": item.pts}
        self.encoder = SegmentEncoder(temp_name(final), w, h, self.out_bits, self.time_base, self.settings)

    def _close(self, next_pts: int | None) -> None:
        if self.encoder is None or self.current is None:
            return
        enc, seg = self.encoder, self.current
        self.encoder, self.current = None, None
        enc.close()
        commit_file(enc.path, self.work / seg["file"])
        seg["next_pts"] = next_pts
        self.manifest.segments.append(seg)
        self.manifest.save()
        self.closed_this_run += 1
        if self.on_segment is not None:
            self.on_segment(len(self.manifest.segments))

    def _rotate(self, item: Item) -> None:
        if self.current is not None:
            self._close(item.pts)
            if self.stop_after is not None and self.closed_this_run >= self.stop_after:
                raise Interrupted
        self._open(item)

    def finish(self) -> None:
        """Close the last segment (the end of the video)."""
        for p in self.pending:  # only damaged frames and nothing else
            raise VideoError(f"frame {p.index} could not be decoded and no other frame can stand in for it")
        self._close(None)

    def abort(self) -> None:
        """Drop the segment in progress (the complete ones stay for ``--resume``)."""
        if self.encoder is not None:
            self.encoder.abort()
            self.encoder, self.current = None, None


class FrameWriter:
    """The encoder stage for ``--frames``: each frame an image file, written atomically by a thread pool.

    ``folder`` is the work folder (``work_dir`` of the output folder); ``commit_frames_folder`` moves the
    complete set into place.
    """

    def __init__(self, folder: Path, ext: str, workers: int, out_bits: int) -> None:
        self.folder, self.ext, self.out_bits = folder, ext, out_bits
        self.pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="srcli-frames")
        self.futures: list[Future[None]] = []
        self.last: np.ndarray | None = None
        self.pending: list[Item] = []
        self.written = 0
        self.pts: dict[int, int] = {}

    def path(self, index: int) -> Path:
        """The file of frame ``index`` (numbered from 1)."""
        return self.folder / FRAME_NAME.format(n=index + 1, ext=self.ext)

    def add(self, item: Item) -> None:
        """Write ``item`` (a damaged one as the previous frame; one a resumed run already wrote is kept)."""
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

    def _submit(self, item: Item) -> None:
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
        """Wait for every write (the first failure is raised)."""
        for p in self.pending:  # only damaged frames and nothing else
            raise VideoError(f"frame {p.index} could not be decoded and no other frame can stand in for it")
        for f in self.futures:
            f.result()
        self.futures.clear()
        self.pool.shutdown(wait=True)

    def abort(self) -> None:
        """Stop writing: queued frames are dropped, running writes finish or remove their temporary file."""
        self.pool.shutdown(wait=True, cancel_futures=True)


def write_timestamps(path: Path, pts: dict[int, int], tb: Fraction, end: int | None = None) -> None:
    """Write ``pts`` (frame index -> pts in ``tb``) as a timestamps file (format v2, ms), atomically.

    ``end`` (in ``tb``), when known, is written as a ``# end`` comment: when the last frame stops, which format
    v2 cannot say (other readers skip comments; ``srcli`` reads it back so a held last frame keeps its length).
    """

    def ms(value: int) -> str:
        """``value`` (in ``tb``) in milliseconds, without trailing zeros."""
        return f"{float(value * tb * 1000):.6f}".rstrip("0").rstrip(".")

    lines = ["# timestamp format v2"]
    lines += [ms(pts[index]) for index in sorted(pts)]
    if end is not None and pts and end > max(pts.values()):
        lines.append(f"# end {ms(end)}")
    write_text(path, "\n".join(lines) + "\n")


def frame_set_files(folder: Path) -> list[Path]:
    """What a frame set in ``folder`` consists of: its image files and its timestamps file."""
    from srcli.pipeline.video_sources import TIMESTAMPS_FILE, frame_files

    if not folder.is_dir():
        return []
    stamps = folder / TIMESTAMPS_FILE
    return frame_files(folder) + ([stamps] if stamps.is_file() else [])


def other_files(folder: Path) -> list[Path]:
    """Entries of ``folder`` that are not part of a frame set (nor temporary files of one)."""
    if not folder.is_dir():
        return []
    ours = set(frame_set_files(folder))
    return sorted(p for p in folder.iterdir() if p not in ours and not is_temp_file(p))


def commit_frames_folder(work: Path, output: Path) -> None:
    """Make the complete frame set in ``work`` the folder ``output``; an older set there is removed only after.

    Two renames: the old folder aside, the new one in. Under the name ``output`` there is always either the
    old complete set or the new one (after a crash between the renames, neither, but both are still on disk).
    The plan made sure ``output`` holds nothing but a frame set.
    """
    (work / MANIFEST).unlink(missing_ok=True)
    old: Path | None = None
    if output.exists():
        old = output.parent / f".{output.name}.srcli-old"
        if old.exists():
            shutil.rmtree(old)
        os.replace(output, old)
    os.replace(work, output)
    fsync_folder(output.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
