"""Heaviside and sign with surrogate gradients (SPEC.md §2.1).

Forward is exact: ``H(u) = 1 if u >= 0 else 0`` (so ``H(0) = 1``) and ``sign(u) = +1 if u >= 0
else −1`` (so ``sign(0) = +1``, unlike ``torch.sign``). Backward replaces the Dirac ``dH/du`` by a
smooth bump of height ``k`` (the sharpness) at ``u = 0`` and unit area; ``sign = 2H − 1``, so its
surrogate is twice that of ``H``:

    "atan"          dH/du = k / (1 + (π k u)²)                 (default; SPEC.md §2.1)
    "fast-sigmoid"  dH/du = k / (1 + 2 k |u|)²
    "triangle"      dH/du = max(0, k − k² |u|)                 (support |u| < 1/k)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..scan.autograd import apply, forward_mode, refuse_nested_forward_mode
from .base import check_number

SurrogateGrad = Callable[[torch.Tensor, float], torch.Tensor]


# Each surrogate computes in place where autograd does not record it (a backward without
# create_graph: fewer temporaries), and out of place where it does (create_graph, torch.func:
# in-place steps on recorded tensors give wrong higher derivatives, and a cycle that leaks).


def atan_grad(u: torch.Tensor, k: float) -> torch.Tensor:
    """``k / (1 + (π k u)²)``: the derivative of ``1/2 + atan(π k u)/π``."""
    t = u * (math.pi * k)
    if torch.is_grad_enabled():
        return k / (1 + t * t)
    return t.mul_(t).add_(1).reciprocal_().mul_(k)


def fast_sigmoid_grad(u: torch.Tensor, k: float) -> torch.Tensor:
    """``k / (1 + 2 k |u|)²``: the derivative of ``1/2 + k u / (1 + 2 k |u|)``."""
    if torch.is_grad_enabled():
        return k / (1 + 2 * k * u.abs()).square()
    t = u.abs().mul_(2 * k).add_(1)
    return t.mul_(t).reciprocal_().mul_(k)


def triangle_grad(u: torch.Tensor, k: float) -> torch.Tensor:
    """``max(0, k − k² |u|)``: a triangle of height ``k`` and half-width ``1/k``."""
    if torch.is_grad_enabled():
        return (k - k * k * u.abs()).clamp_min(0)
    return u.abs().mul_(-k * k).add_(k).clamp_min_(0)


SURROGATES: dict[str, SurrogateGrad] = {
    "atan": atan_grad,
    "fast-sigmoid": fast_sigmoid_grad,
    "triangle": triangle_grad,
}


def get_surrogate(name: str) -> SurrogateGrad:
    """The surrogate ``dH/du`` called ``name``, as a function ``(u, k) -> Tensor``."""
    try:
        return SURROGATES[name]
    except (KeyError, TypeError):
        raise ValueError(f"surrogate: expected one of {sorted(SURROGATES)}, got {name!r}") from None


def check_sharpness(sharpness: float) -> float:
    """``sharpness`` as a float, or ValueError unless it is finite and > 0."""
    return check_number(sharpness, "sharpness", lambda v: v > 0, "a finite number > 0")


def exact_sign(u: torch.Tensor) -> torch.Tensor:
    """``sign(u)`` in ``{−1, +1}`` with ``sign(±0) = +1``; no gradient (float ops only, fast)."""
    return torch.sign(u).add_(0.5).sign_()


def exact_heaviside(u: torch.Tensor) -> torch.Tensor:
    """``H(u)`` in ``{0, 1}`` with ``H(±0) = 1``; no gradient."""
    return exact_sign(u).add_(1).mul_(0.5)


class _Step(torch.autograd.Function):
    """``H(u)`` (or ``sign(u)``) forward, ``surrogate(u, k)`` (or twice it) backward."""

    generate_vmap_rule = True  # torch.func.vmap: forward and backward are plain operations

    @staticmethod
    def forward(u, signed: bool, grad: SurrogateGrad, k: float):
        # out of place: torch 2.11 compiles a Function whose output was changed in place into
        # a zero gradient (pytorch/pytorch#180642, fixed in 2.12); exact_sign's chain did that
        s = torch.sign(torch.sign(u) + 0.5)
        return s if signed else (s + 1) * 0.5

    @staticmethod
    def setup_context(ctx, inputs, output):
        u, signed, ctx.grad, ctx.k = inputs
        ctx.scale = 2.0 if signed else 1.0
        ctx.save_for_backward(u)
        if forward_mode():
            ctx.save_for_forward(u)

    @staticmethod
    def backward(ctx, grad_out):
        (u,) = ctx.saved_tensors
        return grad_out * (ctx.grad(u, ctx.k) * ctx.scale), None, None, None


class _StepJvp(_Step):
    """:class:`_Step` with forward mode (:func:`forward_mode`)."""

    @staticmethod
    def jvp(ctx, du, *_):
        """Forward mode with the same surrogate: ``ṡ = surrogate(u, k) · u̇`` (twice for sign)."""
        refuse_nested_forward_mode("surrogate step")
        (u,) = ctx.saved_tensors
        return du * (ctx.grad(u, ctx.k) * ctx.scale)


def heaviside(u: torch.Tensor, surrogate: str = "atan", sharpness: float = 1.0) -> torch.Tensor:
    """``H(u)`` (``H(0) = 1``) with the surrogate gradient ``surrogate(u, sharpness)``."""
    return step(u, False, get_surrogate(surrogate), check_sharpness(sharpness))


def sign(u: torch.Tensor, surrogate: str = "atan", sharpness: float = 1.0) -> torch.Tensor:
    """``sign(u)`` in ``{−1, +1}`` (``sign(0) = +1``) with the gradient ``2 surrogate(u, k)``."""
    return step(u, True, get_surrogate(surrogate), check_sharpness(sharpness))


def step(u: torch.Tensor, signed: bool, grad: SurrogateGrad, k: float) -> torch.Tensor:
    """:func:`sign` (``signed``) or :func:`heaviside` with the surrogate function ``grad`` and
    sharpness ``k`` as given (unchecked). Without grad mode (generation, evaluation) the plain
    forward: the Function's wrapper costs more than the step itself."""
    if not torch.is_grad_enabled() and not forward_mode():
        return _Step.forward(u, signed, grad, k)
    return apply(_StepJvp if forward_mode() else _Step, u, signed, grad, k)
