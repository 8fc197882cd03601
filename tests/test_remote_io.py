"""Object-store inputs and outputs (srcli.pipeline.remote), with fsspec's in-process ``memory://`` store
standing in for s3:// / gs:// (no S3-compatible server can be started here without the internet)."""

from __future__ import annotations

import importlib.util
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest
from PIL import Image

from srcli.cli import main
from srcli.errors import UsageError
from srcli.pipeline.remote import atomic_upload, output_uri, stage_remote

SIZES = {"a.png": (8, 6), "b.png": (5, 7)}


def _png(width: int, height: int, seed: int) -> bytes:
    """A small deterministic RGB PNG."""
    pixels = (np.arange(width * height * 3).reshape(height, width, 3) * (7 + seed) % 256).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def upscale(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    """Run ``srcli upscale ... --json`` in-process; the exit code and the JSON report."""
    code = main(["upscale", *args, "-m", "bicubic", "-s", "2", "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else {}


@pytest.fixture
def store(request: pytest.FixtureRequest, cache: Path) -> Iterator[tuple[Any, str]]:
    """The memory file system and a bucket of this test's own (removed after), holding ``in/a.png``, ``in/b.png``
    and ``in/sub/c.png``; the cache (and so the staging folder) is the test's own."""
    fs = fsspec.filesystem("memory")
    bucket = "/" + request.node.name.replace("[", "-").replace("]", "")
    for seed, (name, (w, h)) in enumerate(SIZES.items()):
        fs.pipe_file(f"{bucket}/in/{name}", _png(w, h, seed))
    fs.pipe_file(f"{bucket}/in/sub/c.png", _png(4, 4, 9))
    yield fs, bucket
    if fs.exists(bucket):
        fs.rm(bucket, recursive=True)


def _keys(fs: Any, prefix: str) -> list[str]:
    return sorted(fs.find(prefix))


def _staging_left(cache: Path) -> list[Path]:
    folder = cache / "staging"
    return list(folder.iterdir()) if folder.exists() else []


def test_memory_store_round_trip(
    store: tuple[Any, str], cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fs, bucket = store
    code, report = upscale(capsys, f"memory:/{bucket}/in", "-o", f"memory:/{bucket}/out")
    assert code == 0
    assert report["done"] == 2
    assert {f["output"] for f in report["files"]} == {f"memory://{bucket}/out/{n}" for n in SIZES}
    assert {f["input"] for f in report["files"]} == {f"memory://{bucket}/in/{n}" for n in SIZES}
    keys = _keys(fs, f"{bucket}/out")
    assert keys == [f"{bucket}/out/.srcli-outputs.jsonl", f"{bucket}/out/a.png", f"{bucket}/out/b.png"]
    assert not [k for k in _keys(fs, bucket) if k.endswith(".partial")]
    assert not _staging_left(cache)

    # The same pixels as a local run of the same files.
    local_in = tmp_path / "in"
    local_in.mkdir()
    for name in SIZES:
        (local_in / name).write_bytes(fs.cat_file(f"{bucket}/in/{name}"))
    code, _ = upscale(capsys, str(local_in), "-o", str(tmp_path / "out"))
    assert code == 0
    for name, (w, h) in SIZES.items():
        remote = _pixels(fs.cat_file(f"{bucket}/out/{name}"))
        assert remote.shape[:2] == (2 * h, 2 * w)
        np.testing.assert_array_equal(remote, np.asarray(Image.open(tmp_path / "out" / name)))

    journal = [json.loads(line) for line in fs.cat_file(f"{bucket}/out/.srcli-outputs.jsonl").splitlines()]
    assert {(e["output"], e["input"]) for e in journal} == {(n, f"memory://{bucket}/in/{n}") for n in SIZES}


def test_rerun_skips_or_redoes_own_outputs_and_refuses_others(
    store: tuple[Any, str], cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fs, bucket = store
    args = (f"memory:/{bucket}/in", "-o", f"memory:/{bucket}/out")
    assert upscale(capsys, *args)[0] == 0
    before = {k: fs.cat_file(k) for k in _keys(fs, f"{bucket}/out")}

    code, report = upscale(capsys, *args, "--skip-existing")
    assert code == 0
    assert [f["status"] for f in report["files"]] == ["skipped", "skipped"]
    assert {k: fs.cat_file(k) for k in _keys(fs, f"{bucket}/out")} == before

    # The job's own earlier outputs (the journal says so, size and version unchanged) are redone.
    code, report = upscale(capsys, *args)
    assert code == 0
    assert all(f["status"] == "done" and f["replaced"] for f in report["files"])

    # An object srcli did not write there is refused, and left alone, unless --overwrite.
    stranger = _png(3, 3, 5)
    fs.pipe_file(f"{bucket}/out/a.png", stranger)
    code, report = upscale(capsys, *args)
    assert code == 1
    status = {Path(f["input"]).name: f["status"] for f in report["files"]}
    assert status == {"a.png": "failed", "b.png": "done"}
    assert fs.cat_file(f"{bucket}/out/a.png") == stranger
    code, report = upscale(capsys, *args, "--overwrite")
    assert code == 0
    assert _pixels(fs.cat_file(f"{bucket}/out/a.png")).shape[:2] == (12, 16)
    assert not [k for k in _keys(fs, bucket) if k.endswith(".partial")]
    assert not _staging_left(cache)


def test_recursive_glob_single_file_and_dry_run(
    store: tuple[Any, str], cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fs, bucket = store
    assert upscale(capsys, f"memory:/{bucket}/in", "-r", "-o", f"memory:/{bucket}/tree")[0] == 0
    assert _keys(fs, f"{bucket}/tree") == [
        f"{bucket}/tree/.srcli-outputs.jsonl",
        f"{bucket}/tree/a.png",
        f"{bucket}/tree/b.png",
        f"{bucket}/tree/sub/c.png",
    ]
    assert upscale(capsys, f"memory:/{bucket}/in/b*.png", "-o", f"memory:/{bucket}/glob")[0] == 0
    assert _keys(fs, f"{bucket}/glob") == [f"{bucket}/glob/.srcli-outputs.jsonl", f"{bucket}/glob/b.png"]
    assert upscale(capsys, f"memory:/{bucket}/in/a.png", "-o", f"memory:/{bucket}/one/big.png")[0] == 0
    assert _pixels(fs.cat_file(f"{bucket}/one/big.png")).shape[:2] == (12, 16)

    # A dry run writes nothing remotely and shows the decision on the existing object.
    before = _keys(fs, bucket)
    code, report = upscale(capsys, f"memory:/{bucket}/in/a.png", "-o", f"memory:/{bucket}/one/big.png", "--dry-run")
    assert code == 0
    assert report["files"][0]["status"] == "planned"
    assert _keys(fs, bucket) == before
    assert main(["upscale", f"memory:/{bucket}/nothing", "-o", f"memory:/{bucket}/x", "-m", "bicubic"]) != 0
    capsys.readouterr()


def test_remote_inputs_into_a_local_folder(
    store: tuple[Any, str], cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fs, bucket = store
    out = tmp_path / "local-out"
    assert upscale(capsys, f"memory:/{bucket}/in", "-o", str(out))[0] == 0
    assert sorted(p.name for p in out.iterdir()) == [".srcli-outputs.jsonl", "a.png", "b.png"]
    # Identities are the URIs, so a second run recognises its own outputs although the staging folder changed.
    code, report = upscale(capsys, f"memory:/{bucket}/in", "-o", str(out))
    assert code == 0
    assert all(f["replaced"] for f in report["files"])
    assert not [p for p in out.iterdir() if p.name.endswith(".partial")]


def test_file_uris_are_local_paths(tmp_path: Path, cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.png").write_bytes(_png(8, 6, 0))
    code, report = upscale(capsys, src.as_uri(), "-o", (tmp_path / "out").as_uri())
    assert code == 0
    assert (tmp_path / "out" / "a.png").is_file()
    assert report["files"][0]["output"] == str(tmp_path / "out" / "a.png")
    assert not _staging_left(cache)


def test_output_uri_undoes_path_collapsing() -> None:
    assert output_uri(Path("s3://bucket/key")) == "s3://bucket/key"
    assert output_uri(Path("gs://bucket")) == "gs://bucket"
    assert output_uri(Path("file:///tmp/x")) == "file:///tmp/x"
    assert output_uri(Path("C:/photos")) == "C:/photos"
    assert output_uri(Path("notascheme:/x")) == "notascheme:/x"
    assert output_uri(Path("upscaled")) == "upscaled"


def test_failed_upload_leaves_no_temporary_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fs = fsspec.filesystem("memory")

    def broken_mv(*args: Any, **kwargs: Any) -> None:
        raise OSError("copy refused")

    monkeypatch.setattr(fs, "mv", broken_mv)
    try:
        with pytest.raises(OSError, match="copy refused"):
            atomic_upload(fs, "/upload-test/x.png", data=b"123")
        assert fs.find("/upload-test") == []
    finally:
        if fs.exists("/upload-test"):
            fs.rm("/upload-test", recursive=True)


@pytest.mark.skipif(importlib.util.find_spec("s3fs") is not None, reason="s3fs is installed")
def test_missing_driver_says_what_to_install(cache: Path) -> None:
    from srcli.engine.options import RunOptions
    from srcli.pipeline.job import ImageOptions

    options = ImageOptions(run=RunOptions(model="bicubic"), output=Path("s3://bucket/out"))
    with pytest.raises(UsageError, match="pip install s3fs"):
        stage_remote(["s3://bucket/in"], options)
    assert not _staging_left(cache)
