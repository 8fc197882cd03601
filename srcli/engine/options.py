"""The one options record for running a model, and the one place it is checked and resolved.

``RunOptions`` holds what the user asked for (model, scale, weights, device, precision, tile, overlap,
batch, compile, self-ensemble, outscale, threads, cache): the image job, the video job, ``srcli eval``,
``srcli bench`` and the library all take it. Two steps turn it into something to run:

- ``check_run(options)``: pure Python, no torch. Canonical model name, a scale the model has, every
  range (tile, overlap, batch, outscale, threads, precision name); an overlap too large for the tile
  is reduced, with a notice. Commands call it before anything slow, so a bad option fails in
  milliseconds and before any model loads.
- ``resolve_run(options)``: picks the device once (a ``torch.device``), applies the thread count,
  settles the precision for that device and builds the engine's ``EngineOptions``. The result,
  ``ResolvedRun``, is what executors hand around; nothing downstream looks at the strings again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from srcli.errors import DeviceError, UsageError
from srcli.registry import DEFAULT_MODEL, ModelSpec, get_model

if TYPE_CHECKING:
    import torch

    from srcli.engine.upscale import EngineOptions
    from srcli.hub.loading import LoadedModel

#: Precision names ``--precision`` takes (``auto``: what the registry marks safe on the device).
PRECISION_CHOICES: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
#: Smallest ``--tile``: below it a tile is mostly overlap and a small image takes thousands of passes.
MIN_TILE = 16
#: The refusal of half precision on a CPU (no half-precision kernels for several layers there; peers crash on it).
FP16_ON_CPU = "fp16 is not supported on the CPU; use --precision bf16 or fp32"
#: Largest ``--outscale``: the engine chains at most three model passes before its final resize.
MAX_OUTSCALE = 64.0


@dataclass(frozen=True)
class RunOptions:
    """How to run a model, as asked for. ``scale=None``: the model's largest scale with weights."""

    model: str = DEFAULT_MODEL
    scale: int | None = None
    #: A checkpoint file instead of the pinned weights.
    weights: str | None = None
    #: ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    device: str = "auto"
    precision: str = "auto"
    #: ``"auto"`` (from free memory and the model's hints), 0 (whole image) or a side in LR pixels.
    tile: int | str = "auto"
    #: LR pixels neighbouring tiles share; ``None``: the model's own value.
    tile_overlap: int | None = None
    #: Tiles (or whole frames) per forward pass; ``None``: 4 on CUDA, 1 elsewhere.
    batch: int | None = None
    compile: bool = False
    self_ensemble: bool = False
    #: Final scale when it differs from the model's (more passes, then a high-quality resize).
    outscale: float | None = None
    #: CPU threads for torch; ``None``: torch's default.
    threads: int | None = None
    cache_dir: str | None = None
    offline: bool | None = None

    @property
    def output_scale(self) -> float:
        """The factor from input to output size (``outscale`` where given, else the model's scale)."""
        if self.scale is None:
            raise ValueError("check_run() fills in the scale")
        return self.outscale if self.outscale is not None else float(self.scale)


@dataclass(frozen=True)
class CheckedRun:
    """``RunOptions`` with every field valid and filled in (model name canonical, scale and overlap set)."""

    options: RunOptions
    spec: ModelSpec
    #: Things the user should know about adjusted options (one line each).
    notices: tuple[str, ...] = ()


def parse_tile(value: str | int) -> int | str:
    """``--tile`` text (``auto``, ``0`` or a number of pixels) as ``RunOptions.tile`` takes it."""
    if value == "auto" or isinstance(value, int):
        return value
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"--tile must be 'auto', 0 or a number of pixels, not '{value}'") from None


def default_scale(spec: ModelSpec) -> int:
    """The scale used when none is given: the model's largest with weights (4 for every model today)."""
    return max(spec.weight_scales or spec.scales)


def check_run(options: RunOptions) -> CheckedRun:
    """Validate and complete ``options`` without importing torch (see the module docstring).

    Raises ``UsageError`` naming the option and the accepted values.
    """
    spec = get_model(options.model)
    scale = options.scale if options.scale is not None else default_scale(spec)
    spec.check_buildable(scale)
    notices: list[str] = []
    if options.precision not in PRECISION_CHOICES:
        raise UsageError(f"--precision must be one of {', '.join(PRECISION_CHOICES)}, not '{options.precision}'")
    if options.precision == "fp16" and options.device.strip().lower() == "cpu":
        raise DeviceError(FP16_ON_CPU)  # known from the words alone; resolve_precision refuses a CPU found by "auto"
    tile = parse_tile(options.tile)
    if tile != "auto":
        if not isinstance(tile, int) or tile < 0:
            raise UsageError(f"--tile must be 'auto', 0 or a number of pixels, not {tile!r}")
        if 0 < tile < MIN_TILE:
            raise UsageError(f"--tile {tile} is too small (at least {MIN_TILE} pixels; 0 runs the whole image)")
    overlap = options.tile_overlap
    if overlap is not None and overlap < 0:
        raise UsageError(f"--tile-overlap must be >= 0, not {overlap}")
    if isinstance(tile, int) and tile > 0:
        wanted = spec.tile_overlap if overlap is None else overlap
        if 2 * wanted >= tile:
            # Tiles advance by tile - overlap: an overlap of half the tile or more re-runs most pixels.
            reduced = (tile - 1) // 4
            notices.append(
                f"--tile-overlap {wanted} is too large for --tile {tile} (it must be under half the tile): "
                f"using {reduced}"
            )
            overlap = reduced
    if options.batch is not None and options.batch < 1:
        raise UsageError(f"--batch must be >= 1, not {options.batch}")
    if options.threads is not None and options.threads < 1:
        raise UsageError(f"--threads must be >= 1, not {options.threads}")
    if options.outscale is not None:
        value = options.outscale
        if not math.isfinite(value) or value <= 0:
            raise UsageError(f"--outscale must be a positive number, not {value:g}")
        if value > MAX_OUTSCALE:
            raise UsageError(f"--outscale {value:g} is above the limit of {MAX_OUTSCALE:g}")
    checked = replace(options, model=spec.name, scale=scale, tile=tile, tile_overlap=overlap)
    return CheckedRun(options=checked, spec=spec, notices=tuple(notices))


@dataclass(frozen=True)
class ResolvedRun:
    """A checked ``RunOptions`` bound to a device: what every executor runs with."""

    options: RunOptions
    spec: ModelSpec
    device: torch.device
    precision: str
    engine: EngineOptions
    notices: tuple[str, ...] = field(default=())

    @property
    def scale(self) -> int:
        """The model's scale factor."""
        assert self.options.scale is not None
        return self.options.scale

    def describe_device(self) -> str:
        """A human-readable device name, e.g. ``cpu (2 threads)``."""
        from srcli.engine.devices import describe_device

        return describe_device(self.device)

    def load(self, reporter: Any = None) -> LoadedModel:
        """Build the model and load its verified weights onto the device."""
        from srcli.hub.loading import load_model

        o = self.options
        assert o.scale is not None
        return load_model(
            o.model,
            o.scale,
            weights=o.weights,
            cache_dir=o.cache_dir,
            offline=o.offline,
            device=self.device,
            reporter=reporter,
        )


def resolve_run(options: RunOptions | CheckedRun) -> ResolvedRun:
    """Check ``options`` (if not yet), pick the device, apply the thread count, settle the precision."""
    import torch

    from srcli.engine.devices import pick_device, resolve_precision
    from srcli.engine.upscale import EngineOptions

    checked = options if isinstance(options, CheckedRun) else check_run(options)
    o = checked.options
    device = pick_device(o.device)
    if o.threads is not None:
        torch.set_num_threads(o.threads)
    precision = resolve_precision(checked.spec, device, o.precision)
    engine = EngineOptions(
        precision=precision,
        tile=o.tile,
        overlap=o.tile_overlap,
        batch=o.batch,
        self_ensemble=o.self_ensemble,
        outscale=o.outscale,
    )
    return ResolvedRun(
        options=o, spec=checked.spec, device=device, precision=precision, engine=engine, notices=checked.notices
    )
