"""Host memory that stays bounded (issue 19): each job runs in a fresh process and reports ``getrusage``'s peak
resident memory; every bound is relative to the same job in the same test (glibc's default behaviour, or the
engine's previous path), so it holds on any machine."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from srcli.engine import host_memory

REPO = Path(__file__).resolve().parents[1]

#: A job over images of growing sizes as an evaluation runs it: the model on each LR image, then the scorer on
#: its HR-sized output (PSNR and SSIM, whose float64 filtering allocates blocks of up to 360 MB). Random
#: weights: the allocations, not the scores, are under test. Prints the peak RSS and the base after start-up.
#: Measured here: glibc's default 0.78-0.84 GB, ``keep`` 1.10-1.52 GB, ``bounded`` (128 MiB line) 0.90 GB.
_JOB = r"""
import json, sys
def peak_kb():
    # This process's own high-water mark (VmHWM, per address space, new at exec). getrusage's ru_maxrss is not:
    # Linux carries the parent's peak across fork and exec, so a child of a large pytest starts "at" its peak.
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
from srcli.engine.host_memory import keep_freed_memory
applied = keep_freed_memory()
import torch
torch.set_num_threads(2)
from srcli.eval.protocol import score
from srcli.registry import get_model
model = get_model("rlfn").build(2).eval()
base = peak_kb()
g = torch.Generator().manual_seed(0)
with torch.inference_mode():
    for h, w in [(120, 160), (150, 200), (180, 240), (220, 260), (250, 300), (288, 360)]:
        sr = (model(torch.rand(1, 3, h, w, generator=g) * 255) / 255)[0].clamp(0, 1)
        hr = (torch.rand(3, 2 * h, 2 * w, generator=g) * 255).to(torch.uint8)
        score(sr, hr, 2)
peak = peak_kb()
print(json.dumps({"applied": applied, "base_kb": base, "peak_kb": peak}))
"""

#: One large image x4 through the bicubic "model" in 256 px tiles, kept as uint8: the whole float32 output
#: (``upscale_tensor``, then the float HWC array the image job makes) or bands (``upscale_to_array``).
_LARGE = r"""
import json, sys
def peak_kb():
    # This process's own high-water mark (VmHWM, per address space, new at exec). getrusage's ru_maxrss is not:
    # Linux carries the parent's peak across fork and exec, so a child of a large pytest starts "at" its peak.
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
import numpy as np
import torch
torch.set_num_threads(2)
from srcli.engine.upscale import EngineOptions, upscale_tensor, upscale_to_array
from srcli.hub.loading import load_model
from srcli.io.imagefile import quantize
loaded = load_model("bicubic", 4)
x = torch.rand(1, 3, 800, 1200, generator=torch.Generator().manual_seed(0))
base = peak_kb()
options = EngineOptions(tile=256)
if sys.argv[1] == "float":
    image = upscale_tensor(loaded, x, options).image
    out = quantize(np.ascontiguousarray(image[0].permute(1, 2, 0).numpy()), 8)
else:
    out, _ = upscale_to_array(loaded, x, options, bit_depth=8)
peak = peak_kb()
print(json.dumps({"base_kb": base, "peak_kb": peak, "checksum": int(out.astype(np.int64).sum())}))
"""


#: ``srcli upscale`` itself on one 1200 x 800 PNG, x4 through the bicubic "model" in 128 px tiles, the image job
#: from reading to the written file. Prints the peak RSS before the job (torch and srcli imported) and after.
_UPSCALE_JOB = r"""
import json, sys
def peak_kb():
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
import torch
torch.set_num_threads(2)
from srcli.cli import main
import srcli.engine.upscale, srcli.hub.loading, srcli.io.imagefile, srcli.pipeline.images
base = peak_kb()
code = main(["upscale", sys.argv[1], "-o", sys.argv[2], "-m", "bicubic", "-s", "4", "--tile", "128", "--device", "cpu"])
print(json.dumps({"code": code, "base_kb": base, "peak_kb": peak_kb()}))
"""


def _run(script: str, *args: str, tuning: str | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("SRCLI_MALLOC_TUNING", None)
    if tuning is not None:
        env["SRCLI_MALLOC_TUNING"] = tuning
    out = subprocess.run([sys.executable, "-c", script, *args], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _glibc() -> bool:
    return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


@pytest.mark.slow
@pytest.mark.skipif(not _glibc(), reason="the policies are glibc mallopt settings")
def test_default_policy_keeps_a_varied_job_within_1_5x_of_glibcs_default() -> None:
    """The issue's bound: peak resident memory with the default settings <= 1.5 x the peak with glibc's
    default behaviour, on a job over inputs of growing sizes. (The policy before issue 19, ``keep``: every block
    from the heap, never trimmed, reached 1.4-1.8x here, 1.9-2.3x on the Set14 evaluations: the scorer's large
    blocks leave holes that the next one does not fit. Not asserted: how far it grows depends on thread timing.)"""
    off = _run(_JOB, tuning="0")
    tuned = _run(_JOB)
    assert off["applied"] is False and tuned["applied"] is True
    assert tuned["peak_kb"] <= 1.5 * off["peak_kb"], (tuned, off)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the peak from /proc/self/status")
def test_banded_assembly_needs_a_fraction_of_the_whole_float_output() -> None:
    """4800 x 3200 output in 256 px tiles: the float path holds the float32 canvas, its weight sum, the
    division and the float HWC copy (hundreds of MB); bands hold one tile row and the uint8 result. Same
    samples either way; the banded job's growth above start-up is under half the float job's."""
    whole = _run(_LARGE, "float", tuning="0")
    banded = _run(_LARGE, "banded", tuning="0")
    assert banded["checksum"] == whole["checksum"]
    assert banded["peak_kb"] - banded["base_kb"] < 0.5 * (whole["peak_kb"] - whole["base_kb"]), (banded, whole)


@pytest.mark.parametrize(
    ("value", "name"),
    [("0", None), ("off", None), ("1", host_memory.DEFAULT_POLICY), ("", host_memory.DEFAULT_POLICY),
     ("keep", "keep"), ("KEEP", "keep"), ("no-such-policy", host_memory.DEFAULT_POLICY)],
)  # fmt: skip
def test_environment_picks_the_policy(monkeypatch: pytest.MonkeyPatch, value: str, name: str | None) -> None:
    monkeypatch.setenv("SRCLI_MALLOC_TUNING", value)
    assert host_memory.policy_name() == name


def test_default_policy_bounds_large_blocks() -> None:
    """The default serves blocks below its threshold from the heap (a forward pass reuses them) and maps the
    larger ones on their own, which ``free`` returns at once: no hole larger than the threshold can stay."""
    policy = host_memory.POLICIES[host_memory.DEFAULT_POLICY]
    assert policy.mmap_threshold is not None and policy.mmap_max is None
    assert policy.trim_threshold is not None and policy.trim_threshold >= policy.mmap_threshold


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the peak from /proc/self/status")
def test_image_job_never_holds_the_whole_float_output(tmp_path: Path) -> None:
    """The image job assembles a tiled output in bands kept at the file's depth: a 4800 x 3200 result (184 MB as
    float32 RGB, 46 MB as uint8) grows the job's peak by less than 1.5 x the float32 output. Holding the whole
    float output, as the job did before issue 19 (canvas, weight sum, HWC copy, quantised copy), grew it by
    about 3.5 x here (653 MB)."""
    import numpy as np
    from PIL import Image

    src = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (800, 1200, 3), dtype=np.uint8)).save(src)
    row = _run(_UPSCALE_JOB, str(src), str(tmp_path / "out.png"), tuning="0")
    assert row["code"] == 0
    with Image.open(tmp_path / "out.png") as out:
        assert out.size == (4800, 3200)
    float_output_kb = 4800 * 3200 * 3 * 4 / 1024
    assert row["peak_kb"] - row["base_kb"] < 1.5 * float_output_kb, row
