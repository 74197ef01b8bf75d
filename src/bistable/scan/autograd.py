"""Autograd for the scan by its analytic backward, itself a scan in the other direction.

With ``g_t = dL/dh_t`` (total) and the forward ``h_t = a_t ⊙ h_{t-1} + b_t``:

    g_t = dL/dh_t(direct) + conj(a_{t+1}) ⊙ g_{t+1}
    dL/db_t = g_t ,   dL/da_t = g_t ⊙ conj(h_{t-1}) ,   dL/dh_0 = conj(a_1) ⊙ g_1

(``reverse=True`` swaps the roles of ``t-1`` and ``t+1``.) A backend supplies ``forward(a, b,
h0, reverse) -> h`` and may supply a fused ``backward(a, h, h0, grad_h, reverse)``; otherwise
:func:`backward_by_scan` builds it from the backend's forward (which must then take ``out=``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

Forward = Callable[..., torch.Tensor]  # (a, b, h0, reverse, out=None) -> h


class Backend(NamedTuple):
    forward: Forward
    backward: Callable | None = None


def backward_by_scan(forward: Forward, a, h, h0, grad_h, reverse: bool):
    """``(da, db, dh0)`` of the scan, with ``da`` already summed over a broadcast batch.

    ``forward`` must accept strided views along time and an ``out=`` tensor: the shifted
    coefficients ``a_{t+1}`` and states ``h_{t-1}`` are then views, never copies.
    """
    a = a.conj() if a.is_complex() else a
    h = h.conj() if h.is_complex() else h
    T = h.shape[1]
    # the later and earlier time indices in the forward direction of this scan
    later, earlier = (slice(0, T - 1), slice(1, T)) if reverse else (slice(1, T), slice(0, T - 1))
    last, first = (0, -1) if reverse else (-1, 0)
    g = torch.empty_like(grad_h)
    g[:, last] = grad_h[:, last]
    if T > 1:  # g_t = grad_t + conj(a_{t+1}) g_{t+1}: a scan in the other direction
        forward(a[:, later], grad_h[:, earlier], grad_h[:, last], not reverse, out=g[:, earlier])
    da = torch.empty_like(g)
    torch.mul(g[:, later], h[:, earlier], out=da[:, later])  # da_t = g_t ⊙ conj(h_{t-1})
    if h0 is None:
        da[:, first] = 0
    else:
        torch.mul(g[:, first], h0.conj() if h0.is_complex() else h0, out=da[:, first])
    if a.shape[0] == 1 and g.shape[0] != 1:
        da = da.sum(0, keepdim=True)
    dh0 = a[:, first] * g[:, first] if h0 is not None else None
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
