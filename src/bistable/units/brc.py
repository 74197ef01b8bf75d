"""BRC and nBRC, the bistable recurrent cells (Vecoven, Ernst, Drion 2021)."""

from __future__ import annotations

import math

import torch
from torch import nn

from . import brc_loop
from .base import check_flags, check_input, check_sizes, check_step_input, state_or_zeros


class BRC(nn.Module):
    r"""Bistable recurrent cell, all recurrent weights diagonal (SPEC.md §5).

        a_t = 1 + tanh(U_a x_t + w_a ⊙ h_{t-1} + b_a)      ∈ (0, 2): bistable when a_t > 1
        c_t = σ(U_c x_t + w_c ⊙ h_{t-1} + b_c)
        h_t = c_t ⊙ h_{t-1} + (1 − c_t) ⊙ tanh(U x_t + a_t ⊙ h_{t-1})

    The output is the state: y_t = h_t. Init: U_a, U_c, U Glorot uniform (each H×F), w_a = w_c = 1,
    b_a = b_c = 0, no bias in the candidate. The gates depend on h_{t-1}, so the unit runs step by
    step; ``forward`` computes the three input projections for the whole sequence in one matmul and
    then loops over time with the same cell as ``step`` (eager: autograd records every step). With
    ``compile_loop=True``, a float32/64 sequence on the CPU runs the loop fused instead: one C++
    pass each way with the hand-written backward of :mod:`bistable.units.brc_loop` (other devices
    and dtypes keep the eager loop).

    Shapes: x ``(B, T, input_size)`` → y ``(B, T, hidden_size)``; state ``(B, hidden_size)``, zeros
    by default.
    """

    def __init__(self, input_size: int, hidden_size: int, compile_loop: bool = False):
        super().__init__()
        check_sizes(input_size=input_size, hidden_size=hidden_size)
        check_flags(compile_loop=compile_loop)
        self.input_size, self.hidden_size = input_size, hidden_size
        self.compile_loop = compile_loop
        # rows [U_a; U_c; U]: one matmul gives the three input projections
        self.U = nn.Parameter(torch.empty(3 * hidden_size, input_size))
        self.bias = nn.Parameter(torch.empty(2 * hidden_size))  # [b_a; b_c]
        self._init_recurrent()
        self.reset_parameters()

    def _init_recurrent(self) -> None:
        self.w = nn.Parameter(torch.empty(2 * self.hidden_size))  # [w_a; w_c]

    def reset_parameters(self) -> None:
        H, F = self.hidden_size, self.input_size
        bound = math.sqrt(6.0 / (F + H))  # Glorot uniform of each H×F block
        with torch.no_grad():
            self.U.uniform_(-bound, bound)
            self.bias.zero_()
        self._reset_recurrent()

    def _reset_recurrent(self) -> None:
        with torch.no_grad():
            self.w.fill_(1.0)

    def _recurrent_weight(self) -> torch.Tensor:
        """The gates' recurrent weights as the loops take them: [w_a; w_c] ``(2H,)``."""
        return self.w

    def _gates(self, u_g: torch.Tensor, h_prev: torch.Tensor):
        """``(a, c)``, each ``(N, H)``, from the gate projections u_g = [U_a x; U_c x] ``(N, 2H)``
        and the previous state ``(N, H)``."""
        return brc_loop.gate_values(u_g, h_prev, self.bias, self._recurrent_weight())

    def _cell(self, u_t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """One update from the input projections u_t = [U_a x_t; U_c x_t; U x_t], ``(B, 3H)``."""
        return brc_loop.cell(u_t, h, self.bias, self._recurrent_weight())

    def gates(self, x: torch.Tensor, y: torch.Tensor, state: torch.Tensor | None = None):
        """The gates ``(a, c)``, each ``(B, T, H)``, of the forward that gave ``y`` from ``x`` and
        ``state`` (for analysis: they read ``h_{t-1}``, so they need the outputs)."""
        check_input(x, self.input_size, module=self)
        B, T, H = y.shape
        h_prev = torch.cat([state_or_zeros(state, x, H).unsqueeze(1), y[:, :-1]], dim=1)
        a, c = self._gates((x @ self.U[: 2 * H].T).reshape(B * T, 2 * H),
                           h_prev.reshape(B * T, H))
        return a.reshape(B, T, H), c.reshape(B, T, H)

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None):
        """x ``(B, T, F)``, state ``(B, H)`` or None → (y ``(B, T, H)``, state ``(B, H)``)."""
        check_input(x, self.input_size, module=self)
        h = state_or_zeros(state, x, self.hidden_size)
        u = x @ self.U.T
        if self.compile_loop and brc_loop.supported(u):
            y = brc_loop.brc_loop(u, self.bias, self._recurrent_weight(), h)
            return y, y[:, -1]
        ys = []
        for t in range(x.shape[1]):
            h = self._cell(u[:, t], h)
            ys.append(h)
        return torch.stack(ys, dim=1), h

    def step(self, x_t: torch.Tensor, state: torch.Tensor | None = None):
        """One step: x_t ``(B, F)``, state ``(B, H)`` or None → (y_t ``(B, H)``, new state)."""
        check_step_input(x_t, self.input_size, module=self)
        h = self._cell(x_t @ self.U.T, state_or_zeros(state, x_t, self.hidden_size))
        return h, h

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}" + (
            ", compile_loop=True" if self.compile_loop else "")


class NBRC(BRC):
    r"""Neuromodulated bistable recurrent cell: the BRC with full recurrent matrices in the gates.

        a_t = 1 + tanh(U_a x_t + W_a h_{t-1} + b_a)
        c_t = σ(U_c x_t + W_c h_{t-1} + b_c)
        h_t = c_t ⊙ h_{t-1} + (1 − c_t) ⊙ tanh(U x_t + a_t ⊙ h_{t-1})

    Init: W_a, W_c orthogonal (each H×H); otherwise as :class:`BRC`. Same shapes and state.
    """

    def _init_recurrent(self) -> None:
        H = self.hidden_size
        self.W = nn.Parameter(torch.empty(2 * H, H))  # rows [W_a; W_c]

    def _reset_recurrent(self) -> None:
        H = self.hidden_size
        with torch.no_grad():
            nn.init.orthogonal_(self.W[:H])
            nn.init.orthogonal_(self.W[H:])

    def _recurrent_weight(self) -> torch.Tensor:
        return self.W
