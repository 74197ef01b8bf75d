"""The SRC's loop as one Triton kernel each way (the GPU side of ``compile_loop``).

Per neuron, from the drive ``d``, with ``u[t] = ρ tanh(i[t] / ρ) + b`` (the input integration and
the saturation fused in)::

    i[t]   = α i[t-1] + d[t]
    h[t]   = tanh(u[t] + r h[t-1] + r_s h_s[t-1])
    z_s[t] = z_hyp if g[t] ≤ 0.5 else z_dep          g = h[t-1] (default) or h[t]
    h_s[t] = z_s[t] h_s[t-1] + (1 − z_s[t]) h[t-1]

and the reverse recurrence of ``bistable.units.src_loop`` (``δ``, ``c_h``, ``c_s``, ``q``). One
program owns one batch row and ``BLOCK`` neurons and walks all T steps, keeping the state in
registers (T is a compile-time constant: one compilation per sequence length, as a training run has
few): the forward reads ``d`` and writes ``i`` and ``h`` once; the backward reads ``grad_h`` (and
``grad_i`` where given), ``h``, ``i`` once and writes ``grad_d``. The functions :func:`forward` and
:func:`backward` take and return what the other loops of ``bistable.units.src_loop`` do, so its
operators use any of them.

The kernel's ``tanh`` is ``(1 − e)/(1 + e)`` with ``e = exp(−2|x|)``: within an ulp of
``torch.tanh`` (about half the values differ by one), so results match the CPU loops to float
rounding, not bit for bit, and an ``h`` that lands exactly on the gate's 0.5 may be gated the
other way (a tie of measure zero; an ``h`` given as 0.5 is gated alike).
"""

from __future__ import annotations

import torch

from ..scan.triton_lang import constants, on_device, tl, triton

BLOCK = 128  # neurons per program


@triton.jit
def _tanh(x):
    """``tanh`` from one ``exp`` of a non-positive number (no overflow)."""
    e = tl.exp(-2.0 * tl.abs(x))
    y = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -y, y)


@triton.jit
def _fwd_kernel(d_ptr, i0_ptr, h0_ptr, hs0_ptr, r_ptr, rs_ptr, b_ptr, h_ptr, i_ptr, hs_last_ptr, H,
                consts_ptr, T: tl.constexpr, CURRENT: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    rho, z_hyp, z_dep = tl.load(consts_ptr), tl.load(consts_ptr + 1), tl.load(consts_ptr + 2)
    alpha = tl.load(consts_ptr + 3)
    d = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = d < H
    r = tl.load(r_ptr + d, mask=mask, other=0.0)
    rs = tl.load(rs_ptr + d, mask=mask, other=0.0)
    bias = tl.load(b_ptr + d, mask=mask, other=0.0)
    h = tl.load(h0_ptr + row * H + d, mask=mask, other=0.0)
    hs = tl.load(hs0_ptr + row * H + d, mask=mask, other=0.0)
    i = tl.load(i0_ptr + row * H + d, mask=mask, other=0.0)
    base = row * T * H + d
    for t in range(T):
        i = alpha * i + tl.load(d_ptr + base + t * H, mask=mask, other=0.0)
        tl.store(i_ptr + base + t * H, i, mask=mask)
        u = rho * _tanh(i / rho) + bias
        h_new = _tanh(u + r * h + rs * hs)
        if CURRENT:
            gate = h_new
        else:
            gate = h
        z = tl.where(gate > 0.5, z_dep, z_hyp)
        hs = h + z * (hs - h)
        h = h_new
        tl.store(h_ptr + base + t * H, h, mask=mask)
    tl.store(hs_last_ptr + row * H + d, hs, mask=mask)


@triton.jit
def _bwd_kernel(g_ptr, gi_ptr, ghs_ptr, h_ptr, i_ptr, h0_ptr, r_ptr, rs_ptr, gd_ptr, gi0_ptr,
                gb_ptr, gh0_ptr, ghs0_ptr, H, consts_ptr, T: tl.constexpr,
                CURRENT: tl.constexpr, DETACH: tl.constexpr, HAS_GI: tl.constexpr,
                BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    rho, z_hyp, z_dep = tl.load(consts_ptr), tl.load(consts_ptr + 1), tl.load(consts_ptr + 2)
    alpha = tl.load(consts_ptr + 3)
    d = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = d < H
    r = tl.load(r_ptr + d, mask=mask, other=0.0)
    rs = tl.load(rs_ptr + d, mask=mask, other=0.0)
    base = row * T * H + d
    c_s = tl.load(ghs_ptr + row * H + d, mask=mask, other=0.0)
    c_h = tl.zeros_like(c_s)
    gb = tl.zeros_like(c_s)
    q = tl.zeros_like(c_s)  # the gradient into i[t], through the integration
    h = tl.load(h_ptr + base + (T - 1) * H, mask=mask, other=0.0)
    for k in range(T):
        t = T - 1 - k
        if t > 0:
            h_prev = tl.load(h_ptr + base + (t - 1) * H, mask=mask, other=0.0)
        else:
            h_prev = tl.load(h0_ptr + row * H + d, mask=mask, other=0.0)
        delta = (tl.load(g_ptr + base + t * H, mask=mask, other=0.0) + c_h) * (1.0 - h * h)
        if not DETACH:
            if CURRENT:
                gate = h
            else:
                gate = h_prev
            zc = tl.where(gate > 0.5, z_dep, z_hyp) * c_s
            c_h = c_s - zc + r * delta  # r δ + (1 − z) c_s
            c_s = zc + rs * delta  # r_s δ + z c_s
        th = _tanh(tl.load(i_ptr + base + t * H, mask=mask, other=0.0) / rho)
        q = alpha * q + delta * (1.0 - th * th)
        if HAS_GI:
            q += tl.load(gi_ptr + base + t * H, mask=mask, other=0.0)
        tl.store(gd_ptr + base + t * H, q, mask=mask)
        gb += delta
        h = h_prev
    tl.store(gi0_ptr + row * H + d, alpha * q, mask=mask)
    tl.store(gb_ptr + row * H + d, gb, mask=mask)
    tl.store(gh0_ptr + row * H + d, c_h, mask=mask)
    tl.store(ghs0_ptr + row * H + d, c_s, mask=mask)


def _grid(x: torch.Tensor):
    return (x.shape[0], triton.cdiv(x.shape[2], BLOCK))


def forward(d, i0, h0, hs0, r, r_s, b, alpha, rho, z_hyp, z_dep, current):
    """The drive ``d`` ``(B, T, H)``, states ``(B, H)``, per-neuron ``r, r_s, b`` ``(H,)``
    (contiguous, one dtype and device) → ``h`` and ``i`` ``(B, T, H)``, ``h_s[T]`` ``(B, H)``."""
    h, i = torch.empty_like(d), torch.empty_like(d)
    hs_last = torch.empty_like(hs0)
    with on_device(d):
        _fwd_kernel[_grid(d)](d, i0, h0, hs0, r, r_s, b, h, i, hs_last, d.shape[2],
                              constants(d.device, d.dtype, rho, z_hyp, z_dep, alpha),
                              T=d.shape[1], CURRENT=current, BLOCK=BLOCK)
    return h, i, hs_last


def backward(g, g_i, g_hs, h, i, h0, r, r_s, alpha, rho, z_hyp, z_dep, current, detach):
    """Gradients into ``d`` ``(B, T, H)``, ``i0`` ``(B, H)``, ``b`` ``(H,)``, ``h0`` and ``h_s0``
    ``(B, H)`` from ``grad_h`` ``(B, T, H)``, ``grad_i`` ``(B, T, H)`` or None and ``grad_h_s[T]``
    ``(B, H)``."""
    gd = torch.empty_like(i)
    gi0, gb, gh0, ghs0 = (torch.empty_like(h0) for _ in range(4))
    with on_device(i):
        _bwd_kernel[_grid(i)](g, g if g_i is None else g_i, g_hs, h, i, h0, r, r_s, gd, gi0, gb,
                              gh0, ghs0, i.shape[2],
                              constants(i.device, i.dtype, rho, z_hyp, z_dep, alpha),
                              T=i.shape[1], CURRENT=current, DETACH=detach,
                              HAS_GI=g_i is not None, BLOCK=BLOCK)
    return gd, gi0, gb.sum(0), gh0, ghs0
