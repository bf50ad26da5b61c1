"""robustsnn.allocator: glibc keeps large freed blocks (no page faults on reuse), results unchanged."""

from __future__ import annotations

import resource

import pytest
import torch

import robustsnn
from robustsnn import allocator
from robustsnn.train.objectives import make_objective

glibc = pytest.mark.skipif(allocator._glibc() is None, reason="needs glibc (Linux)")


@pytest.fixture
def restore():
    yield
    allocator.tune_allocator(False)


def _faults_of_fresh_tensor(nbytes: int) -> int:
    """Minor page faults of allocating and writing a tensor of nbytes, after one that size was freed."""
    torch.ones(nbytes // 4).sum()  # allocate, touch, free
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = torch.ones(nbytes // 4)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    del t
    return after - before


@glibc
def test_tuned_allocator_reuses_freed_memory_without_page_faults(restore):
    size = 96 * 2**20  # above glibc's largest mmap threshold (32 MiB): mmap'ed by default
    assert allocator.tune_allocator(False)
    system = _faults_of_fresh_tensor(size)
    assert allocator.tune_allocator(True) and allocator.allocator_state() == "tuned"
    _faults_of_fresh_tensor(size)  # the first one grows the heap
    tuned = _faults_of_fresh_tensor(size)
    pages = size // 4096
    assert system > pages // 2, system  # default: every page faults again
    assert tuned < pages // 20, tuned  # tuned: the heap already has the memory


@glibc
def test_restoring_the_defaults_reports_system(restore):
    assert allocator.tune_allocator(True)
    assert allocator.tune_allocator(False) and allocator.allocator_state() == "system"


def _two_steps(tuned: bool) -> list[torch.Tensor]:
    allocator.tune_allocator(tuned)
    torch.manual_seed(0)
    model = robustsnn.build("cnn", kind="snn", neuron="lif", time_steps=2, width=0.25)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    obj = make_objective("rfgsm", eps=0.1)
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    for _ in range(2):
        opt.zero_grad()
        loss, _ = obj(model, x, y)
        loss.backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


@glibc
def test_training_is_bit_identical_with_either_allocator(restore):
    for a, b in zip(_two_steps(False), _two_steps(True)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("env, manages", [
    ({}, False),
    ({"ROBUSTSNN_MALLOC": "system"}, True),
    ({"ROBUSTSNN_MALLOC": "tuned"}, False),
    ({"MALLOC_ARENA_MAX_": "2"}, True),
    ({"GLIBC_TUNABLES": "glibc.malloc.mmap_max=0"}, True),
    ({"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"}, True),
])
def test_the_environment_can_leave_malloc_alone(monkeypatch, env, manages):
    for k in ("ROBUSTSNN_MALLOC", "GLIBC_TUNABLES", "LD_PRELOAD", "MALLOC_ARENA_MAX_"):
        monkeypatch.delenv(k, raising=False)
    for k in [k for k in list(__import__("os").environ) if k.startswith("MALLOC_") and k.endswith("_")]:
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert allocator.user_manages_allocator() is manages


def test_the_command_line_tunes_the_allocator_unless_told_not_to(monkeypatch, restore):
    from robustsnn.cli import main

    calls = []
    monkeypatch.setattr(allocator, "tune_allocator", lambda enable=True: calls.append(enable) or True)
    monkeypatch.setattr(allocator, "user_manages_allocator", lambda: False)
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and calls == [True]
    calls.clear()
    monkeypatch.setattr(allocator, "user_manages_allocator", lambda: True)
    with pytest.raises(SystemExit):
        main(["--help"])
    assert calls == []
