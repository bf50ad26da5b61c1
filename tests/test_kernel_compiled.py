"""The neuron through torch.compile (robustsnn.kernels.compiled), the default on CUDA GPUs.

There is no GPU here: the same compiled functions run through inductor's C++ backend on the
CPU and are compared with the torch loop (itself checked against a naive loop in
test_neurons.py): spikes identical, gradients (input, threshold, DLIF gain) within 1e-12 in
float64. The batch size may change without a new graph. A compiler failure falls back to the
loop with one warning (``auto``) or raises one line (``compile``).
"""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import kernel_backend
from robustsnn import kernels
from robustsnn.kernels import compiled
from robustsnn.neurons import _run_forward, multistep_spike
from robustsnn.surrogates import Surrogate


backend = kernel_backend


def _run(current, gain, reset, surrogate, detach_reset, init, learn_threshold=True):
    c = current.clone().requires_grad_()
    th = torch.tensor(0.8, dtype=current.dtype, requires_grad=learn_threshold)
    g = None if gain is None else gain.clone().requires_grad_()
    s = multistep_spike(c, th, 0.9, g, reset, surrogate, detach_reset, init)
    upstream = torch.randn(s.shape, generator=torch.Generator().manual_seed(1), dtype=s.dtype)
    (s * upstream).sum().backward()
    return [s.detach(), c.grad, th.grad, None if g is None else g.grad]


def _compare(current, gain, reset, surrogate, detach_reset, init):
    with backend("torch"):
        ref = _run(current, gain, reset, surrogate, detach_reset, init)
    with backend("compile"):
        ours = _run(current, gain, reset, surrogate, detach_reset, init)
    assert torch.equal(ours[0], ref[0]), "spikes differ"
    assert ours[0].float().mean() > 0.05  # the probe fires, so resets are exercised
    for a, b in zip(ours[1:], ref[1:]):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def _graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def test_compiled_dlif_matches_the_torch_loop_and_a_new_batch_size_needs_no_new_graph():
    g = torch.Generator().manual_seed(0)
    current = torch.rand(4, 3, 5, 6, generator=g, dtype=torch.float64)
    gain = torch.rand(4, generator=g, dtype=torch.float64) + 0.5
    _compare(current, gain, "soft", Surrogate("atan", 1.5), False, 0.5)
    before = _graphs()
    _compare(torch.rand(4, 7, 5, 6, generator=g, dtype=torch.float64), gain, "soft", Surrogate("atan", 1.5), False, 0.5)
    assert _graphs() == before
    theta = torch.tensor(0.8, dtype=current.dtype)
    with torch.no_grad():  # inference (SpikingNeuron without grad) keeps no membrane: its own graph
        with backend("torch"):
            ref = _run_forward(current, theta, gain, 0.9, False, False)
        with backend("compile"):
            ours = _run_forward(current, theta, gain, 0.9, False, False)
    assert torch.equal(ours[0], ref[0]) and ours[1] is None


@pytest.mark.slow
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(T=st.integers(1, 5), batch=st.integers(1, 4), reset=st.sampled_from(["hard", "soft"]),
       name=st.sampled_from(["triangle", "exp", "rectangle", "ste", "sigmoid", "atan"]),
       detach_reset=st.booleans(), init=st.sampled_from([0.0, 0.5]), use_gain=st.booleans(), seed=st.integers(0, 99))
def test_compiled_neuron_matches_the_torch_loop_in_every_setting(T, batch, reset, name, detach_reset, init, use_gain,
                                                                 seed):
    g = torch.Generator().manual_seed(seed)
    current = torch.rand(T, batch, 17, generator=g, dtype=torch.float64) * 1.2
    gain = torch.rand(T, generator=g, dtype=torch.float64) + 0.5 if use_gain else None
    with backend("torch"):
        ref = _run(current, gain, reset, Surrogate(name, 1.0), detach_reset, init)
    with backend("compile"):
        ours = _run(current, gain, reset, Surrogate(name, 1.0), detach_reset, init)
    assert torch.equal(ours[0], ref[0])
    for a, b in zip(ours[1:], ref[1:]):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_which_devices_take_the_compiled_path():
    cpu = torch.zeros(2)
    with backend("auto"):
        assert not compiled.enabled(cpu)  # the C++ extension's job
    with backend("torch"):
        assert not compiled.enabled(cpu)
    with backend("compile"):
        assert compiled.enabled(cpu) and not compiled.enabled(torch.zeros(2, dtype=torch.long))
        assert kernels.get() is None  # the C++ extension is not used under "compile"


@pytest.fixture
def failing_compiler(monkeypatch):
    def broken(fn, **kwargs):
        def run(*args):
            raise RuntimeError("InductorError: no working C++ compiler\nmore detail")
        return run

    monkeypatch.setattr(compiled.torch, "compile", broken)
    monkeypatch.setattr(compiled, "_compiled", {})
    monkeypatch.setattr(compiled, "_state", {"failed": None, "announced": True})


def _double(x):
    return 2 * x


def test_a_compiler_failure_warns_once_and_falls_back_to_the_loop(failing_compiler):
    x = torch.arange(3.0)
    with backend("auto"):
        with pytest.warns(kernels.KernelWarning, match=r"torch.compile of the neuron failed \(InductorError: no working "
                                                       r"C\+\+ compiler\); using the torch loop"):
            assert torch.equal(compiled.call(_double, x), 2 * x)
        assert compiled._state["failed"] and not compiled.enabled(x)
    with backend("compile"):
        assert not compiled.enabled(x)  # stays off for the rest of the process


def test_a_compiler_failure_under_the_compile_backend_is_one_line(failing_compiler):
    with backend("compile"), pytest.raises(RuntimeError, match=r"^robustsnn: torch.compile of the neuron failed: "
                                                              r"InductorError: no working C\+\+ compiler$"):
        compiled.call(_double, torch.arange(3.0))


def test_the_gpu_check_compares_the_compiled_neuron_with_the_loop():
    """benchmarks/gpu_check.py's neuron comparison, run on the CPU (the GPU runs the same code)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from gpu_check import neuron_check

    r = neuron_check("cpu", shape=(3, 2, 4, 5, 5), repeats=1)
    assert r["neuron_spike_agreement"] == 1.0 and r["neuron_grad_max_abs_diff"] <= 1e-6
    assert r["neuron_ms"]["torch_loop"] > 0 and r["neuron_ms"]["compiled"] > 0
