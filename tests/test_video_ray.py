"""`srcli upscale clip.mp4 --ray local`: a video's segments as Ray tasks, one at a time per actor, the same file out.

The clip and the one-device reference are ``test_video_devices``'s (``tests.video_fixtures``: 2 s at 12 fps with a
tone, bicubic, 0.5 s segments: 4 segments). Ray is started inside each run with 2 CPUs (two actors) and shut down
after it. An actor is killed by a ``SegmentHook`` (``ExitOnce``) that ends its own process (``os._exit``) at a
chosen segment, the first time only (a marker file remembers), never by timing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from srcli.pipeline.video import plan_video_job
from srcli.pipeline.video_writers import MANIFEST, work_dir
from tests.test_video import packets, upscale, video_options
from tests.video_fixtures import ExitOnce, SegmentDigests, decoded, one_device
from tests.video_fixtures import clip as clip_fixture

ray = pytest.importorskip("ray")

slow = pytest.mark.slow
clip = clip_fixture  # the shared clip (tests.video_fixtures), here too


@pytest.fixture(autouse=True)
def no_ray_left() -> object:
    """Each test starts without Ray and leaves none running (the job shuts down the Ray it started)."""
    assert not ray.is_initialized()
    yield
    if ray.is_initialized():
        ray.shutdown()
        pytest.fail("the job left Ray running")


def same_video(one: Path, other: Path) -> None:
    """Decoded frames, timestamps, audio streams and packets of ``other`` are ``one``'s."""
    frames_one, pts_one, audio_one = decoded(one)
    frames_other, pts_other, audio_other = decoded(other)
    assert len(frames_other) == len(frames_one) == 24
    assert pts_other == pts_one
    assert all(np.array_equal(a, b) for a, b in zip(frames_one, frames_other, strict=True))
    assert audio_one == audio_other == 1
    assert packets(other) == packets(one)


@slow
def test_ray_local_gives_the_one_device_output(clip: Path, tmp_path: Path) -> None:
    from srcli.pipeline.video_ray import run_video_job_on_ray

    one, one_digests = one_device(clip, tmp_path / "one.mp4")
    assert one.files[0].status == "done", one.files[0].message
    out = tmp_path / "ray.mp4"
    events = SegmentDigests(out)
    plan = plan_video_job([str(clip)], video_options(out, segment_seconds=0.5))
    report = run_video_job_on_ray(plan, "local", events=events, num_cpus=2)  # type: ignore[arg-type]
    assert not ray.is_initialized()
    rep = report.files[0]
    assert rep.status == "done", rep.message
    assert rep.verified is True
    assert rep.segments == one.files[0].segments == 4
    assert rep.frames == one.files[0].frames == 24
    assert report.retries == 0 and len(report.workers) == 2
    assert sum(w.segments for w in report.workers) == 4
    assert events.digests == one_digests and len(one_digests) == 4  # the segment files, byte for byte
    same_video(tmp_path / "one.mp4", out)
    assert out.read_bytes() == (tmp_path / "one.mp4").read_bytes()
    assert not work_dir(out).exists()
    assert report.to_dict()["executor"] == "ray"


@slow
def test_a_killed_actor_costs_one_retry_and_nothing_else(clip: Path, tmp_path: Path) -> None:
    from srcli.pipeline.video_ray import run_video_job_on_ray

    one, _ = one_device(clip, tmp_path / "one.mp4")
    out = tmp_path / "ray.mp4"
    marker = tmp_path / "killed"
    plan = plan_video_job([str(clip)], video_options(out, segment_seconds=0.5))
    report = run_video_job_on_ray(plan, "local", item_hook=ExitOnce(2, str(marker)), num_cpus=2)
    assert marker.exists()  # the actor really died
    assert not ray.is_initialized()
    rep = report.files[0]
    assert rep.status == "done", rep.message
    assert report.retries == 1
    assert sum(w.restarts for w in report.workers) == 1
    assert sum(w.segments for w in report.workers) == 4
    assert rep.frames == one.files[0].frames == 24
    same_video(tmp_path / "one.mp4", out)
    assert out.read_bytes() == (tmp_path / "one.mp4").read_bytes()
    assert not (work_dir(out) / MANIFEST).exists()


@slow
def test_cli_ray_local_runs_a_video(clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one, _ = one_device(clip, tmp_path / "one.mp4")
    out = tmp_path / "cli.mp4"
    code, report, err = upscale(capsys, clip, "-o", out, "--segment-seconds", "0.5", "--ray", "local")
    assert code == 0, err
    assert not ray.is_initialized()
    assert report["executor"] == "ray" and report["retries"] == 0
    assert report["files"][0]["frames"] == 24 and report["files"][0]["verified"] is True
    assert out.read_bytes() == (tmp_path / "one.mp4").read_bytes()
