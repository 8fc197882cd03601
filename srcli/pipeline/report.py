"""What the image and video batch jobs report in common: settings, per-file records, totals, exit code."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class BatchReport:
    """A batch run: its settings, per-file records (each with a ``status``) and the exit code they imply."""

    model: str
    scale: int
    outscale: float | None
    device: str
    precision: str
    files: list[Any] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False
    #: Exit code of an interruption: 130 for Ctrl-C, 143 for SIGTERM (the exception's ``exit_code``).
    interrupt_code: int = 130
    #: Whether the model ran under ``torch.compile``.
    compiled: bool = False

    def interrupt(self, exc: BaseException) -> None:
        """Record that ``exc`` (a ``KeyboardInterrupt``, or srcli's ``Terminated``) stopped the batch."""
        self.interrupted = True
        self.interrupt_code = int(getattr(exc, "exit_code", 130))

    def count(self, status: str) -> int:
        """Number of files with ``status`` (done, skipped, failed, planned)."""
        return sum(1 for f in self.files if f.status == status)

    @property
    def exit_code(self) -> int:
        """0 when nothing failed, 1 otherwise, 130 (Ctrl-C) or 143 (SIGTERM) after an interruption."""
        if self.interrupted:
            return self.interrupt_code
        return 1 if self.count("failed") else 0

    def summary(self) -> dict[str, Any]:
        """The JSON-ready settings and counts every report starts with."""
        return {
            "model": self.model,
            "scale": self.scale,
            "outscale": self.outscale,
            "device": self.device,
            "precision": self.precision,
            "compiled": self.compiled,
            "done": self.count("done"),
            "skipped": self.count("skipped"),
            "failed": self.count("failed"),
            "planned": self.count("planned"),
            "interrupted": self.interrupted,
            "seconds": round(self.seconds, 4),
        }
