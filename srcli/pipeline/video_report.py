"""What the video job takes and gives: its options, its report, and the progress callbacks.

``VideoOptions`` is everything ``srcli upscale`` settles before the first frame; ``VideoJobReport``
(one ``VideoFileReport`` per input, with per-stage ``StageStats``) is what comes back, and
``VideoEvents`` is what a front end implements to follow the job.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

from srcli.pipeline.inputs import DEFAULT_NAME
from srcli.pipeline.report import BatchReport

BadFrameMode = Literal["skip", "stop"]
Status = Literal["done", "skipped", "failed", "planned"]


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
    #: ``torch.compile`` the model (frames all have one size, so it compiles once).
    compile: bool = False
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
