"""Host allocation tuning for CPU runs: large blocks come from the heap, and freed ones stay mapped for reuse."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from srcli.cli import main

REPO = Path(__file__).resolve().parents[1]

#: A 64 MiB block: above glibc's largest dynamic mmap threshold (32 MiB on 64-bit), so by default it always
#: gets its own mapping, which ``free`` unmaps; small enough for srcli's default policy to serve it from the
#: heap and keep it there after ``free`` (below its mmap threshold and its trim threshold).
_BLOCK = 64 << 20

# Allocate one large block, touch every page, free it; report glibc's accounting (``mallinfo2``: bytes in the
# heap arenas and in separate mmapped chunks) and the resident set size at each step.
_CHILD = r"""
import ctypes, json, os, sys
from srcli.engine.host_memory import keep_freed_memory
applied = keep_freed_memory()
libc = ctypes.CDLL(None)
names = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")
if hasattr(libc, "mallinfo2"):
    info = type("MallInfo2", (ctypes.Structure,), {"_fields_": [(n, ctypes.c_size_t) for n in names]})
    libc.mallinfo2.restype = info
    mallinfo = libc.mallinfo2
else:  # glibc < 2.33: int fields, enough for these sizes
    info = type("MallInfo", (ctypes.Structure,), {"_fields_": [(n, ctypes.c_int) for n in names]})
    libc.mallinfo.restype = info
    mallinfo = libc.mallinfo
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
page = os.sysconf("SC_PAGE_SIZE")

def state():
    m = mallinfo()
    with open("/proc/self/statm") as f:
        rss = int(f.read().split()[1]) * page
    return {"arena": m.arena, "mmapped": m.hblkhd, "rss": rss}

size = int(sys.argv[1])
steps = {"start": state()}
block = libc.malloc(size)
assert block
ctypes.memset(block, 1, size)
steps["allocated"] = state()
libc.free(block)
steps["freed"] = state()
print(json.dumps({"applied": applied, **steps}))
"""


def _child(tuning: str) -> dict:
    env = {**os.environ, "SRCLI_MALLOC_TUNING": tuning, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-c", _CHILD, str(_BLOCK)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _glibc() -> bool:
    return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not _glibc(), reason="glibc's mallopt and mallinfo")
def test_large_blocks_come_from_the_heap_and_stay_mapped_after_free() -> None:
    """Untuned, glibc maps a 64 MiB block on its own and unmaps it on ``free`` (resident memory drops by the
    block); under the default policy the block is carved from the heap, and after ``free`` the heap keeps it,
    still resident, for the next pass. Both follow from glibc's rules, whatever the machine."""
    default, tuned = _child("0"), _child("1")
    assert default["applied"] is False and tuned["applied"] is True

    assert default["allocated"]["mmapped"] - default["start"]["mmapped"] >= _BLOCK, default  # its own mapping
    assert default["allocated"]["arena"] < _BLOCK, default  # not in the heap
    assert default["freed"]["mmapped"] == default["start"]["mmapped"], default  # unmapped by free
    assert default["allocated"]["rss"] - default["freed"]["rss"] >= _BLOCK // 2, default

    assert tuned["allocated"]["mmapped"] == tuned["start"]["mmapped"], tuned  # no mapping of its own ...
    assert tuned["allocated"]["arena"] >= _BLOCK, tuned  # ... but served from the heap
    assert tuned["freed"]["arena"] == tuned["allocated"]["arena"], tuned  # the heap is not trimmed
    assert tuned["allocated"]["rss"] - tuned["freed"]["rss"] < _BLOCK // 2, tuned  # its pages stay resident


def test_upscale_tunes_the_allocator_for_cpu_runs_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A job that runs a model on the CPU keeps freed memory (the setting is applied once, before the run); a dry
    run, which runs nothing, leaves the allocator as it is."""
    calls: list[bool] = []
    monkeypatch.setattr("srcli.engine.host_memory.keep_freed_memory", lambda: calls.append(True) or True)
    Image.new("RGB", (12, 10), (40, 90, 160)).save(tmp_path / "a.png")
    args = ["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "-m", "bicubic", "-s", "2"]
    assert main([*args, "--dry-run"]) == 0
    assert calls == []
    assert main([*args, "--device", "cpu"]) == 0
    assert calls == [True]
    assert (tmp_path / "out" / "a.png").is_file()
