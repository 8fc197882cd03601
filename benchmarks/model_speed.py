"""Inference speed of any registry model: output megapixels per second per precision and input size.

Usage::

    python benchmarks/model_speed.py --model rgt --scale 4 --sizes 64,128 --precisions fp32,bf16 \\
        --threads 2 --batch 1 --device auto --weights golden [--warmup 1] [--repeats 5] [--cast] [--json]

The module comes from ``srcli.registry.get_model(name).build(scale)``; no download is needed:
``--weights random`` keeps the constructor's initialisation, ``--weights golden`` draws every parameter
from the conformance recipe (``tests/golden_recipe.py``; parameters the recipe has no rule for keep
their initialisation). Weights do not change the work done, only the values.

Each (size, precision) pair runs ``--warmup`` untimed passes, then ``--repeats`` timed ones (CUDA is
synchronised around each); the figure is the median. Reduced precision runs under autocast, as
``srcli`` does, or with the module and input cast to that dtype with ``--cast``. Inputs are square
``size x size`` LR images, so the output is ``batch * (scale * size)^2`` pixels per pass.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.golden_recipe

from srcli.registry import get_model  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def load_golden_weights(module: torch.nn.Module) -> int:
    """Overwrite every parameter the golden recipe has a rule for; returns how many were set."""
    from tests.golden_recipe import recipe_tensor

    done = 0
    with torch.no_grad():
        for name, param in module.named_parameters():
            try:
                value = recipe_tensor(name, tuple(param.shape))
            except ValueError:
                continue
            param.copy_(value)
            done += 1
    return done


def pick_device(choice: str) -> torch.device:
    """``auto``: CUDA if present, else CPU."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def device_name(device: torch.device) -> str:
    """``cpu (2 threads)`` or the CUDA card's name."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"{device.type} ({torch.get_num_threads()} threads)"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_model(
    module: torch.nn.Module,
    x: torch.Tensor,
    precision: str,
    cast: bool,
    warmup: int,
    repeats: int,
) -> list[float]:
    """Seconds per forward pass, ``repeats`` timings after ``warmup`` untimed passes."""
    device = x.device
    if precision != "fp32" and not cast:
        ctx: contextlib.AbstractContextManager = torch.autocast(device_type=device.type, dtype=DTYPES[precision])
    else:
        ctx = contextlib.nullcontext()
    times = []
    with torch.inference_mode(), ctx:
        for i in range(warmup + repeats):
            _sync(device)
            start = time.perf_counter()
            module(x)
            _sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--sizes", default="64,128", help="comma-separated LR input sides")
    parser.add_argument("--precisions", default="fp32", help="comma-separated: fp32, bf16, fp16")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--weights", choices=("golden", "random"), default="random")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cast", action="store_true", help="cast module and input instead of autocast")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    spec = get_model(args.model)
    module = spec.build(args.scale).eval()
    if args.weights == "golden":
        load_golden_weights(module)
    module.to(device)
    params = sum(p.numel() for p in module.parameters())
    lo, hi = spec.value_range

    rows = []
    for precision in args.precisions.split(","):
        if args.cast:
            module.to(DTYPES[precision])  # in place; restored to fp32 after this precision
        for size in (int(s) for s in args.sizes.split(",")):
            gen = torch.Generator().manual_seed(0)
            x = torch.rand(args.batch, 3, size, size, generator=gen) * (hi - lo) + lo
            x = x.to(device)
            if args.cast:
                x = x.to(DTYPES[precision])
            times = time_model(module, x, precision, args.cast, args.warmup, args.repeats)
            median = statistics.median(times)
            out_pixels = args.batch * (size * args.scale) ** 2
            rows.append(
                {
                    "size": size,
                    "precision": precision,
                    "median_s": median,
                    "min_s": min(times),
                    "out_mpix_per_s": out_pixels / median / 1e6,
                    "times_s": times,
                }
            )
        module.float()

    report = {
        "model": spec.name,
        "scale": args.scale,
        "params": params,
        "device": device_name(device),
        "batch": args.batch,
        "weights": args.weights,
        "mode": "cast" if args.cast else "autocast",
        "warmup": args.warmup,
        "repeats": args.repeats,
        "torch": torch.__version__,
        # torch defaults unless changed: TF32 off for matmuls, on for cuDNN convolutions.
        "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32},
        "results": rows,
    }
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(
            f"{spec.name} x{args.scale} ({params:,} params) on {report['device']}, batch {args.batch}, "
            f"{args.weights} weights, {report['mode']}; median of {args.repeats} after {args.warmup} warm-up"
        )
        print(f"{'LR size':>8} {'precision':>9} {'median s':>9} {'min s':>8} {'out MP/s':>9}")
        for r in rows:
            timing = f"{r['median_s']:>9.3f} {r['min_s']:>8.3f} {r['out_mpix_per_s']:>9.4f}"
            print(f"{r['size']:>8} {r['precision']:>9} {timing}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
