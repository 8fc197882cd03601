"""Host allocation tuning for CPU runs: freed large blocks are reused without new page faults."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from srcli.cli import common

REPO = Path(__file__).resolve().parents[1]

# Two forward passes of IMDN x2 (random weights) on a 192 x 192 input after a warm-up pass: the minor
# page faults they cause. Each pass allocates and frees activations of several MB each.
_CHILD = r"""
import json, resource, torch
from srcli.engine.host_memory import keep_freed_memory
applied = keep_freed_memory()
torch.set_num_threads(1)
from srcli.engine.bench import build_model
model = build_model("imdn", 2, torch.device("cpu")).module
x = torch.rand(1, 3, 192, 192)
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
with torch.inference_mode():
    model(x)
    before = faults()
    for _ in range(2):
        model(x)
print(json.dumps({"applied": applied, "faults": faults() - before}))
"""


def _child(tuning: str) -> dict:
    env = {**os.environ, "SRCLI_MALLOC_TUNING": tuning, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", _CHILD], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_repeated_passes_reuse_freed_memory() -> None:
    """glibc's default maps large activations afresh on every pass (a page fault per 4 KB touched); tuned,
    later passes mostly reuse pages already mapped (here about 76,000 faults against 14,000)."""
    default = _child("0")
    tuned = _child("1")
    assert default["applied"] is False and tuned["applied"] is True
    assert default["faults"] > 30000  # the passes do touch fresh memory by default
    assert tuned["faults"] < default["faults"] / 3


def test_cli_tunes_only_for_cpu_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bool] = []
    monkeypatch.setattr("srcli.engine.host_memory.keep_freed_memory", lambda: calls.append(True) or True)
    common.tune_host_memory("cpu")
    assert calls == [True]
    common.tune_host_memory("no-such-device")  # reported by the command itself, not here
    assert calls == [True]
    monkeypatch.setattr("srcli.engine.devices.pick_device", lambda choice: __import__("torch").device("cuda"))
    common.tune_host_memory("auto")
    assert calls == [True]
