"""``srcli`` as a process: SIGTERM stops a batch cleanly with status 143, and a reader that closes its pipe
(``srcli upscale ... 2>&1 | head -1``) does not stop the batch.

Each test runs ``python -m srcli`` (``srcli/__main__.py`` through ``runpy``) in a child process on a few small
PNGs with the ``bicubic`` model (no weights). To put the child in a known state when the test acts, a global
torch forward pre-hook, registered by the child before ``srcli`` starts, pauses the job in the main thread at the
model pass of the image whose height is ``_PAUSE_HEIGHT`` (the second one): it reports ``paused`` on one pipe and
waits for a byte (or end of file) on another. The test then acts (closes a pipe, sends SIGTERM) while the batch
is known to be half done, and lets it go on. Nothing waits on elapsed time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
#: The images of the batch, in the order the job takes them (by name), as (height, width).
_SIZES = {"a.png": (20, 24), "b.png": (22, 26), "c.png": (18, 30)}
_PAUSE_HEIGHT = 22
#: Seconds before a child that should have finished counts as hung (a failure, never a wait for a state).
_HUNG = 120

_CHILD = r"""
import os, runpy, sys
import torch

ready_fd, go_fd, pause_height = (int(a) for a in sys.argv[1:4])

def pause(module, args):
    x = args[0] if args else None
    if isinstance(x, torch.Tensor) and x.dim() == 4 and x.shape[-2] == pause_height:
        os.write(ready_fd, b"paused\n")
        os.read(go_fd, 1)  # a byte, or end of file once the test closes its end

torch.nn.modules.module.register_module_forward_pre_hook(pause)
sys.argv = ["srcli", *sys.argv[4:]]
runpy.run_module("srcli", run_name="__main__", alter_sys=True)
"""

pytestmark = [pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and pipes"), pytest.mark.slow]


@dataclass
class _Child:
    """A running ``python -m srcli`` paused at the second image's model pass (see the module docstring)."""

    process: subprocess.Popen[bytes]
    ready: int
    go: int

    def wait_paused(self) -> None:
        """Block until the child reports that it is paused; fail if it ended instead."""
        with os.fdopen(os.dup(self.ready), "rb", buffering=0) as ready:
            line = ready.readline()
        assert line == b"paused\n", "the child ended without reaching the pause"

    def resume(self) -> None:
        """Let the paused model pass go on."""
        os.write(self.go, b"g")


@pytest.fixture
def batch(tmp_path: Path) -> Path:
    """An input folder of three small RGB PNGs of distinct heights."""
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    for name, (h, w) in _SIZES.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(src / name)
    return src


@pytest.fixture
def start_child(tmp_path: Path) -> Iterator:
    """``start(args, **popen_kwargs)`` starts ``python -m srcli args`` under the pause hook; children are
    reaped (killed if still running) and pipes closed at the end of the test."""
    started: list[tuple[_Child, int, int]] = []

    def start(args: list[str], **kwargs: object) -> _Child:
        ready_r, ready_w = os.pipe()
        go_r, go_w = os.pipe()
        env = {**os.environ, "PYTHONPATH": str(REPO), "SRCLI_CACHE_DIR": str(tmp_path / "cache"), "COLUMNS": "100"}
        cmd = [sys.executable, "-c", _CHILD, str(ready_w), str(go_r), str(_PAUSE_HEIGHT), *args]
        process = subprocess.Popen(cmd, env=env, pass_fds=(ready_w, go_r), **kwargs)  # type: ignore[call-overload]
        os.close(ready_w)
        os.close(go_r)
        child = _Child(process, ready_r, go_w)
        started.append((child, ready_r, go_w))
        return child

    yield start
    for child, ready_r, go_w in started:
        os.close(go_w)
        os.close(ready_r)
        if child.process.poll() is None:
            child.process.kill()
        child.process.wait()
        for stream in (child.process.stdout, child.process.stderr):
            if stream is not None and not stream.closed:
                stream.close()


def _upscale_args(src: Path, out: Path, *extra: str) -> list[str]:
    return ["upscale", str(src), "-o", str(out), "-m", "bicubic", "-s", "2", "--device", "cpu", *extra]


def _complete_outputs(out: Path) -> dict[str, tuple[int, int]]:
    """The images in ``out``, each asserted to decode whole, by name: their (height, width). Asserts that no
    temporary file (``.<name>.<hex>.partial``) is left; other hidden files (srcli's journal) are not images."""
    assert [p.name for p in out.iterdir() if p.name.endswith(".partial")] == []
    sizes = {}
    for path in sorted(p for p in out.iterdir() if not p.name.startswith(".")):
        with Image.open(path) as image:
            image.load()
            sizes[path.name] = (image.height, image.width)
    return sizes


def _expected(*names: str) -> dict[str, tuple[int, int]]:
    return {name: (2 * _SIZES[name][0], 2 * _SIZES[name][1]) for name in names}


def test_closed_output_pipe_does_not_stop_the_batch(tmp_path: Path, batch: Path, start_child) -> None:
    """``srcli upscale in/ -o out/ 2>&1 | head -1``: the reader leaves after the first line, mid-batch; every
    output is still written, the rest of the output is dropped, and the status is 0."""
    out = tmp_path / "out"
    child = start_child(_upscale_args(batch, out), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    child.wait_paused()
    assert child.process.stdout.readline() != b""  # the first line is out
    child.process.stdout.close()  # ... and the reader gone, before the summary is printed
    child.resume()
    assert child.process.wait(timeout=_HUNG) == 0
    assert _complete_outputs(out) == _expected(*_SIZES)


def test_closed_stdout_with_json_exits_cleanly(tmp_path: Path, batch: Path, start_child) -> None:
    """``--json`` with stdout's reader gone before the report is printed: the batch finishes, the report is
    dropped, and stderr shows no traceback and no "Exception ignored ... BrokenPipeError" at exit."""
    out = tmp_path / "out"
    child = start_child(_upscale_args(batch, out, "--json"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.wait_paused()
    child.process.stdout.close()
    child.resume()
    stderr = child.process.stderr.read().decode()
    assert child.process.wait(timeout=_HUNG) == 0, stderr
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr and "Exception ignored" not in stderr
    assert _complete_outputs(out) == _expected(*_SIZES)


def test_sigterm_stops_the_batch_cleanly_with_status_143(tmp_path: Path, batch: Path, start_child) -> None:
    """SIGTERM while the second image is in the model: the first image's write (in flight or done) completes,
    nothing else is written, no temporary file is left, and the status is 143 (Ctrl-C's would be 130)."""
    out = tmp_path / "out"
    child = start_child(_upscale_args(batch, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.wait_paused()
    child.process.send_signal(signal.SIGTERM)
    stdout, stderr = child.process.communicate(timeout=_HUNG)
    assert child.process.returncode == 143, stderr.decode()
    assert _complete_outputs(out) == _expected("a.png")
    assert b"Traceback" not in stderr
