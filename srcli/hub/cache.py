"""The user cache: where weights live, what is there, and whether it is intact.

Layout under the cache root::

    weights/<model>.x<scale>/<file>          the checkpoint, exactly as upstream serves it
    weights/<model>.x<scale>/<file>.sha256   hash recorded on first download (only where
                                             weights.toml pins none), or for a file placed
                                             by hand once its structure was checked
    weights/<model>.x<scale>/<file>.partial  an interrupted download, resumed next time
    weights/<model>.x<scale>/<file>.lock     held while a download runs (removed when it ends)
    datasets/<set>/<image>                   benchmark images (same rules)

Every file gets its final name in one atomic step (``srcli.atomic``), so a final name only
ever holds a complete file. ``docs/weights.md`` describes the layout for users.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from srcli.atomic import write_text
from srcli.errors import HashMismatchError
from srcli.hub.manifest import PinnedFile

CACHE_ENV = "SRCLI_CACHE_DIR"
OFFLINE_ENV = "SRCLI_OFFLINE"


def cache_root(override: str | os.PathLike[str] | None = None) -> Path:
    """The cache root: ``override``, else ``$SRCLI_CACHE_DIR``, else the platform user cache dir."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("srcli", appauthor=False))


def offline_requested(flag: bool | None = None) -> bool:
    """True when ``flag`` is set or ``$SRCLI_OFFLINE`` is a true value."""
    if flag:
        return True
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def entry_dir(entry: PinnedFile, root: Path) -> Path:
    """Folder that holds ``entry``'s file."""
    return root / entry.folder / entry.key


#: Where the package keeps the weights it ships (``embedded = true`` in weights.toml).
EMBEDDED_DIR = Path(__file__).resolve().parents[1] / "weights"


def entry_path(entry: PinnedFile, root: Path) -> Path:
    """Final path of ``entry``'s file: in the cache (it may not exist), or in the package if embedded."""
    if entry.embedded:
        return EMBEDDED_DIR / entry.file
    return entry_dir(entry, root) / entry.file


def recorded_hash_path(path: Path) -> Path:
    """Sidecar that holds a hash recorded on first download."""
    return path.with_name(path.name + ".sha256")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_recorded_hash(path: Path) -> str | None:
    """The hash recorded for ``path`` on its first download, if any."""
    sidecar = recorded_hash_path(path)
    if not sidecar.is_file():
        return None
    return json.loads(sidecar.read_text(encoding="utf-8"))["sha256"]


def write_recorded_hash(path: Path, sha256: str, url: str) -> None:
    """Record ``sha256`` beside ``path`` (atomically) so later uses can be verified."""
    record = {"sha256": sha256, "size": path.stat().st_size, "url": url}
    write_text(recorded_hash_path(path), json.dumps(record))


def expected_hash(entry: PinnedFile, path: Path) -> tuple[str | None, str]:
    """The hash ``path`` must have and where it comes from (``pinned``, ``recorded`` or ``none``)."""
    if entry.sha256:
        return entry.sha256, "pinned"
    recorded = read_recorded_hash(path)
    if recorded:
        return recorded, "recorded"
    return None, "none"


@dataclass(frozen=True)
class Verification:
    """Outcome of re-hashing one cached file."""

    entry: PinnedFile
    path: Path
    status: str  # "ok", "missing", "size-mismatch", "hash-mismatch", "unpinned"
    sha256: str | None = None
    expected: str | None = None
    source: str = "none"

    @property
    def ok(self) -> bool:
        """True for an intact file (or a missing one, which is not damage)."""
        return self.status in {"ok", "missing", "unpinned"}


def verify_file(entry: PinnedFile, path: Path) -> Verification:
    """Check size and sha256 of ``path`` against the pinned or recorded values."""
    if not path.is_file():
        return Verification(entry, path, "missing")
    if entry.size is not None and path.stat().st_size != entry.size:
        return Verification(entry, path, "size-mismatch", expected=entry.sha256, source="pinned")
    actual = sha256_file(path)
    expected, source = expected_hash(entry, path)
    if expected is None:
        return Verification(entry, path, "unpinned", sha256=actual)
    status = "ok" if actual == expected else "hash-mismatch"
    return Verification(entry, path, status, sha256=actual, expected=expected, source=source)


def human_size(size: int | None) -> str:
    """``2796052`` -> ``2.8 MB``; ``None`` -> ``size not published``."""
    if size is None:
        return "size not published"
    value = float(size)
    for unit in ("bytes", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{size} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"  # pragma: no cover - the loop always returns


def split_weights_key(key: str) -> tuple[str, int] | None:
    """``imdn.x4`` -> ``("imdn", 4)``; ``None`` for a key of another shape (a data set's)."""
    model, sep, scale = key.rpartition(".x")
    return (model, int(scale)) if sep and model and scale.isdigit() else None


def repair_hint(entry: PinnedFile) -> str:
    """The command that replaces a damaged copy of ``entry``'s file."""
    if entry.embedded:
        return "it ships inside the srcli package: reinstall srcli (pip install --force-reinstall srcli)"
    parts = split_weights_key(entry.key) if entry.folder == "weights" else None
    if parts is not None:
        model, scale = parts
        return f"replace it with 'srcli models download {model} -s {scale} --force' (or 'srcli models verify --repair')"
    return "delete it and it is downloaded again on next use"


def require_intact(entry: PinnedFile, path: Path) -> str:
    """Verify ``path`` and return its sha256, or raise ``HashMismatchError`` explaining the damage."""
    result = verify_file(entry, path)
    if result.status in {"ok", "unpinned"}:
        return result.sha256 or ""
    if result.status == "size-mismatch":
        raise HashMismatchError(
            f"{path}: size {path.stat().st_size} bytes, expected {entry.size} for '{entry.key}' (damaged); "
            + repair_hint(entry)
        )
    raise HashMismatchError(
        f"{path}: sha256 {result.sha256} does not match the {result.source} {result.expected} "
        f"for '{entry.key}' (damaged); " + repair_hint(entry)
    )
