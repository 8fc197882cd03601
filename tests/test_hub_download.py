"""Downloads against a real HTTP server on 127.0.0.1 serving the official checkpoints."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from srcli.atomic import stale_temp_files
from srcli.errors import DownloadError, HashMismatchError, OfflineError, WeightsError
from srcli.hub.cache import entry_path, read_recorded_hash, recorded_hash_path, verify_file
from srcli.hub.download import (
    BACKOFF,
    RETRIES,
    TIMEOUT,
    confirmation_url,
    download_lock,
    fetch,
    holds_current_lock_file,
    lock_path,
    resolve_gdrive_url,
)
from srcli.hub.manifest import PinnedFile, get_entry

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def imdn_x2(shared_dir: Path) -> tuple[PinnedFile, bytes]:
    """The pinned IMDN x2 entry and the real checkpoint's bytes."""
    entry = get_entry("imdn.x2")
    body = (shared_dir / "weights" / "IMDN_x2.pth").read_bytes()
    assert hashlib.sha256(body).hexdigest() == entry.sha256  # the pinned hash is the real file's
    return entry, body


def test_download_verifies_and_places_file(file_server, cache, imdn_x2):
    entry, body = imdn_x2
    file_server.add("/IMDN_x2.pth", body)
    seen: list[tuple[int, int | None]] = []
    path = fetch(
        replace(entry, urls=(file_server.url("/IMDN_x2.pth"),)),
        cache,
        reporter=lambda key, done, total: seen.append((done, total)),
    )
    assert path == entry_path(entry, cache)
    assert path.read_bytes() == body
    assert seen[-1] == (len(body), len(body))
    assert not path.with_name(path.name + ".partial").exists()
    assert verify_file(entry, path).status == "ok"


def test_dropped_connection_resumes_with_range(file_server, cache, imdn_x2):
    entry, body = imdn_x2
    route = file_server.add("/IMDN_x2.pth", body, drop_after=1_000_000)
    path = fetch(replace(entry, urls=(file_server.url("/IMDN_x2.pth"),)), cache, backoff=0.01)
    assert path.read_bytes() == body
    first, second = (r["range"] for r in route.requests)
    assert first is None
    # The resume starts where the kept bytes end (a chunk being read when the drop came is re-fetched).
    offset = int(second.removeprefix("bytes=").rstrip("-"))
    assert 0 < offset <= 1_000_000


def test_server_without_range_support_restarts_cleanly(file_server, cache, imdn_x2):
    entry, body = imdn_x2
    route = file_server.add("/IMDN_x2.pth", body, drop_after=500_000, support_range=False)
    path = fetch(replace(entry, urls=(file_server.url("/IMDN_x2.pth"),)), cache, backoff=0.01)
    assert path.read_bytes() == body
    assert len(route.requests) == 2


def test_partial_left_by_an_earlier_run_is_resumed(file_server, cache, imdn_x2):
    entry, body = imdn_x2
    final = entry_path(entry, cache)
    final.parent.mkdir(parents=True)
    final.with_name(final.name + ".partial").write_bytes(body[:123_456])
    route = file_server.add("/IMDN_x2.pth", body)
    fetch(replace(entry, urls=(file_server.url("/IMDN_x2.pth"),)), cache)
    assert final.read_bytes() == body
    assert route.requests[0]["range"] == "bytes=123456-"


def test_wrong_hash_is_a_clear_error_and_leaves_nothing(file_server, cache, imdn_x2):
    entry, body = imdn_x2
    file_server.add("/IMDN_x2.pth", body)
    bad = replace(entry, sha256="0" * 64, urls=(file_server.url("/IMDN_x2.pth"),))
    with pytest.raises(HashMismatchError, match=r"sha256 740b3965.* does not match the pinned 0000"):
        fetch(bad, cache)
    final = entry_path(entry, cache)
    assert not final.exists()
    assert not final.with_name(final.name + ".partial").exists()


def test_wrong_size_is_rejected(file_server, cache, imdn_x2):
    entry, body = imdn_x2
    file_server.add("/IMDN_x2.pth", body[:-10])
    with pytest.raises(HashMismatchError, match="expected 2796052"):
        fetch(replace(entry, urls=(file_server.url("/IMDN_x2.pth"),)), cache, backoff=0.01, retries=1)
    assert not entry_path(entry, cache).exists()


def test_first_mirror_404_then_second(file_server, cache, imdn_x2):
    entry, body = imdn_x2
    file_server.add("/mirror-b/IMDN_x2.pth", body)
    urls = (file_server.url("/mirror-a/IMDN_x2.pth"), file_server.url("/mirror-b/IMDN_x2.pth"))
    assert fetch(replace(entry, urls=urls), cache).read_bytes() == body


def test_transient_5xx_is_retried_then_reported(file_server, cache, imdn_x2):
    entry, _ = imdn_x2
    route = file_server.add("/IMDN_x2.pth", status=503)
    with pytest.raises(DownloadError, match=r"HTTP 503; gave up after 2 retries"):
        fetch(replace(entry, urls=(file_server.url("/IMDN_x2.pth"),)), cache, retries=2, backoff=0.01)
    assert len(route.requests) == 3


def test_all_mirrors_failing_names_each(file_server, cache, imdn_x2):
    entry, _ = imdn_x2
    urls = (file_server.url("/a/x.pth"), file_server.url("/b/x.pth"))
    with pytest.raises(DownloadError) as info:
        fetch(replace(entry, urls=urls), cache)
    assert "/a/x.pth: HTTP 404" in str(info.value) and "/b/x.pth: HTTP 404" in str(info.value)


def test_mirror_env_is_tried_first(file_server, cache, imdn_x2, monkeypatch):
    entry, body = imdn_x2
    file_server.add("/local/weights/imdn.x2/IMDN_x2.pth", body)
    monkeypatch.setenv("SRCLI_MIRRORS", file_server.url("/local/"))
    # The pinned URL points at a path that does not exist: only the mirror can succeed.
    assert fetch(replace(entry, urls=(file_server.url("/nowhere"),)), cache).read_bytes() == body


def test_offline_without_cached_file_says_what_and_where(cache, imdn_x2):
    entry, _ = imdn_x2
    with pytest.raises(OfflineError) as info:
        fetch(replace(entry, urls=("http://127.0.0.1:9/never-contacted",)), cache, offline=True)
    message = str(info.value)
    assert "IMDN_x2.pth" in message and str(entry_path(entry, cache)) in message


def test_offline_with_cached_file_uses_it(file_server, cache, imdn_x2):
    entry, body = imdn_x2
    file_server.add("/IMDN_x2.pth", body)
    online = replace(entry, urls=(file_server.url("/IMDN_x2.pth"),))
    fetch(online, cache)
    served = len(file_server.routes["/IMDN_x2.pth"].requests)
    assert fetch(online, cache, offline=True).read_bytes() == body
    assert len(file_server.routes["/IMDN_x2.pth"].requests) == served


def test_damaged_cached_file_is_refused(file_server, cache, imdn_x2):
    entry, body = imdn_x2
    final = entry_path(entry, cache)
    final.parent.mkdir(parents=True)
    final.write_bytes(body[:100] + b"X" + body[101:])
    with pytest.raises(HashMismatchError, match="does not match the pinned"):
        fetch(entry, cache, offline=True)


def test_unpinned_hash_is_recorded_then_enforced(file_server, cache, imdn_x2):
    entry, body = imdn_x2
    file_server.add("/IMDN_x2.pth", body)
    unpinned = replace(entry, sha256=None, size=None, urls=(file_server.url("/IMDN_x2.pth"),))
    path = fetch(unpinned, cache)
    assert read_recorded_hash(path) == hashlib.sha256(body).hexdigest()
    assert recorded_hash_path(path).is_file()
    path.write_bytes(body + b"tampered")
    with pytest.raises(HashMismatchError, match="recorded"):
        fetch(unpinned, cache)


def test_file_placed_by_hand_is_accepted_and_recorded(cache, imdn_x2):
    entry, body = imdn_x2
    manual = replace(entry, sha256=None, size=None, urls=())
    final = entry_path(manual, cache)
    final.parent.mkdir(parents=True)
    final.write_bytes(body)
    assert fetch(manual, cache, offline=True) == final
    assert read_recorded_hash(final) == hashlib.sha256(body).hexdigest()


@pytest.mark.slow
def test_no_url_explains_the_manual_route(cache):
    # Without its Drive folder (looked up online: tests/test_hub_gdrive.py), only the manual route is left.
    entry = replace(get_entry("rgt.x2"), drive_folder="")
    with pytest.raises(WeightsError, match="Google Drive folder"):
        fetch(entry, cache)


def test_not_enough_disk_space_is_refused_before_writing(file_server, cache, imdn_x2, monkeypatch):
    entry, body = imdn_x2
    file_server.add("/IMDN_x2.pth", body)
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(WeightsError, match="not enough disk space"):
        fetch(replace(entry, urls=(file_server.url("/IMDN_x2.pth"),)), cache)
    assert file_server.routes["/IMDN_x2.pth"].requests == []


def test_google_drive_confirmation_form_is_followed(file_server, cache, imdn_x2):
    entry, body = imdn_x2
    url = file_server.add_gdrive("1AbCdEfGhIjK", body)
    path = fetch(replace(entry, urls=(url,)), cache)
    assert path.read_bytes() == body
    assert file_server.gdrive_pages == 1
    assert "confirm=t" in file_server.routes["/gdrive-download"].requests[0]["query"]


def test_google_drive_html_without_form_is_an_error(file_server, cache, imdn_x2):
    entry, _ = imdn_x2
    file_server.add("/quota", b"<html><body>Quota exceeded</body></html>", content_type="text/html")
    with pytest.raises(DownloadError, match="HTML page instead of the file"):
        fetch(replace(entry, urls=(file_server.url("/quota"),)), cache)


def test_gdrive_share_links_become_download_links():
    assert resolve_gdrive_url("https://drive.google.com/file/d/1uULArtV1E/view?usp=sharing") == (
        "https://drive.google.com/uc?export=download&id=1uULArtV1E"
    )
    assert resolve_gdrive_url("https://drive.google.com/open?id=XYZ") == (
        "https://drive.google.com/uc?export=download&id=XYZ"
    )
    assert resolve_gdrive_url("https://example.org/file/d/1/view") == "https://example.org/file/d/1/view"


def test_confirmation_url_from_form_and_from_link():
    form = (
        '<form id="download-form" action="https://drive.usercontent.google.com/download" method="get">'
        '<input type="submit" value="Download anyway"/><input type="hidden" name="id" value="A">'
        '<input type="hidden" name="confirm" value="t"></form>'
    )
    assert confirmation_url(form, "https://drive.google.com/uc?id=A") == (
        "https://drive.usercontent.google.com/download?id=A&confirm=t"
    )
    link = '<a id="uc-download-link" href="/uc?export=download&amp;confirm=AbC1&amp;id=A">Download</a>'
    assert confirmation_url(link, "https://drive.google.com/uc?id=A") == (
        "https://drive.google.com/uc?export=download&confirm=AbC1&id=A"
    )
    assert confirmation_url("<html>nothing</html>", "https://x") is None


def test_two_processes_fetching_at_once_leave_one_good_file(file_server, cache, imdn_x2):
    entry, body = imdn_x2
    route = file_server.add("/IMDN_x2.pth", body, chunk_delay=0.05)
    script = textwrap.dedent(f"""
        from dataclasses import replace
        from pathlib import Path
        from srcli.hub.download import fetch
        from srcli.hub.manifest import get_entry
        entry = replace(get_entry("imdn.x2"), urls=({file_server.url("/IMDN_x2.pth")!r},))
        print(fetch(entry, Path({str(cache)!r})))
    """)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    final = entry_path(entry, cache)
    assert {o[0].strip() for o in outs} == {str(final)}
    assert final.read_bytes() == body
    assert len(route.requests) == 1  # the second process waited on the lock and reused the file
    assert sorted(p.name for p in final.parent.iterdir()) == ["IMDN_x2.pth"]  # the lock file went with the lock


# ---- the lock file goes with the lock (issue 15, item 4) --------------------------------------


@pytest.mark.parametrize("failure", ["404", "dropped"])
def test_a_failed_download_leaves_no_lock_file(file_server, cache, imdn_x2, failure):
    entry, body = imdn_x2
    if failure == "404":
        url = file_server.url("/nowhere/IMDN_x2.pth")
    else:  # drops every time: the kept bytes stay for a resume, the lock does not
        file_server.add("/IMDN_x2.pth", body, drop_after=300_000, drop_times=99)
        url = file_server.url("/IMDN_x2.pth")
    with pytest.raises(DownloadError):
        fetch(replace(entry, urls=(url,)), cache, retries=1, backoff=0.0)
    final = entry_path(entry, cache)
    assert not lock_path(final).exists()
    left = sorted(p.name for p in final.parent.iterdir())
    assert left == ([] if failure == "404" else ["IMDN_x2.pth.partial"])


def test_a_lock_on_a_removed_lock_file_is_taken_again(tmp_path):
    from filelock import FileLock

    final = tmp_path / "w.pth"
    path = lock_path(final)
    lock = FileLock(str(path))
    lock.acquire()
    try:
        assert holds_current_lock_file(lock, path)
        path.unlink()  # what the holder before us did on its way out
        assert not holds_current_lock_file(lock, path)
        path.write_bytes(b"")  # a newcomer's lock file: another file at the same path
        assert not holds_current_lock_file(lock, path)
    finally:
        lock.release()
    with download_lock(final):
        assert path.exists()
    assert not path.exists()


# ---- every final name is given by srcli.atomic (issue 15, item 10) ----------------------------


def test_the_final_step_goes_through_commit_file(file_server, cache, imdn_x2, monkeypatch):
    import srcli.hub.download as download

    entry, body = imdn_x2
    file_server.add("/IMDN_x2.pth", body)
    committed: list[tuple[str, str]] = []
    real = download.commit_file

    def spy(source, path):
        committed.append((Path(source).name, Path(path).name))
        real(source, path)

    monkeypatch.setattr(download, "commit_file", spy)
    unpinned = replace(entry, sha256=None, urls=(file_server.url("/IMDN_x2.pth"),))
    path = fetch(unpinned, cache)
    assert committed == [("IMDN_x2.pth.partial", "IMDN_x2.pth")]
    assert sorted(p.name for p in path.parent.iterdir()) == ["IMDN_x2.pth", "IMDN_x2.pth.sha256"]
    assert stale_temp_files(path.parent) == []


# ---- file:// mirrors and folder mirrors (issue 15, item 2) ------------------------------------


def _local_mirror(root: Path, entry: PinnedFile, body: bytes) -> Path:
    """A folder laid out like the cache, as an air-gapped site would copy it."""
    target = root / entry.folder / entry.key / entry.file
    target.parent.mkdir(parents=True)
    target.write_bytes(body)
    return root


@pytest.mark.parametrize("form", ["file-url", "folder-path"])
def test_a_local_folder_mirror_is_copied_from(file_server, cache, imdn_x2, tmp_path, monkeypatch, form):
    entry, body = imdn_x2
    if form == "file-url":  # a space in the folder's name is %20 in its URL
        monkeypatch.setenv("SRCLI_MIRRORS", _local_mirror(tmp_path / "mirror dir", entry, body).as_uri())
    else:
        monkeypatch.setenv("SRCLI_MIRRORS", str(_local_mirror(tmp_path / "mirror", entry, body)))
    route = file_server.add("/pinned/IMDN_x2.pth", body)
    seen: list[int] = []
    path = fetch(
        replace(entry, urls=(file_server.url("/pinned/IMDN_x2.pth"),)),
        cache,
        reporter=lambda key, done, total: seen.append(done),
    )
    assert path.read_bytes() == body and verify_file(entry, path).status == "ok"
    assert route.requests == []  # the mirror came first and sufficed
    assert seen[-1] == len(body)


def test_a_file_mirror_is_used_offline(cache, imdn_x2, tmp_path, monkeypatch):
    entry, body = imdn_x2
    monkeypatch.setenv("SRCLI_MIRRORS", _local_mirror(tmp_path / "m", entry, body).as_uri())
    assert fetch(replace(entry, urls=("http://127.0.0.1:9/never",)), cache, offline=True).read_bytes() == body


def test_a_file_mirror_without_the_file_falls_through_to_the_next_source(file_server, cache, imdn_x2, tmp_path):
    entry, body = imdn_x2
    (tmp_path / "empty").mkdir()
    file_server.add("/IMDN_x2.pth", body)
    urls = ((tmp_path / "empty").as_uri() + "/weights/imdn.x2/IMDN_x2.pth", file_server.url("/IMDN_x2.pth"))
    assert fetch(replace(entry, urls=urls), cache).read_bytes() == body


def test_a_damaged_file_on_a_file_mirror_is_refused(cache, imdn_x2, tmp_path, monkeypatch):
    entry, body = imdn_x2
    monkeypatch.setenv("SRCLI_MIRRORS", _local_mirror(tmp_path / "m", entry, body[:-1] + b"\x00").as_uri())
    with pytest.raises(OfflineError) as info:
        fetch(entry, cache, offline=True)
    assert "does not match the pinned" in str(info.value)
    final = entry_path(entry, cache)
    assert not final.exists() and not final.with_name(final.name + ".partial").exists()


def test_a_mirror_folder_that_does_not_exist_is_reported_once(cache, imdn_x2, tmp_path, monkeypatch, caplog):
    entry, _ = imdn_x2
    monkeypatch.setenv("SRCLI_MIRRORS", str(tmp_path / "not-mounted"))
    with caplog.at_level("WARNING", logger="srcli"):
        for _ in range(2):
            with pytest.raises(OfflineError):
                fetch(entry, cache, offline=True)
    warnings = [r.getMessage() for r in caplog.records if "not-mounted" in r.getMessage()]
    assert warnings == [f"SRCLI_MIRRORS: the folder {tmp_path / 'not-mounted'} does not exist (not mounted?)"]


def test_an_unsupported_mirror_scheme_is_one_line(cache, imdn_x2, monkeypatch):
    entry, _ = imdn_x2
    monkeypatch.setenv("SRCLI_MIRRORS", "ftp://example.org/srcli")
    with pytest.raises(WeightsError, match=r"^SRCLI_MIRRORS: 'ftp://example.org/srcli' is not an http://") as info:
        fetch(entry, cache)
    assert len(str(info.value).splitlines()) == 1


# ---- repairing a damaged cache entry (issue 15, item 1) ---------------------------------------


def test_force_replaces_a_damaged_file_with_a_verified_one(file_server, cache, imdn_x2):
    entry, body = imdn_x2
    route = file_server.add("/IMDN_x2.pth", body)
    online = replace(entry, urls=(file_server.url("/IMDN_x2.pth"),))
    final = entry_path(entry, cache)
    final.parent.mkdir(parents=True)
    final.write_bytes(body[:100] + b"X" + body[101:])
    hint = r"\(damaged\); replace it with 'srcli models download imdn -s 2 --force'"
    with pytest.raises(HashMismatchError, match=hint):
        fetch(online, cache)
    assert route.requests == []
    assert fetch(online, cache, force=True).read_bytes() == body
    assert sorted(p.name for p in final.parent.iterdir()) == ["IMDN_x2.pth"]


def test_force_keeps_the_old_file_when_the_new_one_is_bad(file_server, cache, imdn_x2):
    entry, body = imdn_x2
    file_server.add("/IMDN_x2.pth", body[:-10])
    final = entry_path(entry, cache)
    final.parent.mkdir(parents=True)
    final.write_bytes(body)
    with pytest.raises(HashMismatchError):
        fetch(replace(entry, urls=(file_server.url("/IMDN_x2.pth"),)), cache, force=True)
    assert final.read_bytes() == body


# ---- a failed download says what to do, quickly (issue 15, item 6) -----------------------------


def test_a_failed_download_gives_the_size_and_every_way_forward(file_server, cache, imdn_x2, monkeypatch):
    entry, _ = imdn_x2
    monkeypatch.delenv("SRCLI_MIRRORS", raising=False)
    with pytest.raises(DownloadError) as info:
        fetch(replace(entry, urls=(file_server.url("/gone/IMDN_x2.pth"),)), cache)
    message = str(info.value)
    assert len(message.splitlines()) == 1
    assert message.startswith("could not download 'imdn.x2' (IMDN_x2.pth, 2.8 MB): ")
    assert "/gone/IMDN_x2.pth: HTTP 404" in message
    assert "--weights FILE" in message
    assert f"put IMDN_x2.pth at {entry_path(entry, cache)}" in message
    assert "SRCLI_MIRRORS" in message and "weights/imdn.x2/IMDN_x2.pth" in message


def test_retries_take_seconds_and_each_is_reported(file_server, cache, imdn_x2, monkeypatch, caplog):
    import srcli.hub.download as download

    entry, _ = imdn_x2
    pauses: list[float] = []
    monkeypatch.setattr(download.time, "sleep", pauses.append)
    route = file_server.add("/IMDN_x2.pth", status=503)
    with caplog.at_level("WARNING", logger="srcli"), pytest.raises(DownloadError, match="gave up after"):
        fetch(replace(entry, urls=(file_server.url("/IMDN_x2.pth"),)), cache)  # the defaults
    assert len(route.requests) == RETRIES + 1
    assert sum(pauses) <= 5.0 and pauses == [BACKOFF * 2**i for i in range(RETRIES)]
    retries = [r for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == RETRIES and all(r.levelname == "WARNING" for r in retries)
    assert "HTTP 503; retry 1 of 3 in 0.5 s" in retries[0].getMessage()
    connect, read = TIMEOUT
    assert connect <= 10 and read <= 30  # an unreachable host fails in seconds


def test_every_environment_variable_the_hub_reads_is_documented():
    import re

    sources = [*sorted((REPO / "srcli" / "hub").glob("*.py")), REPO / "srcli" / "eval" / "datasets.py"]
    read = set()
    for path in sources:
        read |= set(re.findall(r"\bSRCLI_[A-Z_]+\b", path.read_text(encoding="utf-8")))
    assert {"SRCLI_CACHE_DIR", "SRCLI_OFFLINE", "SRCLI_MIRRORS", "SRCLI_GDRIVE_BASE"} <= read
    docs = (REPO / "docs" / "weights.md").read_text(encoding="utf-8")
    table = {m for m in re.findall(r"^\| `(SRCLI_[A-Z_]+)` \|", docs, re.M)}
    assert read <= table, f"undocumented in docs/weights.md: {sorted(read - table)}"


def test_a_file_mirror_without_the_file_keeps_a_resumable_partial(file_server, cache, imdn_x2, tmp_path, monkeypatch):
    entry, body = imdn_x2
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("SRCLI_MIRRORS", (tmp_path / "empty").as_uri())
    final = entry_path(entry, cache)
    final.parent.mkdir(parents=True)
    final.with_name(final.name + ".partial").write_bytes(body[:200_000])
    route = file_server.add("/IMDN_x2.pth", body)
    assert fetch(replace(entry, urls=(file_server.url("/IMDN_x2.pth"),)), cache).read_bytes() == body
    assert route.requests[0]["range"] == "bytes=200000-"
