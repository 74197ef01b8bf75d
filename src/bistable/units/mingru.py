"""minGRU (Feng et al. 2024): a GRU whose gates see only the input, so it runs as a scan."""

from __future__ import annotations

import torch
from torch import nn

from ..scan import linear_scan
from .base import (
    check_input,
    check_sizes,
    check_step_input,
    in_parameter_dtype,
    state_or_zeros,
)


class MinGRU(nn.Module):
    r"""Minimal GRU (SPEC.md §5), trained through the parallel scan.

        z_t = σ(W_z x_t),   h̃_t = W_h x_t,   h_t = (1 − z_t) ⊙ h_{t-1} + z_t ⊙ h̃_t

    i.e. the scan h_t = a_t ⊙ h_{t-1} + b_t with a_t = 1 − z_t, b_t = z_t ⊙ h̃_t. The output is the
    state: y_t = h_t. W_z and W_h (each H×F, no bias, as SPEC.md writes them) form one nn.Linear
    with nn.Linear's default init.

    Shapes: x ``(B, T, input_size)`` → y ``(B, T, hidden_size)``; state ``(B, hidden_size)``, zeros
    by default.
    """

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        check_sizes(input_size=input_size, hidden_size=hidden_size)
        self.input_size, self.hidden_size = input_size, hidden_size
        self.proj = nn.Linear(input_size, 2 * hidden_size, bias=False)  # rows [W_z; W_h]

    def _coefficients(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(a, b) = (1 − z, z ⊙ h̃) over the last dim of ``x``."""
        gate, cand = in_parameter_dtype(self.proj.weight, *self.proj(x).chunk(2, dim=-1))
        z = torch.sigmoid(gate)
        return 1 - z, z * cand

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None):
        """x ``(B, T, F)``, state ``(B, H)`` or None → (y ``(B, T, H)``, state ``(B, H)``)."""
        check_input(x, self.input_size, module=self)
        h0 = state_or_zeros(state, x, self.hidden_size)
        h = linear_scan(*self._coefficients(x), h0)
        return h, h[:, -1]

    def step(self, x_t: torch.Tensor, state: torch.Tensor | None = None):
        """One step: x_t ``(B, F)``, state ``(B, H)`` or None → (y_t ``(B, H)``, new state)."""
        check_step_input(x_t, self.input_size, module=self)
        a, b = self._coefficients(x_t)
        h = a * state_or_zeros(state, x_t, self.hidden_size) + b
        return h, h

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}"
