"""The fused MRU-family kernel against its plain PyTorch reference: states and surrogate gradients.

Without CUDA the kernels run on the CPU under ``TRITON_INTERPRET=1`` (see triton_kernels.py);
the interpreter is slow, so sizes stay small. With CUDA the same tests run compiled.
"""

import math

import pytest
import torch

from triton_kernels import DEVICE, load

tb = load("bistable.scan.triton_bmru")
Config = tb.Config


def _inputs(B, T, H, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(B, T, H, generator=g, dtype=dtype)
    beta = torch.randn(B, T, H, generator=g, dtype=dtype)
    s0 = torch.randn(B, H, generator=g, dtype=dtype).sign()
    eps = torch.rand(H, generator=g, dtype=dtype)
    return c, beta, s0, eps


def _values_and_grads(fn, args, w):
    args = [None if x is None else x.clone().requires_grad_() for x in args]
    s = fn(*args)
    leaves = [x for x in args if x is not None]
    return [s.detach(), *torch.autograd.grad((s * w.to(s.device)).sum(), leaves)]


def _kernel_matches(args, w, want, sharpness, rtol=1e-10, atol=1e-12):
    """The kernel (4 × 2 tiles) against ``want``: values and every gradient."""
    got = _values_and_grads(lambda *x: tb.fused_mru(*x, sharpness=sharpness,
                                                    config=Config(4, 2, 1)),
                            [x.to(DEVICE) for x in args], w)
    for name, x, y in zip(("s", "dc", "dbeta", "ds0", "deps"), got,
                          _values_and_grads(want, args, w)):
        torch.testing.assert_close(x.cpu(), y, rtol=rtol, atol=atol, msg=name)


CASES = [  # B, T, H, s0, epsilon, sharpness, tiles
    (2, 1, 3, True, False, 1.0, Config(4, 4, 1)),
    (2, 7, 3, True, True, 2.0, Config(4, 2, 1)),
    (1, 1000, 1, False, True, 1.0, Config(64, 1, 1)),
    (2, 7, 130, False, False, 0.5, Config(4, 32, 1)),
    (3, 21, 5, True, True, 1.0, Config(8, 4, 1)),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c[:3])))
def test_matches_reference(case):
    B, T, H, with_s0, with_eps, k, config = case
    c, beta, s0, eps = _inputs(B, T, H, seed=T + H)
    args = [c, beta, s0 if with_s0 else None, eps if with_eps else None]
    w = torch.randn(B, T, H, dtype=torch.float64)
    got = _values_and_grads(
        lambda *x: tb.fused_mru(*x, sharpness=k, config=config), [
            None if x is None else x.to(DEVICE) for x in args], w)
    want = _values_and_grads(lambda *x: tb.fused_mru_reference(*x, sharpness=k), args, w)
    for name, x, y in zip(("s", "dc", "dbeta", "ds0", "deps"), got, want):
        torch.testing.assert_close(x.cpu(), y, rtol=1e-10, atol=1e-12, msg=name)


def test_epsilon_one_counts():
    """ε = 1 (CMRU): the state counts the writes, and the gradient through time is exactly 1."""
    c, beta, _, _ = _inputs(2, 9, 4, seed=3)
    c, beta = c.to(DEVICE).requires_grad_(), beta.to(DEVICE)
    s0 = torch.zeros(2, 4, dtype=torch.float64, device=DEVICE, requires_grad=True)
    s = tb.fused_mru(c, beta, s0, torch.ones(4, dtype=torch.float64, device=DEVICE),
                     config=Config(4, 4, 1))
    z = (c.abs() >= beta.abs()).double()
    assert torch.equal(s, (z * torch.where(c >= 0, 1.0, -1.0)).cumsum(1))
    s[:, -1].sum().backward()
    assert torch.equal(s0.grad, torch.ones_like(s0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_bmru_states_exact_in_low_precision(dtype):
    """Gates of 0/1 and values of ±1: the BMRU's states are exact in any storage dtype."""
    c, beta, s0, _ = (x.to(dtype) for x in _inputs(2, 33, 6, seed=4))
    s = tb.fused_mru(c.to(DEVICE), beta.to(DEVICE), s0.to(DEVICE), config=Config(8, 4, 1))
    assert s.dtype == dtype
    assert torch.equal(s.cpu(), tb.fused_mru_reference(c, beta, s0))


def test_surrogate_gradient_at_a_single_step():
    """T = 1, s0 = 0: s = z v; ds/dc = H'(u) sign(c) v + z sign'(c); ds/dβ = -H'(u) sign(β) v."""
    c = torch.tensor([[[0.3, -0.2]]], dtype=torch.float64, requires_grad=True)
    beta = torch.tensor([[[0.1, 0.5]]], dtype=torch.float64, requires_grad=True)
    s = tb.fused_mru(c.to(DEVICE), beta.to(DEVICE), sharpness=2.0, config=Config(4, 2, 1))
    s.sum().backward()

    def sg(u):
        return 2.0 / (1 + (math.pi * 2.0 * u) ** 2)

    want_c = [sg(0.2) * 1 * 1 + 1 * 2 * sg(0.3), sg(-0.3) * -1 * -1 + 0.0]
    want_beta = [-sg(0.2) * 1 * 1, -sg(-0.3) * 1 * -1]
    assert torch.equal(s.cpu(), torch.tensor([[[1.0, 0.0]]], dtype=torch.float64))
    torch.testing.assert_close(c.grad[0, 0], torch.tensor(want_c, dtype=torch.float64))
    torch.testing.assert_close(beta.grad[0, 0], torch.tensor(want_beta, dtype=torch.float64))


def test_ties_follow_h0_and_sign0():
    """Exact ties: ``|c| = |β|`` writes (H(0) = 1) and ``c = 0`` writes +1 (sign(0) = +1), in the
    kernel and in the reference alike, with the same surrogate gradients."""
    g = torch.Generator().manual_seed(9)
    grid = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0], dtype=torch.float64)
    c, beta = (grid[torch.randint(0, 5, (2, 7, 3), generator=g)] for _ in range(2))
    eps = torch.tensor([0.0, 0.25, 1.0], dtype=torch.float64)
    s0 = torch.tensor([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0]], dtype=torch.float64)
    z = (c.abs() >= beta.abs()).double()
    assert (c.abs() == beta.abs()).any() and (c == 0).any() and ((c == 0) & (z == 1)).any()
    s = s0.clone()
    want_s = []
    for t in range(7):  # the recurrence written out: a tie writes, c = 0 writes +1
        s = (1 - z[:, t] + eps * z[:, t]) * s + z[:, t] * torch.where(c[:, t] >= 0, 1.0, -1.0)
        want_s.append(s)
    assert torch.equal(tb.fused_mru_reference(c, beta, s0, eps), torch.stack(want_s, 1))
    w = torch.randn(2, 7, 3, dtype=torch.float64, generator=g)
    _kernel_matches([c, beta, s0, eps], w,
                    lambda *x: tb.fused_mru_reference(*x, sharpness=1.5), 1.5)


def test_ties_have_the_units_own_gradients():
    """At c = 0 or β = 0 the kernel's d|x|/dx is 0, as the units' scan path on the CPU
    (``_MRUSequence``) has it: the kernel once used +1 there (the same forward, other
    gradients)."""
    from bistable.units.bmru import _MRUSequence
    from bistable.units.surrogate import get_surrogate

    c = torch.tensor([[[0.0, 0.0, 0.7, -0.3]]], dtype=torch.float64).repeat(1, 3, 1)
    beta = torch.tensor([[[0.0, 0.5, 0.0, 0.1]]], dtype=torch.float64).repeat(1, 3, 1)
    s0 = torch.tensor([[1.0, -1.0, -1.0, 1.0]], dtype=torch.float64)
    eps = torch.tensor([0.0, 0.5, 1.0, 0.25], dtype=torch.float64)
    w = torch.randn(1, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))

    def unit_path(c, beta, s0, eps):
        y, _, _ = _MRUSequence.apply(c, beta, s0, eps, torch.ones(4, dtype=torch.float64),
                                     get_surrogate("atan"), 1.5, True)
        return y

    _kernel_matches([c, beta, s0, eps], w, unit_path, 1.5)


def test_float64_backward_keeps_a_sharpness_float32_cannot_hold():
    """k = 0.3 reached the float64 kernel rounded to float32 (a 3e-8 relative error in dc)."""
    c, beta, s0, eps = _inputs(2, 7, 3, seed=6)
    w = torch.randn(2, 7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    _kernel_matches([c, beta, s0, eps], w,
                    lambda *x: tb.fused_mru_reference(*x, sharpness=0.3), 0.3,
                    rtol=1e-12, atol=1e-14)


def test_strided_inputs_and_gradient():
    """Dense but not contiguous ``c``, ``β``, ``s0`` (the last two dims swapped in memory) and
    a non-contiguous incoming gradient: the values and gradients of contiguous copies."""
    c, beta, s0, eps = _inputs(2, 7, 3, seed=5)
    strided = [x.transpose(-1, -2).contiguous().transpose(-1, -2) for x in (c, beta, s0)]
    assert not any(x.is_contiguous() for x in strided)
    w = torch.randn(2, 3, 7, dtype=torch.float64)  # the loss reads s transposed: grad_s strided

    def run(fn, args):
        args = [x.clone().requires_grad_() for x in args]
        s = fn(*args)
        leaves = args
        return [s.detach(), *torch.autograd.grad((s.transpose(1, 2) * w.to(s.device)).sum(),
                                                 leaves)]

    got = run(lambda *x: tb.fused_mru(*x, config=Config(4, 2, 1)),
              [x.to(DEVICE) for x in (*strided, eps)])
    want = run(tb.fused_mru_reference, [c, beta, s0, eps])
    for name, x, y in zip(("s", "dc", "dbeta", "ds0", "deps"), got, want):
        torch.testing.assert_close(x.cpu(), y, rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize("bad,match", [
    ({"c": torch.zeros(2, 3)}, "c: expected"),
    ({"c": torch.zeros(2, 3, 4, dtype=torch.int64)}, "c: expected"),
    ({"beta": torch.zeros(2, 3, 5)}, r"beta: expected shape \(2, 3, 4\)"),
    ({"s0": torch.zeros(3, 4)}, r"s0: expected shape \(2, 4\)"),
    ({"epsilon": torch.zeros(5)}, r"epsilon: expected shape \(4,\)"),
    ({"surrogate": "sigmoid"}, "surrogate: expected one of"),
    ({"beta": torch.zeros(2, 3, 4, device="meta")}, "beta: expected device cpu .*got meta"),
    ({"beta": None}, r"beta: expected shape \(2, 3, 4\), got NoneType"),
    ({"beta": torch.zeros(2, 3, 4, dtype=torch.int64)}, "beta: expected a floating dtype"),
    ({"s0": torch.zeros(2, 4, dtype=torch.int32)}, "s0: expected a floating dtype"),
    ({"c": torch.zeros(2, 0, 4), "beta": torch.zeros(2, 0, 4)}, "at least one time step"),
    ({"c": torch.zeros(1, 2**16, 2**15, device="meta"),  # T · H = 2**31 (meta: no memory)
      "beta": torch.zeros(1, 2**16, 2**15, device="meta")}, "too large for 32-bit offsets"),
    *(({"sharpness": k}, f"sharpness: expected a finite number > 0, got {k!r}")
      for k in (0, -1.0, float("nan"), True, "2")),
])
def test_bad_arguments_raise(bad, match):
    args = {"c": torch.zeros(2, 3, 4), "beta": torch.zeros(2, 3, 4), "s0": None, "epsilon": None,
            "surrogate": "atan"} | bad
    for fn in (tb.fused_mru, tb.fused_mru_reference):
        with pytest.raises(ValueError, match=match):
            fn(**args)


def test_the_kernels_refuse_cpu_tensors_outside_the_interpreter(monkeypatch):
    """Triton's own words were "0 active drivers"; the reference runs on the CPU. The switch is
    read as Triton reads it; a sharpness of any numeric kind is taken."""
    import numpy as np

    c = torch.randn(1, 3, 2)
    for off in (None, "0", "false"):
        if off is None:
            monkeypatch.delenv("TRITON_INTERPRET", raising=False)
        else:
            monkeypatch.setenv("TRITON_INTERPRET", off)
        with pytest.raises(ValueError, match="c: expected a CUDA tensor for the Triton kernels"):
            tb.fused_mru(c, c)
    assert tb.fused_mru_reference(c, c).shape == (1, 3, 2)
    for on in ("1", "true", "On"):
        monkeypatch.setenv("TRITON_INTERPRET", on)
        for k in (2, np.float32(2.0), torch.tensor(2.0)):
            torch.testing.assert_close(tb.fused_mru(c, c, sharpness=k),
                                       tb.fused_mru_reference(c, c, sharpness=2.0))


@pytest.mark.parametrize("shape", [(0, 5, 3), (2, 5, 0)])
def test_empty_batch_or_width(shape):
    """B = 0 or H = 0: an empty state of the input's shape and dtype, and empty gradients."""
    c = torch.zeros(shape, dtype=torch.float64, device=DEVICE, requires_grad=True)
    beta = torch.zeros(shape, dtype=torch.float64, device=DEVICE, requires_grad=True)
    s = tb.fused_mru(c, beta, torch.zeros(shape[0], shape[2], dtype=torch.float64, device=DEVICE),
                     torch.zeros(shape[2], dtype=torch.float64, device=DEVICE))
    assert s.shape == shape and s.dtype == torch.float64 and s.device == c.device
    s.sum().backward()
    assert c.grad.shape == shape and beta.grad.shape == shape


@pytest.mark.gpu  # many tiles in flight at once
def test_many_tiles_in_flight():
    """The default tiles at a size where hundreds of programs hand states on concurrently."""
    c, beta, s0, eps = _inputs(4, 3000, 300, seed=6)
    w = torch.randn(c.shape, dtype=torch.float64)
    args = [c.float(), beta.float(), s0.float(), eps.float()]
    got = _values_and_grads(tb.fused_mru, [x.to(DEVICE) for x in args], w.float())
    want = _values_and_grads(tb.fused_mru_reference, [x.double() for x in args], w)
    for name, x, y in zip(("s", "dc", "dbeta", "ds0", "deps"), got, want):
        torch.testing.assert_close(x.cpu().double(), y, rtol=1e-4, atol=1e-4, msg=name)


@pytest.mark.parametrize("with_s0, with_eps", [(True, True), (False, False), (True, False)])
def test_eager_autograd_is_the_operators(with_s0, with_eps):
    """Eager mode's autograd.Function and the custom operators (what torch.compile calls) give
    the same values and gradients, bit for bit: the same kernel launches behind both."""
    c, beta, s0, eps = _inputs(2, 9, 3, seed=8)
    s0, eps = (s0 if with_s0 else None), (eps if with_eps else None)
    args = [None if x is None else x.to(DEVICE).requires_grad_() for x in (c, beta, s0, eps)]
    leaves = [x for x in args if x is not None]
    w = torch.randn(2, 9, 3, dtype=torch.float64, device=DEVICE)
    tiles = list(Config(4, 2, 1))
    results = []
    for fn in (tb._EagerFusedMRU.apply, tb.fused_mru_op):
        s = fn(*args, 2.0, tiles)
        results.append([s, *torch.autograd.grad((s * w).sum(), leaves)])
    for got, want in zip(*results, strict=True):
        assert torch.equal(got, want)


@pytest.mark.parametrize("with_s0, with_eps", [(True, True), (False, False)])
def test_a_gradient_penalty_through_the_kernels_is_recorded(with_s0, with_eps):
    """create_graph=True: the eager function's backward is recomputed in plain operations and
    recorded, so the penalty's gradients equal the plain reference's (before, autograd.grad
    dropped the terms behind its once-differentiable backward without a word)."""
    c, beta, s0, eps = _inputs(2, 9, 3, seed=9)
    s0, eps = (s0 if with_s0 else None), (eps if with_eps else None)
    w = torch.randn(2, 9, 3, dtype=torch.float64)

    def penalty_grads(fn):
        leaves = [x.clone().requires_grad_() for x in (c, beta, s0, eps) if x is not None]
        it = iter(leaves)
        args = [None if x is None else next(it).to(DEVICE) for x in (c, beta, s0, eps)]
        s = fn(*args, sharpness=2.0)
        first = torch.autograd.grad((s * w.to(s.device)).sum(), leaves, create_graph=True)
        return torch.autograd.grad(sum(g.square().sum() for g in first), leaves)

    got = penalty_grads(lambda *x, sharpness: tb.fused_mru(*x, sharpness=sharpness,
                                                           config=Config(4, 2, 1)))
    for x, y in zip(got, penalty_grads(tb.fused_mru_reference), strict=True):
        torch.testing.assert_close(x.cpu(), y, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("with_s0, with_eps", [(True, True), (False, False)])
def test_operators_pass_pytorch_s_opcheck(with_s0, with_eps):
    """Schema, fake tensors (torch.compile's shapes), autograd registration and AOT dispatch of
    ``bistable::fused_mru`` and its backward operator."""
    c, beta, s0, eps = _inputs(2, 9, 3, seed=7)
    s0, eps = (s0 if with_s0 else None), (eps if with_eps else None)
    args = [None if x is None else x.to(DEVICE).requires_grad_() for x in (c, beta, s0, eps)]
    tiles = list(Config(4, 2, 1))
    torch.library.opcheck(tb.fused_mru_op, (*args, 2.0, tiles))
    args = [None if x is None else x.detach() for x in args]  # the backward is not differentiable
    s = tb.fused_mru_op(*args, 2.0, tiles)
    torch.library.opcheck(tb.fused_mru_backward_op, (torch.randn_like(s), *args, s, 2.0, tiles))


@pytest.fixture
def fused_path(monkeypatch):
    """The MRU units take the fused kernels on this device (CPU: interpreted)."""
    from bistable.units import bmru

    monkeypatch.setattr(bmru, "_fused_mru", lambda c: tb.fused_mru)


def _model(name="bmru"):
    from bistable.models import build_model

    torch.manual_seed(0)
    return build_model(name, input_size=3, output_size=2, hidden=6, layers=2).double().to(DEVICE)


def _outputs_and_grads(model, x):
    from bistable.units.bmru import write_rate

    y, _ = model(x)
    rate = write_rate(model)
    return y, torch.autograd.grad(y.sum() + rate, list(model.parameters())), rate.detach()


@pytest.mark.parametrize("name", ["bmru", "cmru"])
def test_units_on_the_fused_path_match_the_scan(monkeypatch, name):
    """A whole model, fused kernels against the units' own scan: outputs, the write rate and
    every parameter's gradient (the surrogates agree)."""
    from bistable.units import bmru

    x = torch.randn(3, 17, 3, dtype=torch.float64, device=DEVICE)
    monkeypatch.setattr(bmru, "_fused_mru", lambda c: None)
    y_scan, g_scan, rate_scan = _outputs_and_grads(_model(name), x)
    monkeypatch.setattr(bmru, "_fused_mru", lambda c: tb.fused_mru)
    y_fused, g_fused, rate_fused = _outputs_and_grads(_model(name), x)
    torch.testing.assert_close(y_fused, y_scan, rtol=1e-12, atol=1e-12)
    for got, want in zip(g_fused, g_scan, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(rate_fused, rate_scan)


def test_a_model_on_the_fused_path_compiles_into_one_graph(fused_path):
    """The fused kernels behind the ``bistable::fused_mru`` operator under torch.compile
    (``fullgraph=True`` fails on any graph break): values and gradients as in eager mode."""
    model = _model()
    x = torch.randn(4, 13, 3, dtype=torch.float64, device=DEVICE)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    (y, _), (want, _) = compiled(x), model(x)
    torch.testing.assert_close(y, want, rtol=0, atol=0)
    params = list(model.parameters())
    for got, expected in zip(torch.autograd.grad(y.sum(), params),
                             torch.autograd.grad(want.sum(), params), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
