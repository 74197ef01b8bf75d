"""The SRC's fused C++ loop (``compile_loop=True`` on CPU) against the eager loop, operator to
operator: values and the gradients into i, b, h0 and h_s0 (float64, odd widths that leave a
partial vector, both gate times, detached or not)."""

import pytest
import torch

from bistable.units import src_loop
from src_loops import RHO, Z_DEP, Z_HYP, loop_inputs
from torch_support import needs_cpp

pytestmark = needs_cpp


def _run(compiled, i, h0, hs0, r, r_s, b, current, detach):
    """h, h_s[T] and the gradients into i, b, h0, hs0 of a fixed random loss on both."""
    i, h0, hs0, b = (x.clone().requires_grad_() for x in (i, h0, hs0, b))
    h, hs = src_loop.src_loop(i, b, h0, hs0, r, r_s, RHO, Z_HYP, Z_DEP, current, detach,
                              compiled)
    w = torch.randn(h.shape, generator=torch.Generator().manual_seed(1), dtype=h.dtype)
    loss = (h * w).sum() + (hs * w[:, 0]).sum()
    return h, hs, torch.autograd.grad(loss, [i, b, h0, hs0], allow_unused=True)


@pytest.mark.parametrize("B,T,H", [(1, 1, 1), (2, 7, 3), (3, 37, 19)])
@pytest.mark.parametrize("current", [False, True], ids=["gate-previous", "gate-current"])
@pytest.mark.parametrize("detach", [False, True], ids=["bptt", "detached"])
def test_values_and_gradients_match_the_eager_loop(B, T, H, current, detach):
    args = loop_inputs(B, T, H, seed=T)
    h_k, hs_k, g_k = _run(True, *args, current, detach)
    h_e, hs_e, g_e = _run(False, *args, current, detach)
    torch.testing.assert_close(h_k, h_e, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(hs_k, hs_e, rtol=1e-12, atol=1e-12)
    for name, a, b in zip(("i", "b", "h0", "hs0"), g_k, g_e):
        if b is None:  # detached: no gradient into the initial state
            assert a is None and detach, f"grad {name}"
        else:
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=f"grad {name}")
