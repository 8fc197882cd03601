"""Fetch a pinned checkpoint into the cache: resumable, verified, locked, atomic.

One careful path for every file:

1. A file already in the cache is verified (size, sha256) and used; ``force=True`` fetches a
   fresh copy anyway (the repair of a damaged file), replacing the old one only once verified.
2. Offline mode never opens a connection: only ``file://`` mirrors (local folders) are read; a
   missing file is an ``OfflineError`` that says which file is needed and where to put it.
3. A per-file lock (``filelock``) makes concurrent processes wait for one download; the lock
   file is removed when the download ends, whether it succeeded or not.
4. Free disk space is checked before any byte is written.
5. Sources: ``$SRCLI_MIRRORS`` (space-separated ``http(s)://`` or ``file://`` base URLs, or
   folder paths, of mirrors laid out like the cache) first, then the pinned URLs in order, then
   (for files published only inside a public Google Drive folder) the file found by name in that
   folder (``srcli.hub.gdrive``), looked up only when everything before it failed. Bytes stream
   into ``<file>.partial``; an interrupted transfer resumes with an HTTP ``Range`` request;
   transient failures (dropped connections, timeouts, 429, 5xx) are retried a few times with a
   short exponential backoff (seconds in all), each retry logged as a warning.
6. Size and sha256 are checked on the ``.partial`` before ``srcli.atomic.commit_file`` gives it
   its final name (fsync, rename, folder fsync), so the final name only ever holds a complete,
   verified file. Where weights.toml pins no hash, the first download's hash is recorded and
   every later use is checked against it. A file placed in the cache by hand where no hash is
   pinned is first shown to the caller's ``check_placed`` (a structure check:
   ``srcli.hub.loading``), then recorded.
7. When every source fails, the one-line error gives the file's size and the ways forward:
   ``--weights FILE``, the exact cache path to put the file at, and a mirror (``SRCLI_MIRRORS``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urljoin, urlparse
from urllib.request import url2pathname

from srcli._version import __version__
from srcli.atomic import commit_file
from srcli.errors import DownloadError, HashMismatchError, OfflineError, WeightsError
from srcli.hub.cache import (
    entry_path,
    human_size,
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
#: Retries of a transient failure per URL, and the first pause (doubled each time): 0.5 + 1 + 2 s at most.
RETRIES = 3
BACKOFF = 0.5
#: (connect, read) timeouts in seconds: an unreachable host fails in seconds, a stalled transfer in 15 s.
TIMEOUT: tuple[float, float] = (5.0, 15.0)
# Headroom kept free on the disk beyond the file itself.
_DISK_MARGIN = 16 << 20


class _Transient(Exception):
    """A failure worth retrying (dropped connection, 5xx)."""


class _Permanent(Exception):
    """A failure of this URL that retrying will not fix (404, an HTML page, bad range)."""


MIRRORS_ENV = "SRCLI_MIRRORS"


def mirror_bases() -> list[str]:
    """The mirrors named in ``$SRCLI_MIRRORS`` as base URLs (``http(s)://`` or ``file://``).

    Entries are separated by spaces or commas. A folder path (no scheme) becomes a ``file://`` URL;
    any other scheme is a one-line ``WeightsError``.
    """
    bases = []
    for raw in os.environ.get(MIRRORS_ENV, "").replace(",", " ").split():
        scheme = urlparse(raw).scheme.lower()
        if scheme in {"http", "https"}:
            bases.append(raw)
            continue
        if scheme == "file":
            base = raw
        elif "://" not in raw:  # a folder path (a Windows drive letter parses as a scheme: "://" tells them apart)
            base = Path(raw).expanduser().resolve().as_uri()
        else:
            raise WeightsError(f"{MIRRORS_ENV}: '{raw}' is not an http://, https:// or file:// URL, nor a folder path")
        folder = local_path(base)
        if not folder.is_dir() and base not in _missing_mirror_folders:
            _missing_mirror_folders.add(base)
            log.warning("%s: the folder %s does not exist (not mounted?)", MIRRORS_ENV, folder)
        bases.append(base)
    return bases


#: Mirror folders already reported missing (once per process, not once per file).
_missing_mirror_folders: set[str] = set()


def candidate_urls(entry: PinnedFile) -> list[str]:
    """URLs to try in order: ``$SRCLI_MIRRORS`` first, then the pinned ones.

    A mirror is a copy of a cache folder: ``<base>/<folder>/<key>/<file>`` (e.g.
    ``<base>/weights/imdn.x4/IMDN_x4.pth``), served over HTTP (``python -m http.server`` in a filled
    cache is a working mirror) or read from a local or network folder (``file://``).
    """
    tail = "/".join(quote(part) for part in (entry.folder, entry.key, entry.file))
    mirrored = [f"{base.rstrip('/')}/{tail}" for base in mirror_bases()]
    return mirrored + list(entry.urls)


def is_file_url(url: str) -> bool:
    """True for a ``file://`` URL (a local mirror)."""
    return urlparse(url).scheme.lower() == "file"


def local_path(url: str) -> Path:
    """The path a ``file://`` URL names (``file://server/share/...`` is a Windows share)."""
    parsed = urlparse(url)
    path = url2pathname(parsed.path)
    if parsed.netloc and parsed.netloc.lower() != "localhost":
        path = f"//{parsed.netloc}{path}"
    return Path(path)


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


def _open(session, url: str, offset: int, timeout: float | tuple[float, float]):  # noqa: ANN001, ANN202
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
    timeout: float | tuple[float, float],
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
    """Refuse to start when the disk cannot hold the rest of ``entry``'s file (plus a margin)."""
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


def _copy_local(url: str, partial: Path, entry: PinnedFile, reporter: ProgressReporter | None) -> None:
    """Copy the file a ``file://`` mirror URL names into ``partial`` (from byte 0). Raises _Permanent."""
    source = local_path(url)
    if not source.is_file():  # checked first: a resumable partial from another source stays
        raise _Permanent(f"no such file {source}")
    done = 0
    try:
        total = source.stat().st_size
        with open(source, "rb") as src, open(partial, "wb") as dst:
            while block := src.read(1 << 20):
                dst.write(block)
                done += len(block)
                if reporter:
                    reporter(entry.key, done, total)
    except OSError as exc:
        partial.unlink(missing_ok=True)  # a torn copy is worth nothing
        raise _Permanent(f"cannot copy {source}: {exc.strerror or exc}") from exc


def _finish(entry: PinnedFile, partial: Path, final: Path, url: str) -> None:
    """Verify ``partial`` and commit it as ``final``; raise HashMismatchError (partial removed) if bad."""
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
    commit_file(partial, final)
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


def lock_path(final: Path) -> Path:
    """The lock file that serialises downloads of ``final``."""
    return final.with_name(final.name + ".lock")


def holds_current_lock_file(lock: Any, path: Path) -> bool:
    """True unless the file ``lock`` holds is no longer the one at ``path`` (another process removed it).

    A process that waited on a lock file which its holder then removed gets the lock of a file no
    one else can find: it must take the lock again on the file now at ``path``. Locks that do not
    expose their file (Windows, where a held lock file cannot be removed anyway) count as current.
    """
    fd = getattr(getattr(lock, "_context", None), "lock_file_fd", None)
    if not isinstance(fd, int):
        return True
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except OSError:  # the path is gone
        return False


@contextlib.contextmanager
def download_lock(final: Path) -> Iterator[None]:
    """Hold the per-file lock of ``final`` (waiting for another process's download), then remove the lock file.

    The file is removed while the lock is still held; a waiter that then gets the lock of the removed
    file notices (``holds_current_lock_file``) and locks the path afresh.
    """
    from filelock import FileLock

    path = lock_path(final)
    while True:
        lock = FileLock(str(path))
        lock.acquire()
        if holds_current_lock_file(lock, path):
            break
        lock.release()
    try:
        yield
    finally:
        try:
            with contextlib.suppress(OSError):
                path.unlink()
        finally:
            lock.release()


def ways_forward(entry: PinnedFile, final: Path) -> str:
    """What a user can do when ``entry``'s file cannot be downloaded: every route, in one clause."""
    put = f"put {entry.file} at {final}"
    mirror = f"set {MIRRORS_ENV} to a mirror holding {entry.folder}/{entry.key}/{entry.file} (http(s):// or file://)"
    if entry.folder == "weights":
        return f"ways forward: pass a copy with --weights FILE; or {put}; or {mirror}"
    return f"ways forward: {put}; or {mirror}; or evaluate your own copy of the set with --data-dir DIR"


def _describe(entry: PinnedFile) -> str:
    return f"'{entry.key}' ({entry.file}, {human_size(entry.size)})"


def _where_from(entry: PinnedFile) -> str:
    if entry.manual:
        return f"by hand: {entry.manual}"
    if entry.urls:
        return f"source: {entry.urls[0]}"
    return f"source: {entry.drive_folder}" if entry.drive_folder else ""


def _offline_error(entry: PinnedFile, final: Path, failures: list[str], *, replacing: bool = False) -> OfflineError:
    tried = f" (tried {'; '.join(failures)})" if failures else ""
    where = _where_from(entry)
    what = (
        f"a fresh copy of {_describe(entry)} cannot be fetched: offline mode is on"
        if replacing
        else f"{_describe(entry)} is not in the cache and offline mode is on"
    )
    return OfflineError(f"{what}{tried}; {ways_forward(entry, final)}" + (f"; {where}" if where else ""))


def _embedded_file(entry: PinnedFile, final: Path) -> Path:
    """Weights shipped inside the package: verified, never downloaded."""
    if not final.is_file():
        raise WeightsError(
            f"{final}: the weights for '{entry.key}' ship inside the srcli package but are missing; "
            "reinstall srcli (pip install --force-reinstall srcli)"
        )
    require_intact(entry, final)
    return final


def _identity(path: Path) -> tuple[int, int, int] | None:
    """What tells one version of a file from another (inode, size, mtime), or None when absent."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def fetch(
    entry: PinnedFile,
    root: Path,
    *,
    offline: bool = False,
    reporter: ProgressReporter | None = None,
    retries: int = RETRIES,
    backoff: float = BACKOFF,
    timeout: float | tuple[float, float] = TIMEOUT,
    session=None,  # noqa: ANN001 - a requests.Session, for tests and connection reuse
    check_placed: PlacedFileCheck | None = None,
    force: bool = False,
) -> Path:
    """Return the path of ``entry``'s verified file in the cache under ``root``, downloading it if needed.

    ``check_placed`` vets a file found in the cache that no download recorded (see ``PlacedFileCheck``);
    without it such a file is trusted as it is. ``force`` downloads a fresh copy even when one is cached
    (intact or damaged); the cached file is replaced only by a verified one.
    """
    final = entry_path(entry, root)
    if entry.embedded:
        return _embedded_file(entry, final)
    before = _identity(final)
    if before is not None and not force:
        digest = require_intact(entry, final)
        if not entry.sha256 and read_recorded_hash(final) is None:
            _placed_by_hand(entry, final, digest, check_placed)
        return final
    urls = candidate_urls(entry)
    if offline:
        # Offline never opens a connection; a file:// mirror is a local folder.
        sources: list = [u for u in urls if is_file_url(u)]
        if not sources:
            raise _offline_error(entry, final, [], replacing=before is not None)
    else:
        sources = [*urls, _DRIVE_FOLDER] if entry.drive_folder else list(urls)
        if not sources:
            raise WeightsError(f"'{entry.key}' cannot be downloaded automatically: {entry.manual}")

    final.parent.mkdir(parents=True, exist_ok=True)
    partial = final.with_name(final.name + ".partial")
    with download_lock(final):
        if final.is_file() and (not force or _identity(final) != before):
            # Another process downloaded (or, with force, replaced) it while we waited.
            require_intact(entry, final)
            return final
        _check_disk_space(final.parent, entry, partial)
        failures, hash_failures = _try_sources(
            entry, sources, partial, final, reporter, retries, backoff, timeout, session
        )
        if not failures:
            return final
    if offline:
        raise _offline_error(entry, final, failures, replacing=before is not None)
    message = f"could not download {_describe(entry)}: " + "; ".join(failures) + f"; {ways_forward(entry, final)}"
    if entry.manual:
        message += f"; by hand: {entry.manual}"
    if hash_failures == len(sources):
        raise HashMismatchError(message)
    raise DownloadError(message)


def _try_sources(
    entry: PinnedFile,
    sources: list,
    partial: Path,
    final: Path,
    reporter: ProgressReporter | None,
    retries: int,
    backoff: float,
    timeout: float | tuple[float, float],
    session,  # noqa: ANN001 - a requests.Session or None
) -> tuple[list[str], int]:
    """Try each source until one yields the verified file at ``final``; returns (failures, hash failures).

    An empty failure list means success.
    """
    failures: list[str] = []
    hash_failures = 0
    own_session = False
    try:
        for source in sources:
            if source is not _DRIVE_FOLDER and is_file_url(source):
                try:
                    _copy_local(source, partial, entry, reporter)
                    _finish(entry, partial, final, source)
                    return [], 0
                except HashMismatchError as exc:
                    hash_failures += 1
                    failures.append(str(exc))
                except _Permanent as exc:
                    failures.append(f"{source}: {exc}")
                continue
            if session is None:
                import requests

                session, own_session = requests.Session(), True
            session.headers.setdefault("User-Agent", f"srcli/{__version__}")
            if source is _DRIVE_FOLDER:
                try:
                    name = entry.drive_path or entry.file
                    url = resolve_folder_file(session, entry.drive_folder, name, timeout=timeout)
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
                    return [], 0
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
    return failures, hash_failures


def _download_with_retries(
    session,  # noqa: ANN001
    url: str,
    partial: Path,
    entry: PinnedFile,
    reporter: ProgressReporter | None,
    retries: int,
    backoff: float,
    timeout: float | tuple[float, float],
) -> None:
    """Stream ``url`` into ``partial``, resuming after transient failures up to ``retries`` times.

    Each retry is logged as a warning (what failed, which try, how long the pause), so a slow or
    flaky connection is never silent; the pauses double from ``backoff`` seconds.
    """
    attempt = 0
    while True:
        try:
            _stream_to_partial(session, resolve_gdrive_url(url), partial, entry, reporter, timeout)
            return
        except _Transient as exc:
            attempt += 1
            if attempt > retries:
                raise _Permanent(f"{exc}; gave up after {retries} retries") from exc
            delay = backoff * 2 ** (attempt - 1)
            log.warning("%s: %s; retry %d of %d in %.1f s", url, exc, attempt, retries, delay)
            time.sleep(delay)
