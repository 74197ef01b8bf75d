"""``x @ Wᵀ`` for spike inputs: on the CPU, a sparse product when most of ``x`` is zero.

An SRC layer's input is spikes: Bernoulli-coded pixels (0 or 1, a few percent of them 1) or the
previous layer's ``ReLU(h)`` (about 1 % nonzero in a trained network). A dense product reads every
zero; the sparse one visits only the nonzero ``x[n, k]``::

    out[n]      = Σ_{k: x[n,k] ≠ 0} x[n, k] · W[:, k]        one embedding_bag over the rows
    ∂L/∂W[:, k] = Σ_{n: x[n,k] ≠ 0} x[n, k] · g[n]           the same, the nonzeros sorted by k
    ∂L/∂x       = g W                                         dense (the SRC's spike passes every
                                                              gradient: its backward is identity)

:func:`sparse_matmul` is that product; :func:`spike_matmul` takes it on the CPU, in float32 or
float64, for inputs of at least :data:`MIN_ELEMENTS` elements of which at most :data:`MAX_DENSITY`
are nonzero (estimated on a sample of rows; both constants from ``results/spike_matmul_cpu.md``),
and otherwise (and under autocast, ``torch.func`` transforms and ``torch.compile``) the plain
product :func:`dense_matmul`, the tests' reference. Gradients to be differentiated again
(``create_graph=True``) come from the plain product's operations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import _get_current_dispatch_mode

from ..scan.autograd import recording
from .base import transforms_active

MAX_DENSITY = 0.08
MIN_ELEMENTS = 1 << 18


def dense_matmul(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x (..., F) @ weight (H, F)ᵀ`` → ``(..., H)``: the plain product."""
    return x @ weight.t()


def spike_matmul(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x (..., F) @ weight (H, F)ᵀ`` → ``(..., H)``, by the sparse product where it is faster
    (see the module docstring); the same values and gradients as :func:`dense_matmul` up to the
    order of the sums (and the NaN caveat of :func:`sparse_matmul`)."""
    _check_shapes(x, weight)
    if not _sparse_may_apply(x, weight):
        return dense_matmul(x, weight)
    if _density(x.detach().reshape(-1, x.shape[-1])) > MAX_DENSITY:
        return dense_matmul(x, weight)
    return _sparse_product(x, weight)  # checked already: _sparse_may_apply asks more


def sparse_matmul(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x (..., F) @ weight (H, F)ᵀ`` → ``(..., H)`` by the sparse product, whatever the
    density (CPU, float32 or float64, ``x`` and ``weight`` of one dtype; empty operands by the
    plain product). As in any sparse product, a zero input never meets its weights: a NaN or
    Inf weight reaches only the outputs of the inputs that are nonzero (``0 · NaN`` is NaN in
    the plain product)."""
    _check_shapes(x, weight)
    for name, t in (("x", x), ("weight", weight)):
        if t.device.type != "cpu" or t.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"{name}: expected a float32 or float64 CPU tensor, got {t.dtype} "
                             f"on {t.device}")
    if x.dtype != weight.dtype:
        raise ValueError(f"x: expected the dtype of weight ({weight.dtype}), got {x.dtype}")
    if x.numel() == 0 or weight.numel() == 0:
        return dense_matmul(x, weight)
    return _sparse_product(x, weight)


def _sparse_product(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    flat = x.reshape(-1, x.shape[-1])
    rows, cols = flat.detach().nonzero(as_tuple=True)
    return _SparseMatmul.apply(flat, weight, rows, cols).reshape(*x.shape[:-1], weight.shape[0])


def _check_shapes(x: torch.Tensor, weight: torch.Tensor) -> None:
    if weight.dim() != 2 or x.dim() < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"x, weight: expected (..., F) and (H, F), got {tuple(x.shape)} and "
                         f"{tuple(weight.shape)}")


def _sparse_may_apply(x: torch.Tensor, weight: torch.Tensor) -> bool:
    # plain strided tensors only, and no Python dispatch mode (FakeTensorMode, make_fx,
    # FlopCounterMode...): the sparse path reads values to choose its shapes
    return (type(x) is torch.Tensor and x.layout == torch.strided
            and x.device.type == "cpu" and weight.device.type == "cpu"
            and x.dtype == weight.dtype and x.dtype in (torch.float32, torch.float64)
            and x.numel() >= MIN_ELEMENTS and weight.numel() > 0
            and not torch.compiler.is_compiling() and not transforms_active()
            and _get_current_dispatch_mode() is None
            and not torch.is_autocast_enabled("cpu"))


def _density(flat: torch.Tensor) -> float:
    """The fraction of nonzeros in about 256 rows of ``flat`` spread over it: an estimate that
    costs little (an exact count costs up to a quarter of the dense product at high density) and
    decides only the speed, never the values."""
    sample = flat[::max(1, flat.shape[0] // 256)]
    return int(torch.count_nonzero(sample)) / max(1, sample.numel())


def _offsets(sorted_index: torch.Tensor, n: int) -> torch.Tensor:
    """Where each of the ``n`` groups of ``sorted_index`` (values in ``[0, n)``) starts."""
    counts = torch.bincount(sorted_index, minlength=n)
    return counts.cumsum(0) - counts


class _SparseMatmul(torch.autograd.Function):
    """The sparse product of ``x`` ``(N, F)`` over its nonzero entries ``(rows, cols)``
    (row-major order, as ``nonzero`` gives them). It keeps for backward what the gradients asked
    for need, as ``mm`` does: ``weight`` for ``x``'s, the nonzeros for ``weight``'s (and ``x``
    when both are asked, for ``create_graph``)."""

    @staticmethod
    def forward(ctx, x, weight, rows, cols):
        values = x[rows, cols]
        # embedding_bag's fast kernel wants a contiguous table: Wᵀ is copied (H·F elements)
        out = F.embedding_bag(cols, weight.t().contiguous(), _offsets(rows, x.shape[0]),
                              mode="sum", per_sample_weights=values)
        need_x, need_w = ctx.needs_input_grad[:2]
        ctx.shape = x.shape
        ctx.save_for_backward(x if need_x and need_w else None, weight if need_x else None,
                              *((rows, cols, values) if need_w else (None,) * 3))
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight, rows, cols, values = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad[:2]
        gx = grad @ weight if need_x else None
        if not need_w:
            return gx, None, None, None
        if recording():  # create_graph=True: the plain product's operations, recorded (x
            # rebuilt from its nonzeros when it has no gradient, so none flows through it)
            if x is None:
                x = grad.new_zeros(ctx.shape).index_put_((rows, cols), values)
            return gx, grad.t() @ x, None, None
        by_col, order = torch.sort(cols.to(torch.int32), stable=True)
        gw = F.embedding_bag(rows[order], grad.contiguous(), _offsets(by_col, ctx.shape[1]),
                             mode="sum", per_sample_weights=values[order])
        return gx, gw.t().contiguous(), None, None
