"""What the tests of the multi-worker video executors share (``test_video_devices``, ``test_video_ray``).

The clip (2 s at 12 fps with a 440 Hz tone, as in ``test_video``), the one-device reference run with each segment
file's digest, the decoded frames of an output, and the ``SegmentHook`` that ends the worker running a chosen
segment, the first time only (a marker file remembers), never by timing.
"""

from __future__ import annotations

import hashlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from srcli.pipeline.video import plan_video_job, run_video_job
from srcli.pipeline.video_devices import SegmentTask
from srcli.pipeline.video_writers import work_dir
from tests.test_video import ff, video_options


@dataclass(frozen=True)
class KillOnce:
    """A ``SegmentHook``: SIGKILL the worker running it when it reaches segment ``number``, once (``marker``)."""

    number: int
    marker: str

    def __call__(self, task: SegmentTask) -> None:
        """End the process the first time segment ``number`` starts (the marker file is created then)."""
        if task.number != self.number:
            return
        try:
            os.close(os.open(self.marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return
        self.end()

    def end(self) -> None:
        """How the process ends: SIGKILL, as the kernel's out-of-memory killer does."""
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class ExitOnce(KillOnce):
    """A ``SegmentHook``: end the actor's process at once (``os._exit``) when it reaches segment ``number``, once."""

    def end(self) -> None:
        """How the process ends: at once, without clean-up (a Ray actor then dies with ``RayActorError``)."""
        os._exit(1)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s at 12 fps (24 frames) of a moving gradient with 2 s of a 440 Hz tone."""
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    ff(
        "-f", "lavfi", "-i", "gradients=s=32x24:r=12:d=2:speed=0.05",
        "-f", "lavfi", "-i", "sine=f=440:r=48000:d=2",
        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", path,
    )  # fmt: skip
    return path


def decoded(path: Path) -> tuple[list[np.ndarray], list[int], int]:
    """The video's frames (RGB arrays) and pts, and the number of audio streams, read with PyAV."""
    import av

    with av.open(str(path)) as container:
        audio = len(container.streams.audio)
        frames, pts = [], []
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            pts.append(frame.pts)
    return frames, pts, audio


class SegmentDigests:
    """``VideoEvents`` for the one-device run: the digest of each segment file once it is complete."""

    def __init__(self, output: Path) -> None:
        self.work = work_dir(output)
        self.digests: dict[str, str] = {}

    def started(self, report: Any) -> None:
        """Unused."""

    def file_started(self, report: Any, total: int | None, done: int) -> None:
        """Unused."""

    def frames_done(self, done: int) -> None:
        """Unused."""

    def segment_done(self, report: Any, segments: int) -> None:
        """Hash every segment file present (the newest is complete now)."""
        for seg in sorted(self.work.glob("seg_*")):
            self.digests.setdefault(seg.name, hashlib.sha256(seg.read_bytes()).hexdigest())

    def file_finished(self, report: Any) -> None:
        """Unused."""


def one_device(clip: Path, out: Path) -> tuple[Any, dict[str, str]]:
    """The one-device run of ``clip`` into ``out`` in 0.5 s segments: its report and its segment files' digests."""
    events = SegmentDigests(out)
    plan = plan_video_job([str(clip)], video_options(out, segment_seconds=0.5))
    return run_video_job(plan, events=events), events.digests  # type: ignore[arg-type]
