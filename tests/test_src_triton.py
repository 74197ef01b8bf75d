"""The SRC's fused Triton loop against the eager loop: values and gradients (float64, odd sizes).

Without CUDA the kernels run on the CPU under ``TRITON_INTERPRET=1`` (see triton_kernels.py).
"""

import pytest
import torch

from bistable.units import src, src_loop
from src_loops import ALPHA, RHO, Z_DEP, Z_HYP, assert_same_run, loop_inputs, loss, loss_weights
from triton_kernels import DEVICE, load

st = load("bistable.units.src_triton")


def _inputs(B, T, H, seed=0):
    return loop_inputs(B, T, H, seed, DEVICE)


def _run(kernel, d, i0, h0, hs0, r, r_s, b, current, detach, use_i=False):
    """h, i, h_s[T] and the gradients into d, i0, b, h0, hs0 of a fixed random loss."""
    d, i0, h0, hs0, b = (x.clone().requires_grad_() for x in (d, i0, h0, hs0, b))
    if kernel:
        h, i, hs = src_loop.src_loop(d, i0, b, h0, hs0, r, r_s, ALPHA, RHO, Z_HYP, Z_DEP,
                                     current, detach, True)
    else:  # autograd through the plain loops
        steps, prev = [], i0
        for t in range(d.shape[1]):
            prev = ALPHA * prev + d[:, t]
            steps.append(prev)
        i = torch.stack(steps, 1)
        h_in, hs_in = (h0.detach(), hs0.detach()) if detach else (h0, hs0)
        u = RHO * torch.tanh(i / RHO) + b
        h, hs = src_loop._forward_steps(u, h_in, hs_in, r, r_s, Z_HYP, Z_DEP, current)
    value = loss(h, i, hs, *loss_weights(h, use_i), with_state=not detach)
    grads = torch.autograd.grad(value, [d, i0, b, h0, hs0], allow_unused=True)
    return h, i, hs, grads


@pytest.fixture
def triton_loop(monkeypatch):
    """``compile_loop=True`` runs the Triton kernel on this device (CPU: interpreted)."""
    monkeypatch.setattr(src_loop, "_loop",
                        lambda i, compiled: st if compiled else src_loop.EagerLoop)


@pytest.mark.parametrize("B,T,H", [(1, 1, 1), (2, 7, 3), (3, 37, 130)])
@pytest.mark.parametrize("current", [False, True])
@pytest.mark.parametrize("use_i", [False, True], ids=["loss-on-h", "loss-on-i-too"])
def test_values_and_gradients_match_the_loop(triton_loop, B, T, H, current, use_i):
    args = _inputs(B, T, H, seed=T)
    assert_same_run(_run(True, *args, current, False, use_i),
                    _run(False, *args, current, False, use_i))


def test_detached_recurrence_matches_the_eager_function(triton_loop):
    args = _inputs(2, 9, 5)
    d, i0, h0, hs0, r, r_s, b = args
    h_k, i_k, _, g_k = _run(True, *args, False, True)
    # the eager loop with detach: δ = grad_h (1 − h²), no flow through the state (h, h_s)
    eager = [x.clone().requires_grad_() for x in (d, i0, b)]
    h_e, i_e, _ = src_loop.src_loop(eager[0], eager[1], eager[2], h0, hs0, r, r_s, ALPHA, RHO,
                                    Z_HYP, Z_DEP, False, True, False)
    w = torch.randn(h_e.shape, generator=torch.Generator().manual_seed(1), dtype=h_e.dtype)
    g_e = torch.autograd.grad((h_e * w.to(h_e.device)).sum(), eager)
    torch.testing.assert_close(h_k, h_e, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(i_k, i_e, rtol=1e-12, atol=1e-12)
    for got, want in zip(g_k[:3], g_e):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    assert g_k[3] is None and g_k[4] is None


def test_layer_with_compile_loop_runs_the_kernel(triton_loop):
    torch.manual_seed(0)
    layer = src.SRC(11, 6, compile_loop=True).double().to(DEVICE)
    eager = src.SRC(11, 6).double().to(DEVICE)
    eager.load_state_dict(layer.state_dict())
    x = (torch.rand(2, 30, 11, dtype=torch.float64) < 0.3).double().to(DEVICE) * 3
    (y_k, s_k), (y_e, s_e) = layer(x), eager(x)
    torch.testing.assert_close(y_k, y_e, rtol=1e-12, atol=1e-12)
    for a, b in zip(s_k, s_e):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    gk = torch.autograd.grad(y_k.sum() + s_k[2].sum(), layer.weight)
    ge = torch.autograd.grad(y_e.sum() + s_e[2].sum(), eager.weight)
    torch.testing.assert_close(gk, ge, rtol=1e-10, atol=1e-10)


def test_layer_with_compile_loop_compiles_into_one_graph(triton_loop):
    """The Triton loop behind the ``bistable::src_loop`` operator under torch.compile
    (``fullgraph=True`` fails on any graph break): eager values and gradients."""
    torch.manual_seed(0)
    layer = src.SRC(11, 6, compile_loop=True).double().to(DEVICE)
    x = (torch.rand(2, 30, 11, dtype=torch.float64) < 0.3).double().to(DEVICE) * 3
    torch._dynamo.reset()
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    (y_c, _), (y_e, _) = compiled(x), layer(x)
    torch.testing.assert_close(y_c, y_e, rtol=0, atol=0)
    gc = torch.autograd.grad(y_c.sum(), layer.weight)
    ge = torch.autograd.grad(y_e.sum(), layer.weight)
    torch.testing.assert_close(gc, ge, rtol=1e-12, atol=1e-12)


def test_gate_at_exactly_one_half_is_hyperpolarised(triton_loop):
    """``g = 0.5`` exactly (``h0 = 0.5``, the gate's input at the first step) picks ``z_hyp``
    (``g ≤ 0.5``), forward and backward, as the eager loop does."""
    d, i0, h0, hs0, r, r_s, b = _inputs(2, 7, 3, seed=3)
    h0[:, 1] = 0.5
    args = (d, i0, h0, hs0, r, r_s, b)
    assert_same_run(_run(True, *args, False, False), _run(False, *args, False, False))
