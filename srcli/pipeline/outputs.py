"""Output safety, decided at planning for every job: collisions, existing files, writable folders.

The rules (the same for images, frames and videos):

- Two inputs that map to one final output are refused before any work.
- An output that would replace an input is refused.
- An existing output is this job's own earlier result when the output folder's journal
  (``.srcli-outputs.jsonl``) says that this input, with these model settings, wrote that very
  file (same size and modification time). Such a file is redone (or, with ``--skip-existing``,
  left). Any other existing file is left alone: refused, unless ``--overwrite`` (or skipped with
  ``--skip-existing``).
- The output folder must exist or be creatable, and be writable, before the model loads.

The journal is append-only JSON lines, one per output written, fsynced as each file lands, so an
interrupted run's outputs are recognised on the next run. A damaged last line (a crash mid-append)
is ignored.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from srcli.atomic import fsync_folder, temp_name
from srcli.errors import UsageError

JOURNAL_NAME = ".srcli-outputs.jsonl"

Action = Literal["upscale", "skip", "refuse"]


def job_fingerprint(settings: Mapping[str, Any]) -> str:
    """A stable text key for the settings that decide an output's content (model, scale, weights...)."""
    return json.dumps(dict(settings), sort_keys=True, default=str)


class OutputJournal:
    """The record of outputs srcli wrote into one output folder (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / JOURNAL_NAME
        self._lock = threading.Lock()
        self._entries: dict[str, dict[str, Any]] = {}
        try:
            text = self.path.read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError):
            text = ""
        except OSError as exc:
            raise UsageError(f"{self.path}: cannot read the output journal ({exc.strerror or exc})") from None
        for line in text.splitlines():
            try:
                entry = json.loads(line)
                self._entries[entry["output"]] = entry
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a crash

    def _key(self, output: Path) -> str:
        return os.path.relpath(output.resolve(), self.root.resolve())

    def owns(self, output: Path, source: Path, fingerprint: str) -> bool:
        """True when ``output`` is the file this journal says ``source`` wrote with these settings."""
        entry = self._entries.get(self._key(output))
        if entry is None or entry.get("input") != str(source.resolve()) or entry.get("settings") != fingerprint:
            return False
        try:
            st = output.stat()
        except OSError:
            return False
        return entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns

    def record(self, output: Path, source: Path, fingerprint: str) -> None:
        """Note that ``source`` wrote ``output`` (call right after the output got its final name)."""
        st = output.stat()
        entry = {
            "output": self._key(output),
            "input": str(source.resolve()),
            "settings": fingerprint,
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
        }
        line = (json.dumps(entry, sort_keys=True) + "\n").encode("utf-8")
        with self._lock:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
            self._entries[entry["output"]] = entry


@dataclass(frozen=True)
class Decision:
    """What to do with one planned output."""

    action: Action
    reason: str = ""
    #: The output exists and will be replaced (the job's own earlier result, or ``--overwrite``).
    replaces: bool = False


def decide_existing(
    output: Path,
    source: Path,
    *,
    journal: OutputJournal,
    fingerprint: str,
    skip_existing: bool,
    overwrite: bool,
) -> Decision:
    """Upscale, skip or refuse ``output`` given what is on disk (see the module docstring)."""
    if output.is_dir():
        return Decision("refuse", f"refused: {output} is a folder")
    if not output.exists():
        return Decision("upscale")
    if skip_existing:
        return Decision("skip", "output exists (--skip-existing)")
    if journal.owns(output, source, fingerprint) or overwrite:
        return Decision("upscale", replaces=True)
    return Decision(
        "refuse",
        f"refused: {output} exists and was not written by this job from this input with these settings; "
        "--overwrite replaces it, --skip-existing leaves it",
    )


class OutputClaims:
    """Which input claimed which final output path: refuses collisions and outputs that are inputs."""

    def __init__(self, inputs: list[Path]) -> None:
        self._inputs = {p.resolve() for p in inputs}
        self._claims: dict[Path, list[Path]] = {}

    def refusal(self, output: Path, source: Path) -> str | None:
        """Claim ``output`` for ``source``; a refusal reason when it cannot be written, else ``None``.

        The second and later claims of one output are refused here; ``collisions`` names every input of
        such an output, so that the planner refuses the first claimant too (which of two inputs should
        win is no decision to take silently).
        """
        resolved = output.resolve()
        if resolved in self._inputs:
            return "refused: the output would overwrite an input file"
        claimants = self._claims.setdefault(resolved, [])
        claimants.append(source)
        if len(claimants) > 1:
            return collision_reason(claimants)
        return None

    def collisions(self) -> dict[Path, list[Path]]:
        """Outputs claimed by more than one input, with every input that claimed them."""
        return {out: list(srcs) for out, srcs in self._claims.items() if len(srcs) > 1}

    def refuse_collisions(self, planned: list[Any]) -> list[Any]:
        """``planned`` (frozen items with ``input``, ``output``, ``action``, ``reason``, ``replaces``) with every
        input of a colliding output refused, the first claimant included."""
        collisions = self.collisions()
        result = []
        for p in planned:
            sources = collisions.get(p.output.resolve())
            if sources and p.input in sources:
                p = replace(p, action="refuse", reason=collision_reason(sources), replaces=False)
            result.append(p)
        return result


def collision_reason(sources: list[Path]) -> str:
    """The refusal for inputs that map to one output."""
    return "refused: these inputs map to one output: " + ", ".join(str(s) for s in sources) + " (use --name)"


def check_output_folder(folder: Path, *, create: bool) -> None:
    """Raise ``UsageError`` unless ``folder`` is, or can become, a writable folder.

    With ``create`` the folder is made and a temporary file written and removed in it (a read-only file
    system or folder shows here, before any model runs); without it (a dry run) only permissions are
    checked, on the folder or on its nearest existing parent.
    """
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise UsageError(f"{existing}: is a file, so the output folder {folder} cannot be made there")
    if not create:
        if existing.exists() and not os.access(existing, os.W_OK | os.X_OK):
            raise UsageError(f"{existing}: not writable, so outputs cannot be written to {folder}")
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = temp_name(folder / "write-check")
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"{folder}: cannot write outputs there ({exc.strerror or exc})") from None
    with contextlib.suppress(OSError):
        fsync_folder(folder.parent)
