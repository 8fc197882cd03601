"""``srcli train export``: a run's weights in deploy form, as safetensors with provenance metadata.

The file holds the EMA weights (the ones validated) of ``best.pt`` (or ``last.pt``), after
``reparameterize()`` where the architecture has one, optionally in fp16. Its metadata names the
architecture and scale, which ``srcli.hub.loading.load_model`` checks against the model asked for.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from srcli.atomic import commit_file, temp_name
from srcli.errors import UsageError, WeightsError
from srcli.registry import get_model
from srcli.train.loop import CHECKPOINT_FORMAT, build_training_module

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _run_checkpoint(run: Path, which: str) -> Path:
    if run.is_file():
        return run
    if which not in {"best", "last"}:
        raise UsageError(f"--which '{which}' is not best or last")
    path = run / f"{which}.pt"
    if not path.is_file() and which == "best" and (run / "last.pt").is_file():
        path = run / "last.pt"  # a run without validation has no best
    if not path.is_file():
        raise UsageError(f"{run} holds no {which}.pt (is it a 'srcli train' run folder?)")
    return path


def export_run(
    run: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    which: str = "best",
    dtype: str = "fp32",
) -> dict[str, Any]:
    """Write the deploy-form weights of run folder (or checkpoint) ``run`` to ``out`` (.safetensors).

    Returns the metadata written. ``which`` picks ``best.pt`` (falls back to ``last.pt`` when the
    run never validated) or ``last.pt``.
    """
    from safetensors.torch import save_file

    from srcli.hub.checkpoint import read_checkpoint

    if dtype not in _DTYPES:
        raise UsageError(f"--dtype '{dtype}' is not one of {', '.join(_DTYPES)}")
    out = Path(out)
    if out.suffix != ".safetensors":
        raise UsageError(f"{out}: the export is a safetensors file; name it *.safetensors")
    path = _run_checkpoint(Path(run), which)
    state = read_checkpoint(path)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise WeightsError(f"{path} is not a srcli training checkpoint")
    config = state["config"]
    spec = get_model(config["model"])
    module = build_training_module(spec, int(config["scale"]))
    module.load_state_dict(state.get("params_ema") or state["params"])
    reparameterized = callable(getattr(module, "reparameterize", None))
    if reparameterized:
        module.reparameterize()
    module.eval()
    tensors = {
        k: v.detach().to(_DTYPES[dtype] if v.is_floating_point() else v.dtype).contiguous()
        for k, v in module.state_dict().items()
    }
    meta = {
        **{k: str(v) for k, v in state.get("srcli_meta", {}).items()},
        "source_checkpoint": path.name,
        "reparameterized": "true" if reparameterized else "false",
        "dtype": dtype,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    # safetensors writes by name: write a temporary name beside ``out``, then commit it (fsync, rename, folder fsync).
    tmp = temp_name(out)
    try:
        save_file(tensors, str(tmp), metadata=meta)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # a shareable file, as any other the user writes (safetensors makes it 0600)
        commit_file(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return meta
