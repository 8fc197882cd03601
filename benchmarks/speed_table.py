"""The speed table: every model at x4, the ASID tiled protocol batched, and ``srcli upscale`` end to end.

    PYTHONPATH=. python benchmarks/speed_table.py --device cuda --precision bf16 --budget-seconds 150 \\
        --json speed_gpu.json --md speed_gpu.md
    .venv/bin/python benchmarks/speed_table.py --device cpu --precision fp32 --threads 2 --budget-seconds 170 \\
        --json speed_cpu.json --md speed_cpu.md
    .venv/bin/python benchmarks/speed_table.py --render a.json b.json --md table.md   # merge earlier runs

Every figure comes from ``srcli.engine.bench.bench_model`` (what ``srcli bench`` runs): synthetic input,
random weights (no download; ``--real-weights`` loads IMDN / RLFN from ../shared/weights where present),
warm-up first, then timed runs; FLOPs from ``torch.utils.flop_counter``. The table runs in a fixed order,
most important first, and shares ``--budget-seconds`` out among the entries still to run: an entry that
would not fit is listed as skipped rather than run short. ``--rounds N`` repeats the list and pools each
row's runs (on a shared machine a busy spell then slows every row a little rather than one row a lot).

Presets (``--preset``, default from the device):

* ``gpu``: the targets first, each eager then under ``torch.compile``: RGT and RGT-S as 8 tiles of
  128 x 128 (the issue's batched-tile setting), IMDN and ASID as 16 inputs of 256 x 256 per pass, ASID's
  protocol on a 512 x 512 image with 64 tiles per pass; the pipeline; the other models; then, as time
  allows, RGT with 16 tiles, the channels-last switch flipped (IMDN, RLFN off; RGT on), the issue's
  baselines (IMDN fp32 one input, RGT one 256 x 256 input, the ASID protocol one tile at a time, ASID
  one input), RGT through the tiled path of ``srcli upscale``, and IMDN and RGT compiled with CUDA graphs.
* ``cpu``: one input per pass, 64 x 64 (32 x 32 for RGT and RGT-S), fp32: small, because the machine
  this was written on is small and shared.

The ``pipeline`` entry writes synthetic PNG images to a temporary folder and compares ``srcli upscale``
(``srcli.pipeline.images.run_job``: decode, model, encode, atomic writes) with the model's forward passes
alone over the same images decoded beforehand: ``model_only_s / end_to_end_s`` is the share of the
model's rate the pipeline keeps (1.0 = I/O fully hidden).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

SHARED = Path(__file__).resolve().parents[2] / "shared"
#: Real checkpoints ``--real-weights`` uses where present (x4).
REAL_WEIGHTS = {"imdn": "IMDN_x4.pth", "rlfn": "rlfn_x4.pth", "rlfn-s": "rlfn_s_x4.pth"}
CNNS = ("bicubic", "imdn", "rlfn", "rlfn-s", "survey-net")
TRANSFORMERS = ("asid", "asid-d8", "rgt", "rgt-s", "msra-sr-light", "msra-sr")


@dataclass
class Entry:
    """One row of the table: arguments for ``bench_model`` (or the pipeline run)."""

    label: str
    model: str
    size: int
    batch: int = 1
    mode: str = "whole"
    tile: int | None = None
    overlap: int | None = None
    precision: str | None = None  # None: the table's --precision
    channels_last: bool | None = None
    compile: bool = False
    compile_mode: str | None = None
    #: Seconds the entry needs at least (warm-up and compilation included) to be worth starting.
    min_seconds: float = 3.0
    note: str = ""
    kind: str = "bench"  # or "pipeline"
    images: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def gpu_entries() -> list[Entry]:
    """Targets first, then the other models, then the baselines and switches that explain them."""
    return [
        Entry("rgt", "rgt", 128, batch=8, min_seconds=6, note="target >= 30 MP/s"),
        # Compiling unrolls all 48 (RGT-S: 36) blocks into one graph: minutes on a few cores, the first row's
        # budget covers it (the timed loop starts after warm-up).
        Entry("rgt compiled", "rgt", 128, batch=8, compile=True, min_seconds=150, note="torch.compile"),
        Entry("rgt-s", "rgt-s", 128, batch=8, min_seconds=6, note="target >= 40 MP/s"),
        Entry("rgt-s compiled", "rgt-s", 128, batch=8, compile=True, min_seconds=120, note="torch.compile"),
        Entry("imdn", "imdn", 256, batch=16, note="target >= 1000 MP/s"),
        Entry("imdn compiled", "imdn", 256, batch=16, compile=True, min_seconds=40, note="torch.compile"),
        Entry("asid", "asid", 256, batch=16, note="target >= 300 MP/s"),
        Entry("asid compiled", "asid", 256, batch=16, compile=True, min_seconds=60, note="torch.compile"),
        Entry(
            "asid protocol",
            "asid",
            512,
            batch=64,
            mode="protocol",
            note="64 px tiles / 24 overlap, averaged; target >= 20 MP/s",
        ),
        Entry(
            "asid protocol compiled",
            "asid",
            512,
            batch=64,
            mode="protocol",
            compile=True,
            min_seconds=60,
            note="torch.compile; last batch filled to 64 tiles",
        ),
        Entry(
            "pipeline rgt",
            "rgt",
            256,
            kind="pipeline",
            images=24,
            min_seconds=15,
            note="srcli upscale on a folder vs model only; target ratio >= 0.9",
        ),
        Entry("rlfn", "rlfn", 256, batch=16),
        Entry("msra-sr-light", "msra-sr-light", 128, batch=8, min_seconds=5),
        Entry("msra-sr", "msra-sr", 128, batch=8, min_seconds=6),
        Entry("rlfn-s", "rlfn-s", 256, batch=16),
        Entry("survey-net", "survey-net", 256, batch=16),
        Entry("asid-d8", "asid-d8", 256, batch=16),
        Entry("bicubic", "bicubic", 256, batch=16),
        Entry("rgt 16 tiles", "rgt", 128, batch=16, min_seconds=6),
        Entry("imdn nchw", "imdn", 256, batch=16, channels_last=False, note="channels-last off"),
        Entry("rlfn nchw", "rlfn", 256, batch=16, channels_last=False, note="channels-last off"),
        Entry(
            "imdn fp32 1 input",
            "imdn",
            256,
            batch=1,
            precision="fp32",
            channels_last=False,
            note="issue baseline: 213 MP/s on an H200",
        ),
        Entry("rgt 1 input", "rgt", 256, batch=1, min_seconds=5, note="issue baseline: ~1 MP/s (authors' code)"),
        Entry(
            "rgt tiled path",
            "rgt",
            512,
            batch=8,
            mode="tiled",
            tile=128,
            min_seconds=8,
            note="srcli upscale's tiling: 128 px tiles, 8 per pass, feathered merge",
        ),
        Entry(
            "asid protocol 1 tile",
            "asid",
            256,
            batch=1,
            mode="protocol",
            min_seconds=5,
            note="the authors' loop: 1.7 MP/s on an H200",
        ),
        Entry("asid 1 input", "asid", 256, batch=1, note="issue: ~60 MP/s whole-image (authors' code)"),
        Entry(
            "rgt nhwc",
            "rgt",
            128,
            batch=8,
            channels_last=True,
            min_seconds=6,
            note="channels-last weights (off by default; best-of-N 16-20% faster for RGT-S on the CPU)",
        ),
        Entry(
            "imdn compiled cudagraphs",
            "imdn",
            256,
            batch=16,
            compile=True,
            compile_mode="reduce-overhead",
            min_seconds=60,
            note="torch.compile mode reduce-overhead",
        ),
        Entry(
            "rgt compiled cudagraphs",
            "rgt",
            128,
            batch=8,
            compile=True,
            compile_mode="reduce-overhead",
            min_seconds=150,
            note="torch.compile mode reduce-overhead",
        ),
    ]


def cpu_entries() -> list[Entry]:
    """Every model once, small inputs; then the ASID protocol and the pipeline."""
    entries = [Entry(m, m, 64) for m in CNNS]
    for m in TRANSFORMERS:
        # RGT's cost per pixel is the highest: 32 x 32 keeps a run to seconds here.
        size = 32 if m.startswith("rgt") else 64
        entries.append(Entry(m, m, size, min_seconds=4))
    entries.append(
        Entry("asid protocol", "asid", 96, batch=4, mode="protocol", min_seconds=6, note="64 px tiles / 24 overlap")
    )
    entries.append(
        Entry("pipeline rgt", "rgt", 48, kind="pipeline", images=4, min_seconds=20, note="srcli upscale vs model only")
    )
    return entries


# ---------------------------------------------------------------------------------------------


def _synthetic_images(folder: Path, count: int, size: int) -> None:
    """``count`` smooth-plus-noise RGB PNGs (noise alone compresses badly and would overstate encoding)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for i in range(count):
        base = [0.5 + 0.3 * np.sin(xx / (5 + i + c) + c) * np.cos(yy / (7 + c)) for c in range(3)]
        img = np.stack(base, axis=2) + 0.05 * rng.standard_normal((size, size, 3))
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(folder / f"img_{i:03d}.png")


def run_pipeline(entry: Entry, device: Any, precision: str, loaded: Any) -> dict[str, Any]:
    """``srcli upscale`` over a folder of synthetic images vs the model alone on the same images."""
    import numpy as np
    import torch

    from srcli.cli.upscale import default_io_workers
    from srcli.engine.options import RunOptions
    from srcli.engine.upscale import EngineOptions, upscale_tensor
    from srcli.io.imagefile import read_image
    from srcli.pipeline.image_plan import plan_images
    from srcli.pipeline.images import run_job
    from srcli.pipeline.job import ImageOptions

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        _synthetic_images(folder, entry.images, entry.size)
        decoded = [read_image(p) for p in sorted(folder.iterdir())]

        def tensor(d: Any) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(d.frames[0].rgb)).permute(2, 0, 1)[None].to(device)

        engine = EngineOptions(precision=precision)  # type: ignore[arg-type]
        upscale_tensor(loaded, tensor(decoded[0]), engine)  # warm-up: allocations, autotuning
        model_only = sum(upscale_tensor(loaded, tensor(d), engine).seconds for d in decoded)
        options = ImageOptions(
            run=RunOptions(model=entry.model, scale=loaded.scale, device=str(device), precision=precision),
            output=Path(tmp) / "out",
            io_workers=default_io_workers(),
        )
        t0 = time.perf_counter()
        report = run_job(plan_images([str(folder)], options), loaded=loaded)
        wall = time.perf_counter() - t0
        if report.count("done") != len(decoded):
            raise RuntimeError(f"pipeline job failed: {report.to_dict()}")
    out_mp = report.output_megapixels
    return {
        "label": entry.label,
        "kind": "pipeline",
        "model": entry.model,
        "scale": loaded.scale,
        "precision": precision,
        "images": len(decoded),
        "input_size": [entry.size, entry.size],
        "io_workers": options.io_workers,
        "threads": torch.get_num_threads(),
        "output_megapixels": out_mp,
        "model_only_s": model_only,
        "end_to_end_s": wall,
        "model_only_mp_per_s": out_mp / model_only,
        "end_to_end_mp_per_s": out_mp / wall,
        "ratio": model_only / wall,
        "note": entry.note,
    }


def _weights_for(model: str, real: bool) -> str:
    if real and model in REAL_WEIGHTS and (SHARED / "weights" / REAL_WEIGHTS[model]).is_file():
        return str(SHARED / "weights" / REAL_WEIGHTS[model])
    return "random"


def run_table(args: argparse.Namespace) -> dict[str, Any]:
    """Run the entries within the budget; returns the JSON document."""
    import torch

    from srcli.engine.bench import bench_model, build_model, cpu_name
    from srcli.engine.devices import describe_device, pick_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    preset = args.preset or ("cpu" if device.type == "cpu" else "gpu")
    gpu = device.type != "cpu"
    args.warmup = args.warmup if args.warmup is not None else (3 if gpu else 1)
    args.iters = args.iters if args.iters is not None else (50 if gpu else 5)
    if args.max_seconds_per_entry is None:
        args.max_seconds_per_entry = 2.0 if gpu else 4.0
    entries = gpu_entries() if preset == "gpu" else cpu_entries()
    if args.only:
        wanted = {w.strip() for w in args.only.split(",")}
        entries = [e for e in entries if e.label in wanted or (e.kind == "bench" and e.model in wanted)]
    if args.scale_sizes != 1.0:
        entries = [replace(e, size=max(16, int(e.size * args.scale_sizes))) for e in entries]
    started = time.perf_counter()
    deadline = started + args.budget_seconds
    doc: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "device": describe_device(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "torch": torch.__version__,
        "preset": preset,
        "precision": args.precision,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "budget_seconds": args.budget_seconds,
        "load_average_start": _load(),
        "rows": [],
        "skipped": [],
        "errors": [],
    }
    models: dict[tuple[str, str], Any] = {}
    # Rounds repeat the whole list, so that a busy spell of a shared machine slows every row a little rather
    # than one row a lot; a row's runs of all rounds are pooled (median and best over all of them).
    schedule = [(r, e) for r in range(args.rounds) for e in entries]
    pooled: dict[str, dict[str, Any]] = {}
    for i, (round_, entry) in enumerate(schedule):
        remaining = deadline - time.perf_counter()
        if remaining < entry.min_seconds:
            if round_ == 0:
                doc["skipped"].append({"label": entry.label, "reason": f"budget: {remaining:.0f} s left"})
                print(f"skip   {entry.label}: {remaining:.0f} s of budget left", flush=True)
            continue
        # Share what is left among the runs still to come; the timed loop gets part of each share.
        share = remaining / (len(schedule) - i)
        max_seconds = max(0.5, min(args.max_seconds_per_entry, 0.5 * share))
        precision = entry.precision or args.precision
        weights = _weights_for(entry.model, args.real_weights)
        key = (entry.model, weights)
        t0 = time.perf_counter()
        try:
            if key not in models:
                models[key] = build_model(entry.model, 4, device, weights)
            loaded = models[key]
            if entry.kind == "pipeline":
                row = run_pipeline(entry, device, _resolved(loaded, device, precision), loaded)
            else:
                result = bench_model(
                    entry.model,
                    4,
                    size=(entry.size, entry.size),
                    device=device,
                    precision=precision,
                    mode=entry.mode,  # type: ignore[arg-type]
                    tile=entry.tile,
                    overlap=entry.overlap,
                    batch=entry.batch,
                    compile=entry.compile,
                    compile_mode=entry.compile_mode,
                    channels_last=entry.channels_last,
                    # Later rounds find the model warm (shapes planned, kernels chosen).
                    warmup=args.warmup if round_ == 0 else 0,
                    iters=args.iters,
                    max_seconds=max_seconds,
                    weights=weights,
                    flops=entry.label not in pooled,
                    loaded=loaded,
                )
                row = {"label": entry.label, "kind": "bench", "note": entry.note, **result.to_dict()}
            row["wall_s"] = time.perf_counter() - t0
            row = _pool(pooled.get(entry.label), row)
            pooled[entry.label] = row
            print(_progress_line(row), flush=True)
        except Exception as exc:  # one failing row must not cost the others
            doc["errors"].append({"label": entry.label, "error": f"{type(exc).__name__}: {exc}"})
            print(f"error  {entry.label}: {type(exc).__name__}: {exc}", flush=True)
            if args.verbose:
                traceback.print_exc()
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
    doc["rows"] = list(pooled.values())
    doc["rounds"] = args.rounds
    doc["seconds"] = time.perf_counter() - started
    doc["load_average_end"] = _load()
    return doc


def _pool(earlier: dict[str, Any] | None, row: dict[str, Any]) -> dict[str, Any]:
    """``row`` merged with the same row of earlier rounds: runs pooled, times and rates recomputed."""
    if earlier is None:
        return {**row, "rounds": 1}
    merged = {**earlier, "rounds": earlier["rounds"] + 1, "wall_s": earlier["wall_s"] + row["wall_s"]}
    if row["kind"] == "pipeline":
        for k in ("model_only_s", "end_to_end_s"):
            merged[k] = min(earlier[k], row[k])  # the least disturbed of the rounds
        mp = merged["output_megapixels"]
        merged.update(
            model_only_mp_per_s=mp / merged["model_only_s"],
            end_to_end_mp_per_s=mp / merged["end_to_end_s"],
            ratio=merged["model_only_s"] / merged["end_to_end_s"],
        )
        return merged
    runs = [*earlier["run_ms"], *row["run_ms"]]
    latency, best = statistics.median(runs), min(runs)
    mp = merged["output_megapixels"]
    merged.update(
        run_ms=runs,
        timed_runs=len(runs),
        latency_ms=latency,
        latency_min_ms=best,
        mp_per_s=mp / (latency / 1e3),
        best_mp_per_s=mp / (best / 1e3),
        finite=earlier["finite"] and row["finite"],
        load_average=row["load_average"],
    )
    if merged["flops"] is not None:
        merged["tflops"] = merged["flops"] / (latency / 1e3) / 1e12
        if merged["peak_tflops"]:
            merged["peak_fraction"] = merged["tflops"] / merged["peak_tflops"]
    if row.get("peak_memory_mb") is not None:
        merged["peak_memory_mb"] = max(earlier.get("peak_memory_mb") or 0, row["peak_memory_mb"])
    return merged


def _resolved(loaded: Any, device: Any, precision: str) -> str:
    from srcli.engine.devices import resolve_precision

    return resolve_precision(loaded.spec, device, precision)


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _progress_line(row: dict[str, Any]) -> str:
    if row["kind"] == "pipeline":
        return (
            f"done   {row['label']}: end-to-end {row['end_to_end_mp_per_s']:.2f} MP/s, model only "
            f"{row['model_only_mp_per_s']:.2f} MP/s, ratio {row['ratio']:.2f} ({row['wall_s']:.0f} s)"
        )
    return f"done   {row['label']}: {row['mp_per_s']:.3f} MP/s, {row['latency_ms']:.1f} ms ({row['wall_s']:.0f} s)"


# ---------------------------------------------------------------------------------------------
# Markdown


def _f(value: Any, digits: int) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _ratio(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.2g}"


def _rate(value: float) -> str:
    return _f(value, 3 if value < 1 else 2 if value < 100 else 0)


def render_markdown(docs: list[dict[str, Any]]) -> str:
    """One table of every bench row, then the pipeline rows, skips and errors, with the commands that made them."""
    lines: list[str] = []
    for doc in docs:
        lines.append(
            f"- `{doc['command']}`: {doc['device']} ({doc['device_name']}), torch {doc['torch']}, "
            f"{doc['threads']} threads of {doc['cpu_count']} CPUs, load average {doc['load_average_start']} -> "
            f"{doc['load_average_end']}, {doc['seconds']:.0f} s"
        )
    rows = [r for doc in docs for r in doc["rows"] if r["kind"] == "bench"]
    reference = next((r for r in rows if r["label"] == "imdn"), None)
    lines += [
        "",
        "| row | input (LR) | per pass | precision | out MP/s | best MP/s | latency ms | GFLOP / out MP | TFLOP/s"
        " | % peak | peak MB | x IMDN time | note |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        h, w = r["input_size"]
        if r["mode"] == "whole":
            per_pass = f"{r['batch']} image{'s' if r['batch'] > 1 else ''}"
        else:
            tiles = f"{r['tiles']} tiles ({r['mode']}: {r['tile']} px, overlap {r['overlap']})"
            per_pass = f"{min(r['batch'], r['tiles'])} of {tiles}"
        extras = [x for x in (("NHWC" if r["channels_last"] else ""), ("compiled" if r["compiled"] else "")) if x]
        if not r["finite"]:
            extras.append("output not finite")
        if r.get("refined_tiles"):
            extras.append(f"{r['refined_tiles']} tiles re-run in fp32")
        note = "; ".join([*extras, r.get("note") or ""]).strip("; ")
        ratio = _ratio(reference["mp_per_s"] / r["mp_per_s"]) if reference else "-"
        peak = _f(100 * r["peak_fraction"], 1) if r["peak_fraction"] is not None else "-"
        lines.append(
            f"| {r['label']} | {w}x{h} | {per_pass} | {r['precision']} | {_rate(r['mp_per_s'])} | "
            f"{_rate(r['best_mp_per_s'])} | "
            f"{_f(r['latency_ms'], 1)} | {_f(r['gflops_per_output_mp'], 0)} | {_f(r['tflops'], 3)} | {peak} | "
            f"{_f(r['peak_memory_mb'], 0)} | {ratio} | {note} |"
        )
    pipes = [r for doc in docs for r in doc["rows"] if r["kind"] == "pipeline"]
    if pipes:
        lines += [
            "",
            "| pipeline | images | end-to-end MP/s | model-only MP/s | ratio | I/O threads | note |",
            "| --- | --- | ---: | ---: | ---: | ---: | --- |",
        ]
        for r in pipes:
            h, w = r["input_size"]
            lines.append(
                f"| {r['label']} ({r['precision']}) | {r['images']} x {w}x{h} | {_rate(r['end_to_end_mp_per_s'])} | "
                f"{_rate(r['model_only_mp_per_s'])} | {r['ratio']:.2f} | {r['io_workers']} | {r['note']} |"
            )
    for doc in docs:
        for s in doc["skipped"]:
            lines.append(f"\nSkipped {s['label']}: {s['reason']}.")
        for e in doc["errors"]:
            lines.append(f"\nError in {e['label']}: {e['error']}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", help="auto, fp32, bf16, fp16 (rows may override)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--budget-seconds", type=float, default=150.0, help="for the whole table")
    parser.add_argument(
        "--max-seconds-per-entry", type=float, default=None, help="timed loop cap per row (default: 2 GPU, 4 CPU)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="repeat the list, pooling each row's runs")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up runs (default: 3 on GPU, 1 on CPU)")
    parser.add_argument("--iters", type=int, default=None, help="timed runs at most (default: 50 GPU, 5 CPU)")
    parser.add_argument("--preset", choices=("gpu", "cpu"), default=None, help="default: from the device")
    parser.add_argument(
        "--only", default=None, help="comma-separated row labels, or models (their bench rows; 'pipeline rgt' by label)"
    )
    parser.add_argument("--scale-sizes", type=float, default=1.0, help="multiply every input side (quick checks)")
    parser.add_argument("--real-weights", action="store_true", help="IMDN / RLFN checkpoints from ../shared")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--md", type=Path, default=None, help="write the markdown table here")
    parser.add_argument("--render", type=Path, nargs="+", default=None, help="only render these JSON files")
    parser.add_argument("-v", "--verbose", action="store_true", help="print tracebacks of failing rows")
    args = parser.parse_args()

    if args.render:
        docs = [json.loads(p.read_text()) for p in args.render]
    else:
        docs = [run_table(args)]
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(docs[0], indent=2) + "\n")
    table = render_markdown(docs)
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(table)
    print(table)


if __name__ == "__main__":
    # `python benchmarks/speed_table.py` from the repository root without an install.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
