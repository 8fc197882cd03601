"""One image through the evaluation protocol: the per-image steps of ``srcli.evaluate``, as reusable functions.

``srcli eval`` and ``srcli compare`` must give the same number for the same model on the same image, so
both go through these steps: :func:`load_hr` (read as RGB, crop bottom/right to a multiple of the scale,
refuse an image too small to score), :func:`srcli.eval.protocol.make_lr` (MATLAB bicubic, rounded to
uint8), :class:`ProtocolModel` (the model run with its paper's inference protocol, exactly as the
evaluation runs it) and :func:`score_image` (PSNR / SSIM from :func:`srcli.eval.protocol.score`, every
other metric from :func:`srcli.eval.quality.quality_scores`).

Metric names: ``psnr`` and ``ssim`` always, plus every name :data:`srcli.eval.quality.QUALITY_METRICS`
registers (when that module is present), so a metric added there is accepted everywhere at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from srcli.errors import ImageReadError, UsageError

if TYPE_CHECKING:
    import torch

    from srcli.engine.options import ResolvedRun
    from srcli.hub.loading import LoadedModel
    from srcli.registry import InferenceProtocol

#: The paper-protocol metrics every evaluation computes.
BASE_METRICS: tuple[str, ...] = ("psnr", "ssim")

#: How a metric is written in tables and figures (others: upper case).
_LABELS = {"psnr": "PSNR", "ssim": "SSIM", "ms-ssim": "MS-SSIM", "gmsd": "GMSD", "fsim": "FSIM", "fsimc": "FSIMc"}


def available_metrics() -> dict[str, bool]:
    """Every metric name that :func:`score_image` computes, mapped to whether a higher value is better.

    ``psnr`` and ``ssim``, then the names registered in ``srcli.eval.quality.QUALITY_METRICS`` (if that
    module is installed). Imports torch when the quality module is present.
    """
    names = dict.fromkeys(BASE_METRICS, True)
    try:
        from srcli.eval.quality import QUALITY_METRICS
    except ImportError:  # an install without the extra metrics
        return names
    names.update(QUALITY_METRICS)
    return names


#: Every metric name :func:`available_metrics` gives with the quality module installed, known without
#: importing torch, so that a command line can refuse an unknown name before torch loads
#: (``tests/test_eval_metrics_cli.py`` keeps the two equal).
METRIC_NAMES: tuple[str, ...] = ("psnr", "ssim", "ms-ssim", "gmsd", "fsim", "fsimc")


def check_metric_names(values: Iterable[str] | None, *, always: Iterable[str] = BASE_METRICS) -> list[str]:
    """:func:`parse_metrics` against :data:`METRIC_NAMES`, without importing torch: for command lines."""
    return parse_metrics(values, always=always, known=METRIC_NAMES)


def parse_metrics(
    values: Iterable[str] | None, *, always: Iterable[str] = BASE_METRICS, known: Iterable[str] | None = None
) -> list[str]:
    """``["psnr,gmsd", "fsim"]`` -> ``["psnr", "ssim", "gmsd", "fsim"]``: the names given (comma lists
    allowed, case ignored, duplicates dropped), after the ``always`` ones; unknown names raise ``UsageError``.

    ``known``: the accepted names (default: :func:`available_metrics`, which imports torch)."""
    known = list(available_metrics() if known is None else known)
    wanted = list(always) + [v.strip().lower() for item in values or [] for v in item.split(",") if v.strip()]
    unknown = [m for m in wanted if m not in known]
    if unknown:
        raise UsageError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    return list(dict.fromkeys(wanted))


def metric_label(name: str) -> str:
    """The display name of a metric (``ms-ssim`` -> ``MS-SSIM``)."""
    return _LABELS.get(name, name.upper())


def format_metric(name: str, value: float | None) -> str:
    """A value as ``srcli eval`` prints it: PSNR to 2 decimals, the others to 4; ``-`` where not computed."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.2f}" if name == "psnr" else f"{value:.4f}"


def load_hr(path: str | Path, scale: int) -> torch.Tensor:
    """The HR image as the evaluation scores it: (3, H, W) uint8 RGB cropped bottom/right to a multiple of
    ``scale``. Raises ``ImageReadError`` for an unreadable image or one too small to score at ``scale``."""
    from srcli.eval.protocol import modcrop
    from srcli.io.images import read_rgb_uint8

    hr = modcrop(read_rgb_uint8(path), scale)
    if min(hr.shape[-2:]) < 2 * scale + 11:
        raise ImageReadError(f"{path}: too small ({hr.shape[-1]}x{hr.shape[-2]}) for x{scale}")
    return hr


@dataclass
class ProtocolModel:
    """A loaded model that runs as ``srcli.evaluate`` runs it: the paper's inference protocol (or the one
    given), the run's precision, self-ensemble and tile batch. Call it on an LR image (3, h, w) in [0, 1]
    to get the SR image (3, h*s, w*s), float on the CPU, not clamped."""

    resolved: ResolvedRun
    loaded: LoadedModel
    protocol: InferenceProtocol

    @property
    def name(self) -> str:
        """The model's canonical name."""
        return self.loaded.spec.name

    @property
    def scale(self) -> int:
        """The model's scale factor."""
        return self.resolved.scale

    def __call__(self, lr: torch.Tensor) -> torch.Tensor:
        """Super-resolve one LR image (3, h, w) in [0, 1]."""
        from srcli.engine.inference import run_model

        o = self.resolved.options
        return run_model(
            self.loaded,
            lr[None].to(self.resolved.device),
            protocol=self.protocol,
            self_ensemble=o.self_ensemble,
            precision=self.resolved.precision,  # type: ignore[arg-type]
            tile_batch=o.batch,
            full_batches=o.compile,
        )[0].cpu()

    def record(self) -> dict[str, Any]:
        """What ran, as ``EvalResult.protocol`` records it (model, dtype, device, inference, weights)."""
        o = self.resolved.options
        return {
            "model": self.name,
            "dtype": self.resolved.precision,
            "device": str(self.resolved.device),
            "inference": self.protocol.describe(),
            "self_ensemble": o.self_ensemble,
            "compiled": o.compile,
            "weights": str(self.loaded.weights_path) if self.loaded.weights_path else None,
            "weights_sha256": self.loaded.weights_sha256,
        }


def load_protocol_model(
    resolved: ResolvedRun,
    *,
    protocol: InferenceProtocol | None = None,
    reporter: Callable[[str, int, int | None], None] | None = None,
) -> ProtocolModel:
    """Load ``resolved``'s model (downloading its weights through ``reporter`` if needed) for protocol runs;
    ``compile`` in its options wraps it in ``torch.compile`` as the evaluation does."""
    from srcli.engine.inference import optimise_for_inference

    loaded = resolved.load(reporter)
    if resolved.options.compile:
        loaded = optimise_for_inference(loaded, resolved.device, channels_last=False, compile=True)
    return ProtocolModel(resolved=resolved, loaded=loaded, protocol=protocol or loaded.spec.protocol)


def score_image(
    sr01: torch.Tensor, hr_uint8: torch.Tensor, scale: int, metrics: Iterable[str] = BASE_METRICS
) -> dict[str, float]:
    """The ``metrics`` of an SR image (3, H, W) in [0, 1] against its mod-cropped HR (3, H, W) uint8, under
    the evaluation protocol (uint8 levels, ``scale`` px border crop, Y channel; FSIMc on RGB).

    A metric that cannot be computed on this image (MS-SSIM needs 176 px after the crop) is NaN.
    Returns ``{name: value}`` in the order asked.
    """
    from srcli.eval.protocol import score

    names = list(metrics)
    out: dict[str, float] = {}
    if "psnr" in names or "ssim" in names:
        p, s = score(sr01, hr_uint8, scale)
        out.update(psnr=p, ssim=s)
    extra = [m for m in names if m not in BASE_METRICS]
    if extra:
        from srcli.eval.quality import quality_scores

        for name in extra:
            try:
                out.update(quality_scores(sr01, hr_uint8, scale, [name]))
            except ValueError:  # e.g. too small for MS-SSIM's five scales
                out[name] = math.nan
    return {name: out[name] for name in names}
