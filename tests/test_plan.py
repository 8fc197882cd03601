"""The image job's one resolved plan: no output collides, overwrites an unrelated file or is read back as input.

Every case here lost data or wasted minutes before the plan was decided once (issue 15); each is built from
real files the test makes.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from srcli.cli import main
from srcli.engine.options import MIN_TILE, RunOptions, check_run
from srcli.errors import UsageError
from srcli.io.imagefile import inspect_image, read_image
from srcli.pipeline.image_plan import plan_images
from srcli.pipeline.job import ImageOptions
from srcli.pipeline.outputs import JOURNAL_NAME


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict, str]:
    """``srcli upscale ... --json`` in-process: (exit code, report, stderr)."""
    code = main(["upscale", *args, "--json"])
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if captured.out.strip() else {}), captured.err


def visible(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def rgba_pixels(h: int = 12, w: int = 10, seed: int = 0) -> np.ndarray:
    a = (np.random.default_rng(seed).random((h, w, 4)) * 255).astype(np.uint8)
    a[..., 3] = np.linspace(0, 255, w).astype(np.uint8)[None, :]
    return a


def write_bmp32_alpha(path: Path, rgba: np.ndarray) -> None:
    """A 32-bit BMP with an alpha channel (BITMAPV4HEADER, BI_BITFIELDS), as image editors write them."""
    h, w = rgba.shape[:2]
    pixels = rgba[::-1, :, [2, 1, 0, 3]].tobytes()  # bottom-up rows, BGRA
    header = struct.pack(
        "<IiiHHIIiiII4I4s36sIII",
        108, w, h, 1, 32, 3, len(pixels), 2835, 2835, 0, 0,
        0x00FF0000, 0x0000FF00, 0x000000FF, 0xFF000000, b"BGRs", b"\0" * 36, 0, 0, 0,
    )  # fmt: skip
    offset = 14 + len(header)
    path.write_bytes(b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + header + pixels)


@pytest.fixture(autouse=True)
def _no_model_load_without_work(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record model loads, so tests can check that a refusal came before any."""
    loads: list[str] = []
    from srcli.engine import options

    original = options.ResolvedRun.load

    def load(self: options.ResolvedRun, reporter: object = None) -> object:
        loads.append(self.options.model)
        return original(self, reporter)

    monkeypatch.setattr(options.ResolvedRun, "load", load)
    return loads


def test_bmp_with_alpha_and_png_of_one_name_are_both_refused_before_work(tmp_path: Path, capsys) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    write_bmp32_alpha(src / "a.bmp", rgba_pixels())
    Image.fromarray(rgba_pixels(seed=1)[..., :3]).save(src / "a.png")
    assert read_image(src / "a.bmp").has_alpha  # the BMP really carries alpha: its result must be a PNG
    code, report, err = run(capsys, str(src), "-o", str(out), "-m", "bicubic", "-s", "2")
    assert code == 1
    assert report["failed"] == 2 and report["done"] == 0
    for f in report["files"]:
        assert f["output"].endswith("a.png") and "map to one output" in f["message"]
    assert "a.bmp" in err and "a.png" in err
    assert not out.exists() or visible(out) == []
    # --name keeps them apart, and the BMP's result is a PNG decided at planning, with the note shown.
    code, report, _ = run(capsys, str(src), "-o", str(out), "-m", "bicubic", "-s", "2", "--name", "{name}.{ext}")
    assert code == 0 and visible(out) == ["a.bmp.png", "a.png.png"]
    bmp = next(f for f in report["files"] if f["input"].endswith("a.bmp"))
    assert "BMP cannot store transparency" in " ".join(bmp["notes"])
    assert Image.open(out / "a.bmp.png").mode == "RGBA"


def test_format_change_is_planned_and_never_replaces_an_unrelated_file(tmp_path: Path, capsys) -> None:
    Image.fromarray(rgba_pixels(), "RGBA").save(tmp_path / "rgba.png")
    out = tmp_path / "out"
    out.mkdir()
    unrelated = out / "photo.png"
    Image.fromarray(np.full((5, 5, 3), 7, np.uint8)).save(unrelated)
    before = unrelated.read_bytes()
    args = [str(tmp_path / "rgba.png"), "-o", str(out / "photo.jpg"), "-m", "bicubic", "-s", "2"]
    # The dry run shows the final name and why, on the terminal.
    assert main(["upscale", *args, "--dry-run"]) == 1
    shown = " ".join(capsys.readouterr().out.split())
    assert "photo.png" in shown and "JPEG cannot store transparency" in shown and "--overwrite" in shown
    code, report, err = run(capsys, *args)
    assert code == 1 and report["files"][0]["status"] == "failed"
    assert unrelated.read_bytes() == before and "--overwrite" in err
    assert not (out / "photo.jpg").exists()
    # Asked for, it is replaced; then it is this job's own result: a rerun redoes it, --skip-existing skips it.
    code, report, _ = run(capsys, *args, "--overwrite")
    assert code == 0 and report["files"][0]["output"] == str(unrelated) and unrelated.read_bytes() != before
    assert Image.open(unrelated).mode == "RGBA"
    code, report, _ = run(capsys, *args)
    assert code == 0 and report["done"] == 1
    code, report, _ = run(capsys, *args, "--skip-existing")
    assert code == 0 and report["skipped"] == 1 and report["done"] == 0


def test_outputs_inside_the_input_tree_are_never_inputs(tmp_path: Path, capsys) -> None:
    tree = tmp_path / "photos"
    (tree / "sub").mkdir(parents=True)
    Image.fromarray(rgba_pixels()[..., :3]).save(tree / "a.png")
    Image.fromarray(rgba_pixels(seed=2)[..., :3]).save(tree / "sub" / "b.png")
    args = [str(tree), "-r", "-o", str(tree / "up"), "-m", "bicubic", "-s", "2"]
    code, report, _ = run(capsys, *args)
    assert code == 0 and report["done"] == 2
    first = visible(tree / "up")
    assert first == ["a.png", "sub/b.png"]
    code, report, _ = run(capsys, *args)  # the same command again: the same two files, redone
    assert code == 0 and report["done"] == 2 and visible(tree / "up") == first
    code, report, _ = run(capsys, *args, "--skip-existing")  # and with --skip-existing: nothing to do
    assert code == 0 and report["done"] == 0 and report["skipped"] == 2
    assert sorted(Path(f["input"]).name for f in report["files"]) == ["a.png", "b.png"]


def test_unrelated_existing_output_is_refused_and_own_results_are_redone(tmp_path: Path, capsys) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    for name in ("a", "b"):
        Image.fromarray(rgba_pixels(seed=ord(name))[..., :3]).save(src / f"{name}.png")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(out / "b.png")  # the user's own file
    code, report, _ = run(capsys, str(src), "-o", str(out), "-m", "bicubic", "-s", "2")
    status = {Path(f["input"]).name: f["status"] for f in report["files"]}
    assert code == 1 and status == {"a.png": "done", "b.png": "failed"}
    assert Image.open(out / "b.png").size == (4, 4)
    # Another model into the same folder: a.png is not that job's result either.
    code, report, _ = run(capsys, str(src), "-o", str(out), "-m", "bicubic", "-s", "3")
    assert code == 1 and report["failed"] == 2
    # A journal cut short by a crash is read up to its last whole line.
    journal = out / JOURNAL_NAME
    journal.write_text(journal.read_text() + '{"output": "a.pn')
    code, report, _ = run(capsys, str(src / "a.png"), "-o", str(out), "-m", "bicubic", "-s", "2")
    assert code == 0 and report["done"] == 1


def test_options_are_checked_before_the_model_loads(
    tmp_path: Path, capsys, _no_model_load_without_work: list[str]
) -> None:
    Image.fromarray(rgba_pixels(120, 100)[..., :3]).save(tmp_path / "a.png")
    a = str(tmp_path / "a.png")
    for extra, words in (
        (["--tile", "7"], f"at least {MIN_TILE}"),
        (["--outscale", "-1"], "positive"),
        (["--outscale", "nan"], "positive"),
        (["--precision", "fp8"], "--precision"),
        (["--scale", "5"], "no x5"),
        (["--name", "{nope}.png"], "unknown field"),
    ):
        assert main(["upscale", a, "-o", str(tmp_path / "o"), "-m", "imdn", *extra]) == 2, extra
        assert words in capsys.readouterr().err, extra
    # -o FILE with several inputs, and a file where the output folder should be.
    Image.fromarray(rgba_pixels()[..., :3]).save(tmp_path / "b.png")
    assert main(["upscale", a, str(tmp_path / "b.png"), "-o", str(tmp_path / "x.png"), "-m", "imdn"]) == 2
    assert "give an output folder" in capsys.readouterr().err
    (tmp_path / "file").write_text("not a folder")
    assert main(["upscale", a, str(tmp_path / "b.png"), "-o", str(tmp_path / "file"), "-m", "imdn"]) == 2
    assert "is a file" in capsys.readouterr().err
    assert main(["upscale", a, "-o", str(tmp_path / "file" / "out"), "-m", "imdn"]) == 2
    assert "is a file" in capsys.readouterr().err
    # An output far above --max-pixels x scale^2 is refused per file, before any model load.
    big = ["-o", str(tmp_path / "big"), "-m", "imdn", "--outscale", "60", "--max-pixels", "20000"]
    code, report, _ = run(capsys, a, *big)
    assert code == 1 and "--max-pixels" in report["files"][0]["message"]
    assert _no_model_load_without_work == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders: the case cannot be made")
def test_read_only_output_folder_fails_before_the_model_loads(
    tmp_path: Path, capsys, _no_model_load_without_work: list[str]
) -> None:
    Image.fromarray(rgba_pixels()[..., :3]).save(tmp_path / "a.png")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert main(["upscale", str(tmp_path / "a.png"), "-o", str(locked / "out"), "-m", "imdn"]) == 2
        assert "cannot write" in capsys.readouterr().err
    finally:
        locked.chmod(0o755)
    assert _no_model_load_without_work == []


def test_tile_overlap_is_reduced_with_a_notice() -> None:
    checked = check_run(RunOptions(model="imdn", tile=32, tile_overlap=24))
    assert checked.options.tile_overlap is not None and 2 * checked.options.tile_overlap < 32
    assert "too large" in checked.notices[0]
    assert check_run(RunOptions(model="imdn", tile=64, tile_overlap=8)).notices == ()
    with pytest.raises(UsageError, match="at least"):
        check_run(RunOptions(model="imdn", tile=7))


def test_plan_is_immutable_and_the_dry_run_writes_nothing(tmp_path: Path) -> None:
    Image.fromarray(rgba_pixels()[..., :3]).save(tmp_path / "a.png")
    plan = plan_images(
        [str(tmp_path / "a.png")],
        ImageOptions(output=tmp_path / "new" / "deep", run=RunOptions(model="bicubic", scale=2)),
        create_folders=False,
    )
    assert not (tmp_path / "new").exists()
    (item,) = plan.items
    assert (item.action, item.format, item.out_width, item.out_height) == ("upscale", "PNG", 20, 24)
    with pytest.raises(AttributeError):
        item.output = tmp_path  # type: ignore[misc]


def _sample_files(folder: Path) -> list[Path]:
    """One file per way of carrying (or not carrying) alpha and 16 bits."""
    import tifffile

    rgba = rgba_pixels()
    made = {
        "rgba.png": lambda p: Image.fromarray(rgba, "RGBA").save(p),
        "rgb.png": lambda p: Image.fromarray(rgba[..., :3]).save(p),
        "la.png": lambda p: Image.fromarray(rgba[..., [0, 3]], "LA").save(p),
        "trns.png": lambda p: Image.fromarray(rgba[..., :3]).save(p, transparency=(1, 2, 3)),
        "pal.png": lambda p: Image.fromarray(rgba, "RGBA").convert("P").save(p, transparency=0),
        "pal_opaque.png": lambda p: Image.fromarray(rgba[..., :3]).convert("P").save(p),
        "grey16.png": lambda p: Image.fromarray(rgba[..., 0].astype(np.uint16) * 257).save(p),
        "rgba.webp": lambda p: Image.fromarray(rgba, "RGBA").save(p, lossless=True),
        "rgb.jpg": lambda p: Image.fromarray(rgba[..., :3]).save(p),
        "rgba.tif": lambda p: Image.fromarray(rgba, "RGBA").save(p),
        "rgba16.tif": lambda p: tifffile.imwrite(p, rgba.astype(np.uint16) * 257, photometric="rgb", extrasamples=[2]),
        "rgb16.tif": lambda p: tifffile.imwrite(p, rgba[..., :3].astype(np.uint16) * 257, photometric="rgb"),
        "alpha.bmp": lambda p: write_bmp32_alpha(p, rgba),
        "rgb.bmp": lambda p: Image.fromarray(rgba[..., :3]).save(p),
        "trans.gif": lambda p: Image.fromarray(rgba, "RGBA").convert("P").save(p, transparency=0),
    }
    for name, make in made.items():
        make(folder / name)
    return [folder / name for name in made]


def test_header_facts_agree_with_the_decoder(tmp_path: Path) -> None:
    for path in _sample_files(tmp_path):
        facts, decoded = inspect_image(path), read_image(path)
        assert (facts.has_alpha, facts.bit_depth) == (decoded.has_alpha, decoded.bit_depth), path.name
        assert (facts.width, facts.height, facts.n_frames) == (*decoded.size, len(decoded.frames)), path.name


def test_argument_errors_and_the_dry_run_never_import_torch(tmp_path: Path) -> None:
    import subprocess
    import sys

    Image.fromarray(rgba_pixels()[..., :3]).save(tmp_path / "a.png")
    code = (
        "import sys; from srcli.cli import main\n"
        f"bad = main(['upscale', {str(tmp_path / 'a.png')!r}, '-o', {str(tmp_path / 'o')!r}, '--tile', '7'])\n"
        f"dry = main(['upscale', {str(tmp_path / 'a.png')!r}, '-o', {str(tmp_path / 'o')!r}, '--dry-run'])\n"
        "print(bad, dry, 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split()[-3:] == ["2", "0", "False"], done.stdout + done.stderr
