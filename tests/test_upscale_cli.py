"""`srcli upscale` as a user runs it: formats kept, bad files reported, inputs never touched, resumable."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import srcli
from srcli.cli import main
from srcli.hub.loading import load_model
from srcli.io.imagefile import read_image

REPO = Path(__file__).resolve().parents[1]


def upscale(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict, str]:
    """Run ``srcli upscale ... --json`` in-process: (exit code, report, stderr)."""
    code = main(["upscale", *args, "--json"])
    captured = capsys.readouterr()
    report = json.loads(captured.out) if captured.out.strip() else {}
    return code, report, captured.err


def _visible(folder: Path) -> list[str]:
    """Names in ``folder``, less hidden ones (the job's output journal, temporary files)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def _gradient(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) * 127 // max(h + w - 2, 1)], -1)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """A folder with a nested tree of small, valid images."""
    root = tmp_path / "photos"
    (root / "trip" / "day1").mkdir(parents=True)
    Image.fromarray(_gradient(20, 30).astype(np.uint8)).save(root / "a.png")
    Image.fromarray(_gradient(24, 16).astype(np.uint8)).save(root / "trip" / "b.jpg", quality=95)
    Image.fromarray(_gradient(12, 12).astype(np.uint8)).save(root / "trip" / "day1" / "c.webp")
    return root


def test_recursive_folder_mirrors_the_tree_and_leaves_inputs_alone(photos: Path, tmp_path: Path, capsys) -> None:
    before = {p: p.read_bytes() for p in photos.rglob("*") if p.is_file()}
    out = tmp_path / "out"
    code, report, _ = upscale(capsys, str(photos), "-o", str(out), "-m", "bicubic", "-s", "2", "-r")
    assert code == 0 and report["done"] == 3 and report["failed"] == 0
    assert Image.open(out / "a.png").size == (60, 40)
    assert Image.open(out / "trip" / "b.jpg").format == "JPEG"
    assert Image.open(out / "trip" / "day1" / "c.webp").size == (24, 24)
    assert {p: p.read_bytes() for p in photos.rglob("*") if p.is_file()} == before
    # Without -r only the top level is taken.
    code, report, _ = upscale(capsys, str(photos), "-o", str(tmp_path / "flat"), "-m", "bicubic", "-s", "2")
    assert code == 0 and report["done"] == 1


def test_globs_name_template_and_format(photos: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    code, report, _ = upscale(
        capsys,
        str(photos / "**" / "*.jpg"),
        str(photos / "a.png"),
        "-o",
        str(out),
        "-m",
        "bicubic",
        "-s",
        "2",
        "--name",
        "{stem}_{model}_x{scale}.{ext}",
        "--format",
        "webp",
    )
    assert code == 0, report
    assert _visible(out) == ["a_bicubic_x2.webp", "b_bicubic_x2.webp"]
    code, _, err = upscale(capsys, str(photos), "-o", str(out), "-m", "bicubic", "--name", "{bogus}.png")
    assert code == 2 and "unknown field" in err


def test_bad_files_are_reported_and_the_batch_goes_on(photos: Path, tmp_path: Path, capsys) -> None:
    (photos / "zero.png").write_bytes(b"")
    (photos / "text.jpg").write_text("not an image at all")
    good = (photos / "a.png").read_bytes()
    (photos / "truncated.png").write_bytes(good[: len(good) // 2])
    out = tmp_path / "out"
    code, report, err = upscale(capsys, str(photos), "-o", str(out), "-m", "bicubic", "-s", "2")
    assert code == 1
    by_name = {Path(f["input"]).name: f for f in report["files"]}
    assert by_name["a.png"]["status"] == "done"
    for bad in ("zero.png", "text.jpg", "truncated.png"):
        assert by_name[bad]["status"] == "failed"
        assert bad in err  # one line naming the file
        assert not (out / bad).exists()
    assert "empty" in by_name["zero.png"]["message"]
    assert report["done"] == 1 and report["failed"] == 3
    # --fail-fast: files refused at planning (unreadable headers) stop the job before any work; the rest are
    # counted as not processed.
    code, report, _ = upscale(capsys, str(photos), "-o", str(tmp_path / "ff"), "-m", "bicubic", "--fail-fast")
    assert code == 1 and report["failed"] == 2 and report["done"] == 0 and report["skipped"] == 2
    assert not (tmp_path / "ff").exists() or not _visible(tmp_path / "ff")
    # A file that fails only at decoding stops the batch there.
    for name in ("zero.png", "text.jpg"):
        (photos / name).unlink()
    code, report, _ = upscale(capsys, str(photos), "-o", str(tmp_path / "ff2"), "-m", "bicubic", "--fail-fast")
    assert code == 1 and report["failed"] == 1 and report["done"] == 1


def test_refuses_to_overwrite_inputs(photos: Path, capsys) -> None:
    before = (photos / "a.png").read_bytes()
    code, report, err = upscale(capsys, str(photos / "a.png"), "-o", str(photos), "-m", "bicubic", "-s", "2")
    assert code == 1 and report["failed"] == 1
    assert "overwrite" in report["files"][0]["message"] and "a.png" in err
    assert (photos / "a.png").read_bytes() == before
    code, report, _ = upscale(capsys, str(photos / "a.png"), "-o", str(photos / "a.png"), "-m", "bicubic")
    assert code == 1 and (photos / "a.png").read_bytes() == before


def test_dry_run_writes_nothing(photos: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    code, report, _ = upscale(capsys, str(photos), "-o", str(out), "-m", "bicubic", "-r", "--dry-run")
    assert code == 0 and report["planned"] == 3 and not out.exists()


def test_sixteen_bit_grey_alpha_and_exif(tmp_path: Path, capsys) -> None:
    src = tmp_path / "in"
    src.mkdir()
    deep = (np.linspace(0, 65535, 16 * 20 * 3).reshape(16, 20, 3)).astype(np.uint16)
    import png  # pypng writes 16-bit RGB, which Pillow cannot

    with open(src / "deep.png", "wb") as fh:
        png.Writer(20, 16, bitdepth=16, greyscale=False).write(fh, deep.reshape(16, 60).tolist())
    Image.fromarray(_gradient(16, 20)[..., 0].astype(np.uint8), "L").save(src / "grey.png")
    rgba = np.zeros((16, 20, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[4:12, 5:15, 3] = 255  # an opaque square on a transparent (black) field
    Image.fromarray(rgba, "RGBA").save(src / "alpha.png")
    upright = Image.fromarray(_gradient(10, 30).astype(np.uint8))  # wide
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: a viewer turns it 90 degrees clockwise
    upright.transpose(Image.Transpose.ROTATE_90).save(src / "rotated.jpg", exif=exif.tobytes(), quality=95)

    out = tmp_path / "out"
    code, report, _ = upscale(capsys, str(src), "-o", str(out), "-m", "bicubic", "-s", "2")
    assert code == 0, report
    deep_out = read_image(out / "deep.png")
    assert deep_out.bit_depth == 16
    assert np.unique(np.round(deep_out.frames[0].rgb * 65535)).size > 256  # more levels than 8 bits hold
    grey_out = Image.open(out / "grey.png")
    assert grey_out.mode == "L" and grey_out.size == (40, 32)
    alpha_out = Image.open(out / "alpha.png")
    assert alpha_out.mode == "RGBA"
    a = np.asarray(alpha_out)
    assert a[..., 3][14:18, 17:23].min() == 255 and a[..., 3][:2].max() == 0
    # No dark fringe: the visible red stays red up to the edge of the square.
    edge = a[..., 3] > 128
    assert a[..., 0][edge].min() >= 190
    rot = Image.open(out / "rotated.jpg")
    assert rot.size == (60, 20)  # upright (wide), not as stored
    assert rot.getexif().get(0x0112, 1) == 1


def test_alpha_modes(tmp_path: Path, capsys) -> None:
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 1] = 180
    rgba[..., 3] = np.linspace(0, 255, 16).astype(np.uint8)[None, :]
    src = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(src)
    for mode, expected in (("drop", "RGB"), ("model", "RGBA"), ("resize", "RGBA")):
        out = tmp_path / mode
        code, _, _ = upscale(capsys, str(src), "-o", str(out), "-m", "bicubic", "-s", "2", "--alpha", mode)
        assert code == 0 and Image.open(out / "a.png").mode == expected
    code, report, _ = upscale(capsys, str(src), "-o", str(tmp_path / "j"), "-m", "bicubic", "--format", "jpg")
    assert code == 0 and report["files"][0]["output"].endswith(".png")
    assert "PNG" in " ".join(report["files"][0]["notes"])


def test_outscale_and_single_output_file(photos: Path, tmp_path: Path, capsys) -> None:
    target = tmp_path / "big.png"
    code, report, _ = upscale(
        capsys, str(photos / "a.png"), "-o", str(target), "-m", "bicubic", "-s", "2", "--outscale", "3"
    )
    assert code == 0 and Image.open(target).size == (90, 60)


def test_real_model_through_the_cli(shared_mirror: str, photos: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    code, report, _ = upscale(capsys, str(photos / "a.png"), "-o", str(out), "-m", "imdn", "-s", "4", "--tile", "16")
    assert code == 0 and report["files"][0]["tiles"] > 1
    assert Image.open(out / "a.png").size == (120, 80)


_PAUSING_DRIVER = """
import os, sys
import srcli.pipeline.images as images
from srcli.cli import main

marker, after = sys.argv[1], int(sys.argv[2])
model_steps = 0
run_model = images.upscale_frames

def pausing(*args, **kwargs):
    # The test's hook: once `after` images went through the model, say so and block until a signal arrives.
    global model_steps
    model_steps += 1
    if model_steps == after + 1:
        open(marker, "w").close()
        read_end, _ = os.pipe()
        os.read(read_end, 1)
    return run_model(*args, **kwargs)

images.upscale_frames = pausing
sys.exit(main(["upscale", *sys.argv[3:]]))
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
@pytest.mark.slow
def test_interrupted_batch_leaves_no_partial_file_and_resumes(tmp_path: Path, sig: signal.Signals) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(12):
        Image.fromarray(np.roll(_gradient(120, 120), i, axis=1).astype(np.uint8)).save(src / f"{i:02d}.png")
    driver, marker, after = tmp_path / "driver.py", tmp_path / "paused", 5
    driver.write_text(_PAUSING_DRIVER)
    proc = subprocess.Popen(
        [sys.executable, str(driver), str(marker), str(after), str(src), "-o", str(out), "-m", "bicubic"]
        + ["-s", "4", "--io-workers", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    # Wait on the job's own hook (the 6th image reached the model), not on time.
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    proc.send_signal(sig)
    proc.communicate(timeout=120)
    finished = _visible(out)
    for name in finished:  # every file under its final name is complete
        with Image.open(out / name) as im:
            im.load()
            assert im.size == (480, 480)
    if sig == signal.SIGTERM:
        # The writes in flight finish: exactly the images the model had done are written, nothing else.
        assert proc.returncode == 143
        assert finished == [f"{i:02d}.png" for i in range(after)]
        assert not [p for p in out.iterdir() if p.name.startswith(".") and p.name.endswith(".partial")]
    else:
        assert len(finished) <= after
    stamps = {name: (out / name).stat().st_mtime_ns for name in finished}
    done = subprocess.run(
        [sys.executable, "-m", "srcli", "upscale", str(src), "-o", str(out), "-m", "bicubic", "-s", "4"]
        + ["--skip-existing", "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["skipped"] == len(finished) and report["done"] == 12 - len(finished)
    assert _visible(out) == [f"{i:02d}.png" for i in range(12)]
    assert not [p for p in out.iterdir() if p.name.endswith(".partial")], "temporary files left behind"
    assert all((out / name).stat().st_mtime_ns == stamps[name] for name in finished)


def test_library_api_round_trips_types(shared_dir: Path) -> None:
    model = load_model("rlfn", 2, weights=shared_dir / "weights" / "rlfn_x2.pth")
    rgb = _gradient(20, 24).astype(np.uint8)
    out = srcli.upscale(rgb, model)
    assert out.shape == (40, 48, 3) and out.dtype == np.uint8
    assert srcli.upscale(rgb.astype(np.uint16) * 257, model).dtype == np.uint16
    assert srcli.upscale(rgb[..., 0], model).shape == (40, 48)
    pil = srcli.upscale(Image.fromarray(rgb), model)
    assert isinstance(pil, Image.Image) and pil.size == (48, 40)
    t = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    y = srcli.upscale(t, model, tile=0)
    assert y.shape == (3, 40, 48) and y.dtype == torch.float32
    assert np.abs(y.permute(1, 2, 0).numpy() * 255 - out).max() <= 1.0
    with pytest.raises(srcli.errors.UsageError, match="scale=4"):
        srcli.upscale(rgb, model, 4)


def test_library_api_is_thread_safe(shared_dir: Path) -> None:
    model = load_model("rlfn", 2, weights=shared_dir / "weights" / "rlfn_x2.pth")
    inputs = [torch.rand(3, 24 + i, 20) for i in range(4)]
    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)  # four Python threads, each with its own intra-op pool, would oversubscribe
    expected = [srcli.upscale(x, model, tile=16) for x in inputs]
    results: dict[int, torch.Tensor] = {}

    def work(i: int) -> None:
        results[i] = srcli.upscale(inputs[i], model, tile=16)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    torch.set_num_threads(threads_before)
    for i in range(4):
        assert torch.allclose(results[i], expected[i], atol=1e-6)


def _writer_samples(loaded, rgb: np.ndarray, options, depth: int, grey: bool = False) -> np.ndarray:
    """What the image job wrote before issue 19: the whole float32 output, then the writer's quantisation."""
    from srcli.engine.upscale import upscale_tensor
    from srcli.io.imagefile import luma, quantize

    x = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(2, 0, 1)[None]
    out = np.ascontiguousarray(upscale_tensor(loaded, x, options).image[0].permute(1, 2, 0).numpy())
    return quantize(luma(out) if grey else out, depth)


@pytest.mark.parametrize("kind", ["rgb8", "grey16", "rgba-model"])
def test_tiled_job_writes_the_same_samples_as_the_whole_float_output(tmp_path: Path, capsys, kind: str) -> None:
    """The image job assembles tiled outputs in bands kept at the file's depth (issue 19); the pixels it writes
    are those of the whole float32 output quantised by the writer, for colour, 16-bit grey and model-run alpha."""
    from srcli.engine.options import RunOptions, check_run, resolve_run
    from srcli.engine.upscale import prepare_for_job
    from srcli.io.imagefile import fill_transparent

    rng = np.random.default_rng(3)
    smooth = _gradient(72, 90)
    src = tmp_path / "in.png"
    if kind == "rgb8":
        Image.fromarray(np.clip(smooth + rng.normal(0, 9, smooth.shape), 0, 255).astype(np.uint8)).save(src)
    elif kind == "grey16":
        plane = (smooth[..., 0] * 200 + rng.integers(0, 400, smooth.shape[:2])).astype(np.uint16)
        Image.fromarray(plane).save(src)
    else:
        alpha = np.where(smooth[..., 1] > 100, 255, smooth[..., 0]).astype(np.uint8)
        Image.fromarray(np.dstack([smooth.astype(np.uint8), alpha]), "RGBA").save(src)
    out = tmp_path / "out.png"
    args = [str(src), "-o", str(out), "-m", "survey-net", "-s", "2", "--tile", "32", "--device", "cpu"]
    code, report, err = upscale(
        capsys, *args, "--precision", "fp32", *(["--alpha", "model"] if kind == "rgba-model" else [])
    )
    assert code == 0 and report["done"] == 1, err
    assert report["files"][0]["tiles"] > 1  # tiled, so assembled in bands

    decoded = read_image(src)
    frame = decoded.frames[0]
    # The model and engine options as the job sets them up (the overlap, for one, is reduced to fit the tile).
    resolved = resolve_run(check_run(RunOptions(model="survey-net", scale=2, tile=32, device="cpu", precision="fp32")))
    loaded, options = prepare_for_job(resolved.load(), resolved.device, resolved.engine)
    written = np.asarray(Image.open(out))
    if kind == "rgb8":
        np.testing.assert_array_equal(written, _writer_samples(loaded, frame.rgb, options, 8))
    elif kind == "grey16":
        assert decoded.grey and decoded.bit_depth == 16 and written.dtype.kind in "iu"
        expected = _writer_samples(loaded, frame.rgb, options, 16, grey=True)
        np.testing.assert_array_equal(written.astype(np.int64), expected.astype(np.int64))
    else:
        colour = _writer_samples(loaded, fill_transparent(frame.rgb, frame.alpha), options, 8)
        a3 = np.repeat(frame.alpha[..., None], 3, axis=2)
        alpha_mean = _writer_samples(loaded, a3, options, 8, grey=True)  # the mean of the three channels
        np.testing.assert_array_equal(written[..., :3], colour)
        np.testing.assert_array_equal(written[..., 3], alpha_mean)
