"""BMRU and the cumulative family: exactness of forward vs step, persistence, gradients."""

import copy
import io
import math

import pytest
import torch

from bistable.units import bmru
from bistable.units.bmru import BMRU, CMRU, FirstQuadrantBMRU, anneal_epsilon, write_rate

F64 = torch.float64


def make(cls=BMRU, F=3, H=5, dtype=F64, seed=0, **kw):
    torch.manual_seed(seed)
    return cls(F, H, **kw).to(dtype)


def step_loop(unit, x, state=None):
    ys = []
    for t in range(x.shape[1]):
        y, state = unit.step(x[:, t], state)
        ys.append(y)
    return torch.stack(ys, 1), state


VARIANTS = [
    (BMRU, {}),
    (BMRU, {"learn_init": False, "surrogate": "triangle"}),
    (CMRU, {}),  # ε = 1: the counter
    (CMRU, {"epsilon": 0.3}),
    (CMRU, {"epsilon": 0.7, "learn_epsilon": True, "surrogate": "fast-sigmoid"}),
    (FirstQuadrantBMRU, {}),
]


@pytest.mark.parametrize("cls,kw", VARIANTS)
@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("T", [1, 7, 1000])
def test_forward_equals_step_loop_and_halves_bitwise(cls, kw, dtype, T):
    unit = make(cls, F=3, H=5 if T == 1000 else 130, dtype=dtype, **kw)
    x = 2 * torch.randn(2, T, 3, dtype=dtype)
    y, s = unit(x)
    ys, ss = step_loop(unit, x)
    assert torch.equal(y, ys) and torch.equal(s, ss)
    cut = T // 2
    if cut:
        y1, s1 = unit(x[:, :cut])
        y2, s2 = unit(x[:, cut:], s1)
        assert torch.equal(torch.cat([y1, y2], 1), y) and torch.equal(s2, s)


@pytest.mark.parametrize("cls,kw", VARIANTS)
def test_time_blocks_change_nothing(cls, kw, monkeypatch):
    unit = make(cls, F=3, H=5, **kw)
    x = (2 * torch.randn(2, 300, 3, dtype=F64)).requires_grad_()
    wy, ws = torch.randn(2, 300, 5, dtype=F64), torch.randn(2, 5, dtype=F64)

    def run():
        y, s = unit(x)
        loss = (y * wy).sum() + (s * ws).sum() + unit.write_rate
        return y, s, torch.autograd.grad(loss, [x, *unit.parameters()])

    whole = run()
    monkeypatch.setattr(bmru, "BLOCK_ELEMENTS", 70)  # blocks of 7 steps, the last one of 6
    assert len(bmru._blocks(2, 300, 5)) == 43
    y, s, grads = run()
    assert torch.equal(y, whole[0]) and torch.equal(s, whole[1])
    for g, r in zip(grads, whole[2]):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-13)


def test_counter_with_fractional_state_still_matches_step():
    unit = make(CMRU, F=2, H=4, dtype=torch.float32)
    x = 3 * torch.randn(3, 300, 2)
    state = torch.full((3, 4), 0.1)  # not an integer: the unit must not reorder the sums
    y, s = unit(x, state)
    ys, ss = step_loop(unit, x, state)
    assert torch.equal(y, ys) and torch.equal(s, ss)


def test_bmru_states_are_exactly_plus_minus_one():
    unit = make(BMRU, F=4, H=9, dtype=torch.float32)
    x = 3 * torch.randn(5, 400, 4)
    _, s = unit(x)
    with torch.no_grad():
        unit.alpha.fill_(1.0)
        y, _ = unit(x)
    assert set(y.unique().tolist()) == {-1.0, 1.0} and set(s.unique().tolist()) <= {-1.0, 1.0}
    off = make(BMRU, F=4, H=9, dtype=torch.float32, learn_init=False)
    assert set(off(x[:, :1] * 0)[1].unique().tolist()) == {0.0}  # zero start, then held


def test_counter_counts_writes():
    unit = make(CMRU, F=1, H=1, learn_init=False)
    with torch.no_grad():
        unit.linear.weight.copy_(torch.tensor([[1.0], [0.0]]))
        unit.linear.bias.copy_(torch.tensor([0.0, 1.0]))
    x = torch.tensor([2.0, 0.5, 2.0, -3.0, 2.0, 2.0], dtype=F64).view(1, 6, 1)
    y, _ = unit(x)
    assert y.flatten().tolist() == [1, 1, 2, 1, 2, 3]
    unit.set_epsilon(0.5)
    assert unit(x)[0].flatten().tolist() == [1, 1, 1.5, -0.25, 0.875, 1.4375]
    unit.set_epsilon(0.0)
    assert unit(x)[0].flatten().tolist() == [1, 1, 1, -1, 1, 1]


@pytest.mark.parametrize("block_elements", [bmru.BLOCK_ELEMENTS, 1])
def test_low_precision_counter_accumulates_in_float32(block_elements, monkeypatch):
    """A bfloat16 counter counts past 256 (its stored values rounded to bfloat16, SPEC.md §1's
    float32 accumulation), its gradients too, however short the time blocks."""
    monkeypatch.setattr(bmru, "BLOCK_ELEMENTS", block_elements)  # 1: a block per step
    results = {}
    for dtype in (torch.bfloat16, torch.float32):
        unit = make(CMRU, F=1, H=1, dtype=dtype, learn_init=False, learn_epsilon=True)
        with torch.no_grad():
            unit.linear.weight.fill_(1.0)
            unit.linear.bias.zero_()  # |c| = |β| = 1: every step writes +1
        x = torch.ones(1, 600, 1, dtype=dtype, requires_grad=True)
        y, last = unit(x)
        y.sum().backward()
        grads = [p.grad for p in (unit.linear.weight, unit.alpha, unit.epsilon_raw)]
        results[dtype] = y.detach(), last.detach(), grads
    y, last, grads = results[torch.bfloat16]
    y32, last32, grads32 = results[torch.float32]
    assert last.item() == 600 and torch.equal(y, y32.bfloat16())
    for grad, grad32 in zip(grads, grads32, strict=True):  # weight, α and ε: sums over time
        torch.testing.assert_close(grad.float(), grad32, rtol=1e-2, atol=0)


def test_first_quadrant_sets_resets_and_holds():
    unit = make(FirstQuadrantBMRU, F=1, H=1, learn_init=False)
    with torch.no_grad():  # ĥ = ReLU(x), β_lo = 0.5, β_hi = 1.5, α = 2
        unit.linear.weight.fill_(1.0)
        unit.linear.bias.zero_()
        unit.low.fill_(-0.5)
        unit.width.fill_(1.0)
        unit.alpha.fill_(2.0)
    x = torch.tensor([1.0, 2.0, 1.0, 0.2, 1.0, 1.6, -3.0, 1.5, 0.5], dtype=F64).view(1, -1, 1)
    y, s = unit(x)
    assert y.flatten().tolist() == [0, 2, 2, 0, 0, 2, 0, 2, 0]
    assert s.item() == 0.0 and torch.equal(step_loop(unit, x)[0], y)


def test_first_quadrant_thresholds_start_at_a_quarter_and_three_quarters():
    """As documented (docs/mru.md): a fresh unit, and one reset, sets above ĥ = 0.75, resets
    below 0.25 and holds between."""
    unit = make(FirstQuadrantBMRU, F=1, H=1, learn_init=False)
    for _ in range(2):
        with torch.no_grad():  # ĥ = ReLU(x)
            unit.linear.weight.fill_(1.0)
            unit.linear.bias.zero_()
        x = torch.tensor([0.76, 0.74, 0.26, 0.24, 0.74], dtype=F64).view(1, -1, 1)
        assert unit(x)[0].flatten().tolist() == [1, 1, 1, 0, 0]
        with torch.no_grad():
            unit.low.fill_(3.0)
            unit.width.fill_(-1.0)
        unit.reset_parameters()


@pytest.mark.parametrize("cls", [BMRU, CMRU])
def test_units_start_mostly_holding(cls):
    """The β biases start at 1 (and the c biases as nn.Linear's), fresh and after the gate
    Linear's own reset (as PyTorch's modules reset themselves)."""
    unit = cls(3, 4)
    for _ in range(2):
        assert torch.equal(unit.linear.bias[4:], torch.ones(4))
        assert unit.linear.bias[:4].abs().max() <= 1 / 3 ** 0.5
        with torch.no_grad():
            unit.linear.bias.zero_()
        unit.linear.reset_parameters()


def test_a_printed_cmru_says_which_variant_it_is():
    assert "epsilon=0.5, learn_epsilon=False" in repr(CMRU(2, 3, epsilon=0.5))
    assert "epsilon=1, learn_epsilon=True" in repr(CMRU(2, 3, learn_epsilon=True))


def test_epsilon_zero_is_the_bmru():
    b, c = make(BMRU, F=3, H=6), make(CMRU, F=3, H=6, epsilon=0.0)
    x = 2 * torch.randn(2, 50, 3, dtype=F64)
    assert torch.equal(b(x)[0], c(x)[0])


def test_compiled_leaky_unit_scans_where_eager_loops():
    """Under torch.compile (one graph) a leaky CMRU runs the scan, equal to eager's step loop up
    to rounding, gradients included."""
    unit = make(CMRU, F=3, H=6, epsilon=0.5, learn_epsilon=True)
    x = torch.randn(4, 40, 3, dtype=F64) * 2
    torch._dynamo.reset()
    compiled = torch.compile(unit, backend="aot_eager", fullgraph=True)
    (y, s), (want, want_s) = compiled(x), unit(x)
    torch.testing.assert_close(y, want, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(s, want_s, rtol=1e-13, atol=1e-13)
    params = list(unit.parameters())
    for got, expected in zip(torch.autograd.grad(y.sum(), params),
                             torch.autograd.grad(want.sum(), params), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-11, atol=1e-11)


def test_in_band_input_is_held_for_a_million_steps():
    H, T = 4, 10**6
    unit = make(BMRU, F=H, H=H, dtype=torch.float32, learn_init=False)
    with torch.no_grad():
        unit.linear.weight.zero_()
        unit.linear.weight[:H].copy_(5 * torch.eye(H))
        unit.linear.bias.copy_(torch.cat([torch.zeros(H), torch.ones(H)]))
    pattern = torch.tensor([1.0, -1.0, -1.0, 1.0])
    x = torch.empty(1, T, H).uniform_(-0.19, 0.19)  # |c| < 0.95 < |β| = 1: inside the band
    x[0, 0] = pattern
    y, s = unit(x)
    assert torch.equal(y[0], pattern.expand(T, H)) and torch.equal(s[0], pattern)
    y_next, _ = unit.step(x[:, 1], s)
    assert torch.equal(y_next[0], pattern)


def heaviside_ref(u, k):
    """Exact step forward, the derivative of 1/2 + atan(πku)/π backward (SPEC.md §2.1)."""
    smooth = 0.5 + torch.atan(math.pi * k * u) / math.pi
    return (u >= 0).to(u.dtype) + (smooth - smooth.detach())


def reference_drive(unit, x_t):
    """(c, β) of SPEC.md §2.1 (one Linear, split) or §2.3 (ĥ against two thresholds)."""
    out = x_t @ unit.linear.weight.T + unit.linear.bias
    if isinstance(unit, FirstQuadrantBMRU):
        low, high = unit.low.abs(), unit.low.abs() + unit.width.abs()
        return torch.relu(out) - (low + high) / 2, (high - low) / 2
    return out[:, :unit.hidden_size], out[:, unit.hidden_size:]


def reference_forward(unit, x, k):
    """SPEC.md §2.1–2.3 written as a plain float64 loop, differentiated by autograd."""
    eps = unit.epsilon() if isinstance(unit, CMRU) else 0.0
    level = (lambda u: 2 * heaviside_ref(u, k) - 1) if unit.signed else (
        lambda u: heaviside_ref(u, k))
    s = level(unit.init_logit)
    ys = []
    for t in range(x.shape[1]):
        c, beta = reference_drive(unit, x[:, t])
        z = heaviside_ref(c.abs() - beta.abs(), k)
        s = (1 - z + eps * z) * s + z * level(c)
        ys.append(unit.alpha * s)
    return torch.stack(ys, 1), s


@pytest.mark.parametrize("cls,kw", [(BMRU, {}), (CMRU, {}), (CMRU, {"epsilon": 0.4}),
                                    (CMRU, {"epsilon": 0.6, "learn_epsilon": True}),
                                    (FirstQuadrantBMRU, {})])
@pytest.mark.parametrize("T", [1, 7, 300])
def test_gradients_equal_float64_reference(cls, kw, T):
    k = 0.7
    unit = make(cls, F=3, H=5, sharpness=k, **kw)
    x = (1.5 * torch.randn(2, T, 3, dtype=F64)).requires_grad_()
    wy, ws = torch.randn(2, T, 5, dtype=F64), torch.randn(2, 5, dtype=F64)
    params = [x, *unit.parameters()]

    y, s = unit(x)
    grads = torch.autograd.grad((y * wy).sum() + (s * ws).sum(), params)
    y_ref, s_ref = reference_forward(unit, x, k)
    assert torch.equal(y, y_ref.detach()) and torch.equal(s, s_ref.detach())
    refs = torch.autograd.grad((y_ref * wy).sum() + (s_ref * ws).sum(), params)
    for g, r in zip(grads, refs):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-11)
    # the step API trains too: its autograd gives the same gradients
    ys, ss = step_loop(unit, x)
    steps = torch.autograd.grad((ys * wy).sum() + (ss * ws).sum(), params)
    for g, r in zip(grads, steps):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("cls,kw", [(BMRU, {}), (CMRU, {"epsilon": 0.5, "learn_epsilon": True}),
                                    (FirstQuadrantBMRU, {})])
def test_gradients_reach_inputs_and_every_parameter(cls, kw):
    unit = make(cls, F=4, H=8, dtype=torch.float32, **kw)
    x = torch.randn(4, 64, 4).requires_grad_()
    y, s = unit(x)
    loss = y.pow(2).mean() + s.sum() + 0.1 * unit.write_rate
    loss.backward()
    for name, g in [("x", x.grad)] + [(n, p.grad) for n, p in unit.named_parameters()]:
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0, name


@pytest.mark.parametrize("cls,kw", [(BMRU, {}), (CMRU, {"epsilon": 0.5}),
                                    (FirstQuadrantBMRU, {})])
@pytest.mark.parametrize("method", ["forward", "step"])
def test_detach_input_stops_the_gradient_into_x_only(cls, kw, method):
    """Same outputs and the same gradients for the unit's own weights; none into x."""
    x = torch.randn(3, 17, 3, dtype=F64)
    x = x[:, 0] if method == "step" else x
    results = []
    for detach in (False, True):
        unit = make(cls, detach_input=detach, **kw)
        xg = x.clone().requires_grad_()
        y, s = getattr(unit, method)(xg)
        (y.pow(2).sum() + s.sum()).backward()
        results.append((y, {n: p.grad for n, p in unit.named_parameters()}, xg.grad))
    (y0, g0, x0), (y1, g1, x1) = results
    assert torch.equal(y0, y1)
    assert x0 is not None and x0.abs().sum() > 0 and x1 is None
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=0, atol=0)


def test_write_rate_value_and_gradient():
    k = 1.3
    unit = make(CMRU, F=3, H=4, sharpness=k, epsilon=0.5)
    x = torch.randn(2, 20, 3, dtype=F64)
    unit(x)
    rate = write_rate(unit)
    cb = unit.linear(x)
    u = cb[..., :4].abs() - cb[..., 4:].abs()
    ref = heaviside_ref(u, k).mean()
    assert rate.item() == pytest.approx(ref.item(), abs=1e-15)
    params = list(unit.linear.parameters())
    for g, r in zip(torch.autograd.grad(rate, params), torch.autograd.grad(ref, params)):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)
    unit.step(x[:, 0])
    assert unit.write_rate.item() == pytest.approx((u[:, 0] >= 0).double().mean().item())


def test_anneal_epsilon_schedule():
    model = torch.nn.Sequential(CMRU(2, 3), CMRU(3, 3, learn_epsilon=True))
    assert anneal_epsilon(model, 0, 100) == 1.0
    assert anneal_epsilon(model, 25, 100) == 0.75
    assert all(torch.equal(m.epsilon(), torch.full((3,), 0.75)) for m in model)
    assert anneal_epsilon(model, 500, 100) == 0.0
    with pytest.raises(ValueError, match="CMRU"):
        anneal_epsilon(BMRU(2, 3), 0, 10)
    with pytest.raises(ValueError, match="epsilon"):
        model[0].set_epsilon(1.5)


def test_learned_epsilon_stays_in_unit_interval():
    unit = make(CMRU, epsilon=1.0, learn_epsilon=True)
    with torch.no_grad():
        unit.epsilon_raw.copy_(torch.tensor([-0.5, 0.0, 0.5, 1.0, 2.0]))
    assert unit.epsilon().tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]


def test_bad_input_raises_naming_the_argument():
    unit = BMRU(3, 4)
    cases = [
        (lambda: unit(torch.zeros(2, 5)), r"x: expected shape \(B, T, 3\)"),
        (lambda: unit(torch.zeros(2, 5, 4)), r"got \(2, 5, 4\)"),
        (lambda: unit(torch.zeros(2, 5, 3, dtype=torch.int64)), "x: expected a floating dtype"),
        (lambda: unit(torch.full((2, 5, 3), math.nan)), "x: expected finite"),
        (lambda: unit(torch.zeros(2, 5, 3), torch.zeros(3, 4)), r"state: expected shape \(2, 4\)"),
        (lambda: unit.step(torch.zeros(2, 1, 3)), r"x_t: expected shape \(B, 3\)"),
        (lambda: BMRU(3, 4, surrogate="relu"), "surrogate"),
        (lambda: CMRU(3, 4, epsilon=-0.1), "epsilon"),
        (lambda: BMRU(0, 4), "input_size"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


@pytest.mark.parametrize("cls", [BMRU, CMRU, FirstQuadrantBMRU])
def test_a_unit_that_ran_copies_and_pickles(cls):
    """``write_rate`` holds the last call's graph; ``copy.deepcopy`` (a best-weights or EMA copy)
    and pickling take it without the graph, and a batched rate left by ``vmap`` as None."""
    unit = make(cls, F=3, H=4)
    unit(torch.randn(2, 5, 3, dtype=F64))
    assert unit.write_rate.grad_fn is not None
    twin = copy.deepcopy(unit)
    assert twin.write_rate.grad_fn is None and torch.equal(twin.write_rate, unit.write_rate)
    assert unit.write_rate.grad_fn is not None  # the original keeps its graph
    buffer = io.BytesIO()
    torch.save(unit, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert torch.equal(loaded.write_rate, unit.write_rate)
    x = torch.randn(2, 3, 5, 3, dtype=F64)
    torch.testing.assert_close(loaded(x[0])[0], unit(x[0])[0], rtol=0, atol=0)
    torch.func.vmap(lambda xi: unit(xi)[0])(x)
    assert copy.deepcopy(unit).write_rate is None


def test_an_in_place_compiled_unit_copies_to_its_own_weights():
    """``Module.__getstate__`` drops the compiled call, which is bound to the original: a copy
    kept it and ran the original's weights."""
    unit = make(BMRU, F=3, H=4)
    unit.compile(backend="eager")
    x = torch.randn(2, 5, 3, dtype=F64)
    unit(x)
    twin = copy.deepcopy(unit)
    with torch.no_grad():
        twin.linear.weight.mul_(2)
    assert not torch.equal(twin(x)[0], unit(x)[0])
    buffer = io.BytesIO()
    torch.save(unit, buffer)  # pickles
