"""Scale-out overhead: one image job through one process, through ``--devices`` workers and through Ray.

    .venv/bin/python benchmarks/scale_out.py --count 40 --crop 96x64 --rounds 3 \\
        --json benchmarks/results/scale_out_cpu_$(date +%F).json

Takes ``--count`` PNGs from ../shared/data/train/BSD200 (sorted by name), centre-cropped to ``--crop`` (so the
run takes minutes, not hours, on two cores), into a temporary folder, and runs the same plan (IMDN x4, the
official checkpoint from ../shared/weights) through:

1. ``one``: ``run_job`` in this process with ``--one-threads`` torch threads (2: every core);
2. ``devices``: ``run_job_on_devices`` with ``--devices`` (``cpu,cpu``: two worker processes, 1 thread each);
3. ``ray``: ``run_job_on_ray`` on a local Ray started for it with ``--ray-cpus`` CPUs (one 1-thread actor each);
4. ``one_1t`` (a control): ``run_job`` in this process with 1 thread.

Each round runs the three in a rotated order (drift on a shared machine then falls on each alike), and each
throughput is given as a ratio of the ``one`` run of the same round. Two throughputs per run:

- ``processing``: images / the report's ``seconds``, from the moment every worker has its model loaded to the
  last result (what ``srcli upscale`` prints as images/s; for ``one``, from after the model load);
- ``end_to_end``: images / wall time of the whole call, start-up included (spawning the workers, starting Ray,
  loading each model).

The control shows what the machine does to a multi-threaded baseline: on a shared machine under load, a 2-thread
torch job spends much of its CPU time in OpenMP barriers waiting for its descheduled other thread, and ``one`` then
falls far below 2 x ``one_1t``; ``vs_one_thread_per_worker`` (throughput / (workers x ``one_1t``)) is the overhead
measure that load does not distort that way. Each run's CPU time (``cpu_s``, this process only for ``one``) is
recorded too.

The goals (issue 16) are on processing throughput: devices >= 0.95, Ray >= 0.85 of one process, as the cores
are the same and only the executor's overhead differs. On a GPU machine: ``--one-device cuda:0 --devices all``
and ``--ray-cpus`` left out (Ray then finds the GPUs).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

SHARED = Path(__file__).resolve().parents[2] / "shared"


def prepare_inputs(source: Path, count: int, crop: tuple[int, int], folder: Path) -> list[str]:
    """``count`` PNGs from ``source``, centre-cropped to ``crop`` (width, height), written into ``folder``."""
    from PIL import Image

    files = sorted(source.glob("*.png"))[:count]
    if len(files) < count:
        raise SystemExit(f"{source}: {len(files)} PNG files, {count} wanted")
    folder.mkdir(parents=True, exist_ok=True)
    w, h = crop
    for path in files:
        with Image.open(path) as im:
            left, top = max(0, (im.width - w) // 2), max(0, (im.height - h) // 2)
            im.convert("RGB").crop((left, top, left + w, top + h)).save(folder / path.name)
    return [p.name for p in files]


def run_one(kind: str, src: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One executor over the folder: its report's figures and wall time."""
    from srcli.engine.options import RunOptions
    from srcli.pipeline.image_plan import plan_images
    from srcli.pipeline.job import ImageOptions

    run = RunOptions(model="imdn", scale=4, weights=str(args.weights), offline=True, threads=1)
    if kind == "one":
        run = replace(run, threads=args.one_threads, device=args.one_device)
    elif kind == "one_1t":
        run = replace(run, device=args.one_device)
    plan = plan_images([str(src)], ImageOptions(run=run, output=out, io_workers=args.io_workers))
    t0 = time.perf_counter()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    if kind in ("one", "one_1t"):
        from srcli.pipeline.images import run_job

        report = run_job(plan)
    elif kind == "devices":
        from srcli.pipeline.device_pool import parse_devices, run_job_on_devices

        report = run_job_on_devices(plan, parse_devices(args.devices))
    else:
        from srcli.pipeline.ray_executor import run_job_on_ray

        report = run_job_on_ray(plan, "local", num_cpus=args.ray_cpus)
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    done = report.count("done")
    if done != len(plan.items):
        raise SystemExit(f"{kind}: {done} of {len(plan.items)} images done")
    entry: dict[str, Any] = {
        "device": report.device,
        "images": done,
        "processing_s": round(report.seconds, 3),
        "wall_s": round(wall, 3),
        "images_per_s": round(done / report.seconds, 4),
        "end_to_end_images_per_s": round(done / wall, 4),
        "model_s": round(report.model_seconds, 3),
    }
    if kind in ("one", "one_1t"):
        entry["cpu_s"] = round(cpu1.ru_utime - cpu0.ru_utime + cpu1.ru_stime - cpu0.ru_stime, 3)
    workers = getattr(report, "workers", None)
    if workers:
        entry["retries"] = report.retries
        entry["workers"] = [
            {"device": w.description, "images": w.images, "seconds": round(w.seconds, 3)} for w in workers
        ]
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--crop", default="96x64", help="WIDTHxHEIGHT of the centre crop")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "train" / "BSD200")
    parser.add_argument("--weights", type=Path, default=SHARED / "weights" / "IMDN_x4.pth")
    parser.add_argument("--one-threads", type=int, default=2, help="torch threads of the one-process run")
    parser.add_argument("--one-device", default="cpu")
    parser.add_argument("--devices", default="cpu,cpu", help="--devices of the worker-process run")
    parser.add_argument("--ray-cpus", type=int, default=2, help="CPUs of the local Ray (0: Ray's own count)")
    parser.add_argument("--io-workers", type=int, default=1, help="reader/writer threads (the CLI's default here)")
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    args.ray_cpus = args.ray_cpus or None
    crop = tuple(int(v) for v in args.crop.lower().split("x"))
    from srcli.cli.common import tune_host_memory

    tune_host_memory()  # as the CLI does on the CPU (the workers do it themselves)
    kinds = ["one", "devices"] + ([] if args.skip_ray else ["ray"]) + ["one_1t"]
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="srcli-scale-out-") as tmp:
        src = Path(tmp) / "in"
        names = prepare_inputs(args.data, args.count, crop, src)  # type: ignore[arg-type]
        for r in range(args.rounds):
            order = kinds[r % len(kinds) :] + kinds[: r % len(kinds)]
            figures: dict[str, Any] = {"order": order, "load_before": os.getloadavg()[0]}
            for kind in order:
                figures[kind] = run_one(kind, src, Path(tmp) / f"out-{r}-{kind}", args)
                print(f"round {r + 1} {kind:8s} {json.dumps(figures[kind])}", flush=True)
            figures["load_after"] = os.getloadavg()[0]
            base = figures["one"]
            single = figures["one_1t"]
            figures["ratios"] = {
                kind: {
                    "processing": round(figures[kind]["images_per_s"] / base["images_per_s"], 4),
                    "end_to_end": round(figures[kind]["end_to_end_images_per_s"] / base["end_to_end_images_per_s"], 4),
                    "vs_one_thread_per_worker": round(
                        figures[kind]["images_per_s"] / (len(figures[kind]["workers"]) * single["images_per_s"]), 4
                    ),
                }
                for kind in kinds
                if kind not in ("one", "one_1t")
            }
            rounds.append(figures)
    summary = {
        kind: {
            measure: round(statistics.median(r["ratios"][kind][measure] for r in rounds), 4)
            for measure in ("processing", "end_to_end", "vs_one_thread_per_worker")
        }
        for kind in kinds
        if kind not in ("one", "one_1t")
    }
    goals = {"devices": 0.95, "ray": 0.85}
    result = {
        "benchmark": "scale_out",
        "date": datetime.date.today().isoformat(),
        "command": "benchmarks/scale_out.py "
        + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("json", "data", "weights")
        ),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "note": "a shared machine: load averages per round are recorded; see the module docstring on one vs one_1t",
        "model": "imdn",
        "scale": 4,
        "weights": args.weights.name,
        "images": len(names),
        "crop": list(crop),
        "inputs": names,
        "rounds": rounds,
        "median_ratios": summary,
        "goals_processing": goals,
        "goals_met": {kind: summary[kind]["processing"] >= goals[kind] for kind in summary},
    }
    print(json.dumps({"median_ratios": summary, "goals_met": result["goals_met"]}, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"written {args.json}")


if __name__ == "__main__":
    main()
