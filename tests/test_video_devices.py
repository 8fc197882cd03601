"""`srcli upscale clip.mp4 --devices cpu,cpu`: a video's segments on two worker processes, the same file out.

The clip is made here (2 s at 12 fps with a 440 Hz tone, as in ``test_video``) and upscaled with the bicubic
model (no weights) in 0.5 s segments, once by ``run_video_job`` (one device) and once by
``run_video_job_on_devices``. The outputs' decoded frames, timestamps and audio must match, and the segment
files must be byte-identical. A worker is killed by a ``SegmentHook`` (``tests.video_fixtures.KillOnce``) that
SIGKILLs its own process at a chosen segment, the first time only (a marker file remembers), never by timing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from srcli.pipeline.video import plan_video_job, run_video_job
from srcli.pipeline.video_devices import run_video_job_on_devices, segment_starts
from srcli.pipeline.video_writers import MANIFEST, work_dir
from tests.test_video import damaged as damaged_clip
from tests.test_video import packets, upscale, video_options
from tests.video_fixtures import KillOnce, SegmentDigests, decoded, one_device
from tests.video_fixtures import clip as clip_fixture

slow = pytest.mark.slow
damaged = damaged_clip  # test_video's fixture, here too
clip = clip_fixture  # the shared clip (tests.video_fixtures), here too


def test_segments_are_cut_as_the_writer_cuts_them() -> None:
    assert segment_starts([0, 1, 2, 3, 4, 5, 6], 3) == [0, 3, 6]
    assert segment_starts([0, 2, 3, 7, 8, 9], 3) == [0, 2, 3]  # after a gap, the next frame starts one
    assert segment_starts([], 3) == []


@slow
def test_two_cpu_workers_give_the_one_device_output(clip: Path, tmp_path: Path) -> None:
    one, one_digests = one_device(clip, tmp_path / "one.mp4")
    assert one.files[0].status == "done", one.files[0].message
    two_out = tmp_path / "two.mp4"
    plan = plan_video_job([str(clip)], video_options(two_out, segment_seconds=0.5))
    events = SegmentDigests(two_out)
    two = run_video_job_on_devices(plan, ["cpu", "cpu"], events=events)  # type: ignore[arg-type]
    digests = events.digests
    rep = two.files[0]
    assert rep.status == "done", rep.message
    assert rep.verified is True
    assert rep.segments == one.files[0].segments == 4
    assert rep.frames == one.files[0].frames == 24
    assert two.retries == 0
    assert sum(w.segments for w in two.workers) == 4
    # Each segment file is the one-device run's, byte for byte (the same frames, the same encoder settings).
    assert digests == one_digests and len(digests) == 4
    frames_one, pts_one, audio_one = decoded(tmp_path / "one.mp4")
    frames_two, pts_two, audio_two = decoded(two_out)
    assert len(frames_two) == len(frames_one) == 24
    assert pts_two == pts_one
    assert all(np.array_equal(a, b) for a, b in zip(frames_one, frames_two, strict=True))
    assert audio_one == audio_two == 1
    assert packets(two_out) == packets(tmp_path / "one.mp4")
    assert (tmp_path / "two.mp4").read_bytes() == (tmp_path / "one.mp4").read_bytes()
    assert not work_dir(two_out).exists()
    assert two.to_dict()["executor"] == "devices"


@slow
def test_a_killed_worker_costs_one_retry_and_nothing_else(clip: Path, tmp_path: Path) -> None:
    one, _ = one_device(clip, tmp_path / "one.mp4")
    out = tmp_path / "two.mp4"
    marker = tmp_path / "killed"
    plan = plan_video_job([str(clip)], video_options(out, segment_seconds=0.5))
    report = run_video_job_on_devices(plan, ["cpu", "cpu"], item_hook=KillOnce(2, str(marker)))
    assert marker.exists()  # the worker really was killed
    rep = report.files[0]
    assert rep.status == "done", rep.message
    assert report.retries == 1
    assert sum(w.restarts for w in report.workers) == 1
    assert rep.frames == one.files[0].frames == 24
    assert out.read_bytes() == (tmp_path / "one.mp4").read_bytes()
    frames_one, pts_one, _ = decoded(tmp_path / "one.mp4")
    frames_two, pts_two, audio = decoded(out)
    assert pts_two == pts_one and audio == 1
    assert all(np.array_equal(a, b) for a, b in zip(frames_one, frames_two, strict=True))
    assert not (work_dir(out) / MANIFEST).exists()


@slow
def test_cli_devices_runs_a_video(clip: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli.mp4"
    code, report, err = upscale(capsys, clip, "-o", out, "--segment-seconds", "0.5", "--devices", "cpu,cpu")
    assert code == 0, err
    assert report["executor"] == "devices" and report["retries"] == 0
    assert report["files"][0]["frames"] == 24 and report["files"][0]["verified"] is True
    frames, pts, audio = decoded(out)
    assert len(frames) == 24 and audio == 1


@slow
def test_resume_on_devices_keeps_a_one_device_runs_complete_segments(clip: Path, tmp_path: Path) -> None:
    one, _ = one_device(clip, tmp_path / "one.mp4")
    out = tmp_path / "two.mp4"
    stopped = run_video_job(plan_video_job([str(clip)], video_options(out, segment_seconds=0.5, stop_after_segments=2)))
    assert stopped.interrupted and len(list(work_dir(out).glob("seg_*"))) == 2
    plan = plan_video_job([str(clip)], video_options(out, segment_seconds=0.5, resume=True))
    report = run_video_job_on_devices(plan, ["cpu", "cpu"])
    rep = report.files[0]
    assert rep.status == "done", rep.message
    assert rep.resumed_segments == 2 and rep.segments == 4 and rep.frames == 24
    assert sum(w.segments for w in report.workers) == 2
    assert out.read_bytes() == (tmp_path / "one.mp4").read_bytes()


@slow
def test_a_damaged_first_frame_of_a_segment_shows_the_previous_segments_last(damaged: Path, tmp_path: Path) -> None:
    # test_video's damaged clip: 12 frames at 12 fps, the 6th (index 5, at 0.417 s) garbled. Segments of 0.4167 s
    # start at frames 0, 5 and 10, so the damaged frame is the first of the second segment.
    bad = damaged
    options = {"segment_seconds": 0.4167, "on_bad_frame": "skip"}
    one_events, two_events = SegmentDigests(tmp_path / "one.mkv"), SegmentDigests(tmp_path / "two.mkv")
    plan = plan_video_job([str(bad)], video_options(tmp_path / "one.mkv", **options))
    one = run_video_job(plan, events=one_events)  # type: ignore[arg-type]
    plan = plan_video_job([str(bad)], video_options(tmp_path / "two.mkv", **options))
    two = run_video_job_on_devices(plan, ["cpu", "cpu"], events=two_events)  # type: ignore[arg-type]
    rep = two.files[0]
    assert rep.status == "done", rep.message
    assert rep.segments == one.files[0].segments == 3
    assert rep.bad_frames == one.files[0].bad_frames and [b["index"] for b in rep.bad_frames] == [5]
    # Matroska files carry a random segment UID: the segments' bytes and the decoded frames are compared.
    assert two_events.digests == one_events.digests and len(one_events.digests) == 3
    frames_one, pts_one, _ = decoded(tmp_path / "one.mkv")
    frames_two, pts_two, _ = decoded(tmp_path / "two.mkv")
    assert pts_two == pts_one and len(frames_two) == 12
    assert all(np.array_equal(a, b) for a, b in zip(frames_one, frames_two, strict=True))
    stop = run_video_job_on_devices(
        plan_video_job([str(bad)], video_options(tmp_path / "stop.mkv", segment_seconds=0.4167)), ["cpu", "cpu"]
    )
    assert stop.files[0].status == "failed" and "frame 5 at 0.417 s" in stop.files[0].message
    assert not (tmp_path / "stop.mkv").exists()
