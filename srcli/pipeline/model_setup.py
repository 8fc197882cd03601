"""What the image and video jobs settle once, before their first input: the model on its device, the engine."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from srcli.pipeline.report import BatchReport

if TYPE_CHECKING:
    import torch

    from srcli.engine.options import ResolvedRun
    from srcli.engine.upscale import EngineOptions
    from srcli.hub.loading import LoadedModel


def set_up_model(
    resolved: ResolvedRun,
    report: BatchReport,
    *,
    needed: bool,
    loaded: LoadedModel | None = None,
    reporter: Any = None,
    default_batch: Callable[[torch.device], int] | None = None,
) -> tuple[LoadedModel | None, EngineOptions]:
    """Record the resolved device and precision in ``report``, load the model when ``needed`` and not given,
    and set it and the engine options up for the job with ``prepare_for_job``.

    ``default_batch(device)`` gives the batch a compiled model is held to when no ``--batch`` is set
    (the video job's frames per pass). Returns (model or ``None``, engine options).
    """
    from srcli.engine.upscale import prepare_for_job

    report.device, report.precision = resolved.describe_device(), resolved.precision
    if loaded is None and needed:
        loaded = resolved.load(reporter)
    engine = resolved.engine
    if loaded is not None:
        batch = default_batch(resolved.device) if default_batch else None
        loaded, engine = prepare_for_job(
            loaded, resolved.device, engine, compile=resolved.options.compile, default_batch=batch
        )
        report.compiled = resolved.options.compile
    return loaded, engine
