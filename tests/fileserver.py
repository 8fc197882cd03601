"""A small real HTTP server for download tests: Range support, dropped connections, 404s,
a mimic of Google Drive's "can't scan this file for viruses" confirmation page, and of its
public folder pages (the listing embedded as an escaped JSON string in ``window['_DRIVE_ivd']``,
or as HTML entries in the embedded folder view)."""

from __future__ import annotations

import html
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


@dataclass
class Route:
    """What one path serves."""

    body: bytes = b""
    status: int = 200
    #: For the first ``drop_times`` requests, close the connection after this many bytes.
    drop_after: int | None = None
    drop_times: int = 1
    support_range: bool = True
    content_type: str = "application/octet-stream"
    #: Seconds to sleep after each 256 KiB written (to make downloads overlap in time).
    chunk_delay: float = 0.0
    requests: list[dict] = field(default_factory=list)


FOLDER_MIME = "application/vnd.google-apps.folder"


@dataclass
class DriveFolder:
    """A mimicked public Drive folder: children are ``(id, name, is_folder)``.

    ``page``: ``"ivd"`` (today's folder page, listing in ``window['_DRIVE_ivd']``), ``"entries"``
    (HTML entries with ``id="entry-<id>"``, like the embedded folder view), or ``"broken"`` (a page
    with no listing, e.g. a sign-in wall). ``embedded``: also answer ``/embeddedfolderview?id=``.
    """

    children: list[tuple[str, str, bool]]
    name: str = "folder"
    page: str = "ivd"
    embedded: bool = False
    requests: int = 0


def _js_escape(text: str) -> str:
    """Escape like Drive does: JSON punctuation as \\xNN, non-ASCII as \\uNNNN."""
    out = []
    for ch in text:
        if ch in "\"[]{}\\/'<>=&":
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) > 126:
            units = ch.encode("utf-16-be")  # astral characters become a surrogate pair, as in JS
            out.extend(f"\\u{int.from_bytes(units[i : i + 2], 'big'):04x}" for i in range(0, len(units), 2))
        else:
            out.append(ch)
    return "".join(out)


def ivd_page(folder_id: str, folder: DriveFolder) -> str:
    """A folder page carrying its listing the way Drive's does."""
    children = [
        [cid, [folder_id], name, FOLDER_MIME if is_folder else "application/octet-stream", None, None, 0, 0, 0, 1]
        + [None, None, None, 0 if is_folder else 1234]
        for cid, name, is_folder in folder.children
    ]
    data = json.dumps([children or None, None, None, None, [], 1], ensure_ascii=False)
    return (
        f"<!DOCTYPE html><html><head><title>{html.escape(folder.name)} - Google Drive</title></head><body>"
        '<div id="drive_main_page"></div><script nonce="abc">window.viewerData = {};</script>'
        f"<script nonce=\"abc\">window['_DRIVE_ivd'] = '{_js_escape(data)}';"
        "if (window['_DRIVE_ivdc']) {window['_DRIVE_ivdc']();}</script></body></html>"
    )


def entries_page(base: str, folder: DriveFolder) -> str:
    """An HTML listing like the embedded folder view: one ``flip-entry`` per child."""
    rows = []
    for cid, name, is_folder in folder.children:
        href = f"{base}/drive/folders/{cid}" if is_folder else f"{base}/file/d/{cid}/view?usp=drive_web"
        rows.append(
            f'<div class="flip-entry" id="entry-{html.escape(cid)}" tabindex="0" role="link">'
            f'<div class="flip-entry-info"><a href="{html.escape(href)}" target="_blank">'
            '<div class="flip-entry-list-icon"><img src="/icon.png"></div>'
            f'<div class="flip-entry-title">{html.escape(name)}</div></a></div></div>'
        )
    return (
        f"<!DOCTYPE html><html><head><title>{html.escape(folder.name)}</title></head><body>"
        f'<div class="flip-entries">{"".join(rows)}</div></body></html>'
    )


class _Handler(BaseHTTPRequestHandler):
    server: FileServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        parsed = urlparse(self.path)
        with self.server.lock:
            route = self.server.routes.get(parsed.path)
            if route is not None:
                route.requests.append({"range": self.headers.get("Range"), "query": parsed.query})
        if parsed.path == "/uc" and self.server.gdrive_files:
            self._gdrive_page(parse_qs(parsed.query))
            return
        if parsed.path.startswith("/drive/folders/") or parsed.path == "/embeddedfolderview":
            self._gdrive_folder(parsed.path, parse_qs(parsed.query))
            return
        if route is None:
            self._plain(404, b"not found")
            return
        if route.status != 200:
            self._plain(route.status, b"error")
            return
        body, start = route.body, 0
        if parsed.path == "/gdrive-download":
            query = parse_qs(parsed.query)
            if "confirm" not in query:
                self._plain(403, b"no confirm token")
                return
            with self.server.lock:
                found = self.server.gdrive_files.get((query.get("id") or [""])[0])
            if found is None:
                self._plain(404, b"no such file")
                return
            body = found
        match = re.match(r"bytes=(\d+)-$", self.headers.get("Range") or "")
        if match and route.support_range:
            start = int(match.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        self.send_header("Content-Type", route.content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        with self.server.lock:
            drop = route.drop_after is not None and route.drop_times > 0
            if drop:
                route.drop_times -= 1
        if drop:
            self.wfile.write(payload[: route.drop_after])
            self.wfile.flush()
            self.close_connection = True
            return
        step = 256 * 1024
        for i in range(0, len(payload), step):
            self.wfile.write(payload[i : i + step])
            if route.chunk_delay:
                time.sleep(route.chunk_delay)

    def _plain(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _gdrive_page(self, query: dict[str, list[str]]) -> None:
        """Google Drive answers a large file's download link with an HTML form to confirm."""
        file_id = (query.get("id") or [""])[0]
        with self.server.lock:
            self.server.gdrive_pages += 1
        if file_id not in self.server.gdrive_files:
            self._plain(404, b"<html>No such file</html>", "text/html")
            return
        action = f"http://127.0.0.1:{self.server.server_port}/gdrive-download"
        page = (
            "<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>"
            "<p>Google Drive can't scan this file for viruses.</p>"
            f'<form id="download-form" action="{html.escape(action)}" method="get">'
            '<input type="submit" id="uc-download-link" value="Download anyway"/>'
            f'<input type="hidden" name="id" value="{html.escape(file_id)}">'
            '<input type="hidden" name="export" value="download">'
            '<input type="hidden" name="confirm" value="t">'
            '<input type="hidden" name="uuid" value="0f1e2d3c-aaaa-bbbb-cccc-000000000000">'
            "</form></body></html>"
        ).encode()
        self._plain(200, page, "text/html; charset=utf-8")

    def _gdrive_folder(self, path: str, query: dict[str, list[str]]) -> None:
        """A public folder's page (``/drive/folders/<id>``) or embedded view (``/embeddedfolderview?id=``)."""
        embedded = path == "/embeddedfolderview"
        folder_id = (query.get("id") or [""])[0] if embedded else path.rsplit("/", 1)[-1]
        with self.server.lock:
            folder = self.server.gdrive_folders.get(folder_id)
            if folder is not None:
                folder.requests += 1
        if folder is None or (embedded and not folder.embedded):
            self._plain(404, b"<html>Not found</html>", "text/html")
            return
        base = self.server.url("")
        if embedded or folder.page == "entries":
            page = entries_page(base, folder)
        elif folder.page == "ivd":
            page = ivd_page(folder_id, folder)
        else:
            page = "<html><head><title>Sign in - Google Accounts</title></head><body>Sign in</body></html>"
        self._plain(200, page.encode(), "text/html; charset=utf-8")


class FileServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` on 127.0.0.1 with a table of routes."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes: dict[str, Route] = {}
        self.lock = threading.Lock()
        self.gdrive_files: dict[str, bytes] = {}
        self.gdrive_folders: dict[str, DriveFolder] = {}
        self.gdrive_pages = 0

    def url(self, path: str) -> str:
        """Absolute URL of ``path`` on this server."""
        return f"http://127.0.0.1:{self.server_port}{path}"

    def add(self, path: str, body: bytes = b"", **kwargs) -> Route:
        """Serve ``body`` at ``path`` (see ``Route`` for the failure modes)."""
        route = Route(body=body, **kwargs)
        self.routes[path] = route
        return route

    def add_gdrive(self, file_id: str, body: bytes) -> str:
        """Mimic Google Drive for ``file_id``; returns the ``/uc?export=download&id=...`` URL."""
        with self.lock:
            self.gdrive_files[file_id] = body
        if "/gdrive-download" not in self.routes:
            self.add("/gdrive-download", body)
        return self.url(f"/uc?export=download&id={file_id}")

    def add_gdrive_folder(self, folder_id: str, children: list[tuple[str, str, bool]], **kwargs) -> DriveFolder:
        """Mimic a public Drive folder at ``/drive/folders/<folder_id>`` (see ``DriveFolder``)."""
        folder = DriveFolder(children=children, **kwargs)
        self.gdrive_folders[folder_id] = folder
        return folder
