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
    #: Whether the model ran under ``torch.compile``.
    compiled: bool = False

    def count(self, status: str) -> int:
        """Number of files with ``status`` (done, skipped, failed, planned)."""
        return sum(1 for f in self.files if f.status == status)

    @property
    def exit_code(self) -> int:
        """0 when nothing failed, 1 otherwise, 130 after an interruption."""
        if self.interrupted:
            return 130
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
