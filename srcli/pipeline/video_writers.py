"""Where the video job's frames go: segment files of a video, or a folder of image files.

``SegmentWriter`` encodes frames into segments in a hidden work folder beside the output
(``work_dir``), each recorded in the ``Manifest`` once complete, so that ``--resume`` can start
after the last one; ``open_work_dir`` sets that folder up for a run (fresh, or resumed).
``FrameWriter`` writes ``--frames`` outputs, one image file per frame, and ``write_timestamps``
the timestamps file beside them. Both writers show the previous frame in place of a damaged one.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    def load(cls, path: Path) -> Manifest | None:
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
    ) -> None:
        self.work, self.manifest, self.make_settings = work, manifest, make_settings
        self.time_base, self.segment_ticks, self.out_bits = time_base, segment_ticks, out_bits
        self.stop_after = stop_after
        self.encoder: SegmentEncoder | None = None
        self.current: dict[str, Any] | None = None
        self.settings: EncodeSettings | None = None
        self.last: np.ndarray | None = None
        self.pending: list[Item] = []
        self.written = 0
        self.closed_this_run = 0

    def add(self, item: Item) -> None:
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

    def _open(self, item: Item) -> None:
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

    def _rotate(self, item: Item) -> None:
        if self.current is not None:
            self._close(item.pts)
            if self.stop_after is not None and self.closed_this_run >= self.stop_after:
                raise Interrupted
        self._open(item)

    def finish(self) -> None:
        for p in self.pending:  # only damaged frames and nothing else
            raise VideoError(f"frame {p.index} could not be decoded and no other frame can stand in for it")
        self._close(None)

    def abort(self) -> None:
        if self.encoder is not None:
            self.encoder.abort()
            self.encoder, self.current = None, None


class FrameWriter:
    """The encoder stage for ``--frames``: each frame an image file, written atomically by a thread pool."""

    def __init__(self, folder: Path, ext: str, workers: int, out_bits: int) -> None:
        self.folder, self.ext, self.out_bits = folder, ext, out_bits
        self.pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="srcli-frames")
        self.futures: list[Future[None]] = []
        self.last: np.ndarray | None = None
        self.pending: list[Item] = []
        self.written = 0
        self.pts: dict[int, int] = {}

    def path(self, index: int) -> Path:
        return self.folder / FRAME_NAME.format(n=index + 1, ext=self.ext)

    def add(self, item: Item) -> None:
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
        for f in self.futures:
            f.result()
        self.futures.clear()
        self.pool.shutdown(wait=True)

    def abort(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def write_timestamps(path: Path, pts: dict[int, int], tb: Fraction) -> None:
    """Write ``pts`` (frame index -> pts in ``tb``) as a timestamps file (format v2, ms), atomically."""
    lines = ["# timestamp format v2"]
    for index in sorted(pts):
        ms = pts[index] * tb * 1000
        lines.append(f"{float(ms):.6f}".rstrip("0").rstrip("."))
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, path)
