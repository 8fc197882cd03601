"""Benchmark data sets: pinned per-file sources, download into the cache, or a user's folder."""

from __future__ import annotations

import difflib
import logging
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from srcli.errors import DatasetError, HashMismatchError, OfflineError, SrcliError, UnknownDatasetError
from srcli.hub.cache import cache_root, entry_dir, entry_path, human_size, offline_requested
from srcli.hub.download import MIRRORS_ENV, ProgressReporter, fetch
from srcli.hub.manifest import PinnedFile
from srcli.io.images import IMAGE_SUFFIXES

log = logging.getLogger("srcli")

#: The five standard SR benchmarks, in the order the papers' tables use.
BENCHMARKS: tuple[str, ...] = ("set5", "set14", "b100", "urban100", "manga109")
DISPLAY_NAMES = {
    "set5": "Set5",
    "set14": "Set14",
    "b100": "B100",
    "urban100": "Urban100",
    "manga109": "Manga109",
    "t91": "T91",
    "bsd200": "BSD200",
}
_ALIASES = {"bsd100": "b100", "bsds100": "b100", "urban": "urban100", "manga": "manga109"}


@lru_cache(maxsize=1)
def load_sources() -> dict[str, tuple[PinnedFile, ...]]:
    """Every pinned data set file (datasets.toml, copied from the shared SOURCES.toml), per set."""
    data = tomllib.loads((Path(__file__).with_name("datasets.toml")).read_text(encoding="utf-8"))
    return {
        name: tuple(
            PinnedFile(
                key=name,
                file=item["name"],
                urls=(item["url"],),
                sha256=item["sha256"],
                size=item["size"],
                licence="research use (see source)",
                source=item["url"],
                folder="datasets",
            )
            for item in items
        )
        for name, items in data.items()
    }


def resolve_dataset_name(name: str) -> str:
    """Canonical lower-case name of a data set; unknown names get a did-you-mean."""
    key = name.strip().lower().replace("-", "").replace("_", "")
    key = _ALIASES.get(key, key)
    known = list(load_sources())
    if key in known:
        return key
    close = difflib.get_close_matches(key, known + list(_ALIASES), n=1, cutoff=0.5)
    hint = f"; did you mean '{_ALIASES.get(close[0], close[0])}'?" if close else ""
    raise UnknownDatasetError(f"unknown dataset '{name}'{hint} (known: {', '.join(known)})")


#: Missing files named in one error at most; the rest are counted.
_LISTED = 10


def fetch_command(key: str) -> str:
    """One command that downloads every file of data set ``key`` into the cache (bicubic scores in seconds)."""
    return f"srcli eval -m bicubic -d {key} -s 2"


def _listing(names: list[str], limit: int = _LISTED) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... (+{len(names) - limit} more)" if len(names) > limit else "")


def _missing_offline(key: str, missing: list[PinnedFile], total: int, folder: Path) -> DatasetError:
    """One line naming every file of ``key`` that offline mode cannot get, and how to get them."""
    name = DISPLAY_NAMES[key]
    size = sum(item.size or 0 for item in missing)
    files = "1 file" if len(missing) == 1 else f"{len(missing)} of its {total} files"
    return DatasetError(
        f"{name}/{missing[0].file}: not in the cache and offline mode is on; {name} lacks {files} "
        f"({human_size(size)}) in {folder}: {_listing([item.file for item in missing])}; fetch them with "
        f"'{fetch_command(key)}' while online, or set {MIRRORS_ENV} to a mirror (a file:// folder works "
        "offline), or evaluate your own copy with --data-dir DIR"
    )


def dataset_files(
    name: str,
    *,
    cache_dir: str | Path | None = None,
    offline: bool | None = None,
    reporter: ProgressReporter | None = None,
) -> list[Path]:
    """Paths of every HR image of data set ``name`` in the cache, downloading and verifying each.

    A damaged cached file is deleted and fetched again once; a second failure names the file.
    Offline, every file that is neither cached nor on a ``file://`` mirror is named in one error.
    """
    key = resolve_dataset_name(name)
    root = cache_root(cache_dir)
    is_offline = offline_requested(offline)
    items = load_sources()[key]
    paths = []
    missing: list[PinnedFile] = []
    for item in items:
        try:
            paths.append(fetch(item, root, offline=is_offline, reporter=reporter))
        except OfflineError:
            missing.append(item)
        except HashMismatchError as first:
            cached = entry_path(item, root)
            if not cached.is_file() or is_offline:
                raise DatasetError(f"{DISPLAY_NAMES[key]}/{item.file}: {first}") from None
            log.warning("%s: damaged in the cache, downloading it again", cached)
            cached.unlink()
            try:
                paths.append(fetch(item, root, offline=is_offline, reporter=reporter))
            except SrcliError as second:
                raise DatasetError(f"{DISPLAY_NAMES[key]}/{item.file}: {second}") from None
        except SrcliError as exc:
            left = sum(1 for other in items if not entry_path(other, root).is_file()) - 1
            more = f"; {left} more {DISPLAY_NAMES[key]} files are not in the cache yet" if left > 0 else ""
            raise DatasetError(f"{DISPLAY_NAMES[key]}/{item.file}: {exc}{more}") from None
    if missing:
        raise _missing_offline(key, missing, len(items), entry_dir(missing[0], root))
    return paths


@dataclass(frozen=True)
class FolderListing:
    """Images found in a folder, and the other files that were skipped."""

    images: list[Path]
    skipped: list[Path]


def folder_images(folder: str | Path) -> FolderListing:
    """Image files directly inside ``folder`` (sorted by name); other files are listed as skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: not a folder")
    images, skipped = [], []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.is_dir():
            continue
        (images if path.suffix.lower() in IMAGE_SUFFIXES else skipped).append(path)
    return FolderListing(images, skipped)
