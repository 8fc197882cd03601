"""`srcli upscale clip.mp4 -o out.mp4`: frames, timing, audio, subtitles, chapters and colour survive; resumable.

The clips are made here with imageio-ffmpeg's ffmpeg (moving gradients, a sine tone, known frame
count and rate). Outputs are checked with ffmpeg directly (``-f framecrc`` packet lists and the
``-i`` header), not with srcli's own probing code (PyAV). The bicubic model needs no weights.
Interruptions are made at chosen points (the ``stop_after_segments`` hook, or an events callback
that raises ``KeyboardInterrupt`` or blocks until the process is killed), never by timing.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import imageio_ffmpeg
import numpy as np
import pytest
import torch
from PIL import Image

from srcli.cli import main
from srcli.cli.upscale import _is_video_job
from srcli.engine.options import RunOptions
from srcli.errors import UsageError
from srcli.pipeline.video import VideoEvents, VideoJobReport, VideoOptions, plan_video_job, run_video_job

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
REPO = Path(__file__).resolve().parents[1]


def ff(*args: str | Path) -> None:
    subprocess.run([FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *map(str, args)], check=True)


def header(path: Path) -> str:
    """What ``ffmpeg -i`` says about ``path``."""
    proc = subprocess.run([FFMPEG, "-hide_banner", "-i", str(path)], capture_output=True, text=True, check=False)
    return proc.stderr


def packets(path: Path) -> dict[str, list[list[tuple[float, float]]]]:
    """Per media type, per stream: (pts, duration) of every packet in seconds, from a ``-c copy`` framecrc."""
    proc = subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-copyts", "-i", str(path), "-map", "0:v?", "-map", "0:a?"]
        + ["-map", "0:s?", "-c", "copy", "-f", "framecrc", "-"],
        capture_output=True,
        text=True,
        check=True,
    )
    tbs: dict[int, Fraction] = {}
    kinds: dict[int, str] = {}
    rows: dict[int, list[tuple[float, float]]] = {}
    for line in proc.stdout.splitlines():
        if m := re.match(r"#tb (\d+): (\d+)/(\d+)", line):
            tbs[int(m[1])] = Fraction(int(m[2]), int(m[3]))
        elif m := re.match(r"#media_type (\d+): (\w+)", line):
            kinds[int(m[1])] = m[2]
        elif not line.startswith("#") and line.strip():
            f = [x.strip() for x in line.split(",")]
            i = int(f[0])
            rows.setdefault(i, []).append((float(int(f[2]) * tbs[i]), float(int(f[3]) * tbs[i])))
    out: dict[str, list[list[tuple[float, float]]]] = {}
    for i in sorted(kinds):
        out.setdefault(kinds[i], []).append(sorted(rows.get(i, [])))
    return out


def video_times(path: Path) -> list[float]:
    return [pts for pts, _ in packets(path)["video"][0]]


def extent(rows: list[tuple[float, float]]) -> float:
    """From the first packet's start to the last packet's end."""
    return max(p + d for p, d in rows) - min(p for p, _ in rows)


def video_options(output: Path, **fields: Any) -> VideoOptions:
    """The job's options with the bicubic x2 model (no weights)."""
    return VideoOptions(run=RunOptions(model="bicubic", scale=2), output=output, **fields)


def run_job(inputs: list[Path], options: VideoOptions, events: VideoEvents | None = None) -> VideoJobReport:
    """Plan the job, then run the plan (what the CLI does, without the CLI)."""
    return run_video_job(plan_video_job([str(p) for p in inputs], options), events=events)


def stamps_of(folder: Path) -> list[float]:
    """The frame times (ms) in a folder's timestamps.txt, comments left out."""
    lines = (folder / "timestamps.txt").read_text().splitlines()
    return [float(x) for x in lines if x and not x.startswith("#")]


def upscale(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, dict, str]:
    """Run ``srcli upscale ... -m bicubic -s 2 --json`` in-process: (exit code, report, stderr)."""
    code = main(["upscale", *map(str, args), "-m", "bicubic", "-s", "2", "--json"])
    captured = capsys.readouterr()
    report = json.loads(captured.out) if captured.out.strip() else {}
    return code, report, captured.err


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: on frames this small, OpenMP's hand-offs on a busy machine cost more than the work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clips")
    # 24 frames at 12 fps of a moving gradient, 2 s of a 440 Hz tone, tagged BT.709.
    ff(
        "-f", "lavfi", "-i", "gradients=s=32x24:r=12:d=2:speed=0.05",
        "-f", "lavfi", "-i", "sine=f=440:r=48000:d=2",
        "-vf", "setparams=color_primaries=bt709:color_trc=bt709:colorspace=bt709",
        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", root / "cfr.mp4",
    )  # fmt: skip
    # Variable frame rate: 24 fps with every 4th frame dropped (18 frames in 1 s, gaps of 1/24 and 2/24 s),
    # Opus audio, SubRip subtitles and two chapters.
    (root / "subs.srt").write_text("1\n00:00:00,100 --> 00:00:00,500\nhello\n\n2\n00:00:00,600 --> 00:00:00,900\nbye\n")
    (root / "meta.txt").write_text(
        ";FFMETADATA1\n[CHAPTER]\nTIMEBASE=1/1000\nSTART=0\nEND=500\ntitle=one\n"
        "[CHAPTER]\nTIMEBASE=1/1000\nSTART=500\nEND=1000\ntitle=two\n"
    )
    ff(
        "-f", "lavfi", "-i", r"gradients=s=32x24:r=24:d=1:speed=0.05,select='not(eq(mod(n\,4)\,3))'",
        "-f", "lavfi", "-i", "sine=f=440:r=48000:d=1",
        "-i", root / "subs.srt", "-i", root / "meta.txt",
        "-map", "0:v", "-map", "1:a", "-map", "2:s", "-map_chapters", "3", "-fps_mode", "passthrough",
        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "libopus", "-c:s", "srt", root / "vfr.mkv",
    )  # fmt: skip
    return root


# ------------------------------------------------------------------------------------------------ routing


def test_gif_goes_to_video_only_when_asked(tmp_path: Path) -> None:
    gif, clip, png = tmp_path / "a.gif", tmp_path / "b.mp4", tmp_path / "c.png"
    for p in (gif, clip, png):
        p.write_bytes(b"x")
    assert not _is_video_job([str(gif)], tmp_path / "out.gif", video=False, frames=False)
    assert not _is_video_job([str(png)], tmp_path / "out", video=False, frames=False)
    assert _is_video_job([str(gif)], tmp_path / "out.mp4", video=False, frames=False)
    assert _is_video_job([str(gif)], tmp_path / "out", video=True, frames=False)
    assert _is_video_job([str(clip)], tmp_path / "out", video=False, frames=False)
    assert _is_video_job([str(tmp_path)], tmp_path / "out.mkv", video=False, frames=False)
    with pytest.raises(UsageError, match="separate runs"):
        _is_video_job([str(clip), str(png)], tmp_path / "out", video=False, frames=False)


# ------------------------------------------------------------------------------------------ what survives


def test_frames_rate_audio_and_colour_survive(clips: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out.mp4"
    code, report, err = upscale(capsys, clips / "cfr.mp4", "-o", out)
    assert code == 0, err
    got = packets(out)
    times = [p for p, _ in got["video"][0]]
    assert times == pytest.approx([i / 12 for i in range(24)], abs=1e-4)  # 24 frames, 12 fps
    assert extent(got["video"][0]) == pytest.approx(2.0, abs=1e-3)
    assert len(got["audio"]) == 1 and extent(got["audio"][0]) == pytest.approx(
        extent(packets(clips / "cfr.mp4")["audio"][0])
    )
    head = header(out)
    assert "64x48" in head and "Audio: aac" in head
    assert re.search(r"yuv420p\(tv, bt709\b", head), head  # matrix, primaries and transfer all BT.709
    file = report["files"][0]
    assert file["verified"] is True and file["frames"] == 24
    assert set(file["stages"]) >= {"decode", "model", "encode", "end_to_end"}
    assert all(file["stages"][s]["fps"] > 0 for s in ("decode", "model", "encode"))


def test_variable_frame_rate_subtitles_and_chapters(clips: Path, tmp_path: Path, capsys) -> None:
    source = video_times(clips / "vfr.mkv")
    gaps = np.diff(source)
    assert len(source) == 18 and gaps.max() > 1.5 * gaps.min()  # really variable
    for name in ("out.mkv", "out.mp4"):
        out = tmp_path / name
        code, report, err = upscale(capsys, clips / "vfr.mkv", "-o", out, "--segment-seconds", "0.3")
        assert code == 0, err
        assert video_times(out) == pytest.approx(source, abs=1e-3), name
        head = header(out)
        assert len(re.findall(r"Chapter #0:\d", head)) == 2, name
        assert "Subtitle: subrip" in head if name.endswith("mkv") else "Subtitle: mov_text" in head
        assert "Audio: opus" in head
        # Segments start at the first frame at least 0.3 s after the previous start.
        starts = [source[0]]
        for t in source:
            if t - starts[-1] >= 0.3 - 1e-9:
                starts.append(t)
        assert report["files"][0]["variable_frame_rate"] is True and report["files"][0]["segments"] == len(starts)


def test_audio_the_container_cannot_hold_is_transcoded_or_dropped(tmp_path: Path, capsys) -> None:
    src = tmp_path / "pcm.mkv"
    ff(
        "-f", "lavfi", "-i", "gradients=s=32x24:r=10:d=1", "-f", "lavfi", "-i", "sine=r=44100:d=1",
        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "pcm_s16le", src,
    )  # fmt: skip
    code, report, _ = upscale(capsys, src, "-o", tmp_path / "out.webm")
    assert code == 0
    head = header(tmp_path / "out.webm")
    assert "Audio: opus" in head and "Video: vp9" in head
    assert re.search(r"yuv420p\(tv, smpte170m\b", head), head  # untagged SD: BT.601, stated in full
    assert any("pcm_s16le" in n for n in report["files"][0]["notes"])
    audio = packets(tmp_path / "out.webm")["audio"][0]
    assert extent(audio) == pytest.approx(1.0, abs=0.05)
    code, _, _ = upscale(capsys, src, "-o", tmp_path / "silent.mp4", "--no-audio")
    assert code == 0 and "audio" not in packets(tmp_path / "silent.mp4")


def test_ten_bit_source_stays_ten_bit(tmp_path: Path, capsys) -> None:
    src = tmp_path / "ten.mkv"
    ff("-f", "lavfi", "-i", "gradients=s=32x24:r=10:d=0.5", "-c:v", "libx264", "-pix_fmt", "yuv420p10le", src)
    code, report, err = upscale(capsys, src, "-o", tmp_path / "out.mkv")
    assert code == 0, err
    assert "yuv420p10le" in header(tmp_path / "out.mkv")
    assert report["files"][0]["pix_fmt"] == "yuv420p10le"


def test_hd_output_of_an_untagged_source_is_tagged_bt709(tmp_path: Path, capsys) -> None:
    src = tmp_path / "sd.mp4"
    ff("-f", "lavfi", "-i", "gradients=s=640x360:r=10:d=0.2", "-c:v", "libx264", "-pix_fmt", "yuv420p", src)
    assert "bt709" not in header(src)
    code, _, err = upscale(capsys, src, "-o", tmp_path / "hd.mp4")
    assert code == 0, err
    head = header(tmp_path / "hd.mp4")
    assert "1280x720" in head and re.search(r"yuv420p\(tv, bt709\b", head), head


# ------------------------------------------------------------------------------------------------ frames


def test_frames_folder_out_and_back_in(clips: Path, tmp_path: Path, capsys) -> None:
    frames = tmp_path / "frames"
    code, report, err = upscale(capsys, clips / "vfr.mkv", "-o", frames, "--frames")
    assert code == 0, err
    pngs = sorted(frames.glob("*.png"))
    assert len(pngs) == 18 and Image.open(pngs[0]).size == (64, 48)
    stamps = stamps_of(frames)
    source = video_times(clips / "vfr.mkv")
    assert [s / 1000 for s in stamps] == pytest.approx(source, abs=1e-3)
    # The folder, with its timestamps, back into a video: same timing (the frames are upscaled again).
    code, _, err = upscale(capsys, frames, "-o", tmp_path / "back.mkv")
    assert code == 0, err
    assert video_times(tmp_path / "back.mkv") == pytest.approx(source, abs=1e-3)
    assert "128x96" in header(tmp_path / "back.mkv")
    # Plain numbered frames need --fps.
    plain = tmp_path / "plain"
    plain.mkdir()
    for i, png in enumerate(pngs[:6]):
        (plain / f"{i + 1}.png").write_bytes(png.read_bytes())
    code, _, err = upscale(capsys, plain, "-o", tmp_path / "plain.mp4")
    assert code == 2 and "--fps" in err
    code, _, err = upscale(capsys, plain, "-o", tmp_path / "plain.mp4", "--fps", "30000/1001")
    assert code == 0, err
    assert video_times(tmp_path / "plain.mp4") == pytest.approx([i * 1001 / 30000 for i in range(6)], abs=1e-4)


# ------------------------------------------------------------------------------------------------ resume


def test_resume_after_an_interruption_gives_a_complete_file(clips: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    options = video_options(out, segment_seconds=0.5, stop_after_segments=2)
    report = run_job([clips / "cfr.mp4"], options)
    assert report.interrupted and report.exit_code == 130
    assert not out.exists()  # nothing under the final name
    assert not list(tmp_path.glob("*.partial")) and not list(tmp_path.glob(".*.partial"))
    report = run_job([clips / "cfr.mp4"], replace(options, stop_after_segments=None, resume=True))
    file = report.files[0]
    assert file.status == "done" and file.resumed_segments == 2 and file.resumed_frames == 12
    assert video_times(out) == pytest.approx([i / 12 for i in range(24)], abs=1e-4)
    assert extent(packets(out)["audio"][0]) == pytest.approx(extent(packets(clips / "cfr.mp4")["audio"][0]))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".srcli-outputs.jsonl", "out.mp4"]  # work folder gone


class _InterruptAfter(VideoEvents):
    """Ctrl-C (a ``KeyboardInterrupt``) right after the ``n``-th segment is recorded."""

    def __init__(self, n: int) -> None:
        self.n = n

    def segment_done(self, report: Any, segments: int) -> None:
        if segments == self.n:
            raise KeyboardInterrupt


def test_ctrl_c_keeps_the_complete_segments(clips: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mkv"
    options = video_options(out, segment_seconds=0.5)
    report = run_job([clips / "cfr.mp4"], options, events=_InterruptAfter(1))
    assert report.interrupted and report.exit_code == 130 and "--resume" in report.files[0].message
    assert not out.exists()
    manifest = json.loads((tmp_path / ".out.mkv.srcli-parts" / "manifest.json").read_text())
    assert len(manifest["segments"]) == 1
    assert not [p for p in (tmp_path / ".out.mkv.srcli-parts").iterdir() if p.name.endswith(".partial")]
    file = run_job([clips / "cfr.mp4"], replace(options, resume=True)).files[0]
    assert file.status == "done" and file.resumed_segments == 1 and file.verified is True
    assert video_times(out) == pytest.approx([i / 12 for i in range(24)], abs=1e-3)  # Matroska: milliseconds


_BLOCKING_CHILD = """
import sys, threading
from pathlib import Path
from srcli.engine.options import RunOptions
from srcli.pipeline.video import VideoEvents, VideoOptions, plan_video_job, run_video_job

class Block(VideoEvents):
    def segment_done(self, report, segments):
        print("segment", segments, flush=True)
        threading.Event().wait()  # hold the job here until the parent kills the process

options = VideoOptions(run=RunOptions(model="bicubic", scale=2), output=Path(sys.argv[2]), segment_seconds=0.5)
run_video_job(plan_video_job([sys.argv[1]], options), events=Block())
"""


@pytest.mark.slow
def test_killed_job_resumes(tmp_path: Path) -> None:
    """A real crash (SIGKILL) mid-video, once a segment is recorded: no file under the final name, and
    --resume finishes it. The child reports the segment on stdout and then waits to be killed."""
    src, out = tmp_path / "long.mp4", tmp_path / "out.mkv"
    ff("-f", "lavfi", "-i", "gradients=s=32x24:r=24:d=2", "-c:v", "libx264", "-pix_fmt", "yuv420p", src)
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", _BLOCKING_CHILD, str(src), str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().split() == ["segment", "1"]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not out.exists()
    file = run_job([src], video_options(out, segment_seconds=0.5, resume=True)).files[0]
    assert file.status == "done" and file.resumed_segments >= 1 and file.verified is True
    assert video_times(out) == pytest.approx([i / 24 for i in range(48)], abs=1e-3)


# ------------------------------------------------------------------------------------------------ bad input


def test_input_without_video_is_refused(tmp_path: Path, capsys) -> None:
    src = tmp_path / "tone.mp4"
    ff("-f", "lavfi", "-i", "sine=d=0.5", "-c:a", "aac", src)
    code, report, err = upscale(capsys, src, "-o", tmp_path / "out.mp4")
    assert code == 1 and "no video stream" in report["files"][0]["message"]
    assert not (tmp_path / "out.mp4").exists()


def test_unreadable_input_gives_one_line(tmp_path: Path, capsys) -> None:
    src = tmp_path / "junk.mp4"
    src.write_bytes(os.urandom(4096))
    code, report, err = upscale(capsys, src, "-o", tmp_path / "out.mp4")
    message = report["files"][0]["message"]
    assert code == 1 and "\n" not in message and message.startswith(str(src)) and "not a video" in message
    assert len([ln for ln in err.splitlines() if str(src) in ln]) == 1


@pytest.fixture
def damaged(tmp_path: Path) -> Path:
    """12 frames of PNG-coded video in Matroska with the 6th picture's compressed data garbled."""
    src = tmp_path / "clean.mkv"
    ff("-f", "lavfi", "-i", "gradients=s=32x24:r=12:d=1", "-c:v", "png", src)
    data = bytearray(src.read_bytes())
    starts = [m.start() for m in re.finditer(re.escape(b"\x89PNG\r\n\x1a\n"), bytes(data))]
    assert len(starts) == 12
    idat = data.index(b"IDAT", starts[5])
    data[idat + 4 : idat + 40] = bytes(b ^ 0xFF for b in data[idat + 4 : idat + 40])
    bad = tmp_path / "damaged.mkv"
    bad.write_bytes(bytes(data))
    return bad


def test_damaged_frame_stops_or_is_skipped_keeping_time(damaged: Path, tmp_path: Path, capsys) -> None:
    code, report, _ = upscale(capsys, damaged, "-o", tmp_path / "stop.mkv")
    assert code == 1 and "frame 5 at 0.417 s" in report["files"][0]["message"]
    assert not (tmp_path / "stop.mkv").exists()
    code, report, err = upscale(capsys, damaged, "-o", tmp_path / "skip.mkv", "--on-bad-frame", "skip")
    assert code == 0, err
    assert report["files"][0]["bad_frames"] == [{"index": 5, "time": pytest.approx(5 / 12, abs=1e-3)}]
    assert video_times(tmp_path / "skip.mkv") == pytest.approx([i / 12 for i in range(12)], abs=1e-3)


def test_failed_check_never_lands_under_the_final_name(clips: Path, tmp_path: Path, monkeypatch) -> None:
    import srcli.pipeline.video as video

    real = video.summarize

    def one_frame_short(path: Path) -> video.Summary:
        s = real(path)
        s.frames -= 1
        return s

    monkeypatch.setattr(video, "summarize", one_frame_short)
    out = tmp_path / "out.mp4"
    report = run_job([clips / "cfr.mp4"], video_options(out))
    file = report.files[0]
    assert file.status == "failed" and "does not match the source" in file.message
    assert not out.exists() and (tmp_path / "out.unverified.mp4").exists()


# ------------------------------------------------------------------------------------------------ engine


def test_batched_frames_match_one_at_a_time() -> None:
    """Whole frames stacked into one forward pass give the frames the one-by-one path gives."""
    from srcli.engine.upscale import EngineOptions, upscale_tensor
    from srcli.hub.loading import load_model

    loaded = load_model("bicubic", 2)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((3, 3, 20, 28), dtype=np.float32))
    batched = upscale_tensor(loaded, x, EngineOptions(tile=0))
    single = torch.cat([upscale_tensor(loaded, x[i : i + 1], EngineOptions(tile=0)).image for i in range(3)])
    assert batched.tiles == 3 and batched.image.shape == (3, 3, 40, 56)
    assert torch.allclose(batched.image, single, atol=1e-6)


# ------------------------------------------------------------------------------------------- regressions


@pytest.fixture
def cut_short(tmp_path: Path) -> Path:
    """A faststart MP4 declaring 20 frames / 2 s, cut in half with plain byte slicing."""
    whole = tmp_path / "whole.mp4"
    ff(
        "-f", "lavfi", "-i", "testsrc2=s=64x48:r=10:d=2", "-c:v", "libx264", "-threads", "1", "-g", "4",
        "-pix_fmt", "yuv420p", "-movflags", "+faststart", whole,
    )  # fmt: skip
    data = whole.read_bytes()
    half = tmp_path / "half.mp4"
    half.write_bytes(data[: len(data) // 2])
    return half


def test_source_cut_short_stops_naming_the_declared_frames(cut_short: Path, tmp_path: Path, capsys) -> None:
    code, report, err = upscale(capsys, cut_short, "-o", tmp_path / "out.mp4")
    message = report["files"][0]["message"]
    assert code == 1 and message.startswith(str(cut_short)) and "\n" not in message
    found = re.search(r"damaged: only (\d+) of the 20 frames its container declares", message)
    assert found and 0 < int(found[1]) < 20, message
    assert len([ln for ln in err.splitlines() if str(cut_short) in ln]) == 1
    assert not (tmp_path / "out.mp4").exists()


def test_source_cut_short_with_skip_holds_the_last_frame_to_the_declared_end(
    cut_short: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out.mp4"
    code, report, err = upscale(capsys, cut_short, "-o", out, "--on-bad-frame", "skip")
    assert code == 0, err
    file = report["files"][0]
    assert file["declared_frames"] == 20 and file["missing_frames"] > 0 and file["verified"] is True
    assert any("damaged source" in n for n in file["notes"]) and "damaged source" in err
    assert len(packets(out)["video"][0]) == file["frames"] < 20
    assert "Duration: 00:00:02.00," in header(out)  # the declared duration, not where the data stops


def test_gif_keeps_the_length_of_its_held_last_frame(tmp_path: Path, capsys) -> None:
    gif = tmp_path / "held.gif"
    shades = [Image.new("RGB", (32, 24), (v, 255 - v, v // 2)) for v in (0, 80, 160, 240)]
    shades[0].save(gif, save_all=True, append_images=shades[1:], duration=[100, 200, 100, 300], loop=0)
    out = tmp_path / "held.mp4"
    code, report, err = upscale(capsys, gif, "-o", out)
    assert code == 0, err
    assert report["files"][0]["verified"] is True
    assert video_times(out) == pytest.approx([0.0, 0.1, 0.3, 0.4], abs=1e-3)
    assert "Duration: 00:00:00.70," in header(out)  # MP4: the track's duration (its packets step in decode time)
    # Through a folder of frames and back: timestamps.txt keeps the last frame's end too.
    frames = tmp_path / "frames"
    code, _, err = upscale(capsys, gif, "-o", frames, "--frames")
    assert code == 0, err
    assert stamps_of(frames) == [0, 100, 300, 400] and "# end 700" in (frames / "timestamps.txt").read_text()
    code, _, err = upscale(capsys, frames, "-o", tmp_path / "back.mkv")
    assert code == 0, err
    assert extent(packets(tmp_path / "back.mkv")["video"][0]) == pytest.approx(0.7, abs=1e-3)


def test_fps_on_a_folder_with_timestamps_is_refused(tmp_path: Path, capsys) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        Image.new("RGB", (16, 12), (i * 60, 0, 0)).save(frames / f"{i + 1}.png")
    (frames / "timestamps.txt").write_text("# timestamp format v2\n0\n40\n80\n")
    code, _, err = upscale(capsys, frames, "-o", tmp_path / "out.mp4", "--fps", "25")
    assert code == 2 and "--fps conflicts with its timestamps.txt" in err and str(frames) in err
    assert not (tmp_path / "out.mp4").exists()


def _frame_set(folder: Path, count: int) -> None:
    folder.mkdir(parents=True)
    for i in range(count):
        Image.new("RGB", (8, 6), (i, i, i)).save(folder / f"frame_{i + 1:06d}.png")
    (folder / "timestamps.txt").write_text("# timestamp format v2\n" + "".join(f"{i * 40}\n" for i in range(count)))


def test_frames_into_a_folder_that_holds_frames(clips: Path, tmp_path: Path, capsys) -> None:
    frames = tmp_path / "frames"
    _frame_set(frames, 30)  # an older, longer set
    before = sorted(p.name for p in frames.iterdir())
    code, report, err = upscale(capsys, clips / "vfr.mkv", "-o", frames, "--frames")
    assert code == 1 and "already holds 30 frames" in report["files"][0]["message"] and "--overwrite" in err
    assert sorted(p.name for p in frames.iterdir()) == before  # untouched
    code, report, err = upscale(capsys, clips / "vfr.mkv", "-o", frames, "--frames", "--overwrite")
    assert code == 0, err
    pngs = sorted(frames.glob("*.png"))
    assert len(pngs) == 18 == len(stamps_of(frames))  # replaced whole: no stale frame 19..30
    assert Image.open(pngs[-1]).size == (64, 48)
    assert not list(tmp_path.glob(".frames*"))  # no work or old folder left beside it
    # The job's own earlier result is redone without --overwrite (the journal says whose it is).
    code, _, err = upscale(capsys, clips / "vfr.mkv", "-o", frames, "--frames")
    assert code == 0, err
    # A folder holding anything else is never replaced.
    (frames / "notes.txt").write_text("mine")
    code, report, _ = upscale(capsys, clips / "vfr.mkv", "-o", frames, "--frames", "--overwrite")
    assert code == 1 and "not frames (notes.txt)" in report["files"][0]["message"]
    assert (frames / "notes.txt").read_text() == "mine"


def test_encoder_stderr_is_read_by_one_thread(tmp_path: Path, monkeypatch) -> None:
    """Aborting an encoder mid-stream leaves its stderr reader to finish on its own (no 'closed file' error)."""
    from srcli.io.video import ColorTags, EncodeSettings, SegmentEncoder

    failures: list[BaseException] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: failures.append(args.exc_value))
    settings = EncodeSettings("libx264", "yuv420p", 18, None, ColorTags("tv", "bt709", "bt709", "bt709"))
    for _ in range(3):
        enc = SegmentEncoder(tmp_path / "seg.nut", 32, 24, 8, Fraction(1, 10), settings)
        enc.write(0, np.zeros((24, 32, 3), np.uint8))
        enc.abort()
        enc._stderr.join()
    assert failures == [] and not (tmp_path / "seg.nut").exists()
