"""The Spiking Recurrent Cell (SRC, De Geeter, Ernst, Drion 2024), SPEC.md §6.

Per layer, with input spikes ``s_in[t]`` and learned feed-forward weights ``W`` (no recurrent
weights between neurons)::

    i[t]   = α · i[t-1] + W s_in[t]                           leaky input integration
    x[t]   = ρ · tanh(i[t] / ρ)                               saturation
    h[t]   = tanh(x[t] + r · h[t-1] + r_s · h_s[t-1] + b)     fast +, slow − feedback
    z_s[t] = z_hyp if g[t] ≤ 0.5 else z_dep                   g = h[t-1] (default) or h[t]
    h_s[t] = z_s[t] · h_s[t-1] + (1 − z_s[t]) · h[t-1]
    out[t] = ReLU(h[t])                                       the spike; backward: identity

How it is computed (the efficient time loop):

- ``i`` over all steps is one matrix product ``W s_in`` and one :func:`bistable.scan.linear_scan`
  with constant ``a = α``;
- the saturation and the ``(h, h_s)`` loop run as one custom autograd function: the forward
  builds no graph (it keeps ``i``, ``h`` and, in the Python loops, the gates ``z_s``), and the
  backward is the hand-written reverse recurrence (the gate ``z_s`` is piecewise constant, so it
  carries no gradient)::

      δ[t]      = (∂L/∂h[t] + c_h[t]) · (1 − h[t]²)                  (∂L/∂b gathers δ)
      c_h[t-1]  = r · δ[t] + (1 − z_s[t]) · c_s[t]                    (gradient into h[t-1])
      c_s[t-1]  = r_s · δ[t] + z_s[t] · c_s[t]                        (gradient into h_s[t-1])
      ∂L/∂i[t]  = δ[t] · (1 − tanh²(i[t] / ρ))                        (then the scan's backward)

  ``detach_recurrent=True`` cuts both recurrent paths (``c_h = c_s = 0``): truncated, one-step BPTT.
  ``compile_loop=True`` fuses the loop. On CPU (float32/64) it is a small C++ kernel
  (:data:`_CPP`, built once by ``torch.utils.cpp_extension`` — needs a C++ compiler and ninja,
  about 30 s the first time, then cached on disk): one pass over the sequence each way, batch rows
  in parallel, neurons in AVX2/AVX-512 lanes. On CUDA it is one Triton kernel each way
  (:mod:`bistable.units.src_triton`: a program per batch row and block of neurons walks all T
  steps with the state in registers). Other devices and dtypes run the eager loop. It is opt-in;
  in the training benchmark (``results/src.md``, 1 CPU thread) the C++ loop made a full step
  about 1.45× faster than the eager loop.

``r`` and ``r_s`` are per-neuron buffers (not learned) so that the noise evaluation can draw each
neuron's values (:meth:`SRC.perturb_`); ``train_noise`` draws them anew at every training forward
call instead (noise-aware training). The state is ``(i, h, h_s)``, each ``(B, hidden_size)``,
starting at rest: ``i = 0`` and ``h = h_s = h*`` with ``h* = tanh((r + r_s) h* + b)`` solved
numerically (h* ≈ −0.9027 for the defaults).
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

from ..scan import linear_scan
from .base import (
    check_input,
    check_number,
    check_sizes,
    check_state,
    check_step_input,
    linear_schedule,
)

GATES = ("previous", "current")


class SpikeReLU(torch.autograd.Function):
    """``ReLU(h)`` forward, identity backward (the SRC's spike; SPEC.md §6)."""

    @staticmethod
    def forward(ctx, h):
        return h.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        return grad


def rest_state(r: torch.Tensor, r_s: torch.Tensor, bias: torch.Tensor, iters: int = 60):
    """The fixed point ``h* = tanh((r + r_s) h* + b)`` per neuron (input 0, ``h = h_s``).

    Bisection on ``[-1, 1]`` in float64 (``f(h) = h − tanh(...)`` changes sign there; the root is
    unique whenever ``r + r_s < 1``, as for the defaults). Returns a ``(H,)`` tensor in ``bias``'s
    dtype.
    """
    k = (r + r_s).detach().double()
    b = bias.detach().double()
    lo, hi = -torch.ones_like(b), torch.ones_like(b)
    for _ in range(iters):
        mid = (lo + hi) / 2
        above = mid - torch.tanh(k * mid + b) > 0
        hi, lo = torch.where(above, mid, hi), torch.where(above, lo, mid)
    return ((lo + hi) / 2).to(bias.dtype)


def _forward_steps(u, h, hs, r, r_s, z_hyp: float, z_dep: float, gate_current: bool):
    """The ``(h, h_s)`` loop over ``u`` ``(B, T, H)`` from ``(h, hs)``: returns ``h`` and the gate
    ``z_s`` ``(B, T, H)``, and the last ``h``, ``h_s``."""
    hseq, zseq = [], []
    for k in range(u.shape[1]):
        h_new = torch.tanh(torch.addcmul(torch.addcmul(u[:, k], r, h), r_s, hs))
        z = torch.where((h_new if gate_current else h) <= 0.5, z_hyp, z_dep).to(h.dtype)
        hs = torch.lerp(h, hs, z)  # z · hs + (1 − z) · h
        h = h_new
        hseq.append(h)
        zseq.append(z)
    return torch.stack(hseq, 1), torch.stack(zseq, 1), h, hs


def _backward_steps(g_h, dtanh, z, c_h, c_s, r, r_s):
    """The reverse recurrence, ``t = T-1..0``: ``δ`` ``(B, T, H)`` and the gradients ``c_h``,
    ``c_s`` flowing into the initial state."""
    deltas = []
    for k in range(g_h.shape[1] - 1, -1, -1):
        d = (g_h[:, k] + c_h) * dtanh[:, k]
        zc = z[:, k] * c_s
        c_h = torch.addcmul(c_s - zc, r, d)  # r · δ + (1 − z) · c_s
        c_s = torch.addcmul(zc, r_s, d)  # r_s · δ + z · c_s
        deltas.append(d)
    return torch.stack(deltas[::-1], 1), c_h, c_s


_CPP = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

using at::vec::Vectorized;

// One layer's (h, h_s) loop over (B, T, H) tensors, the saturation u = rho tanh(i / rho) + b
// included; batch rows run in parallel, neurons in vector lanes.
template <typename T>
void forward_rows(const T* i, const T* h0, const T* hs0, const T* r, const T* rs, const T* b,
                  T* hseq, T* hs_last, int64_t B, int64_t L, int64_t H, T rho, T zh, T zd,
                  bool current) {
  using V = Vectorized<T>;
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    std::vector<T> hs(H);
    for (int64_t n = b0; n < b1; ++n) {
      std::copy(hs0 + n * H, hs0 + (n + 1) * H, hs.begin());
      const T* hprev = h0 + n * H;
      for (int64_t t = 0; t < L; ++t) {
        const int64_t off = (n * L + t) * H;
        for (int64_t j = 0; j < H; j += V::size()) {
          const int64_t c = std::min<int64_t>(V::size(), H - j);
          V u = V(rho) * (V::loadu(i + off + j, c) / V(rho)).tanh() + V::loadu(b + j, c);
          V h = V::loadu(hprev + j, c), s = V::loadu(hs.data() + j, c);
          V hn = (u + V::loadu(r + j, c) * h + V::loadu(rs + j, c) * s).tanh();
          V z = V::blendv(V(zh), V(zd), (current ? hn : h) > V(0.5));
          (h + z * (s - h)).store(hs.data() + j, c);
          hn.store(hseq + off + j, c);
        }
        hprev = hseq + (n * L + t) * H;
      }
      std::copy(hs.begin(), hs.end(), hs_last + n * H);
    }
  });
}

// The reverse recurrence: gradients into i (through the saturation), b (per batch row), h0, hs0.
template <typename T>
void backward_rows(const T* g, const T* hseq, const T* i, const T* h0, const T* r, const T* rs,
                   T* gi, T* gb, T* gh0, T* ghs0, int64_t B, int64_t L, int64_t H, T rho, T zh,
                   T zd, bool current, bool detach) {
  using V = Vectorized<T>;
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t n = b0; n < b1; ++n) {
      T* ch = gh0 + n * H;  // running c_h, c_s; end as the gradients into h0, hs0
      T* cs = ghs0 + n * H;
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
          (d * (V(1) - th * th)).store(gi + off + j, c);
          (V::loadu(gb + n * H + j, c) + d).store(gb + n * H + j, c);
        }
      }
    }
  });
}

std::vector<at::Tensor> forward(at::Tensor i, at::Tensor h0, at::Tensor hs0, at::Tensor r,
                                at::Tensor rs, at::Tensor b, double rho, double zh, double zd,
                                bool current) {
  auto hseq = at::empty_like(i);
  auto hs_last = at::empty_like(hs0);
  const int64_t B = i.size(0), L = i.size(1), H = i.size(2);
  AT_DISPATCH_FLOATING_TYPES(i.scalar_type(), "src_forward", [&] {
    forward_rows<scalar_t>(i.data_ptr<scalar_t>(), h0.data_ptr<scalar_t>(),
                           hs0.data_ptr<scalar_t>(), r.data_ptr<scalar_t>(),
                           rs.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(),
                           hseq.data_ptr<scalar_t>(), hs_last.data_ptr<scalar_t>(), B, L, H,
                           rho, zh, zd, current);
  });
  return {hseq, hs_last};
}

std::vector<at::Tensor> backward(at::Tensor g, at::Tensor ghs, at::Tensor hseq, at::Tensor i,
                                 at::Tensor h0, at::Tensor r, at::Tensor rs, double rho,
                                 double zh, double zd, bool current, bool detach) {
  auto gi = at::empty_like(i);
  auto gh0 = at::zeros_like(h0);
  auto ghs0 = ghs.clone();
  auto gb = at::zeros_like(h0);
  const int64_t B = i.size(0), L = i.size(1), H = i.size(2);
  AT_DISPATCH_FLOATING_TYPES(i.scalar_type(), "src_backward", [&] {
    backward_rows<scalar_t>(g.data_ptr<scalar_t>(), hseq.data_ptr<scalar_t>(),
                            i.data_ptr<scalar_t>(), h0.data_ptr<scalar_t>(),
                            r.data_ptr<scalar_t>(), rs.data_ptr<scalar_t>(),
                            gi.data_ptr<scalar_t>(), gb.data_ptr<scalar_t>(),
                            gh0.data_ptr<scalar_t>(), ghs0.data_ptr<scalar_t>(), B, L, H, rho,
                            zh, zd, current, detach);
  });
  return {gi, gb.sum(0), gh0, ghs0};
}
"""


@functools.cache
def _cpu_kernel():
    """The fused CPU loop (:data:`_CPP`), built once per machine by ``torch.utils.cpp_extension``
    (cached on disk); AVX2 or AVX-512 vectors (with SLEEF's ``tanh``) where the CPU has them."""
    from torch.utils.cpp_extension import load_inline

    isa = torch.backends.cpu.get_cpu_capability()
    flags = ["-O3"] + {
        "AVX2": ["-mavx2", "-mfma"],
        "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma"],
    }.get(isa, [])
    if len(flags) > 1:
        flags += [f"-DCPU_CAPABILITY_{isa}", f"-DCPU_CAPABILITY={isa}"]
    return load_inline(f"bistable_src_loop_{isa.lower()}", _CPP, functions=["forward", "backward"],
                       extra_cflags=flags)


def _fused_kernel(i: torch.Tensor, compiled: bool):
    """The fused loop for ``i``'s device when ``compiled`` (float32/64): the C++ kernel on CPU,
    the Triton kernel (:mod:`bistable.units.src_triton`) on CUDA; None: the eager loop."""
    if not compiled or i.dtype not in (torch.float32, torch.float64):
        return None
    if i.device.type == "cpu":
        return _cpu_kernel()
    if i.device.type == "cuda":
        from . import src_triton

        return src_triton
    return None


class _Recurrence(torch.autograd.Function):
    """The saturation and the ``(h, h_s)`` loop: ``i`` ``(B, T, H)`` → ``h`` ``(B, T, H)``,
    ``h_s[T]``, with ``u = ρ tanh(i / ρ) + b``.

    ``compiled=False`` runs :func:`_forward_steps` / :func:`_backward_steps` eagerly over all T
    steps. ``compiled=True`` runs the fused loop of :func:`_fused_kernel` where there is one
    (saturation included, one pass over the sequence each way).
    """

    @staticmethod
    def forward(ctx, i, bias, h0, hs0, r, r_s, rho, z_hyp, z_dep, gate_current, detach,
                compiled):
        # the gate values rounded as the eager loop's torch.where(cond, z_hyp, z_dep) rounds them
        z_hyp, z_dep = torch.tensor([z_hyp, z_dep], dtype=torch.get_default_dtype()).tolist()
        ctx.consts = (rho, z_hyp, z_dep, gate_current)
        ctx.detach, ctx.kernel = detach, _fused_kernel(i, compiled)
        if ctx.kernel is not None:
            i, h0, hs0 = i.contiguous(), h0.contiguous(), hs0.contiguous()
            hseq, hs = ctx.kernel.forward(i, h0, hs0, r.contiguous(), r_s.contiguous(),
                                          bias.expand(r.shape).contiguous(), *ctx.consts)
            ctx.save_for_backward(i, hseq, h0, r, r_s)
            return hseq, hs
        u = rho * torch.tanh(i / rho) + bias
        hseq, zseq, _, hs = _forward_steps(u, h0, hs0, r, r_s, z_hyp, z_dep, gate_current)
        ctx.save_for_backward(i, hseq, zseq, r, r_s)
        return hseq, hs

    @staticmethod
    def backward(ctx, g_h, g_hs):
        rho = ctx.consts[0]
        grad_b = ctx.needs_input_grad[1]
        none = (None,) * 8
        if ctx.kernel is not None:
            i, hseq, h0, r, r_s = ctx.saved_tensors
            g_h = torch.zeros_like(hseq) if g_h is None else g_h.contiguous()
            g_hs = torch.zeros_like(h0) if g_hs is None else g_hs.contiguous()
            gi, gb, gh0, ghs0 = ctx.kernel.backward(g_h, g_hs, hseq, i, h0, r, r_s,
                                                    *ctx.consts, ctx.detach)
            if ctx.detach:
                gh0 = ghs0 = None
            return (gi, gb if grad_b else None, gh0, ghs0) + none
        i, hseq, zseq, r, r_s = ctx.saved_tensors
        g_h = torch.zeros_like(hseq) if g_h is None else g_h
        dtanh = torch.addcmul(torch.ones_like(hseq), hseq, hseq, value=-1)
        if ctx.detach:
            d, c_h, c_s = g_h * dtanh, None, None
        else:
            c_h = torch.zeros_like(hseq[:, 0])
            c_s = torch.zeros_like(c_h) if g_hs is None else g_hs
            d, c_h, c_s = _backward_steps(g_h, dtanh, zseq, c_h, c_s, r, r_s)
        gi = d * (1 - torch.tanh(i / rho).square())
        return (gi, d.sum((0, 1)) if grad_b else None, c_h, c_s) + none


class SRC(nn.Module):
    """A layer of Spiking Recurrent Cells (SPEC.md §6; equations in the module docstring).

    Args:
        input_size, hidden_size: ``F`` input spikes per step, ``H`` neurons.
        alpha: input leak α (0.9). rho: saturation ρ (3). r, r_s: fast and slow feedback gains
            (2, −7), stored per neuron (see :meth:`perturb_`). z_hyp, z_dep: slow gate values below
            and above h = 0.5 (0.9, 0).
        bias: ``b`` per neuron (−6). learn_bias: learn it (starting at most ``bias_max``), its
            forward value clamped to ``≤ bias_max`` (−4) with a straight-through gradient.
        detach_recurrent: detach ``h[t-1]``, ``h_s[t-1]`` in the recurrence (default: full BPTT).
        gate: ``"previous"`` gates ``z_s[t]`` on ``h[t-1]`` (the authors' code, causal; default) or
            ``"current"`` on ``h[t]`` (the paper's text).
        compile_loop: run the loop fused: a C++ kernel on CPU, a Triton kernel on CUDA
            (default: eager; see the module docstring).
        train_noise: noise-aware training: in training mode, every forward call uses
            ``r + σ|r|·ε``, ``r_s + σ|r_s|·ε'`` per neuron (ε, ε' standard normal, drawn anew at
            each call, like dropout) with ``σ = train_noise``, from the rest state of the stored
            values; evaluation uses ``r``, ``r_s`` as stored (default 0: off).

    ``W`` (``hidden_size × input_size``, no bias) starts as ``nn.Linear``'s default.
    Shapes: ``forward(x (B, T, F), state) -> (out (B, T, H), (i, h, h_s))``, each state
    ``(B, H)``; ``step(x_t (B, F), state) -> (out_t (B, H), state)``.
    """

    def __init__(self, input_size: int, hidden_size: int, *, alpha: float = 0.9, rho: float = 3.0,
                 r: float = 2.0, r_s: float = -7.0, z_hyp: float = 0.9, z_dep: float = 0.0,
                 bias: float = -6.0, learn_bias: bool = False, bias_max: float = -4.0,
                 detach_recurrent: bool = False, gate: str = "previous",
                 compile_loop: bool = False, train_noise: float = 0.0):
        super().__init__()
        check_sizes(input_size=input_size, hidden_size=hidden_size)
        if gate not in GATES:
            raise ValueError(f"gate: expected one of {GATES}, got {gate!r}")
        unit = (lambda v: 0 <= v <= 1, "a number in [0, 1]")
        for name, value, (ok, expected) in (
                ("alpha", alpha, unit), ("z_hyp", z_hyp, unit), ("z_dep", z_dep, unit),
                ("rho", rho, (lambda v: v > 0, "a finite number > 0")),
                ("train_noise", train_noise, (lambda v: v >= 0, "a relative σ >= 0"))):
            check_number(value, name, ok, expected)
        for name, value in (("r", r), ("r_s", r_s), ("bias", bias), ("bias_max", bias_max)):
            check_number(value, name)
        if learn_bias and bias > bias_max:
            raise ValueError(f"bias: expected at most bias_max = {bias_max} when learned "
                             f"(learn_bias=True), got {bias}")
        self.input_size, self.hidden_size = input_size, hidden_size
        self.alpha, self.rho, self.z_hyp, self.z_dep = alpha, rho, z_hyp, z_dep
        self.r_mean, self.r_s_mean, self.bias_max = r, r_s, bias_max
        self.detach_recurrent, self.gate, self.compile_loop = detach_recurrent, gate, compile_loop
        self.train_noise = float(train_noise)
        self.weight = nn.Parameter(torch.empty(hidden_size, input_size))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Linear's default
        self.register_buffer("r", torch.full((hidden_size,), float(r)))
        self.register_buffer("r_s", torch.full((hidden_size,), float(r_s)))
        b = torch.full((hidden_size,), float(bias))
        if learn_bias:
            self.bias = nn.Parameter(b)
        else:
            self.register_buffer("bias", b)

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, alpha={self.alpha}, rho={self.rho}, "
                f"r={self.r_mean}, r_s={self.r_s_mean}, gate={self.gate!r}, "
                f"learn_bias={isinstance(self.bias, nn.Parameter)}, "
                f"detach_recurrent={self.detach_recurrent}, train_noise={self.train_noise}")

    def effective_bias(self) -> torch.Tensor:
        """``b``, clamped to ``≤ bias_max`` when learned (straight-through: the gradient is 1)."""
        if not isinstance(self.bias, nn.Parameter):
            return self.bias
        return self.bias - (self.bias - self.bias_max).clamp(min=0).detach()

    @torch.no_grad()
    def perturb_(self, sigma: float, generator: torch.Generator | None = None) -> SRC:
        """Draw each neuron's ``r ~ N(r, (σ|r|)²)`` and ``r_s ~ N(r_s, (σ|r_s|)²)`` around the
        constructor's values (σ relative: 0.1 is 10 % of the magnitude; σ = 0 restores them)."""
        check_number(sigma, "sigma", lambda v: v >= 0, "a relative σ >= 0")
        for buf, mean in ((self.r, self.r_mean), (self.r_s, self.r_s_mean)):
            noise = torch.randn(buf.shape, generator=generator, dtype=buf.dtype)
            buf.copy_(mean + sigma * abs(mean) * noise.to(buf.device))
        return self

    def _rest(self) -> torch.Tensor:
        """:func:`rest_state` for the current ``r``, ``r_s``, ``b``, solved again only when one of
        them changed (a new tensor, or an in-place change: ``perturb_``, an optimizer step)."""
        key = tuple((t.data_ptr(), t.dtype, t._version) for t in (self.r, self.r_s, self.bias))
        if getattr(self, "_rest_key", None) != key:
            self._rest_key = key
            self._rest_h = rest_state(self.r, self.r_s, self.effective_bias())
        return self._rest_h

    def init_state(self, batch_size: int, *, device=None, dtype=None):
        """The rest state ``(i, h, h_s) = (0, h*, h*)``, each ``(batch_size, hidden_size)``."""
        device = device or self.weight.device
        dtype = dtype or self.weight.dtype
        h = self._rest().to(device, dtype)
        h = h.expand(batch_size, -1).contiguous()
        return torch.zeros_like(h), h, h.clone()

    def _state(self, state, x):
        B = x.shape[0]
        if state is None:
            return self.init_state(B, device=x.device, dtype=x.dtype)
        if not isinstance(state, (tuple, list)) or len(state) != 3:
            raise ValueError("state: expected a tuple (i, h, h_s) of (B, hidden_size) tensors, "
                             f"got {type(state).__name__}")
        for name, s in zip(("state[0] (i)", "state[1] (h)", "state[2] (h_s)"), state):
            check_state(s, (B, self.hidden_size), name)
        return tuple(state)

    def _gains(self, dtype):
        """``r``, ``r_s`` for this forward call: as stored, or drawn around them
        (``train_noise`` in training mode)."""
        r, r_s = self.r.to(dtype), self.r_s.to(dtype)
        if self.training and self.train_noise > 0:
            sigma = self.train_noise
            r = r + sigma * abs(self.r_mean) * torch.randn_like(r)
            r_s = r_s + sigma * abs(self.r_s_mean) * torch.randn_like(r_s)
        return r, r_s

    def _run(self, x, state):
        i0, h0, hs0 = state
        drive = x @ self.weight.t()
        a = torch.full((1, x.shape[1], self.hidden_size), self.alpha, dtype=drive.dtype,
                       device=drive.device)
        i = linear_scan(a, drive, i0)
        h, hs = _Recurrence.apply(i, self.effective_bias().to(i.dtype), h0, hs0,
                                  *self._gains(i.dtype), self.rho, self.z_hyp,
                                  self.z_dep, self.gate == "current", self.detach_recurrent,
                                  self.compile_loop)
        return h, (i[:, -1], h[:, -1], hs)

    def forward(self, x: torch.Tensor, state=None):
        """``x`` ``(B, T, input_size)`` → spikes ``(B, T, hidden_size)`` and the state after
        step T (``state=None``: the rest state)."""
        check_input(x, self.input_size, module=self)
        h, state = self._run(x, self._state(state, x))
        return SpikeReLU.apply(h), state

    @torch.no_grad()
    def membrane(self, x: torch.Tensor, state=None):
        """The traces ``h`` and ``h_s``, each ``(B, T, hidden_size)``, for plots (no gradients).

        ``h_s`` is rebuilt from ``h`` by the scan ``h_s[t] = z_s[t] h_s[t-1] + (1 − z_s[t]) h[t-1]``
        with the same gates as the forward loop.
        """
        check_input(x, self.input_size, module=self)
        _, h0, hs0 = state = self._state(state, x)
        h, _ = self._run(x, state)
        hprev = torch.cat([h0[:, None], h[:, :-1]], dim=1)
        z = torch.where((h if self.gate == "current" else hprev) <= 0.5, self.z_hyp, self.z_dep)
        z = z.to(h.dtype)
        return h, linear_scan(z, (1 - z) * hprev, hs0)

    def step(self, x_t: torch.Tensor, state=None):
        """One time step: ``x_t`` ``(B, input_size)`` → ``(out_t (B, hidden_size), state)``."""
        check_step_input(x_t, self.input_size, module=self)
        out, state = self.forward(x_t[:, None], state)
        return out[:, 0], state


def ramp_train_noise(model: nn.Module, step: int, total: int, sigma: float) -> float:
    """A noise curriculum: set ``train_noise`` of every :class:`SRC` in ``model`` to
    ``σ · min(step / total, 1)`` (0 at step 0, ``sigma`` from step ``total`` on); returns it.

    Noise-aware training from the first step can silence a deep network's top layers; rising
    from 0, the noise lets it learn first (docs/src.md). Call it once per training step.
    """
    check_number(sigma, "sigma", lambda v: v >= 0, "a relative σ >= 0")
    units = [m for m in model.modules() if isinstance(m, SRC)]
    if not units:
        raise ValueError("model: expected at least one SRC module, found none")
    value = linear_schedule(step, total, 0.0, sigma)
    for unit in units:
        unit.train_noise = value
    return value
