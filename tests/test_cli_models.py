"""`srcli models ...` end to end: real subprocesses, a real local HTTP server, a temporary cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m srcli ARGS`` the way a user would, with a wide terminal."""
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "srcli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=REPO,
        timeout=120,
    )


def test_version():
    from srcli import __version__

    out = run("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"srcli {__version__}"


def test_help_lists_the_commands():
    out = run("--help")
    assert out.returncode == 0
    assert "models" in out.stdout


def test_cli_does_not_import_torch_for_help_version_and_list(cache):
    code = (
        "import sys\nfrom srcli.cli import main\n"
        "for argv in (['--help'], ['--version'], ['models', 'list'], ['models', 'info', 'rgt'],"
        " ['models', 'verify'], ['models', 'path']):\n"
        "    main(argv)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('clean')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60, env={**os.environ}
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("clean")


def test_list_shows_every_model(cache):
    from srcli.registry import list_models

    out = run("models", "list")
    assert out.returncode == 0, out.stderr
    for spec in list_models():
        assert spec.name in out.stdout
    data = json.loads(run("models", "list", "--json").stdout)
    assert [d["name"] for d in data] == [s.name for s in list_models()]
    imdn = next(d for d in data if d["name"] == "imdn")
    assert imdn["weights"]["x4"]["cached"] is False
    assert imdn["params"]["x4"] == 715_176


def test_unknown_model_is_one_line_exit_2_with_suggestion(cache):
    out = run("models", "info", "imdm")
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0
    assert "unknown model 'imdm'; did you mean 'imdn'?" in out.stderr


def test_unknown_scale_is_exit_2(cache):
    out = run("models", "download", "imdn", "-s", "5")
    assert out.returncode == 2
    assert "no x5 variant" in out.stderr


def test_info_explains_the_manual_route_for_rgt_x2(cache):
    out = run("models", "info", "rgt")
    assert out.returncode == 0
    assert "drive.google.com/drive/folders/1UNn5LvnfQAi6eHAHz-mTYWu8vCJs5kwu" in out.stdout
    assert "RGT_x2.pth" in out.stdout and "--weights" in out.stdout


def test_download_verify_and_list_against_a_local_mirror(shared_dir, file_server, cache):
    body = (shared_dir / "weights" / "IMDN_x2.pth").read_bytes()
    file_server.add("/m/weights/imdn.x2/IMDN_x2.pth", body)
    env = {"SRCLI_MIRRORS": file_server.url("/m")}
    out = run("models", "download", "imdn", "-s", "2", env=env)
    assert out.returncode == 0, out.stderr
    cached = cache / "weights" / "imdn.x2" / "IMDN_x2.pth"
    assert cached.read_bytes() == body
    data = json.loads(run("models", "list", "--json").stdout)
    imdn = next(d for d in data if d["name"] == "imdn")
    assert imdn["weights"]["x2"]["cached"] and imdn["weights"]["x2"]["cached_bytes"] == len(body)
    assert "x2 ✓ 2.8 MB" in run("models", "list").stdout

    verify = run("models", "verify", "--json")
    assert verify.returncode == 0
    records = json.loads(verify.stdout)
    # The weights shipped inside the package are verified too.
    assert {r["key"] for r in records} - {"imdn.x2"} == {"survey-net.x2", "survey-net.x3", "survey-net.x4"}
    assert all(r["status"] == "ok" for r in records)
    assert [r for r in records if r["key"] == "imdn.x2"] == [
        {
            "key": "imdn.x2",
            "path": str(cached),
            "status": "ok",
            "sha256": imdn["weights"]["x2"]["sha256"],
            "expected": imdn["weights"]["x2"]["sha256"],
            "source": "pinned",
        }
    ]
    cached.write_bytes(body[:-1] + b"\x00")
    bad = run("models", "verify")
    assert bad.returncode == 1
    assert "imdn.x2" in bad.stderr and "damaged" in bad.stderr


def test_download_several_scales_needs_all_or_s(cache):
    out = run("models", "download", "imdn")
    assert out.returncode == 2
    assert "pick one with -s or use --all" in out.stderr


def test_offline_download_says_where_to_put_the_file(cache):
    out = run("models", "download", "rlfn", "-s", "4", "--offline")
    assert out.returncode == 1
    assert "rlfn_x4.pth" in out.stderr and str(cache / "weights" / "rlfn.x4") in out.stderr


@pytest.mark.parametrize("flag", ["--cache-dir", "env"])
def test_cache_dir_override(tmp_path, flag, monkeypatch):
    monkeypatch.delenv("SRCLI_CACHE_DIR", raising=False)
    target = tmp_path / "elsewhere"
    if flag == "env":
        out = run("models", "path", env={"SRCLI_CACHE_DIR": str(target)})
    else:
        out = run("models", "path", "--cache-dir", str(target))
    assert out.stdout.strip() == str(target)
    out = run("models", "path", "asid", "-s", "3", "--cache-dir", str(target))
    assert out.stdout.strip() == str(target / "weights" / "asid.x3" / "ASID_X3_DIV2K_epoch0_ASID.pth")


def test_missing_argument_is_a_usage_error():
    out = run("models", "info")
    assert out.returncode == 2
    assert "Missing argument" in out.stderr
