"""The one atomic writer: every file srcli writes appears whole under its final name, or not at all.

Bytes go to ``.<name>.<8 hex digits>.partial`` in the destination's own folder (a rename is atomic only
within one file system), are flushed and fsynced, then renamed onto the final name, and the folder
is fsynced so that the rename survives a crash. Any failure (an exception, Ctrl-C) removes the
temporary file. Folder walks skip the temporary names (a leading dot, no image suffix), and
``stale_temp_files`` finds the ones a killed process left behind.

It lives at the bottom of the package (beside ``errors``) because every layer writes files:
the weights cache, images and frames, manifests, reports, checkpoints.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

#: Temporary files written before the rename (``.<name>.<8 hex digits>.partial``).
TEMP_PATTERN = re.compile(r"^\..+\.[0-9a-f]{8}\.partial$")


def temp_name(path: Path) -> Path:
    """A fresh temporary name beside ``path`` (same folder, so the rename is atomic)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")


def is_temp_file(path: Path) -> bool:
    """True for a temporary name made by ``temp_name``."""
    return bool(TEMP_PATTERN.match(path.name))


def final_name_of(temp: Path) -> str:
    """The final name a temporary file was written for (``.a.png.0123abcd.partial`` -> ``a.png``)."""
    return temp.name[1:].rsplit(".", 2)[0]


def fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX); folders cannot be opened so on Windows, where it is skipped."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str], *, mode: int = 0o666) -> Iterator[BinaryIO]:
    """Open a binary file that becomes ``path`` when the ``with`` block ends without an exception.

    An existing ``path`` is replaced in one step. The file gets ``mode`` less the umask, as any new file
    would (``mkstemp`` would give 0600). ``OSError`` propagates; callers turn it into their own message.
    """
    path = Path(path)
    tmp = temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_folder(path.parent)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_writer(path) as fh:
        fh.write(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))


def commit_file(source: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Give a complete file written elsewhere in ``path``'s folder (an encoder's output) its final name.

    ``source`` is fsynced first, then renamed onto ``path``, then the folder is fsynced: the same guarantee
    as ``atomic_writer`` for files that another program or library writes by name.
    """
    source, path = Path(source), Path(path)
    fd = os.open(source, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(source, path)
    fsync_folder(path.parent)


def stale_temp_files(folder: Path) -> list[Path]:
    """Temporary files an interrupted run left directly in ``folder``."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and is_temp_file(p))
