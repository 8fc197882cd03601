"""weights.toml: the pinned facts (URLs, sha256, size, licence) of every checkpoint."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

from srcli.errors import WeightsError
from srcli.hub.gdrive import folder_id_from_url


@dataclass(frozen=True)
class PinnedFile:
    """One pinned file: a checkpoint from weights.toml, or a data set image."""

    key: str
    file: str
    urls: tuple[str, ...]
    sha256: str | None
    size: int | None
    licence: str
    source: str
    note: str = ""
    manual: str = ""
    #: Top-level cache folder the file belongs in (``weights`` or ``datasets``).
    folder: str = "weights"
    #: A public Google Drive folder holding the file, for files published without a link of their own.
    drive_folder: str = ""
    #: The file's path inside ``drive_folder``: a bare name is searched for through subfolders;
    #: ``<subfolder>/<name>`` is followed exactly. Empty means ``file``.
    drive_path: str = ""
    #: Shipped inside the package (``srcli/weights/<file>``): never downloaded, always available.
    embedded: bool = False

    @property
    def downloadable(self) -> bool:
        """True when at least one URL (or a Drive folder to look the file up in) is known."""
        return bool(self.urls or self.drive_folder)


def manifest_path() -> Path:
    """Where weights.toml is: inside the installed package, else at the repository root."""
    packaged = Path(__file__).resolve().parents[1] / "weights.toml"
    if packaged.is_file():
        return packaged
    return Path(__file__).resolve().parents[2] / "weights.toml"


def parse_manifest(text: str) -> dict[str, PinnedFile]:
    """Parse the text of a weights.toml into entries keyed by ``<model>.x<scale>``."""
    data = tomllib.loads(text)
    entries: dict[str, PinnedFile] = {}
    for model, scales in data.items():
        for scale_key, raw in scales.items():
            key = f"{model}.{scale_key}"
            try:
                entries[key] = PinnedFile(
                    key=key,
                    file=raw["file"],
                    urls=tuple(raw.get("urls", ())),
                    sha256=(raw.get("sha256") or None),
                    size=raw.get("size"),
                    licence=raw.get("licence", ""),
                    source=raw.get("source", ""),
                    note=raw.get("note", ""),
                    manual=raw.get("manual", ""),
                    drive_folder=raw.get("drive_folder", ""),
                    drive_path=raw.get("drive_path", ""),
                    embedded=bool(raw.get("embedded", False)),
                )
            except KeyError as exc:
                raise WeightsError(f"weights.toml: entry [{key}] lacks {exc}") from None
            _check_drive_fields(entries[key])
    return entries


def _check_drive_fields(entry: PinnedFile) -> None:
    """Catch a mistyped Drive folder entry when weights.toml is read, not when a download needs it."""
    if entry.drive_path and not entry.drive_folder:
        raise WeightsError(f"weights.toml: entry [{entry.key}] has drive_path but no drive_folder")
    if entry.drive_folder:
        try:
            folder_id_from_url(entry.drive_folder)
        except WeightsError as exc:
            raise WeightsError(f"weights.toml: entry [{entry.key}]: {exc}") from None


@lru_cache(maxsize=1)
def load_manifest() -> dict[str, PinnedFile]:
    """The packaged weights.toml, parsed once per process (it never changes at run time)."""
    return parse_manifest(manifest_path().read_text(encoding="utf-8"))


def get_entry(key: str) -> PinnedFile:
    """The entry for ``key`` (e.g. ``imdn.x4``), or a ``WeightsError`` naming it."""
    try:
        return load_manifest()[key]
    except KeyError:
        raise WeightsError(f"no weights are pinned for '{key}' in weights.toml") from None
