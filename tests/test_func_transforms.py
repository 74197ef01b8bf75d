"""``torch.func`` through the scan and the units: ``grad``, ``jacrev``, ``jacfwd`` and
``vmap(grad)`` (per-sample gradients) against plain autograd and the plain loop, in float64."""

import pytest
import torch
from torch.func import functional_call, grad, jacfwd, jacrev, jvp, vmap

from bistable.models import MODEL_NAMES, build_model
from bistable.scan import linear_scan, linear_scan_reference
from bistable.units.bmru import BMRU, CMRU, FirstQuadrantBMRU
from bistable.units.brc import BRC, NBRC
from bistable.units.src import SRC

pytestmark = [  # torch's own, not ours: forward mode loads its decompositions by torch.jit, and
    # vmap runs the GLU's forward-mode derivative by its slow per-sample fallback
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning"),
]


def _scan_inputs(B, T, D, a_batch, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(a_batch, T, D, generator=g, dtype=torch.float64) * 0.4 + 0.6
    b = torch.randn(B, T, D, generator=g, dtype=torch.float64)
    h0 = torch.randn(B, D, generator=g, dtype=torch.float64)
    if dtype.is_complex:
        a = torch.polar(a, torch.rand(a.shape, generator=g, dtype=torch.float64) * 6.28)
        b, h0 = (torch.complex(x, torch.randn(x.shape, generator=g, dtype=torch.float64))
                 for x in (b, h0))
    return a, b, h0


def _close(x, y, tol=1e-12):
    for p, q in zip(x, y, strict=True):
        torch.testing.assert_close(p, q, rtol=tol, atol=tol)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("a_batch", [3, 1])
@pytest.mark.parametrize("with_h0", [False, True])
def test_scan_jacobians_match_the_plain_loop(reverse, a_batch, with_h0):
    a, b, h0 = _scan_inputs(3, 7, 5, a_batch)
    args = (a, b, h0) if with_h0 else (a, b)
    argnums = tuple(range(len(args)))

    def by(scan):
        return lambda *xs: scan(*xs, reverse=reverse).sin()

    for jacobian in (jacrev, jacfwd):
        _close(jacobian(by(linear_scan), argnums)(*args),
               jacobian(by(linear_scan_reference), argnums)(*args))


@pytest.mark.parametrize("reverse", [False, True])
def test_scan_jvp_of_complex_inputs_matches_the_plain_loop(reverse):
    a, b, h0 = _scan_inputs(2, 9, 4, 1, torch.complex128)
    tangents = _scan_inputs(2, 9, 4, 1, torch.complex128, seed=1)
    for scan in (linear_scan, linear_scan_reference):
        out = jvp(lambda *xs, scan=scan: scan(*xs, reverse=reverse), (a, b, h0), tangents)
        if scan is linear_scan:
            ours = out
    _close(ours, out)


@pytest.mark.parametrize("a_mapped", [False, True])
@pytest.mark.parametrize("a_batch", [1, 4])
@pytest.mark.parametrize("reverse", [False, True])
def test_scan_per_sample_gradients_match_one_gradient_per_sample(a_mapped, a_batch, reverse):
    # vmap over N = 3 problems, each a scan of batch 4: `a` mapped or shared, of batch 4 or
    # broadcast (batch 1); its gradient then sums over the batch of each problem alone
    N, B, T, D = 3, 4, 6, 5
    g = torch.Generator().manual_seed(1)
    a = torch.rand(*((N,) if a_mapped else ()), a_batch, T, D, generator=g, dtype=torch.float64)
    b = torch.randn(N, B, T, D, generator=g, dtype=torch.float64)
    h0 = torch.randn(N, B, D, generator=g, dtype=torch.float64)

    def loss(a, b, h0):
        return linear_scan(a, b, h0, reverse=reverse).cos().sum()

    mapped = vmap(grad(loss, argnums=(0, 1, 2)), in_dims=(0 if a_mapped else None, 0, 0))
    got = mapped(a, b, h0)
    for n in range(N):
        a_n = a[n] if a_mapped else a
        one = grad(lambda *xs: linear_scan_reference(*xs, reverse=reverse).cos().sum(),
                   argnums=(0, 1, 2))(a_n, b[n], h0[n])
        expected_a = one[0] if a_mapped else one[0]
        _close((got[0][n], got[1][n], got[2][n]), (expected_a, one[1], one[2]))


def test_scan_under_vmap_of_a_shared_broadcast_a_keeps_it_unexpanded():
    a = torch.rand(1, 8, 3, dtype=torch.float64)
    b = torch.randn(5, 2, 8, 3, dtype=torch.float64)
    got = vmap(linear_scan, in_dims=(None, 0))(a, b)
    _close(got, torch.stack([linear_scan_reference(a, b_n) for b_n in b]))


@pytest.mark.parametrize("reverse", [False, True])
def test_scan_second_derivatives_under_torch_func(reverse):
    a, b, h0 = _scan_inputs(2, 5, 3, 1)

    def by(scan):
        return lambda a, b, h0: scan(a * b.tanh().mean(0, keepdim=True), b, h0,
                                     reverse=reverse).pow(3).sum()
    for second in (lambda f: grad(lambda *x: grad(f, argnums=(0, 1, 2))(*x)[1].sum(),
                                  argnums=(0, 1, 2)),
                   lambda f: torch.func.hessian(f, argnums=1)):
        ours, plain = second(by(linear_scan))(a, b, h0), second(by(linear_scan_reference))(a, b, h0)
        _close(ours if isinstance(ours, tuple) else [ours],
               plain if isinstance(plain, tuple) else [plain])


# ---- the registry models: every unit's default path, and the fused paths under transforms ----

TRANSFORMABLE = [m for m in MODEL_NAMES if m != "lif"]  # snnTorch's Function: refused, below
PER_SAMPLE = [m for m in TRANSFORMABLE if m not in ("gru", "lstm")]  # torch's own RNN ops: no vmap


def _model(name, **options):
    torch.manual_seed(0)
    model = build_model(name, 3, 4, hidden=6, layers=2, **options).double().eval()
    params = {k: v.detach() for k, v in model.named_parameters()}
    return model, params


def _loss(model, params):
    def loss(p, x):
        out = functional_call(model, p, (x,))
        return (out[0] if isinstance(out, tuple) else out).pow(2).sum()
    return loss


def _autograd(loss, params, x):
    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    grads = torch.autograd.grad(loss(leaves, x), list(leaves.values()), allow_unused=True)
    return {k: torch.zeros_like(v) if g is None else g for (k, v), g in zip(leaves.items(), grads)}


@pytest.mark.parametrize("name", TRANSFORMABLE)
def test_torch_func_grad_of_every_model_equals_autograd(name):
    model, params = _model(name)
    x = torch.randn(5, 7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    loss = _loss(model, params)
    got, expected = grad(loss)(params, x), _autograd(loss, params, x)
    _close([got[k] for k in params], [expected[k] for k in params], 1e-10)
    # and the Jacobian of the loss in the input, both modes
    _close([jacfwd(lambda x: loss(params, x))(x)], [jacrev(lambda x: loss(params, x))(x)], 1e-10)


@pytest.mark.parametrize("name", PER_SAMPLE)
def test_per_sample_gradients_of_every_model(name):
    model, params = _model(name)
    x = torch.randn(4, 6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    loss = _loss(model, params)
    per_sample = vmap(grad(lambda p, x_n: loss(p, x_n.unsqueeze(0))), in_dims=(None, 0))(params, x)
    for n in range(x.shape[0]):
        one = _autograd(loss, params, x[n : n + 1])
        _close([per_sample[k][n] for k in params], [one[k] for k in params], 1e-10)


@pytest.mark.parametrize("name", ["gru", "lstm"])
def test_torch_s_rnns_under_vmap_say_so(name):
    """torch's own message named a broadcast shape ("output with shape [1, 24] doesn't match the
    broadcast shape [4, 1, 24]"), not the missing batching rule."""
    model, params = _model(name)
    loss = _loss(model, params)
    with pytest.raises(RuntimeError, match=f"{name}: torch.func.vmap .* cannot batch torch's"):
        vmap(grad(lambda p, x_n: loss(p, x_n.unsqueeze(0))), in_dims=(None, 0))(
            params, torch.randn(4, 6, 3, dtype=torch.float64))


def test_lif_under_torch_func_says_it_cannot():
    pytest.importorskip("snntorch")
    model, params = _model("lif")
    with pytest.raises(RuntimeError, match="lif: snnTorch's spike function"):
        grad(_loss(model, params))(params, torch.rand(2, 4, 3, dtype=torch.float64))


def _unit_grads(unit, x, transform: bool):
    """Gradients of a unit's loss in its parameters: by torch.func.grad (``transform``, the
    paths made for it) or by autograd (the unit's own fast path)."""
    params = {k: v.detach() for k, v in unit.named_parameters()}

    def loss(p):
        return functional_call(unit, p, (x,))[0].sin().sum()
    return grad(loss)(params) if transform else _autograd(lambda p, _: loss(p), params, None)


@pytest.mark.parametrize("options", [
    {"detach_recurrent": False}, {"detach_recurrent": True}, {"gate": "current"},
    {"learn_bias": True, "compile_loop": True},
])
def test_src_under_torch_func_matches_its_operators(options):
    torch.manual_seed(4)
    unit = SRC(3, 5, **options).double()
    x = (torch.rand(2, 9, 3, dtype=torch.float64) < 0.5).double() * 3
    got, expected = _unit_grads(unit, x, True), _unit_grads(unit, x, False)
    assert got.keys() == expected.keys()
    _close(list(got.values()), list(expected.values()), 1e-10)


@pytest.mark.parametrize("options", [
    {"detach_recurrent": False}, {"detach_recurrent": True}, {"gate": "current"},
])
def test_src_input_and_state_gradients_under_torch_func_match_its_operators(options):
    """From a state away from rest: with ``detach_recurrent`` neither h nor h_s of the step
    before passes a gradient (SPEC.md §6), on the plain path as on the operators."""
    torch.manual_seed(6)
    unit = SRC(3, 5, **options).double()
    x = (torch.rand(2, 9, 3, dtype=torch.float64) < 0.5).double() * 3
    state = [0.5 * torch.randn(2, 5, dtype=torch.float64) for _ in range(3)]

    def loss(x, i0, h0, hs0):
        out, (i, h, hs) = unit(x, (i0, h0, hs0))
        return out.sin().sum() + (0.3 * i).sum() + (0.7 * hs).sum()
    got = grad(loss, argnums=(0, 1, 2, 3))(x, *state)
    leaves = [t.clone().requires_grad_() for t in (x, *state)]
    expected = torch.autograd.grad(loss(*leaves), leaves, allow_unused=True)
    _close(list(got), [torch.zeros_like(t) if g is None else g
                       for t, g in zip(leaves, expected)], 1e-10)


def test_brc_compiled_loop_under_torch_func_matches_it():
    torch.manual_seed(5)
    unit = BRC(3, 5, compile_loop=True).double()
    x = torch.randn(2, 8, 3, dtype=torch.float64)
    _close(list(_unit_grads(unit, x, True).values()),
           list(_unit_grads(unit, x, False).values()), 1e-10)


@pytest.mark.parametrize("epsilon", [0.0, 1.0, 0.7])
def test_mru_scanned_path_matches_its_sequence_function(epsilon):
    # torch.func runs the MRU as step's operations and one scan; autograd its block-recomputing
    # function: same gradients (ε = 0.7: the sequence function's exact time loop, within rounding)
    torch.manual_seed(6)
    unit = CMRU(3, 5, epsilon=epsilon, learn_epsilon=True).double()
    x = torch.randn(2, 11, 3, dtype=torch.float64) * 2
    _close(list(_unit_grads(unit, x, True).values()),
           list(_unit_grads(unit, x, False).values()), 1e-10)


# ---- beyond the first derivative: create_graph, forward over reverse, nested forward mode ----

@pytest.mark.parametrize("surrogate", ["atan", "fast-sigmoid", "triangle"])
def test_surrogate_second_derivatives_are_the_surrogate_s_own(surrogate):
    from bistable.units.surrogate import get_surrogate, heaviside

    u = torch.tensor([0.3, -0.2, 1.5, -0.01], dtype=torch.float64)
    bump = get_surrogate(surrogate)
    expected = torch.func.grad(lambda x: bump(x, 2.0).sum())(u)  # d/du of the surrogate itself

    def first(x):
        return grad(lambda x: heaviside(x, surrogate, 2.0).sum())(x)
    _close([jvp(first, (u,), (torch.ones_like(u),))[1], jacrev(first)(u).sum(0)],
           [expected, expected])


def _penalty_gradients(unit, x, by_steps: bool):
    """The gradient of ``|∂L/∂θ|²`` in the parameters θ by plain autograd (``create_graph``),
    through ``forward`` or through ``step`` applied T times (an independent reference)."""
    params = list(unit.parameters())
    if by_steps:
        state, outputs = None, []
        for t in range(x.shape[1]):
            y_t, state = unit.step(x[:, t], state)
            outputs.append(y_t)
        y = torch.stack(outputs, 1)
    else:
        y = unit(x)[0]
    first = torch.autograd.grad(y.sin().sum(), params, create_graph=True)
    return torch.autograd.grad(sum(g.square().sum() for g in first), params)


@pytest.mark.parametrize("make", [
    lambda: BMRU(3, 4), lambda: CMRU(3, 4, epsilon=0.7, learn_epsilon=True),
    lambda: CMRU(3, 4), lambda: FirstQuadrantBMRU(3, 4, surrogate="fast-sigmoid"),
])
def test_mru_gradient_penalty_through_forward_equals_through_step(make):
    """create_graph through the MRU's sequence function (its backward then recorded by
    autograd) against the same through ``step``'s plain operations: before, the first left
    α's and the bias's penalty gradients out (None) without a word."""
    torch.manual_seed(7)
    unit = make().double()
    x = torch.randn(2, 9, 3, dtype=torch.float64) * 2
    _close(_penalty_gradients(unit, x, False), _penalty_gradients(unit, x, True), 1e-9)


@pytest.mark.parametrize("options", [{}, {"compile_loop": True, "gate": "current"}])
def test_src_gradient_penalty_through_its_operator(options):
    torch.manual_seed(8)
    unit = SRC(3, 4, learn_bias=True, **options).double()
    x = (torch.rand(2, 7, 3, dtype=torch.float64) < 0.6).double() * 3
    _close(_penalty_gradients(unit, x, False), _penalty_gradients(unit, x, True), 1e-9)


@pytest.mark.parametrize("cls", [BRC, NBRC])
def test_brc_compiled_loop_gradient_penalty(cls):
    torch.manual_seed(9)
    unit = cls(3, 4, compile_loop=True).double()
    x = torch.randn(2, 7, 3, dtype=torch.float64)
    _close(_penalty_gradients(unit, x, False), _penalty_gradients(unit, x, True), 1e-9)


def test_nested_forward_mode_is_refused_not_wrong():
    a, b, _ = _scan_inputs(2, 4, 2, 1)

    def f(a):
        return linear_scan(a, b).pow(3).sum()
    with pytest.raises(RuntimeError, match="forward mode nested in forward mode"):
        jacfwd(jacfwd(f))(a)
    _close([jacfwd(jacrev(f))(a)], [jacfwd(jacrev(lambda a: linear_scan_reference(a, b)
                                                    .pow(3).sum()))(a)])


@pytest.mark.parametrize("name", ["bmru", "hybrid", "src"])
def test_forward_ad_dual_tensors_run_the_plain_paths(name):
    from torch.autograd import forward_ad

    model, params = _model(name)
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    tangent = torch.randn_like(x)
    expected = jvp(lambda x: model(x)[0], (x,), (tangent,))[1]
    with forward_ad.dual_level():
        out = model(forward_ad.make_dual(x, tangent))[0]
        got = forward_ad.unpack_dual(out).tangent
    _close([got], [expected], 1e-10)
