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
