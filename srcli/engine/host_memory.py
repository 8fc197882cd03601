"""Host memory allocation for long CPU runs: keep freed blocks for reuse instead of returning them.

By default glibc's ``malloc`` serves every block above a threshold (at most 32 MB) with a fresh ``mmap`` and
unmaps it on ``free``. A forward pass on a large image allocates and frees activations of tens to hundreds
of MB, so every pass pays for page faults and for the kernel zeroing those pages again: on this project's
2-core machine IMDN x2 on a 480 x 480 input spent as much time in the kernel as in the model, and ran
2x slower per pixel than on 128 x 128 tiles (``benchmarks/host_malloc.py``). Serving large blocks from the
heap and never trimming it makes the second and later passes reuse memory that is already mapped; the
price is a larger and lasting peak: the heap holds holes that later blocks do not always fit, and the
process keeps it until it exits (IMDN x2, ten passes on 300-480 px inputs: 2.2 GB, level from the third
pass, against a 1.6 GB peak; each 480 px pass about 2x faster), which suits a batch command.

The setting is process-wide, so the CLI applies it (``srcli upscale``, ``eval``, ``bench``, ``train``) and
the library leaves it to the caller. ``SRCLI_MALLOC_TUNING=0`` turns it off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

#: ``mallopt`` parameters (glibc ``malloc.h``).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
#: Free memory at the top of the heap kept before it is returned to the system (1 GiB, mallopt takes an int).
_TRIM_THRESHOLD = 1 << 30

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Make glibc serve large blocks from its heap and keep freed memory mapped; True if it took effect.

    A no-op returning False off Linux, on a C library without ``mallopt`` (musl's ignores it), and when
    ``SRCLI_MALLOC_TUNING=0``. Idempotent.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if not sys.platform.startswith("linux") or os.environ.get("SRCLI_MALLOC_TUNING", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # mallopt returns 1 on success; glibc accepts both, musl's stub returns 0.
    _applied = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1
    return _applied
