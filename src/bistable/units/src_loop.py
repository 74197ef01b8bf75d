"""The SRC's loop (:mod:`bistable.units.src`), input integration and saturation included, as one
PyTorch custom operator each way (``bistable::src_loop``, ``bistable::src_loop_backward``).

From the drive ``d = W s_in`` ``(B, T, H)``, with ``u[t] = ρ tanh(i[t] / ρ) + b``::

    i[t]   = α · i[t-1] + d[t]
    h[t]   = tanh(u[t] + r · h[t-1] + r_s · h_s[t-1])
    z_s[t] = z_hyp if g[t] ≤ 0.5 else z_dep                   g = h[t-1] (default) or h[t]
    h_s[t] = z_s[t] · h_s[t-1] + (1 − z_s[t]) · h[t-1]

The forward returns ``h``, ``i`` (which the backward needs and whose last step is the state) and
the last ``h_s``; the backward is the hand-written reverse recurrence (the gate ``z_s``, piecewise
constant, carries no gradient and is recomputed from ``h`` step by step)::

    δ[t]      = (∂L/∂h[t] + c_h[t]) · (1 − h[t]²)                  (∂L/∂b gathers δ)
    c_h[t-1]  = r · δ[t] + (1 − z_s[t]) · c_s[t]                    (gradient into h[t-1])
    c_s[t-1]  = r_s · δ[t] + z_s[t] · c_s[t]                        (gradient into h_s[t-1])
    q[t]      = δ[t] · (1 − tanh²(i[t] / ρ)) + ∂L/∂i[t] + α · q[t+1] = ∂L/∂d[t]
    ∂L/∂i[0]  = α · q[0]   (into the initial i)

``detach`` cuts both recurrent paths of ``(h, h_s)`` (``c_h = c_s = 0``): truncated, one-step
BPTT; the input integration keeps its gradient through time.

Three implementations of one interface (``forward``/``backward`` as in
:mod:`bistable.units.src_triton`): :class:`EagerLoop`, PyTorch operations step by step after one
:func:`bistable.scan.linear_scan` for ``i`` (any device and dtype; the reference); with
``compiled=True``, a small C++ kernel on CPU (:data:`_CPP`, built once by
``torch.utils.cpp_extension`` — needs a C++ compiler and ninja, about 30 s the first time, then
cached on disk: one pass over the sequence each way, batch rows in parallel, neurons in
AVX2/AVX-512 lanes) and a Triton kernel on CUDA (float32/64). As operators they are opaque nodes
with known output shapes to ``torch.compile``, which then traces an SRC network in one graph.
"""

import functools
import warnings
from typing import Optional

import torch
from torch import Tensor

from ..scan import linear_scan
from ..scan.autograd import recorded_grads, recording
from .base import check_operands
from .cpu_extension import load_cpu_extension


def _forward_steps(u, h, hs, r, r_s, z_hyp: float, z_dep: float, gate_current: bool,
                   detach: bool = False):
    """The ``(h, h_s)`` loop over ``u`` ``(B, T, H)`` from ``(h, hs)``: ``h`` ``(B, T, H)`` and
    the last ``h_s``. ``detach`` cuts the recurrent paths for autograd (:func:`differentiable`)."""
    hseq, zh, zd = [], h.new_full((), z_hyp), h.new_full((), z_dep)  # exact in h's dtype
    for k in range(u.shape[1]):
        if detach:
            h, hs = h.detach(), hs.detach()
        h_new = torch.tanh(torch.addcmul(torch.addcmul(u[:, k], r, h), r_s, hs))
        z = torch.where((h_new if gate_current else h) <= 0.5, zh, zd)
        hs = torch.lerp(h, hs, z)  # z · hs + (1 − z) · h
        h = h_new
        hseq.append(h)
    return torch.stack(hseq, 1), hs


def _backward_steps(g_h, h, h0, c_h, c_s, r, r_s, z_hyp: float, z_dep: float,
                    gate_current: bool):
    """The reverse recurrence, ``t = T-1..0``, the gate recomputed from ``h``: ``δ`` ``(B, T, H)``
    and the gradients ``c_h``, ``c_s`` flowing into the initial state."""
    deltas, one, zh, zd = [], torch.ones_like(c_h), h.new_full((), z_hyp), h.new_full((), z_dep)
    for k in range(h.shape[1] - 1, -1, -1):
        h_k = h[:, k]
        d = (g_h[:, k] + c_h) * torch.addcmul(one, h_k, h_k, value=-1)  # (g + c_h)(1 − h²)
        gate = h_k if gate_current else h[:, k - 1] if k else h0
        zc = torch.where(gate <= 0.5, zh, zd) * c_s
        c_h = torch.addcmul(c_s - zc, r, d)  # r · δ + (1 − z) · c_s
        c_s = torch.addcmul(zc, r_s, d)  # r_s · δ + z · c_s
        deltas.append(d)
    return torch.stack(deltas[::-1], 1), c_h, c_s


def integrate(d: Tensor, i0: Tensor, alpha: float, reverse: bool = False) -> Tensor:
    """``i[t] = α i[t-1] + d[t]`` from ``i0`` (``reverse``: ``t`` from the end, from ``i0``
    None), by :func:`bistable.scan.linear_scan` (autograd through it)."""
    return linear_scan(d.new_full((1, *d.shape[1:]), alpha), d, i0, reverse=reverse)


class EagerLoop:
    """The loop in PyTorch operations, one time step at a time (the reference)."""

    @staticmethod
    def forward(d, i0, h0, hs0, r, r_s, b, alpha, rho, z_hyp, z_dep, current):
        i = integrate(d, i0, alpha)
        u = rho * torch.tanh(i / rho) + b
        h, hs = _forward_steps(u, h0, hs0, r, r_s, z_hyp, z_dep, current)
        return h, i, hs

    @staticmethod
    def backward(g, g_i, g_hs, h, i, h0, r, r_s, alpha, rho, z_hyp, z_dep, current, detach):
        if detach:
            d = g * torch.addcmul(torch.ones_like(h), h, h, value=-1)
            c_h, c_s = torch.zeros_like(h0), torch.zeros_like(h0)
        else:
            d, c_h, c_s = _backward_steps(g, h, h0, torch.zeros_like(h0), g_hs, r, r_s, z_hyp,
                                          z_dep, current)
        direct = d * (1 - torch.tanh(i / rho).square())
        q = integrate(direct if g_i is None else direct + g_i, None, alpha, reverse=True)
        return q, alpha * q[:, 0], d.sum((0, 1)), c_h, c_s


def _differentiable_steps(i, bias, h0, hs0, r, r_s, rho, z_hyp, z_dep, gate_current, detach):
    """``(h, h_s[T])`` from the integrated input ``i`` by autograd-recorded steps."""
    u = rho * torch.tanh(i / rho) + bias
    return _forward_steps(u, h0, hs0, r.detach(), r_s.detach(), z_hyp, z_dep, gate_current,
                          detach)


def differentiable(d, i0, bias, h0, hs0, r, r_s, alpha: float, rho: float, z_hyp: float,
                   z_dep: float, gate_current: bool, detach: bool):
    """:func:`src_loop`'s values and gradients by autograd through the scan and
    :class:`EagerLoop`'s steps, for ``torch.func`` transforms and ``create_graph`` (the
    operators' hand-written backward is opaque to the first and not differentiable for the
    second). As in the operators, ``r`` and ``r_s`` get no gradient."""
    i = integrate(d, i0, alpha)
    h, hs = _differentiable_steps(i, bias, h0, hs0, r, r_s, rho, z_hyp, z_dep, gate_current,
                                  detach)
    return h, i, hs


_CPP = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

using at::vec::Vectorized;

// One layer's loop over (B, T, H) tensors: the input integration i = alpha i + d and the
// saturation u = rho tanh(i / rho) + b included; batch rows run in parallel, neurons in vector
// lanes.
template <typename T>
void forward_rows(const T* d, const T* i0, const T* h0, const T* hs0, const T* r, const T* rs,
                  const T* b, T* hseq, T* iseq, T* hs_last, int64_t B, int64_t L, int64_t H,
                  T alpha, T rho, T zh, T zd, bool current) {
  using V = Vectorized<T>;
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    std::vector<T> hs(H);
    for (int64_t n = b0; n < b1; ++n) {
      std::copy(hs0 + n * H, hs0 + (n + 1) * H, hs.begin());
      const T* hprev = h0 + n * H;
      const T* iprev = i0 + n * H;
      for (int64_t t = 0; t < L; ++t) {
        const int64_t off = (n * L + t) * H;
        for (int64_t j = 0; j < H; j += V::size()) {
          const int64_t c = std::min<int64_t>(V::size(), H - j);
          V iv = at::vec::fmadd(V(alpha), V::loadu(iprev + j, c), V::loadu(d + off + j, c));
          iv.store(iseq + off + j, c);
          V u = V(rho) * (iv / V(rho)).tanh() + V::loadu(b + j, c);
          V h = V::loadu(hprev + j, c), s = V::loadu(hs.data() + j, c);
          V hn = (u + V::loadu(r + j, c) * h + V::loadu(rs + j, c) * s).tanh();
          V z = V::blendv(V(zh), V(zd), (current ? hn : h) > V(0.5));
          (h + z * (s - h)).store(hs.data() + j, c);
          hn.store(hseq + off + j, c);
        }
        hprev = hseq + (n * L + t) * H;
        iprev = iseq + (n * L + t) * H;
      }
      std::copy(hs.begin(), hs.end(), hs_last + n * H);
    }
  });
}

// The reverse recurrence: gradients into d (through the saturation and the integration; gi_in,
// the gradient into i itself, may be null), i0, b (per batch row), h0, hs0.
template <typename T>
void backward_rows(const T* g, const T* gi_in, const T* hseq, const T* i, const T* h0,
                   const T* r, const T* rs, T* gd, T* gi0, T* gb, T* gh0, T* ghs0, int64_t B,
                   int64_t L, int64_t H, T alpha, T rho, T zh, T zd, bool current, bool detach) {
  using V = Vectorized<T>;
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t n = b0; n < b1; ++n) {
      T* ch = gh0 + n * H;  // running c_h, c_s; end as the gradients into h0, hs0
      T* cs = ghs0 + n * H;
      T* q = gi0 + n * H;   // running gradient into i[t] (zeroed); ends times alpha
      for (int64_t t = L - 1; t >= 0; --t) {
        const int64_t off = (n * L + t) * H;
        const T* hprev = t > 0 ? hseq + off - H : h0 + n * H;
        for (int64_t j = 0; j < H; j += V::size()) {
          const int64_t c = std::min<int64_t>(V::size(), H - j);
          V h = V::loadu(hseq + off + j, c);
          V d = (V::loadu(g + off + j, c) + V::loadu(ch + j, c)) * (V(1) - h * h);
          if (!detach) {
            V hp = V::loadu(hprev + j, c), s = V::loadu(cs + j, c);
            V z = V::blendv(V(zh), V(zd), (current ? h : hp) > V(0.5));
            V zc = z * s;
            (s - zc + V::loadu(r + j, c) * d).store(ch + j, c);
            (zc + V::loadu(rs + j, c) * d).store(cs + j, c);
          }
          V th = (V::loadu(i + off + j, c) / V(rho)).tanh();
          V qv = at::vec::fmadd(V(alpha), V::loadu(q + j, c), d * (V(1) - th * th));
          if (gi_in) qv = qv + V::loadu(gi_in + off + j, c);
          qv.store(q + j, c);
          qv.store(gd + off + j, c);
          (V::loadu(gb + n * H + j, c) + d).store(gb + n * H + j, c);
        }
      }
      for (int64_t j = 0; j < H; j += V::size()) {
        const int64_t c = std::min<int64_t>(V::size(), H - j);
        (V(alpha) * V::loadu(q + j, c)).store(q + j, c);
      }
    }
  });
}

std::vector<at::Tensor> forward(at::Tensor d, at::Tensor i0, at::Tensor h0, at::Tensor hs0,
                                at::Tensor r, at::Tensor rs, at::Tensor b, double alpha,
                                double rho, double zh, double zd, bool current) {
  auto hseq = at::empty_like(d);
  auto iseq = at::empty_like(d);
  auto hs_last = at::empty_like(hs0);
  const int64_t B = d.size(0), L = d.size(1), H = d.size(2);
  AT_DISPATCH_FLOATING_TYPES(d.scalar_type(), "src_forward", [&] {
    forward_rows<scalar_t>(d.data_ptr<scalar_t>(), i0.data_ptr<scalar_t>(),
                           h0.data_ptr<scalar_t>(), hs0.data_ptr<scalar_t>(),
                           r.data_ptr<scalar_t>(), rs.data_ptr<scalar_t>(),
                           b.data_ptr<scalar_t>(), hseq.data_ptr<scalar_t>(),
                           iseq.data_ptr<scalar_t>(), hs_last.data_ptr<scalar_t>(), B, L, H,
                           alpha, rho, zh, zd, current);
  });
  return {hseq, iseq, hs_last};
}

std::vector<at::Tensor> backward(at::Tensor g, c10::optional<at::Tensor> gi, at::Tensor ghs,
                                 at::Tensor hseq, at::Tensor i, at::Tensor h0, at::Tensor r,
                                 at::Tensor rs, double alpha, double rho, double zh, double zd,
                                 bool current, bool detach) {
  auto gd = at::empty_like(i);
  auto gi0 = at::zeros_like(h0);
  auto gh0 = at::zeros_like(h0);
  auto ghs0 = ghs.clone();
  auto gb = at::zeros_like(h0);
  const int64_t B = i.size(0), L = i.size(1), H = i.size(2);
  AT_DISPATCH_FLOATING_TYPES(i.scalar_type(), "src_backward", [&] {
    backward_rows<scalar_t>(g.data_ptr<scalar_t>(),
                            gi.has_value() ? gi->data_ptr<scalar_t>() : nullptr,
                            hseq.data_ptr<scalar_t>(), i.data_ptr<scalar_t>(),
                            h0.data_ptr<scalar_t>(), r.data_ptr<scalar_t>(),
                            rs.data_ptr<scalar_t>(), gd.data_ptr<scalar_t>(),
                            gi0.data_ptr<scalar_t>(), gb.data_ptr<scalar_t>(),
                            gh0.data_ptr<scalar_t>(), ghs0.data_ptr<scalar_t>(), B, L, H, alpha,
                            rho, zh, zd, current, detach);
  });
  return {gd, gi0, gb.sum(0), gh0, ghs0};
}
"""


@functools.cache
def _cpu_kernel():
    """The fused loop (:data:`_CPP`), built on first use (:func:`load_cpu_extension`; None where
    it cannot be)."""
    return load_cpu_extension("bistable_src_loop", _CPP, ["forward", "backward"])


@functools.cache
def _triton_kernel():
    """:mod:`bistable.units.src_triton` when Triton imports (>= 3.6), else :class:`EagerLoop`
    with a warning, once: ``compile_loop`` is a speed option, and the GPU runs the PyTorch loop
    without it, as the MRUs run the PyTorch scan."""
    try:
        from . import src_triton
    except ImportError as err:
        warnings.warn(f"compile_loop: the SRC's fused CUDA loop is unavailable ({err}); running "
                      "the PyTorch loop", stacklevel=4)
        return EagerLoop
    return src_triton


def _loop(d: Tensor, compiled: bool):
    """The loop for ``d``: when ``compiled`` (float32/64) the C++ kernel on CPU, the Triton
    kernel (:mod:`bistable.units.src_triton`) on CUDA; otherwise :class:`EagerLoop`."""
    if not compiled or d.dtype not in (torch.float32, torch.float64):
        return EagerLoop
    if d.device.type == "cpu":
        return _cpu_kernel() or EagerLoop  # None: not buildable here (warned once)
    if d.device.type == "cuda":
        return _triton_kernel()
    return EagerLoop


# the operators' schemas are read from these annotations (evaluated: no `from __future__ import
# annotations` in this module; Optional in typing's spelling, as every torch >= 2.4 reads it)
@torch.library.custom_op("bistable::src_loop", mutates_args=())
def src_loop(d: Tensor, i0: Tensor, bias: Tensor, h0: Tensor, hs0: Tensor, r: Tensor,
             r_s: Tensor, alpha: float, rho: float, z_hyp: float, z_dep: float,
             gate_current: bool, detach: bool, compiled: bool) -> tuple[Tensor, Tensor, Tensor]:
    """``h`` and ``i`` ``(B, T, H)`` and ``h_s[T]`` ``(B, H)`` from the drive ``d`` ``(B, T, H)``,
    the state ``(i0, h0, hs0)`` and per-neuron ``bias, r, r_s`` ``(H,)`` (one dtype and device);
    ``detach`` is the backward's."""
    check_operands(("d", d), 3)
    B, _, H = d.shape
    check_operands(("d", d), 3, i0=(i0, (B, H)), bias=(bias, (H,)), h0=(h0, (B, H)),
                   hs0=(hs0, (B, H)), r=(r, (H,)), r_s=(r_s, (H,)))
    loop = _loop(d, compiled)
    return loop.forward(d.contiguous(), i0.contiguous(), h0.contiguous(), hs0.contiguous(),
                        r.contiguous(), r_s.contiguous(), bias.expand(r.shape).contiguous(),
                        alpha, rho, z_hyp, z_dep, gate_current)


@src_loop.register_fake
def _src_loop_shapes(d, i0, bias, h0, hs0, r, r_s, alpha, rho, z_hyp, z_dep, gate_current,
                     detach, compiled):
    return torch.empty_like(d), torch.empty_like(d), torch.empty_like(hs0)


@torch.library.custom_op("bistable::src_loop_backward", mutates_args=())
def src_loop_backward(grad_h: Tensor, grad_i: Optional[Tensor], grad_hs: Tensor,  # noqa: UP045
                      h: Tensor, i: Tensor, h0: Tensor, r: Tensor, r_s: Tensor, alpha: float,
                      rho: float, z_hyp: float, z_dep: float, gate_current: bool, detach: bool,
                      compiled: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients into ``d``, ``i0``, ``bias``, ``h0`` and ``hs0`` (the last two zero when
    ``detach``); ``grad_i`` (None: zero) is the gradient into the returned ``i``."""
    loop = _loop(i, compiled)
    grad_h, grad_hs, h, i, h0, r, r_s = (t.contiguous()
                                         for t in (grad_h, grad_hs, h, i, h0, r, r_s))
    grad_i = None if grad_i is None else grad_i.contiguous()
    gd, gi0, gb, gh0, ghs0 = loop.backward(grad_h, grad_i, grad_hs, h, i, h0, r, r_s, alpha,
                                           rho, z_hyp, z_dep, gate_current, detach)
    if detach:
        gh0, ghs0 = torch.zeros_like(h0), torch.zeros_like(h0)
    return gd, gi0, gb, gh0, ghs0


@src_loop_backward.register_fake
def _src_loop_backward_shapes(grad_h, grad_i, grad_hs, h, i, h0, r, r_s, alpha, rho, z_hyp,
                              z_dep, gate_current, detach, compiled):
    return (torch.empty_like(i), torch.empty_like(h0), torch.empty_like(r), torch.empty_like(h0),
            torch.empty_like(h0))


def _save(ctx, inputs, output):
    _, _, bias, h0, hs0, r, r_s, *ctx.consts = inputs
    h, i, _ = output
    ctx.save_for_backward(i, h, h0, r, r_s, bias, hs0)
    ctx.set_materialize_grads(False)  # no (B, T, H) zeros for an unused i (the usual case)


def _backward(ctx, grad_h, grad_i, grad_hs):
    i, h, h0, r, r_s, bias, hs0 = ctx.saved_tensors
    alpha, rho, z_hyp, z_dep, gate_current, detach, compiled = ctx.consts
    grad_h = torch.zeros_like(h) if grad_h is None else grad_h
    grad_hs = torch.zeros_like(h0) if grad_hs is None else grad_hs
    if recording():  # create_graph=True: the gradient into i by the recorded steps, then
        # through the integration's scan. i is this operator's output: the aliases of the
        # operator's inputs bias, h0, hs0 take only their direct gradients, not those through i
        inputs = (i, *(t.view_as(t) for t in (bias, h0, hs0)))
        outputs = _differentiable_steps(*inputs, r, r_s, rho, z_hyp, z_dep, gate_current, detach)
        g_i, gb, gh0, ghs0 = recorded_grads(outputs, inputs, (grad_h, grad_hs),
                                            (True, *ctx.needs_input_grad[2:5]))
        g_i = torch.zeros_like(i) if g_i is None else g_i
        q = integrate(g_i if grad_i is None else g_i + grad_i, None, alpha, reverse=True)
        return (q, alpha * q[:, 0], gb, gh0, ghs0) + (None,) * 9
    gd, gi0, gb, gh0, ghs0 = src_loop_backward(grad_h, grad_i, grad_hs, h, i, h0, r, r_s, alpha,
                                               rho, z_hyp, z_dep, gate_current, detach, compiled)
    state = (None, None) if detach else (gh0, ghs0)
    return (gd, gi0, gb, *state) + (None,) * 9


src_loop.register_autograd(_backward, setup_context=_save)
