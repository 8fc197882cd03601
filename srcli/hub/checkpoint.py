"""Reading checkpoints safely and loading them strictly, with a readable mismatch report."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from srcli.errors import CheckpointMismatchError, WeightsError


def read_checkpoint(path: str | Path) -> Mapping[str, Any]:
    """Read ``path`` without unpickling arbitrary objects (safetensors, or ``weights_only`` torch.load)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types
            raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError (zip), EOFError: all "unreadable"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(
            f"{path}: cannot be read as a PyTorch checkpoint with weights_only=True "
            f"(srcli never unpickles arbitrary objects): {first}"
        ) from None


def unwrap_state_dict(
    checkpoint: Mapping[str, Any], keys: Iterable[str], strip_prefix: str = "module."
) -> dict[str, Any]:
    """Find the state dict inside ``checkpoint`` (``params_ema`` / ``params`` / ...) and strip a prefix."""
    import torch

    state: Mapping[str, Any] = checkpoint
    for key in keys:
        inner = checkpoint.get(key) if isinstance(checkpoint, Mapping) else None
        if isinstance(inner, Mapping):
            state = inner
            break
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError("the checkpoint holds no state dict of tensors (looked for " + ", ".join(keys) + ")")
    if strip_prefix and state and all(k.startswith(strip_prefix) for k in state):
        return {k[len(strip_prefix) :]: v for k, v in state.items()}
    return dict(state)


def _listing(keys: list[str], limit: int = 4) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... (+{len(keys) - limit} more)" if len(keys) > limit else "")


def mismatch_report(module: Any, state: Mapping[str, Any]) -> str | None:
    """One readable line about missing / unexpected / mis-shaped keys, or ``None`` if they all fit."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = [
        f"{k} (file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)})"
        for k in sorted(set(expected) & set(state))
        if tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing: {_listing(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected: {_listing(unexpected)}")
    if misshaped:
        parts.append(f"{len(misshaped)} mis-shaped: {_listing(misshaped, 3)}")
    return "; ".join(parts) or None


def load_strict(module: Any, state: Mapping[str, Any], source: str, ignore_keys: Iterable[str] = ()) -> None:
    """Load ``state`` into ``module`` strictly; on mismatch raise a one-line ``CheckpointMismatchError``."""
    ignore = set(ignore_keys)
    state = {k: v for k, v in state.items() if k.split(".")[-1] not in ignore and k not in ignore}
    report = mismatch_report(module, state)
    if report:
        raise CheckpointMismatchError(f"{source} does not fit {type(module).__name__}: {report}")
    module.load_state_dict(state, strict=True)
