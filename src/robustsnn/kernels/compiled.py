"""The neuron recursion through ``torch.compile`` (inductor): one generated kernel per call where
the C++ extension does not run, i.e. on CUDA GPUs (Triton) and, when asked, on CPUs (C++).

On a GPU the torch loop launches a handful of elementwise kernels per time step, each reading
and writing the whole layer; compiled, the T steps of the forward (and the reverse-time
backward, any surrogate, hard/soft reset, DLIF gains) are unrolled into one fused kernel that
reads the current once and writes spikes and membrane once.

Which path runs (``ROBUSTSNN_KERNEL``, :func:`robustsnn.kernels.set_backend`):

* ``auto`` (default): the C++ extension on CPUs; this compiled path on CUDA tensors when
  Triton is installed (it comes with PyTorch's CUDA wheels); else the torch loop.
* ``compile``: this path on every device (the C++ extension is not used); it raises if
  ``torch.compile`` fails instead of falling back.
* ``torch``: the plain loop everywhere.

Compilation happens on the first call per shape family (``dynamic=True``: the batch size
may change without recompiling) and is cached on disk by inductor. If it fails (no
compiler, an unsupported GPU), one warning is given and the torch loop is used for the
rest of the process. The membrane update may be contracted to a fused multiply-add
differently from eager PyTorch, so the membrane agrees to rounding (not bit for bit) and a
spike can flip where the membrane lies within rounding of the threshold
(``tests/test_kernel_compiled.py``).
"""

from __future__ import annotations

import functools
import sys
import warnings
from typing import Callable

import torch

__all__ = ["enabled", "call"]

_compiled: dict = {}
_state: dict = {"failed": None, "announced": False}


@functools.cache
def _triton() -> bool:
    """Whether Triton imports (checked once: ``enabled`` runs on every neuron call)."""
    try:
        import triton  # noqa: F401
    except Exception:  # noqa: BLE001 - any import problem means: no Triton
        return False
    return True


def enabled(t: torch.Tensor) -> bool:
    """Whether the neuron on tensors like ``t`` runs through ``torch.compile`` (module docstring)."""
    from . import backend

    if _state["failed"] is not None or not t.is_floating_point():
        return False
    b = backend()
    if b == "compile":
        return True
    return b == "auto" and t.device.type == "cuda" and _triton()


def call(fn: Callable, *args):
    """``fn(*args)`` through its compiled version (compiled on first use); on a compile error the
    eager ``fn`` with one :class:`~robustsnn.kernels.KernelWarning` (``compile`` backend: raise)."""
    from . import KernelWarning, backend

    compiled = _compiled.get(fn)
    if compiled is None:
        compiled = _compiled[fn] = torch.compile(fn, dynamic=True, fullgraph=True)
    if not _state["announced"]:
        _state["announced"] = True
        print("robustsnn: compiling the neuron with torch.compile (once per shape family; cached on disk)...",
              file=sys.stderr)
    try:
        with torch._dynamo.config.patch(recompile_limit=64):  # one graph per surrogate / reset / flags
            return compiled(*args)
    except Exception as e:  # noqa: BLE001 - any compiler problem means: use the loop
        if backend() == "compile":
            raise RuntimeError(f"robustsnn: torch.compile of the neuron failed: {_first_line(e)}") from e
        _state["failed"] = _first_line(e)
        warnings.warn(f"robustsnn: torch.compile of the neuron failed ({_state['failed']}); using the torch loop "
                      "(set ROBUSTSNN_KERNEL=torch to silence)", KernelWarning, stacklevel=3)
        return fn(*args)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:200]
