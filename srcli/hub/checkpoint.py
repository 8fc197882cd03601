"""Reading checkpoints safely and loading them strictly, with a readable mismatch report."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from srcli.errors import CheckpointMismatchError, WeightsError

#: Leading bytes of files people mistake for checkpoints, and what to call them in an error.
_NOT_CHECKPOINTS: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"BM", "a BMP image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"\x1f\x8b", "a gzip archive (unpack it first)"),
    (b"7z\xbc\xaf", "a 7-Zip archive (unpack it first)"),
    (b"Rar!", "a RAR archive (unpack it first)"),
    (b"%PDF", "a PDF document"),
)


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    """A safetensors file starts with the little-endian length of its JSON header, then ``{``."""
    if len(head) < 9:
        return False
    header_len = int.from_bytes(head[:8], "little")
    return 0 < header_len <= size - 8 and head[8:9] == b"{"


def sniff_checkpoint(path: Path) -> str:
    """``"torch"`` or ``"safetensors"`` for a file that can be a checkpoint, else what it looks like instead.

    PyTorch writes a zip archive (``PK``) or, in its legacy format, a pickle stream (``\\x80``); a
    safetensors file starts with its header's length and ``{``. Anything else cannot be a checkpoint,
    and reading it would only give the pickle module's cryptic complaint.
    """
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(64)
    if not head:
        return "an empty file"
    if head.startswith((b"PK\x03\x04", b"\x80")):
        return "torch"
    if _looks_like_safetensors(head, size):
        return "safetensors"
    if head[8:9] == b"{" and int.from_bytes(head[:8], "little") > 0:
        return "a truncated safetensors file (its header promises more bytes than it has)"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "a WebP image"
    for magic, kind in _NOT_CHECKPOINTS:
        if head.startswith(magic):
            return kind
    text = head.lstrip(b"\xef\xbb\xbf").lstrip()
    if text[:15].lower().startswith((b"<!doctype html", b"<html")):
        return "an HTML page (a download that got an error or sign-in page instead of the file?)"
    if text.startswith(b"version https://git-lfs"):
        return "a Git LFS pointer (fetch the real file with 'git lfs pull')"
    try:
        decoded = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        decoded = head[: exc.start].decode("utf-8") if exc.start >= len(head) - 3 else ""
    if decoded and all(ch.isprintable() or ch in "\r\n\t" for ch in decoded):
        first = " ".join(decoded.split())[:40]
        return f"a text file ('{first}')" if first else "a text file"
    return f"a file of no known kind (it starts with bytes {head[:8].hex(' ')})"


def read_checkpoint(path: str | Path) -> Mapping[str, Any]:
    """Read ``path`` without unpickling arbitrary objects (safetensors, or ``weights_only`` torch.load).

    A file that is no checkpoint at all (an image, a text file, an HTML error page) is refused with one
    line naming the file and what it is, before torch sees it.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such checkpoint file")
    try:
        kind = sniff_checkpoint(path)
    except OSError as exc:
        raise WeightsError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if kind not in {"torch", "safetensors"}:
        raise WeightsError(f"{path}: not a PyTorch (.pth/.pt) or safetensors checkpoint: it is {kind}")
    if kind == "safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types
            raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError (zip), EOFError: all "unreadable"
        raise WeightsError(
            f"{path}: cannot be read as a PyTorch checkpoint with weights_only=True "
            f"(srcli never unpickles arbitrary objects): {_torch_load_reason(exc)}"
        ) from None


def _torch_load_reason(exc: Exception) -> str:
    """The useful part of torch.load's error: the unpickler's own line, not PyTorch's advice to turn safety off."""
    text = str(exc).strip()
    if "WeightsUnpickler error:" in text:
        reason = text.split("WeightsUnpickler error:", 1)[1].strip().splitlines()
        if reason and reason[0].strip():
            first_sentence = reason[0].strip().split(". ")[0].rstrip(".")
            return f"it holds Python objects other than tensors ({first_sentence})"
    first = text.splitlines()[0] if text else type(exc).__name__
    return first if len(first) > 3 else f"{type(exc).__name__}: {first}"


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
