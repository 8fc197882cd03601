"""The options of the upscaling jobs: one ``RunOptions`` for the model, plus what a job writes and how.

``JobOptions`` holds what the image and the video job share (where outputs go and how existing
files are treated); ``ImageOptions`` and ``VideoOptions`` (``srcli.pipeline.video_report``) add their
own. Each is frozen: a job's plan is made from them once and nothing changes them afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, Literal, Protocol, TypeVar

from srcli.engine.options import RunOptions
from srcli.pipeline.outputs import Action, OutputJournal, check_output_folder
from srcli.registry import ModelSpec

#: Default output name template: the input's stem and the output format's extension.
DEFAULT_NAME = "{stem}.{ext}"
#: Default ``--max-pixels``: inputs (all frames) above this many pixels are refused.
DEFAULT_MAX_PIXELS = 64 * 1024 * 1024

AlphaMode = Literal["resize", "model", "drop"]
ALPHA_MODES: tuple[str, ...] = ("resize", "model", "drop")


@dataclass(frozen=True)
class JobOptions:
    """What every upscaling job takes: the model run, and where and how its outputs are written."""

    run: RunOptions = field(default_factory=RunOptions)
    #: Output folder, or output file for a single input.
    output: Path = Path("upscaled")
    #: Output name template (``{stem} {name} {ext} {model} {scale} {parent}``).
    name: str = DEFAULT_NAME
    #: Output format (images) or container (videos); ``None``: the input's.
    format: str | None = None
    #: Leave outputs that already exist.
    skip_existing: bool = False
    #: Replace existing files that this job did not write itself (never inputs).
    overwrite: bool = False
    fail_fast: bool = False
    #: Refuse inputs above this many pixels (all frames); ``None``: no limit.
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    #: Reader and writer threads.
    io_workers: int = 2


@dataclass(frozen=True)
class ImageOptions(JobOptions):
    """The image job's own options."""

    #: Walk folders recursively and mirror the tree under ``output``.
    recursive: bool = False
    #: JPEG / WebP quality (``None``: 95).
    quality: int | None = None
    alpha: AlphaMode = "resize"
    #: Copy EXIF to the outputs (the ICC profile is always kept).
    keep_metadata: bool = False


class PlannedItem(Protocol):
    """What every planned input has: what the job does with it, and where its output goes."""

    action: Action
    output: Path


OptionsT = TypeVar("OptionsT", bound=JobOptions)
ItemT = TypeVar("ItemT", bound=PlannedItem)


@dataclass(frozen=True)
class JobPlan(Generic[OptionsT, ItemT]):
    """A job resolved once: options (checked), the model, every input's plan, notices, and the output journal."""

    options: OptionsT
    spec: ModelSpec
    items: tuple[ItemT, ...]
    #: Adjusted options and other job-wide notes, one line each.
    notices: tuple[str, ...]
    #: Folder whose journal records this job's outputs.
    journal_root: Path
    #: The settings that decide an output's content (recorded in the journal with each output).
    fingerprint: str

    @property
    def todo(self) -> tuple[ItemT, ...]:
        """The inputs to upscale."""
        return tuple(i for i in self.items if i.action == "upscale")

    @property
    def to_run(self) -> tuple[ItemT, ...]:
        """The inputs a run upscales: ``todo``, or none with ``--fail-fast`` when an input was refused."""
        if self.options.fail_fast and any(i.action == "refuse" for i in self.items):
            return ()
        return self.todo

    @property
    def numbered_to_run(self) -> list[tuple[int, ItemT]]:
        """``to_run`` with each input's position in ``items`` (and so in the report's ``files``)."""
        run = self.to_run
        return [(i, item) for i, item in enumerate(self.items) if item in run]

    def journal(self) -> OutputJournal:
        """The output journal (read fresh from disk)."""
        return OutputJournal(self.journal_root)

    def check_output_folders(self, *, create: bool) -> None:
        """``check_output_folder`` for every folder the job will write into (``UsageError`` if one cannot be)."""
        for folder in sorted({i.output.parent for i in self.todo}):
            check_output_folder(folder, create=create)
