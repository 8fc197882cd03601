"""The video job's plan: made once from headers, before any model loads; immutable; what ``--dry-run`` prints.

Clips are made here with imageio-ffmpeg's ffmpeg; the model is ``bicubic`` (no weights).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from fractions import Fraction
from pathlib import Path

import imageio_ffmpeg
import pytest
from PIL import Image

from srcli.cli import main
from srcli.engine.options import RunOptions
from srcli.errors import UsageError
from srcli.pipeline.video import VideoOptions, plan_video_job, run_video_job

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


def ff(*args: str | Path) -> None:
    subprocess.run([FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *map(str, args)], check=True)


def video_options(output: Path, **fields: object) -> VideoOptions:
    return VideoOptions(run=RunOptions(model="bicubic", scale=2), output=output, **fields)  # type: ignore[arg-type]


def cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, dict, str]:
    """``srcli upscale ... -m bicubic -s 2 --json`` in-process: (exit code, report, stderr)."""
    code = main(["upscale", *map(str, args), "-m", "bicubic", "-s", "2", "--json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if captured.out.strip() else {}, captured.err


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 frames at 12 fps, 32 x 24, H.264 in MP4 (declares its frame count and duration)."""
    path = tmp_path_factory.mktemp("plan") / "clip.mp4"
    ff("-f", "lavfi", "-i", "gradients=s=32x24:r=12:d=0.5", "-c:v", "libx264", "-pix_fmt", "yuv420p", path)
    return path


def test_plan_holds_what_the_probe_says(clip: Path, tmp_path: Path) -> None:
    plan = plan_video_job([str(clip)], video_options(tmp_path / "out.mkv"), create_folders=False)
    (item,) = plan.items
    assert item.action == "upscale" and item.kind == "video" and item.output == tmp_path / "out.mkv"
    assert (item.width, item.height, item.out_width, item.out_height) == (32, 24, 64, 48)
    assert item.frames == 6 and item.duration == pytest.approx(0.5) and item.frame_rate == 12
    assert (item.container, item.encoder, item.pix_fmt, item.crf) == ("mkv", "libx264", "yuv420p", 18)
    assert plan.options.run.scale == 2 and plan.todo == (item,)
    with pytest.raises(dataclasses.FrozenInstanceError):
        item.action = "skip"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.options.resume = True  # type: ignore[misc]


def test_plan_of_a_folder_of_frames(tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(5):
        Image.new("RGB", (20, 10), (i * 40, 0, 0)).save(frames / f"f{i + 1}.png")
    plan = plan_video_job([str(frames)], video_options(tmp_path / "out.mp4", fps=Fraction(10)), create_folders=False)
    (item,) = plan.items
    assert item.kind == "frames" and item.frames == 5 and item.duration == pytest.approx(0.5)
    assert (item.width, item.height, item.frame_rate) == (20, 10, 10)


def test_dry_run_prints_the_plan_and_writes_nothing(clip: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "new" / "out.mp4"
    code, report, err = cli(capsys, clip, "-o", out, "--dry-run")
    assert code == 0, err
    (file,) = report["files"]
    assert file["status"] == "planned" and file["output"] == str(out) and file["declared_frames"] == 6
    assert not (tmp_path / "new").exists()  # not even the folder


@pytest.mark.slow
def test_existing_output_is_refused_replaced_or_skipped(clip: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out.mp4"
    out.write_bytes(b"someone else's file")
    code, report, err = cli(capsys, clip, "-o", out)
    message = report["files"][0]["message"]
    assert code == 1 and message.startswith(str(clip)) and "--overwrite" in message and "\n" not in message
    assert out.read_bytes() == b"someone else's file"
    code, report, _ = cli(capsys, clip, "-o", out, "--skip-existing")
    assert code == 0 and report["files"][0]["status"] == "skipped"
    code, report, err = cli(capsys, clip, "-o", out, "--overwrite")
    assert code == 0, err
    assert report["files"][0]["replaced"] is True and out.read_bytes()[4:8] == b"ftyp"
    # Now it is this job's own output (the journal says so): redone without --overwrite.
    code, report, err = cli(capsys, clip, "-o", out)
    assert code == 0, err
    assert report["files"][0]["status"] == "done" and report["files"][0]["replaced"] is True
    # Other settings make it someone else's again.
    code, report, _ = cli(capsys, clip, "-o", out, "--crf", "30", "--dry-run")
    assert code == 1 and "not written by this job" in report["files"][0]["message"]


def test_collisions_and_output_onto_input_are_refused(clip: Path, tmp_path: Path) -> None:
    other = tmp_path / "a" / "clip.mp4"
    other.parent.mkdir()
    other.write_bytes(clip.read_bytes())
    plan = plan_video_job([str(clip), str(other)], video_options(tmp_path / "out"), create_folders=False)
    assert [i.action for i in plan.items] == ["refuse", "refuse"]
    assert all("map to one output" in i.reason for i in plan.items)
    plan = plan_video_job([str(other)], video_options(other), create_folders=False)
    assert plan.items[0].action == "refuse" and "input" in plan.items[0].reason


def test_run_follows_the_plan_without_planning_again(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    out.write_bytes(b"not ours")
    plan = plan_video_job([str(clip)], video_options(out))
    assert plan.items[0].action == "refuse"
    out.unlink()  # the reason is gone, but the plan stands
    report = run_video_job(plan)
    assert report.files[0].status == "failed" and report.exit_code == 1 and not out.exists()


def test_options_that_stop_the_job_before_any_work(clip: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--fps times a folder of frames"):
        plan_video_job([str(clip)], video_options(tmp_path / "o.mp4", fps=Fraction(24)))
    with pytest.raises(UsageError, match="webm cannot hold h264"):
        plan_video_job([str(clip)], video_options(tmp_path / "o.webm", codec="h264"))
    with pytest.raises(UsageError, match="--on-bad-frame"):
        plan_video_job([str(clip)], video_options(tmp_path / "o.mp4", on_bad_frame="ignore"))  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="no such file"):
        plan_video_job([str(tmp_path / "missing.mp4")], video_options(tmp_path / "o.mp4"))
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the output folder should be")
    with pytest.raises(UsageError, match="is a file"):
        plan_video_job([str(clip)], video_options(blocker / "o.mp4"))


def test_unreadable_input_among_several_is_refused_alone(clip: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.mkv"
    junk.write_bytes(b"\x00" * 1000)
    plan = plan_video_job([str(junk), str(clip)], video_options(tmp_path / "out"), create_folders=False)
    assert [i.action for i in plan.items] == ["refuse", "upscale"]
    assert plan.items[0].reason.startswith(str(junk)) and "not a video" in plan.items[0].reason


def test_fail_fast_stops_before_any_work_when_an_input_is_refused(clip: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.mkv"
    junk.write_bytes(b"\x00" * 1000)
    plan = plan_video_job([str(junk), str(clip)], video_options(tmp_path / "out", fail_fast=True))
    assert plan.to_run == () and len(plan.todo) == 1
    report = run_video_job(plan)
    assert [f.status for f in report.files] == ["failed", "skipped"] and report.exit_code == 1
    assert "--fail-fast" in report.files[1].message and not list((tmp_path / "out").glob("*.mp4"))
