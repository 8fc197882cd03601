"""The README's set-up is the one CI runs, and scripts/install.sh picks the torch build it promises.

The install script is exercised with ``--dry-run`` (it prints its decision and the pip commands and
installs nothing); the PyTorch CPU index is replaced by an HTTP server on 127.0.0.1, so nothing here
touches the internet.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
INSTALL = REPO / "scripts" / "install.sh"
CI = REPO / ".ci" / "run"
BASH = shutil.which("bash")


def _command(marker: str) -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(rf"<!-- {marker} -->\s*```bash\n(.+?)\n```", text, re.S)
    assert match, f"README has no {marker} block"
    return match.group(1).strip()


def _main_steps() -> tuple[list[str], list[str]]:
    """README's main command split into its set-up steps and its main-job steps (the srcli runs)."""
    steps = [step.strip() for step in _command("main-command").split("&&")]
    job_start = next(i for i, step in enumerate(steps) if step.startswith(".venv/bin/srcli "))
    return steps[:job_start], steps[job_start:]


def _ci_block(name: str) -> list[str]:
    """The command lines of .ci/run between '# --- NAME' and '# --- end NAME'."""
    text = CI.read_text(encoding="utf-8")
    match = re.search(rf"^# --- {name}\b.*?\n(.*?)^# --- end {name} ---$", text, re.S | re.M)
    assert match, f".ci/run has no '{name}' block"
    return [line.strip() for line in match.group(1).splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_readme_has_exactly_two_setup_commands():
    assert "\n" not in _command("main-command")
    assert "\n" not in _command("test-command")


def test_readme_setup_is_the_install_script_then_the_main_job():
    setup, job = _main_steps()
    assert setup == ["bash scripts/install.sh"]
    assert job == [".venv/bin/srcli chart chart.png", ".venv/bin/srcli upscale chart.png -o upscaled/"]
    assert INSTALL.is_file()


def test_ci_runs_the_readme_install_steps_main_job_and_test_command():
    setup, job = _main_steps()
    # The set-up block of .ci/run is exactly the README's set-up steps, in order.
    assert _ci_block("README set-up") == setup
    # The main job runs as written (CI prefixes environment variables: offline, a fresh cache).
    ci_job = _ci_block("README main job")
    assert len(ci_job) == len(job)
    for ci_line, step in zip(ci_job, job, strict=True):
        assert ci_line == step or ci_line.endswith(" " + step), f".ci/run lacks the README step: {step}"
    ci_lines = [line.strip() for line in CI.read_text(encoding="utf-8").splitlines()]
    assert "rm -rf .venv" in ci_lines  # a fresh virtualenv, as on a new machine
    assert _command("test-command") in ci_lines
    assert "export SRCLI_REQUIRE_SHARED=1" in ci_lines
    assert any('"$rc" -eq 5' in line for line in ci_lines)  # "no tests collected" is a failure


def test_install_script_is_valid_bash():
    if BASH is None:
        pytest.skip("no bash")
    subprocess.run([BASH, "-n", str(INSTALL)], check=True)


# --- scripts/install.sh --dry-run: the decision ----------------------------------------------------


class _IndexHandler(BaseHTTPRequestHandler):
    def do_HEAD(self):  # noqa: N802 (http.server's naming)
        self.send_response(200 if self.path.rstrip("/").endswith("/whl/cpu/torch") else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def cpu_index():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _IndexHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/whl/cpu"
    finally:
        server.shutdown()
        server.server_close()


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/whl/cpu"


def _fake_tool(folder: Path, name: str, output: str) -> None:
    folder.mkdir(exist_ok=True)
    tool = folder / name
    tool.write_text(f"#!/bin/sh\necho '{output}'\n", encoding="utf-8")
    tool.chmod(0o755)


def _dry_run(tmp_path: Path, fake_bin: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    if BASH is None or sys.platform == "win32":
        pytest.skip("needs bash on a POSIX system")
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SRCLI_")}
    full_env.update(SRCLI_VENV=str(tmp_path / "venv"), SRCLI_PYTHON=sys.executable, **env)
    if fake_bin is not None:
        full_env["PATH"] = f"{fake_bin}{os.pathsep}{full_env.get('PATH', '')}"
    return subprocess.run(
        [BASH, str(INSTALL), "--dry-run"], env=full_env, capture_output=True, text=True, timeout=60, cwd=tmp_path
    )


def _pip_torch_line(out: str) -> str:
    lines = [line for line in out.splitlines() if line.startswith("+ ") and " pip install torch==" in line]
    assert len(lines) == 1, out
    return lines[0]


def _assert_installs_srcli_and_nothing_else(result: subprocess.CompletedProcess[str], tmp_path: Path) -> None:
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^\+ .* -m pip install -e \.\[dev\]$", result.stdout, re.M), result.stdout
    assert "dry run: nothing installed" in result.stdout
    assert not (tmp_path / "venv").exists()


def test_install_takes_the_cuda_build_where_an_nvidia_driver_is_present(tmp_path):
    fake_bin = tmp_path / "bin"
    _fake_tool(fake_bin, "nvidia-smi", "555.42.06")
    result = _dry_run(tmp_path, fake_bin)
    _assert_installs_srcli_and_nothing_else(result, tmp_path)
    assert "CUDA build" in result.stdout and "about 3 GB" in result.stdout
    assert _pip_torch_line(result.stdout).endswith(" pip install torch==2.13.0")  # PyPI's default (CUDA) wheel


def test_install_takes_the_default_wheel_on_macos(tmp_path):
    fake_bin = tmp_path / "bin"
    _fake_tool(fake_bin, "uname", "Darwin")
    result = _dry_run(tmp_path, fake_bin)
    _assert_installs_srcli_and_nothing_else(result, tmp_path)
    assert "MPS" in result.stdout
    assert _pip_torch_line(result.stdout).endswith(" pip install torch==2.13.0")


def test_install_takes_the_cpu_build_from_the_cpu_index(tmp_path, cpu_index):
    result = _dry_run(tmp_path, SRCLI_TORCH="cpu", SRCLI_TORCH_CPU_INDEX=cpu_index)
    _assert_installs_srcli_and_nothing_else(result, tmp_path)
    assert "CPU build" in result.stdout and "190 MB" in result.stdout
    assert _pip_torch_line(result.stdout).endswith(f" pip install torch==2.13.0 --extra-index-url {cpu_index}")


@pytest.mark.skipif(
    shutil.which("nvidia-smi") is not None or Path("/proc/driver/nvidia/version").exists() or sys.platform == "darwin",
    reason="this machine has an NVIDIA driver or is a Mac",
)
def test_install_detects_a_machine_without_a_gpu(tmp_path, cpu_index):
    result = _dry_run(tmp_path, SRCLI_TORCH_CPU_INDEX=cpu_index)
    _assert_installs_srcli_and_nothing_else(result, tmp_path)
    assert "no NVIDIA driver" in result.stdout
    assert _pip_torch_line(result.stdout).endswith(f"--extra-index-url {cpu_index}")


def test_install_falls_back_to_the_configured_indexes_when_the_cpu_index_is_unreachable(tmp_path):
    result = _dry_run(tmp_path, SRCLI_TORCH="cpu", SRCLI_TORCH_CPU_INDEX=_closed_port_url())
    _assert_installs_srcli_and_nothing_else(result, tmp_path)
    assert "is not reachable" in result.stdout and "WARNING" in result.stdout
    assert _pip_torch_line(result.stdout).endswith(" pip install torch==2.13.0")


def test_install_overrides(tmp_path):
    skip = _dry_run(tmp_path, SRCLI_TORCH="skip")
    _assert_installs_srcli_and_nothing_else(skip, tmp_path)
    assert " pip install torch==" not in skip.stdout

    cuda_index = "http://127.0.0.1:9/whl/cu126"  # never contacted: a given index is used as is
    cuda = _dry_run(tmp_path, SRCLI_TORCH="cuda", SRCLI_TORCH_INDEX=cuda_index)
    _assert_installs_srcli_and_nothing_else(cuda, tmp_path)
    assert _pip_torch_line(cuda.stdout).endswith(f" pip install torch==2.13.0 --extra-index-url {cuda_index}")

    bad = _dry_run(tmp_path, SRCLI_TORCH="gpu")
    assert bad.returncode != 0 and "expected auto, cpu, cuda, mps or skip" in bad.stderr
