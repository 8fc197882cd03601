"""Fetch a pinned checkpoint into the cache: resumable, verified, locked, atomic.

One careful path for every file:

1. A file already in the cache is verified (size, sha256) and used.
2. Offline mode never opens a connection; a missing file is an ``OfflineError`` that says
   which file is needed and where to put it.
3. A per-file lock (``filelock``) makes concurrent processes wait for one download.
4. Free disk space is checked before any byte is written.
5. URLs: ``$SRCLI_MIRRORS`` (space-separated base URLs of mirrors laid out like the cache)
   first, then the pinned URLs in order, then (for files published only inside a public
   Google Drive folder) the file found by name in that folder (``srcli.hub.gdrive``), looked
   up only when everything before it failed. Bytes stream into ``<file>.partial``; an
   interrupted transfer resumes with an HTTP ``Range`` request; transient failures (dropped
   connections, 429, 5xx) are retried with exponential backoff.
6. Size and sha256 are checked on the ``.partial`` before ``os.replace`` gives it its final
   name, so the final name only ever holds a complete, verified file. Where weights.toml
   pins no hash, the first download's hash is recorded and every later use is checked
   against it. A file placed in the cache by hand where no hash is pinned is first shown to
   the caller's ``check_placed`` (a structure check: ``srcli.hub.loading``), then recorded.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urljoin, urlparse

from srcli._version import __version__
from srcli.errors import DownloadError, HashMismatchError, OfflineError, WeightsError
from srcli.hub.cache import (
    entry_path,
    read_recorded_hash,
    require_intact,
    sha256_file,
    write_recorded_hash,
)
from srcli.hub.gdrive import DriveFolderError, gdrive_base, resolve_folder_file
from srcli.hub.manifest import PinnedFile

log = logging.getLogger("srcli")

#: Called as ``reporter(key, bytes_done, bytes_total_or_None)`` while a file downloads.
ProgressReporter = Callable[[str, int, "int | None"], None]

_TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}
_CHUNK = 1 << 16
# Headroom kept free on the disk beyond the file itself.
_DISK_MARGIN = 16 << 20


class _Transient(Exception):
    """A failure worth retrying (dropped connection, 5xx)."""


class _Permanent(Exception):
    """A failure of this URL that retrying will not fix (404, an HTML page, bad range)."""


MIRRORS_ENV = "SRCLI_MIRRORS"


def candidate_urls(entry: PinnedFile) -> list[str]:
    """URLs to try in order: ``$SRCLI_MIRRORS`` first, then the pinned ones.

    A mirror is a copy of a cache folder served over HTTP: ``<base>/<folder>/<key>/<file>``
    (e.g. ``<base>/weights/imdn.x4/IMDN_x4.pth``), so ``python -m http.server`` in a filled
    cache is a working mirror.
    """
    bases = os.environ.get(MIRRORS_ENV, "").replace(",", " ").split()
    mirrored = [f"{base.rstrip('/')}/{entry.folder}/{entry.key}/{entry.file}" for base in bases]
    return mirrored + list(entry.urls)


def resolve_gdrive_url(url: str) -> str:
    """Turn a Google Drive share link (``/file/d/<id>/view``) into its direct download URL.

    The URL is built on ``$SRCLI_GDRIVE_BASE`` (default ``https://drive.google.com``).
    """
    parsed = urlparse(url)
    if parsed.hostname not in {"drive.google.com", "docs.google.com"}:
        return url
    parts = parsed.path.split("/")
    file_id = None
    if "d" in parts and parts.index("d") + 1 < len(parts):
        file_id = parts[parts.index("d") + 1]
    else:
        file_id = (parse_qs(parsed.query).get("id") or [None])[0]
    if not file_id:
        return url
    return f"{gdrive_base()}/uc?{urlencode({'export': 'download', 'id': file_id})}"


class _ConfirmFormParser(HTMLParser):
    """Finds the download form (or a ``confirm=`` link) in Google Drive's virus-scan page."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self.confirm_href: str | None = None
        self._in_form = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and self.action is None:
            self.action = a.get("action", "")
            self._in_form = True
        elif tag == "input" and self._in_form and a.get("name"):
            if a.get("type", "hidden") == "hidden":
                self.fields[a["name"]] = a.get("value", "")
        elif tag == "a" and "confirm=" in a.get("href", "") and self.confirm_href is None:
            self.confirm_href = a["href"]

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False


def confirmation_url(html: str, page_url: str) -> str | None:
    """The URL that Google Drive's "can't scan for viruses" page would submit, or ``None``."""
    parser = _ConfirmFormParser()
    parser.feed(html)
    if parser.action is not None and parser.fields:
        action = urljoin(page_url, parser.action or page_url)
        return f"{action}?{urlencode(parser.fields)}"
    if parser.confirm_href:
        return urljoin(page_url, parser.confirm_href.replace("&amp;", "&"))
    return None


def _is_html(response) -> bool:  # noqa: ANN001 - a requests.Response
    return response.headers.get("Content-Type", "").split(";")[0].strip().lower() == "text/html"


def _open(session, url: str, offset: int, timeout: float):  # noqa: ANN001, ANN202
    """GET ``url`` from byte ``offset``, following Google Drive's confirmation page if one comes."""
    import requests

    headers = {"Range": f"bytes={offset}-"} if offset else {}
    for _ in range(3):
        try:
            response = session.get(url, headers=headers, stream=True, timeout=timeout, allow_redirects=True)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise _Transient(f"connection failed ({type(exc).__name__})") from exc
        if response.status_code in _TRANSIENT_STATUS:
            response.close()
            raise _Transient(f"HTTP {response.status_code}")
        if response.status_code >= 400 and response.status_code != 416:
            response.close()
            raise _Permanent(f"HTTP {response.status_code}")
        if not _is_html(response):
            return response
        page = response.text
        next_url = confirmation_url(page, response.url)
        if next_url is None:
            raise _Permanent("the server sent an HTML page instead of the file (quota or permission page?)")
        url = next_url
    raise _Permanent("too many confirmation pages")


def _stream_to_partial(
    session,  # noqa: ANN001 - a requests.Session
    url: str,
    partial: Path,
    entry: PinnedFile,
    reporter: ProgressReporter | None,
    timeout: float,
) -> None:
    """One attempt: append to (or restart) ``partial`` from ``url``. Raises _Transient/_Permanent."""
    import requests

    offset = partial.stat().st_size if partial.exists() else 0
    if entry.size is not None and offset >= entry.size:
        if offset == entry.size:
            return
        partial.unlink()
        offset = 0
    response = _open(session, url, offset, timeout)
    with response:
        if response.status_code == 416:
            # Nothing left past ``offset``: the partial is complete, or stale; verification decides.
            if offset:
                return
            raise _Permanent("HTTP 416 for a request from byte 0")
        if response.status_code == 206 and offset:
            content_range = response.headers.get("Content-Range", "")
            if not content_range.startswith(f"bytes {offset}-"):
                raise _Permanent(f"server answered a different range ({content_range or 'none'})")
            mode = "ab"
        else:
            offset, mode = 0, "wb"  # the server ignored Range: start over
        length = response.headers.get("Content-Length")
        expected_total = offset + int(length) if length is not None else entry.size
        done = offset
        try:
            with open(partial, mode) as fh:
                for block in response.iter_content(_CHUNK):
                    fh.write(block)
                    done += len(block)
                    if reporter:
                        reporter(entry.key, done, expected_total)
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
            raise _Transient(f"connection dropped after {done} bytes") from exc
        if expected_total is not None and done < expected_total:
            raise _Transient(f"connection closed after {done} of {expected_total} bytes")


def _check_disk_space(folder: Path, entry: PinnedFile, partial: Path) -> None:
    if entry.size is None:
        return
    have = partial.stat().st_size if partial.exists() else 0
    need = entry.size - have + _DISK_MARGIN
    free = shutil.disk_usage(folder).free
    if free < need:
        raise WeightsError(
            f"not enough disk space for '{entry.key}' in {folder}: need {need / 1e6:.1f} MB, "
            f"{free / 1e6:.1f} MB free (set SRCLI_CACHE_DIR to another disk)"
        )


def _finish(entry: PinnedFile, partial: Path, final: Path, url: str) -> None:
    """Verify ``partial`` and move it to ``final``; raise HashMismatchError (partial removed) if bad."""
    size = partial.stat().st_size
    if entry.size is not None and size != entry.size:
        partial.unlink()
        raise HashMismatchError(f"{url}: got {size} bytes, expected {entry.size} for '{entry.key}'")
    actual = sha256_file(partial)
    if entry.sha256 and actual != entry.sha256:
        partial.unlink()
        raise HashMismatchError(f"{url}: sha256 {actual} does not match the pinned {entry.sha256} for '{entry.key}'")
    recorded = read_recorded_hash(final)
    if not entry.sha256 and recorded and recorded != actual:
        partial.unlink()
        raise HashMismatchError(
            f"{url}: sha256 {actual} differs from the one recorded at first download ({recorded}) for '{entry.key}'"
        )
    partial.replace(final)
    if not entry.sha256 and not recorded:
        write_recorded_hash(final, actual, url)
        log.warning("recorded sha256 %s for '%s' (upstream publishes none); later uses are checked", actual, entry.key)


#: Called as ``check_placed(path)`` on a file placed in the cache by hand where no hash is pinned:
#: raises if the file is wrong, returns True once its structure was checked (its hash is then
#: recorded), False when it could not be checked yet (it is used, but nothing is recorded).
PlacedFileCheck = Callable[[Path], bool]

# Stands in the list of download sources for "the file found by name in entry.drive_folder".
_DRIVE_FOLDER = object()


def _placed_by_hand(entry: PinnedFile, final: Path, digest: str, check_placed: PlacedFileCheck | None) -> None:
    """Accept a hand-placed file where no hash is pinned: check it, trust it once, then hold it to that."""
    if check_placed is not None and not check_placed(final):
        log.warning(
            "'%s': using %s placed by hand; its hash is recorded once its structure can be checked", entry.key, final
        )
        return
    write_recorded_hash(final, digest, "placed in the cache by hand")
    log.warning("recorded sha256 %s for '%s' (file placed by hand)", digest, entry.key)


def fetch(
    entry: PinnedFile,
    root: Path,
    *,
    offline: bool = False,
    reporter: ProgressReporter | None = None,
    retries: int = 4,
    backoff: float = 0.5,
    timeout: float = 30.0,
    session=None,  # noqa: ANN001 - a requests.Session, for tests and connection reuse
    check_placed: PlacedFileCheck | None = None,
) -> Path:
    """Return the path of ``entry``'s verified file in the cache under ``root``, downloading it if needed.

    ``check_placed`` vets a file found in the cache that no download recorded (see ``PlacedFileCheck``);
    without it such a file is trusted as it is.
    """
    final = entry_path(entry, root)
    if final.is_file():
        digest = require_intact(entry, final)
        if not entry.sha256 and read_recorded_hash(final) is None:
            _placed_by_hand(entry, final, digest, check_placed)
        return final
    if offline:
        where = f"source: {entry.urls[0]}" if entry.urls else entry.manual or f"source: {entry.drive_folder}"
        raise OfflineError(
            f"'{entry.key}' is not in the cache and offline mode is on: put {entry.file} at {final} ({where})"
        )
    urls = candidate_urls(entry)
    sources: list = [*urls, _DRIVE_FOLDER] if entry.drive_folder else list(urls)
    if not sources:
        raise WeightsError(f"'{entry.key}' cannot be downloaded automatically: {entry.manual}")

    import requests
    from filelock import FileLock

    final.parent.mkdir(parents=True, exist_ok=True)
    partial = final.with_name(final.name + ".partial")
    with FileLock(str(final.with_name(final.name + ".lock"))):
        if final.is_file():  # another process finished it while we waited
            require_intact(entry, final)
            return final
        _check_disk_space(final.parent, entry, partial)
        own_session = session is None
        session = session or requests.Session()
        session.headers.setdefault("User-Agent", f"srcli/{__version__}")
        failures: list[str] = []
        hash_failures = 0
        try:
            for source in sources:
                if source is _DRIVE_FOLDER:
                    try:
                        url = resolve_folder_file(
                            session, entry.drive_folder, entry.drive_path or entry.file, timeout=timeout
                        )
                    except DriveFolderError as exc:
                        failures.append(str(exc))
                        continue
                    log.info("'%s': found %s in %s", entry.key, entry.drive_path or entry.file, entry.drive_folder)
                else:
                    url = source
                while True:
                    resumed = partial.exists()
                    try:
                        _download_with_retries(session, url, partial, entry, reporter, retries, backoff, timeout)
                        _finish(entry, partial, final, url)
                        return final
                    except HashMismatchError as exc:
                        # _finish removed the bad bytes. A resumed partial may have held stale bytes
                        # from an older attempt: try this URL once more from zero before moving on.
                        if resumed:
                            continue
                        hash_failures += 1
                        failures.append(str(exc))
                    except _Permanent as exc:
                        failures.append(f"{url}: {exc}")
                    break
        finally:
            if own_session:
                session.close()
        message = f"could not download '{entry.key}' ({entry.file}): " + "; ".join(failures)
        if entry.manual:
            message += f". By hand: {entry.manual}"
        if hash_failures == len(sources):
            raise HashMismatchError(message)
        raise DownloadError(message)


def _download_with_retries(
    session,  # noqa: ANN001
    url: str,
    partial: Path,
    entry: PinnedFile,
    reporter: ProgressReporter | None,
    retries: int,
    backoff: float,
    timeout: float,
) -> None:
    """Stream ``url`` into ``partial``, resuming after transient failures up to ``retries`` times."""
    attempt = 0
    while True:
        try:
            _stream_to_partial(session, resolve_gdrive_url(url), partial, entry, reporter, timeout)
            return
        except _Transient as exc:
            attempt += 1
            if attempt > retries:
                raise _Permanent(f"{exc}; gave up after {retries} retries") from exc
            log.info("%s: %s; retrying (%d/%d)", url, exc, attempt, retries)
            time.sleep(backoff * 2 ** (attempt - 1))
