"""Files published only inside a public Google Drive folder (RGT-S x2/x3), files on Drive by id (RGT x2/x3),
and files placed in the cache by hand.

A local server stands in for Drive end to end (``$SRCLI_GDRIVE_BASE``): the folder pages, the
"can't scan for viruses" confirmation form and the bytes. A real checkpoint from ../shared is
served under the RGT file names (only the transport is under test there).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from srcli.errors import CheckpointMismatchError, DownloadError, HashMismatchError, OfflineError, WeightsError
from srcli.hub.cache import entry_path, read_recorded_hash, recorded_hash_path
from srcli.hub.download import fetch, resolve_gdrive_url
from srcli.hub.gdrive import (
    DriveFolderError,
    DriveItem,
    find_file,
    folder_id_from_url,
    gdrive_base,
    parse_folder_page,
    unescape_js_string,
)
from srcli.hub.loading import check_placed_file, load_model
from srcli.hub.manifest import get_entry, parse_manifest
from srcli.registry import get_model
from tests.fileserver import DriveFolder, ivd_page

FOLDER_URL = "https://drive.google.com/drive/folders/1UNn5LvnfQAi6eHAHz-mTYWu8vCJs5kwu"
ROOT = "1UNn5LvnfQAi6eHAHz-mTYWu8vCJs5kwu"
# Drive file ids are 33 characters of [-\w]; these are made up.
ID_X2 = "1RgTx2AAAAAAAAAAAAAAAAAAAAAAAAAAA"
ID_X4 = "1RgTx4AAAAAAAAAAAAAAAAAAAAAAAAAAA"
ID_S2 = "1RgTs2AAAAAAAAAAAAAAAAAAAAAAAAAAA"
ID_S4 = "1RgTs4AAAAAAAAAAAAAAAAAAAAAAAAAAA"
ID_OLD = "1RgTs2OLDAAAAAAAAAAAAAAAAAAAAAAAA"
ID_MODELS = "1FoLdErMoDeLsAAAAAAAAAAAAAAAAAAAA"
ID_RGTS = "1FoLdErRgTsAAAAAAAAAAAAAAAAAAAAAA"
ID_ARCHIVE = "1FoLdErArChIvEAAAAAAAAAAAAAAAAAAA"
# The authors' real RGT x2 / x3 file ids (../shared/weights/MANIFEST.toml).
RGT_X2_ID = "1uSgjg5ipivuEz6AlS6jhEH3oF6tuudUb"
RGT_X3_ID = "1F_mr-bjYtP5FQLEEo_MOthj9Bk6kQLgu"


@pytest.fixture
def bodies(shared_dir: Path) -> tuple[bytes, bytes]:
    """Two different real checkpoints, standing in for RGT files."""
    weights = shared_dir / "weights"
    return (weights / "IMDN_x2.pth").read_bytes(), (weights / "IMDN_x3.pth").read_bytes()


@pytest.fixture
def drive(file_server, cache, monkeypatch):
    """The local server as Google Drive; no mirrors."""
    monkeypatch.setenv("SRCLI_GDRIVE_BASE", file_server.url(""))
    monkeypatch.delenv("SRCLI_MIRRORS", raising=False)
    return file_server


def _flat_folder(server, body: bytes, **kwargs) -> DriveFolder:
    server.add_gdrive(ID_X2, body)
    children = [("1ReadMeAAAAAAAAAAAAAAAAAAAAAAAAAA", "README.md", False), (ID_X2, "RGT_S_x2.pth", False)]
    children.append((ID_X4, "RGT_S_x4.pth", False))
    return server.add_gdrive_folder(ROOT, children, name="RGT", **kwargs)


def _nested_folders(server, body: bytes, decoy: bytes) -> None:
    """models/RGT-S/RGT_S_x2.pth, and a deeper models/RGT-S/archive/RGT_S_x2.pth with other bytes."""
    server.add_gdrive(ID_S2, body)
    server.add_gdrive(ID_OLD, decoy)
    server.add_gdrive_folder(
        ROOT, [("1NoTeSAAAAAAAAAAAAAAAAAAAAAAAAAAA", "notes.txt", False), (ID_MODELS, "models", True)]
    )
    server.add_gdrive_folder(ID_MODELS, [(ID_RGTS, "RGT-S", True)])
    server.add_gdrive_folder(ID_RGTS, [(ID_ARCHIVE, "archive", True), (ID_S2, "RGT_S_x2.pth", False)])
    server.add_gdrive_folder(ID_ARCHIVE, [(ID_OLD, "RGT_S_x2.pth", False), (ID_S4, "RGT_S_x4.pth", False)])


# ---- end to end against the local Drive -----------------------------------------------------


@pytest.mark.parametrize(
    ("page", "embedded", "pages_read"),
    [("ivd", False, 1), ("entries", False, 1), ("broken", True, 2)],
    ids=["drive-ivd-page", "html-entries-page", "embedded-view-fallback"],
)
def test_file_is_found_by_name_downloaded_and_its_hash_recorded(drive, cache, bodies, page, embedded, pages_read):
    body, _ = bodies
    folder = _flat_folder(drive, body, page=page, embedded=embedded)
    path = fetch(get_entry("rgt-s.x2"), cache)
    assert path == entry_path(get_entry("rgt-s.x2"), cache)
    assert path.read_bytes() == body
    assert folder.requests == pages_read
    # The bytes came through the confirmation form, for the file id the listing gave.
    assert drive.gdrive_pages == 1
    query = drive.routes["/gdrive-download"].requests[0]["query"]
    assert f"id={ID_X2}" in query and "confirm=t" in query
    assert read_recorded_hash(path) == hashlib.sha256(body).hexdigest()
    assert ID_X2 in json.loads(recorded_hash_path(path).read_text())["url"]


def test_file_in_a_subfolder_is_found_breadth_first(drive, cache, bodies):
    body, decoy = bodies
    _nested_folders(drive, body, decoy)
    path = fetch(get_entry("rgt-s.x2"), cache)
    assert path.read_bytes() == body  # the shallower of the two files with this name
    assert drive.gdrive_folders[ID_ARCHIVE].requests == 0  # found before going deeper


def test_a_subfolder_path_is_followed_exactly(drive, cache, bodies):
    body, decoy = bodies
    _nested_folders(drive, body, decoy)
    entry = replace(get_entry("rgt-s.x2"), drive_path="models/RGT-S/archive/RGT_S_x2.pth")
    assert fetch(entry, cache).read_bytes() == decoy
    wrong = replace(entry, drive_path="weights/RGT_S_x2.pth")
    entry_path(wrong, cache).unlink()
    recorded_hash_path(entry_path(wrong, cache)).unlink()
    with pytest.raises(
        DownloadError, match=r"no subfolder 'weights' in the Google Drive folder .*its subfolders: models/"
    ):
        fetch(wrong, cache)


def test_missing_name_lists_what_the_folder_has_and_the_manual_route(drive, cache, bodies):
    body, _ = bodies
    _flat_folder(drive, body)
    drive.add_gdrive_folder(ROOT, drive.gdrive_folders[ROOT].children + [(ID_RGTS, "old", True)])
    drive.add_gdrive_folder(ID_RGTS, [(ID_S4, "RGT_S_x4.pth", False)])
    entry = get_entry("rgt-s.x3")
    with pytest.raises(DownloadError) as info:
        fetch(entry, cache)
    message = str(info.value)
    assert len(message.splitlines()) == 1
    assert f"no file 'RGT_S_x3.pth' in the Google Drive folder {FOLDER_URL}" in message
    assert "README.md, RGT_S_x2.pth, RGT_S_x4.pth, old/RGT_S_x4.pth" in message
    assert "did you mean" not in message  # RGT_S_x2.pth is another file, not a misspelling
    assert "by hand:" in message and "--weights FILE" in message and "'srcli models path rgt-s -s 3'" in message
    final = entry_path(entry, cache)
    assert not final.exists() and not final.with_name(final.name + ".partial").exists()


def test_unreadable_folder_page_names_the_folder_and_the_manual_route(drive, cache, bodies):
    body, _ = bodies
    folder = _flat_folder(drive, body, page="broken", embedded=False)
    with pytest.raises(DownloadError) as info:
        fetch(get_entry("rgt-s.x2"), cache)
    message = str(info.value)
    assert f"cannot read the listing of the Google Drive folder {FOLDER_URL}" in message
    assert "download RGT_S_x2.pth from the Google Drive folder" in message and "--weights FILE" in message
    assert folder.requests == 2 and drive.gdrive_pages == 0  # the page, then the embedded view (404)


def test_folder_that_is_not_public_is_a_clear_error(drive, cache):
    with pytest.raises(DownloadError, match=r"does not exist or is not shared publicly \(HTTP 404\)"):
        fetch(get_entry("rgt-s.x2"), cache)


def test_recorded_hash_rejects_different_bytes_later(drive, cache, bodies):
    body, other = bodies
    _flat_folder(drive, body)
    entry = get_entry("rgt-s.x2")
    path = fetch(entry, cache)
    assert read_recorded_hash(path) == hashlib.sha256(body).hexdigest()

    # Upstream now serves other bytes under the same name: refused, nothing left behind.
    path.unlink()
    drive.gdrive_files[ID_X2] = other
    with pytest.raises(HashMismatchError, match="differs from the one recorded at first download"):
        fetch(entry, cache)
    assert not path.exists() and not path.with_name(path.name + ".partial").exists()

    # The original bytes are accepted again; a damaged cached copy is refused.
    drive.gdrive_files[ID_X2] = body
    assert fetch(entry, cache).read_bytes() == body
    path.write_bytes(body[:-1] + b"\x00")
    with pytest.raises(HashMismatchError, match="does not match the recorded"):
        fetch(entry, cache)


def test_offline_gives_the_manual_route_without_contacting_drive(drive, cache, bodies):
    body, _ = bodies
    folder = _flat_folder(drive, body)
    entry = get_entry("rgt-s.x2")
    with pytest.raises(OfflineError) as info:
        fetch(entry, cache, offline=True)
    message = str(info.value)
    assert f"put RGT_S_x2.pth at {entry_path(entry, cache)}" in message
    assert FOLDER_URL in message and "--weights FILE" in message and "'srcli models path rgt-s -s 2'" in message
    assert folder.requests == 0 and drive.gdrive_pages == 0


def test_a_mirror_is_tried_before_the_drive_folder(drive, cache, bodies, monkeypatch):
    body, _ = bodies
    folder = _flat_folder(drive, body)
    drive.add("/m/weights/rgt-s.x2/RGT_S_x2.pth", body)
    monkeypatch.setenv("SRCLI_MIRRORS", drive.url("/m"))
    assert fetch(get_entry("rgt-s.x2"), cache).read_bytes() == body
    assert folder.requests == 0


@pytest.mark.parametrize(("key", "file_id"), [("rgt.x2", RGT_X2_ID), ("rgt.x3", RGT_X3_ID)])
def test_rgt_x2_x3_download_by_file_id_and_record_their_hash(drive, cache, bodies, key, file_id):
    body, other = bodies
    folder = _flat_folder(drive, other)  # the folder page must not be needed
    drive.add_gdrive(file_id, body)
    path = fetch(get_entry(key), cache)
    assert path.read_bytes() == body
    assert folder.requests == 0 and drive.gdrive_pages == 1  # the file link, then its confirmation form
    assert f"id={file_id}" in drive.routes["/gdrive-download"].requests[0]["query"]
    assert read_recorded_hash(path) == hashlib.sha256(body).hexdigest()
    # Recorded on first download: different bytes later are refused.
    path.unlink()
    drive.gdrive_files[file_id] = other
    with pytest.raises(HashMismatchError, match="differs from the one recorded at first download"):
        fetch(get_entry(key), cache)


def test_drive_base_override_applies_to_file_links(monkeypatch):
    monkeypatch.delenv("SRCLI_GDRIVE_BASE", raising=False)
    assert gdrive_base() == "https://drive.google.com"
    monkeypatch.setenv("SRCLI_GDRIVE_BASE", "http://127.0.0.1:1234/")
    assert resolve_gdrive_url("https://drive.google.com/file/d/1uULArtV1E/view?usp=sharing") == (
        "http://127.0.0.1:1234/uc?export=download&id=1uULArtV1E"
    )


# ---- reading folder pages (no server) -------------------------------------------------------


def test_drive_ivd_string_is_decoded():
    # Written by hand the way Drive escapes it: JSON punctuation as \xNN, '/' as \/, non-ASCII as \uNNNN.
    page = (
        "<html><script nonce=\"n\">window['_DRIVE_ivd'] = '\\x5b\\x5b\\x5b\\x221AbCdEfGhIjKlMnOpQrStUvWxYz0123456\\x22,"
        "\\x5b\\x22p\\x22\\x5d,\\x22RGT_x2.pth\\x22,\\x22application\\/octet-stream\\x22\\x5d,"
        "\\x5b\\x221ZyX\\x22,\\x5b\\x22p\\x22\\x5d,\\x22Mod\\u00e8les \\x5c\\x5cx\\x22,"
        "\\x22application\\/vnd.google-apps.folder\\x22\\x5d\\x5d,null,null\\x5d';"
        "if (window['_DRIVE_ivdc']) {window['_DRIVE_ivdc']();}</script></html>"
    )
    assert parse_folder_page(page) == [
        DriveItem("1AbCdEfGhIjKlMnOpQrStUvWxYz0123456", "RGT_x2.pth", False),
        DriveItem("1ZyX", "Modèles \\x", True),
    ]


def test_mimicked_page_round_trips_awkward_names():
    names = ["RGT_x2.pth", 'quote " and \\ backslash.pth', "naïve 模型 😀.pth", "a'b.pth"]
    folder = DriveFolder(children=[(f"1id{i}", n, i == 0) for i, n in enumerate(names)])
    items = parse_folder_page(ivd_page("1root", folder))
    assert items == [DriveItem(f"1id{i}", n, i == 0) for i, n in enumerate(names)]


def test_empty_folder_is_an_empty_listing_not_an_unreadable_page():
    assert parse_folder_page("<script>window['_DRIVE_ivd'] = '\\x5bnull,null\\x5d';</script>") == []
    assert parse_folder_page("<html><title>Sign in</title><body>Sign in to continue</body></html>") is None
    assert parse_folder_page("<script>window['_DRIVE_ivd'] = 'not json';</script>") is None


def test_older_page_styles_are_read():
    divs = (
        '<div class="WYuW0e" data-id="1FiLeAAAAAAAAAAAAAAAAAAAAAAAAAAAA" data-target="doc">'
        '<div class="KL4NAf" data-tooltip="RGT_x2.pth"><img src="i.png"></div></div>'
        '<div class="WYuW0e" data-id="1FoLdAAAAAAAAAAAAAAAAAAAAAAAAAAAA" data-target="folder">'
        '<div class="entry-title">RGT-S</div></div>'
    )
    assert parse_folder_page(divs) == [
        DriveItem("1FiLeAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "RGT_x2.pth", False),
        DriveItem("1FoLdAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "RGT-S", True),
    ]
    pairs = 'AF_initDataCallback({data:[[\\"1PaIrAAAAAAAAAAAAAAAAAAAAAAAAAAAA\\",\\"RGT_x3.pth\\"]]});'
    assert parse_folder_page(f"<script>{pairs}</script>") == [
        DriveItem("1PaIrAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "RGT_x3.pth", False)
    ]


def test_js_string_unescaping():
    assert unescape_js_string(r"\x5b\u00e9\/\'\"\\n\n\ud83d\ude00") == "[é/'\"\\n\n😀"


def test_folder_ids_from_links():
    assert folder_id_from_url(FOLDER_URL + "?usp=sharing") == ROOT
    assert folder_id_from_url("https://drive.google.com/drive/u/1/folders/1Ab") == "1Ab"
    assert folder_id_from_url("https://drive.google.com/open?id=1Cd") == "1Cd"
    with pytest.raises(WeightsError, match="not a Google Drive folder link"):
        folder_id_from_url("https://drive.google.com/drive/my-drive")


def _lister(tree: dict[str, list[DriveItem]], calls: list[str]):
    def list_folder(folder_id: str, shown: str) -> list[DriveItem]:
        calls.append(shown)
        return tree[folder_id]

    return list_folder


def test_search_depth_is_limited_and_reported():
    tree = {
        "r": [DriveItem("a", "a", True)],
        "a": [DriveItem("b", "b", True)],
        "b": [DriveItem("f", "RGT_x2.pth")],
    }
    assert find_file(_lister(tree, []), "r", "RGT_x2.pth", where="F", max_depth=2) == "f"
    with pytest.raises(DriveFolderError, match=r"subfolders 1 level deep; it holds: a/b/ \(not searched\)"):
        find_file(_lister(tree, []), "r", "RGT_x2.pth", where="F", max_depth=1)


def test_same_name_twice_at_one_depth_is_ambiguous():
    tree = {
        "r": [DriveItem("a", "A", True), DriveItem("b", "B", True)],
        "a": [DriveItem("f1", "RGT_x2.pth")],
        "b": [DriveItem("f2", "RGT_x2.pth")],
    }
    with pytest.raises(DriveFolderError, match=r"several files named 'RGT_x2.pth' .*\(A/RGT_x2.pth, B/RGT_x2.pth\)"):
        find_file(_lister(tree, []), "r", "RGT_x2.pth", where="F")


def test_cycles_and_huge_trees_end():
    calls: list[str] = []
    cyclic = {"r": [DriveItem("a", "a", True)], "a": [DriveItem("r", "back", True), DriveItem("a", "self", True)]}
    with pytest.raises(DriveFolderError, match="no file 'x.pth'"):
        find_file(_lister(cyclic, calls), "r", "x.pth", where="F", max_depth=5)
    assert calls == ["", "a/"]
    wide = {"r": [DriveItem(str(i), f"d{i}", True) for i in range(100)], **{str(i): [] for i in range(100)}}
    with pytest.raises(DriveFolderError, match="gave up looking for 'x.pth' .* after 40 folders"):
        find_file(_lister(wide, []), "r", "x.pth", where="F")


def test_spelling_variant_is_suggested():
    tree = {"r": [DriveItem("f", "rgt_x2.PTH")]}
    with pytest.raises(DriveFolderError, match=r"did you mean 'rgt_x2.PTH'\?"):
        find_file(_lister(tree, []), "r", "RGT_x2.pth", where="F")


def test_manifest_reads_and_checks_drive_fields():
    entry = parse_manifest(
        f'[m.x2]\nfile = "a.pth"\ndrive_folder = "{FOLDER_URL}"\ndrive_path = "sub/a.pth"\n'
        'licence = "x"\nsource = "y"\n'
    )["m.x2"]
    assert entry.downloadable and entry.urls == () and entry.drive_path == "sub/a.pth"
    with pytest.raises(WeightsError, match=r"\[m.x2\] has drive_path but no drive_folder"):
        parse_manifest('[m.x2]\nfile = "a.pth"\ndrive_path = "a.pth"\n')
    with pytest.raises(WeightsError, match=r"\[m.x2\]: not a Google Drive folder link"):
        parse_manifest('[m.x2]\nfile = "a.pth"\ndrive_folder = "https://example.org/x"\n')
    for key in ("rgt-s.x2", "rgt-s.x3"):
        pinned = get_entry(key)
        assert pinned.drive_folder == FOLDER_URL and pinned.drive_path == pinned.file and pinned.sha256 is None
    # RGT x2 / x3 are pinned by their Drive file ids (as x4 is); the folder page is not their route.
    for key, file_id in (("rgt.x2", RGT_X2_ID), ("rgt.x3", RGT_X3_ID)):
        pinned = get_entry(key)
        assert pinned.urls == (f"https://drive.google.com/file/d/{file_id}/view?usp=drive_link",)
        assert pinned.drive_folder == "" and pinned.sha256 is None and pinned.size is None


# ---- a file placed in the cache by hand -----------------------------------------------------


@pytest.fixture
def unpinned(monkeypatch):
    """Make the loader see IMDN / RLFN entries as if upstream pinned no hash and no URL."""
    import srcli.hub.loading as loading

    real = loading.get_entry
    monkeypatch.setattr(loading, "get_entry", lambda key: replace(real(key), sha256=None, size=None, urls=()))
    return lambda key: replace(real(key), sha256=None, size=None, urls=())


def _place(cache: Path, entry, source: Path | bytes) -> Path:
    path = entry_path(entry, cache)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(source if isinstance(source, bytes) else source.read_bytes())
    return path


@pytest.mark.parametrize(
    ("name", "scale", "wrong", "problem"),
    [
        ("imdn", 2, "rlfn_x2.pth", r"\d+ missing: .*; \d+ unexpected: "),
        ("rlfn", 4, "rlfn_s_x4.pth", r"mis-shaped: .*\(file \(48,\) vs model \(52,\)\)"),
    ],
)
def test_wrong_file_placed_by_hand_is_refused(unpinned, cache, shared_dir, name, scale, wrong, problem):
    entry = unpinned(get_model(name).weights_key(scale))
    path = _place(cache, entry, shared_dir / "weights" / wrong)
    with pytest.raises(CheckpointMismatchError, match=problem) as info:
        load_model(name, scale, offline=True)
    message = str(info.value)
    assert len(message.splitlines()) == 1
    assert message.startswith(f"{path} was placed in the cache by hand but is not a '{name}' x{scale} checkpoint")
    assert read_recorded_hash(path) is None  # a wrong file never gets trusted


def test_unreadable_or_unsafe_file_placed_by_hand_is_refused(unpinned, cache, tmp_path):
    entry = unpinned("imdn.x2")
    path = _place(cache, entry, b"not a checkpoint")
    with pytest.raises(WeightsError, match=re.escape(f"{path}: not a PyTorch (.pth/.pt) or safetensors checkpoint")):
        load_model("imdn", 2, offline=True)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"params": Evil()}, tmp_path / "evil.pth")
    _place(cache, entry, tmp_path / "evil.pth")
    with pytest.raises(WeightsError, match="weights_only=True"):
        load_model("imdn", 2, offline=True)
    torch.save({"params": {"w": "text"}}, tmp_path / "text.pth")
    _place(cache, entry, tmp_path / "text.pth")
    with pytest.raises(WeightsError, match=re.escape(f"{path} (placed in the cache by hand): ") + ".*no state dict"):
        load_model("imdn", 2, offline=True)
    assert read_recorded_hash(path) is None


def test_right_file_placed_by_hand_is_accepted_recorded_then_enforced(unpinned, cache, shared_dir):
    entry = unpinned("imdn.x2")
    source = shared_dir / "weights" / "IMDN_x2.pth"
    path = _place(cache, entry, source)
    loaded = load_model("imdn", 2, offline=True)
    assert loaded.weights_path == path
    assert read_recorded_hash(path) == hashlib.sha256(source.read_bytes()).hexdigest()
    reference = torch.load(source, map_location="cpu", weights_only=True)["module.upsampler.0.weight"]
    assert torch.equal(loaded.module.state_dict()["upsampler.0.weight"], reference)
    path.write_bytes(source.read_bytes()[:-1] + b"\x00")
    with pytest.raises(HashMismatchError, match="does not match the recorded"):
        load_model("imdn", 2, offline=True)


def test_placed_file_of_an_unbuildable_model_is_used_but_not_recorded(cache, shared_dir):
    spec = replace(get_model("imdn"), arch=None)  # as for a model whose architecture is not written yet
    entry = replace(get_entry("imdn.x2"), sha256=None, size=None, urls=())
    path = _place(cache, entry, shared_dir / "weights" / "IMDN_x2.pth")
    assert check_placed_file(spec, 2, path) is False
    assert fetch(entry, cache, offline=True, check_placed=lambda p: check_placed_file(spec, 2, p)) == path
    assert read_recorded_hash(path) is None
    # Readability is still required.
    path.write_bytes(b"junk")
    with pytest.raises(WeightsError, match="not a PyTorch"):
        fetch(entry, cache, offline=True, check_placed=lambda p: check_placed_file(spec, 2, p))


def test_models_download_checks_a_placed_file(unpinned, cache, shared_dir, monkeypatch, capsys):
    import srcli.cli.models as cli_models
    from srcli.cli import main

    monkeypatch.setattr(cli_models, "get_entry", unpinned)
    path = _place(cache, unpinned("rlfn.x2"), shared_dir / "weights" / "rlfn_s_x2.pth")
    assert main(["models", "download", "rlfn", "-s", "2", "--offline"]) == 1
    assert read_recorded_hash(path) is None
    _place(cache, unpinned("rlfn.x2"), shared_dir / "weights" / "rlfn_x2.pth")
    assert main(["models", "download", "rlfn", "-s", "2", "--offline"]) == 0
    assert read_recorded_hash(path) == hashlib.sha256((shared_dir / "weights" / "rlfn_x2.pth").read_bytes()).hexdigest()


def test_info_shows_the_drive_folder_and_the_manual_route(cache, capsys):
    from srcli.cli import main

    assert main(["models", "info", "rgt-s"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # undo rich's wrapping
    assert f"drive folder: {FOLDER_URL}" in out and "'RGT_S_x3.pth' there by name" in out
    assert "download RGT_S_x2.pth from the Google Drive folder" in out
    assert "--weights FILE" in out and "'srcli models path rgt-s -s 2'" in out
