"""The options of the upscaling jobs: one ``RunOptions`` for the model, plus what a job writes and how.

``JobOptions`` holds what the image and the video job share (where outputs go and how existing
files are treated); ``ImageOptions`` and ``VideoOptions`` (``srcli.pipeline.video_report``) add their
own. Each is frozen: a job's plan is made from them once and nothing changes them afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from srcli.engine.options import RunOptions

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
