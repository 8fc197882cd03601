"""One image job on several devices (``--devices``, worker processes) and on Ray (``--ray``): the same files as
one process, every input written exactly once, and a killed worker loses nothing (issue 16).

Workers are killed by the test through ``item_hook``, which runs in the worker just before the model starts on
an item: it SIGKILLs its own process at a chosen image, the first time only (a marker file remembers), so the
fault is placed by the test and not by timing.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from srcli.atomic import is_temp_file
from srcli.engine.options import RunOptions
from srcli.errors import UsageError
from srcli.pipeline.device_pool import MAX_ATTEMPTS, PoolReport, parse_devices, run_job_on_devices
from srcli.pipeline.image_plan import PlannedImage, plan_images
from srcli.pipeline.images import FileReport, JobEvents, JobReport, run_job
from srcli.pipeline.job import ImageOptions
from srcli.pipeline.outputs import JOURNAL_NAME
from tests.conftest import require_shared

slow = pytest.mark.slow

#: Input sizes (width, height, mode): all different, so that largest-first has an order to follow.
SIZES = [(24, 20, "RGB"), (30, 22, "RGB"), (18, 26, "RGBA"), (28, 28, "L"), (20, 16, "RGB"), (34, 24, "RGB")]


@dataclass(frozen=True)
class KillOnce:
    """An ``item_hook``: SIGKILL the process running it when it reaches ``name``, once (``marker`` remembers).

    With ``always``, it kills on every run of ``name`` (the image can never be done).
    """

    name: str
    marker: str
    always: bool = False

    def __call__(self, item: PlannedImage) -> None:
        if item.input.name != self.name:
            return
        if not self.always:
            try:
                os.close(os.open(self.marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                return
        os.kill(os.getpid(), signal.SIGKILL)


class Interrupt(JobEvents):
    """Events that press Ctrl-C (raise ``KeyboardInterrupt``) in the main process after the first file is done."""

    def __init__(self) -> None:
        self.finished: list[FileReport] = []

    def file_finished(self, report: FileReport) -> None:
        self.finished.append(report)
        if len(self.finished) == 1:
            raise KeyboardInterrupt


class Recorder(JobEvents):
    """Events that count what the progress bar would show."""

    def __init__(self) -> None:
        self.starts = 0
        self.finished: list[str] = []

    def started(self, total: int, report: JobReport) -> None:
        self.starts += 1

    def file_finished(self, report: FileReport) -> None:
        self.finished.append(report.input)


def make_inputs(folder: Path) -> Path:
    """Six small images of different sizes and modes (RGB, RGBA, grey) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(16)
    for i, (w, h, mode) in enumerate(SIZES):
        channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
        pixels = (rng.random((h, w, channels)) * 255).astype(np.uint8)
        Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode).save(folder / f"im{i}.png")
    return folder


def imdn_run() -> RunOptions:
    """IMDN x4 with the official checkpoint from ../shared (nothing downloaded), one torch thread.

    The thread count is fixed on both sides of every comparison: torch's CPU kernels sum in an order that
    depends on it, which can move a pixel by one level (each worker of ``cpu,cpu`` gets half the cores).
    """
    weights = require_shared() / "weights" / "IMDN_x4.pth"
    return RunOptions(model="imdn", scale=4, weights=str(weights), offline=True, threads=1)


def bicubic_run() -> RunOptions:
    """The parameter-free bicubic model at x2, one torch thread (see ``imdn_run``)."""
    return RunOptions(model="bicubic", scale=2, threads=1)


def plan(src: Path, out: Path, run: RunOptions, **kwargs: object) -> object:
    return plan_images([str(src)], ImageOptions(run=run, output=out, **kwargs))  # type: ignore[arg-type]


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGBA"))


def assert_same_outputs(reference: Path, out: Path) -> None:
    """``out`` holds the same images as ``reference``, pixel for pixel, each recorded once, and no temporary file."""
    names = sorted(p.name for p in reference.iterdir() if p.suffix == ".png")
    assert names and names == sorted(p.name for p in out.iterdir() if p.suffix == ".png")
    for name in names:
        assert np.array_equal(pixels(reference / name), pixels(out / name)), name
    assert not [p for p in out.rglob("*") if is_temp_file(p)]
    lines = [json.loads(line) for line in (out / JOURNAL_NAME).read_text().splitlines()]
    assert sorted(entry["output"] for entry in lines) == names  # every input written (and recorded) exactly once


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_inputs(tmp_path_factory.mktemp("scale-out") / "in")


@pytest.fixture(scope="module")
def bicubic_reference(inputs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bicubic-one-process")
    report = run_job(plan(inputs, out, bicubic_run()))
    assert report.count("done") == len(SIZES)
    return out


@pytest.fixture(scope="module")
def imdn_reference(inputs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("imdn-one-process")
    report = run_job(plan(inputs, out, imdn_run()))
    assert report.count("done") == len(SIZES)
    return out


# ---------------------------------------------------------------------------------------------
# --devices


def test_parse_devices() -> None:
    assert parse_devices("cpu,cpu") == ["cpu", "cpu"]
    assert parse_devices(" CPU , cpu,cpu ") == ["cpu", "cpu", "cpu"]
    for bad, says in [("", "comma-separated"), ("cpu,,cpu", "comma-separated"), ("gpu0", "unknown device 'gpu0'")]:
        with pytest.raises(UsageError, match=says) as caught:
            parse_devices(bad)
        assert "\n" not in str(caught.value)
    import torch

    if not torch.cuda.is_available():
        assert parse_devices("all") == ["cpu"]
        with pytest.raises(UsageError, match="CUDA is not available"):
            parse_devices("cuda:0,cuda:1")
    else:
        count = torch.cuda.device_count()
        assert parse_devices("all") == [f"cuda:{i}" for i in range(count)]
        with pytest.raises(UsageError, match=f"cuda:{count} does not exist"):
            parse_devices(f"cuda:{count}")


@slow
def test_devices_cpu_cpu_bicubic_matches_one_process(inputs: Path, bicubic_reference: Path, tmp_path: Path) -> None:
    events = Recorder()
    report = run_job_on_devices(plan(inputs, tmp_path, bicubic_run()), parse_devices("cpu,cpu"), events=events)
    assert isinstance(report, PoolReport)
    assert report.count("done") == len(SIZES) and report.retries == 0 and not report.interrupted
    assert_same_outputs(bicubic_reference, tmp_path)
    assert events.starts == 1 and len(events.finished) == len(SIZES)  # one progress bar for the whole job
    # Per-device throughput: two workers, each with a share of the cores, each given work (2 items at the start).
    assert [w.device for w in report.workers] == ["cpu", "cpu"]
    assert all(w.images >= 1 and w.seconds > 0 for w in report.workers)
    assert sum(w.images for w in report.workers) == len(SIZES)
    summary = report.to_dict()
    assert summary["executor"] == "devices" and summary["retries"] == 0 and len(summary["workers"]) == 2
    assert report.device.startswith("2 x cpu (")


@slow
def test_killed_worker_loses_nothing(inputs: Path, imdn_reference: Path, tmp_path: Path) -> None:
    """IMDN x4 (official weights) on ``cpu,cpu``, one worker SIGKILLed as its model starts on the third-largest
    image: another worker (or its restart) runs that image again, and every output matches the one-process run."""
    job = plan(inputs, tmp_path / "out", imdn_run())
    third = sorted(job.todo, key=lambda i: -i.pixels)[2].input.name
    marker = tmp_path / "killed"
    report = run_job_on_devices(job, ["cpu", "cpu"], item_hook=KillOnce(third, str(marker)))
    assert marker.exists()  # the worker really was killed
    assert report.count("done") == len(SIZES) and not report.interrupted
    assert report.retries == 1
    assert sum(w.restarts for w in report.workers) == 1
    killed = next(f for f in report.files if f.input.endswith(third))
    assert any("run again" in note and "SIGKILL" in note for note in killed.notes)
    assert_same_outputs(imdn_reference, tmp_path / "out")


@slow
def test_image_that_always_kills_its_worker_fails_alone(inputs: Path, bicubic_reference: Path, tmp_path: Path) -> None:
    job = plan(inputs, tmp_path, bicubic_run())
    victim = "im1.png"
    report = run_job_on_devices(job, ["cpu", "cpu"], item_hook=KillOnce(victim, "", always=True))
    assert report.retries == MAX_ATTEMPTS
    failed = [f for f in report.files if f.status == "failed"]
    assert [Path(f.input).name for f in failed] == [victim]
    assert f"died each of the {MAX_ATTEMPTS} times" in failed[0].message
    assert report.count("done") == len(SIZES) - 1 and report.exit_code == 1
    assert not (tmp_path / victim).exists()
    assert not [p for p in tmp_path.rglob("*") if is_temp_file(p)]
    for f in report.files:
        if f.status == "done":
            name = Path(f.output or "").name
            assert np.array_equal(pixels(bicubic_reference / name), pixels(tmp_path / name))


@slow
def test_ctrl_c_stops_the_workers_and_keeps_every_finished_output(inputs: Path, tmp_path: Path) -> None:
    events = Interrupt()
    report = run_job_on_devices(plan(inputs, tmp_path, bicubic_run()), ["cpu"], events=events)
    assert report.interrupted and report.exit_code == 130
    done = [f for f in report.files if f.status == "done"]
    assert done and report.count("planned") == 0
    assert all(f.message == "not processed (interrupted)" for f in report.files if f.status == "skipped")
    assert not [p for p in tmp_path.rglob("*") if is_temp_file(p)]
    # Whatever was written is whole and recorded; nothing was written without a record.
    recorded = {json.loads(line)["output"] for line in (tmp_path / JOURNAL_NAME).read_text().splitlines()}
    assert recorded == {p.name for p in tmp_path.glob("*.png")} == {Path(f.output or "").name for f in done}


@slow
def test_workers_that_cannot_load_the_model_raise_its_error(inputs: Path, tmp_path: Path) -> None:
    run = RunOptions(model="imdn", scale=4, weights=str(tmp_path / "missing.pth"), offline=True)
    with pytest.raises(Exception, match="missing.pth"):
        run_job_on_devices(plan(inputs, tmp_path / "out", run), ["cpu"])
    assert not list((tmp_path / "out").glob("*.png"))


# ---------------------------------------------------------------------------------------------
# --ray


def test_ray_missing_says_how_to_install(monkeypatch: pytest.MonkeyPatch, inputs: Path, tmp_path: Path) -> None:
    from srcli.pipeline.ray_executor import run_job_on_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(UsageError) as caught:
        run_job_on_ray(plan(inputs, tmp_path, bicubic_run()), "local")
    assert 'pip install -e ".[ray]"' in str(caught.value) and "\n" not in str(caught.value)


@slow
def test_ray_local_matches_one_process_and_survives_a_killed_actor(
    inputs: Path, imdn_reference: Path, tmp_path: Path
) -> None:
    """``--ray local`` (2 CPUs, started and shut down by the job): the same files; then an actor killed mid-job."""
    ray = pytest.importorskip("ray")
    from srcli.pipeline.ray_executor import run_job_on_ray

    report = run_job_on_ray(plan(inputs, tmp_path / "plain", imdn_run()), "local", num_cpus=2)
    assert not ray.is_initialized()  # the local Ray it started is gone
    assert report.executor == "ray" and report.count("done") == len(SIZES) and report.retries == 0
    assert len(report.workers) == 2 and sum(w.images for w in report.workers) == len(SIZES)
    assert_same_outputs(imdn_reference, tmp_path / "plain")

    job = plan(inputs, tmp_path / "killed", imdn_run())
    third = sorted(job.todo, key=lambda i: -i.pixels)[2].input.name
    marker = tmp_path / "killed-marker"
    report = run_job_on_ray(job, "local", num_cpus=2, item_hook=KillOnce(third, str(marker)))
    assert marker.exists() and not ray.is_initialized()
    assert report.count("done") == len(SIZES) and report.retries == 1
    assert sum(w.restarts for w in report.workers) == 1
    assert_same_outputs(imdn_reference, tmp_path / "killed")
