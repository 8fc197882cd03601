"""Peak resident memory and time of CPU jobs under each host-memory remedy, each run in a fresh process.

Usage::

    .venv/bin/python benchmarks/cpu_memory.py evals [--evals rlfn:2:Set14,rlfn:4:Set14]
        [--remedies default,keep,bounded,...] [--rounds 2] [--threads 2] [--json FILE]
    .venv/bin/python benchmarks/cpu_memory.py photo [--size 3000x2000] [--modes float,banded]
        [--remedies default,keep,bounded] [--precision auto] [--json FILE]

**evals**: one ``srcli.evaluate`` run (fp32, the papers' whole-image protocol, what ``srcli eval`` runs) per
(evaluation, remedy) in a child process that applies the remedy first, as the CLI does. ``default`` is glibc's
own behaviour (``SRCLI_MALLOC_TUNING=0``); ``keep`` (before issue 19), ``trim``, ``bounded`` (the default) and
``bounded-256`` are the policies of ``srcli.engine.host_memory``; a ``+2dssim`` suffix swaps the scorer's
separable SSIM filter for the earlier 2-D one (see ``_FULL_WINDOW_SSIM``); ``jemalloc`` / ``tcmalloc`` preload
the system's library where one is installed (no wheel of either can be pinned: reported
for comparison only). Each child reports its peak resident memory (``getrusage`` ``ru_maxrss``), the time of
the evaluation, and after each image the heap's size, its live and free bytes (glibc ``mallinfo2``) and the
resident memory: the free bytes are the holes that make the heap grow. Rounds run every remedy once each,
in turn, so machine load hits all alike; the summary takes each remedy's median time and highest peak.
Urban100 is not on this machine: ``rlfn:4:Set14`` (14 images of 250-768 px) stands in for RLFN x4 on 8
Urban100 images.

**photo**: a 3000 x 2000 JPEG (made from a BSD200 photo, bicubic-enlarged, with film grain, once, in
``--workdir``) upscaled x4 with the default model on the CPU as the image job does it, read to written:
``float`` is the job today (``upscale_tensor``, the whole float32 output, quantised by the writer);
``banded`` is ``upscale_to_array`` (the output assembled in bands and kept as uint8); ``cli`` runs
``srcli upscale`` itself. Peak resident memory and seconds per (mode, remedy).

Figures from a machine shared with other work are noisy in time, not in memory.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
WEIGHTS = {"rlfn": "rlfn_x{scale}.pth", "rlfn-s": "rlfn_s_x{scale}.pth", "imdn": "IMDN_x{scale}.pth"}
PRELOADS = {
    "jemalloc": ("libjemalloc.so.2",),
    "tcmalloc": ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4"),
}

_HEAP = r"""
import ctypes, os, resource
_libc = ctypes.CDLL(None)
_names = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")
_info = getattr(_libc, "mallinfo2", None)
if _info is not None:
    _info.restype = type("MallInfo2", (ctypes.Structure,), {"_fields_": [(n, ctypes.c_size_t) for n in _names]})
def heap():
    rss = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    usage = resource.getrusage(resource.RUSAGE_SELF)
    row = {"rss_mb": rss / 2**20, "peak_mb": usage.ru_maxrss / 1024, "user_s": usage.ru_utime,
           "system_s": usage.ru_stime, "minor_faults": usage.ru_minflt}
    if _info is not None:
        m = _info()
        row.update(heap_mb=m.arena / 2**20, live_mb=m.uordblks / 2**20, free_mb=m.fordblks / 2**20,
                   mmapped_mb=m.hblkhd / 2**20)
    return row
"""

#: ``+2dssim`` remedies: the scorer's SSIM as it was before issue 19, filtering by the 11 x 11 window in one 2-D
#: convolution, whose float64 unfolding buffer is 121 columns wide (366 MB for a 716 x 572 Y plane, five per
#: image) where the separable filter of ``srcli.eval.metrics.ssim_maps`` needs 11: the blocks that made the
#: heap grow. Same moments, float64; SSIM agrees to about 1e-12.
_FULL_WINDOW_SSIM = r"""
import torch
import torch.nn.functional as F
import srcli.eval.metrics as metrics
import srcli.eval.protocol as protocol

def full_window_ssim(a, b, peak=255.0):
    a, b = metrics._check_pair(a, b)
    c1, c2 = (metrics._SSIM_K1 * peak) ** 2, (metrics._SSIM_K2 * peak) ** 2
    g = metrics.gaussian_taps(a.device)
    win = torch.outer(g, g)[None, None]
    x, y = a[None, None], b[None, None]
    def filt(t):
        return F.conv2d(t, win)
    mu1, mu2 = filt(x), filt(y)
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    sigma1_sq, sigma2_sq, sigma12 = filt(x * x) - mu1_sq, filt(y * y) - mu2_sq, filt(x * y) - mu12
    num = (2 * mu12 + c1) * (2 * sigma12 + c2)
    den = (mu1_sq + mu2_sq + c1) * (sigma1_sq + sigma2_sq + c2)
    return (num / den).mean().item()

protocol.ssim = full_window_ssim
"""

_EVAL = (
    _HEAP
    + r"""
import json, os, sys, time
from srcli.engine.host_memory import keep_freed_memory
applied = keep_freed_memory()
import torch
if os.environ.get("BENCH_FULL_WINDOW_SSIM") == "1":
    exec(FULL_WINDOW)
model, scale, data, weights, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] or None, int(sys.argv[5])
torch.set_num_threads(threads)
from srcli.eval.runner import evaluate
images = []
def progress(done, total, name):
    images.append({"image": name, **heap()})
start = heap()
started = time.perf_counter()
result = evaluate(model, scale=scale, data_dir=data, weights=weights, precision="fp32", device="cpu",
                  offline=True, progress=progress)
seconds = time.perf_counter() - started
end = heap()
cpu = {k: end[k] - start[k] for k in ("user_s", "system_s", "minor_faults")}
print(json.dumps({"applied": applied, "seconds": seconds, "cpu_s": cpu["user_s"] + cpu["system_s"], "eval": cpu,
                  "psnr": result.psnr, "ssim": result.ssim, "images": images, **end}))
"""
).replace("exec(FULL_WINDOW)", f"exec({_FULL_WINDOW_SSIM!r})")

_PHOTO = (
    _HEAP
    + r"""
import json, sys, time
from srcli.engine.host_memory import keep_freed_memory
applied = keep_freed_memory()
import numpy as np
import torch
mode, src, dst, precision, threads = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
torch.set_num_threads(threads)
from srcli.engine.options import RunOptions, resolve_run
from srcli.engine.upscale import prepare_for_job, upscale_tensor, upscale_to_array
from srcli.io.imagefile import Frame, read_image, write_image_atomic
resolved = resolve_run(RunOptions(device="cpu", precision=precision, offline=True))
loaded, engine = prepare_for_job(resolved.load(), resolved.device, resolved.engine)
start = heap()
started = time.perf_counter()
decoded = read_image(src, max_pixels=None)
x = torch.from_numpy(np.ascontiguousarray(decoded.frames[0].rgb.transpose(2, 0, 1)))[None]
if mode == "float":
    result = upscale_tensor(loaded, x, engine)
    rgb = np.ascontiguousarray(result.image[0].permute(1, 2, 0).float().cpu().numpy())
    del result
    tile = None
else:
    rgb, result = upscale_to_array(loaded, x, engine, bit_depth=decoded.bit_depth)
    tile = result.tile
model_seconds = time.perf_counter() - started
write_image_atomic(dst, [Frame(rgb=rgb, alpha=None)], grey=decoded.grey, bit_depth=decoded.bit_depth, fmt="JPEG",
                   quality=95)
seconds = time.perf_counter() - started
end = heap()
print(json.dumps({"applied": applied, "precision": resolved.precision, "model": resolved.spec.name,
                  "seconds": seconds, "cpu_s": end["user_s"] + end["system_s"] - start["user_s"] - start["system_s"],
                  "system_s": end["system_s"] - start["system_s"], "read_and_model_seconds": model_seconds,
                  "tile": tile, "out_dtype": str(rgb.dtype), **heap()}))
"""
)


def find_library(names: tuple[str, ...]) -> str | None:
    """The first of ``names`` in the usual library folders, or ``None``."""
    for folder in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib"):
        for name in names:
            path = Path(folder) / name
            if path.exists():
                return str(path)
    return None


def remedy_env(remedy: str) -> dict[str, str] | None:
    """The child's environment for ``remedy`` (``None``: not available here); a ``+2dssim`` suffix also swaps
    the scorer's separable SSIM filtering for the earlier 2-D one (evaluations only)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("LD_PRELOAD", None)
    env.pop("BENCH_FULL_WINDOW_SSIM", None)
    remedy, _, extra = remedy.partition("+")
    if extra == "2dssim":
        env["BENCH_FULL_WINDOW_SSIM"] = "1"
    if remedy == "default":
        env["SRCLI_MALLOC_TUNING"] = "0"
    elif remedy in PRELOADS:
        library = find_library(PRELOADS[remedy])
        if library is None:
            return None
        env.update(SRCLI_MALLOC_TUNING="0", LD_PRELOAD=library)
    else:
        env["SRCLI_MALLOC_TUNING"] = remedy
    return env


def child(script: str, args: list[object], env: dict[str, str]) -> dict[str, Any]:
    """Run ``script`` in a fresh interpreter; its last output line is JSON."""
    out = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)], env=env, check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per remedy: median seconds, highest peak, and both relative to ``default`` and to ``keep``."""
    table: dict[str, dict[str, Any]] = {}
    for remedy, rows in runs.items():
        table[remedy] = {
            "seconds": statistics.median(r["seconds"] for r in rows),
            "cpu_s": statistics.median(r.get("cpu_s", r["seconds"]) for r in rows),
            "system_s": statistics.median(r.get("eval", {}).get("system_s", 0.0) for r in rows),
            "peak_mb": max(r["peak_mb"] for r in rows),
            "runs": len(rows),
        }
    base = table.get("default")
    keep = table.get("keep")
    for remedy, row in table.items():
        if base:
            row["peak_vs_default"] = row["peak_mb"] / base["peak_mb"]
            row["speedup_vs_default"] = base["seconds"] / row["seconds"]
        # A remedy that changes the scorer is also compared with glibc's default under the same scorer.
        same_scorer = table.get("default+2dssim" if remedy.endswith("+2dssim") else "default")
        if same_scorer:
            row["peak_vs_default_same_scorer"] = row["peak_mb"] / same_scorer["peak_mb"]
        for key in ("seconds", "cpu_s"):
            if base and keep and base[key] > keep[key]:
                # Share of keep's saving over glibc's default (wall time, CPU time) that this remedy keeps.
                row[f"share_of_keep_gain_{key}"] = (base[key] - row[key]) / (base[key] - keep[key])
    return table


def run_evals(args: argparse.Namespace) -> dict[str, Any]:
    """The evaluations x remedies x rounds; returns the report."""
    doc: dict[str, Any] = {"evaluations": {}}
    for item in args.evals.split(","):
        model, scale_text, dataset = item.split(":")
        scale = int(scale_text)
        weights = str(SHARED / "weights" / WEIGHTS[model].format(scale=scale)) if model in WEIGHTS else ""
        data = SHARED / "data" / "benchmarks" / dataset
        runs: dict[str, list[dict[str, Any]]] = {}
        for round_ in range(args.rounds):
            for remedy in args.remedies.split(","):
                env = remedy_env(remedy)
                if env is None:
                    print(f"{item} {remedy}: library not installed, skipped", flush=True)
                    continue
                row = child(_EVAL, [model, scale, data, weights, args.threads], env)
                runs.setdefault(remedy, []).append(row)
                print(
                    f"{item} round {round_ + 1} {remedy}: {row['seconds']:.1f} s (CPU {row['cpu_s']:.1f} s, system "
                    f"{row['eval']['system_s']:.1f} s), peak {row['peak_mb']:.0f} MB "
                    f"(heap {row.get('heap_mb', 0):.0f} MB: live {row.get('live_mb', 0):.0f}, free "
                    f"{row.get('free_mb', 0):.0f}), PSNR {row['psnr']:.4f}, SSIM {row['ssim']:.6f}",
                    flush=True,
                )
        summary = summarise(runs)
        doc["evaluations"][item] = {"summary": summary, "runs": runs}
        for remedy, s in summary.items():
            print(
                f"{item} {remedy}: {s['seconds']:.1f} s (CPU {s['cpu_s']:.1f} s), peak {s['peak_mb']:.0f} MB, "
                f"x{s.get('peak_vs_default', 0):.2f} of default's peak (x{s.get('peak_vs_default_same_scorer', 0):.2f} "
                f"of default's with the same scorer), share of keep's gain: "
                f"{s.get('share_of_keep_gain_seconds', float('nan')):.2f} (wall), "
                f"{s.get('share_of_keep_gain_cpu_s', float('nan')):.2f} (CPU)",
                flush=True,
            )
        if args.json:
            args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return doc


def make_photo(path: Path, width: int, height: int) -> None:
    """A ``width`` x ``height`` JPEG from a BSD200 photo: bicubic enlargement plus film grain (deterministic)."""
    import numpy as np
    from PIL import Image

    source = sorted((SHARED / "data" / "train" / "BSD200").glob("*"))[0]
    with Image.open(source) as im:
        big = im.convert("RGB").resize((width, height), Image.Resampling.BICUBIC)
    grain = np.random.default_rng(0).normal(0.0, 6.0, (height, width, 1))
    pixels = np.clip(np.asarray(big, dtype=np.float32) + grain, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=92)


def run_photo(args: argparse.Namespace) -> dict[str, Any]:
    """The photo job per mode x remedy x round; returns the report."""
    width, height = (int(v) for v in args.size.lower().split("x"))
    args.workdir.mkdir(parents=True, exist_ok=True)
    src = args.workdir / f"photo_{width}x{height}.jpg"
    if not src.exists():
        make_photo(src, width, height)
    runs: dict[str, list[dict[str, Any]]] = {}
    for round_ in range(args.rounds):
        for mode in args.modes.split(","):
            for remedy in args.remedies.split(","):
                env = remedy_env(remedy)
                if env is None:
                    continue
                dst = args.workdir / f"out_{mode}_{remedy}.jpg"
                if mode == "cli":
                    started = time.perf_counter()
                    cmd = [
                        "/usr/bin/time", "-f", "%M %U %S", sys.executable, "-m", "srcli", "upscale", str(src),
                        "-o", str(dst), "--device", "cpu", "--precision", args.precision, "--overwrite",
                    ]  # fmt: skip
                    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
                    peak_kb, user_s, system_s = done.stderr.strip().splitlines()[-1].split()
                    # The whole process: start-up and model loading included, unlike the in-process modes.
                    row = {
                        "seconds": time.perf_counter() - started,
                        "peak_mb": int(peak_kb) / 1024,
                        "cpu_s": float(user_s) + float(system_s),
                        "system_s": float(system_s),
                    }
                else:
                    row = child(_PHOTO, [mode, src, dst, args.precision, args.threads], env)
                runs.setdefault(f"{mode}/{remedy}", []).append(row)
                print(
                    f"photo {width}x{height} x4 round {round_ + 1} {mode}/{remedy}: {row['seconds']:.1f} s "
                    f"(CPU {row.get('cpu_s', float('nan')):.1f} s, system {row.get('system_s', float('nan')):.1f} s), "
                    f"peak {row['peak_mb']:.0f} MB ({row.get('precision', args.precision)}, tile "
                    f"{row.get('tile')})",
                    flush=True,
                )
                if args.json:
                    args.json.write_text(json.dumps({"photo": {"size": [width, height], "runs": runs}}, indent=2))
    summary = {
        key: {
            "seconds": statistics.median(r["seconds"] for r in rows),
            "cpu_s": statistics.median(r.get("cpu_s", r["seconds"]) for r in rows),
            "peak_mb": max(r["peak_mb"] for r in rows),
        }
        for key, rows in runs.items()
    }
    for key, s in summary.items():
        print(f"photo {key}: {s['seconds']:.1f} s (CPU {s['cpu_s']:.1f} s), peak {s['peak_mb']:.0f} MB", flush=True)
    return {"photo": {"size": [width, height], "summary": summary, "runs": runs}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    ev = sub.add_parser("evals", help="srcli.evaluate per remedy")
    ev.add_argument("--evals", default="rlfn:2:Set14,rlfn:4:Set14", help="model:scale:dataset, comma-separated")
    ev.add_argument(
        "--remedies",
        default="default,keep,trim,bounded,bounded-256,default+2dssim,keep+2dssim,bounded+2dssim,jemalloc,tcmalloc",
    )
    ph = sub.add_parser("photo", help="a large photo x4 with the default model")
    ph.add_argument("--size", default="3000x2000")
    ph.add_argument("--modes", default="float,banded")
    ph.add_argument("--remedies", default="default,keep,bounded")
    ph.add_argument("--precision", default="auto")
    ph.add_argument("--workdir", type=Path, default=Path("/tmp/srcli_cpu_memory"))
    for p in (ev, ph):
        p.add_argument("--rounds", type=int, default=1)
        p.add_argument("--threads", type=int, default=2)
        p.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    doc = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "threads": args.threads,
        "note": "shared 2-core machine: times are noisy (each remedy's median over rounds), peaks are not",
    }
    doc.update(run_evals(args) if args.what == "evals" else run_photo(args))
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
