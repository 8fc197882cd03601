"""Train srcli's default survey-net weights on one GPU within a wall-clock budget.

x2 first, then x3 and x4 starting from the x2 body (every tensor but the scale-specific tail).
Each scale is a normal ``srcli train`` run (``srcli.train.loop.Trainer``) whose length is fixed by
timing a few steps against its share of the budget; the data are packed on the GPU once and
patches are cut there, so the accelerator never waits for the loader.

Writes into ``--out`` (default ``$OUT``):

* ``<model>_x<s>.safetensors``: deploy weights (EMA, ``--dtype``, fp16 by default) with metadata;
* ``x<s>/log.jsonl`` and ``x<s>/config.json``: the run's JSON log and settings;
* ``summary.json``: device, per-scale iterations, throughput, best validation PSNR / SSIM and
  the PSNR / SSIM of the exported file re-scored with ``srcli.eval`` (fp32 inference).

Usage::

    python benchmarks/train_default_gpu.py .gpu/train --val-dir .gpu/set5 --minutes 2.5,1.5,1.5

(training folders are searched recursively, so ``.gpu/train`` holding ``T91/`` and ``BSD200/`` works).

Test it on the CPU with a tiny budget: ``--minutes 0.17,0.17,0.17 --device cpu --batch-size 4``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

# Run from a checkout without installing: the repository root holds the ``srcli`` package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from srcli.train.export import export_run  # noqa: E402
from srcli.train.loop import TrainConfig, Trainer, TrainStatus  # noqa: E402


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def _printer(label: str, every_s: float = 10.0):  # noqa: ANN202 - a TrainStatus callback
    """Print a progress line at most every ``every_s`` seconds, and after every validation."""
    last = [0.0]

    def show(st: TrainStatus) -> None:
        now = time.perf_counter()
        if st.event != "val" and now - last[0] < every_s:
            return
        last[0] = now
        loss = f"{st.loss:.4f}" if st.loss is not None else "-"
        rate = f"{st.it_per_s:.1f} it/s" if st.it_per_s else ""
        val = f"val {st.val_psnr:.3f} dB (best {st.best_psnr:.3f})" if st.val_psnr is not None else ""
        print(f"[{label}] {st.iteration}/{st.total} loss {loss} lr {st.lr:.2e} {rate} {val}", flush=True)

    return show


def main() -> int:
    """Train every scale in turn; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("train_dirs", nargs="+", type=Path, help="HR training folders (e.g. T91 and BSD200)")
    parser.add_argument("--val-dir", type=Path, required=True, help="HR validation folder (Set5)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_out")))
    parser.add_argument("--model", default="survey-net")
    parser.add_argument("--scales", default="2,3,4", help="first one is trained from scratch, the others from it")
    parser.add_argument("--minutes", default="2.5,1.5,1.5", help="wall-clock minutes per scale (data prep included)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr-patch", type=int, default=48, help="LR patch side (HR patch = scale x this)")
    parser.add_argument("--lr", default="1e-3,7e-4,7e-4", help="peak learning rate per scale")
    parser.add_argument("--ema", type=float, default=0.999)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="fp16", choices=["fp16", "fp32", "bf16"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--init", type=Path, default=None, help="checkpoint to start the first scale from (e.g. a CPU run's best.pt)"
    )
    args = parser.parse_args()

    scales = [int(s) for s in args.scales.split(",")]
    minutes = _floats(args.minutes)
    lrs = _floats(args.lr)
    if len(minutes) == 1:
        minutes *= len(scales)
    if len(lrs) == 1:
        lrs *= len(scales)
    if len(minutes) != len(scales) or len(lrs) != len(scales):
        parser.error("--minutes and --lr need one value (or one per scale)")

    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="srcli_gpu_train_"))
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    summary: dict = {
        "model": args.model,
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "train_dirs": [str(d) for d in args.train_dirs],
        "val_dir": str(args.val_dir),
        "batch_size": args.batch_size,
        "lr_patch": args.lr_patch,
        "scales": {},
    }
    first_best: Path | None = None
    status = 0
    for scale, mins, lr in zip(scales, minutes, lrs, strict=True):
        t0 = time.perf_counter()
        run_dir = work / f"x{scale}"
        config = TrainConfig(
            model=args.model,
            scale=scale,
            train_dirs=[str(d) for d in args.train_dirs],
            val_dir=str(args.val_dir),
            out=str(run_dir),
            budget_s=mins * 60,
            batch_size=args.batch_size,
            patch_size=args.lr_patch * scale,
            lr=lr,
            ema=args.ema,
            seed=args.seed,
            device=args.device,
            init=str(first_best) if first_best is not None else (str(args.init) if args.init else None),
            skip_small=True,
            lr_cache=str(work / "lr_cache"),
            log_every=100,
        )
        try:
            trainer = Trainer.create(config)
            prep_s = time.perf_counter() - t0
            # The budget covers data prep, export and re-scoring too: train for what is left of it.
            trainer.config.budget_s = max(10.0, mins * 60 - prep_s - 8.0)
            print(
                f"[x{scale}] {trainer.num_train_images} images ready in {prep_s:.1f} s; "
                f"training for {trainer.config.budget_s:.0f} s on {trainer.device}",
                flush=True,
            )
            result = trainer.run(on_progress=_printer(f"x{scale}"))
            export = args.out / f"{args.model}_x{scale}.safetensors"
            meta = export_run(run_dir, export, which="best", dtype=args.dtype)
            rescored = _rescore(args.model, scale, export, args.val_dir, args.device)
            if first_best is None:
                first_best = run_dir / "best.pt"
            summary["scales"][f"x{scale}"] = {
                "iterations": result["iterations"],
                "it_per_s": round(result["it_per_s"], 2),
                "train_images": trainer.num_train_images,
                "prep_s": round(prep_s, 1),
                "wall_s": round(time.perf_counter() - t0, 1),
                "best": result["best"],
                "export": export.name,
                "export_metadata": meta,
                "export_rescored": rescored,
                "init": f"x{scales[0]} body" if config.init else None,
            }
            print(
                f"[x{scale}] done: {result['iterations']} it, best {result['best']['psnr']:.3f} dB; "
                f"export {export.name}: {rescored['psnr']:.3f} dB / {rescored['ssim']:.4f}",
                flush=True,
            )
        except Exception as exc:  # keep going: the other scales and the logs are still worth having
            status = 1
            summary["scales"][f"x{scale}"] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"[x{scale}] FAILED: {type(exc).__name__}: {exc}", flush=True)
        finally:
            dest = args.out / f"x{scale}"
            dest.mkdir(exist_ok=True)
            for name in ("log.jsonl", "config.json"):
                if (run_dir / name).is_file():
                    shutil.copy2(run_dir / name, dest / name)
        summary["wall_s"] = round(time.perf_counter() - started, 1)
        (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({k: v.get("export_rescored", v) for k, v in summary["scales"].items()}), flush=True)
    print(f"total wall {time.perf_counter() - started:.1f} s", flush=True)
    return status


def _rescore(model: str, scale: int, weights: Path, val_dir: Path, device: str) -> dict:
    """The exported file scored by ``srcli.eval`` (loads it through the registry, as ``--weights`` does)."""
    from srcli.eval.runner import evaluate

    result = evaluate(model, None, scale, data_dir=val_dir, weights=weights, device=device)
    return {"psnr": round(result.psnr, 4), "ssim": round(result.ssim, 5), "images": len(result.images)}


if __name__ == "__main__":
    sys.exit(main())
