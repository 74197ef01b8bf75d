"""The BRC/nBRC time loop (:mod:`bistable.units.brc`) fused into one C++ pass each way on CPU.

From the input projections ``u[t] = [U_a x_t; U_c x_t; U x_t]`` ``(B, T, 3H)``, the gate bias
``b = [b_a; b_c]`` and the recurrent weights (``w = [w_a; w_c]`` ``(2H,)`` for the BRC, ``W =
[W_a; W_c]`` ``(2H, H)`` for the nBRC; ``R h`` stands for ``w ⊙ [h; h]`` or ``W h``)::

    [g_a; g_c] = u_g[t] + R h[t-1] + b,   a = 1 + tanh(g_a),   c = σ(g_c)
    k[t] = tanh(u_x[t] + a ⊙ h[t-1]),     h[t] = c ⊙ h[t-1] + (1 − c) ⊙ k[t]

The forward keeps ``h`` only; the backward recomputes the gates and runs the reverse recurrence
(``e`` is the gradient reaching ``h[t]``, from the output and from step t+1)::

    δ_x = e (1 − c)(1 − k²)              (∂L/∂u_x[t])
    δ_a = δ_x h[t-1] (1 − (a − 1)²)      (∂L/∂u_a[t], ∂L/∂b_a)
    δ_c = e (h[t-1] − k) c (1 − c)       (∂L/∂u_c[t], ∂L/∂b_c)
    e[t-1] = ∂L/∂y[t-1] + e c + δ_x a + Rᵀ [δ_a; δ_c]

and ``∂L/∂w = Σ [δ_a; δ_c] ⊙ [h[t-1]; h[t-1]]`` (BRC) or ``∂L/∂W = Σ [δ_a; δ_c] h[t-1]ᵀ`` (nBRC),
one reduction over all steps after the loop. The kernel (:data:`_CPP`, built once per machine by
``torch.utils.cpp_extension``: a C++ compiler and ninja, about 40 s the first time, then cached on
disk) runs batch rows in parallel and neurons in AVX2/AVX-512 lanes; the unit's eager loop
(``BRC._cell`` under autograd) is the reference it is tested against.
"""

import functools

import torch
from torch import Tensor

from ..scan.autograd import recorded_grads, recording
from .base import check_operands, transforms_active
from .cpu_extension import load_cpu_extension

_CPP = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

using at::vec::Vectorized;

// g (2H) += R h: diagonal w (2H) or the transposed full matrix WT (H, 2H).
template <typename T>
void recurrent(const T* w, bool full, const T* h, T* g, int64_t H) {
  using V = Vectorized<T>;
  if (!full) {
    for (int64_t j = 0; j < 2 * H; ++j) g[j] += w[j] * h[j % H];
    return;
  }
  for (int64_t k = 0; k < H; ++k) {
    const V hk(h[k]);
    const T* row = w + k * 2 * H;
    for (int64_t j = 0; j < 2 * H; j += V::size()) {
      const int64_t n = std::min<int64_t>(V::size(), 2 * H - j);
      (V::loadu(g + j, n) + V::loadu(row + j, n) * hk).store(g + j, n);
    }
  }
}

// The gates of one step, into g: [a; c] from u_g + R hp + b.
template <typename T>
void gates(const T* u, const T* b, const T* w, bool full, const T* hp, T* g, int64_t H) {
  using V = Vectorized<T>;
  for (int64_t j = 0; j < 2 * H; ++j) g[j] = u[j] + b[j];
  recurrent(w, full, hp, g, H);
  for (int64_t j = 0; j < H; j += V::size()) {
    const int64_t n = std::min<int64_t>(V::size(), H - j);
    (V(1) + V::loadu(g + j, n).tanh()).store(g + j, n);  // a
    (V(0.5) + V(0.5) * (V(0.5) * V::loadu(g + H + j, n)).tanh()).store(g + H + j, n);  // c
  }
}

template <typename T>
void forward_rows(const T* u, const T* h0, const T* b, const T* w, bool full, T* hseq,
                  int64_t B, int64_t L, int64_t H) {
  using V = Vectorized<T>;
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    std::vector<T> g(2 * H);
    for (int64_t r = b0; r < b1; ++r) {
      const T* hp = h0 + r * H;
      for (int64_t t = 0; t < L; ++t) {
        const T* ut = u + (r * L + t) * 3 * H;
        T* ht = hseq + (r * L + t) * H;
        gates(ut, b, w, full, hp, g.data(), H);
        for (int64_t j = 0; j < H; j += V::size()) {
          const int64_t n = std::min<int64_t>(V::size(), H - j);
          V h = V::loadu(hp + j, n), c = V::loadu(g.data() + H + j, n);
          V k = (V::loadu(ut + 2 * H + j, n) + V::loadu(g.data() + j, n) * h).tanh();
          (k + c * (h - k)).store(ht + j, n);
        }
        hp = ht;
      }
    }
  });
}

// du (B, L, 3H) = [δ_a; δ_c; δ_x] per step, gh0 = the gradient into h0.
template <typename T>
void backward_rows(const T* gy, const T* u, const T* h0, const T* hseq, const T* b, const T* w,
                   const T* wt, bool full, T* du, T* gh0, int64_t B, int64_t L, int64_t H) {
  using V = Vectorized<T>;
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    std::vector<T> g(2 * H), e(H);
    for (int64_t r = b0; r < b1; ++r) {
      std::fill(e.begin(), e.end(), T(0));
      for (int64_t t = L - 1; t >= 0; --t) {
        const int64_t row = r * L + t;
        const T* ut = u + row * 3 * H;
        const T* hp = t > 0 ? hseq + (row - 1) * H : h0 + r * H;
        T* d = du + row * 3 * H;
        gates(ut, b, wt, full, hp, g.data(), H);
        for (int64_t j = 0; j < H; j += V::size()) {
          const int64_t n = std::min<int64_t>(V::size(), H - j);
          V h = V::loadu(hp + j, n), a = V::loadu(g.data() + j, n);
          V c = V::loadu(g.data() + H + j, n);
          V k = (V::loadu(ut + 2 * H + j, n) + a * h).tanh();
          V ej = V::loadu(gy + row * H + j, n) + V::loadu(e.data() + j, n);
          V dx = ej * (V(1) - c) * (V(1) - k * k);
          V am1 = a - V(1);
          (dx * h * (V(1) - am1 * am1)).store(d + j, n);
          (ej * (h - k) * c * (V(1) - c)).store(d + H + j, n);
          dx.store(d + 2 * H + j, n);
          (ej * c + dx * a).store(e.data() + j, n);
        }
        if (!full) {
          for (int64_t j = 0; j < H; ++j) e[j] += w[j] * d[j] + w[H + j] * d[H + j];
        } else {
          for (int64_t i = 0; i < 2 * H; ++i) {  // e += Wᵀ [δ_a; δ_c], W (2H, H) row-major
            const V di(d[i]);
            const T* wrow = w + i * H;
            for (int64_t j = 0; j < H; j += V::size()) {
              const int64_t n = std::min<int64_t>(V::size(), H - j);
              (V::loadu(e.data() + j, n) + V::loadu(wrow + j, n) * di).store(e.data() + j, n);
            }
          }
        }
      }
      std::copy(e.begin(), e.end(), gh0 + r * H);
    }
  });
}

at::Tensor forward(at::Tensor u, at::Tensor h0, at::Tensor b, at::Tensor wt, bool full) {
  const int64_t B = u.size(0), L = u.size(1), H = h0.size(1);
  auto hseq = at::empty({B, L, H}, u.options());
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "brc_forward", [&] {
    forward_rows<scalar_t>(u.data_ptr<scalar_t>(), h0.data_ptr<scalar_t>(),
                           b.data_ptr<scalar_t>(), wt.data_ptr<scalar_t>(), full,
                           hseq.data_ptr<scalar_t>(), B, L, H);
  });
  return hseq;
}

std::vector<at::Tensor> backward(at::Tensor gy, at::Tensor u, at::Tensor h0, at::Tensor hseq,
                                 at::Tensor b, at::Tensor w, at::Tensor wt, bool full) {
  const int64_t B = u.size(0), L = u.size(1), H = h0.size(1);
  auto du = at::empty_like(u);
  auto gh0 = at::empty_like(h0);
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "brc_backward", [&] {
    backward_rows<scalar_t>(gy.data_ptr<scalar_t>(), u.data_ptr<scalar_t>(),
                            h0.data_ptr<scalar_t>(), hseq.data_ptr<scalar_t>(),
                            b.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(),
                            wt.data_ptr<scalar_t>(), full, du.data_ptr<scalar_t>(),
                            gh0.data_ptr<scalar_t>(), B, L, H);
  });
  return {du, gh0};
}
"""


def gate_values(u_g: Tensor, h: Tensor, bias: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """The gates ``(a, c)`` ``(N, H)`` of SPEC.md §5 from their input projections ``u_g`` =
    [U_a x; U_c x] ``(N, 2H)``, the previous state ``h`` and the recurrent weights: ``w``
    ``(2H,)``, [w_a ⊙ h; w_c ⊙ h] (BRC), or ``W`` ``(2H, H)``, ``h Wᵀ`` (nBRC)."""
    H = h.shape[1]
    g = u_g + (w * h.repeat(1, 2) if w.dim() == 1 else h @ w.T) + bias
    return 1 + torch.tanh(g[:, :H]), torch.sigmoid(g[:, H:])


def cell(u_t: Tensor, h: Tensor, bias: Tensor, w: Tensor) -> Tensor:
    """One update, ``h_t = c ⊙ h + (1 − c) ⊙ tanh(U x_t + a ⊙ h)``, from u_t = [U_a x_t; U_c x_t;
    U x_t] ``(B, 3H)``: the plain PyTorch step that the fused loop computes."""
    H = h.shape[1]
    a, c = gate_values(u_t[:, : 2 * H], h, bias, w)
    return c * h + (1 - c) * torch.tanh(u_t[:, 2 * H :] + a * h)


def _pytorch_loop(u: Tensor, bias: Tensor, w: Tensor, h0: Tensor) -> Tensor:
    """:func:`cell` over the sequence: what the operators compute where the C++ loop cannot be
    built (a graph ``torch.compile`` traced before it knew)."""
    h, out = h0, []
    for u_t in u.unbind(1):
        h = cell(u_t, h, bias, w)
        out.append(h)
    return torch.stack(out, dim=1)


@functools.cache
def _cpu_kernel():
    """The fused loop (:data:`_CPP`), built on first use (:func:`load_cpu_extension`; None where
    it cannot be)."""
    return load_cpu_extension("bistable_brc_loop", _CPP, ["forward", "backward"])


def _kernel_weights(w: Tensor) -> Tensor:
    """The recurrent weights as the forward reads them: ``w`` ``(2H,)``, or ``Wᵀ`` ``(H, 2H)``."""
    return w.contiguous() if w.dim() == 1 else w.T.contiguous()


# the operators' schemas are read from these annotations (evaluated: no `from __future__ import
# annotations` in this module); as operators they are opaque nodes with known output shapes to
# ``torch.compile``, which then traces a BRC network in one graph
@torch.library.custom_op("bistable::brc_loop", mutates_args=())
def brc_loop(u: Tensor, bias: Tensor, w: Tensor, h0: Tensor) -> Tensor:
    """``h`` ``(B, T, H)`` from ``u`` ``(B, T, 3H)``, the gate bias ``(2H,)``, the recurrent
    weights (``(2H,)`` diagonal or ``(2H, H)`` full) and ``h0`` ``(B, H)``; CPU, float32/64."""
    check_operands(("u", u), 3)
    if u.device.type != "cpu" or u.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"u: expected a float32 or float64 CPU tensor, got {u.dtype} on "
                         f"{u.device}")
    if u.shape[2] % 3:
        raise ValueError(f"u: expected 3H features (the drives of z, r and the candidate), got "
                         f"{u.shape[2]}")
    B, T, H = u.shape[0], u.shape[1], u.shape[2] // 3
    check_operands(("u", u), 3, u=(u, (B, T, 3 * H)), h0=(h0, (B, H)), bias=(bias, (2 * H,)),
                   w=(w, (2 * H,) if w.dim() == 1 else (2 * H, H)))
    kernel = _cpu_kernel()
    if kernel is None:  # not buildable here (warned once): the same loop in PyTorch
        return _pytorch_loop(u, bias, w, h0)
    return kernel.forward(u.contiguous(), h0.contiguous(), bias.contiguous(),
                          _kernel_weights(w), w.dim() == 2)


@brc_loop.register_fake
def _brc_loop_shapes(u, bias, w, h0):
    return u.new_empty(h0.shape[0], u.shape[1], h0.shape[1])


@torch.library.custom_op("bistable::brc_loop_backward", mutates_args=())
def brc_loop_backward(grad_h: Tensor, u: Tensor, bias: Tensor, w: Tensor, h0: Tensor,
                      h: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Gradients into ``u``, ``bias``, ``w`` and ``h0`` (the reverse recurrence above)."""
    full, H, kernel = w.dim() == 2, h0.shape[1], _cpu_kernel()
    if kernel is None:  # the PyTorch loop's gradients, by torch.func (which works below the
        _, pull = torch.func.vjp(_pytorch_loop, u, bias, w, h0)  # autograd key, as here)
        return pull(grad_h)
    du, gh0 = kernel.backward(grad_h.contiguous(), u.contiguous(), h0.contiguous(),
                              h.contiguous(), bias.contiguous(), w.contiguous(),
                              _kernel_weights(w), full)
    d_gates = du[..., : 2 * H]
    h_prev = torch.cat([h0.unsqueeze(1), h[:, :-1]], dim=1)
    if full:  # ∂L/∂W = Σ_t [δ_a; δ_c] h[t-1]ᵀ, one matmul over all steps
        gw = d_gates.reshape(-1, 2 * H).T @ h_prev.reshape(-1, H)
    else:
        gw = (d_gates * h_prev.repeat(1, 1, 2)).sum((0, 1))
    return du, d_gates.sum((0, 1)), gw, gh0


@brc_loop_backward.register_fake
def _brc_loop_backward_shapes(grad_h, u, bias, w, h0, h):
    return torch.empty_like(u), torch.empty_like(bias), torch.empty_like(w), torch.empty_like(h0)


def _save(ctx, inputs, output):
    ctx.save_for_backward(*inputs, output)


def _backward(ctx, grad_h):
    if recording():  # create_graph=True
        u, bias, w, h0, _ = ctx.saved_tensors  # recomputed in plain operations, recorded
        return tuple(recorded_grads((_pytorch_loop(u, bias, w, h0),), (u, bias, w, h0),
                                    (grad_h,), ctx.needs_input_grad[:4]))
    return brc_loop_backward(grad_h, *ctx.saved_tensors)


brc_loop.register_autograd(_backward, setup_context=_save)


def supported(x: Tensor) -> bool:
    """Whether the fused loop runs ``x``: a float32/64 tensor on the CPU, where the loop builds
    (else, and inside ``torch.func`` transforms, the unit runs its PyTorch loop;
    :func:`load_cpu_extension` warns once where it cannot build). While
    ``torch.compile`` traces, the build is not looked up (the operator is opaque to it, and runs
    :func:`cell` step by step where the loop cannot be built)."""
    if (x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64)
            or transforms_active()):  # torch.func: the PyTorch loop, whose operations it maps
        return False
    return torch.compiler.is_compiling() or _cpu_kernel() is not None
