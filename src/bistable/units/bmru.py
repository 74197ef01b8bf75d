"""Memory recurrent units (SPEC.md §2): the BMRU and the cumulative family (CMRU, leaky CMRU).

Every unit here computes, per state variable, from gate drives ``(c_t, β_t)`` that depend on the
input ``x_t`` only:

    z_t = H(|c_t| − |β_t|)                       write when the drive leaves the band (H(0) = 1)
    v_t = sign(c_t) ∈ {−1, +1}                   the value it writes (sign(0) = +1)
    s_t = (1 − z_t + ε z_t) ⊙ s_{t−1} + z_t ⊙ v_t
    y_t = α ⊙ s_t                                learned amplitude α per unit (init 1)

ε = 0 is the BMRU (§2.1: hold or jump to ±1), ε = 1 the CMRU counter and 0 < ε < 1 the leaky
variant (§2.2). A sequence is one scan ``s_t = a_t ⊙ s_{t−1} + b_t`` with ``a_t = 1 − z_t + ε z_t``
and ``b_t = z_t v_t`` (:func:`bistable.scan.linear_scan`); ``step`` does one update in O(1) memory.

Exactness (fp32/fp64, given the same gates): ``forward`` and ``step`` give bit-identical states and
outputs, and two ``forward`` calls on halves equal one on the whole:
- ε = 0 (BMRU): ``a ∈ {0, 1}``, ``b ∈ {−1, 0, 1}``: every scan order is exact ("last write wins");
- ε = 1 (counter): integer sums, exact in any order while ``|s| < 2^24`` (fp32) or ``2^53`` (fp64)
  and the start state is integer-valued (the unit checks this and otherwise runs the loop below);
- any other ε: float rounding depends on the order, so the states are computed by a time loop
  doing exactly the ``step`` arithmetic (one multiply, one add; parallel over batch and units).
Under ``torch.compile``, and on CUDA through the fused Triton kernels (signed units, atan
surrogate), every ε runs the parallel scan: exact as above for ε = 0 and for ε = 1 from an integer
start, within float rounding of ``step`` otherwise (about 1e-7 relative in float32; an exact time
loop on a GPU would cost a launch per step).
The gates are thresholds of a ``Linear``; BLAS may round ``W x`` differently for a ``(B·T, F)``
matrix than for a ``(B, F)`` one, so an input within rounding of a threshold can gate differently.

Training goes through the thresholds with surrogate gradients (:mod:`.surrogate`). The sequence
path is one autograd function that runs over cache-sized time blocks (one block while compiling),
saves only ``c, β`` and the state at each block's start, and recomputes gates and states in
backward (training activations: the ``Linear`` input plus ``c, β``).
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from ..scan import linear_scan
from ..scan.autograd import (
    apply,
    forward_mode,
    recorded_grads,
    recording,
    refuse_nested_forward_mode,
)
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
from .surrogate import (
    SurrogateGrad,
    check_sharpness,
    exact_heaviside,
    exact_sign,
    get_surrogate,
    heaviside,
    sign,
    step,
)

__all__ = ["MRU", "BMRU", "CMRU", "FirstQuadrantBMRU", "anneal_epsilon", "write_rate"]


def _coefficients(z, v, eps):
    """Scan coefficients ``a = 1 − z + ε z`` (``1 − z`` when ε is None) and ``b = z v``."""
    a = 1 - z if eps is None else 1 - z + eps * z
    return a, z * v


def _gates(c, beta, signed: bool):
    """Exact gates ``z = H(u)`` (0/1), ``v = sign(c)`` (±1; ``H(c)`` unless ``signed``), ``u``."""
    u = c.abs().sub_(beta.abs())
    return exact_heaviside(u), exact_sign(c) if signed else exact_heaviside(c), u


def _order_free(s0, eps, T: int) -> bool:
    """True when the parallel scan is bitwise equal to the time loop (see the module docstring)."""
    if eps is None or s0.numel() == 0 or not bool(eps.any()):  # numel 0: an empty batch
        return True
    if not bool(((eps == 0) | (eps == 1)).all()):
        return False
    limit = 2 / torch.finfo(s0.dtype).eps  # 2^(mantissa bits + 1): integers up to it are exact
    return bool((s0 == s0.round()).all()) and T + float(s0.abs().max()) <= limit


def _states(a, b, s0, eps):
    """``s_t = a_t ⊙ s_{t−1} + b_t`` in ``s0``'s dtype: the parallel scan where it is exact, else
    the step loop. Under ``torch.compile`` always the scan: the choice reads values, and compiled
    code does not keep eager's rounding anyway."""
    if torch.compiler.is_compiling() or _order_free(s0, eps, b.shape[1]):
        return linear_scan(a, b, s0)
    s = torch.empty_like(b, dtype=s0.dtype)
    h = s0
    for t in range(b.shape[1]):
        h = torch.add(torch.mul(a[:, t], h), b[:, t], out=s[:, t])  # the arithmetic of `step`
    return s


def _shift_right(x, first):
    """``out[:, 0] = first``, ``out[:, t] = x[:, t−1]``."""
    return torch.cat([first.unsqueeze(1), x[:, :-1]], dim=1)


BLOCK_ELEMENTS = 2**18  # time blocks of about this many elements keep the temporaries in cache


def _blocks(B: int, T: int, H: int) -> list[slice]:
    if torch.compiler.is_compiling():  # one block: a loop over T would fix T in the graph
        return [slice(None)]
    L = max(1, BLOCK_ELEMENTS // max(1, B * H))  # B = 0: an empty batch, one element a step
    return [slice(t, min(t + L, T)) for t in range(0, T, L)]


class _MRUSequence(torch.autograd.Function):
    """``(y, s_T, mean(z))`` of a whole sequence from ``(c, β, s_0, ε, α)``.

    Runs over time blocks (cache-sized), carrying the state; saves ``c, β`` and the state at the
    start of each block, and recomputes gates and states in backward, block by block in reverse:
        g_t = α ⊙ dL/dy_t + a_{t+1} ⊙ g_{t+1}           a reverse scan (g_t = dL/ds_t, total)
        dL/dz_t = g_t ⊙ (v_t − (1 − ε) s_{t−1}) + dL/dr / N,   dL/dv_t = g_t ⊙ z_t
        dL/dc_t = dL/dz_t H'(u_t) sign(c_t) + dL/dv_t 2H'(c_t)     H' the surrogate, u = |c| − |β|
                  (dL/dv_t H'(c_t) when the written values are H(c) ∈ {0, 1}, ``signed=False``)
        dL/dβ_t = −dL/dz_t H'(u_t) sign(β_t),  dL/ds_0 = a_1 ⊙ g_1
        dL/dε = Σ g_t z_t s_{t−1},  dL/dα = Σ dL/dy_t ⊙ s_t      (sums over batch and time)
    with ``r = mean(z)`` over all N gates.
    """

    @staticmethod
    def forward(ctx, c, beta, s0, eps, alpha, grad: SurrogateGrad, k: float, signed: bool):
        B, T, H = c.shape
        y = torch.empty_like(c)
        starts, writes = [], 0.0
        # states accumulate in float32 at least (SPEC.md §1), carried so between blocks: a
        # bfloat16 counter rounds its stored values, but does not stall at 256
        s = s0.to(torch.promote_types(s0.dtype, torch.float32))
        # no_grad as in eager autograd: torch 2.4's dynamo traces this forward with grad enabled,
        # and refuses out= on inputs that require it
        with torch.no_grad():
            for blk in _blocks(B, T, H):
                starts.append(s)
                z, v, _ = _gates(c[:, blk], beta[:, blk], signed)
                states = _states(*_coefficients(z, v, eps), s, eps)
                torch.mul(states, alpha, out=y[:, blk])
                s = states[:, -1].clone()
                writes += z.sum(dtype=torch.float64)
        ctx.save_for_backward(c, beta, s0, eps, alpha, torch.stack(starts))
        ctx.grad, ctx.k, ctx.signed = grad, k, signed
        # a copy, not `.to`'s alias of an intermediate: torch 2.11 compiles that into a wrong
        # gradient for the write rate (pytorch/pytorch#180642, fixed in 2.12)
        return y, s.to(c.dtype), (writes / c.numel()).to(c.dtype, copy=True)

    @staticmethod
    def backward(ctx, grad_y, grad_last, grad_rate):
        c, beta, s0, eps, alpha, starts = ctx.saved_tensors
        if recording():  # create_graph=True: the gradients are differentiated again
            inputs = (c, beta, s0, eps, alpha)
            outputs = _scanned(*inputs, ctx.grad, ctx.k, ctx.signed)
            return (*recorded_grads(outputs, inputs, (grad_y, grad_last, grad_rate),
                                    ctx.needs_input_grad[:5]), None, None, None)
        B, T, H = c.shape
        dc, dbeta = torch.empty_like(c), torch.empty_like(beta)
        acc = starts.dtype  # float32 at least, as forward: sums over blocks must not stall
        dalpha = torch.zeros_like(alpha, dtype=acc)
        deps = torch.zeros_like(eps, dtype=acc) if ctx.needs_input_grad[3] else None
        carry = grad_last  # dL/ds at the end of the block, from the blocks after it
        blocks = _blocks(B, T, H)
        for start, blk in zip(starts.unbind(0)[::-1], blocks[::-1]):
            z, v, u = _gates(c[:, blk], beta[:, blk], ctx.signed)
            a, b = _coefficients(z, v, eps)
            s = _states(a, b, start, eps)
            direct = (grad_y[:, blk] * alpha).to(acc)
            direct[:, -1] += carry
            a_next = torch.cat([a[:, 1:], torch.zeros_like(a[:, :1])], dim=1)
            g = linear_scan(a_next, direct, reverse=True)
            dalpha += (grad_y[:, blk] * s).sum((0, 1))
            s = _shift_right(s, start)  # s_{t-1}
            if deps is not None:
                deps += (g * z * s).sum((0, 1))
            keep = s if eps is None else s.mul_(1 - eps)
            dz = (v - keep).mul_(g).add_(grad_rate / c.numel()).mul_(ctx.grad(u, ctx.k))
            carry = a[:, 0] * g[:, 0]
            dv = g.mul_(z)
            dc[:, blk] = torch.sign(c[:, blk]).mul_(dz).addcmul_(dv, ctx.grad(c[:, blk], ctx.k),
                                                                 value=2 if ctx.signed else 1)
            dbeta[:, blk] = torch.sign(beta[:, blk]).mul_(dz).neg_()
        deps = None if deps is None else deps.to(eps.dtype)
        return dc, dbeta, carry.to(c.dtype), deps, dalpha.to(alpha.dtype), None, None, None


def _scanned(c, beta, s0, eps, alpha, grad: SurrogateGrad, k: float, signed: bool):
    """``(y, s_T, mean(z))`` as ``step``'s operations over all steps and one :func:`linear_scan`
    (the parallel scan for every ε, as under ``torch.compile``): what autograd, ``create_graph``
    and ``torch.func`` differentiate to any order."""
    z = step(c.abs() - beta.abs(), False, grad, k)
    a, b = _coefficients(z, step(c, signed, grad, k), eps)
    s = linear_scan(a, b, s0)
    return alpha * s, s[:, -1], z.mean()


class _ClampUnit(torch.autograd.Function):
    """``clamp(q, 0, 1)`` forward, identity backward: a parameter pushed past a bound comes back.
    ``vmap`` by its plain operations (``torch.func``)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(q):
        return q.clamp(0, 1)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        return grad


class _ClampUnitJvp(_ClampUnit):
    """:class:`_ClampUnit` with forward mode (:func:`~bistable.scan.autograd.forward_mode`)."""

    @staticmethod
    def jvp(ctx, dq):
        refuse_nested_forward_mode("epsilon clamp")
        return dq


@functools.cache
def _triton_fused_mru():
    """``bistable.scan.triton_bmru.fused_mru`` when it imports, else None (looked up once)."""
    try:
        from ..scan.triton_bmru import fused_mru
    except ImportError:
        return None
    return fused_mru


def _fused_mru(c: torch.Tensor):
    """The fused Triton kernels (the ``bistable::fused_mru`` operator) for drives ``c`` on CUDA
    when triton imports; else None, and the unit scans its gates."""
    return _triton_fused_mru() if c.is_cuda else None


class MRU(nn.Module):
    """Base of the memory recurrent units: the scan, the step, the state and the write rate.

    A subclass supplies the input-only gate drives ``drive(x) -> (c, β)`` (any leading shape,
    last dim ``hidden_size``) and, for the cumulative family, ``epsilon()`` (a ``(hidden_size,)``
    tensor in [0, 1], or None for ε = 0); the gates and the update are those of the module
    docstring. The class attribute ``signed`` picks the written values: ``v = sign(c) ∈ {−1, +1}``
    (True) or ``v = H(c) ∈ {0, 1}`` (False, the first-quadrant unit); ``s_0`` likewise.

    Args:
        input_size, hidden_size: F and H.
        surrogate: ``"atan"`` (default), ``"fast-sigmoid"`` or ``"triangle"`` (:mod:`.surrogate`).
        sharpness: k of the surrogate (height of dH/du at 0), default 1.
        learn_init: the start state is ``s_0 = sign(p)`` (or ``H(p)``) of a learned ``p`` (H,),
            drawn uniformly in [−1, 1], with the surrogate gradient; False: ``s_0 = 0``.
        detach_input: the gates read ``x`` detached: the unit's own weights learn through the
            surrogate, but no surrogate gradient flows into ``x`` (the layers below learn from
            the other units' gradients only). Same forward. Default False.

    State: ``(B, H)`` tensor, ``s_t``. ``forward(x (B, T, F), state=None) -> (y (B, T, H), s_T)``;
    ``step(x_t (B, F), state=None) -> (y_t (B, H), s_t)``. After each call, ``write_rate`` holds
    ``mean(z)`` over that call's gates, differentiable through the surrogate, so a training loop
    can add ``λ · unit.write_rate`` (or ``λ · bistable.units.bmru.write_rate(model)``).
    """

    signed = True

    def __init__(self, input_size: int, hidden_size: int, *, surrogate: str = "atan",
                 sharpness: float = 1.0, learn_init: bool = True, detach_input: bool = False):
        super().__init__()
        check_sizes(input_size=input_size, hidden_size=hidden_size)
        check_flags(learn_init=learn_init, detach_input=detach_input)
        self.input_size, self.hidden_size = input_size, hidden_size
        self.surrogate = surrogate
        self._grad = get_surrogate(surrogate)
        self.sharpness = check_sharpness(sharpness)
        self.alpha = nn.Parameter(torch.empty(hidden_size))
        self.init_logit = nn.Parameter(torch.empty(hidden_size)) if learn_init else None
        self.detach_input = bool(detach_input)
        self.write_rate: torch.Tensor | None = None
        MRU.reset_parameters(self)  # a subclass's own parameters do not exist yet

    def __getstate__(self) -> dict:
        """For ``copy.deepcopy`` and pickling: ``write_rate`` without its autograd graph (a
        tensor inside a graph cannot be copied; the copy has no graph to belong to)."""
        state = dict(super().__getstate__())  # torch's own first (it drops a compiled call)
        if isinstance(state.get("write_rate"), torch.Tensor):
            try:
                state["write_rate"] = state["write_rate"].detach()
            except RuntimeError:  # a batched tensor left by a finished torch.func transform
                state["write_rate"] = None
        return state

    def reset_parameters(self) -> None:
        """``α = 1``, ``p ~ U[−1, 1]`` (``learn_init``); the gate Linear resets itself, so a loop
        over ``modules()`` calling ``reset_parameters`` gives a freshly built unit."""
        with torch.no_grad():
            self.alpha.fill_(1.0)
            if self.init_logit is not None:
                self.init_logit.uniform_(-1, 1)

    def _drive(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.drive(x.detach() if self.detach_input else x)

    def drive(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def epsilon(self) -> torch.Tensor | None:
        return None

    def _level(self, u: torch.Tensor) -> torch.Tensor:
        """The written value for drive ``u``: ``sign(u)`` or ``H(u)``, with the surrogate."""
        return (sign if self.signed else heaviside)(u, self.surrogate, self.sharpness)

    def initial_state(self, batch_size: int) -> torch.Tensor:
        """``s_0`` for a batch: ``sign(p)``/``H(p)`` (learned) or zeros, ``(batch_size, H)``."""
        if self.init_logit is None:
            return self.alpha.new_zeros(batch_size, self.hidden_size)
        return self._level(self.init_logit).expand(batch_size, self.hidden_size)

    def _start(self, state, c: torch.Tensor) -> torch.Tensor:
        """``s_0`` for the drive ``c`` (its batch and dtype): the initial state or ``state``."""
        if state is None:
            return self.initial_state(c.shape[0]).to(c.dtype)
        check_state(state, (c.shape[0], self.hidden_size), dtype=c.dtype, device=c.device)
        return state.to(c.dtype)  # autocast

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None):
        check_input(x, self.input_size, module=self)
        c, beta = in_parameter_dtype(self.alpha, *self._drive(x))
        s0 = self._start(state, c)
        eps = self.epsilon()
        if transforms_active():  # the plain operations, which torch.func maps and differentiates
            y, last, self.write_rate = _scanned(c, beta, s0, eps, self.alpha, self._grad,
                                                self.sharpness, self.signed)
            return y, last
        fused = _fused_mru(c) if self.signed and self.surrogate == "atan" else None
        if fused is None:
            y, last, self.write_rate = _MRUSequence.apply(c, beta, s0, eps, self.alpha, self._grad,
                                                          self.sharpness, self.signed)
            return y, last
        s = fused(c, beta, s0, epsilon=eps, surrogate=self.surrogate, sharpness=self.sharpness)
        self.write_rate = heaviside(c.abs() - beta.abs(), self.surrogate, self.sharpness).mean()
        return self.alpha * s, s[:, -1]

    def step(self, x_t: torch.Tensor, state: torch.Tensor | None = None):
        check_step_input(x_t, self.input_size, module=self)
        c, beta = in_parameter_dtype(self.alpha, *self._drive(x_t))
        s = self._start(state, c)
        z = heaviside(c.abs() - beta.abs(), self.surrogate, self.sharpness)
        a, b = _coefficients(z, self._level(c), self.epsilon())
        s = a * s + b
        self.write_rate = z.mean()
        return self.alpha * s, s

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, surrogate={self.surrogate!r}, "
                f"sharpness={self.sharpness}, learn_init={self.init_logit is not None}, "
                f"detach_input={self.detach_input}")


class _GateLinear(nn.Linear):
    """``nn.Linear(F, 2H)`` giving ``[c; β]``; its init (``reset_parameters``) is ``nn.Linear``'s
    with the β biases at 1, so a unit starts mostly holding."""

    def reset_parameters(self) -> None:
        super().reset_parameters()
        with torch.no_grad():
            self.bias[self.out_features // 2:] = 1.0


class BMRU(MRU):
    """Bistable memory recurrent unit (SPEC.md §2.1): ε = 0, states in {−1, +1}.

        [c_t, β_t] = W x_t + b      one Linear(F, 2H); b_β initialised to 1 (mostly holding)
        z_t = H(|c_t| − |β_t|),  v_t = sign(c_t),  s_t = z_t v_t + (1 − z_t) s_{t−1},  y_t = α s_t

    See :class:`MRU` for arguments, state, shapes and exactness.
    """

    def __init__(self, input_size: int, hidden_size: int, *, surrogate: str = "atan",
                 sharpness: float = 1.0, learn_init: bool = True, detach_input: bool = False):
        super().__init__(input_size, hidden_size, surrogate=surrogate, sharpness=sharpness,
                         learn_init=learn_init, detach_input=detach_input)
        self.linear = _GateLinear(input_size, 2 * hidden_size)

    def drive(self, x):
        # (..., 2H) -> contiguous (2, ..., H): elementwise work on c and β runs at full speed
        c, beta = self.linear(x).unflatten(-1, (2, self.hidden_size)).movedim(-2, 0).contiguous()
        return c, beta


class CMRU(BMRU):
    """Cumulative memory recurrent unit (SPEC.md §2.2): the BMRU gates, a write adds to the state.

        s_t = (1 − z_t + ε z_t) ⊙ s_{t−1} + z_t ⊙ v_t

    ``epsilon=1`` (default): an integer counter; ``0 < ε < 1``: leaky; ``ε = 0``: the BMRU.
    ``learn_epsilon=True`` learns one ε per unit, initialised to ``epsilon``: the unit holds a raw
    parameter q and uses ε = clamp(q, 0, 1), with the gradient passed straight through the clamp.
    ``set_epsilon(value)`` (or :func:`anneal_epsilon`) overwrites ε, e.g. to anneal 1 → 0 during
    training and end with a BMRU. Other keywords as :class:`BMRU`.
    """

    def __init__(self, input_size: int, hidden_size: int, *, epsilon: float = 1.0,
                 learn_epsilon: bool = False, surrogate: str = "atan", sharpness: float = 1.0,
                 learn_init: bool = True, detach_input: bool = False):
        super().__init__(input_size, hidden_size, surrogate=surrogate, sharpness=sharpness,
                         learn_init=learn_init, detach_input=detach_input)
        check_flags(learn_epsilon=learn_epsilon)
        self.epsilon_init = self._checked_epsilon(epsilon)
        q = torch.full((hidden_size,), self.epsilon_init)
        self.learn_epsilon = learn_epsilon  # decided here, not by the type of what epsilon_raw
        if learn_epsilon:                   # is at call time (functional_call passes tensors)
            self.epsilon_raw = nn.Parameter(q)
        else:
            self.register_buffer("epsilon_raw", q)

    def reset_parameters(self) -> None:
        """:meth:`MRU.reset_parameters`, and ε back to the constructor's ``epsilon``."""
        super().reset_parameters()
        self.set_epsilon(self.epsilon_init)

    @staticmethod
    def _checked_epsilon(value: float) -> float:
        return check_number(value, "epsilon", lambda v: 0 <= v <= 1, "a number in [0, 1]")

    def epsilon(self) -> torch.Tensor:
        if self.learn_epsilon:
            return apply(_ClampUnitJvp if forward_mode() else _ClampUnit, self.epsilon_raw)
        return self.epsilon_raw

    def set_epsilon(self, value: float) -> None:
        """Set ε of every unit to ``value`` in [0, 1]."""
        with torch.no_grad():
            self.epsilon_raw.fill_(self._checked_epsilon(value))

    def extra_repr(self) -> str:
        # the constructor's ε, as torch's modules show their arguments (set_epsilon changes it)
        return (f"{super().extra_repr()}, epsilon={self.epsilon_init:g}, "
                f"learn_epsilon={self.learn_epsilon}")


class FirstQuadrantBMRU(MRU):
    """Analog-friendly first-quadrant BMRU (SPEC.md §2.3): states {0, α}, thresholds on ĥ ≥ 0.

        ĥ_t = ReLU(W x_t + b)                       one Linear(F, H)
        β_lo = |λ|,  β_hi = β_lo + |δ|              learned per unit, initialised to 0.25 and 0.75
        s_t = 1 if ĥ_t ≥ β_hi,  0 if ĥ_t ≤ β_lo,  else s_{t−1};    y_t = α s_t

    It is an MRU with ``c = ĥ − (β_lo + β_hi)/2``, ``β = |δ|/2`` and written value ``H(c)``:
    the same scan, exactness and surrogate gradients as :class:`BMRU`. At a threshold itself it
    writes (``H(0) = 1``), where SPEC.md's strict inequalities would hold. ``learn_init``: ``s_0 =
    H(p)``. Other arguments as :class:`MRU`.
    """

    signed = False

    def __init__(self, input_size: int, hidden_size: int, *, surrogate: str = "atan",
                 sharpness: float = 1.0, learn_init: bool = True, detach_input: bool = False):
        super().__init__(input_size, hidden_size, surrogate=surrogate, sharpness=sharpness,
                         learn_init=learn_init, detach_input=detach_input)
        self.linear = nn.Linear(input_size, hidden_size)
        self.low = nn.Parameter(torch.empty(hidden_size))
        self.width = nn.Parameter(torch.empty(hidden_size))
        self._reset_thresholds()

    def reset_parameters(self) -> None:
        """:meth:`MRU.reset_parameters`, and the thresholds back to 0.25 and 0.75."""
        super().reset_parameters()
        self._reset_thresholds()

    def _reset_thresholds(self) -> None:
        with torch.no_grad():
            self.low.fill_(0.25)
            self.width.fill_(0.5)

    def drive(self, x):
        half = self.width.abs() / 2
        c = torch.relu(self.linear(x)) - (self.low.abs() + half)
        return c, half.expand_as(c)


def anneal_epsilon(model: nn.Module, step: int, total: int, start: float = 1.0,
                   end: float = 0.0) -> float:
    """Set ε of every :class:`CMRU` in ``model`` on a linear schedule; returns the value.

    ``ε = start + (end − start) · min(step / total, 1)``: with the defaults, 1 (counter) at step 0
    down to 0 (BMRU) from step ``total`` on. Call it once per training step.
    """
    value = linear_schedule(step, total, start, end)
    units = [m for m in model.modules() if isinstance(m, CMRU)]
    if not units:
        raise ValueError("model: expected at least one CMRU module, found none")
    for unit in units:
        unit.set_epsilon(value)
    return value


def write_rate(model: nn.Module) -> torch.Tensor:
    """Mean of the last call's write rates ``mean(z)`` over every :class:`MRU` in ``model``.

    Differentiable through the surrogate: add ``λ · write_rate(model)`` to the loss to make
    writes rare.
    """
    rates = [m.write_rate for m in model.modules() if isinstance(m, MRU)
             and m.write_rate is not None]
    if not rates:
        raise ValueError("model: expected an MRU module that has run forward or step, found none")
    return torch.stack(rates).mean()
