"""bf16 against fp32 on the CPU, per model, same run: speed, and the PSNR-Y change on Set5 and Set14.

Usage::

    .venv/bin/python benchmarks/cpu_precision.py [--models imdn:2,imdn:4,rlfn:2,rlfn:4,rlfn-s:4,survey-net:4]
        [--datasets Set5,Set14] [--speed-size 128] [--speed-iters 5] [--goldens] [--threads 2]
        [--json benchmarks/results/cpu_precision_cpu_DATE.json]

* **quality**: ``srcli.evaluate`` (the papers' protocol: MATLAB bicubic LR, PSNR-Y on the rounded output with
  ``scale`` pixels cropped) once in fp32 and once in bf16 (autocast, as ``srcli`` runs it), with the real
  weights of ``../shared/weights`` (the survey-net's ship in the package). ``delta_db`` is the bf16 mean
  minus the fp32 mean; ``max_image_delta_db`` the largest change of one image. The registry marks a model
  bf16-safe on the CPU (``cpu_safe_precisions``) only where ``|delta_db| <= 0.05`` on both data sets.
* **speed**: one ``--speed-size``-pixel square LR input through ``forward_whole`` as ``srcli upscale`` runs it
  (NHWC weights where the engine uses them), fp32 and bf16 interleaved after a warm-up of each; median and
  best of ``--speed-iters`` passes.
* **goldens** (``--goldens``): RGT, RGT-S, ASID and ASID-D8 have no official weights on this machine; their
  bf16 error is bounded instead on the conformance goldens (``../shared/golden``: recipe weights, the stored
  input, the authors' fp32 output): max and mean absolute difference and the PSNR (peak = the model's value
  range) of bf16 against the stored fp32 output. These are not a PSNR-Y change against HR images, so they
  cannot mark the models safe.

The CPU's features and its fp32/bf16 matrix-product rates (``srcli.engine.cpu_features``) open the report.
On a machine shared with other work the times are noisy: compare fp32 and bf16 within one run only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for tests.golden_recipe

from srcli.engine.cpu_features import detect_cpu_features, measure_matmul_rates  # noqa: E402
from srcli.engine.inference import forward_whole, optimise_for_inference  # noqa: E402
from srcli.hub.loading import LoadedModel, load_model  # noqa: E402

SHARED = REPO.parent / "shared"
#: Checkpoint file of each model in ../shared/weights (``None``: weights shipped inside the package).
WEIGHT_FILES: dict[str, str | None] = {
    "imdn": "IMDN_x{scale}.pth",
    "rlfn": "rlfn_x{scale}.pth",
    "rlfn-s": "rlfn_s_x{scale}.pth",
    "survey-net": None,
}
DEFAULT_MODELS = "imdn:2,imdn:4,rlfn:2,rlfn:4,rlfn-s:4,survey-net:2,survey-net:4"
#: The goldens bounding the bf16 error of the models without official weights on this machine.
GOLDENS = (
    "rgt_x4__in_64x64.safetensors",
    "rgt-s_x2__in_64x64.safetensors",
    "asid_x2__in_64x64.safetensors",
    "asid-d8_x4__in_64x64.safetensors",
)


def weights_path(model: str, scale: int) -> str | None:
    """The checkpoint of ``model`` at ``scale`` in ../shared/weights, or ``None`` for the packaged weights."""
    pattern = WEIGHT_FILES[model]
    return None if pattern is None else str(SHARED / "weights" / pattern.format(scale=scale))


def quality(model: str, scale: int, dataset: str) -> dict[str, Any]:
    """Mean PSNR-Y in fp32 and bf16 on ``dataset`` (a folder of ../shared/data/benchmarks) and the change."""
    from srcli.eval.runner import evaluate

    runs = {}
    for precision in ("fp32", "bf16"):
        started = time.perf_counter()
        result = evaluate(
            model,
            scale=scale,
            data_dir=SHARED / "data" / "benchmarks" / dataset,
            weights=weights_path(model, scale),
            precision=precision,
            device="cpu",
            offline=True,
        )
        runs[precision] = {
            "psnr_y": result.psnr,
            "ssim": result.ssim,
            "seconds": time.perf_counter() - started,
            "images": {s.name: s.psnr for s in result.images},
        }
    fp32, bf16 = runs["fp32"], runs["bf16"]
    deltas = [bf16["images"][name] - fp32["images"][name] for name in fp32["images"]]
    return {
        "fp32_psnr_y": fp32["psnr_y"],
        "bf16_psnr_y": bf16["psnr_y"],
        "delta_db": bf16["psnr_y"] - fp32["psnr_y"],
        "max_image_delta_db": max(deltas, key=abs),
        "delta_ssim": bf16["ssim"] - fp32["ssim"],
        "eval_seconds": {"fp32": fp32["seconds"], "bf16": bf16["seconds"]},
    }


def speed(loaded: LoadedModel, size: int, iters: int) -> dict[str, Any]:
    """Median and best seconds of one ``size`` x ``size`` pass in fp32 and in bf16, interleaved."""
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for precision in times:
        forward_whole(loaded, x, precision)  # type: ignore[arg-type]
    for _ in range(iters):
        for precision, runs in times.items():
            started = time.perf_counter()
            forward_whole(loaded, x, precision)  # type: ignore[arg-type]
            runs.append(time.perf_counter() - started)
    row: dict[str, Any] = {"size": size, "iters": iters}
    for precision, runs in times.items():
        row[f"{precision}_median_ms"] = statistics.median(runs) * 1e3
        row[f"{precision}_best_ms"] = min(runs) * 1e3
    row["speedup_median"] = row["fp32_median_ms"] / row["bf16_median_ms"]
    row["speedup_best"] = row["fp32_best_ms"] / row["bf16_best_ms"]
    return row


def golden_error(file: str) -> dict[str, Any]:
    """bf16 (autocast) against the authors' stored fp32 output of one conformance golden (recipe weights)."""
    from safetensors.torch import load_file

    from srcli.registry import get_model
    from tests.golden_recipe import load_manifest, load_recipe_weights

    variant, _, rest = file.partition("_x")
    scale = int(rest.split("__")[0])
    module = get_model(variant).build(scale).eval()
    load_recipe_weights(module, load_manifest(SHARED / "golden" / f"{variant}_x{scale}.keys.json"))
    tensors = load_file(str(SHARED / "golden" / file))
    lo, hi = get_model(variant).value_range
    x = tensors["input"]  # stored in the model's own value range
    ref = tensors["output"]
    with torch.inference_mode():
        started = time.perf_counter()
        fp32 = module(x)
        fp32_s = time.perf_counter() - started
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = module(x).float()
        bf16_s = time.perf_counter() - started
    peak = hi - lo
    mse = float(((low - ref) ** 2).mean())
    return {
        "file": file,
        "fp32_max_abs_vs_golden": float((fp32 - ref).abs().max()),
        "bf16_max_abs": float((low - ref).abs().max()),
        "bf16_mean_abs": float((low - ref).abs().mean()),
        "bf16_psnr_vs_golden_db": 10 * torch.log10(torch.tensor(peak**2 / mse)).item() if mse > 0 else None,
        "output_std": float(ref.std()),
        "bf16_rmse_over_output_std": mse**0.5 / float(ref.std()),
        "seconds": {"fp32": fp32_s, "bf16": bf16_s},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated model:scale")
    parser.add_argument("--datasets", default="Set5,Set14")
    parser.add_argument("--speed-size", type=int, default=128)
    parser.add_argument("--speed-iters", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--goldens", action="store_true", help="also bound RGT/ASID's bf16 error on the goldens")
    parser.add_argument("--no-quality", action="store_true", help="speed only")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    features = detect_cpu_features()
    rates = measure_matmul_rates(1.0)
    print(
        f"cpu: {features.describe()} (from {features.source}); matmul {rates['fp32_gflops']:.0f} GFLOP/s fp32, "
        f"{rates['bf16_gflops']:.0f} GFLOP/s bf16, {args.threads} threads",
        flush=True,
    )
    doc: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "torch": torch.__version__,
        "threads": args.threads,
        "cpu": features.to_dict(),
        "matmul": rates,
        "models": [],
        "goldens": [],
        "note": "shared 2-core machine: times are noisy; compare fp32 and bf16 within a row only",
    }
    for item in args.models.split(","):
        model, _, scale_text = item.partition(":")
        scale = int(scale_text)
        loaded = optimise_for_inference(
            load_model(model, scale, weights=weights_path(model, scale), offline=True), torch.device("cpu")
        )
        row: dict[str, Any] = {
            "model": model,
            "scale": scale,
            "speed": speed(loaded, args.speed_size, args.speed_iters),
        }
        del loaded
        s = row["speed"]
        line = (
            f"{model} x{scale}: {args.speed_size}² fp32 {s['fp32_median_ms']:.0f} ms, bf16 "
            f"{s['bf16_median_ms']:.0f} ms (x{s['speedup_median']:.2f})"
        )
        if not args.no_quality:
            row["quality"] = {}
            for dataset in args.datasets.split(","):
                q = quality(model, scale, dataset)
                row["quality"][dataset] = q
                line += (
                    f"; {dataset} {q['fp32_psnr_y']:.3f} -> {q['bf16_psnr_y']:.3f} dB "
                    f"({q['delta_db']:+.4f}, worst image {q['max_image_delta_db']:+.4f})"
                )
            row["cpu_bf16_safe"] = all(abs(q["delta_db"]) <= 0.05 for q in row["quality"].values())
        doc["models"].append(row)
        print(line, flush=True)
        if args.json:
            args.json.write_text(json.dumps(doc, indent=2) + "\n")
    if args.goldens:
        for file in GOLDENS:
            g = golden_error(file)
            doc["goldens"].append(g)
            print(
                f"{file}: bf16 vs fp32 golden max {g['bf16_max_abs']:.4f}, mean {g['bf16_mean_abs']:.5f}, "
                f"PSNR {g['bf16_psnr_vs_golden_db']:.1f} dB (fp32 max {g['fp32_max_abs_vs_golden']:.1e}; "
                f"{g['seconds']['fp32']:.2f} s fp32, {g['seconds']['bf16']:.2f} s bf16)",
                flush=True,
            )
            if args.json:
                args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
