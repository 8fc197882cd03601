"""What the processor computes natively: bf16, AMX and AVX-512, and the matrix-product rates it reaches.

``--precision auto`` on the CPU picks bf16 only where the processor has bf16 arithmetic in hardware (AMX-BF16 or
AVX512-BF16 on x86, FEAT_BF16 on Arm) *and* PyTorch's oneDNN kernels can use it. Elsewhere bf16 is emulated by
conversions around fp32 arithmetic, which is slower than plain fp32.

The facts are read as data, never parsed from a tool's human-readable output, from the first source that has them:

1. ``torch.cpu.get_capabilities()`` (PyTorch's bundled cpuinfo: a mapping of feature names to booleans);
2. on Linux, the ``flags`` (x86) or ``Features`` (Arm) line of ``/proc/cpuinfo``: the kernel's list of feature
   tokens;
3. on macOS, the ``hw.optional.*`` integers of ``sysctlbyname`` (``hw.optional.arm.FEAT_BF16``,
   ``hw.optional.avx512bf16`` ...), read through the C library.

AMX also needs the operating system's permission for the tile state (Linux grants it on request);
``torch._C._cpu._init_amx()`` asks for it, where this PyTorch has it.

``SRCLI_CPU_BF16=0`` makes ``native_bf16()`` answer False whatever the processor (``--precision auto`` then
stays in fp32 on the CPU).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import platform
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

#: /proc/cpuinfo tokens (Linux x86 ``flags``, Linux Arm ``Features``) and the names used here.
_LINUX_TOKENS: dict[str, str] = {
    "amx_bf16": "amx_bf16",
    "amx_tile": "amx_tile",
    "avx512_bf16": "avx512_bf16",
    "avx512f": "avx512f",
    "avx512bw": "avx512bw",
    "bf16": "arm_bf16",
    "svebf16": "arm_bf16",
}
#: torch.cpu.get_capabilities() keys and the names used here.
_TORCH_KEYS: dict[str, str] = {
    "amx_bf16": "amx_bf16",
    "amx_tile": "amx_tile",
    "avx512_bf16": "avx512_bf16",
    "avx512_f": "avx512f",
    "avx512_bw": "avx512bw",
    "bf16": "arm_bf16",
    "sve_bf16": "arm_bf16",
}
#: macOS sysctl integers and the names used here.
_SYSCTL_KEYS: dict[str, str] = {
    "hw.optional.arm.FEAT_BF16": "arm_bf16",
    "hw.optional.avx512f": "avx512f",
    "hw.optional.avx512bw": "avx512bw",
    "hw.optional.avx512bf16": "avx512_bf16",
    "hw.optional.amx_bf16": "amx_bf16",
}
_FLAG_NAMES = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx512bw", "arm_bf16")


@dataclass(frozen=True)
class CpuFeatures:
    """The processor's bf16-related features and where they were read."""

    architecture: str
    #: AMX with bf16 tiles (Intel Sapphire Rapids and later), usable: the OS granted the tile state.
    amx_bf16: bool = False
    amx_tile: bool = False
    #: AVX-512 bf16 dot products (Intel Cooper Lake / Sapphire Rapids, AMD Zen 4 and later).
    avx512_bf16: bool = False
    avx512f: bool = False
    avx512bw: bool = False
    #: Arm bf16 (FEAT_BF16: Neoverse V1/N2, Graviton 3, Apple M2 and later).
    arm_bf16: bool = False
    #: PyTorch's oneDNN (mkldnn) can run bf16 kernels on this processor (natively or by emulation).
    onednn_bf16: bool = False
    #: Where the features were read: ``torch``, ``/proc/cpuinfo``, ``sysctl`` or ``none``.
    source: str = "none"

    @property
    def hardware_bf16(self) -> bool:
        """True when the processor has bf16 arithmetic instructions."""
        return self.amx_bf16 or self.avx512_bf16 or self.arm_bf16

    @property
    def native_bf16(self) -> bool:
        """True when bf16 runs in hardware and PyTorch's CPU kernels can use it (not emulated)."""
        return self.hardware_bf16 and self.onednn_bf16

    def describe(self) -> str:
        """One line, e.g. ``bf16 native (AVX512-BF16); AVX-512 yes; AMX no``."""
        kinds = [
            name
            for name, have in (
                ("AMX-BF16", self.amx_bf16),
                ("AVX512-BF16", self.avx512_bf16),
                ("Arm BF16", self.arm_bf16),
            )
            if have
        ]
        if self.native_bf16:
            bf16 = f"bf16 native ({', '.join(kinds)})"
        elif self.hardware_bf16:
            bf16 = f"bf16 in hardware ({', '.join(kinds)}) but not in PyTorch's kernels"
        else:
            bf16 = "bf16 emulated"
        parts = [bf16]
        if self.architecture in ("x86_64", "amd64", "AMD64", "i386", "i686"):
            parts += [f"AVX-512 {'yes' if self.avx512f else 'no'}", f"AMX {'yes' if self.amx_tile else 'no'}"]
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, with ``hardware_bf16`` and ``native_bf16``."""
        return {**asdict(self), "hardware_bf16": self.hardware_bf16, "native_bf16": self.native_bf16}


def _from_torch() -> dict[str, bool] | None:
    """Features from ``torch.cpu.get_capabilities()``; ``None`` where this PyTorch lacks it."""
    try:
        import torch

        caps: Mapping[str, Any] = torch.cpu.get_capabilities()  # type: ignore[attr-defined]
    except (ImportError, AttributeError, RuntimeError):
        return None
    found = {name: False for name in _FLAG_NAMES}
    for key, name in _TORCH_KEYS.items():
        if caps.get(key) is True:
            found[name] = True
    return found


def parse_proc_cpuinfo(text: str) -> dict[str, bool]:
    """Features from the text of ``/proc/cpuinfo``: the tokens of its first ``flags`` or ``Features`` line."""
    found = {name: False for name in _FLAG_NAMES}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            for token in value.split():
                name = _LINUX_TOKENS.get(token)
                if name is not None:
                    found[name] = True
            break
    return found


def _from_proc_cpuinfo(path: Path = Path("/proc/cpuinfo")) -> dict[str, bool] | None:
    """Features from ``/proc/cpuinfo``; ``None`` where it cannot be read."""
    try:
        return parse_proc_cpuinfo(path.read_text(errors="replace"))
    except OSError:
        return None


def _sysctl_int(libc: Any, name: str) -> int | None:
    """An integer ``sysctlbyname`` value; ``None`` where the name does not exist."""
    value = ctypes.c_int64(0)
    size = ctypes.c_size_t(ctypes.sizeof(value))
    if libc.sysctlbyname(name.encode(), ctypes.byref(value), ctypes.byref(size), None, ctypes.c_size_t(0)) != 0:
        return None
    return int(value.value) if size.value == 8 else int(ctypes.c_int32(value.value & 0xFFFFFFFF).value)


def _from_sysctl() -> dict[str, bool] | None:
    """Features from macOS's ``hw.optional`` sysctl integers; ``None`` off macOS or without the call."""
    if sys.platform != "darwin":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.dylib")
        libc.sysctlbyname.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    found = {name: False for name in _FLAG_NAMES}
    for key, name in _SYSCTL_KEYS.items():
        if (_sysctl_int(libc, key) or 0) > 0:
            found[name] = True
    return found


def _amx_usable() -> bool:
    """Ask the OS for the AMX tile state through PyTorch; True where this PyTorch cannot ask (Linux grants it)."""
    try:
        import torch

        init = getattr(torch._C._cpu, "_init_amx", None)
    except (ImportError, AttributeError):
        return False
    return True if init is None else bool(init())


def _onednn_bf16() -> bool:
    """True when PyTorch's oneDNN kernels run bf16 on this processor."""
    try:
        import torch

        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (ImportError, AttributeError, RuntimeError):
        return False


@functools.lru_cache(maxsize=1)
def detect_cpu_features() -> CpuFeatures:
    """The processor's features, from the first source that has them (see the module docstring); cached."""
    found, source = None, "none"
    for reader, name in ((_from_torch, "torch"), (_from_proc_cpuinfo, "/proc/cpuinfo"), (_from_sysctl, "sysctl")):
        if name == "/proc/cpuinfo" and not sys.platform.startswith("linux"):
            continue
        found = reader()
        if found is not None:
            source = name
            break
    flags = found or {}
    amx_tile = flags.get("amx_tile", False) and _amx_usable()
    return CpuFeatures(
        architecture=platform.machine(),
        amx_bf16=flags.get("amx_bf16", False) and amx_tile,
        amx_tile=amx_tile,
        avx512_bf16=flags.get("avx512_bf16", False),
        avx512f=flags.get("avx512f", False),
        avx512bw=flags.get("avx512bw", False),
        arm_bf16=flags.get("arm_bf16", False),
        onednn_bf16=_onednn_bf16(),
        source=source,
    )


def native_bf16() -> bool:
    """True when this CPU computes bf16 natively (and ``SRCLI_CPU_BF16`` is not ``0``)."""
    if os.environ.get("SRCLI_CPU_BF16", "1") == "0":
        return False
    return detect_cpu_features().native_bf16


def _matmul_rate(dtype: Any, size: int, seconds: float) -> tuple[float, int]:
    """(GFLOP/s, products run) of ``size`` x ``size`` matrix products in ``dtype`` over about ``seconds``."""
    import torch

    a = torch.rand(size, size).to(dtype)
    b = torch.rand(size, size).to(dtype)
    out = torch.empty(size, size, dtype=dtype)
    torch.mm(a, b, out=out)  # warm-up: kernel choice, packing buffers
    runs, started = 0, time.perf_counter()
    while True:
        torch.mm(a, b, out=out)
        runs += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            break
    return 2.0 * size**3 * runs / elapsed / 1e9, runs


def measure_matmul_rates(seconds: float = 1.0, size: int = 1024) -> dict[str, Any]:
    """The fp32 and bf16 matrix-product rates this CPU reaches with PyTorch's threads, in about ``seconds``.

    Half the time goes to each precision (``size`` x ``size`` products, one warm-up each). Returns
    ``{"fp32_gflops", "bf16_gflops", "bf16_speedup", "size", "threads", "seconds", "features"}``;
    the rates are what ``% of peak`` can be taken against on a CPU (``bench``'s CNN convolutions are
    matrix products in oneDNN). On a loaded machine they are lower bounds.
    """
    import torch

    half = max(seconds, 0.02) / 2
    started = time.perf_counter()
    with torch.inference_mode():
        fp32, fp32_runs = _matmul_rate(torch.float32, size, half)
        bf16, bf16_runs = _matmul_rate(torch.bfloat16, size, half)
    return {
        "fp32_gflops": fp32,
        "bf16_gflops": bf16,
        "bf16_speedup": bf16 / fp32 if fp32 > 0 else None,
        "size": size,
        "runs": {"fp32": fp32_runs, "bf16": bf16_runs},
        "threads": torch.get_num_threads(),
        "seconds": time.perf_counter() - started,
        "features": detect_cpu_features().to_dict(),
    }
