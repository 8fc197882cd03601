"""What the video job takes and gives: its options, its report, and the progress callbacks.

``VideoOptions`` is everything ``srcli upscale`` settles before the first frame (the shared
``JobOptions`` plus the video's own); ``VideoJobReport`` (one ``VideoFileReport`` per input, with
per-stage ``StageStats``) is what comes back, and ``VideoEvents`` is what a front end implements to
follow the job.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Any, Literal

from srcli.pipeline.job import JobOptions
from srcli.pipeline.report import BatchReport

BadFrameMode = Literal["skip", "stop"]
BAD_FRAME_MODES: tuple[str, ...] = ("skip", "stop")
Status = Literal["done", "skipped", "failed", "planned"]


@dataclass(frozen=True)
class VideoOptions(JobOptions):
    """The video job's own options, beside the shared ``JobOptions`` (``run``, ``output``, ``name``, ``format``
    as the container, ``skip_existing``, ``overwrite``, ``fail_fast``, ``max_pixels`` per frame, ``io_workers``)."""

    #: Encoder: h264, hevc, vp9, av1, ffv1 or any ffmpeg encoder name (``None``: the container's default).
    codec: str | None = None
    crf: float | None = None
    preset: str | None = None
    pix_fmt: str | None = None
    no_audio: bool = False
    #: Write a folder of frames (PNG unless ``frame_format``) instead of a video file.
    frames: bool = False
    frame_format: str = "png"
    resume: bool = False
    #: A frame that cannot be decoded, or frames missing at the end of a damaged file: ``stop`` fails the
    #: video; ``skip`` shows the previous frame in a damaged frame's place and holds the last decoded frame
    #: to the declared end.
    on_bad_frame: BadFrameMode = "stop"
    segment_seconds: float = 60.0
    #: Frame rate of a folder of frames without a timestamps file (refused with one).
    fps: Fraction | None = None
    #: Frames each queue between stages holds (besides one batch).
    queue_frames: int = 4
    #: Compare the written file with its source before it gets its final name.
    verify: bool = True
    #: For tests: behave as if interrupted once this many segments are complete in this run.
    stop_after_segments: int | None = None


@dataclass
class StageStats:
    """Frames a stage handled and the seconds it was busy (not waiting on its neighbours)."""

    frames: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: frames, busy seconds and frames per busy second."""
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
    #: The output existed and is replaced (this job's own earlier result, or ``--overwrite``).
    replaced: bool = False
    #: Frames in the output, and in the source (packets of its video stream).
    frames: int = 0
    source_frames: int | None = None
    #: Frames and seconds the source's container declares (``None``: not declared).
    declared_frames: int | None = None
    declared_seconds: float | None = None
    #: Declared frames absent from a damaged source's end (``--on-bad-frame skip`` holds the last frame instead).
    missing_frames: int = 0
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
        """JSON-ready, with per-stage throughput and the end-to-end rate of this run's frames."""
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

    def segment_done(self, report: VideoFileReport, segments: int) -> None:
        """A segment is complete and recorded: ``segments`` of the video are safe for ``--resume`` (encoder thread)."""

    def file_finished(self, report: VideoFileReport) -> None:
        """``report`` is final."""
