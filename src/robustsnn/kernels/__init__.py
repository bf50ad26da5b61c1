"""The compiled neuron kernel (``lif.cpp``): built on first use, with the pure-PyTorch path as fallback.

:func:`get` returns the loaded C++ extension (forward and backward of the whole T-step
recursion, one call each, OpenMP over neurons) or ``None`` when the torch path must be used:

* ``ROBUSTSNN_KERNEL=torch`` (or :func:`set_backend` ``("torch")``) forces the fallback;
  ``compile`` uses :mod:`robustsnn.kernels.compiled` (``torch.compile``) on every device instead;
  ``auto`` (the default) uses the kernel where it builds; ``cpp`` is like ``auto`` but
  raises if it cannot build.
* The extension is compiled once per machine and torch version with
  ``torch.utils.cpp_extension.load`` (needs g++ and ninja) into a per-user cache,
  ``$ROBUSTSNN_KERNEL_DIR`` or ``~/.cache/robustsnn/kernels/<torch version>-<hash of source and
  CPU flags>`` (it is built with ``-march=native``); later processes load the built library
  directly, in well under a second.
* After loading, a self-test compares its spikes with the torch loop on a probe; a build or
  self-test failure gives one warning and the torch path for the rest of the process.

The kernel runs float32/float64 CPU tensors only; on CUDA tensors the default is the
``torch.compile`` path of :mod:`robustsnn.kernels.compiled` (Triton, where installed), and
other cases (no Triton, spike hooks, BPTR) run the torch loop.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import platform
import sys
import threading
import warnings
from pathlib import Path

import torch

__all__ = ["get", "set_backend", "backend", "supports", "KernelWarning"]

_SOURCE = Path(__file__).with_name("lif.cpp")
_BACKENDS = ("auto", "torch", "cpp", "compile")
_lock = threading.Lock()
_state: dict = {"backend": None, "module": None, "tried": False, "fused": True}

#: surrogate name -> kernel id (exp-d is exp with another scale)
SURROGATE_IDS = {"triangle": 0, "exp": 1, "exp-d": 1, "rectangle": 2, "ste": 3, "sigmoid": 4, "atan": 5, "pdsg": 6}
#: kernel id of a backward whose surrogate derivative is given per element (spike hooks)
GIVEN_SURROGATE = 7


class KernelWarning(UserWarning):
    """The compiled neuron kernel is unavailable; the (slower) torch path is used."""


def backend() -> str:
    """The requested backend: ``auto``, ``torch`` or ``cpp`` (``ROBUSTSNN_KERNEL``, default auto)."""
    if _state["backend"] is None:
        b = os.environ.get("ROBUSTSNN_KERNEL", "auto").strip().lower() or "auto"
        if b not in _BACKENDS:
            raise ValueError(f"ROBUSTSNN_KERNEL={b!r}; choose one of {', '.join(_BACKENDS)}")
        _state["backend"] = b
    return _state["backend"]


def set_backend(name: str) -> None:
    """Choose the neuron backend for this process: ``auto``, ``torch``, ``cpp`` or ``compile``
    (:mod:`robustsnn.kernels.compiled` on every device)."""
    if name not in _BACKENDS:
        raise ValueError(f"unknown kernel backend {name!r}; choose one of {', '.join(_BACKENDS)}")
    _state["backend"] = name


def fused_update() -> bool:
    """Whether the membrane update m = v*lam + i is one fused multiply-add (as torch's vector add)."""
    return _state["fused"]


def supports(t: torch.Tensor) -> bool:
    """Whether the kernel runs tensors like ``t`` (CPU, float32/float64)."""
    return t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64)


def _cpu_flags() -> bytes:
    """The CPU's feature flags (the kernel is built with -march=native), empty where unknown."""
    try:
        with open("/proc/cpuinfo", "rb") as f:
            return next((line for line in f if line.startswith(b"flags")), b"")
    except OSError:
        return platform.processor().encode()


def _build_dir() -> Path:
    tag = hashlib.sha256(_SOURCE.read_bytes() + _cpu_flags()).hexdigest()[:12]
    root = os.environ.get("ROBUSTSNN_KERNEL_DIR") or Path.home() / ".cache" / "robustsnn" / "kernels"
    d = Path(root) / f"torch{torch.__version__.replace('+', '_')}-{tag}"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _compile():
    from torch.utils.cpp_extension import load

    # pip's ninja lives next to the interpreter, which may not be on PATH (venv not activated)
    bindir = str(Path(sys.executable).parent)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    flags = ["-O3", "-fopenmp", "-march=native", "-ffp-contract=off"]
    build = _build_dir()
    built = build / "robustsnn_lif.so"
    if built.exists():  # built before for this source, torch and CPU: load it without ninja
        import torch.utils.cpp_extension  # noqa: F401  (torch's libraries for the extension)

        spec = importlib.util.spec_from_file_location("robustsnn_lif", built)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    if not any(build.glob("robustsnn_lif*.so")):
        print("robustsnn: compiling the neuron kernel once for this machine (about a minute)...", file=sys.stderr)
    return load(
        name="robustsnn_lif",
        sources=[str(_SOURCE)],
        extra_cflags=flags,
        extra_ldflags=["-fopenmp"],
        build_directory=str(build),
        verbose=False,
    )


def _self_test(mod) -> bool | None:
    """Which membrane update (fused or not) reproduces the torch loop's spikes; None if neither."""
    from ..neurons import _forward_loop

    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        cur = torch.rand(16, 4099, generator=g, dtype=dtype) * 0.7
        th = torch.tensor(1.0, dtype=dtype)
        ref_s, ref_m = _forward_loop(cur, th, None, 0.97, False, True, 0.5)
        found = None
        for fused in (True, False):
            s, m = mod.forward(cur, 16, False, 1.0, None, 0.97, False, True, float(th * 0.5), True, fused)
            if torch.equal(s, ref_s) and torch.equal(m, ref_m):
                found = fused
                break
        if found is None or (dtype == torch.float64 and found != _state["fused"]):
            return None
        _state["fused"] = found
    return _state["fused"]


def get():
    """The loaded extension, or None when the torch path is to be used (see the module docstring)."""
    if backend() in ("torch", "compile"):
        return None
    if _state["module"] is not None or _state["tried"]:
        return _state["module"]
    with _lock:
        if _state["tried"]:
            return _state["module"]
        _state["tried"] = True
        try:
            mod = _compile()
            if _self_test(mod) is None:
                raise RuntimeError("its spikes differ from the torch loop on the self-test probe")
        except Exception as e:  # noqa: BLE001 - any build problem means: use the fallback
            if backend() == "cpp":
                raise RuntimeError(f"robustsnn neuron kernel unavailable: {e}") from e
            msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            warnings.warn(f"robustsnn: compiled neuron kernel unavailable ({msg[:200]}); using the torch path "
                          "(set ROBUSTSNN_KERNEL=torch to silence)", KernelWarning, stacklevel=3)
            return None
        _state["module"] = mod
        return mod


from . import compiled  # noqa: E402  (uses backend() and KernelWarning above)
