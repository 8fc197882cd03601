"""From a registry name to a ready ``nn.Module`` with verified weights."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from srcli.errors import CheckpointMismatchError, SrcliError, WeightsError
from srcli.hub.cache import cache_root, offline_requested, sha256_file
from srcli.hub.checkpoint import load_strict, mismatch_report, read_checkpoint, sniff_checkpoint, unwrap_state_dict
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


def check_placed_file(spec: ModelSpec, scale: int, path: Path, module: Any = None) -> bool:
    """Vet a checkpoint someone put in the cache by hand, before its hash is recorded and trusted.

    It must read with ``weights_only`` and hold a state dict whose keys and shapes fit ``spec`` at
    ``scale`` exactly. Returns True when that was checked, False when only readability could be (the
    architecture is not implemented yet); raises a one-line ``WeightsError`` naming the file otherwise.
    ``module`` is an already built instance, to spare building it twice.
    """
    checkpoint = read_checkpoint(path)  # never unpickles arbitrary objects; its error names the file
    try:
        state = unwrap_state_dict(checkpoint, spec.checkpoint_keys, spec.strip_prefix)
    except WeightsError as exc:
        raise WeightsError(f"{path} (placed in the cache by hand): {exc}") from None
    if not spec.implemented:
        return False
    module = module if module is not None else spec.build(scale)
    ignore = set(spec.ignore_keys)
    state = {k: v for k, v in state.items() if k not in ignore and k.split(".")[-1] not in ignore}
    report = mismatch_report(module, state)
    if report:
        raise CheckpointMismatchError(
            f"{path} was placed in the cache by hand but is not a '{spec.name}' x{scale} checkpoint "
            f"({type(module).__name__}): {report}; replace or delete it"
        )
    return True


def resolve_weights(
    spec: ModelSpec,
    scale: int,
    *,
    weights: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool | None = None,
    reporter: ProgressReporter | None = None,
    module: Any = None,
) -> Path | None:
    """The checkpoint file to load: ``weights`` if given, else the pinned one (downloaded if needed).

    A file found in the cache that was placed there by hand (no pinned or recorded hash) is
    structure-checked first (``check_placed_file``; ``module``, if given, is used for that).
    """
    spec.check_scale(scale)
    if weights is not None:
        return Path(weights)
    if not spec.needs_weights:
        return None
    if not spec.weight_scales:
        raise WeightsError(
            f"no weights were ever published for '{spec.name}': train them with 'srcli train' "
            "or pass a checkpoint with --weights FILE"
        )
    if scale not in spec.weight_scales:
        have = ", ".join(f"x{s}" for s in spec.weight_scales) or "none"
        raise WeightsError(
            f"no published weights for '{spec.name}' x{scale} (pinned: {have}); "
            "pass a checkpoint with --weights FILE" + (f". {spec.notes}" if spec.notes else "")
        )
    entry = get_entry(spec.weights_key(scale))
    return fetch(
        entry,
        cache_root(cache_dir),
        offline=offline_requested(offline),
        reporter=reporter,
        check_placed=lambda path: check_placed_file(spec, scale, path, module),
    )


def check_provenance(spec: ModelSpec, scale: int, path: Path, checkpoint: Any) -> None:
    """Refuse a file made by ``srcli train`` for another model or scale, naming what it was made for.

    srcli's provenance is the safetensors header of an export, or a training checkpoint's
    ``srcli_meta``; files from elsewhere carry none and are only checked by shape.
    """
    if sniff_checkpoint(path) == "safetensors":  # by content, whatever the suffix
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    else:
        meta = checkpoint.get("srcli_meta") if isinstance(checkpoint, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != "srcli" or not meta.get("architecture"):
        return
    made_for, made_scale = str(meta["architecture"]), str(meta.get("scale", ""))
    with contextlib.suppress(SrcliError):  # a model this version does not know: report its name as written
        made_for = get_model(made_for).name
    if made_for != spec.name or (made_scale and made_scale != str(scale)):
        raise WeightsError(
            f"{path} holds '{made_for}' x{made_scale} weights (made by srcli train), not '{spec.name}' x{scale}"
        )


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
    path = resolve_weights(
        spec, scale, weights=weights, cache_dir=cache_dir, offline=offline, reporter=reporter, module=module
    )
    digest = None
    if path is not None:
        checkpoint = read_checkpoint(path)
        check_provenance(spec, scale, path, checkpoint)
        state = unwrap_state_dict(checkpoint, spec.checkpoint_keys, spec.strip_prefix)
        # A module with a re-parameterisable training form (MSRA-SR) converts such a checkpoint to the form it
        # was built in, so that the strict key check below compares like with like.
        adapt = getattr(module, "adapt_state_dict", None)
        if callable(adapt):
            state = adapt(state)
        load_strict(module, state, source=str(path), ignore_keys=spec.ignore_keys)
        digest = sha256_file(path)
    module.eval().to(device)
    for p in module.parameters():
        p.requires_grad_(False)
    return LoadedModel(spec=spec, scale=scale, module=module, weights_path=path, weights_sha256=digest)
