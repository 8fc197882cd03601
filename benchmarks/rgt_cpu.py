"""RGT / RGT-S forward pass on the CPU (fp32): an earlier ``srcli/archs/rgt.py`` against the current one.

    git show HEAD:srcli/archs/rgt.py > /tmp/rgt_before.py
    .venv/bin/python benchmarks/rgt_cpu.py --before /tmp/rgt_before.py --threads 2 --rounds 7 --json out.json

Both modules get the same deterministic random weights (one state dict, loaded with ``strict=True``; the
``gamma`` scales are drawn visibly large, as in the tests, so every block's input reaches the output) and
run in eval mode under ``torch.inference_mode``. Each round times one batch of ``--iters`` passes of the
earlier module, then of the current one (the order alternates between rounds), so a shared machine's
load falls on both alike; the table shows the median over rounds of the wall time per pass
(``time.perf_counter``) and of the process CPU time per pass (``time.process_time``), their ratios
(before / after: > 1 means the current code is faster), the ratio of the fastest rounds (``min ratio``,
the least disturbed by other load) and the largest absolute difference between the two outputs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from srcli.archs import rgt as current  # noqa: E402

#: Registry configurations (srcli/registry.py): residual groups of 6 blocks, 6 heads.
VARIANTS: dict[str, dict[str, Any]] = {
    "rgt": {"depth": (6,) * 8, "num_heads": (6,) * 8},
    "rgt-s": {"depth": (6,) * 6, "num_heads": (6,) * 6},
}


def load_module(path: Path) -> ModuleType:
    """Import a copy of ``rgt.py`` from ``path`` as a standalone module."""
    spec = importlib.util.spec_from_file_location("rgt_before", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses / NamedTuple need the module registered
    spec.loader.exec_module(module)
    return module


def build_pair(before: ModuleType, variant: str, scale: int, seed: int) -> tuple[nn.Module, nn.Module]:
    """(earlier, current) modules of ``variant`` with one random state dict, in eval mode."""
    kwargs = {"upscale": scale, **VARIANTS[variant]}
    torch.manual_seed(seed)
    new = current.RGT(**kwargs)
    with torch.no_grad():
        for name, p in new.named_parameters():
            if name.endswith("gamma"):
                p.normal_(0.0, 0.125)
    old = before.RGT(**kwargs)
    old.load_state_dict(new.state_dict(), strict=True)
    return old.eval(), new.eval()


def time_passes(model: nn.Module, x: torch.Tensor, iters: int) -> tuple[float, float]:
    """Wall and process CPU seconds per forward pass, averaged over ``iters`` passes."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(iters):
        model(x)
    return (time.perf_counter() - wall) / iters, (time.process_time() - cpu) / iters


def bench_case(
    old: nn.Module, new: nn.Module, size: int, rounds: int, iters: int, warmup: int
) -> dict[str, float | int]:
    """Interleaved timings of ``old`` and ``new`` on one random ``size x size`` input."""
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(size))
    with torch.inference_mode():
        ref, out = old(x), new(x)
        diff = (ref - out).abs().max().item()
        for _ in range(warmup):
            old(x)
            new(x)
        samples: dict[str, list[float]] = {k: [] for k in ("old_wall", "new_wall", "old_cpu", "new_cpu")}
        for r in range(rounds):
            order = (("old", old), ("new", new)) if r % 2 == 0 else (("new", new), ("old", old))
            for tag, model in order:
                wall, cpu = time_passes(model, x, iters)
                samples[f"{tag}_wall"].append(wall)
                samples[f"{tag}_cpu"].append(cpu)
    med = {k: statistics.median(v) for k, v in samples.items()}
    ratios = [o / n for o, n in zip(samples["old_wall"], samples["new_wall"], strict=True)]
    return {
        "size": size,
        "before_ms": 1e3 * med["old_wall"],
        "after_ms": 1e3 * med["new_wall"],
        "ratio": med["old_wall"] / med["new_wall"],
        "ratio_of_rounds_median": statistics.median(ratios),
        "before_cpu_ms": 1e3 * med["old_cpu"],
        "after_cpu_ms": 1e3 * med["new_cpu"],
        "cpu_ratio": med["old_cpu"] / med["new_cpu"],
        "before_min_ms": 1e3 * min(samples["old_wall"]),
        "after_min_ms": 1e3 * min(samples["new_wall"]),
        "min_ratio": min(samples["old_wall"]) / min(samples["new_wall"]),
        "max_abs_diff": diff,
        "rounds": rounds,
        "iters": iters,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, default=Path("/tmp/rgt_before.py"), help="earlier rgt.py")
    parser.add_argument("--variants", default="rgt,rgt-s", help="comma-separated: rgt, rgt-s")
    parser.add_argument("--sizes", default="64,96", help="comma-separated input sides (LR pixels)")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (median taken)")
    parser.add_argument("--iters", type=int, default=2, help="passes per round and module")
    parser.add_argument("--warmup", type=int, default=1, help="untimed passes per module before the rounds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    before = load_module(args.before)
    rows = []
    header = (
        f"{'model':7} {'size':>5} {'before ms':>10} {'after ms':>9} {'ratio':>6} "
        f"{'cpu before':>11} {'cpu after':>10} {'cpu ratio':>9} {'min ratio':>9} {'max |diff|':>10}"
    )
    print(f"torch {torch.__version__}, {args.threads} threads, x{args.scale}, fp32, eval, inference_mode")
    print(header)
    for variant in args.variants.split(","):
        old, new = build_pair(before, variant, args.scale, args.seed)
        for size in (int(s) for s in args.sizes.split(",")):
            row = {"model": variant, **bench_case(old, new, size, args.rounds, args.iters, args.warmup)}
            rows.append(row)
            print(
                f"{variant:7} {size:>5} {row['before_ms']:>10.1f} {row['after_ms']:>9.1f} {row['ratio']:>6.3f} "
                f"{row['before_cpu_ms']:>11.1f} {row['after_cpu_ms']:>10.1f} {row['cpu_ratio']:>9.3f} "
                f"{row['min_ratio']:>9.3f} {row['max_abs_diff']:>10.2e}",
                flush=True,
            )
    if args.json:
        meta = {"torch": torch.__version__, "threads": args.threads, "scale": args.scale, "before": str(args.before)}
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
