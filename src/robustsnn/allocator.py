"""Keep freed memory in the process, so that SNN steps do not page-fault on every tensor.

An SNN keeps [T, B, ...] tensors: at T = 8 and batch 64 the first layer's currents,
spikes and membrane potentials are 51 MB each. glibc's ``malloc`` serves every block
above its mmap threshold (at most 32 MB) with a fresh ``mmap`` and gives it back with
``munmap`` when the tensor is freed, so each of these tensors costs a page fault per
4 KiB page and the kernel's zeroing of it, every step: on this project's CPU a
multiply into a new 51 MB tensor runs at 2 GB/s, into an existing one at 10 to 18 GB/s.
PyTorch's CPU allocator does not cache blocks (its CUDA allocator does).

:func:`tune_allocator` tells glibc (``mallopt``) to serve large blocks from its heap
(``M_MMAP_MAX = 0``) and not to give the heap's top back to the system below 2 GiB
(``M_TRIM_THRESHOLD``): after the first step every tensor reuses memory the process
already has. Results do not change (same kernels, same arithmetic); the process keeps
its peak memory instead of returning it between steps. Measured by
``benchmarks/speed.py`` (README, Speed). The command line calls it at start;
``ROBUSTSNN_MALLOC=system`` (or any ``MALLOC_*_`` / ``GLIBC_TUNABLES`` setting of
your own) leaves the allocator alone. Python users call it once themselves.

Where glibc is not the C library (macOS, Windows, musl) nothing happens and it returns
False; jemalloc or tcmalloc (``LD_PRELOAD``) cache blocks themselves.
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["tune_allocator", "allocator_state", "user_manages_allocator"]

# glibc <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
_DEFAULT_MMAP_MAX = 65536
# the steady state of glibc's dynamic thresholds in a loop that frees large blocks: the mmap
# threshold grows to the largest freed block up to 32 MiB, the trim threshold to twice that
_STEADY_MMAP_THRESHOLD = 32 * 2**20
_STEADY_TRIM_THRESHOLD = 64 * 2**20
#: top-of-heap bytes glibc may keep before trimming (mallopt takes an int)
TRIM_THRESHOLD = 2**31 - 1

_state = {"tuned": False}


def _glibc():
    """The running process's glibc, or None (another C library or platform)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):
        return None


def user_manages_allocator() -> bool:
    """True if the environment asks to leave malloc alone: ``ROBUSTSNN_MALLOC=system``, a glibc
    ``MALLOC_*_`` variable, ``GLIBC_TUNABLES`` or a preloaded jemalloc / tcmalloc."""
    env = os.environ
    if env.get("ROBUSTSNN_MALLOC", "").strip().lower() == "system":
        return True
    if "GLIBC_TUNABLES" in env or any(k.startswith("MALLOC_") and k.endswith("_") for k in env):
        return True
    pre = env.get("LD_PRELOAD", "")
    return "jemalloc" in pre or "tcmalloc" in pre


def tune_allocator(enable: bool = True) -> bool:
    """Make glibc keep large freed blocks (``enable=True``) or restore its defaults (False).

    Args:
        enable: True: ``mallopt(M_MMAP_MAX, 0)`` and ``mallopt(M_TRIM_THRESHOLD, 2 GiB - 1)``;
            False: what glibc's own dynamic thresholds reach in a training loop at best
            (blocks above 32 MiB mmap'ed, 64 MiB trim threshold, 65536 mmaps; setting them
            ends glibc's dynamic adjustment, which cannot be turned back on) and
            ``malloc_trim(0)``, which returns the kept memory.

    Returns:
        True if glibc took the setting, False where there is no glibc (nothing changed).
        Process-wide; takes effect for the next allocations.
    """
    libc = _glibc()
    if libc is None:
        return False
    if enable:
        ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    else:
        ok = libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX) == 1 and \
            libc.mallopt(_M_MMAP_THRESHOLD, _STEADY_MMAP_THRESHOLD) == 1 and \
            libc.mallopt(_M_TRIM_THRESHOLD, _STEADY_TRIM_THRESHOLD) == 1
        libc.malloc_trim(0)
    _state["tuned"] = bool(ok and enable)
    return bool(ok)


def allocator_state() -> str:
    """``"tuned"`` after :func:`tune_allocator` took effect in this process, else ``"system"``."""
    return "tuned" if _state["tuned"] else "system"
