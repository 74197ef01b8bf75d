"""LRU (SPEC.md §3): ring initialisation, the equations against a plain float64 loop, long T."""

import inspect
import math

import pytest
import torch

from bistable.units.lru import LRU


def reference_lru(unit: LRU, x: torch.Tensor, h0: torch.Tensor | None = None):
    """SPEC.md §3 as written, one step at a time, from the unit's parameters."""
    lam = torch.exp(-torch.exp(unit.nu_log) + 1j * torch.exp(unit.theta_log))
    gamma = torch.sqrt(1 - lam.abs() ** 2)
    B = torch.complex(unit.B_re, unit.B_im)
    C = torch.complex(unit.C_re, unit.C_im)
    h = torch.zeros(x.shape[0], unit.state_size, dtype=B.dtype) if h0 is None else h0
    ys = []
    for t in range(x.shape[1]):
        h = lam * h + gamma * (x[:, t].to(B.dtype) @ B.T)
        square = unit.input_size == unit.hidden_size
        skip = x[:, t] * unit.D if square else x[:, t] @ unit.D.weight.T
        ys.append((h @ C.T).real + skip)
    return torch.stack(ys, dim=1), h


@pytest.mark.parametrize("r_min, r_max, max_phase", [(0.9, 0.999, 2 * math.pi), (0.0, 0.5, 3.14),
                                                     (0.99, 0.9999, 0.1)])
def test_eigenvalues_lie_on_the_requested_ring(r_min, r_max, max_phase):
    torch.manual_seed(0)
    unit = LRU(2, 3, state_size=4000, r_min=r_min, r_max=r_max, max_phase=max_phase).double()
    lam = unit.eigenvalues()
    radius, phase = lam.abs(), torch.exp(unit.theta_log)
    assert radius.min() >= r_min - 1e-12 and radius.max() <= r_max + 1e-12
    assert phase.min() >= 0 and phase.max() <= max_phase + 1e-9
    # |λ|² uniform on [r_min², r_max²]: mean and spread of a uniform law (4000 samples)
    lo, hi = r_min**2, r_max**2
    sq = radius**2
    assert abs(sq.mean().item() - (lo + hi) / 2) < 0.05 * (hi - lo)
    assert abs(sq.std().item() - (hi - lo) / math.sqrt(12)) < 0.05 * (hi - lo)
    assert abs(phase.mean().item() - max_phase / 2) < 0.05 * max_phase


def test_the_default_ring_and_phase_are_spec_3s():
    defaults = inspect.signature(LRU).parameters
    assert [defaults[k].default for k in ("r_min", "r_max", "max_phase")] == [0.9, 0.999,
                                                                              2 * math.pi]


@pytest.mark.parametrize("F, H, N", [(3, 3, 5), (2, 5, 1), (4, 1, 7)])
@pytest.mark.parametrize("T", [1, 9])
def test_forward_matches_the_equations_values_and_gradients(F, H, N, T):
    torch.manual_seed(1)
    unit = LRU(F, H, state_size=N).double()
    x = torch.randn(2, T, F, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, N, dtype=torch.complex128)
    y, h = unit(x, h0)
    y_ref, h_ref = reference_lru(unit, x, h0)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(h, h_ref, rtol=1e-10, atol=1e-10)
    params = [x, *unit.parameters()]
    w = torch.randn_like(y)
    grads = torch.autograd.grad((y * w).sum() + h.abs().sum(), params)
    grads_ref = torch.autograd.grad((y_ref * w).sum() + h_ref.abs().sum(), params)
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref, rtol=1e-9, atol=1e-10)


def test_skip_is_a_vector_when_sizes_match_and_a_matrix_otherwise():
    assert LRU(4, 4).D.shape == (4,)
    assert LRU(3, 4).D.weight.shape == (4, 3)
    assert LRU(3, 4, state_size=6).B_re.shape == (6, 3)


def test_state_is_complex_and_sized_by_state_size():
    unit = LRU(3, 4, state_size=6)
    _, h = unit(torch.randn(2, 5, 3))
    assert h.shape == (2, 6) and h.dtype == torch.complex64
    _, h = unit.double()(torch.randn(2, 5, 3, dtype=torch.float64))
    assert h.dtype == torch.complex128
    with pytest.raises(ValueError, match="complex"):
        unit(torch.randn(2, 5, 3, dtype=torch.float64), torch.zeros(2, 6, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\(2, 6\)"):
        unit(torch.randn(2, 5, 3, dtype=torch.float64), torch.zeros(2, 4, dtype=torch.complex128))


def test_ring_arguments_are_checked():
    with pytest.raises(ValueError, match="r_min"):
        LRU(2, 2, r_min=0.9, r_max=0.5)
    with pytest.raises(ValueError, match="max_phase: expected a finite angle >= 0.*got -1"):
        LRU(2, 2, max_phase=-1.0)
    # |λ| = 1 has no ν (log(−log 1) = −inf) and gave NaN gradients
    with pytest.raises(ValueError,
                       match=r"r_max: expected a radius in \(r_min = 0.9, 1\), got 1.0"):
        LRU(2, 2, r_max=1.0)
    for name in ("r_min", "max_phase"):  # once a TypeError from the comparison
        with pytest.raises(ValueError, match=f"{name}: expected .*, got 'a'"):
            LRU(2, 2, **{name: "a"})


def test_half_precision_parameters_are_a_clear_error():
    """No complex bf16 state: once a RuntimeError from torch.polar; autocast is the way."""
    unit = LRU(3, 4).bfloat16()
    with pytest.raises(ValueError, match=r"LRU parameters: expected float32 or float64"
                                         r".*autocast\), got torch.bfloat16"):
        unit(torch.randn(2, 5, 3, dtype=torch.bfloat16))


def test_max_phase_zero_gives_real_eigenvalues_that_only_decay():
    unit = LRU(1, 2, state_size=64, r_min=0.99, r_max=0.9999, max_phase=0.0).double()
    lam = unit.eigenvalues()
    assert lam.imag.abs().max() < 1e-10 and (lam.real > 0.99 - 1e-9).all()


def test_long_sequence_forward_is_finite_and_bounded():
    torch.manual_seed(2)
    unit = LRU(2, 3, state_size=4, r_min=0.999, r_max=0.9999)
    x = torch.randn(1, 100_000, 2)
    y, h = unit(x)
    assert torch.isfinite(y).all() and torch.isfinite(h).all()
    # γ normalisation keeps the state's variance near |B x|² whatever |λ|: no blow-up
    assert y.abs().max() < 50


def test_projections_start_at_their_scales():
    """B ~ N(0, 1/(2F)) (re and im), C ~ N(0, 1/N), D ~ N(0, 1): the init's scales, to 10 %
    (sizes where 2F and N differ by more than that, so one scale cannot stand in for the other)."""
    torch.manual_seed(0)
    unit = LRU(50, 50, state_size=300)  # F = H: D is the vector
    for w, std in ((unit.B_re, 1 / math.sqrt(100)), (unit.B_im, 1 / math.sqrt(100)),
                   (unit.C_re, 1 / math.sqrt(300)), (unit.C_im, 1 / math.sqrt(300)),
                   (unit.D, 1.0)):
        assert abs(w.std().item() / std - 1) < 0.1
