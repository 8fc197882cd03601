"""Pipeline efficiency of ``srcli upscale``: end-to-end wall time vs the model's forward passes alone.

    .venv/bin/python benchmarks/upscale_pipeline.py --model imdn --scale 4 --count 50

Takes ``--count`` images from the training set in ../shared (BSD200, then T91), copies them into a
temporary folder, then measures in one run:

1. model-only: the images decoded beforehand and kept in memory, the sum of the engine's forward
   passes over all of them (what the device has to do in any case);
2. end-to-end: ``srcli upscale`` (the library job the CLI runs) from the folder to an output folder,
   wall time including reading, PNG encoding and atomic writes.

and the model-only pass again after it (the mean of the two is the reference). The ratio
end-to-end / model-only is the pipeline's overhead (1.0 = I/O fully hidden).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from srcli.engine.devices import pick_device, resolve_precision
from srcli.engine.inference import optimise_for_inference
from srcli.engine.options import RunOptions
from srcli.engine.upscale import EngineOptions, upscale_tensor
from srcli.hub.loading import load_model
from srcli.io.imagefile import read_image
from srcli.pipeline.image_plan import plan_images
from srcli.pipeline.images import run_job
from srcli.pipeline.job import ImageOptions

SHARED = Path(__file__).resolve().parents[2] / "shared"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="imdn")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--weights", default=None, help="checkpoint file (default: the pinned one, from the cache)")
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--io-workers", type=int, default=2)
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "train")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    # As the CLI does (srcli.engine.host_memory); SRCLI_MALLOC_TUNING=0 measures glibc's default instead.
    from srcli.cli.common import tune_host_memory

    if args.threads:
        torch.set_num_threads(args.threads)

    sources = sorted((args.data / "BSD200").glob("*")) + sorted((args.data / "T91").glob("*"))
    sources = [p for p in sources if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".bmp"}][: args.count]
    if len(sources) < args.count:
        raise SystemExit(f"only {len(sources)} images under {args.data}")
    device = pick_device(args.device)
    malloc_tuned = tune_host_memory() if device.type == "cpu" else False
    weights = args.weights
    if weights is None and args.model in ("imdn", "rlfn", "rlfn-s"):
        local = {"imdn": f"IMDN_x{args.scale}.pth", "rlfn": f"rlfn_x{args.scale}.pth"}.get(args.model)
        if local and (SHARED / "weights" / local).is_file():
            weights = str(SHARED / "weights" / local)
    loaded = load_model(args.model, args.scale, weights=weights, device=str(device))
    # The job stores CNN weights channels-last; do it here too so both passes run the same layout.
    loaded = optimise_for_inference(loaded, device)
    precision = resolve_precision(loaded.spec, device, args.precision)
    engine = EngineOptions(precision=precision)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        for src in sources:
            shutil.copy(src, folder / src.name)
        decoded = [read_image(p) for p in sorted(folder.iterdir())]
        pixels = sum(d.size[0] * d.size[1] for d in decoded)

        # Warm-up (first-call allocations, cuDNN autotuning) on the first image.
        x0 = torch.from_numpy(np.ascontiguousarray(decoded[0].frames[0].rgb)).permute(2, 0, 1)[None].to(device)
        upscale_tensor(loaded, x0, engine)

        def model_only_pass() -> float:
            total = 0.0
            for d in decoded:
                x = torch.from_numpy(np.ascontiguousarray(d.frames[0].rgb)).permute(2, 0, 1)[None].to(device)
                total += upscale_tensor(loaded, x, engine).seconds
            return total

        # Model-only before and after the job, so a drift in machine load shows instead of biasing the ratio.
        model_only_before = model_only_pass()

        options = ImageOptions(
            run=RunOptions(
                model=args.model, scale=args.scale, weights=weights, device=str(device), precision=precision
            ),
            output=Path(tmp) / "out",
            io_workers=args.io_workers,
        )
        t0 = time.perf_counter()
        report = run_job(plan_images([str(folder)], options), loaded=loaded)
        wall = time.perf_counter() - t0
        if report.count("done") != len(decoded):
            raise SystemExit(f"job failed: {report.to_dict()}")
        model_only_after = model_only_pass()
    model_only = (model_only_before + model_only_after) / 2

    figures = {
        "model": args.model,
        "scale": args.scale,
        "device": str(device),
        "host_malloc_tuned": malloc_tuned,
        "threads": torch.get_num_threads(),
        "io_workers": args.io_workers,
        "precision": precision,
        "images": len(decoded),
        "input_megapixels": round(pixels / 1e6, 3),
        "model_only_s": round(model_only, 2),
        "model_only_before_s": round(model_only_before, 2),
        "model_only_after_s": round(model_only_after, 2),
        "end_to_end_s": round(wall, 2),
        "model_s_inside_job": round(report.model_seconds, 2),
        "efficiency_ratio": round(wall / model_only, 3),
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
