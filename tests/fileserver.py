"""A small real HTTP server for download tests: Range support, dropped connections, 404s,
and a mimic of Google Drive's "can't scan this file for viruses" confirmation page."""

from __future__ import annotations

import html
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
        if parsed.path == "/uc" and self.server.gdrive_file is not None:
            self._gdrive_page(parse_qs(parsed.query))
            return
        if route is None:
            self._plain(404, b"not found")
            return
        if route.status != 200:
            self._plain(route.status, b"error")
            return
        if parsed.path == "/gdrive-download" and "confirm" not in parse_qs(parsed.query):
            self._plain(403, b"no confirm token")
            return
        body, start = route.body, 0
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
        if file_id != self.server.gdrive_id:
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


class FileServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` on 127.0.0.1 with a table of routes."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes: dict[str, Route] = {}
        self.lock = threading.Lock()
        self.gdrive_id: str | None = None
        self.gdrive_file: bytes | None = None
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
        self.gdrive_id, self.gdrive_file = file_id, body
        self.add("/gdrive-download", body)
        return self.url(f"/uc?export=download&id={file_id}")
