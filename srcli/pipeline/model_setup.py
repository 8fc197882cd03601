"""What the image and video jobs settle once, before their first input: device, precision, model, engine."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from srcli.pipeline.report import BatchReport

if TYPE_CHECKING:
    import torch

    from srcli.engine.upscale import EngineOptions
    from srcli.hub.loading import LoadedModel


class ModelSettings(Protocol):
    """The options both jobs take for the model (``JobOptions`` and ``VideoOptions`` have them all)."""

    model: str
    scale: int
    weights: str | None
    cache_dir: str | None
    offline: bool | None
    device: str
    precision: str
    tile: int | str
    tile_overlap: int | None
    batch: int | None
    self_ensemble: bool
    outscale: float | None
    compile: bool


def set_up_model(
    options: ModelSettings,
    report: BatchReport,
    *,
    needed: bool,
    loaded: LoadedModel | None = None,
    reporter: Any = None,
    default_batch: Callable[[torch.device], int] | None = None,
) -> tuple[torch.device, LoadedModel | None, EngineOptions]:
    """Pick the device and precision (recorded in ``report``), load the model when ``needed`` and not
    given, and build the engine options, set up for the job by ``prepare_for_job``.

    ``default_batch(device)`` gives the batch a compiled model is held to when ``options.batch`` is unset
    (the video job's frames per pass). Returns (device, model or ``None``, engine options).
    """
    from srcli.engine.devices import describe_device, pick_device, resolve_precision
    from srcli.engine.upscale import EngineOptions, prepare_for_job
    from srcli.hub.loading import load_model
    from srcli.registry import get_model

    device = pick_device(options.device)
    precision = resolve_precision(get_model(options.model), device, options.precision)
    report.device, report.precision = describe_device(device), precision
    if loaded is None and needed:
        loaded = load_model(
            options.model,
            options.scale,
            weights=options.weights,
            cache_dir=options.cache_dir,
            offline=options.offline,
            device=str(device),
            reporter=reporter,
        )
    engine = EngineOptions(
        precision=precision,
        tile=options.tile,
        overlap=options.tile_overlap,
        batch=options.batch,
        self_ensemble=options.self_ensemble,
        outscale=options.outscale,
    )
    if loaded is not None:
        batch = default_batch(device) if default_batch else None
        loaded, engine = prepare_for_job(loaded, device, engine, compile=options.compile, default_batch=batch)
        report.compiled = options.compile
    return device, loaded, engine
