"""Heaviside and sign with surrogate gradients: exact forward, gradients vs float64 references."""

import math

import pytest
import torch

from bistable.units.surrogate import SURROGATES, get_surrogate, heaviside, sign


def primitive(name, u, k):
    """A smooth function whose derivative is the surrogate dH/du (float64 reference)."""
    if name == "atan":
        return 0.5 + torch.atan(math.pi * k * u) / math.pi
    if name == "fast-sigmoid":
        return 0.5 + k * u / (1 + 2 * k * u.abs())
    w = (u * k).clamp(-1, 1)  # triangle: height k, half-width 1/k
    return 0.5 + w - w * w.abs() / 2


def reference_grad(name, u, k):
    """The documented formulas, written out again in float64."""
    if name == "atan":
        return k / (1 + (math.pi * k * u) ** 2)
    if name == "fast-sigmoid":
        return k / (1 + 2 * k * u.abs()) ** 2
    return torch.clamp(k - k * k * u.abs(), min=0)


def test_forward_is_exact_with_zero_conventions():
    u = torch.tensor([-2.0, -1e-30, -0.0, 0.0, 1e-30, 3.0])
    assert heaviside(u).tolist() == [0, 0, 1, 1, 1, 1]
    assert sign(u).tolist() == [-1, -1, 1, 1, 1, 1]
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        assert heaviside(u.to(dtype)).dtype == dtype and sign(u.to(dtype)).dtype == dtype


@pytest.mark.parametrize("name", sorted(SURROGATES))
@pytest.mark.parametrize("k", [0.3, 1.0, 4.0])
def test_gradients_equal_float64_reference(name, k):
    u = torch.linspace(-3, 3, 1001, dtype=torch.float64).requires_grad_()
    w = torch.randn(1001, dtype=torch.float64)
    (gh,) = torch.autograd.grad((heaviside(u, name, k) * w).sum(), u)
    (gs,) = torch.autograd.grad((sign(u, name, k) * w).sum(), u)
    ref = reference_grad(name, u.detach(), k)
    torch.testing.assert_close(gh, w * ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gs, 2 * w * ref, rtol=1e-12, atol=1e-12)
    # the formulas are the derivative of a smooth step from 0 to 1: check against its autograd
    (dp,) = torch.autograd.grad(primitive(name, u, k).sum(), u)
    torch.testing.assert_close(gh, dp * w, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(SURROGATES))
def test_surrogate_has_height_k_and_unit_area(name):
    k = 2.0
    grad = get_surrogate(name)
    assert grad(torch.zeros((), dtype=torch.float64), k).item() == pytest.approx(k)
    u = torch.linspace(-200, 200, 400_001, dtype=torch.float64)
    assert torch.trapezoid(grad(u, k), u).item() == pytest.approx(1.0, abs=2e-3)


def test_bad_choices_raise():
    with pytest.raises(ValueError, match="atan.*fast-sigmoid.*triangle.*'tanh'"):
        get_surrogate("tanh")
    with pytest.raises(ValueError, match="sharpness"):
        heaviside(torch.zeros(2), "atan", 0.0)
    with pytest.raises(ValueError, match="sharpness"):
        sign(torch.zeros(2), "atan", float("nan"))


@pytest.mark.parametrize("fn", [heaviside, sign])
def test_without_grad_mode_the_plain_forward_gives_the_same_values(fn):
    """Generation and evaluation skip the autograd Function (its wrapper costs more than the
    step): the same values, H(±0) = 1 and sign(±0) = +1 included."""
    u = torch.tensor([-2.0, -0.0, 0.0, 1e-30, 3.0], requires_grad=True)
    with_grad = fn(u)
    with torch.no_grad():
        plain = fn(u)
    assert with_grad.grad_fn is not None and plain.grad_fn is None
    assert torch.equal(plain, with_grad.detach())
