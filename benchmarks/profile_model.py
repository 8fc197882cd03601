"""Where a model's forward pass spends its time: ``torch.profiler`` tables, by operator and by kernel.

    python3 benchmarks/profile_model.py --device cuda --precision bf16 -m rgt --size 128 --batch 8 --out prof/
    .venv/bin/python benchmarks/profile_model.py -m asid --size 64 --threads 2 --out /tmp/prof

Builds the model with random weights (``srcli.engine.bench.build_model``), applies the engine's
inference settings (channels-last where it pays; ``--compile`` for the compiled module), warms up, then
profiles ``--iters`` forward passes and writes to ``--out``:

* ``<model>_ops.txt``: operators sorted by their own device time (CPU time on the CPU): what to fuse or
  replace first;
* ``<model>_kernels.txt`` (CUDA): the same, grouped by input shape, which tells the layers apart;
* ``<model>_summary.json``: wall time per pass, output MP/s, the number of kernel launches per pass and
  the share of device time in matrix products, attention, convolutions and the rest.

Timings under the profiler are slower than ``srcli bench``'s; read the shares, not the absolute times.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from srcli.engine.bench import build_model  # noqa: E402
from srcli.engine.inference import forward_whole, optimise_for_inference  # noqa: E402

#: Substrings of operator / kernel names, by the kind of work they stand for (first match wins).
KINDS = {
    "attention": ("attention", "fmha", "flash", "softmax", "sdpa"),
    "matmul": ("gemm", "mm", "matmul", "linear", "addmm", "cutlass", "sm90_xmma", "nvjet"),
    "convolution": ("conv", "cudnn", "implicit", "depthwise", "winograd"),
    "copy / layout": ("copy", "index", "cat", "permute", "contiguous", "clone", "pad", "gather", "scatter"),
    "normalisation": ("norm", "layer_norm", "welford"),
}


def _kind(name: str) -> str:
    low = name.lower()
    for kind, keys in KINDS.items():
        if any(k in low for k in keys):
            return kind
    return "elementwise / other"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-m", "--model", default="rgt")
    parser.add_argument("-s", "--scale", type=int, default=4)
    parser.add_argument("--size", type=int, default=128, help="input (LR) side")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--rows", type=int, default=40, help="rows per table")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from torch.profiler import ProfilerActivity, profile

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    loaded = optimise_for_inference(build_model(args.model, args.scale, device), device, compile=args.compile)
    x = torch.rand(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0)).to(device)

    def step() -> None:
        forward_whole(loaded, x, args.precision)
        if cuda:
            torch.cuda.synchronize(device)

    for _ in range(args.warmup):
        step()
    start = time.perf_counter()
    for _ in range(args.iters):
        step()
    wall = (time.perf_counter() - start) / args.iters
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities, record_shapes=True) as prof:
        for _ in range(args.iters):
            step()

    args.out.mkdir(parents=True, exist_ok=True)
    sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    stem = f"{args.model}_x{args.scale}_{args.batch}x{args.size}_{args.precision}{'_compiled' if args.compile else ''}"
    averages = prof.key_averages()
    (args.out / f"{stem}_ops.txt").write_text(averages.table(sort_by=sort, row_limit=args.rows) + "\n")
    if cuda:
        by_shape = prof.key_averages(group_by_input_shape=True)
        (args.out / f"{stem}_kernels.txt").write_text(by_shape.table(sort_by=sort, row_limit=args.rows) + "\n")

    # Device work per kind: kernels on CUDA (device events), operators' own time on the CPU.
    shares: dict[str, float] = defaultdict(float)
    launches = 0
    for event in prof.events():
        if cuda:
            if event.device_type != torch.autograd.DeviceType.CUDA:
                continue
            launches += 1
            shares[_kind(event.name)] += event.device_time_total if hasattr(event, "device_time_total") else 0
        else:
            shares[_kind(event.name)] += event.self_cpu_time_total
    total = sum(shares.values()) or 1.0
    out_mp = args.batch * (args.size * args.scale) ** 2 / 1e6
    summary = {
        "command": " ".join(sys.argv),
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "torch": torch.__version__,
        "wall_ms_per_pass": round(wall * 1e3, 2),
        "out_mp_per_s": out_mp / wall,
        "kernel_launches_per_pass": launches // args.iters if cuda else None,
        "share_of_time": {k: round(v / total, 3) for k, v in sorted(shares.items(), key=lambda kv: -kv[1])},
    }
    (args.out / f"{stem}_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
