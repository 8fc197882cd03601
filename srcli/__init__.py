"""srcli: batch image and video super-resolution.

The library API (what the CLI calls too) is imported lazily so that ``import srcli`` stays light:

- ``srcli.list_models()``: every registered model (``ModelSpec`` records).
- ``srcli.get_model(name)``: one model's facts, by name or alias.
- ``srcli.load_model(name, scale, weights=None, ...)``: a ready ``nn.Module`` with verified weights.
- ``srcli.evaluate(model, dataset, scale, ...)``: the papers' benchmark protocol (PSNR/SSIM on Y).
- ``srcli.upscale(image, model=..., scale=...)``: super-resolve a tensor, array, Pillow image or file.
"""

from __future__ import annotations

from typing import Any

from srcli._version import __version__

__all__ = ["__version__", "evaluate", "get_model", "list_models", "load_model", "upscale"]

_LAZY = {
    "list_models": ("srcli.registry", "list_models"),
    "get_model": ("srcli.registry", "get_model"),
    "load_model": ("srcli.hub.loading", "load_model"),
    "evaluate": ("srcli.eval.runner", "evaluate"),
    "upscale": ("srcli.pipeline.api", "upscale"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'srcli' has no attribute {name!r}")
