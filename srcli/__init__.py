"""srcli: batch image and video super-resolution.

The library API (what the CLI calls too) is imported lazily so that ``import srcli`` stays light:

- ``srcli.list_models()``: every registered model (``ModelSpec`` records).
- ``srcli.get_model(name)``: one model's facts, by name or alias.
- ``srcli.load_model(name, scale, weights=None, ...)``: a ready ``nn.Module`` with verified weights.
- ``srcli.evaluate(model, dataset, scale=None, ..., options=None)``: the papers' benchmark protocol (PSNR/SSIM on Y).
- ``srcli.upscale(image, model=..., scale=None, options=None)``: super-resolve a tensor, array, Pillow image or
  file (default model ``srcli.registry.DEFAULT_MODEL``, survey-net); ``options`` is a ``RunOptions``.
- ``srcli.RunOptions``: how a model runs (model, scale, device, precision, tiles ...), shared by the library and
  the CLI; ``srcli.DEFAULT_MODEL``: the model used when none is named.
"""

from __future__ import annotations

from typing import Any

from srcli._version import __version__

__all__ = [
    "DEFAULT_MODEL",
    "RunOptions",
    "__version__",
    "evaluate",
    "get_model",
    "list_models",
    "load_model",
    "upscale",
]

_LAZY = {
    "list_models": ("srcli.registry", "list_models"),
    "get_model": ("srcli.registry", "get_model"),
    "load_model": ("srcli.hub.loading", "load_model"),
    "evaluate": ("srcli.eval.runner", "evaluate"),
    "upscale": ("srcli.pipeline.api", "upscale"),
    "RunOptions": ("srcli.engine.options", "RunOptions"),
    "DEFAULT_MODEL": ("srcli.registry", "DEFAULT_MODEL"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'srcli' has no attribute {name!r}")
