"""CPU forward passes with glibc's default allocation against ``srcli.engine.host_memory.keep_freed_memory``.

    .venv/bin/python benchmarks/host_malloc.py --model imdn --scale 2 --sizes 128,256,480 --threads 2

For each input size, two fresh processes (the setting is process-wide and must come before the first large
allocation) build the model with random weights, run one warm-up pass and ``--iters`` timed passes, and
report the median pass, the process's kernel (system) and user CPU time and its peak resident memory.
The pair runs one after the other at each size, so machine load hits both alike.

``--mixed 480,320,480,...`` runs that sequence of input sizes in one process per setting instead and reports
each pass's time and the resident memory after it (does the kept heap keep growing over a long job?).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_CHILD = r"""
import json, resource, statistics, sys, time
import torch
from srcli.engine.host_memory import keep_freed_memory
from srcli.engine.bench import build_model
tuned = keep_freed_memory()
model, scale, size, iters, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)
module = build_model(model, scale, torch.device("cpu")).module
x = torch.rand(1, 3, size, size)
times = []
with torch.inference_mode():
    module(x)
    for _ in range(iters):
        t = time.perf_counter()
        module(x)
        times.append(time.perf_counter() - t)
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"tuned": tuned, "median_s": statistics.median(times), "system_s": usage.ru_stime,
                  "user_s": usage.ru_utime, "max_rss_mb": usage.ru_maxrss / 1024}))
"""


_MIXED = r"""
import json, resource, sys, time, torch
from srcli.engine.host_memory import keep_freed_memory
from srcli.engine.bench import build_model
tuned = keep_freed_memory()
model, scale, sizes, threads = sys.argv[1], int(sys.argv[2]), [int(v) for v in sys.argv[3].split(",")], int(sys.argv[4])
torch.set_num_threads(threads)
module = build_model(model, scale, torch.device("cpu")).module
passes = []
with torch.inference_mode():
    for size in sizes:
        t = time.perf_counter()
        module(torch.rand(1, 3, size, size))
        seconds = time.perf_counter() - t
        rss_mb = int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        passes.append({"size": size, "seconds": seconds, "rss_mb": rss_mb, "peak_mb": peak_mb})
print(json.dumps({"tuned": tuned, "passes": passes}))
"""


def _child(script: str, args: list[object], tuned: bool) -> dict:
    """Run ``script`` in a fresh process (the allocator setting must precede its first large block)."""
    env = {**os.environ, "SRCLI_MALLOC_TUNING": "1" if tuned else "0", "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)], env=env, check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def run(model: str, scale: int, size: int, iters: int, threads: int, tuned: bool) -> dict:
    """One child process; returns its measurements."""
    return _child(_CHILD, [model, scale, size, iters, threads], tuned)


def run_mixed(model: str, scale: int, sizes: str, threads: int, tuned: bool) -> dict:
    """One child process over the sequence ``sizes``; returns each pass's time and memory."""
    return _child(_MIXED, [model, scale, sizes, threads], tuned)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="imdn")
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--sizes", default="128,256,480")
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mixed", help="comma-separated input sizes run in sequence in one process per setting")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.mixed:
        doc = {
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "default": run_mixed(args.model, args.scale, args.mixed, args.threads, tuned=False),
            "keep_freed_memory": run_mixed(args.model, args.scale, args.mixed, args.threads, tuned=True),
        }
        for key in ("default", "keep_freed_memory"):
            line = ", ".join(f"{p['size']}: {p['seconds']:.2f} s / {p['rss_mb']:.0f} MB" for p in doc[key]["passes"])
            print(f"{key}: {line}; peak {doc[key]['passes'][-1]['peak_mb']:.0f} MB", flush=True)
        if args.json:
            args.json.write_text(json.dumps(doc, indent=2) + "\n")
        return 0
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        plain = run(args.model, args.scale, size, args.iters, args.threads, tuned=False)
        tuned = run(args.model, args.scale, size, args.iters, args.threads, tuned=True)
        row = {
            "size": size,
            "default": plain,
            "keep_freed_memory": tuned,
            "speedup": plain["median_s"] / tuned["median_s"],
            "us_per_input_pixel": {
                "default": plain["median_s"] / size**2 * 1e6,
                "keep_freed_memory": tuned["median_s"] / size**2 * 1e6,
            },
        }
        rows.append(row)
        print(
            f"{args.model} x{args.scale} {size}x{size}: default {plain['median_s']:.3f} s "
            f"(system {plain['system_s']:.1f} s, peak {plain['max_rss_mb']:.0f} MB), kept {tuned['median_s']:.3f} s "
            f"(system {tuned['system_s']:.1f} s, peak {tuned['max_rss_mb']:.0f} MB): x{row['speedup']:.2f}",
            flush=True,
        )
    if args.json:
        doc = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "threads": args.threads, "rows": rows}
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
