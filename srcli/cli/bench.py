"""``srcli bench``: time a model on synthetic input and report MP/s, latency, memory and FLOP rate."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from srcli.cli.common import (
    CacheDirOpt,
    CompileOpt,
    DeviceOpt,
    JsonOpt,
    ModelOpt,
    OfflineOpt,
    PrecisionOpt,
    ScaleOpt,
    ThreadsOpt,
    TileOverlapOpt,
    console,
    err_console,
    human_count,
    run_options,
    show_notices,
    tune_host_memory,
)
from srcli.engine.options import check_run
from srcli.errors import UsageError
from srcli.registry import DEFAULT_MODEL


def _fmt(value: float | None, digits: int = 2, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}{unit}"


def _cpu_support(features: dict[str, Any]) -> str:
    """``native / no / AVX512-BF16`` from ``CpuFeatures.to_dict()``."""
    names = [k for k in ("amx_bf16", "avx512_bf16", "avx512f", "arm_bf16") if features.get(k)]
    native = "native bf16" if features.get("native_bf16") else "no native bf16"
    return native + (f" ({', '.join(names)})" if names else "")


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
        what = "of measured matmul rate" if result.cpu else "of device peak"
        table.add_row(
            what, f"{100 * result.peak_fraction:.1f}% of {result.peak_tflops:.3g} TFLOP/s ({result.precision})"
        )
    if result.cpu:
        features = result.cpu.get("features") or {}
        table.add_row("CPU bf16 / AMX / AVX-512", _cpu_support(features))
        table.add_row(
            "CPU matmul fp32 / bf16",
            f"{_fmt(result.cpu.get('fp32_gflops'), 0)} / {_fmt(result.cpu.get('bf16_gflops'), 0)} GFLOP/s",
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
    model: ModelOpt = DEFAULT_MODEL,
    scale: ScaleOpt = None,
    size: Annotated[
        str | None,
        typer.Option("--size", help="Input (LR) size: N or WxH pixels.", show_default="64 on a CPU, else 256"),
    ] = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    tile: Annotated[
        str,
        typer.Option(
            "--tile",
            help="Time the tiled path of 'srcli upscale' with N-pixel tiles (0: the whole image, untiled).",
            show_default=True,
        ),
    ] = "0",
    tile_overlap: TileOverlapOpt = None,
    overlap: Annotated[int | None, typer.Option("--overlap", min=0, hidden=True)] = None,
    batch: Annotated[
        int,
        typer.Option(
            "--batch",
            min=1,
            help="Images per run (whole image) or tiles per forward pass (tiled).",
            show_default=True,
        ),
    ] = 1,
    protocol: Annotated[
        bool,
        typer.Option("--protocol", help="Time the paper's tiled protocol (e.g. ASID: 64 px tiles, 24 overlap)."),
    ] = False,
    compile: CompileOpt = False,
    compile_mode: Annotated[
        str | None,
        typer.Option(
            "--compile-mode", help="torch.compile mode, e.g. max-autotune, reduce-overhead.", show_default="default"
        ),
    ] = None,
    channels_last: Annotated[
        bool | None,
        typer.Option(
            "--channels-last/--no-channels-last", help="Force NHWC weights on or off.", show_default="the engine's"
        ),
    ] = None,
    warmup: Annotated[
        int | None, typer.Option("--warmup", min=0, help="Untimed runs first.", show_default="1 on a CPU, else 3")
    ] = None,
    iters: Annotated[
        int | None, typer.Option("--iters", min=1, help="Timed runs (at most).", show_default="20")
    ] = None,
    seconds: Annotated[
        float | None,
        typer.Option(
            "--seconds",
            min=0,
            help="Stop timing after this long (at least 3 runs).",
            show_default="3 on a CPU unless --iters, else no limit",
        ),
    ] = None,
    weights: Annotated[
        str,
        typer.Option(
            "--weights", help="random (no download), pinned (the cache) or a checkpoint file.", show_default=True
        ),
    ] = "random",
    threads: ThreadsOpt = None,
    no_flops: Annotated[bool, typer.Option("--no-flops", help="Skip counting FLOPs.")] = False,
    as_json: JsonOpt = False,
    cache_dir: CacheDirOpt = None,
    offline: OfflineOpt = False,
) -> None:
    """Time a model on synthetic input: output MP/s, latency, peak memory, achieved TFLOP/s.

    Plain: one run = one forward pass over --batch images. --tile N: one image through the tiled path of upscale.

    --protocol: one image through the paper's tiled protocol. Warm-up runs come first; CUDA is timed with events.
    On a CPU the defaults finish in seconds (64 px, a 3 s budget); --size, --iters and --seconds change that.
    """
    if overlap is not None and tile_overlap is not None and overlap != tile_overlap:
        raise UsageError("--tile-overlap is given twice with different values (--overlap is its old name)")
    options = run_options(
        model=model,
        scale=scale,
        weights=None if weights in ("random", "pinned") else weights,
        device=device,
        precision=precision,
        tile=tile,
        tile_overlap=tile_overlap if tile_overlap is not None else overlap,
        batch=batch,
        compile=compile,
        threads=threads,
        cache_dir=cache_dir,
        offline=offline,
    )
    if options.tile == "auto":
        raise UsageError("bench times a fixed tile: give --tile N (or 0 for the whole image)")
    checked = check_run(options)
    asked_size = parse_size(size) if size is not None else None
    show_notices(checked.notices)

    from srcli.engine.bench import bench_model, quick_plan
    from srcli.engine.options import resolve_run

    resolved = resolve_run(checked)
    if resolved.device.type == "cpu":
        tune_host_memory()
    plan = quick_plan(resolved.device.type, size=asked_size, warmup=warmup, iters=iters, max_seconds=seconds)
    with _run_progress(enabled=resolved.device.type != "cuda") as progress:
        result = bench_model(
            size=plan.size,
            mode="protocol" if protocol else None,
            compile_mode=compile_mode,
            channels_last=channels_last,
            warmup=plan.warmup,
            iters=plan.iters,
            max_seconds=plan.max_seconds,
            min_runs=plan.min_runs,
            weights=weights,
            flops=not no_flops,
            options=resolved,
            progress=progress,
        )
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        _render(result)


def parse_size(text: str) -> tuple[int, int]:
    """``--size`` text as (height, width): ``"256"`` -> (256, 256); ``"320x240"`` (width x height) -> (240, 320)."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise UsageError(f"--size must be N or WxH in input pixels, not '{text}'") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 1:
        raise UsageError(f"--size must be N or WxH in input pixels, not '{text}'")
    width, height = values
    return height, width


@contextlib.contextmanager
def _run_progress(enabled: bool) -> Iterator[Any]:
    """A transient Rich bar over the warm-up and timed runs (``srcli.engine.bench.BenchProgress``), or ``None``.

    Off on CUDA, where runs are queued faster than they run and a drawing thread would share the host.
    """
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    display = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    )
    tasks: dict[str, Any] = {}

    def report(phase: str, done: int, total: int) -> None:
        if phase not in tasks:
            for other in tasks.values():
                display.remove_task(other)
            tasks.clear()
            tasks[phase] = display.add_task(f"{phase} runs", total=total)
        display.update(tasks[phase], completed=done, total=total)

    with display:
        yield report
