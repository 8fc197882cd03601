"""`srcli eval` as a user runs it: outputs, exports, bad input, scoring folders made elsewhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from srcli.errors import DatasetError, UnknownDatasetError
from srcli.eval.datasets import dataset_files, resolve_dataset_name
from srcli.eval.runner import evaluate

REPO = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "220"}
    return subprocess.run(
        [sys.executable, "-m", "srcli", *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=600
    )


@pytest.mark.slow
def test_cli_prints_ours_next_to_published_and_exports(shared_mirror, tmp_path):
    csv_path, md_path, report = tmp_path / "r.csv", tmp_path / "r.md", tmp_path / "r.json"
    out = run(
        "eval",
        "--model",
        "bicubic",
        "--dataset",
        "set5",
        "-s",
        "2,4",
        "--csv",
        str(csv_path),
        "--markdown",
        str(md_path),
        "--report",
        str(report),
        "--per-image",
    )
    assert out.returncode == 0, out.stderr
    assert "28.42/0.8104" in out.stdout and "33.66/0.9299" in out.stdout  # published column
    assert "butterfly.png" in out.stdout  # per-image table
    rows = csv_path.read_text().splitlines()
    assert rows[0].startswith("model,dataset,scale,psnr,ssim,published_psnr")
    assert len(rows) == 3
    assert md_path.read_text().startswith("| model | dataset |")
    data = json.loads(report.read_text())
    assert [d["scale"] for d in data] == [2, 4]
    assert data[1]["protocol"]["model"] == "bicubic" and len(data[1]["images"]) == 5


@pytest.mark.slow
def test_plot_of_psnr_vs_parameters(shared_mirror, tmp_path):
    from srcli.eval.plot import parse_params, published_points

    assert parse_params("694K") == 694_000 and parse_params("13.37M") == 13_370_000 and parse_params("-") is None
    labels = {p.label for p in published_points("set5", 4)}
    assert {"IMDN", "ASID", "ASID-D8"} <= labels
    out = tmp_path / "fig.png"
    result = run("eval", "-m", "imdn", "-d", "set5", "-s", "4", "--plot", str(out))
    assert result.returncode == 0, result.stderr
    pixels = np.asarray(Image.open(out).convert("RGB"))
    red = (pixels[..., 0] > 180) & (pixels[..., 1] < 60) & (pixels[..., 2] < 60)
    blue = (pixels[..., 2] > 180) & (pixels[..., 0] < 60)
    assert red.sum() > 50 and blue.sum() > 50  # our point and the published ones are drawn


@pytest.mark.slow
def test_cli_json_output(shared_mirror):
    out = run("eval", "-m", "bicubic", "-d", "set5", "-s", "3", "--json")
    assert out.returncode == 0, out.stderr
    (result,) = json.loads(out.stdout)
    assert result["dataset"] == "Set5" and abs(result["psnr"] - 30.39) < 0.03


def test_unknown_dataset_did_you_mean():
    with pytest.raises(UnknownDatasetError, match="did you mean 'set14'"):
        resolve_dataset_name("set41")
    out = run("eval", "-m", "bicubic", "-d", "urban10", "-s", "4")
    assert out.returncode == 2 and "did you mean 'urban100'" in out.stderr


@pytest.mark.slow
def test_cli_without_a_scale_runs_the_models_default_scale(shared_dir):
    set5 = shared_dir / "data" / "benchmarks" / "Set5"
    out = run("eval", "-m", "bicubic", "--data-dir", str(set5), "--device", "cpu", "--threads", "1", "--json")
    assert out.returncode == 0, out.stderr
    (result,) = json.loads(out.stdout)
    assert result["scale"] == 4 and result["environment"]["threads"] == 1
    # Scoring a folder made elsewhere has no model to take the scale from.
    bad = run("eval", "--sr-dir", str(set5), "--data-dir", str(set5))
    assert bad.returncode == 2 and "-s" in bad.stderr


def test_the_report_records_environment_hashes_and_sizes_as_width_x_height(shared_dir, tmp_path):
    import hashlib
    from datetime import datetime

    from srcli._version import __version__
    from srcli.eval.runner import git_commit

    hr_dir = tmp_path / "hr"
    hr_dir.mkdir()
    (hr_dir / "woman.png").write_bytes((shared_dir / "data/benchmarks/Set5/woman.png").read_bytes())  # 228 x 344
    result = evaluate("bicubic", None, 3, data_dir=hr_dir, device="cpu").to_dict()
    assert result["images"][0]["hr_size"] == (228, 342)  # width x height, the height mod-cropped to 3
    digest = hashlib.sha256((hr_dir / "woman.png").read_bytes()).hexdigest()
    assert result["dataset_sha256"] == {"woman.png": digest}
    env = result["environment"]
    assert env["srcli"] == __version__ and env["git_commit"] == git_commit()
    assert env["torch"] and env["threads"] >= 1 and env["device"].startswith("cpu")
    assert env["timestamp"].endswith("Z")
    datetime.fromisoformat(env["timestamp"].replace("Z", "+00:00"))
    assert result["protocol"]["dtype"] == "fp32"  # the papers' protocol: fp32 unless asked otherwise


def test_git_commit_reads_head_and_refs(tmp_path):
    from srcli.eval.runner import git_commit

    sha, other = "1" * 40, "2" * 40
    git = tmp_path / "repo" / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    (git / "refs" / "heads" / "main").write_text(sha + "\n")
    assert git_commit(tmp_path / "repo") == sha
    (git / "refs" / "heads" / "main").unlink()
    (git / "packed-refs").write_text(f"# pack-refs with: peeled\n{other} refs/heads/main\n^{sha}\n")
    assert git_commit(tmp_path / "repo") == other
    (git / "HEAD").write_text(sha + "\n")  # detached
    assert git_commit(tmp_path / "repo") == sha
    worktree = tmp_path / "wt"
    (git / "worktrees" / "wt").mkdir(parents=True)
    (git / "worktrees" / "wt" / "HEAD").write_text("ref: refs/heads/main\n")
    (git / "worktrees" / "wt" / "commondir").write_text("../..\n")
    worktree.mkdir()
    (worktree / ".git").write_text(f"gitdir: {git / 'worktrees' / 'wt'}\n")
    assert git_commit(worktree) == other  # the branch lives in the main git folder's packed-refs
    assert git_commit(tmp_path / "nowhere") is None


@pytest.mark.slow
def test_evaluate_takes_one_options_record(shared_dir):
    from srcli.engine.options import RunOptions, check_run, resolve_run
    from srcli.errors import DeviceError, UsageError

    hr_dir = shared_dir / "data" / "benchmarks" / "Set5"
    options = RunOptions(model="bicubic", scale=2, device="cpu", precision="fp32")
    by_record = evaluate(dataset=None, data_dir=hr_dir, options=options)
    assert by_record.scale == 2 and by_record.model == "bicubic"
    resolved = resolve_run(check_run(options))
    again = evaluate("bicubic", None, 2, data_dir=hr_dir, options=resolved)
    assert again.psnr == by_record.psnr
    with pytest.raises(UsageError, match="not both"):
        evaluate("bicubic", None, 2, data_dir=hr_dir, options=resolved, device="cpu")
    with pytest.raises(DeviceError, match="fp16 is not supported on the CPU"):
        evaluate("bicubic", None, 2, data_dir=hr_dir, device="cpu", precision="fp16")
    with pytest.raises(UsageError, match="outscale"):
        evaluate("bicubic", None, 2, data_dir=hr_dir, options=RunOptions(model="bicubic", outscale=3.0))


def test_cli_refuses_fp16_on_the_cpu_before_importing_torch():
    code = (
        "import sys\n"
        "from srcli.cli import main\n"
        "code = main(['eval', '-m', 'bicubic', '-d', 'set5', '--precision', 'fp16', '--device', 'cpu'])\n"
        "print('torch' in sys.modules, code)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.stdout.split() == ["False", "2"], out.stderr
    assert out.stderr.strip() == "error: fp16 is not supported on the CPU; use --precision bf16 or fp32"


@pytest.mark.slow
def test_table_runs_the_rows_we_have_weights_for(shared_mirror):
    out = run("eval", "--table", "bicubic-reference", "-d", "set5", "--json")
    assert out.returncode == 0, out.stderr
    assert sorted(r["scale"] for r in json.loads(out.stdout)) == [2, 3, 4]
    bad = run("eval", "--table", "asid-tabel1")
    assert bad.returncode == 2 and "did you mean 'asid-table1'" in bad.stderr


def test_folder_with_junk_and_a_broken_image_is_scored_with_skips(shared_dir, tmp_path):
    folder = tmp_path / "hr"
    folder.mkdir()
    for name in ("baby.png", "bird.png"):
        (folder / name).write_bytes((shared_dir / "data/benchmarks/Set5" / name).read_bytes())
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.png").write_bytes((shared_dir / "data/benchmarks/Set5/head.png").read_bytes()[:500])
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "tiny.png")
    result = evaluate("bicubic", None, 4, data_dir=folder, device="cpu")
    assert [i.name for i in result.images] == ["baby.png", "bird.png"]
    assert len(result.skipped) == 3
    assert any("notes.txt: not an image" in s for s in result.skipped)
    assert any("broken.png" in s for s in result.skipped)
    assert any("tiny.png: too small" in s for s in result.skipped)


@pytest.mark.slow
def test_sr_dir_scores_results_made_elsewhere(shared_dir, tmp_path):
    """Bicubic SR written to PNG and scored from --sr-dir equals scoring the model directly."""
    import torch

    from srcli.archs.imresize import imresize
    from srcli.eval.protocol import make_lr, modcrop, to_uint8_levels
    from srcli.io.images import read_rgb_uint8

    hr_dir = shared_dir / "data" / "benchmarks" / "Set5"
    sr_dir = tmp_path / "sr"
    sr_dir.mkdir()
    for path in sorted(hr_dir.glob("*.png")):
        lr = make_lr(modcrop(read_rgb_uint8(path), 3), 3)
        sr = to_uint8_levels(imresize(lr.double(), scale=3)).to(torch.uint8).permute(1, 2, 0).numpy()
        Image.fromarray(sr).save(sr_dir / f"{path.stem}_x3.png")
    scored = evaluate(None, None, 3, data_dir=hr_dir, sr_dir=sr_dir)
    direct = evaluate("bicubic", None, 3, data_dir=hr_dir, device="cpu")
    assert scored.psnr == pytest.approx(direct.psnr, abs=1e-9)
    assert scored.ssim == pytest.approx(direct.ssim, abs=1e-9)


def test_sr_dir_with_wrong_size_is_skipped(shared_dir, tmp_path):
    hr_dir = tmp_path / "hr"
    hr_dir.mkdir()
    (hr_dir / "bird.png").write_bytes((shared_dir / "data/benchmarks/Set5/bird.png").read_bytes())
    (hr_dir / "baby.png").write_bytes((shared_dir / "data/benchmarks/Set5/baby.png").read_bytes())
    sr_dir = tmp_path / "sr"
    sr_dir.mkdir()
    Image.open(hr_dir / "bird.png").save(sr_dir / "bird.png")
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(sr_dir / "baby.png")
    result = evaluate(None, None, 2, data_dir=hr_dir, sr_dir=sr_dir)
    assert [i.name for i in result.images] == ["bird.png"]
    assert result.images[0].psnr > 60  # the HR scored against itself (mod-crop is a no-op here)
    assert "does not match the mod-cropped HR" in result.skipped[0]


def test_damaged_dataset_file_is_downloaded_again(shared_mirror):
    paths = dataset_files("set5")
    assert len(paths) == 5
    paths[0].write_bytes(b"garbage")
    again = dataset_files("set5")
    assert again[0] == paths[0] and again[0].stat().st_size > 1000


def test_missing_dataset_offline_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SRCLI_CACHE_DIR", str(tmp_path))
    with pytest.raises(DatasetError, match=r"Set14/baboon.png: .*offline"):
        dataset_files("set14", offline=True)
