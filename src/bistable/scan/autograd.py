"""Autograd for the scan by its analytic backward, itself a scan in the other direction.

With ``g_t = dL/dh_t`` (total) and the forward ``h_t = a_t ⊙ h_{t-1} + b_t``:

    g_t = dL/dh_t(direct) + conj(a_{t+1}) ⊙ g_{t+1}
    dL/db_t = g_t ,   dL/da_t = g_t ⊙ conj(h_{t-1}) ,   dL/dh_0 = conj(a_1) ⊙ g_1

(``reverse=True`` swaps the roles of ``t-1`` and ``t+1``.) A backend supplies ``forward(a, b,
h0, reverse) -> h`` and may supply a fused ``backward(a, h, h0, grad_h, reverse)``; otherwise
:func:`backward_by_scan` builds it from the backend's forward.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch

Forward = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None", bool], torch.Tensor]


class Backend(NamedTuple):
    forward: Forward
    backward: Callable | None = None


def _shift(x: torch.Tensor, towards_end: bool, fill: torch.Tensor | float) -> torch.Tensor:
    """``x`` moved one step along dim 1 (``towards_end``: ``out_t = x_{t-1}``), ``fill`` at the gap."""
    out = torch.empty_like(x)
    if towards_end:
        out[:, 1:] = x[:, :-1]
        out[:, 0] = fill
    else:
        out[:, :-1] = x[:, 1:]
        out[:, -1] = fill
    return out


def backward_by_scan(forward: Forward, a, h, h0, grad_h, reverse: bool):
    """``(da, db, dh0)`` of the scan, with ``da`` already summed over a broadcast batch."""
    a_conj = a.conj() if a.is_complex() else a
    # a_next[t] = a[t+1] (forward direction): the coefficient that carries g_{t+1} back to g_t
    a_next = _shift(a_conj, towards_end=reverse, fill=0.0)
    g = forward(a_next, grad_h, None, not reverse)
    prev = torch.zeros_like(h[:, 0]) if h0 is None else h0
    h_prev = _shift(h, towards_end=not reverse, fill=prev)
    da = g * (h_prev.conj() if h_prev.is_complex() else h_prev)
    if a.shape[0] == 1 and g.shape[0] != 1:
        da = da.sum(0, keepdim=True)
    first = -1 if reverse else 0
    dh0 = a_conj[:, first] * g[:, first] if h0 is not None else None
    return da, g, dh0


class LinearScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, h0, reverse: bool, backend: Backend):
        h = backend.forward(a, b, h0, reverse)
        ctx.save_for_backward(a, h, h0)
        ctx.reverse, ctx.backend = reverse, backend
        return h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_h):
        a, h, h0 = ctx.saved_tensors
        grad_h = grad_h.contiguous()
        bwd = ctx.backend.backward
        if bwd is None:
            da, db, dh0 = backward_by_scan(ctx.backend.forward, a, h, h0, grad_h, ctx.reverse)
        else:
            da, db, dh0 = bwd(a, h, h0, grad_h, ctx.reverse)
        return da, db, dh0, None, None
