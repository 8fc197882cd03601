"""Benchmark data sets in the cache: offline errors that name every missing file, local mirrors, failed downloads.

The images are the real Set5 / Set14 files from ../shared; downloads go to the local HTTP server.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

import srcli.eval.datasets as datasets
from srcli.errors import DatasetError
from srcli.eval.datasets import DISPLAY_NAMES, dataset_files, load_sources
from srcli.hub.cache import entry_dir, entry_path


def _benchmark(shared: Path, key: str) -> Path:
    return shared / "data" / "benchmarks" / DISPLAY_NAMES[key]


def _place(shared: Path, cache: Path, key: str, names: list[str]) -> None:
    """Copy some real images of a set into the cache, where a download would have put them."""
    for item in load_sources()[key]:
        if item.file in names:
            target = entry_path(item, cache)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(_benchmark(shared, key) / item.file, target)


def test_offline_names_every_missing_file_and_one_command_that_fetches_them(cache, monkeypatch):
    monkeypatch.delenv("SRCLI_MIRRORS", raising=False)
    with pytest.raises(DatasetError) as info:
        dataset_files("set14", offline=True)
    message = str(info.value)
    assert len(message.splitlines()) == 1
    assert message.startswith("Set14/baboon.png: not in the cache and offline mode is on; ")
    folder = entry_dir(load_sources()["set14"][0], cache)
    assert f"Set14 lacks 14 of its 14 files (5.0 MB) in {folder}: " in message
    names = [item.file for item in load_sources()["set14"]]
    assert ", ".join(names[:10]) + ", ... (+4 more)" in message  # shortened, and counted
    assert "fetch them with 'srcli eval -m bicubic -d set14 -s 2' while online" in message
    assert "SRCLI_MIRRORS" in message and "--data-dir DIR" in message


def test_offline_names_only_the_files_still_missing(shared_dir, cache, monkeypatch):
    monkeypatch.delenv("SRCLI_MIRRORS", raising=False)
    names = [item.file for item in load_sources()["set14"]]
    missing = ["bridge.png", "man.png", "zebra.png"]
    _place(shared_dir, cache, "set14", [n for n in names if n not in missing])
    with pytest.raises(DatasetError) as info:
        dataset_files("set14", offline=True)
    message = str(info.value)
    assert message.startswith("Set14/bridge.png: not in the cache and offline mode is on; ")
    assert "Set14 lacks 3 of its 14 files (923.7 kB) in " in message
    assert message.split(": ")[2].startswith("bridge.png, man.png, zebra.png; fetch them with")


def test_one_missing_file_is_named_alone(shared_dir, cache, monkeypatch):
    monkeypatch.delenv("SRCLI_MIRRORS", raising=False)
    _place(shared_dir, cache, "set5", ["baby.png", "bird.png", "butterfly.png", "woman.png"])
    with pytest.raises(DatasetError, match=r"^Set5/head.png: .*Set5 lacks 1 file \(113.8 kB\) in .*: head.png; fetch"):
        dataset_files("set5", offline=True)


def test_a_file_mirror_serves_a_set_offline(shared_dir, cache, tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    shutil.copytree(_benchmark(shared_dir, "set5"), mirror / "datasets" / "set5")
    monkeypatch.setenv("SRCLI_MIRRORS", mirror.as_uri())
    paths = dataset_files("set5", offline=True)
    assert [p.name for p in paths] == [item.file for item in load_sources()["set5"]]
    assert all(p.read_bytes() == (mirror / "datasets" / "set5" / p.name).read_bytes() for p in paths)


def test_a_failed_download_gives_the_size_and_the_ways_forward(file_server, cache, monkeypatch):
    monkeypatch.delenv("SRCLI_MIRRORS", raising=False)
    local = {
        key: tuple(replace(item, urls=(file_server.url(f"/gone/{item.file}"),)) for item in items)
        for key, items in load_sources().items()
    }
    monkeypatch.setattr(datasets, "load_sources", lambda: local)
    with pytest.raises(DatasetError) as info:
        dataset_files("set5")
    message = str(info.value)
    first = local["set5"][0]
    assert len(message.splitlines()) == 1
    assert message.startswith("Set5/baby.png: could not download 'set5' (baby.png, 371.3 kB): ")
    assert "/gone/baby.png: HTTP 404" in message
    assert f"put baby.png at {entry_path(first, cache)}" in message
    assert "SRCLI_MIRRORS" in message and "datasets/set5/baby.png" in message and "--data-dir DIR" in message
    assert message.endswith("; 4 more Set5 files are not in the cache yet")
    assert sorted(p.name for p in entry_dir(first, cache).iterdir()) == []  # no lock, no partial
