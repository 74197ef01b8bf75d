"""The SRC's fused C++ loop (``compile_loop=True`` on CPU) against the eager loop, operator to
operator: values and the gradients into d, i0, b, h0 and h_s0 (float64, odd widths that leave a
partial vector, both gate times, detached or not, with and without a gradient into i)."""

import pytest
import torch

from bistable.units import src_loop
from src_loops import ALPHA, RHO, Z_DEP, Z_HYP, assert_same_run, loop_inputs, loss, loss_weights
from torch_support import needs_cpp

pytestmark = needs_cpp


def _run(compiled, d, i0, h0, hs0, r, r_s, b, current, detach, use_i=False):
    """h, i, h_s[T] and the gradients into d, i0, b, h0, hs0 of a fixed random loss on both."""
    d, i0, h0, hs0, b = (x.clone().requires_grad_() for x in (d, i0, h0, hs0, b))
    h, i, hs = src_loop.src_loop(d, i0, b, h0, hs0, r, r_s, ALPHA, RHO, Z_HYP, Z_DEP, current,
                                 detach, compiled)
    value = loss(h, i, hs, *loss_weights(h, use_i))
    return h, i, hs, torch.autograd.grad(value, [d, i0, b, h0, hs0], allow_unused=True)


@pytest.mark.parametrize("B,T,H", [(1, 1, 1), (2, 7, 3), (3, 37, 19)])
@pytest.mark.parametrize("current", [False, True], ids=["gate-previous", "gate-current"])
@pytest.mark.parametrize("detach", [False, True], ids=["bptt", "detached"])
@pytest.mark.parametrize("use_i", [False, True], ids=["loss-on-h", "loss-on-i-too"])
def test_values_and_gradients_match_the_eager_loop(B, T, H, current, detach, use_i):
    args = loop_inputs(B, T, H, seed=T)
    got = _run(True, *args, current, detach, use_i)
    want = _run(False, *args, current, detach, use_i)
    assert_same_run(got, want)
    assert (want[3][3] is None) == detach  # detached: no gradient into the initial h, h_s
    assert want[3][1] is not None  # the integration keeps its gradient into i0


@pytest.mark.parametrize("detach", [False, True], ids=["bptt", "detached"])
def test_batch_rows_split_over_threads_give_the_one_thread_run(detach):
    """The loop runs its batch rows on torch's threads (OpenMP): an odd batch split over three
    threads gives the one-thread run bit for bit, and the eager loop's values."""
    args = loop_inputs(7, 23, 19, seed=3)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _run(True, *args, False, detach)
        torch.set_num_threads(3)
        split = _run(True, *args, False, detach)
    finally:
        torch.set_num_threads(threads)
    for x, y in zip([*one[:3], *one[3]], [*split[:3], *split[3]], strict=True):
        assert (x is None and y is None) or torch.equal(x, y)
    assert_same_run(split, _run(False, *args, False, detach))


def test_compile_loop_on_cuda_without_triton_runs_the_pytorch_loop(monkeypatch):
    """No Triton (or one older than 3.6) on a CUDA machine: the layer runs the eager loop, with
    one warning naming why, as the MRUs fall back to the PyTorch scan (a stand-in for a CUDA
    tensor: only its device and dtype are read)."""
    import sys
    import types

    import bistable.units

    monkeypatch.setitem(sys.modules, "bistable.units.src_triton", None)  # import fails
    monkeypatch.delattr(bistable.units, "src_triton", raising=False)  # an earlier import's
    src_loop._triton_kernel.cache_clear()
    on_cuda = types.SimpleNamespace(device=torch.device("cuda"), dtype=torch.float32)
    try:
        with pytest.warns(UserWarning, match="the SRC's fused CUDA loop is unavailable"):
            assert src_loop._loop(on_cuda, compiled=True) is src_loop.EagerLoop
        assert src_loop._loop(on_cuda, compiled=True) is src_loop.EagerLoop  # warned once
    finally:
        src_loop._triton_kernel.cache_clear()
