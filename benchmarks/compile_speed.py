"""Eager against ``torch.compile``: output agreement and speed of each model, in one process.

For every model named: build it (random weights, or the goldens' recipe weights with ``--weights golden``
for RGT / ASID), run one synthetic input batch eagerly and compiled, report the largest output difference
and the compile time, then time both alternately (``--rounds`` rounds of ``--iters`` runs each, so load on a
shared machine hits both alike) and report the median of each and their ratio.

    .venv/bin/python benchmarks/compile_speed.py --models rgt-s,asid,imdn --size 64 --threads 2
    python3 benchmarks/compile_speed.py --device cuda --precision bf16 --models rgt,rgt-s,asid --size 128 --batch 8

Ratios on the CPU are this machine's; absolute times only from a GPU (state the device).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from srcli.engine.bench import build_model  # noqa: E402
from srcli.engine.inference import Precision, forward_whole, optimise_for_inference  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, x: torch.Tensor, device: torch.device, iters: int) -> list[float]:
    times = []
    for _ in range(iters):
        _sync(device)
        start = time.perf_counter()
        fn(x)
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def measure(
    name: str,
    scale: int,
    size: int,
    batch: int,
    device: torch.device,
    precision: Precision,
    rounds: int,
    iters: int,
    mode: str | None,
) -> dict:
    """One model: agreement of compiled with eager output, compile time, and the two medians."""
    loaded = build_model(name, scale, device)
    loaded = optimise_for_inference(loaded, device)
    compiled = optimise_for_inference(loaded, device, compile=True, compile_mode=mode)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, size, size, generator=gen).to(device)

    def eager(t: torch.Tensor) -> torch.Tensor:
        return forward_whole(loaded, t, precision)

    def fast(t: torch.Tensor) -> torch.Tensor:
        return forward_whole(compiled, t, precision)

    ref = eager(x)
    start = time.perf_counter()
    out = fast(x)
    _sync(device)
    compile_s = time.perf_counter() - start
    diff = (out.float() - ref.float()).abs()
    eager_t: list[float] = []
    fast_t: list[float] = []
    eager(x)
    fast(x)
    for _ in range(rounds):
        eager_t += _timed(eager, x, device, iters)
        fast_t += _timed(fast, x, device, iters)
    e, f = statistics.median(eager_t), statistics.median(fast_t)
    out_mp = batch * (size * scale) ** 2 / 1e6
    return {
        "model": name,
        "scale": scale,
        "input": f"{batch} x {size}x{size}",
        "precision": precision,
        "compile_mode": mode or "default",
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "compile_seconds": round(compile_s, 1),
        "eager_ms": round(e * 1e3, 2),
        "compiled_ms": round(f * 1e3, 2),
        "eager_mp_per_s": out_mp / e,
        "compiled_mp_per_s": out_mp / f,
        "speedup": e / f,
        "runs_each": len(eager_t),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="rgt-s,asid,imdn")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--size", type=int, default=64, help="input (LR) side in pixels")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--mode", default=None, help="torch.compile mode (default, max-autotune, reduce-overhead)")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    for name in args.models.split(","):
        row = measure(
            name, args.scale, args.size, args.batch, device, args.precision, args.rounds, args.iters, args.mode
        )
        rows.append(row)
        print(
            f"{name:14s} {row['input']:>14s} {row['precision']}: eager {row['eager_ms']:9.1f} ms, compiled "
            f"{row['compiled_ms']:9.1f} ms, x{row['speedup']:.2f}; max |diff| {row['max_abs_diff']:.2e} "
            f"(mean {row['mean_abs_diff']:.1e}); compile {row['compile_seconds']} s",
            flush=True,
        )
    meta = {
        "command": " ".join(sys.argv),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
