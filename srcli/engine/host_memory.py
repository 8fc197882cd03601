"""Host memory allocation for long CPU runs: reuse the blocks of a forward pass, bound what the heap keeps.

By default glibc's ``malloc`` serves every block above a threshold (at most 32 MB) with a fresh ``mmap`` and
unmaps it on ``free``. A forward pass on a large image or tile allocates and frees activations of tens to
hundreds of MB, so every pass pays for page faults and for the kernel zeroing those pages again: on this
project's 2-core machine IMDN x2 on a 480 x 480 input spent as much time in the kernel as in the model
(``benchmarks/host_malloc.py``). Serving such blocks from the heap makes the later blocks of a pass reuse
memory that is already mapped.

Serving *every* block from the heap and never trimming it (``keep``, srcli's policy before issue 19) has no
bound: the heap only shrinks from its top, and a block freed below a live one stays resident as a hole. When
a small block is carved from the start of that hole, the next block of the same large size no longer fits
and the heap grows past it. An evaluation does exactly this: the scorer's float64 SSIM filter allocates a
121-column unfolded copy of the image (366 MB for a 716 x 572 Y plane), five per image, with a 3 MB result
allocated in between, and the heap grew by about one such block per filter (RLFN x2 on Set14: peak 1.2-1.8 GB
against 0.77 GB with glibc's default; ``benchmarks/cpu_memory.py`` records the heap's size and its live and
free bytes after each image).

The default policy, ``bounded-64``, maps blocks larger than 64 MiB (``MMAP_THRESHOLD``) on their own, as glibc
does above 32 MB, so ``free`` returns them at once and no hole larger than that can stay; smaller blocks (a
768-pixel tile's 48-channel bf16 activation is 57 MB) come from the heap and are reused, and at most
``TRIM_THRESHOLD`` (128 MiB) of free memory at the top of the heap is kept. Measured on this project's shared
2-core machine (``benchmarks/results/cpu_memory_*_2026-12-07.json``): RLFN x2 and x4 on Set14 peak at
1.15-1.3x glibc's default (``keep``: 1.9-2.3x); the 3000 x 2000 photo x4 with banded assembly peaks at 2.46 GB
(``keep`` 2.63 GB, glibc's default 1.94 GB) and keeps about 70% of ``keep``'s CPU-time saving over glibc's
default. On the evaluations ``keep``'s saving came from the scorer's unfolded copies themselves (the very blocks
that made the heap grow), which every bounded policy maps anew; a separable SSIM filter removes those blocks
and their cost under any policy (``+sepssim`` rows of the benchmark).

Policies (``SRCLI_MALLOC_TUNING``: ``0`` off, ``1`` or unset the default, or a name of ``POLICIES``) set the
``mallopt`` parameters once, before the first large block. The setting is process-wide, so the CLI applies it
(``srcli upscale``, ``eval``, ``bench``, ``train``) and the library leaves it to the caller.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from dataclasses import dataclass

#: ``mallopt`` parameters (glibc ``malloc.h``).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
#: Blocks larger than 64 MiB get a mapping of their own, returned to the system on ``free`` (the extra page lets a
#: request of exactly 64 MiB, with glibc's 16-byte header, still come from the heap).
MMAP_THRESHOLD = (64 << 20) + 4096
#: Free memory at the top of the heap kept for the next pass before it is returned to the system.
TRIM_THRESHOLD = 128 << 20


@dataclass(frozen=True)
class MallocPolicy:
    """``mallopt`` settings (``None``: glibc's default for that parameter)."""

    #: ``M_MMAP_MAX``: 0 serves every block from the heap.
    mmap_max: int | None = None
    #: ``M_MMAP_THRESHOLD`` in bytes: blocks this large and larger are mapped on their own (setting it also
    #: stops glibc's dynamic threshold).
    mmap_threshold: int | None = MMAP_THRESHOLD
    #: ``M_TRIM_THRESHOLD`` in bytes: free memory at the top of the heap above this goes back to the system.
    trim_threshold: int | None = TRIM_THRESHOLD


POLICIES: dict[str, MallocPolicy] = {
    # Every block from the heap, never trimmed below 1 GiB: srcli before issue 19 (fast, unbounded).
    "keep": MallocPolicy(mmap_max=0, mmap_threshold=None, trim_threshold=1 << 30),
    # Every block from the heap, the free top above 256 MiB trimmed: holes below live blocks still stay.
    "trim": MallocPolicy(mmap_max=0, mmap_threshold=None),
    # Blocks up to 64 MiB from the heap and reused, larger ones mapped on their own, at most 128 MiB of free
    # top kept (the default).
    "bounded-64": MallocPolicy(),
    # The same with the line at 128 MiB (and 256 MiB kept at the top).
    "bounded": MallocPolicy(mmap_threshold=128 << 20, trim_threshold=256 << 20),
    # As bounded, with the line at 256 MiB (and 512 MiB kept at the top).
    "bounded-256": MallocPolicy(mmap_threshold=256 << 20, trim_threshold=512 << 20),
}
DEFAULT_POLICY = "bounded-64"

_applied: bool | None = None


def _libc() -> ctypes.CDLL | None:
    """The C library, or ``None`` where it cannot be loaded."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def policy_name() -> str | None:
    """The policy ``SRCLI_MALLOC_TUNING`` asks for (``None``: off); unknown names fall back to the default."""
    value = os.environ.get("SRCLI_MALLOC_TUNING", "1").strip().lower()
    if value in ("0", "off", "false", "no"):
        return None
    return value if value in POLICIES else DEFAULT_POLICY


def keep_freed_memory() -> bool:
    """Apply the allocation policy (``SRCLI_MALLOC_TUNING``, else ``DEFAULT_POLICY``); True if it took effect.

    A no-op returning False off Linux, on a C library without ``mallopt`` (musl's ignores it), and when
    ``SRCLI_MALLOC_TUNING=0``. Idempotent.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    name = policy_name()
    if not sys.platform.startswith("linux") or name is None:
        return False
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    policy = POLICIES[name]
    settings = [
        (param, value)
        for param, value in (
            (_M_MMAP_MAX, policy.mmap_max),
            (_M_MMAP_THRESHOLD, policy.mmap_threshold),
            (_M_TRIM_THRESHOLD, policy.trim_threshold),
        )
        if value is not None
    ]
    # mallopt returns 1 on success; glibc accepts these (an older glibc refuses an M_MMAP_THRESHOLD above
    # 32 MiB: it then keeps its own dynamic threshold, which is bounded too), musl's stub returns 0.
    _applied = all(mallopt(param, value) == 1 for param, value in settings)
    return _applied
