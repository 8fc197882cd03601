"""Exceptions a user can act on. The CLI renders each as one line and maps it to an exit code."""

from __future__ import annotations


class SrcliError(Exception):
    """Base class: a problem with a message meant for the user."""

    exit_code = 1


class UsageError(SrcliError):
    """The command line named something that does not exist (model, scale, data set)."""

    exit_code = 2


class UnknownModelError(UsageError):
    """No registered model has this name or alias."""


class UnsupportedScaleError(UsageError):
    """The model exists but not at this scale."""


class WeightsError(SrcliError):
    """A checkpoint could not be found, fetched, verified or loaded."""


class DownloadError(WeightsError):
    """Every URL of a weights entry failed."""


class HashMismatchError(WeightsError):
    """A file's sha256 or size differs from the pinned or recorded value."""


class OfflineError(WeightsError):
    """A file is missing and the network may not be used."""


class CheckpointMismatchError(WeightsError):
    """A state dict does not fit the architecture (missing, unexpected or mis-shaped keys)."""


class NotImplementedModelError(SrcliError):
    """The model is registered but its architecture (or its weights) is not available yet."""


class ImageReadError(SrcliError):
    """An input image cannot be read (missing, truncated, not an image)."""


class DatasetError(SrcliError):
    """A benchmark data set is unknown, incomplete or damaged."""


class UnknownDatasetError(UsageError):
    """No benchmark data set has this name."""


class ImageWriteError(SrcliError):
    """An output image cannot be written (refused overwrite, encoder failure, disk full)."""


class DeviceError(UsageError):
    """The requested device or precision cannot be used here."""


class DeviceOutOfMemoryError(SrcliError):
    """The device ran out of memory even at the smallest tile the engine tries."""


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM (a polite kill). Raised by the CLI's signal handler in the main thread; a
    ``KeyboardInterrupt`` so that every job's Ctrl-C clean-up runs (writes in flight finish or are removed).
    The CLI exits with ``exit_code``, 143 (128 + SIGTERM, as a shell reports a killed process), instead of
    Ctrl-C's 130."""

    exit_code = 143
