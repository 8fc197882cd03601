"""Run ``srcli`` commands in one fresh interpreter and see, for each, its exit code, its stderr and whether torch
was imported: how the CLI tests check that bad arguments fail in one line before torch loads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

_PROBE = """
import contextlib, io, json, sys
from srcli.cli import main
seen = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(argv)
    seen.append([code, err.getvalue(), "torch" in sys.modules])
print(json.dumps(seen))
"""


def run_fresh(argvs: list[list[str]], cwd: Path, env: dict[str, str] | None = None) -> list[tuple[int, str, bool]]:
    """``srcli.cli.main(argv)`` for each of ``argvs`` in turn, in one new process: (exit code, stderr, torch
    imported so far) each. Torch stays out only while every command before it kept it out."""
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(argvs)], capture_output=True, text=True, cwd=cwd, timeout=120, env=env
    )
    assert out.returncode == 0, out.stderr
    return [tuple(row) for row in json.loads(out.stdout)]  # type: ignore[misc]
