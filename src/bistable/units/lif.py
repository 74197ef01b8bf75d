"""The LIF peer: a layer of snnTorch ``Leaky`` neurons behind a learned linear map (SPEC.md §6).

Per layer, with input spikes ``s_in[t]`` and weights ``W``, bias ``c`` (``nn.Linear``)::

    mem[t] = β · mem[t-1] + W s_in[t] + c − θ · H(mem[t-1] − θ)     reset by subtraction
    out[t] = H(mem[t] − θ)                                           backward: arctan surrogate

computed by ``snntorch.Leaky(beta, threshold=θ, spike_grad=surrogate.atan(),
reset_mechanism="subtract")``, one call per step. snnTorch is an optional peer: install it with
``pip install 'bistable[peers]'``.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from ..extras import MissingExtra
from .base import (
    check_input,
    check_number,
    check_sizes,
    check_state,
    check_step_input,
    in_parameter_dtype,
    transforms_active,
)


def _snntorch():
    try:
        import snntorch
        from snntorch import surrogate
    except ImportError as err:
        raise MissingExtra("the LIF peer needs snntorch: pip install 'bistable[peers]'") from err
    return snntorch, surrogate


def _no_transforms() -> None:
    if transforms_active():
        raise RuntimeError("lif: snnTorch's spike function is an autograd.Function that "
                           "torch.func transforms (grad, vmap, jacrev, jvp, ...) cannot run (it "
                           "has no setup_context); use torch.autograd, or a bistable unit")


class LIF(nn.Module):
    """A layer of leaky integrate-and-fire neurons (snnTorch ``Leaky``), unit interface.

    Args:
        input_size, hidden_size: ``F`` inputs per step, ``H`` neurons.
        beta: membrane decay β (0.95). threshold: θ (1.0). slope: the arctan surrogate's α (2.0,
            snnTorch's default).

    Shapes: ``forward(x (B, T, F), mem) -> (spikes (B, T, H), mem (B, H))``, the state ``mem``
    starting at 0; ``step(x_t (B, F), mem) -> (spikes_t (B, H), mem)``.
    """

    def __init__(self, input_size: int, hidden_size: int, *, beta: float = 0.95,
                 threshold: float = 1.0, slope: float = 2.0):
        super().__init__()
        check_sizes(input_size=input_size, hidden_size=hidden_size)
        check_number(beta, "beta", lambda v: 0 <= v <= 1, "a decay in [0, 1]")
        for name, value in (("threshold", threshold), ("slope", slope)):
            check_number(value, name, lambda v: v > 0, "a finite number > 0")
        snntorch, surrogate = _snntorch()
        self.input_size, self.hidden_size, self.slope = input_size, hidden_size, slope
        self.linear = nn.Linear(input_size, hidden_size)
        self.leaky = snntorch.Leaky(beta=beta, threshold=threshold,
                                    spike_grad=surrogate.atan(alpha=slope),
                                    reset_mechanism="subtract")

    def state_dtype(self) -> torch.dtype:
        """The dtype of ``mem``: the weights', at least float32 (snnTorch's spikes are float32,
        so a bf16 layer's membrane comes out float32)."""
        return torch.promote_types(self.linear.weight.dtype, torch.float32)

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> torch.Tensor:
        """The rest state: ``mem = 0``, ``(batch_size, hidden_size)``."""
        return torch.zeros(batch_size, self.hidden_size, device=device or self.linear.weight.device,
                           dtype=dtype or self.state_dtype())

    def _state(self, mem, x):
        if mem is None:
            return self.init_state(x.shape[0], device=x.device)
        check_state(mem, (x.shape[0], self.hidden_size), "state", self.state_dtype(), x.device)
        return mem

    def forward(self, x: torch.Tensor, state=None):
        """``x`` ``(B, T, input_size)`` → spikes ``(B, T, hidden_size)``, ``mem`` after step T."""
        _no_transforms()
        check_input(x, self.input_size, module=self)
        mem = self._state(state, x)
        drive, = in_parameter_dtype(self.linear.weight, self.linear(x))  # all steps: one product
        out = []
        with self._state_returned():
            for d in drive.unbind(1):  # unbind: one backward node, not T full-size selects
                spk, mem = self.leaky(d, mem)
                out.append(spk)
        return torch.stack(out, dim=1).to(x.dtype), mem  # snnTorch's spikes are float32

    def step(self, x_t: torch.Tensor, state=None):
        """One time step: ``x_t`` ``(B, input_size)`` → ``(spikes_t (B, hidden_size), mem)``."""
        _no_transforms()
        check_step_input(x_t, self.input_size, module=self)
        drive, = in_parameter_dtype(self.linear.weight, self.linear(x_t))
        with self._state_returned():
            spk, mem = self.leaky(drive, self._state(state, x_t))
        return spk.to(x_t.dtype), mem

    @contextlib.contextmanager
    def _state_returned(self):
        """snnTorch keeps the last membrane in its ``mem`` buffer; this layer returns it instead,
        so the buffer goes back to its empty self afterwards: a ``(B, H)`` buffer would keep the
        graph alive and change the module's buffers from call to call (the moving average of
        ``--ema`` copies buffers, and could not)."""
        try:
            yield
        finally:
            mem = getattr(self.leaky, "mem", None)  # (a stand-in for Leaky may keep none)
            if mem is not None:
                self.leaky.mem = mem.new_zeros(0)
