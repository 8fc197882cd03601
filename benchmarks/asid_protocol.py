"""Tiled protocol vs whole-image inference on Set5, for a model whose registry protocol is tiled (ASID).

    .venv/bin/python benchmarks/asid_protocol.py [--model asid] [--scale 4] [--weights FILE] [--threads 1] [--json F]

Each Set5 LR image (MATLAB bicubic of the mod-cropped HR, as ``srcli eval`` makes it) runs through
``srcli.engine.inference.run_model`` twice: with the registry protocol (ASID: 64 px tiles overlapping by
24, averaged, as the authors' tester) and as one whole-image pass. Reported, in the [0, 1] image domain:
max |Δ| of the raw (unclamped) outputs and PSNR (peak 1) between the outputs clamped to [0, 1], RGB.

Weights: the conformance recipe (``shared/golden/README.md`` §3, via ``tests/golden_recipe.py``) unless
``--weights`` names a checkpoint. The recipe weights make the network far more context-sensitive than
trained weights, so with them the figures bound the effect from above; rerun with the released files.
Precision and speed have generic scripts: ``benchmarks/precision.py`` and ``benchmarks/model_speed.py``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(REPO))  # for tests.golden_recipe

from srcli.engine.inference import run_model  # noqa: E402
from srcli.eval.protocol import make_lr, modcrop  # noqa: E402
from srcli.hub.loading import LoadedModel, load_model  # noqa: E402
from srcli.io.images import read_rgb_uint8  # noqa: E402
from srcli.registry import InferenceProtocol, get_model  # noqa: E402
from tests.golden_recipe import load_manifest, load_recipe_weights  # noqa: E402


def build(model: str, scale: int, weights: Path | None) -> LoadedModel:
    """The registry model with recipe weights, or a checkpoint loaded strictly, in eval mode."""
    if weights is not None:
        return load_model(model, scale, weights=weights, offline=True)
    spec = get_model(model)
    module = spec.build(scale).eval()
    load_recipe_weights(module, load_manifest(SHARED / "golden" / f"{spec.name}_x{scale}.keys.json"))
    return LoadedModel(spec, scale, module, None, None)


def set5_lr(scale: int) -> dict[str, torch.Tensor]:
    """Set5 LR inputs (1, 3, h, w) in [0, 1], made as ``srcli eval`` makes them."""
    folder = SHARED / "data" / "benchmarks" / "Set5"
    return {p.name: make_lr(modcrop(read_rgb_uint8(p), scale), scale)[None] for p in sorted(folder.glob("*.png"))}


def compare(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    """max |a - b| (raw) and PSNR (peak 1) between a and b clamped to [0, 1]."""
    mse = (a.float().clamp(0, 1) - b.float().clamp(0, 1)).pow(2).mean().item()
    return {
        "max_abs": (a.float() - b.float()).abs().max().item(),
        "mean_abs": (a.float() - b.float()).abs().mean().item(),
        "psnr_db": math.inf if mse == 0 else 10 * math.log10(1 / mse),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="asid")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--weights", type=Path, default=None, help="checkpoint instead of the recipe weights")
    parser.add_argument("--threads", type=int, default=1, help="results do not depend on it beyond ~1e-5")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = build(args.model, args.scale, args.weights)
    protocol = loaded.spec.protocol
    rows = {}
    for name, lr in set5_lr(args.scale).items():
        tiled = run_model(loaded, lr)
        whole = run_model(loaded, lr, protocol=InferenceProtocol("whole"))
        rows[name] = {"lr_hw": list(lr.shape[-2:]), **compare(tiled, whole)}
    finite = [r["psnr_db"] for r in rows.values() if math.isfinite(r["psnr_db"])]
    print(
        f"{args.model} x{args.scale}, {protocol.describe()} vs whole image, Set5, "
        f"weights {args.weights or 'sr-golden-recipe-v1'}:"
    )
    for name, r in rows.items():
        h, w = r["lr_hw"]
        diff = f"max |Δ| {r['max_abs']:.3g}, mean |Δ| {r['mean_abs']:.3g}"
        print(f"  {name:14s} LR {h}x{w}: {diff}, PSNR {r['psnr_db']:.2f} dB")
    if finite:
        print(f"  PSNR over images that differ: min {min(finite):.2f} dB, mean {statistics.mean(finite):.2f} dB")
    print(f"  load average at the end: {os.getloadavg()}")
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "scale": args.scale, "images": rows}, indent=2))


if __name__ == "__main__":
    main()
