"""MSRA-SR cost: parameters and Mult-Adds of our design next to the paper's, and optionally CPU speed.

    python benchmarks/msra_cost.py [--ablations] [--speed] [--cuda] [--json FILE]

Mult-Adds are counted with ``torch.utils.flop_counter.FlopCounterMode`` (MACs = FLOPs / 2; it counts
convolutions and matrix products, not norms, softmax or activations) on the deploy form, on the ``meta``
device (no memory, no compute), for an HR output of 1280x720 (the lightweight-SR convention) and of
1024x720 (the size MSRA-SR's Table 3 caption names, and SwinIR's flops script uses). The model pads the LR
input to a multiple of 64 internally and that padding is counted. x3 uses the LR size 1280//3 x 720//3.

``--ablations`` adds the Table 4 rows (lightweight x2) built with the constructor switches.
``--speed`` times a 64x64 -> x4 fp32 forward of the lightweight model on the CPU with 2 threads.
``--cuda`` times the registry variants at a 1280x720 output on a GPU in fp32 / bf16 / fp16 and reports
how far the reduced precisions land from fp32 (random weights: no trained ones exist).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from srcli.archs.msra_sr import MSRASR

LIGHT: dict[str, Any] = {}
CLASSICAL: dict[str, Any] = {"embed_dim": 192, "depths": (4,) * 6, "upsampler": "pixelshuffle"}
# The registry's classical variant: attention sharing off (docs/msra-sr.md, section 3).
CLASSICAL_REGISTRY: dict[str, Any] = {**CLASSICAL, "share_attn": False}
# Paper Table 1 (lightweight, #Params / #Mult-Adds) and Table 3 (classical x4, 1024x720 HR).
PAPER = {
    ("lightweight", 2): (769_000, 196.0),
    ("lightweight", 3): (777_000, 91.5),
    ("lightweight", 4): (789_000, 53.6),
    ("classical", 4): (12_200_000, 645.0),
    ("classical, no sharing", 4): (12_200_000, 645.0),
}
# Paper Table 4 (lightweight x2): name -> (constructor kwargs, form, paper #Param K, paper FLOPs G).
ABLATIONS: dict[str, tuple[dict[str, Any], str, float, float]] = {
    "full design (GA+CSA, shared, MS-DWC reparam.)": ({}, "deploy", 769, 196.0),
    "w/o Shared Attn": ({"share_attn": False}, "deploy", 915, 229.3),
    "w/o MS-DWC": ({"ms_kernels": ()}, "deploy", 671, 177.4),
    "w/o MS-DWC, +DWC(K=7)": ({"ms_kernels": (7,)}, "deploy", 769, 196.0),
    "MS-DWC (training form)": ({}, "training", 845, 208.9),
    "F = identity": ({"share_kernel": None}, "deploy", 766, 184.1),
    "F = 1x1 DWC": ({"share_kernel": 1}, "deploy", 766, 185.5),
    "F = 5x5 DWC": ({"share_kernel": 5}, "deploy", 774, 216.8),
    "w/o Global Attn (paper adjusts the layout)": ({"global_attn": False}, "deploy", 690, 205.2),
    "w/o CSA (paper adjusts the layout)": ({"scales": (1,)}, "deploy", 728, 188.4),
}


def build(kwargs: dict[str, Any], scale: int, form: str = "deploy", device: str = "cpu") -> MSRASR:
    """The model in ``form`` ("deploy" or "training") on ``device``."""
    with torch.device(device):
        return MSRASR(scale=scale, deploy=(form == "deploy"), **kwargs).eval()


def count_params(model: torch.nn.Module) -> tuple[int, int]:
    """(all parameters, parameters other than relative-position-bias tables)."""
    total = sum(p.numel() for p in model.parameters())
    rpb = sum(p.numel() for n, p in model.named_parameters() if "rpb_table" in n)
    return total, total - rpb


def mult_adds(kwargs: dict[str, Any], scale: int, hr: tuple[int, int], form: str = "deploy") -> float:
    """GMACs of one forward producing an ``hr`` = (W, H) output (LR = HR // scale), on the meta device."""
    model = build(kwargs, scale, form, device="meta")
    x = torch.empty(1, 3, hr[1] // scale, hr[0] // scale, device="meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() / 2 / 1e9


def cpu_speed(runs: int = 5) -> dict[str, float]:
    """Output megapixels per second of lightweight x4 on a 64x64 input, fp32, 2 CPU threads."""
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = build(LIGHT, 4, "deploy")
    x = torch.rand(1, 3, 64, 64)
    times = []
    with torch.inference_mode():
        model(x)  # warm-up
        for _ in range(runs):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    out_mp = 256 * 256 / 1e6
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "out_mp_per_s_median": out_mp / statistics.median(times),
    }


def cuda_check(runs: int = 5) -> list[dict[str, Any]]:
    """On CUDA: time, peak memory and max |difference to fp32| of bf16 / fp16 autocast, random weights.

    Lightweight x2 and classical x4 (the registry variants) at a 1280x720 output, and lightweight x2 in the
    training form (multi-branch MS-DWC) to see what re-parameterisation saves.
    """
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    cases = [
        ("lightweight x2", LIGHT, 2, "deploy", ("fp32", "bf16", "fp16")),
        ("lightweight x2, training form", LIGHT, 2, "training", ("fp32",)),
        ("classical x4 (no sharing)", CLASSICAL_REGISTRY, 4, "deploy", ("fp32", "bf16", "fp16")),
    ]
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
    rows: list[dict[str, Any]] = []
    for name, kwargs, scale, form, precisions in cases:
        torch.manual_seed(0)
        model = build(kwargs, scale, form, device="cuda")
        x = torch.rand(1, 3, 720 // scale, 1280 // scale, device="cuda")
        ref = None
        for precision in precisions:
            ctx = torch.autocast("cuda", dtype=dtypes[precision]) if precision != "fp32" else torch.no_grad()
            with torch.inference_mode(), ctx:
                model(x)  # warm-up
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                times = []
                for _ in range(runs):
                    start = time.perf_counter()
                    y = model(x).float()
                    torch.cuda.synchronize()
                    times.append(time.perf_counter() - start)
            ref = y if ref is None else ref
            row = {
                "case": name,
                "precision": precision,
                "median_ms": 1000 * statistics.median(times),
                "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
                "max_abs_diff_vs_fp32": float((y - ref).abs().max()),
                "finite": bool(torch.isfinite(y).all()),
            }
            rows.append(row)
            print(
                f"{name:<32} {precision:<5} {row['median_ms']:8.1f} ms  peak {row['peak_gib']:6.2f} GiB  "
                f"max|d| {row['max_abs_diff_vs_fp32']:.2e}  finite {row['finite']}"
            )
        del model
        torch.cuda.empty_cache()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ablations", action="store_true", help="also the Table 4 rows (lightweight x2)")
    parser.add_argument("--speed", action="store_true", help="also time lightweight x4 at 64x64 on 2 CPU threads")
    parser.add_argument("--cuda", action="store_true", help="also time / check precisions on a CUDA GPU")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    report: dict[str, Any] = {"variants": [], "ablations": []}

    print(
        f"{'variant':<26} {'params':>11} {'excl. RPB':>11} {'paper':>11} {'diff':>7}   "
        f"{'GMAC 1280x720':>13} {'GMAC 1024x720':>13} {'paper':>7}"
    )
    families = (("lightweight", LIGHT), ("classical", CLASSICAL), ("classical, no sharing", CLASSICAL_REGISTRY))
    for family, kwargs in families:
        for scale in (2, 3, 4):
            total, no_rpb = count_params(build(kwargs, scale))
            g1280 = mult_adds(kwargs, scale, (1280, 720))
            g1024 = mult_adds(kwargs, scale, (1024, 720))
            paper_p, paper_g = PAPER.get((family, scale), (None, None))
            diff = f"{100 * (total / paper_p - 1):+.1f}%" if paper_p else "-"
            print(
                f"{family + ' x' + str(scale):<26} {total:>11,} {no_rpb:>11,} "
                f"{(f'{paper_p:,}' if paper_p else '-'):>11} {diff:>7}   {g1280:>13.1f} {g1024:>13.1f} "
                f"{(f'{paper_g:.1f}' if paper_g else '-'):>7}"
            )
            report["variants"].append(
                {
                    "family": family,
                    "scale": scale,
                    "params": total,
                    "params_excl_rpb": no_rpb,
                    "paper_params": paper_p,
                    "gmac_1280x720": g1280,
                    "gmac_1024x720": g1024,
                    "paper_gmac": paper_g,
                }
            )

    if args.ablations:
        print("\nTable 4 rows, lightweight x2 (paper FLOPs = its Mult-Adds; ours at 1024x720 HR)")
        print(f"{'row':<46} {'params':>9} {'paper K':>8} {'GMAC':>7} {'paper G':>8}")
        for name, (kwargs, form, paper_k, paper_g) in ABLATIONS.items():
            total, _ = count_params(build(kwargs, 2, form))
            g = mult_adds(kwargs, 2, (1024, 720), form)
            print(f"{name:<46} {total:>9,} {paper_k:>8} {g:>7.1f} {paper_g:>8.1f}")
            report["ablations"].append(
                {"row": name, "params": total, "paper_k": paper_k, "gmac_1024x720": g, "paper_g": paper_g}
            )

    if args.speed:
        speed = cpu_speed()
        report["cpu_speed"] = speed
        print(
            f"\nCPU, 2 threads, lightweight x4, 64x64 -> 256x256 fp32: median {speed['median_s']:.2f} s, "
            f"min {speed['min_s']:.2f} s, {speed['out_mp_per_s_median']:.4f} output MP/s"
        )

    if args.cuda:
        print(f"\nCUDA ({torch.cuda.get_device_name()}), 1280x720 output, random weights, TF32 off")
        report["cuda"] = cuda_check()

    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=2)


if __name__ == "__main__":
    main()
