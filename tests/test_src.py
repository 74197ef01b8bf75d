"""The SRC unit (SPEC.md §6) against a plain autograd loop, in float64 on odd sizes."""

import inspect

import pytest
import torch

from bistable.units.src import SRC, SpikeReLU, ramp_train_noise, rest_state
from bistable.units.src_loop import src_loop, src_loop_backward
from torch_support import needs_cpp

REST = -0.9027


def test_the_defaults_are_spec_6s_constants():
    """The reference below reads the constants from the module it checks, so they are pinned
    here, against SPEC.md §6: α, ρ, r, r_s, z_hyp, z_dep, b, the cap on a learned b, and the
    readout's and the rate code's."""
    from bistable.nn.encoders import rate_code
    from bistable.nn.readout import PopulationReadout

    defaults = inspect.signature(SRC).parameters
    assert {k: defaults[k].default for k in ("alpha", "rho", "r", "r_s", "z_hyp", "z_dep", "bias",
                                             "bias_max", "learn_bias", "detach_recurrent",
                                             "gate")} == {
        "alpha": 0.9, "rho": 3.0, "r": 2.0, "r_s": -7.0, "z_hyp": 0.9, "z_dep": 0.0,
        "bias": -6.0, "bias_max": -4.0, "learn_bias": False, "detach_recurrent": False,
        "gate": "previous"}
    readout = inspect.signature(PopulationReadout).parameters
    assert (readout["per_class"].default, readout["alpha"].default) == (10, 1.0)
    code = inspect.signature(rate_code).parameters
    assert [code[k].default for k in ("steps", "silent", "gain")] == [200, 20, 0.25]


def reference(m: SRC, x, state):
    """SPEC.md §6 written out step by step; autograd does the backward."""
    i, h, hs = state
    hseq = []
    for t in range(x.shape[1]):
        i = m.alpha * i + x[:, t] @ m.weight.t()
        u = m.rho * torch.tanh(i / m.rho)
        hp, hsp = (h.detach(), hs.detach()) if m.detach_recurrent else (h, hs)
        h_new = torch.tanh(u + m.r * hp + m.r_s * hsp + m.effective_bias())
        # z_hyp = 0.9 exactly in float64 (a Python float in torch.where would round it to float32)
        z = torch.where((h_new if m.gate == "current" else hp) <= 0.5,
                        torch.tensor(m.z_hyp, dtype=h.dtype), torch.tensor(m.z_dep, dtype=h.dtype))
        hs = z * hsp + (1 - z) * hp
        h = h_new
        hseq.append(h)
    return torch.stack(hseq, 1), (i, h, hs)


def make(F=5, H=7, scale=20.0, seed=0, **kw):
    torch.manual_seed(seed)
    m = SRC(F, H, **kw).double()
    with torch.no_grad():
        m.weight.mul_(scale)  # strong enough drive that the neurons spike
    return m


def spikes_in(B, T, F, p=0.5, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(B, T, F, generator=g, dtype=torch.float64) < p).double()


def test_rest_state_is_the_fixed_point():
    d = torch.float64
    h = rest_state(torch.tensor([2.0], dtype=d), torch.tensor([-7.0], dtype=d),
                   torch.tensor([-6.0], dtype=d))
    assert abs(float(h) - REST) < 1e-4
    assert abs(float(h - torch.tanh(-5 * h - 6))) < 1e-12
    m = make(3, 4, bias=-5.0)
    _, h, hs = m.init_state(2)
    assert torch.allclose(h, torch.tanh((m.r + m.r_s) * h + m.bias), atol=1e-12)
    assert torch.equal(h, hs)
    # silence keeps the cell at rest
    with torch.no_grad():
        out, (i, h2, hs2) = m(torch.zeros(2, 30, 3, dtype=torch.float64))
    assert float(out.abs().max()) == 0.0
    assert torch.allclose(h2, h, atol=1e-12) and torch.allclose(hs2, hs, atol=1e-12)


@pytest.mark.parametrize("T,H", [(1, 1), (7, 3), (60, 13)])
@pytest.mark.parametrize("kw", [{}, {"gate": "current"}, {"detach_recurrent": True},
                                {"learn_bias": True, "bias": -4.5}])
def test_forward_matches_reference_values_and_gradients(T, H, kw):
    m = make(5, H, **kw)
    x = spikes_in(3, T, 5).requires_grad_()
    state = tuple(s.clone().requires_grad_() for s in m.init_state(3))
    out, (i, h, hs) = m(x, state)
    h_ref, (i_r, h_r, hs_r) = reference(m, x, state)
    torch.testing.assert_close(out, h_ref.clamp(min=0), atol=1e-10, rtol=0)
    for a, b in ((i, i_r), (h, h_r), (hs, hs_r)):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
    w = torch.randn_like(out)
    params = [x, m.weight, *state] + ([m.bias] if kw.get("learn_bias") else [])
    # the spike's backward is the identity, so compare against the reference's h
    loss = (out * w).sum() + (i * 0.3).sum() + (hs * 0.7).sum()
    loss_ref = (h_ref * w).sum() + (i_r * 0.3).sum() + (hs_r * 0.7).sum()
    got = torch.autograd.grad(loss, params, allow_unused=True)
    want = torch.autograd.grad(loss_ref, params, allow_unused=True)
    for a, b in zip(got, want):
        if b is None:
            assert a is None or float(a.abs().max()) == 0.0
        else:
            torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)


def test_the_drive_makes_spikes_pulses_of_two_or_three_steps():
    m = make(1, 1, scale=1.0)
    with torch.no_grad():
        m.weight.fill_(6.0)
    x = torch.zeros(1, 40, 1, dtype=torch.float64)
    x[0, 5] = 1.0  # one input spike
    h, h_s = m.membrane(x)
    _, (_, _, hs_last) = m(x)
    torch.testing.assert_close(h_s[:, -1], hs_last, atol=1e-12, rtol=0)
    h = h[0, :, 0]
    active = (h > 0).nonzero().flatten().tolist()
    assert len(active) in (2, 3) and active == list(range(active[0], active[0] + len(active)))
    assert float(h.max()) > 0.9
    assert abs(float(h[-1]) - REST) < 0.05  # back towards rest


def test_forward_equals_step_loop_and_split_forwards_continue():
    m = make(4, 9, gate="current")
    x = spikes_in(2, 41, 4)
    out, state = m(x)
    steps, s = [], None
    for t in range(x.shape[1]):
        y, s = m.step(x[:, t], s)
        steps.append(y)
    torch.testing.assert_close(torch.stack(steps, 1), out, atol=1e-9, rtol=0)
    for a, b in zip(s, state):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=0)
    first, s1 = m(x[:, :17])
    second, s2 = m(x[:, 17:], s1)
    torch.testing.assert_close(torch.cat([first, second], 1), out, atol=1e-9, rtol=0)
    assert out.gt(0).any()


def test_learned_bias_is_clamped_straight_through():
    m = make(3, 4, learn_bias=True, bias=-6.0, bias_max=-4.0)
    with torch.no_grad():
        m.bias.fill_(-3.0)  # pushed over the cap by training
    assert float(m.effective_bias().detach().max()) == -4.0
    out, _ = m(spikes_in(2, 9, 3))
    (g,) = torch.autograd.grad(out.sum(), [m.bias])
    assert float(g.abs().sum()) > 0  # gradient passes the clamp
    assert isinstance(make(3, 4).bias, torch.Tensor) and not make(3, 4).bias.requires_grad


def test_perturb_draws_each_neurons_gains_around_nominal():
    m = SRC(3, 4000)
    m.perturb_(0.1, torch.Generator().manual_seed(0))
    assert abs(float(m.r.mean()) - 2.0) < 0.02 and abs(float(m.r.std()) - 0.2) < 0.02
    assert abs(float(m.r_s.mean()) + 7.0) < 0.07 and abs(float(m.r_s.std()) - 0.7) < 0.07
    r1 = m.r.clone()
    m.perturb_(0.1, torch.Generator().manual_seed(0))
    assert torch.equal(m.r, r1)
    before = torch.random.get_rng_state()
    m.perturb_(0.0)
    assert torch.equal(m.r, torch.full((4000,), 2.0))
    assert torch.equal(m.r_s, torch.full((4000,), -7.0))
    assert torch.equal(torch.random.get_rng_state(), before)  # restoring draws nothing


def test_train_noise_draws_gains_per_call_in_training_mode_only():
    m = make(4, 9, train_noise=0.1)
    x = spikes_in(2, 31, 4)
    torch.manual_seed(5)
    noisy, _ = m(x)
    torch.manual_seed(5)  # the same draw, made by hand: r + σ|r|ε, r_s + σ|r_s|ε'
    eps, eps_s = torch.randn(9, dtype=torch.float64), torch.randn(9, dtype=torch.float64)
    by_hand = make(4, 9)
    with torch.no_grad():
        by_hand.r.add_(0.1 * 2.0 * eps)
        by_hand.r_s.add_(0.1 * 7.0 * eps_s)
    h, _ = reference(by_hand, x, m.init_state(2))  # from the rest of the stored r, r_s
    torch.testing.assert_close(noisy, h.clamp(min=0), atol=1e-9, rtol=0)
    w = torch.linspace(-1, 1, h.numel(), dtype=torch.float64).view_as(h)
    (g,) = torch.autograd.grad((noisy * w).sum(), [m.weight])  # backward with the same draw
    (g_ref,) = torch.autograd.grad((h * w).sum(), [by_hand.weight])
    torch.testing.assert_close(g, g_ref, atol=1e-9, rtol=1e-7)
    assert not torch.equal(m(x)[0], noisy)  # a new draw at every call
    assert torch.equal(m.r, torch.full((9,), 2.0, dtype=torch.float64))  # buffers untouched
    m.eval()
    torch.testing.assert_close(m(x)[0], make(4, 9).eval()(x)[0], atol=0, rtol=0)
    for bad in (-0.1, "0.1", True):
        with pytest.raises(ValueError, match="train_noise"):
            SRC(3, 2, train_noise=bad)


def test_ramp_train_noise_rises_linearly_in_every_src_then_holds():
    net = torch.nn.Sequential(SRC(3, 4), torch.nn.Linear(4, 4), SRC(4, 2, train_noise=0.3))
    for step, value in ((0, 0.0), (5, 0.1), (10, 0.2), (11, 0.2), (1000, 0.2)):
        assert ramp_train_noise(net, step, 10, 0.2) == pytest.approx(value)
        assert [net[0].train_noise, net[2].train_noise] == pytest.approx([value, value])
    for bad, message in (((net, 0, 0, 0.1), "total"), ((net, 0, 10, -0.1), "sigma"),
                         ((torch.nn.Linear(2, 2), 0, 10, 0.1), "SRC module")):
        with pytest.raises(ValueError, match=message):
            ramp_train_noise(*bad)


def test_spike_relu_backward_is_identity():
    h = torch.tensor([-0.5, 0.0, 0.7], requires_grad=True)
    y = SpikeReLU.apply(h)
    assert y.tolist() == [0.0, 0.0, pytest.approx(0.7)]
    (g,) = torch.autograd.grad(y.sum(), [h])
    assert g.tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("bad,match", [
    (torch.zeros(2, 5), r"x: expected shape \(B, T, 3\)"),
    (torch.zeros(2, 5, 4), r"x: expected shape \(B, T, 3\)"),
    (torch.zeros(2, 5, 3, dtype=torch.int64), "x: expected a floating dtype"),
])
def test_bad_input_raises(bad, match):
    with pytest.raises(ValueError, match=match):
        SRC(3, 2)(bad)


def test_bad_state_and_options_raise():
    m = SRC(3, 2)
    with pytest.raises(ValueError, match=r"state: expected a tuple \(i, h, h_s\) .*got a tuple "
                                         r"of 2$"):
        m(torch.zeros(1, 4, 3), (torch.zeros(1, 2), torch.zeros(1, 2)))
    with pytest.raises(ValueError, match=r"got Tensor$"):
        m(torch.zeros(1, 4, 3), torch.zeros(1, 2))
    with pytest.raises(ValueError, match=r"state\[1\] \(h\): expected shape \(1, 2\)"):
        m(torch.zeros(1, 4, 3), (torch.zeros(1, 2), torch.zeros(1, 3), torch.zeros(1, 2)))
    with pytest.raises(ValueError, match=r"x_t: expected shape \(B, 3\)"):
        m.step(torch.zeros(1, 4, 3))
    with pytest.raises(ValueError, match="gate"):
        SRC(3, 2, gate="next")


@pytest.mark.parametrize("current, detach", [(False, False), (True, True)])
def test_loop_operators_pass_pytorch_s_opcheck(current, detach):
    """Schema, fake tensors (torch.compile's shapes), autograd registration and AOT dispatch of
    ``bistable::src_loop`` and its backward operator (the eager loop)."""
    g = torch.Generator().manual_seed(0)
    kw = {"dtype": torch.float64}
    d = (torch.randn(3, 11, 5, generator=g, **kw) * 2).requires_grad_()
    i0, h0, hs0 = (torch.rand(3, 5, generator=g, **kw).mul(2).sub(1).requires_grad_()
                   for _ in "ihs")
    bias = torch.full((5,), -6.0, **kw, requires_grad=True)
    r, r_s = torch.full((5,), 2.0, **kw), torch.full((5,), -7.0, **kw)
    consts = (0.9, 3.0, 0.9, 0.0, current, detach, False)
    torch.library.opcheck(src_loop, (d, i0, bias, h0, hs0, r, r_s, *consts))
    d, i0, h0 = d.detach(), i0.detach(), h0.detach()  # the backward is not differentiable
    h, i, _ = src_loop(d, i0, bias.detach(), h0, hs0.detach(), r, r_s, *consts)
    for grad_i in (None, torch.randn_like(i)):
        grads = (torch.randn_like(h), grad_i, torch.randn_like(h0))
        torch.library.opcheck(src_loop_backward, (*grads, h, i, h0, r, r_s, *consts))


@needs_cpp
def test_compiled_loop_matches_eager():
    x = spikes_in(3, 21, 5)
    eager, compiled = make(5, 6), make(5, 6, compile_loop=True)
    out_e, s_e = eager(x)
    out_c, s_c = compiled(x)
    torch.testing.assert_close(out_c, out_e, atol=1e-9, rtol=0)
    ge = torch.autograd.grad(out_e.sum() + s_e[2].sum(), [eager.weight])
    gc = torch.autograd.grad(out_c.sum() + s_c[2].sum(), [compiled.weight])
    torch.testing.assert_close(gc, ge, atol=1e-8, rtol=1e-8)


def test_the_rest_state_follows_writes_that_count_no_version():
    """``.data`` writes (and fused optimizer steps) change ``b``, ``r`` without a version count:
    the state a sequence starts from is still the rest of the current values."""
    m = SRC(3, 4, learn_bias=True, bias=-6.0)
    m.init_state(1)
    for tensor, value in ((m.bias, -5.0), (m.r, 1.0), (m.r_s, -6.0)):
        tensor.data.fill_(value)
        expected = rest_state(m.r, m.r_s, m.effective_bias())
        torch.testing.assert_close(m.init_state(1)[1][0], expected, rtol=0, atol=0)


@pytest.mark.parametrize("batch", [1, 3])
def test_the_rest_state_is_a_copy_whatever_the_batch(batch):
    """At batch 1 the state was a view of the cached rest: a forward under inference_mode left
    an inference tensor there that the next training batch of 1 could not save for backward,
    and a state changed in place changed the cache."""
    m = SRC(4, 6)
    with torch.inference_mode():
        m(torch.randn(8, 3, 4))
    y, state = m(torch.randn(batch, 3, 4))
    y.sum().backward()  # raised "Inference tensors cannot be saved for backward" at batch 1
    assert m.weight.grad is not None
    rest = m.init_state(batch)[1].clone()
    state = m.init_state(batch)
    state[1].zero_()
    state[2].zero_()
    torch.testing.assert_close(m.init_state(batch)[1], rest, rtol=0, atol=0)
    y, _ = m.step(torch.rand(batch, 4))
    y.sum().backward()


@pytest.mark.parametrize("gate", ["previous", "current"])
def test_membrane_traces_are_the_states_the_steps_pass_through(gate):
    """From a state away from rest (at rest h[0] = h0 hid an h_s built from the wrong step)."""
    m = make(5, 7, gate=gate)
    x = spikes_in(2, 12, 5)
    state = tuple(0.5 * torch.randn(2, 7, dtype=torch.float64) for _ in range(3))
    h, h_s = m.membrane(x, state)
    steps, s = [], state
    for t in range(x.shape[1]):
        _, s = m.step(x[:, t], s)
        steps.append(s)
    torch.testing.assert_close(h, torch.stack([s[1] for s in steps], 1), atol=1e-12, rtol=0)
    torch.testing.assert_close(h_s, torch.stack([s[2] for s in steps], 1), atol=1e-12, rtol=0)
