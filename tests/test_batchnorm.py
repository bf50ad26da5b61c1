"""The two-pass CPU batch norm against torch's: values, gradients, running statistics."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from robustsnn import layers as L
from robustsnn.batchnorm import batch_norm_forward, batch_norm_train, fast_batchnorm


def _pair(cls, c, dtype, **kw):
    a, b = cls(c, **kw).to(dtype), cls(c, **kw).to(dtype)
    if a.weight is not None:
        with torch.no_grad():
            a.weight.uniform_(0.5, 1.5)
            a.bias.normal_()
    b.load_state_dict(a.state_dict())
    return a, b


def _run(bn, x, g, fast):
    with fast_batchnorm(fast):
        y = bn(x)
    params = [p for p in (bn.weight, bn.bias) if p is not None]
    grads = torch.autograd.grad(y, [x, *params], g)
    return y, grads


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 5), c=st.integers(1, 4), h=st.integers(1, 4), w=st.integers(1, 4),
       momentum=st.sampled_from([0.1, 0.5, None]), affine=st.booleans(), track=st.booleans(),
       shift=st.floats(-5, 5))
def test_matches_torch_batchnorm2d_in_float64(n, c, h, w, momentum, affine, track, shift):
    torch.manual_seed(n * 100 + c * 10 + h + w)
    if n * h * w < 2:
        return
    a, b = _pair(L.BatchNorm2d, c, torch.float64, momentum=momentum, affine=affine, track_running_stats=track)
    x = (torch.randn(n, c, h, w, dtype=torch.float64) * 2 + shift).requires_grad_(True)
    g = torch.randn(n, c, h, w, dtype=torch.float64)
    for _ in range(2):  # two steps: the running statistics' update uses the counter
        ya, ga = _run(a, x, g, True)
        yb, gb = _run(b, x, g, False)
        torch.testing.assert_close(ya, yb, rtol=1e-10, atol=1e-12)
        for p, q in zip(ga, gb):
            torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-11)
    for name, buf in b.named_buffers():
        torch.testing.assert_close(dict(a.named_buffers())[name], buf, rtol=1e-12, atol=1e-14)


def test_float32_time_steps_match_torch_to_rounding():
    """[T, B, C, H, W] in float32, off-centre data (mean 5, std 3): values and gradients to 1e-5."""
    torch.manual_seed(0)
    a, b = _pair(L.BatchNorm2d, 8, torch.float32)
    x = (torch.randn(4, 16, 8, 7, 7) * 3 + 5).requires_grad_(True)
    g = torch.randn_like(x)
    ya, ga = _run(a, x, g, True)
    yb, gb = _run(b, x, g, False)
    torch.testing.assert_close(ya, yb, rtol=1e-5, atol=2e-6)
    for p, q in zip(ga, gb):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5 * float(q.abs().max()))
    torch.testing.assert_close(a.running_var, b.running_var, rtol=1e-6, atol=0)
    torch.testing.assert_close(a.running_mean, b.running_mean, rtol=1e-6, atol=1e-7)


def test_batchnorm1d_and_gradcheck():
    torch.manual_seed(1)
    a, b = _pair(L.BatchNorm1d, 5, torch.float64)
    x = torch.randn(3, 6, 5, dtype=torch.float64).requires_grad_(True)  # [T, B, F]
    g = torch.randn_like(x)
    ya, ga = _run(a, x, g, True)
    yb, gb = _run(b, x, g, False)
    torch.testing.assert_close(ya, yb, rtol=1e-10, atol=1e-12)
    for p, q in zip(ga, gb):
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-11)
    w = torch.rand(3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, dtype=torch.float64, requires_grad=True)
    xs = torch.randn(4, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x_, w_, b_: batch_norm_train(x_, w_, b_)[0], (xs, w, bias))


def test_eval_and_fallbacks_are_torch_exactly():
    torch.manual_seed(2)
    a, b = _pair(L.BatchNorm2d, 3, torch.float32)
    with torch.no_grad():
        a.running_mean.normal_()
        b.running_mean.copy_(a.running_mean)
    x = torch.randn(4, 3, 5, 5)
    a.eval(), b.eval()
    with fast_batchnorm(False):
        ref = b(x)
    assert torch.equal(a(x), ref)  # running statistics: torch's kernel
    a.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = batch_norm_forward(a, x)
    assert int(a.num_batches_tracked) == 1 and torch.isfinite(y.float()).all()
    with pytest.raises(ValueError, match="more than 1 value"):
        batch_norm_forward(a, torch.randn(1, 3, 1, 1))  # torch's own error, not ours


@pytest.mark.parametrize("last", [False, True])
def test_statistics_do_not_depend_on_the_thread_count(last):
    """The kernel adds its float64 partial sums in a fixed block order: same bits at 1 and 2 threads,
    on NCHW and channels-last inputs, and equal to torch's batch norm to float32 rounding."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(300, 24, 7, 9, generator=g) * 2 + 3
    if last:
        x = x.contiguous(memory_format=torch.channels_last)
    w, b = torch.rand(24, generator=g) + 0.5, torch.randn(24, generator=g)
    saved = torch.get_num_threads()
    try:
        out = []
        for n in (1, 2):
            torch.set_num_threads(n)
            out.append(batch_norm_train(x, w, b))
    finally:
        torch.set_num_threads(saved)
    for a, c in zip(*out):
        assert torch.equal(a, c)
    ref = torch.nn.functional.batch_norm(x, None, None, w, b, training=True)
    torch.testing.assert_close(out[0][0], ref, rtol=1e-5, atol=1e-5)
    assert out[0][0].is_contiguous(memory_format=torch.channels_last if last else torch.contiguous_format)
