"""Timing a model on synthetic input: output megapixels per second, latency, peak memory and FLOP rate.

``bench_model`` builds the model (random weights by default: no download, and the speed of these
models does not depend on the weights' values), applies the engine's speed settings, counts the
FLOPs of one run with ``torch.utils.flop_counter`` (once, outside the timing), warms up, then
times the runs: with CUDA events around each run and one synchronisation after the loop on CUDA,
with the host clock elsewhere. A *run* is one of:

* ``whole``: one forward pass over ``batch`` images of ``size`` (``forward_whole``: the model alone,
  with its value range and padding); the way to measure batched tiles of a given size;
* ``tiled``: one image of ``size`` through ``upscale_tensor`` with ``tile``-pixel tiles, ``batch`` per
  forward pass (what ``srcli upscale`` does, feathered merge included);
* ``protocol``: one image through the paper's tiled protocol (``forward_tiled_average``, e.g. ASID's
  64 px tiles with 24 px overlap), ``batch`` tiles per forward pass.

FLOPs count a multiply-add as 2, convolutions, matrix products and attention only (what
``FlopCounterMode`` counts); elementwise work is left out, so the achieved rate is a lower bound
on the work the device does.
"""

from __future__ import annotations

import copy
import os
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch

from srcli.engine.devices import describe_device
from srcli.engine.inference import (
    forward_tiled_average,
    forward_whole,
    optimise_for_inference,
    prefers_channels_last,
)
from srcli.engine.options import CheckedRun, ResolvedRun, RunOptions, resolve_run
from srcli.engine.upscale import EngineOptions, upscale_tensor
from srcli.errors import DeviceOutOfMemoryError, UsageError
from srcli.hub.loading import LoadedModel, load_model
from srcli.registry import get_model

Mode = Literal["whole", "tiled", "protocol"]
MODES: tuple[str, ...] = ("whole", "tiled", "protocol")

#: Dense (no sparsity) peak TFLOP/s per precision from the vendors' data sheets, matched in order against
#: ``torch.cuda.get_device_name`` (first match wins). ``fp32`` is the CUDA-core rate, ``tf32`` the tensor-core
#: rate for float32 inputs; H200 and H100 SXM share one chip and clocks.
PEAK_TFLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    (r"H200", {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4}),
    (r"H100.*PCI", {"fp32": 51.2, "tf32": 378.0, "bf16": 756.0, "fp16": 756.0}),
    (r"H100.*NVL", {"fp32": 60.0, "tf32": 417.5, "bf16": 835.0, "fp16": 835.0}),
    (r"H100", {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4}),
    (r"A100", {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0}),
    (r"L40S", {"fp32": 91.6, "tf32": 183.0, "bf16": 362.0, "fp16": 362.0}),
    (r"RTX 4090", {"fp32": 82.6, "tf32": 82.6, "bf16": 165.2, "fp16": 165.2}),
    (r"RTX 3090", {"fp32": 35.6, "tf32": 35.6, "bf16": 71.0, "fp16": 71.0}),
    (r"\bL4\b", {"fp32": 30.3, "tf32": 60.0, "bf16": 121.0, "fp16": 121.0}),
    (r"\bA10G?\b", {"fp32": 31.2, "tf32": 62.5, "bf16": 125.0, "fp16": 125.0}),
    (r"V100", {"fp32": 15.7, "fp16": 125.0}),
    (r"\bT4\b", {"fp32": 8.1, "fp16": 65.0}),
)

#: Runs timed at least, whatever ``max_seconds`` says (a median needs a few).
MIN_TIMED_RUNS = 3

#: Called as ``progress(phase, done, total)`` after each run, ``phase`` being ``"warm-up"`` or ``"timed"``
#: (``total``: the most runs of that phase; a time budget may end the timed ones sooner).
BenchProgress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class RunPlan:
    """Input size and run counts of a measurement (``quick_plan`` fills what the user left open)."""

    #: LR input (height, width).
    size: tuple[int, int]
    warmup: int
    iters: int
    max_seconds: float | None
    #: Timed runs at least, whatever ``max_seconds`` says.
    min_runs: int = MIN_TIMED_RUNS


#: Defaults on an accelerator: a 256 px input, 3 warm-up runs, 20 timed runs, no time limit.
ACCELERATOR_PLAN = RunPlan(size=(256, 256), warmup=3, iters=20, max_seconds=None)
#: Defaults on a CPU, sized for a quick try that ends in seconds: 64 px, 1 warm-up run, a 3 s budget that
#: may stop after one timed run (a large transformer takes seconds per run on a laptop's CPU).
CPU_PLAN = RunPlan(size=(64, 64), warmup=1, iters=20, max_seconds=3.0, min_runs=1)


def quick_plan(
    device_type: str,
    *,
    size: tuple[int, int] | None = None,
    warmup: int | None = None,
    iters: int | None = None,
    max_seconds: float | None = None,
) -> RunPlan:
    """The plan for a device type, with what was asked for kept: the CPU's quick defaults, else the accelerator's.

    The CPU's time budget (and its one-run minimum) applies only when neither ``iters`` nor ``max_seconds``
    is given; a budget asked for still times ``MIN_TIMED_RUNS`` runs at least.
    """
    base = CPU_PLAN if device_type == "cpu" else ACCELERATOR_PLAN
    quick = iters is None and max_seconds is None
    return RunPlan(
        size=size or base.size,
        warmup=base.warmup if warmup is None else warmup,
        iters=base.iters if iters is None else iters,
        max_seconds=base.max_seconds if quick else max_seconds,
        min_runs=base.min_runs if quick else MIN_TIMED_RUNS,
    )


def peak_tflops(device_name: str, precision: str) -> float | None:
    """The dense peak TFLOP/s of a GPU named ``device_name`` in ``precision`` (``None``: not in the table).

    fp32 counts at the TF32 tensor-core rate when float32 matrix products may use TF32
    (``torch.set_float32_matmul_precision`` other than ``highest``), else at the CUDA-core rate.
    """
    key = precision
    if precision == "fp32" and torch.get_float32_matmul_precision() != "highest":
        key = "tf32"
    for pattern, peaks in PEAK_TFLOPS:
        if re.search(pattern, device_name):
            return peaks.get(key)
    return None


@dataclass
class BenchResult:
    """One measurement. Times are medians over the timed runs; one run is described in the module docstring."""

    model: str
    scale: int
    mode: str
    device: str
    device_name: str
    precision: str
    #: LR input (height, width) of each image.
    input_size: tuple[int, int]
    #: Images per run (``whole``) or tiles per forward pass (``tiled``, ``protocol``).
    batch: int
    tile: int | None
    overlap: int | None
    #: Tiles per image (``tiled``, ``protocol``; 1 for ``whole``).
    tiles: int
    channels_last: bool
    compiled: bool
    weights: str
    params: int
    threads: int
    warmup: int
    timed_runs: int
    #: Seconds the warm-up took (compilation and cuDNN autotuning included).
    warmup_seconds: float
    latency_ms: float
    latency_min_ms: float
    #: Every timed run, in order (ms).
    run_ms: list[float]
    #: Output megapixels of one run.
    output_megapixels: float
    mp_per_s: float
    #: Peak memory allocated by tensors during the timed runs (CUDA only).
    peak_memory_mb: float | None
    #: FLOPs of one run (multiply-add = 2), ``None`` when not counted.
    flops: float | None
    tflops: float | None
    peak_tflops: float | None
    #: Achieved TFLOP/s over the device's dense peak in this precision (known GPUs only).
    peak_fraction: float | None
    #: Whether the last output was all finite (random weights can overflow in half precision).
    finite: bool
    #: Tiles of the last run re-run in fp32 because their reduced-precision output was not finite.
    refined_tiles: int
    torch_version: str
    #: 1-minute load average of the machine when the timing ended (CPU figures on a shared machine).
    load_average: float | None
    #: On the CPU: its bf16 / AMX / AVX-512 support and the fp32 and bf16 matrix-product rates measured in about
    #: a second (``srcli.engine.cpu_features.measure_matmul_rates``), the "peak" the fraction is taken against.
    cpu: dict[str, Any] | None = None

    @property
    def best_mp_per_s(self) -> float:
        """Output MP/s of the fastest run: on a shared machine, the closest to the device's own speed."""
        return self.output_megapixels / (self.latency_min_ms / 1e3)

    @property
    def gflops_per_output_mp(self) -> float | None:
        """Work per output megapixel, independent of batch and tiling (GFLOP)."""
        return None if self.flops is None else self.flops / 1e9 / self.output_megapixels

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record."""
        record = asdict(self)
        record["input_size"] = list(self.input_size)
        record["gflops_per_output_mp"] = self.gflops_per_output_mp
        record["best_mp_per_s"] = self.best_mp_per_s
        return record


def build_model(
    name: str,
    scale: int,
    device: torch.device,
    weights: str = "random",
    *,
    cache_dir: str | None = None,
    offline: bool | None = None,
) -> LoadedModel:
    """The model to time: ``random`` (seeded initialisation, no download), ``pinned`` (the cache) or a file."""
    spec = get_model(name)
    if weights == "pinned":
        return load_model(name, scale, cache_dir=cache_dir, offline=offline, device=str(device))
    if weights != "random":
        return load_model(name, scale, weights=Path(weights), cache_dir=cache_dir, offline=offline, device=str(device))
    spec.check_scale(scale)
    torch.manual_seed(0)
    module = spec.build(scale).eval().to(device)
    for p in module.parameters():
        p.requires_grad_(False)
    return LoadedModel(spec=spec, scale=scale, module=module, weights_path=None, weights_sha256=None)


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs (multiply-add = 2) of one call of ``fn``, as ``torch.utils.flop_counter`` counts them.

    PyTorch's table misses the CPU's fused attention kernel, so it is counted like the CUDA ones.
    """
    from torch.utils import flop_counter

    def sdpa_cpu(q_shape: Any, k_shape: Any, v_shape: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
        return flop_counter.sdpa_flop_count(q_shape, k_shape, v_shape)

    custom = {}
    cpu_flash = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_flash is not None:
        custom[cpu_flash] = sdpa_cpu
    with flop_counter.FlopCounterMode(display=False, custom_mapping=custom) as counter:
        fn()
    return int(counter.get_total_flops())


def _probe(
    loaded: LoadedModel,
    fn_for: Callable[[LoadedModel], Callable[[torch.Tensor], torch.Tensor]],
    x: torch.Tensor,
    *,
    flops: bool,
    meta: bool,
) -> tuple[int | None, list[int]]:
    """(FLOPs of one run or ``None``, batch size of each model call) from one run of ``fn_for(model)(x)``."""
    if meta:
        try:
            meta_model = replace(loaded, module=copy.deepcopy(loaded.module).to("meta"))
            return _probe(meta_model, fn_for, x.to("meta"), flops=flops, meta=False)
        except Exception:  # an op without a meta kernel, or data-dependent control flow: run it for real
            pass
    seen: list[int] = []
    hook = loaded.module.register_forward_pre_hook(lambda _m, args: seen.append(int(args[0].shape[0])))
    try:
        run = fn_for(loaded)
        if flops:
            return count_flops(lambda: run(x)), seen
        run(x)
        return None, seen
    finally:
        hook.remove()


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_runs(
    fn: Callable[[torch.Tensor], torch.Tensor],
    inputs: list[torch.Tensor],
    device: torch.device,
    *,
    warmup: int,
    iters: int,
    max_seconds: float | None,
    min_runs: int = MIN_TIMED_RUNS,
    progress: BenchProgress | None = None,
) -> tuple[list[float], float, torch.Tensor]:
    """(seconds of each timed run, seconds of the warm-up, last output).

    On CUDA each run sits between two recorded events and the host waits once, after the loop, so
    the host never stalls the queue; elsewhere the host clock times each run. ``progress`` hears of
    each run as it is queued (on the host's side of a CUDA queue).
    """
    out = None
    t0 = time.perf_counter()
    for i in range(warmup):
        out = fn(inputs[i % len(inputs)])
        if progress:
            progress("warm-up", i + 1, warmup)
    _synchronize(device)
    warm_seconds = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    cuda = device.type == "cuda"
    marks: list[tuple[Any, Any]] = []
    seconds: list[float] = []
    loop_start = time.perf_counter()
    for i in range(max(1, iters)):
        x = inputs[i % len(inputs)]
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = fn(x)
            end.record()
            marks.append((start, end))
        else:
            t = time.perf_counter()
            out = fn(x)
            seconds.append(time.perf_counter() - t)
        if progress:
            progress("timed", i + 1, max(1, iters))
        # The host clock runs ahead of a CUDA queue by at most its depth: close enough for a time budget.
        if max_seconds is not None and i + 1 >= min_runs and time.perf_counter() - loop_start > max_seconds:
            break
    _synchronize(device)
    if cuda:
        seconds = [start.elapsed_time(end) / 1e3 for start, end in marks]
    assert out is not None
    return seconds, warm_seconds, out


def bench_model(
    name: str | None = None,
    scale: int | None = None,
    *,
    size: tuple[int, int] = (256, 256),
    device: str | torch.device = "auto",
    precision: str = "auto",
    mode: Mode | None = None,
    tile: int | None = None,
    overlap: int | None = None,
    batch: int = 1,
    compile: bool = False,
    compile_mode: str | None = None,
    channels_last: bool | None = None,
    cudnn_benchmark: bool = True,
    warmup: int = 3,
    iters: int = 20,
    max_seconds: float | None = None,
    min_runs: int = MIN_TIMED_RUNS,
    weights: str = "random",
    flops: bool = True,
    threads: int | None = None,
    loaded: LoadedModel | None = None,
    options: RunOptions | CheckedRun | ResolvedRun | None = None,
    progress: BenchProgress | None = None,
) -> BenchResult:
    """Time model ``name`` x``scale`` on synthetic input of ``size`` (LR height, width); see the module docstring.

    How the model runs is a ``RunOptions`` (``srcli.engine.options``), resolved once (device, threads,
    precision): ``options`` if given (``name``, ``scale``, ``device``, ``precision``, ``tile``, ``overlap``,
    ``batch``, ``compile`` and ``threads`` are then taken from it), else one built from those arguments.
    ``scale=None`` is the model's largest (4); ``tile`` 0 or ``None`` is the whole image.
    ``mode`` defaults to ``tiled`` when a tile is given, else ``whole``; ``protocol`` takes ``tile`` and
    ``overlap`` from the registry unless given. ``channels_last=None`` follows the engine's choice for the
    model and device. ``max_seconds`` caps the timed loop (at least ``min_runs`` runs). ``loaded``
    reuses an already built model (its weights then stand for ``weights``). ``weights`` is ``random`` (no
    download), ``pinned`` or a checkpoint file. ``progress`` hears of every run (``BenchProgress``).
    """
    if options is None:
        if name is None:
            raise UsageError("name the model to time")
        options = RunOptions(
            model=name,
            scale=scale,
            device=str(device),
            precision=precision,
            tile=tile or 0,
            tile_overlap=overlap,
            batch=batch,
            compile=compile,
            threads=threads,
        )
    run = options if isinstance(options, ResolvedRun) else resolve_run(options)
    o = run.options
    spec, scale, device = run.spec, run.scale, run.device
    resolved: str = run.precision
    batch = o.batch or 1
    compile = o.compile
    if o.tile == "auto":
        raise UsageError("bench times a fixed tile: give --tile N (or 0 for the whole image)")
    tile = o.tile if isinstance(o.tile, int) and o.tile > 0 else None
    overlap = o.tile_overlap
    mode = mode or ("tiled" if tile else "whole")
    if mode not in MODES:
        raise UsageError(f"unknown bench mode '{mode}' (use {', '.join(MODES)})")
    h, w = size
    if mode == "protocol":
        tile = tile or spec.protocol.tile
        overlap = spec.protocol.overlap if overlap is None else overlap
        if not tile or overlap is None:
            raise UsageError(f"model '{spec.name}' has no tiled protocol: pass --tile and --tile-overlap")
    elif mode == "tiled":
        if not tile:
            raise UsageError("the tiled mode needs --tile N (input pixels)")
        overlap = spec.tile_overlap if overlap is None else overlap
    else:
        tile = overlap = None
    if o.weights is not None:  # a checkpoint file named in the options
        weights = o.weights

    if loaded is None:
        loaded = build_model(spec.name, scale, device, weights, cache_dir=o.cache_dir, offline=o.offline)
    elif (loaded.spec.name, loaded.scale) != (spec.name, scale):
        raise UsageError(f"the model passed is '{loaded.spec.name}' x{loaded.scale}, not '{spec.name}' x{scale}")
    if compile:
        # The first calls compile (and, with CUDA graphs, record): never inside the timed loop.
        warmup = max(warmup, 3)
    is_cl = prefers_channels_last(loaded, device) if channels_last is None else channels_last
    runnable = optimise_for_inference(loaded, device, channels_last=is_cl, compile=compile, compile_mode=compile_mode)
    params = sum(p.numel() for p in loaded.module.parameters())

    n_images = batch if mode == "whole" else 1
    generator = torch.Generator(device="cpu").manual_seed(1)
    # Two inputs, alternated: repeated runs over one buffer would favour caches.
    inputs = [torch.rand(n_images, 3, h, w, generator=generator).to(device) for _ in range(2)]
    last: dict[str, Any] = {"refined": 0}
    tiles = 1
    if mode == "whole":

        def fn_for(model: LoadedModel) -> Callable[[torch.Tensor], torch.Tensor]:
            return lambda x: forward_whole(model, x, resolved)  # type: ignore[arg-type]

    elif mode == "tiled":
        assert tile is not None and overlap is not None
        options = EngineOptions(
            precision=resolved,  # type: ignore[arg-type]
            tile=tile,
            overlap=overlap,
            batch=batch,
            full_batches=compile,
        )

        def fn_for(model: LoadedModel) -> Callable[[torch.Tensor], torch.Tensor]:
            def run(x: torch.Tensor) -> torch.Tensor:
                result = upscale_tensor(model, x, options)
                last["refined"], last["tiles"] = result.refined_tiles, result.tiles
                return result.image

            return run

    else:
        assert tile is not None and overlap is not None

        def fn_for(model: LoadedModel) -> Callable[[torch.Tensor], torch.Tensor]:
            return lambda x: forward_tiled_average(
                model,
                x,
                tile,
                overlap,
                resolved,  # type: ignore[arg-type]
                batch=batch,
                full_batches=compile,
            )

    previous_benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = cudnn_benchmark
    try:
        # FLOPs, and the images the model sees per run (the tiles of a protocol), from one probe run of the eager
        # module (the compiler's kernels are opaque to the counter); shapes alone decide both, so the probe runs on
        # the meta device where it can (no arithmetic), on the real one otherwise.
        counted, seen = _probe(loaded, fn_for, inputs[0], flops=flops, meta=mode != "tiled")
        if mode == "protocol":
            tiles = sum(seen) // n_images
        seconds, warm_seconds, out = _time_runs(
            fn_for(runnable),
            inputs,
            device,
            warmup=warmup,
            iters=iters,
            max_seconds=max_seconds,
            min_runs=min_runs,
            progress=progress,
        )
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        finite = bool(torch.isfinite(out).all())
    except torch.OutOfMemoryError:
        raise DeviceOutOfMemoryError(
            f"out of memory on {device} timing '{spec.name}' x{scale} ({mode}, batch {batch}, {w}x{h})"
        ) from None
    finally:
        torch.backends.cudnn.benchmark = previous_benchmark
    if mode == "tiled":
        tiles = int(last.get("tiles", 1))

    latency = statistics.median(seconds)
    out_mp = n_images * h * w * scale * scale / 1e6
    tflops = counted / latency / 1e12 if counted is not None else None
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    peak = peak_tflops(device_name, resolved) if device.type == "cuda" else None
    cpu = None
    if device.type == "cpu":
        from srcli.engine.cpu_features import measure_matmul_rates

        # A CPU has no data-sheet table here: its measured matrix-product rate stands for the peak.
        cpu = measure_matmul_rates(1.0)
        measured = cpu.get(f"{resolved}_gflops")
        peak = measured / 1000 if measured else None
    return BenchResult(
        model=spec.name,
        scale=scale,
        mode=mode,
        device=describe_device(device),
        device_name=device_name,
        precision=resolved,
        input_size=(h, w),
        batch=batch,
        tile=tile,
        overlap=overlap,
        tiles=tiles,
        channels_last=is_cl,
        compiled=compile,
        weights=weights if loaded.weights_path is None else str(loaded.weights_path),
        params=params,
        threads=torch.get_num_threads(),
        warmup=warmup,
        timed_runs=len(seconds),
        warmup_seconds=warm_seconds,
        latency_ms=latency * 1e3,
        latency_min_ms=min(seconds) * 1e3,
        run_ms=[t * 1e3 for t in seconds],
        output_megapixels=out_mp,
        mp_per_s=out_mp / latency,
        peak_memory_mb=peak_mb,
        flops=float(counted) if counted is not None else None,
        tflops=tflops,
        peak_tflops=peak,
        peak_fraction=tflops / peak if tflops is not None and peak else None,
        cpu=cpu,
        finite=finite,
        refined_tiles=int(last["refined"]),
        torch_version=torch.__version__,
        load_average=_load_average(),
    )


def cpu_name() -> str:
    """The processor's model name where Linux says it, else the platform's word."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "cpu"


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None
