"""From a registry name to a ready ``nn.Module`` with verified weights."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from srcli.hub.cache import cache_root, offline_requested, sha256_file
from srcli.hub.checkpoint import load_strict, read_checkpoint, unwrap_state_dict
from srcli.hub.download import ProgressReporter, fetch
from srcli.hub.manifest import get_entry
from srcli.registry import ModelSpec, get_model


@dataclass
class LoadedModel:
    """A built, weight-loaded model in eval mode, with the facts needed to run and report it."""

    spec: ModelSpec
    scale: int
    module: Any  # torch.nn.Module
    weights_path: Path | None
    weights_sha256: str | None


def resolve_weights(
    spec: ModelSpec,
    scale: int,
    *,
    weights: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool | None = None,
    reporter: ProgressReporter | None = None,
) -> Path | None:
    """The checkpoint file to load: ``weights`` if given, else the pinned one (downloaded if needed)."""
    spec.check_scale(scale)
    if weights is not None:
        return Path(weights)
    if not spec.needs_weights:
        return None
    from srcli.errors import WeightsError

    if scale not in spec.weight_scales:
        have = ", ".join(f"x{s}" for s in spec.weight_scales) or "none"
        raise WeightsError(
            f"no published weights for '{spec.name}' x{scale} (pinned: {have}); "
            "pass a checkpoint with --weights FILE" + (f". {spec.notes}" if spec.notes else "")
        )
    entry = get_entry(spec.weights_key(scale))
    return fetch(entry, cache_root(cache_dir), offline=offline_requested(offline), reporter=reporter)


def load_model(
    name: str,
    scale: int,
    *,
    weights: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool | None = None,
    device: str = "cpu",
    reporter: ProgressReporter | None = None,
) -> LoadedModel:
    """Build model ``name`` at ``scale``, load its weights strictly and put it in eval mode on ``device``."""
    spec = get_model(name)
    spec.check_scale(scale)
    module = spec.build(scale)
    path = resolve_weights(spec, scale, weights=weights, cache_dir=cache_dir, offline=offline, reporter=reporter)
    digest = None
    if path is not None:
        state = unwrap_state_dict(read_checkpoint(path), spec.checkpoint_keys, spec.strip_prefix)
        load_strict(module, state, source=str(path), ignore_keys=spec.ignore_keys)
        digest = sha256_file(path)
    module.eval().to(device)
    for p in module.parameters():
        p.requires_grad_(False)
    return LoadedModel(spec=spec, scale=scale, module=module, weights_path=path, weights_sha256=digest)
