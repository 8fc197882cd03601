"""Shared fixtures: the ../shared folder and a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fileserver import FileServer

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def require_shared() -> Path:
    """``../shared``, or skip (fail where SRCLI_REQUIRE_SHARED=1, as in CI) when it is absent."""
    if SHARED.is_dir():
        return SHARED
    message = f"{SHARED} is absent"
    if os.environ.get("SRCLI_REQUIRE_SHARED") == "1":
        pytest.fail(message + " and SRCLI_REQUIRE_SHARED=1")
    pytest.skip(message)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only ../shared folder beside the repository."""
    return require_shared()


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    """A threaded HTTP server on 127.0.0.1 serving files registered with ``add``."""
    server = FileServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache folder, also set as SRCLI_CACHE_DIR; offline mode cleared."""
    root = tmp_path / "cache"
    monkeypatch.setenv("SRCLI_CACHE_DIR", str(root))
    monkeypatch.delenv("SRCLI_OFFLINE", raising=False)
    return root


@pytest.fixture(scope="session")
def _shared_mirror_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """One HTTP mirror per session (laid out like the cache) of the official checkpoints and of
    Set5 / Set14 from ../shared, and one cache folder that the session's evaluations share."""
    shared = require_shared()
    from srcli.eval.datasets import DISPLAY_NAMES, load_sources
    from srcli.hub.manifest import load_manifest

    server = FileServer()
    for entry in load_manifest().values():
        source = shared / "weights" / entry.file
        if source.is_file():
            server.add(f"/weights/{entry.key}/{entry.file}", source.read_bytes())
    for key in ("set5", "set14"):
        for item in load_sources()[key]:
            body = (shared / "data" / "benchmarks" / DISPLAY_NAMES[key] / item.file).read_bytes()
            server.add(f"/datasets/{key}/{item.file}", body)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.url(""), tmp_path_factory.mktemp("session-cache")
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def shared_mirror(_shared_mirror_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> str:
    """SRCLI_MIRRORS pointing at the session's local mirror, with the session's shared cache."""
    url, cache_dir = _shared_mirror_server
    monkeypatch.setenv("SRCLI_MIRRORS", url)
    monkeypatch.setenv("SRCLI_CACHE_DIR", str(cache_dir))
    monkeypatch.delenv("SRCLI_OFFLINE", raising=False)
    return url
