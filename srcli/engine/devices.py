"""Choosing the device and the numeric precision a model runs in."""

from __future__ import annotations

from typing import Literal

import torch

from srcli.engine import cpu_features
from srcli.engine.options import FP16_ON_CPU
from srcli.errors import DeviceError
from srcli.registry import ModelSpec

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def pick_device(choice: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; anything else (``cpu``, ``cuda:1``, ``mps``) is checked and used."""
    if choice == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(choice)
    except (RuntimeError, ValueError):
        raise DeviceError(f"unknown device '{choice}' (use auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device '{choice}' requested but CUDA is not available here (use --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"device '{choice}' does not exist: {torch.cuda.device_count()} CUDA device(s) found")
    if device.type == "mps" and not _mps_available():
        raise DeviceError(f"device '{choice}' requested but MPS is not available here (use --device cpu)")
    return device


def describe_device(device: torch.device) -> str:
    """A human-readable name, e.g. ``cuda:0 (NVIDIA H100 80GB HBM3)`` or ``cpu (2 threads)``."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return str(device)


def resolve_precision(spec: ModelSpec, device: torch.device, requested: str = "auto") -> Precision:
    """The precision to run ``spec`` in on ``device``.

    ``auto`` takes, on CUDA, the first of bf16 / fp16 that the registry marks safe for the model and the
    device supports; on the CPU, bf16 where the processor computes it natively
    (``srcli.engine.cpu_features.native_bf16``: AMX-BF16, AVX512-BF16 or Arm BF16, with PyTorch's kernels
    using it) and the registry marks the model bf16-safe on the CPU (``ModelSpec.cpu_safe_precisions``);
    fp32 elsewhere: emulated bf16 is slower than fp32, and half precision on MPS is opt-in until proven
    per model. An explicit fp16 on a CPU is refused (no half-precision kernels for several layers there;
    peers crash on it).
    """
    if requested not in PRECISIONS:
        raise DeviceError(f"unknown precision '{requested}' (use {', '.join(PRECISIONS)})")
    if requested == "auto":
        if device.type == "cpu":
            return "bf16" if "bf16" in spec.cpu_safe_precisions and cpu_features.native_bf16() else "fp32"
        if device.type != "cuda":
            return "fp32"
        if "bf16" in spec.safe_precisions and torch.cuda.is_bf16_supported():
            return "bf16"
        if "fp16" in spec.safe_precisions:
            return "fp16"
        return "fp32"
    if requested == "fp16" and device.type == "cpu":
        raise DeviceError(FP16_ON_CPU)
    return requested  # type: ignore[return-value]
