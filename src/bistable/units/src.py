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

- the drive ``W s_in`` over all steps is one matrix product; on the CPU it visits only the
  nonzero spikes when they are sparse (:func:`bistable.units.spike_matmul.spike_matmul`);
- the input integration ``i``, the saturation and the ``(h, h_s)`` loop are one custom operator
  with a hand-written backward (:mod:`bistable.units.src_loop`): one
  :func:`bistable.scan.linear_scan` (constant ``a = α``) and eager PyTorch steps by default, a
  fused loop with ``compile_loop=True`` (C++ on CPU, Triton on CUDA). In the training benchmark
  (``results/src.md``, 1 CPU thread) the C++ loop made a full step about 1.45× faster than the
  eager loop. ``detach_recurrent=True`` cuts both recurrent paths: truncated, one-step BPTT.

``r`` and ``r_s`` are per-neuron buffers (not learned) so that the noise evaluation can draw each
neuron's values (:meth:`SRC.perturb_`); ``train_noise`` draws them anew at every training forward
call instead (noise-aware training). The state is ``(i, h, h_s)``, each ``(B, hidden_size)``,
starting at rest: ``i = 0`` and ``h = h_s = h*`` with ``h* = tanh((r + r_s) h* + b)`` solved
numerically (h* ≈ −0.9027 for the defaults).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..scan import linear_scan
from ..scan.autograd import apply, forward_mode, refuse_nested_forward_mode
from .base import (
    check_flags,
    check_input,
    check_number,
    check_sizes,
    check_state,
    check_step_input,
    in_parameter_dtype,
    linear_schedule,
    transforms_active,
)
from .spike_matmul import spike_matmul
from .src_loop import differentiable, src_loop

GATES = ("previous", "current")


class SpikeReLU(torch.autograd.Function):
    """``ReLU(h)`` forward, identity backward (the SRC's spike; SPEC.md §6); ``vmap`` by its plain
    operations (``torch.func``)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(h):
        return h.clamp(min=0)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        return grad


class _SpikeReLUJvp(SpikeReLU):
    """:class:`SpikeReLU` with forward mode (:func:`~bistable.scan.autograd.forward_mode`)."""

    @staticmethod
    def jvp(ctx, dh):
        refuse_nested_forward_mode("SpikeReLU")
        return dh


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


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """``a`` and ``b`` hold the same values, dtype and device."""
    return a.dtype == b.dtype and a.device == b.device and torch.equal(a, b)


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
            each call, like dropout: a sequence streamed by ``step`` draws at every step) with
            ``σ = train_noise``, from the rest state of the stored values; evaluation uses
            ``r``, ``r_s`` as stored (default 0: off).

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
        check_flags(learn_bias=learn_bias, detach_recurrent=detach_recurrent,
                    compile_loop=compile_loop)
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
        self.bias_init = float(bias)
        self.weight = nn.Parameter(torch.empty(hidden_size, input_size))
        self.register_buffer("r", torch.empty(hidden_size))
        self.register_buffer("r_s", torch.empty(hidden_size))
        self.learn_bias = learn_bias  # decided here, not by the type of what self.bias is at call
        if learn_bias:                # time (functional_call passes plain tensors)
            self.bias = nn.Parameter(torch.empty(hidden_size))
        else:
            self.register_buffer("bias", torch.empty(hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``W`` as ``nn.Linear``'s default (Kaiming uniform), ``b`` and every neuron's ``r``,
        ``r_s`` back to the constructor's values."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        with torch.no_grad():
            self.bias.fill_(self.bias_init)
        self.perturb_(0.0)

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, alpha={self.alpha}, rho={self.rho}, "
                f"r={self.r_mean}, r_s={self.r_s_mean}, gate={self.gate!r}, "
                f"learn_bias={self.learn_bias}, "
                f"detach_recurrent={self.detach_recurrent}, train_noise={self.train_noise}")

    def effective_bias(self) -> torch.Tensor:
        """``b``, clamped to ``≤ bias_max`` when learned (straight-through: the gradient is 1)."""
        if not self.learn_bias:
            return self.bias
        return self.bias - (self.bias - self.bias_max).clamp(min=0).detach()

    @torch.no_grad()
    def perturb_(self, sigma: float, generator: torch.Generator | None = None) -> SRC:
        """Draw each neuron's ``r ~ N(r, (σ|r|)²)`` and ``r_s ~ N(r_s, (σ|r_s|)²)`` around the
        constructor's values (σ relative: 0.1 is 10 % of the magnitude; σ = 0 restores them)."""
        check_number(sigma, "sigma", lambda v: v >= 0, "a relative σ >= 0")
        for buf, mean in ((self.r, self.r_mean), (self.r_s, self.r_s_mean)):
            if sigma == 0:  # restore without drawing: the random streams stay where they were
                buf.fill_(mean)
                continue
            noise = torch.randn(buf.shape, generator=generator, dtype=buf.dtype)
            buf.copy_(mean + sigma * abs(mean) * noise.to(buf.device))
        return self

    def _rest(self) -> torch.Tensor:
        """:func:`rest_state` for the current ``r``, ``r_s``, ``b``, solved again only when one of
        their values changed. Compared by value, not by version counter: a fused optimizer step
        and a ``.data`` write change a tensor without counting a version (the price: on a GPU,
        one host synchronisation per sequence that starts at rest)."""
        if torch.compiler.is_compiling() or transforms_active():  # no cache under tracing
            return rest_state(self.r, self.r_s, self.effective_bias())
        now = tuple(t.detach() for t in (self.r, self.r_s, self.bias))
        seen = getattr(self, "_rest_of", None)
        if seen is None or not all(_same(a, b) for a, b in zip(seen, now)):
            self._rest_of = tuple(t.clone() for t in now)
            self._rest_h = rest_state(self.r, self.r_s, self.effective_bias())
        return self._rest_h

    def init_state(self, batch_size: int, *, device=None, dtype=None):
        """The rest state ``(i, h, h_s) = (0, h*, h*)``, each ``(batch_size, hidden_size)``."""
        device = device or self.weight.device
        dtype = dtype or self.weight.dtype
        # copies of the cached rest, never views of it (at batch 1 an expand was one): a state
        # changed in place must not change the cache, nor may an inference tensor cached under
        # torch.inference_mode() reach a later graph
        h = self._rest().to(device, dtype).repeat(batch_size, 1)
        return torch.zeros_like(h), h, h.clone()

    def _state(self, state, x):
        B = x.shape[0]
        if state is None:
            return self.init_state(B, device=x.device)
        if not isinstance(state, (tuple, list)) or len(state) != 3:
            got = (f"a {type(state).__name__} of {len(state)}"
                   if isinstance(state, (tuple, list)) else type(state).__name__)
            raise ValueError("state: expected a tuple (i, h, h_s) of (B, hidden_size) tensors, "
                             f"got {got}")
        for name, s in zip(("state[0] (i)", "state[1] (h)", "state[2] (h_s)"), state):
            check_state(s, (B, self.hidden_size), name, self.weight.dtype, self.weight.device)
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
        drive, = in_parameter_dtype(self.weight, spike_matmul(x, self.weight))
        args = (drive, i0, self.effective_bias().to(drive.dtype), h0, hs0,
                *self._gains(drive.dtype), self.alpha, self.rho, self.z_hyp, self.z_dep,
                self.gate == "current", self.detach_recurrent)
        h, i, hs = (differentiable(*args) if transforms_active()
                    else src_loop(*args, self.compile_loop))
        return h, (i[:, -1], h[:, -1], hs)

    def forward(self, x: torch.Tensor, state=None):
        """``x`` ``(B, T, input_size)`` → spikes ``(B, T, hidden_size)`` and the state after
        step T (``state=None``: the rest state)."""
        check_input(x, self.input_size, module=self)
        h, state = self._run(x, self._state(state, x))
        return apply(_SpikeReLUJvp if forward_mode() else SpikeReLU, h), state

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
        z = torch.where((h if self.gate == "current" else hprev) <= 0.5, h.new_full((), self.z_hyp),
                        h.new_full((), self.z_dep))
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
