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


@pytest.mark.slow
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


# ---- issue 15: repair, file:// mirrors, an honest table -----------------------------------------


def _mirror(server, shared: Path, *files: tuple[str, str]) -> dict[str, str]:
    """Serve real checkpoints laid out like the cache; returns the environment that names the mirror."""
    for key, name in files:
        server.add(f"/m/weights/{key}/{name}", (shared / "weights" / name).read_bytes())
    return {"SRCLI_MIRRORS": server.url("/m")}


@pytest.mark.slow
def test_download_force_replaces_a_damaged_cached_file(shared_dir, file_server, cache):
    env = _mirror(file_server, shared_dir, ("imdn.x2", "IMDN_x2.pth"))
    body = (shared_dir / "weights" / "IMDN_x2.pth").read_bytes()
    assert run("models", "download", "imdn", "-s", "2", env=env).returncode == 0
    cached = cache / "weights" / "imdn.x2" / "IMDN_x2.pth"
    cached.write_bytes(body[:1000] + b"\x00" + body[1001:])
    refused = run("models", "download", "imdn", "-s", "2", env=env)
    assert refused.returncode == 1
    assert "damaged" in refused.stderr and "'srcli models download imdn -s 2 --force'" in refused.stderr
    forced = run("models", "download", "imdn", "-s", "2", "--force", env=env)
    assert forced.returncode == 0, forced.stderr
    assert cached.read_bytes() == body
    assert sorted(p.name for p in cached.parent.iterdir()) == ["IMDN_x2.pth"]


@pytest.mark.slow
def test_verify_repair_replaces_every_damaged_file(shared_dir, file_server, cache):
    env = _mirror(file_server, shared_dir, ("imdn.x2", "IMDN_x2.pth"), ("rlfn.x4", "rlfn_x4.pth"))
    for name, scale in (("imdn", "2"), ("rlfn", "4")):
        assert run("models", "download", name, "-s", scale, env=env).returncode == 0
    imdn = cache / "weights" / "imdn.x2" / "IMDN_x2.pth"
    rlfn = cache / "weights" / "rlfn.x4" / "rlfn_x4.pth"
    imdn.write_bytes(imdn.read_bytes()[:-1] + b"\x00")  # a flipped byte
    rlfn.write_bytes(rlfn.read_bytes()[:5000])  # a truncated copy
    found = run("models", "verify", env=env)
    assert found.returncode == 1 and "'srcli models verify --repair'" in found.stderr
    repaired = run("models", "verify", "--repair", "--json", env=env)
    assert repaired.returncode == 0, repaired.stderr
    records = {r["key"]: r for r in json.loads(repaired.stdout[repaired.stdout.index("[") :])}
    assert records["imdn.x2"]["status"] == "hash-mismatch" and records["imdn.x2"]["repair"] == "repaired"
    assert records["rlfn.x4"]["status"] == "size-mismatch" and records["rlfn.x4"]["repair"] == "repaired"
    assert imdn.read_bytes() == (shared_dir / "weights" / "IMDN_x2.pth").read_bytes()
    assert rlfn.read_bytes() == (shared_dir / "weights" / "rlfn_x4.pth").read_bytes()
    assert run("models", "verify").returncode == 0


def test_verify_repair_that_cannot_reach_a_copy_says_so(shared_dir, cache):
    target = cache / "weights" / "imdn.x2" / "IMDN_x2.pth"
    target.parent.mkdir(parents=True)
    target.write_bytes((shared_dir / "weights" / "IMDN_x2.pth").read_bytes()[:-1] + b"\x00")
    out = run("models", "verify", "--repair", "--offline")
    assert out.returncode == 1
    assert "imdn.x2: not repaired:" in out.stderr and "offline mode is on" in out.stderr
    assert "1 damaged: imdn.x2" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_a_file_mirror_works_from_the_command_line(shared_dir, cache, tmp_path):
    mirror = tmp_path / "mirror"
    (mirror / "weights" / "imdn.x3").mkdir(parents=True)
    (mirror / "weights" / "imdn.x3" / "IMDN_x3.pth").write_bytes((shared_dir / "weights" / "IMDN_x3.pth").read_bytes())
    env = {"SRCLI_MIRRORS": mirror.as_uri()}
    out = run("models", "download", "imdn", "-s", "3", "--offline", env=env)
    assert out.returncode == 0, out.stderr
    assert (cache / "weights" / "imdn.x3" / "IMDN_x3.pth").read_bytes() == (
        mirror / "weights/imdn.x3/IMDN_x3.pth"
    ).read_bytes()
    missing = run("models", "download", "imdn", "-s", "4", "--offline", env=env)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert f"no such file {mirror / 'weights' / 'imdn.x4' / 'IMDN_x4.pth'}" in missing.stderr
    bad = run("models", "download", "imdn", "-s", "4", env={"SRCLI_MIRRORS": "s3://bucket/srcli"})
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "SRCLI_MIRRORS: 's3://bucket/srcli' is not an http://, https:// or file:// URL" in bad.stderr


def _legend(stdout: str) -> str:
    lines = stdout.rstrip().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("params: at the largest scale"))
    return " ".join(line.strip() for line in lines[start:])


def _row(stdout: str, name: str) -> str:
    return next(line for line in stdout.splitlines() if line.split() and line.split()[0] == name)


@pytest.mark.slow
def test_list_legend_explains_only_the_markers_shown(shared_dir, file_server, cache):
    empty = run("models", "list")
    assert empty.returncode == 0, empty.stderr
    legend = _legend(empty.stdout)
    assert "✓" not in empty.stdout and "✓" not in legend  # nothing is cached
    assert "embedded: ships inside srcli" in legend and "– downloaded on first use" in legend
    assert "none: no weights published at that scale" in legend
    assert "(planned)" not in legend  # every registered architecture is implemented
    assert "x2 embedded x3 embedded x4 embedded" in _row(empty.stdout, "survey-net")
    assert "x2 – x3 none x4 –" in _row(empty.stdout, "rlfn")  # RLFN x3 was never released

    env = _mirror(file_server, shared_dir, ("imdn.x2", "IMDN_x2.pth"))
    assert run("models", "download", "imdn", "-s", "2", env=env).returncode == 0
    filled = run("models", "list")
    assert "x2 ✓ 2.8 MB x3 – x4 –" in _row(filled.stdout, "imdn")
    assert "✓ in the cache (size)" in _legend(filled.stdout)

    records = {r["name"]: r for r in json.loads(run("models", "list", "--json").stdout)}
    embedded = records["survey-net"]["weights"]["x4"]
    assert (embedded["status"], embedded["embedded"], embedded["cached"], embedded["path"]) == (
        "embedded",
        True,
        False,
        None,
    )
    assert records["imdn"]["weights"]["x2"]["status"] == "cached"
    assert "x3" not in records["rlfn"]["weights"]


def test_info_shows_no_package_paths_and_names_scales_without_weights(cache):
    survey = run("models", "info", "survey-net")
    assert survey.returncode == 0, survey.stderr
    flat = " ".join(survey.stdout.split())
    assert "survey-net_x4.safetensors (embedded: ships inside srcli, works offline)" in flat
    package = str(REPO / "srcli")
    assert package not in flat and "site-packages" not in flat and "cached" not in flat
    rlfn = " ".join(run("models", "info", "rlfn").stdout.split())
    assert "x3 no weights were published at this scale: pass a checkpoint with --weights FILE" in rlfn
    assert f"x4 rlfn_x4.pth (not cached) goes to {cache / 'weights' / 'rlfn.x4' / 'rlfn_x4.pth'}" in rlfn
