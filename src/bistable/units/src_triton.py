"""The SRC's ``(h, h_s)`` loop as one Triton kernel each way (the GPU side of ``compile_loop``).

Per neuron, with ``u[t] = ρ tanh(i[t] / ρ) + b`` (the saturation fused in)::

    h[t]   = tanh(u[t] + r h[t-1] + r_s h_s[t-1])
    z_s[t] = z_hyp if g[t] ≤ 0.5 else z_dep          g = h[t-1] (default) or h[t]
    h_s[t] = z_s[t] h_s[t-1] + (1 − z_s[t]) h[t-1]

and the reverse recurrence of ``bistable.units.src_loop`` (``δ``, ``c_h``, ``c_s``). One program
owns one batch row and ``BLOCK`` neurons and walks all T steps, keeping the state in registers (T
is a compile-time constant: one compilation per sequence length, as a training run has few): the
forward reads ``i`` and writes ``h`` once; the backward reads ``grad_h``, ``h``, ``i`` once and
writes ``grad_i``. The functions :func:`forward` and :func:`backward` take and return what the
other loops of ``bistable.units.src_loop`` do, so its operators use any of them.

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
def _fwd_kernel(i_ptr, h0_ptr, hs0_ptr, r_ptr, rs_ptr, b_ptr, h_ptr, hs_last_ptr, H, consts_ptr,
                T: tl.constexpr, CURRENT: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    rho, z_hyp, z_dep = tl.load(consts_ptr), tl.load(consts_ptr + 1), tl.load(consts_ptr + 2)
    d = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = d < H
    r = tl.load(r_ptr + d, mask=mask, other=0.0)
    rs = tl.load(rs_ptr + d, mask=mask, other=0.0)
    bias = tl.load(b_ptr + d, mask=mask, other=0.0)
    h = tl.load(h0_ptr + row * H + d, mask=mask, other=0.0)
    hs = tl.load(hs0_ptr + row * H + d, mask=mask, other=0.0)
    base = row * T * H + d
    for t in range(T):
        u = rho * _tanh(tl.load(i_ptr + base + t * H, mask=mask, other=0.0) / rho) + bias
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
def _bwd_kernel(g_ptr, ghs_ptr, h_ptr, i_ptr, h0_ptr, r_ptr, rs_ptr, gi_ptr, gb_ptr, gh0_ptr,
                ghs0_ptr, H, consts_ptr, T: tl.constexpr, CURRENT: tl.constexpr,
                DETACH: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    rho, z_hyp, z_dep = tl.load(consts_ptr), tl.load(consts_ptr + 1), tl.load(consts_ptr + 2)
    d = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = d < H
    r = tl.load(r_ptr + d, mask=mask, other=0.0)
    rs = tl.load(rs_ptr + d, mask=mask, other=0.0)
    base = row * T * H + d
    c_s = tl.load(ghs_ptr + row * H + d, mask=mask, other=0.0)
    c_h = tl.zeros_like(c_s)
    gb = tl.zeros_like(c_s)
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
        tl.store(gi_ptr + base + t * H, delta * (1.0 - th * th), mask=mask)
        gb += delta
        h = h_prev
    tl.store(gb_ptr + row * H + d, gb, mask=mask)
    tl.store(gh0_ptr + row * H + d, c_h, mask=mask)
    tl.store(ghs0_ptr + row * H + d, c_s, mask=mask)


def _grid(i: torch.Tensor):
    return (i.shape[0], triton.cdiv(i.shape[2], BLOCK))


def forward(i, h0, hs0, r, r_s, b, rho, z_hyp, z_dep, current):
    """``i`` ``(B, T, H)``, states ``(B, H)``, per-neuron ``r, r_s, b`` ``(H,)`` (contiguous, one
    dtype and device) → ``h`` ``(B, T, H)`` and ``h_s[T]`` ``(B, H)``."""
    h = torch.empty_like(i)
    hs_last = torch.empty_like(hs0)
    with on_device(i):
        _fwd_kernel[_grid(i)](i, h0, hs0, r, r_s, b, h, hs_last, i.shape[2],
                              constants(i.device, i.dtype, rho, z_hyp, z_dep), T=i.shape[1],
                              CURRENT=current, BLOCK=BLOCK)
    return h, hs_last


def backward(g, g_hs, h, i, h0, r, r_s, rho, z_hyp, z_dep, current, detach):
    """Gradients into ``i`` ``(B, T, H)``, ``b`` ``(H,)``, ``h0`` and ``h_s0`` ``(B, H)`` from
    ``grad_h`` ``(B, T, H)`` and ``grad_h_s[T]`` ``(B, H)``."""
    gi = torch.empty_like(i)
    gb, gh0, ghs0 = (torch.empty_like(h0) for _ in range(3))
    with on_device(i):
        _bwd_kernel[_grid(i)](g, g_hs, h, i, h0, r, r_s, gi, gb, gh0, ghs0, i.shape[2],
                              constants(i.device, i.dtype, rho, z_hyp, z_dep), T=i.shape[1],
                              CURRENT=current, DETACH=detach, BLOCK=BLOCK)
    return gi, gb.sum(0), gh0, ghs0
