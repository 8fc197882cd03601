"""``srcli bench``: time a model on synthetic input and report MP/s, latency, memory and FLOP rate."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from srcli.cli.common import JsonOpt, console, err_console, human_count, tune_host_memory


def _fmt(value: float | None, digits: int = 2, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}{unit}"


def _render(result: Any) -> None:
    """The measurement as a two-column table."""
    h, w = result.input_size
    if result.mode == "whole":
        what = f"{result.batch} x {w}x{h}" if result.batch > 1 else f"{w}x{h}"
    else:
        what = (
            f"{w}x{h} in {result.tiles} tiles of {result.tile} px (overlap {result.overlap}), {result.batch} per pass"
        )
    title = f"{result.model} x{result.scale}, {result.mode}: {what}, {result.precision} on {result.device}"
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, title=title, title_justify="left", show_header=False)
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("output MP/s", f"[bold]{_fmt(result.mp_per_s, 3)}[/bold]")
    table.add_row("latency (median / min)", f"{_fmt(result.latency_ms, 1)} / {_fmt(result.latency_min_ms, 1)} ms")
    table.add_row("output per run", f"{_fmt(result.output_megapixels, 3)} MP")
    table.add_row("peak memory", _fmt(result.peak_memory_mb, 0, " MB") if result.peak_memory_mb is not None else "-")
    table.add_row("FLOPs per run", _fmt(result.flops / 1e9 if result.flops else None, 1, " G"))
    table.add_row("GFLOP per output MP", _fmt(result.gflops_per_output_mp, 1))
    table.add_row("achieved TFLOP/s", _fmt(result.tflops, 3))
    if result.peak_fraction is not None:
        table.add_row(
            "of device peak",
            f"{100 * result.peak_fraction:.1f}% of {result.peak_tflops:g} TFLOP/s ({result.precision})",
        )
    table.add_row("parameters", human_count(result.params))
    table.add_row(
        "channels-last / compiled", f"{'yes' if result.channels_last else 'no'} / {'yes' if result.compiled else 'no'}"
    )
    table.add_row(
        "runs timed (after warm-up)", f"{result.timed_runs} (warm-up {result.warmup}: {result.warmup_seconds:.1f} s)"
    )
    table.add_row("threads", str(result.threads))
    console.print(table)
    if not result.finite:
        err_console.print("[yellow]the output was not finite (random weights overflow in this precision?)[/yellow]")


def bench_cmd(
    model: Annotated[str, typer.Option("-m", "--model", help="Model name (see 'srcli models list').")] = "imdn",
    scale: Annotated[int, typer.Option("-s", "--scale", help="Model scale factor.")] = 4,
    size: Annotated[str, typer.Option("--size", help="Input (LR) size: N or WxH pixels.")] = "256",
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    precision: Annotated[
        str, typer.Option("--precision", help="auto, fp32, bf16 or fp16 (auto: what is safe for the model).")
    ] = "auto",
    tile: Annotated[
        int, typer.Option("--tile", min=0, help="Time the tiled path ('srcli upscale') with N-pixel tiles (0: off).")
    ] = 0,
    overlap: Annotated[
        int | None, typer.Option("--overlap", min=0, help="Tile overlap in input pixels (default: the model's).")
    ] = None,
    batch: Annotated[
        int, typer.Option("--batch", min=1, help="Images per run (whole image) or tiles per forward pass (tiled).")
    ] = 1,
    protocol: Annotated[
        bool,
        typer.Option("--protocol", help="Time the paper's tiled protocol (e.g. ASID: 64 px tiles, 24 overlap)."),
    ] = False,
    compile: Annotated[
        bool, typer.Option("--compile", help="torch.compile the model first (compile time not timed).")
    ] = False,
    compile_mode: Annotated[
        str | None, typer.Option("--compile-mode", help="torch.compile mode, e.g. max-autotune, reduce-overhead.")
    ] = None,
    channels_last: Annotated[
        bool | None,
        typer.Option("--channels-last/--no-channels-last", help="Force NHWC weights on or off (default: engine's)."),
    ] = None,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Untimed runs first.")] = 3,
    iters: Annotated[int, typer.Option("--iters", min=1, help="Timed runs (at most).")] = 20,
    seconds: Annotated[
        float | None, typer.Option("--seconds", min=0, help="Stop timing after this long (at least 3 runs).")
    ] = None,
    weights: Annotated[
        str, typer.Option("--weights", help="random (no download), pinned (the cache) or a checkpoint file.")
    ] = "random",
    threads: Annotated[int | None, typer.Option("--threads", min=1, help="torch CPU threads.")] = None,
    no_flops: Annotated[bool, typer.Option("--no-flops", help="Skip counting FLOPs.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Time a model on synthetic input: output MP/s, latency, peak memory, achieved TFLOP/s.

    Plain: one run = one forward pass over --batch images. --tile N: one image through the tiled path of upscale.

    --protocol: one image through the paper's tiled protocol. Warm-up runs come first; CUDA is timed with events.
    """
    tune_host_memory(device)
    from srcli.engine.bench import bench_model, parse_size

    result = bench_model(
        model,
        scale,
        size=parse_size(size),
        device=device,
        precision=precision,
        mode="protocol" if protocol else None,
        tile=tile or None,
        overlap=overlap,
        batch=batch,
        compile=compile,
        compile_mode=compile_mode,
        channels_last=channels_last,
        warmup=warmup,
        iters=iters,
        max_seconds=seconds,
        weights=weights,
        flops=not no_flops,
        threads=threads,
    )
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        _render(result)
