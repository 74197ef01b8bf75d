"""The unit interface, for every unit of the registry's table, and BRC / nBRC / minGRU / GRU / LSTM
against plain float64 loops of their equations (SPEC.md §5)."""

import math

import pytest
import torch

from bistable.models import build_model
from bistable.nn.blocks import UNITS, make_unit
from bistable.units.brc import BRC, NBRC
from bistable.units.brc_loop import brc_loop, brc_loop_backward
from bistable.units.mingru import MinGRU
from bistable.units.rnn import GRU, LSTM
from streaming import assert_nested_close, stepped
from torch_support import needs_cpp

ALL_UNITS = sorted(UNITS)


def build(name, F=3, H=5, seed=0):
    torch.manual_seed(seed)
    return make_unit(name, F, H).double()


@pytest.mark.parametrize("name", ALL_UNITS)
@pytest.mark.parametrize("T", [1, 7])
def test_forward_equals_the_step_loop(name, T):
    unit = build(name)
    x = torch.randn(2, T, 3, dtype=torch.float64)
    y, state = unit(x)
    y_ref, state_ref = stepped(unit, x)
    assert y.shape == (2, T, 5)
    torch.testing.assert_close(y, y_ref, rtol=1e-9, atol=1e-9)
    assert_nested_close(state, state_ref)


@pytest.mark.parametrize("name", ALL_UNITS)
def test_split_forwards_continue(name):
    unit = build(name)
    x = torch.randn(3, 11, 3, dtype=torch.float64)
    y, state = unit(x)
    y1, s1 = unit(x[:, :4])
    y2, s2 = unit(x[:, 4:], s1)
    torch.testing.assert_close(torch.cat([y1, y2], dim=1), y, rtol=1e-9, atol=1e-9)
    assert_nested_close(s2, state)


@pytest.mark.parametrize("name", ALL_UNITS)
def test_bad_input_is_a_value_error_naming_the_expected_size(name):
    unit = build(name)
    with pytest.raises(ValueError, match=r"x: expected shape \(B, T, 3\)"):
        unit(torch.randn(2, 4, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"x: expected shape \(B, T, 3\)"):
        unit(torch.randn(4, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"x_t: expected shape \(B, 3\)"):
        unit.step(torch.randn(2, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="dtype"):
        unit(torch.ones(2, 4, 3, dtype=torch.int64))


@pytest.mark.parametrize("name", ALL_UNITS)
def test_gradients_reach_the_input_and_are_finite(name):
    unit = build(name)
    x = torch.randn(2, 6, 3, dtype=torch.float64, requires_grad=True)
    y, _ = unit(x)
    y.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for p in unit.parameters():
        assert p.grad is None or torch.isfinite(p.grad).all()


def reference_brc(unit: BRC, x, h, full: bool):
    """SPEC.md §5 with separate matrices, one step at a time."""
    H = unit.hidden_size
    U_a, U_c, U = unit.U[:H], unit.U[H : 2 * H], unit.U[2 * H :]
    b_a, b_c = unit.bias[:H], unit.bias[H:]
    if full:
        rec_a, rec_c = (lambda h: h @ unit.W[:H].T), (lambda h: h @ unit.W[H:].T)
    else:
        rec_a, rec_c = (lambda h: unit.w[:H] * h), (lambda h: unit.w[H:] * h)
    ys = []
    for t in range(x.shape[1]):
        a = 1 + torch.tanh(x[:, t] @ U_a.T + rec_a(h) + b_a)
        c = torch.sigmoid(x[:, t] @ U_c.T + rec_c(h) + b_c)
        h = c * h + (1 - c) * torch.tanh(x[:, t] @ U.T + a * h)
        ys.append(h)
    return torch.stack(ys, dim=1), h


@pytest.mark.parametrize("cls", [BRC, NBRC])
def test_brc_matches_the_equations_values_and_gradients(cls):
    torch.manual_seed(3)
    unit = cls(3, 5).double()
    with torch.no_grad():  # move off the init so that every term matters
        for p in unit.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(2, 7, 3, dtype=torch.float64)
    h0 = torch.randn(2, 5, dtype=torch.float64)
    y, h = unit(x, h0)
    y_ref, h_ref = reference_brc(unit, x, h0, full=cls is NBRC)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    params = list(unit.parameters())
    g = torch.autograd.grad(y.sum() + h.square().sum(), params)
    g_ref = torch.autograd.grad(y_ref.sum() + h_ref.square().sum(), params)
    for u, v in zip(g, g_ref):
        torch.testing.assert_close(u, v, rtol=1e-10, atol=1e-12)


def perturbed(cls, F, H, seed, **options):
    """A float64 unit moved off its init, so that every term of the equations matters."""
    torch.manual_seed(seed)
    unit = cls(F, H, **options).double()
    with torch.no_grad():
        for p in unit.parameters():
            p.add_(0.5 * torch.randn_like(p))
    return unit


@needs_cpp
@pytest.mark.parametrize("cls", [BRC, NBRC])
@pytest.mark.parametrize("B, T, F, H", [(1, 1, 2, 1), (3, 17, 4, 13), (2, 9, 3, 37)])
def test_fused_loop_matches_the_eager_loop_values_and_gradients(cls, B, T, F, H):
    """``compile_loop=True`` (the C++ kernel and its hand-written backward) against the eager loop
    under autograd: float64, sizes off the vector width, every input and parameter."""
    eager = perturbed(cls, F, H, seed=B * T * H)
    fused = perturbed(cls, F, H, seed=B * T * H, compile_loop=True)
    x = (2 * torch.randn(B, T, F, dtype=torch.float64)).requires_grad_()
    h0 = torch.randn(B, H, dtype=torch.float64).tanh().requires_grad_()
    outs = [unit(x, h0) for unit in (fused, eager)]
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-12, atol=1e-12)
    gy, gh = torch.randn(B, T, H, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64)
    grads = [torch.autograd.grad((y * gy).sum() + (h * gh).sum(), [x, h0, *unit.parameters()])
             for unit, (y, h) in zip((fused, eager), outs)]
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@needs_cpp
@pytest.mark.parametrize("cls", [BRC, NBRC])
def test_fused_loop_in_float32_and_its_fallback(cls):
    """float32 within rounding of the float64 loop; a dtype the kernel lacks runs the eager loop."""
    fused = perturbed(cls, 3, 19, seed=1, compile_loop=True)
    x = torch.randn(4, 30, 3, dtype=torch.float64)
    want, _ = fused(x)
    got, _ = fused.float()(x.float())
    torch.testing.assert_close(got, want.float(), rtol=1e-5, atol=1e-5)
    y, _ = fused.bfloat16()(x.bfloat16())
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()


@needs_cpp
@pytest.mark.parametrize("full", [False, True])
def test_fused_loop_operators_pass_pytorch_s_opcheck(full):
    """Schema, fake tensors (torch.compile's shapes), autograd registration and AOT dispatch of
    ``bistable::brc_loop`` and its backward operator."""
    g = torch.Generator().manual_seed(0)
    B, T, H, kw = 3, 8, 5, {"dtype": torch.float64}
    u = torch.randn(B, T, 3 * H, generator=g, **kw).requires_grad_()
    bias = torch.randn(2 * H, generator=g, **kw).requires_grad_()
    w = torch.randn(*((2 * H, H) if full else (2 * H,)), generator=g, **kw).requires_grad_()
    h0 = torch.randn(B, H, generator=g, **kw).tanh().requires_grad_()
    torch.library.opcheck(brc_loop, (u, bias, w, h0))
    args = [t.detach() for t in (u, bias, w, h0)]
    h = brc_loop(*args)
    torch.library.opcheck(brc_loop_backward, (torch.randn_like(h), *args, h))


@needs_cpp
def test_a_network_with_the_fused_loop_compiles_in_one_graph():
    torch.manual_seed(0)
    model = build_model("nbrc", 2, 3, hidden=6, layers=1, compile_loop=True)
    x = torch.randn(2, 9, 2)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    (y, _), (want, _) = compiled(x), model(x)
    torch.testing.assert_close(y, want)


@pytest.mark.parametrize("cls", [BRC, NBRC])
def test_brc_gates_are_those_of_the_forward(cls):
    """``gates(x, y, h0)`` gives the a_t, c_t the forward used: stepping the cell with them
    reproduces y."""
    unit = perturbed(cls, 3, 5, seed=7)
    x, h0 = torch.randn(2, 6, 3, dtype=torch.float64), torch.randn(2, 5, dtype=torch.float64)
    y, _ = unit(x, h0)
    a, c = unit.gates(x, y, h0)
    assert a.shape == c.shape == (2, 6, 5) and (a > 0).all() and (a < 2).all()
    h, cand = h0, x @ unit.U[10:].T
    for t in range(6):
        h = c[:, t] * h + (1 - c[:, t]) * torch.tanh(cand[:, t] + a[:, t] * h)
        torch.testing.assert_close(h, y[:, t], rtol=1e-12, atol=1e-12)


def test_brc_refuses_a_compile_loop_that_is_not_a_bool():
    with pytest.raises(ValueError, match=r"compile_loop: expected True or False, got 'yes'"):
        NBRC(3, 2, compile_loop="yes")


def test_brc_inits():
    torch.manual_seed(4)
    F, H = 6, 10
    bound = math.sqrt(6 / (F + H))
    for unit in (BRC(F, H), NBRC(F, H)):
        assert unit.U.shape == (3 * H, F) and unit.U.abs().max() <= bound
        assert unit.U.abs().max() > 0.8 * bound  # uniform on the whole Glorot range
        assert torch.equal(unit.bias, torch.zeros(2 * H))
    assert torch.equal(BRC(F, H).w, torch.ones(2 * H))
    W = NBRC(F, H).W.detach()
    eye = torch.eye(H)
    torch.testing.assert_close(W[:H] @ W[:H].T, eye, atol=1e-5, rtol=0)
    torch.testing.assert_close(W[H:] @ W[H:].T, eye, atol=1e-5, rtol=0)
    # the candidate has no bias: with zero input and zero state the state stays zero
    unit = BRC(F, H)
    _, h = unit(torch.zeros(1, 5, F))
    assert torch.equal(h, torch.zeros(1, H))


def test_mingru_matches_the_equations_values_and_gradients():
    torch.manual_seed(5)
    unit = MinGRU(4, 3).double()
    x = torch.randn(2, 9, 4, dtype=torch.float64)
    h0 = torch.randn(2, 3, dtype=torch.float64)
    W_z, W_h = unit.proj.weight[:3], unit.proj.weight[3:]
    h, ys = h0, []
    for t in range(9):
        z = torch.sigmoid(x[:, t] @ W_z.T)
        h = (1 - z) * h + z * (x[:, t] @ W_h.T)
        ys.append(h)
    y_ref = torch.stack(ys, dim=1)
    y, h_last = unit(x, h0)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h_last, h, rtol=1e-12, atol=1e-12)
    w = torch.randn_like(y)
    (g,) = torch.autograd.grad((y * w).sum(), [unit.proj.weight])
    (g_ref,) = torch.autograd.grad((y_ref * w).sum(), [unit.proj.weight])
    torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-12)


def test_gru_and_lstm_are_pytorchs():
    torch.manual_seed(6)
    x = torch.randn(2, 5, 3)
    gru, lstm = GRU(3, 4), LSTM(3, 4)
    h0 = torch.randn(2, 4)
    y, h = gru(x, h0)
    y_ref, h_ref = gru.rnn(x, h0[None])
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(h, h_ref[0])
    c0 = torch.randn(2, 4)
    y, (h, c) = lstm(x, (h0, c0))
    y_ref, (h_ref, c_ref) = lstm.rnn(x, (h0[None], c0[None]))
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close((h, c), (h_ref[0], c_ref[0]))
    for bad in (h0, [h0, c0], (h0,), (h0, c0, c0)):
        with pytest.raises(ValueError, match=r"tuple \(h, c\)"):
            lstm(x, bad)
    with pytest.raises(ValueError, match=r"state\[1\] \(c\): expected shape \(2, 4\)"):
        lstm(x, (h0, torch.zeros(2, 3)))


@pytest.mark.parametrize("name", ["brc", "nbrc", "mingru", "gru"])
def test_wrong_state_shape_is_a_value_error(name):
    unit = build(name)
    with pytest.raises(ValueError, match=r"state: expected shape \(2, 5\)"):
        unit(torch.randn(2, 4, 3, dtype=torch.float64), torch.zeros(2, 4, dtype=torch.float64))


@needs_cpp
def test_compile_loop_runs_the_fused_kernel(monkeypatch):
    """``compile_loop=True`` calls the C++ loop in float32 and float64 (were it bypassed, the
    kernel-vs-eager tests would compare the eager loop with itself)."""
    from bistable.units import brc_loop as module

    calls, real = [], module.brc_loop
    monkeypatch.setattr(module, "brc_loop", lambda *a: calls.append(a[0].dtype) or real(*a))
    for cls in (BRC, NBRC):
        for dtype in (torch.float32, torch.float64):
            cls(3, 5, compile_loop=True).to(dtype)(torch.randn(2, 4, 3, dtype=dtype))
    assert calls == [torch.float32, torch.float64] * 2
