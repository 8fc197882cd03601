"""How far reduced precision moves a registry model's output from fp32, on benchmark LR images.

Usage::

    python benchmarks/precision.py --model rgt --scale 4 --precisions bf16,fp16 --weights golden \\
        [--data ../shared/data/benchmarks/Set5] [--crop 64] [--device cpu] [--threads 2] [--cast] [--json]

For each HR image of ``--data``: crop to a multiple of the scale, make the LR input as the benchmark
protocol does (MATLAB bicubic, rounded to uint8 levels), optionally take the centre ``--crop`` x
``--crop`` LR pixels (``0``: whole image), run the model once in fp32 and once per reduced precision
(whole image, no tiling), and compare the two outputs in [0, 1]:

* ``max_abs`` / ``mean_abs``: of the raw (unclamped) outputs;
* ``psnr_rgb``: of the outputs clamped to [0, 1], peak 1;
* ``psnr_y``: on the luma of the outputs as scored (clamped, rounded to uint8 levels, ``scale`` pixels
  cropped from each border), peak 255 (``inf`` when identical);
* ``psnr_vs_hr_fp32`` / ``psnr_vs_hr_low``: each output's PSNR-Y against the HR (only meaningful with
  real weights; with ``--weights golden`` it shows that the comparison is not about quality).

Weights: ``golden`` (the conformance recipe, ``tests/golden_recipe.py``), ``random`` (constructor
init) or a checkpoint path (loaded strictly through ``srcli.hub.loading.load_model``). Reduced
precision runs under autocast as ``srcli`` does, or, with ``--cast``, with module and input cast.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for benchmarks.* and tests.*

from benchmarks.model_speed import DTYPES, device_name, load_golden_weights, pick_device  # noqa: E402
from srcli.eval.metrics import crop_border, psnr, rgb_to_y  # noqa: E402
from srcli.eval.protocol import make_lr, modcrop, to_uint8_levels  # noqa: E402
from srcli.io.images import read_rgb_uint8  # noqa: E402
from srcli.registry import get_model  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "benchmarks" / "Set5"


def center_crop(img: torch.Tensor, size: int) -> torch.Tensor:
    """The centre ``size x size`` of (C, H, W); the whole image if it is smaller or ``size`` is 0."""
    h, w = img.shape[-2:]
    if size <= 0 or (h <= size and w <= size):
        return img
    ch, cw = min(size, h), min(size, w)
    top, left = (h - ch) // 2, (w - cw) // 2
    return img[..., top : top + ch, left : left + cw]


def run(
    module: torch.nn.Module, lr01: torch.Tensor, value_range: tuple[float, float], precision: str, cast: bool
) -> tuple[torch.Tensor, float]:
    """One whole-image pass of (3, h, w) in [0, 1]; returns the float32 output in [0, 1] and the seconds."""
    lo, hi = value_range
    device = next(module.parameters()).device
    x = (lr01 * (hi - lo) + lo).unsqueeze(0).to(device)
    if precision != "fp32" and cast:
        x = x.to(DTYPES[precision])
    autocast = precision != "fp32" and not cast
    ctx = torch.autocast(device_type=device.type, dtype=DTYPES[precision]) if autocast else contextlib.nullcontext()
    start = time.perf_counter()
    with torch.inference_mode(), ctx:
        y = module(x)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    return ((y.float().cpu()[0] - lo) / (hi - lo)), seconds


def scored_y(img01: torch.Tensor, scale: int) -> torch.Tensor:
    """Luma as the benchmark protocol scores it: clamp, uint8 levels, Y, ``scale`` px border crop."""
    return crop_border(rgb_to_y(to_uint8_levels(img01)), scale)


def compare(ref: torch.Tensor, low: torch.Tensor, hr: torch.Tensor | None, scale: int) -> dict[str, float]:
    """Distances between an fp32 and a reduced-precision output, both (3, H, W) in [0, 1]."""
    diff = (low - ref).abs()
    row = {
        "max_abs": diff.max().item(),
        "mean_abs": diff.mean().item(),
        "psnr_rgb": psnr(low.clamp(0, 1), ref.clamp(0, 1), peak=1.0),
        "psnr_y": psnr(scored_y(low, scale), scored_y(ref, scale)),
    }
    if hr is not None:
        hr_y = crop_border(rgb_to_y(hr.to(torch.float64)), scale)
        row["psnr_vs_hr_fp32"] = psnr(scored_y(ref, scale), hr_y)
        row["psnr_vs_hr_low"] = psnr(scored_y(low, scale), hr_y)
    return row


def _finite(value: object) -> object:
    """JSON-safe copy: infinite PSNRs (identical images) become the string ``"inf"``."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return value


def build(model: str, scale: int, weights: str, device: torch.device) -> torch.nn.Module:
    """The registry module in eval mode on ``device`` with golden, random or checkpoint weights."""
    if weights not in ("golden", "random"):
        from srcli.hub.loading import load_model

        return load_model(model, scale, weights=weights, offline=True).module.to(device).eval()
    module = get_model(model).build(scale).eval()
    if weights == "golden":
        load_golden_weights(module)
    return module.to(device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--precisions", default="bf16", help="comma-separated: bf16, fp16")
    parser.add_argument("--weights", default="golden", help="golden, random, or a checkpoint file")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of HR images")
    parser.add_argument("--crop", type=int, default=0, help="centre crop of the LR input (0: whole image)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cast", action="store_true", help="cast module and input instead of autocast")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    # The reference must be true fp32: no TF32 in matmuls or cuDNN convolutions.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    spec = get_model(args.model)
    module = build(spec.name, args.scale, args.weights, device)
    precisions = [p for p in args.precisions.split(",") if p != "fp32"]
    files = sorted(p for p in args.data.iterdir() if p.suffix.lower() in (".png", ".bmp", ".jpg", ".tif"))

    images = []
    for path in files:
        hr = modcrop(read_rgb_uint8(path), args.scale)
        lr = make_lr(hr, args.scale)
        cropped = center_crop(lr, args.crop)
        hr_used = hr if cropped.shape == lr.shape else None  # the HR only lines up with a whole image
        ref, t_ref = run(module, cropped, spec.value_range, "fp32", False)
        entry = {"image": path.name, "lr_hw": list(cropped.shape[-2:]), "seconds": {"fp32": t_ref}, "vs_fp32": {}}
        for precision in precisions:
            if args.cast:
                module.to(DTYPES[precision])
            low, t_low = run(module, cropped, spec.value_range, precision, args.cast)
            module.float()
            entry["seconds"][precision] = t_low
            entry["vs_fp32"][precision] = compare(ref, low, hr_used, args.scale)
        images.append(entry)

    summary = {}
    for precision in precisions:
        rows = [e["vs_fp32"][precision] for e in images]
        summary[precision] = {
            "max_abs": max(r["max_abs"] for r in rows),
            "mean_abs": statistics.fmean(r["mean_abs"] for r in rows),
            "psnr_rgb_mean": statistics.fmean(r["psnr_rgb"] for r in rows),
            "psnr_y_mean": statistics.fmean(r["psnr_y"] for r in rows),
            "psnr_y_min": min(r["psnr_y"] for r in rows),
        }
    report = {
        "model": spec.name,
        "scale": args.scale,
        "weights": args.weights,
        "data": str(args.data),
        "lr_crop": args.crop,
        "device": device_name(device),
        "mode": "cast" if args.cast else "autocast",
        "torch": torch.__version__,
        "images": images,
        "summary": summary,
    }
    if args.json:
        print(json.dumps(_finite(report), indent=1))
        return 0
    print(
        f"{spec.name} x{args.scale}, {args.weights} weights, {report['device']}, {report['mode']}, "
        f"LR crop {args.crop or 'none'}; each reduced precision against fp32"
    )
    print(f"{'image':>14} {'LR':>9} {'prec':>5} {'max|d|':>9} {'mean|d|':>9} {'PSNR rgb':>9} {'PSNR Y':>8} {'s':>7}")
    for e in images:
        for precision, r in e["vs_fp32"].items():
            size = "x".join(map(str, e["lr_hw"]))
            psnrs = f"{r['psnr_rgb']:>9.2f} {r['psnr_y']:>8.2f}"
            print(
                f"{e['image']:>14} {size:>9} {precision:>5} {r['max_abs']:>9.2e} {r['mean_abs']:>9.2e} {psnrs}"
                f" {e['seconds'][precision]:>7.1f}"
            )
    for precision, s in summary.items():
        print(
            f"{precision}: max|d| {s['max_abs']:.3e}, mean|d| {s['mean_abs']:.3e},"
            f" PSNR rgb {s['psnr_rgb_mean']:.2f} dB, PSNR Y mean {s['psnr_y_mean']:.2f} dB (min {s['psnr_y_min']:.2f})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
