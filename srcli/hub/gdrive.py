"""Find a file inside a public Google Drive folder by name: folder page -> file id -> download URL.

Some checkpoints are published only as files inside a shared Drive folder, with no per-file link.
Drive offers no key-less API for such folders, so this reads the folder's web page the way a
browser does. The page carries its listing in a JavaScript string assigned to
``window['_DRIVE_ivd']``: an escaped JSON array whose first item lists the children as
``[id, [parent id], name, mime type, ...]`` (subfolders have the folder mime type). Other page
shapes are read too: the embedded folder view (``/embeddedfolderview?id=<id>``), and older pages
whose entries are HTML elements carrying ``data-id`` / ``id="entry-<id>"`` and a name, or bare
``"<id>","<name>"`` pairs in their data. A page none of these fit is an error naming the folder.

``$SRCLI_GDRIVE_BASE`` (default ``https://drive.google.com``) replaces the Drive host in every
request, for the folder pages and for the file downloads, so a local server can stand in for
Drive end to end.
"""

from __future__ import annotations

import json
import os
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlencode, urlparse

from srcli.errors import DownloadError, WeightsError

GDRIVE_BASE_ENV = "SRCLI_GDRIVE_BASE"
DEFAULT_GDRIVE_BASE = "https://drive.google.com"
FOLDER_MIME = "application/vnd.google-apps.folder"
#: Subfolder levels searched below the shared folder when only a file name is given.
MAX_DEPTH = 3
#: Folder pages fetched at most for one file (a guard against huge or cyclic trees).
MAX_FOLDERS = 40


class DriveFolderError(DownloadError):
    """A Drive folder could not be read, or does not hold the file asked for."""


@dataclass(frozen=True)
class DriveItem:
    """One child of a Drive folder."""

    id: str
    name: str
    is_folder: bool = False


def gdrive_base() -> str:
    """Base URL for Google Drive requests: ``$SRCLI_GDRIVE_BASE``, else ``https://drive.google.com``."""
    return (os.environ.get(GDRIVE_BASE_ENV) or DEFAULT_GDRIVE_BASE).rstrip("/")


def folder_id_from_url(url: str) -> str:
    """The id in a folder link (``.../drive/folders/<id>``, ``.../drive/u/0/folders/<id>``, ``?id=<id>``)."""
    parsed = urlparse(url)
    parts = [p for p in parsed.path.split("/") if p]
    if "folders" in parts and parts.index("folders") + 1 < len(parts):
        return parts[parts.index("folders") + 1]
    folder_id = (parse_qs(parsed.query).get("id") or [""])[0]
    if folder_id:
        return folder_id
    raise WeightsError(f"not a Google Drive folder link: {url}")


def file_download_url(file_id: str, base: str | None = None) -> str:
    """The direct download URL of a Drive file (answered with the bytes or a confirmation page)."""
    return f"{base or gdrive_base()}/uc?{urlencode({'export': 'download', 'id': file_id})}"


# ---- reading a folder page ------------------------------------------------------------------

_IVD = re.compile(r"""window\[\s*(['"])_DRIVE_ivd\1\s*\]\s*=\s*(['"])((?:(?!\2)[^\\]|\\.)*)\2""", re.DOTALL)
_JS_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|u\{[0-9a-fA-F]+\}|u[0-9a-fA-F]{4}|\r\n|[\s\S])")
_JS_SIMPLE = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "v": "\v", "0": "\0", "\n": "", "\r\n": ""}


def unescape_js_string(body: str) -> str:
    """The value of a JavaScript string literal's body (``\\x5b``, ``\\u00e9``, ``\\/``, ``\\"`` ...)."""

    def one(match: re.Match[str]) -> str:
        esc = match.group(1)
        if esc[0] == "x" and len(esc) == 3:
            return chr(int(esc[1:], 16))
        if esc[0] == "u" and len(esc) > 1:
            return chr(int(esc[1:].strip("{}"), 16))
        return _JS_SIMPLE.get(esc, esc)

    text = _JS_ESCAPE.sub(one, body)
    # \uD83D\uDE00-style pairs arrive as two lone surrogates: join them into one character.
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _from_ivd(html: str) -> list[DriveItem] | None:
    match = _IVD.search(html)
    if match is None:
        return None
    try:
        data = json.loads(unescape_js_string(match.group(3)))
    except ValueError:
        return None
    if not isinstance(data, list) or not data:
        return None
    if data[0] is None:  # an empty folder
        return []
    if not isinstance(data[0], list):
        return None
    items = []
    for child in data[0]:
        if isinstance(child, list) and len(child) > 3 and isinstance(child[0], str) and isinstance(child[2], str):
            items.append(DriveItem(child[0], child[2], child[3] == FOLDER_MIME))
    return items


class _EntryParser(HTMLParser):
    """Entries of HTML listings: an element with ``data-id`` or ``id="entry-<id>"``, then its name."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.entries: list[dict] = []
        self._title_tag: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        entry_id = a.get("data-id") or (a["id"][len("entry-") :] if a.get("id", "").startswith("entry-") else "")
        if entry_id:
            name = a.get("data-tooltip") or a.get("data-name") or a.get("title") or ""
            folder = a.get("data-target") == "folder" or FOLDER_MIME in a.get("data-mime-type", "")
            self.entries.append({"id": entry_id, "name": name.strip(), "title": "", "folder": folder})
            return
        if not self.entries:
            return
        current = self.entries[-1]
        if tag == "a" and "/folders/" in a.get("href", ""):
            current["folder"] = True
        if not current["name"] and a.get("data-tooltip"):
            current["name"] = a["data-tooltip"].strip()
        if "title" in a.get("class", "") and not current["title"]:
            self._title_tag = tag

    def handle_endtag(self, tag: str) -> None:
        if tag == self._title_tag:
            self._title_tag = None

    def handle_data(self, data: str) -> None:
        if self._title_tag and self.entries:
            self.entries[-1]["title"] += data


def _from_entries(html: str) -> list[DriveItem] | None:
    parser = _EntryParser()
    parser.feed(html)
    items = []
    for e in parser.entries:
        name = e["title"].strip() or e["name"]
        if name:
            items.append(DriveItem(e["id"], name, e["folder"]))
    return items or None


# A child array somewhere in the page's data: "<id>",["<parent>"],"<name>","<mime>".
_CHILD_ARRAY = re.compile(r'"([-\w]{20,})",\["[-\w]*"\],"((?:[^"\\]|\\.)+)","([\w.+-]+/[\w.+-]+)"')
# A bare id/name pair, kept only when the name looks like a file name.
_ID_NAME_PAIR = re.compile(r'"([-\w]{25,})","([^"\\/<>]+\.[A-Za-z0-9]{1,8})"')


def _from_pairs(html: str) -> list[DriveItem] | None:
    text = unescape_js_string(html)
    items: dict[str, DriveItem] = {}
    for file_id, name, mime in _CHILD_ARRAY.findall(text):
        items.setdefault(file_id, DriveItem(file_id, name, mime == FOLDER_MIME))
    for file_id, name in _ID_NAME_PAIR.findall(text):
        items.setdefault(file_id, DriveItem(file_id, name))
    return list(items.values()) or None


def parse_folder_page(html: str) -> list[DriveItem] | None:
    """The children listed on a Drive folder page, ``[]`` for an empty folder, ``None`` if unreadable."""
    for reader in (_from_ivd, _from_entries, _from_pairs):
        items = reader(html)
        if items is not None:
            return items
    return None


# ---- walking the folder tree ----------------------------------------------------------------

#: Called as ``list_folder(folder_id, shown_path)``; returns the folder's children or raises.
FolderLister = Callable[[str, str], list[DriveItem]]


def _listing(paths: list[str], limit: int = 12) -> str:
    if not paths:
        return "it holds no files"
    shown = ", ".join(paths[:limit])
    return "it holds: " + shown + (f", ... (+{len(paths) - limit} more)" if len(paths) > limit else "")


def _loose(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name.lower())


def _not_found(name: str, where: str, seen: list[str], searched: str) -> DriveFolderError:
    # Only spelling variants (case, spaces, _ and -): a near name such as RGT_x2 for RGT_x3 is another file.
    close = [p for p in seen if _loose(p.rsplit("/", 1)[-1]) == _loose(name)]
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return DriveFolderError(f"no file '{name}' in the Google Drive folder {where} ({searched}; {_listing(seen)}){hint}")


def find_file(
    list_folder: FolderLister,
    root_id: str,
    path: str,
    *,
    where: str,
    max_depth: int = MAX_DEPTH,
    max_folders: int = MAX_FOLDERS,
) -> str:
    """The id of ``path`` in the folder tree under ``root_id``.

    ``path`` with slashes (``RGT/RGT_x2.pth``) is followed exactly. A bare file name is searched for
    breadth-first through subfolders, ``max_depth`` levels deep; the shallowest match wins, and two
    matches at the same depth are an error (say which one with a path). ``where`` names the folder
    in error messages.
    """
    parts = [p for p in path.strip("/").split("/") if p]
    if not parts:
        raise WeightsError(f"empty path in the Google Drive folder {where}")
    if len(parts) > 1:
        folder_id, shown = root_id, ""
        for part in parts[:-1]:
            items = list_folder(folder_id, shown)
            subfolders = [i for i in items if i.is_folder and i.name == part]
            if len(subfolders) != 1:
                names = [shown + i.name + "/" for i in items if i.is_folder]
                problem = "several subfolders" if subfolders else "no subfolder"
                raise DriveFolderError(
                    f"{problem} '{shown}{part}' in the Google Drive folder {where} "
                    f"({'its subfolders: ' + ', '.join(names) if names else 'it has no subfolders'})"
                )
            folder_id, shown = subfolders[0].id, f"{shown}{part}/"
        items = list_folder(folder_id, shown)
        matches = [i for i in items if not i.is_folder and i.name == parts[-1]]
        if len(matches) == 1:
            return matches[0].id
        if matches:
            raise DriveFolderError(f"several files named '{path}' in the Google Drive folder {where}")
        seen = [shown + i.name for i in items if not i.is_folder]
        raise _not_found(path, where, seen, f"looked in '{shown or '/'}'")

    name = parts[0]
    level: deque[tuple[str, str]] = deque([(root_id, "")])
    visited = {root_id}
    seen: list[str] = []
    fetched = 0
    for depth in range(max_depth + 1):
        matches: list[tuple[str, str]] = []
        below: deque[tuple[str, str]] = deque()
        while level:
            folder_id, shown = level.popleft()
            if fetched >= max_folders:
                raise DriveFolderError(
                    f"gave up looking for '{name}' in the Google Drive folder {where} after {fetched} folders; "
                    'name its subfolder in weights.toml (drive_path = "<subfolder>/<file>")'
                )
            fetched += 1
            for item in list_folder(folder_id, shown):
                if item.is_folder:
                    if item.id not in visited:  # shortcuts can make cycles
                        visited.add(item.id)
                        below.append((item.id, f"{shown}{item.name}/"))
                    continue
                seen.append(shown + item.name)
                if item.name == name:
                    matches.append((item.id, shown + item.name))
        if len(matches) == 1:
            return matches[0][0]
        if matches:
            places = ", ".join(p for _, p in matches)
            raise DriveFolderError(
                f"several files named '{name}' in the Google Drive folder {where} ({places}); "
                "name the one meant in weights.toml (drive_path)"
            )
        if not below:
            break
        if depth == max_depth:
            seen.extend(f"{shown} (not searched)" for _, shown in below)
            break
        level = below
    searched = (
        f"searched {fetched} folder{'s' if fetched != 1 else ''}, "
        f"subfolders {max_depth} level{'s' if max_depth != 1 else ''} deep"
    )
    raise _not_found(name, where, seen, searched)


def list_folder_online(session, folder_id: str, shown: str, *, where: str, timeout: float) -> list[DriveItem]:  # noqa: ANN001 - a requests.Session
    """Fetch and read the listing of one folder: its page, else its embedded view."""
    import requests

    base = gdrive_base()
    label = f"{where} (subfolder '{shown}')" if shown else where
    pages = (f"{base}/drive/folders/{folder_id}", f"{base}/embeddedfolderview?id={folder_id}")
    statuses = []
    for page_url in pages:
        try:
            response = session.get(page_url, timeout=timeout, allow_redirects=True)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise DriveFolderError(f"cannot reach the Google Drive folder {label}: {type(exc).__name__}") from exc
        with response:
            statuses.append(response.status_code)
            if response.status_code != 200:
                continue
            items = parse_folder_page(response.text)
        if items is not None:
            return items
    if statuses and all(s == 404 for s in statuses):
        raise DriveFolderError(f"the Google Drive folder {label} does not exist or is not shared publicly (HTTP 404)")
    raise DriveFolderError(
        f"cannot read the listing of the Google Drive folder {label} "
        f"(HTTP {', '.join(map(str, statuses))}; no file list found on the page: Drive may have changed its "
        "page format, or asks to sign in)"
    )


def resolve_folder_file(
    session,  # noqa: ANN001 - a requests.Session
    folder_url: str,
    path: str,
    *,
    timeout: float = 30.0,
    max_depth: int = MAX_DEPTH,
) -> str:
    """The download URL of ``path`` inside the public Drive folder ``folder_url`` (see ``find_file``)."""
    file_id = find_file(
        lambda folder_id, shown: list_folder_online(session, folder_id, shown, where=folder_url, timeout=timeout),
        folder_id_from_url(folder_url),
        path,
        where=folder_url,
        max_depth=max_depth,
    )
    return file_download_url(file_id)
