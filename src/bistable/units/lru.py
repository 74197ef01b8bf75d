"""LRU, the linear recurrent unit (Orvieto et al. 2023): a complex diagonal state-space unit."""

from __future__ import annotations

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
    in_parameter_dtype,
)


class LRU(nn.Module):
    r"""Linear recurrent unit on the complex scan (SPEC.md §3).

        λ = exp(−exp(ν) + i·exp(θ)),   γ = sqrt(1 − |λ|²)
        h_t = λ ⊙ h_{t-1} + γ ⊙ (B x_t),   y_t = Re(C h_t) + D x_t

    with ν, θ ∈ R^N, complex B (N×F) and C (H×N), N = ``state_size``, F = ``input_size``,
    H = ``hidden_size``. ``D`` is a real vector (``D ⊙ x_t``) when F == H, as in SPEC.md; otherwise
    ``D`` is a real H×F matrix (a linear skip, no bias), the general form of the same term.

    Init: λ uniform on the ring r_min ≤ |λ| ≤ r_max (|λ|² uniform in [r_min², r_max²]), phase
    uniform in [0, max_phase]; Re B, Im B ~ N(0, 1/(2F)); Re C, Im C ~ N(0, 1/N); D ~ N(0, 1)
    (vector) or nn.Linear's init (matrix). γ is computed from λ, not learned separately.

    Shapes: x ``(B, T, F)`` → y ``(B, T, H)``; the state is complex ``(B, N)``, zeros by default,
    complex64 for float32 input and complex128 for float64. The scan runs with λ broadcast over the
    batch (``a`` of shape ``(1, T, N)``).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        state_size: int | None = None,
        r_min: float = 0.9,
        r_max: float = 0.999,
        max_phase: float = 2 * math.pi,
    ):
        super().__init__()
        check_sizes(input_size=input_size, hidden_size=hidden_size)
        if state_size is not None:
            check_sizes(state_size=state_size)
        r_min = check_number(r_min, "r_min", lambda v: 0 <= v < 1, "a radius in [0, 1)")
        # |λ| = 1 would need ν = log(−log 1) = −inf (and gives NaN gradients)
        r_max = check_number(r_max, "r_max", lambda v: r_min < v < 1,
                             f"a radius in (r_min = {r_min}, 1)")
        max_phase = check_number(max_phase, "max_phase", lambda v: v >= 0,
                                 "a finite angle >= 0 (0: real eigenvalues)")
        self.input_size, self.hidden_size = input_size, hidden_size
        self.state_size = N = hidden_size if state_size is None else state_size
        self.r_min, self.r_max, self.max_phase = r_min, r_max, max_phase
        self.nu_log = nn.Parameter(torch.empty(N))
        self.theta_log = nn.Parameter(torch.empty(N))
        self.B_re = nn.Parameter(torch.empty(N, input_size))
        self.B_im = nn.Parameter(torch.empty(N, input_size))
        self.C_re = nn.Parameter(torch.empty(hidden_size, N))
        self.C_im = nn.Parameter(torch.empty(hidden_size, N))
        if input_size == hidden_size:
            self.D = nn.Parameter(torch.empty(hidden_size))
        self.reset_parameters()
        if input_size != hidden_size:  # a child module, built (and drawn) after the unit's own
            self.D = nn.Linear(input_size, hidden_size, bias=False)

    def reset_parameters(self) -> None:
        """λ, B, C and the vector D drawn as in the class docstring; the matrix D (F ≠ H) is an
        ``nn.Linear`` that resets itself, so a loop over ``modules()`` calling
        ``reset_parameters`` gives a freshly built unit."""
        N, F = self.state_size, self.input_size
        with torch.no_grad():
            u = torch.rand(N)
            radius_sq = u * (self.r_max**2 - self.r_min**2) + self.r_min**2
            # |λ| = exp(−exp(ν))  ⇒  ν = log(−log|λ|) = log(−½ log|λ|²)
            self.nu_log.copy_(torch.log(-0.5 * torch.log(radius_sq)))
            # phase exp(θ) uniform in [0, max_phase]; the 1e-12 floor keeps log finite
            self.theta_log.copy_(torch.log(self.max_phase * torch.rand(N) + 1e-12))
            for w, std in ((self.B_re, 1 / math.sqrt(2 * F)), (self.B_im, 1 / math.sqrt(2 * F)),
                           (self.C_re, 1 / math.sqrt(N)), (self.C_im, 1 / math.sqrt(N))):
                nn.init.normal_(w, std=std)
            if self.input_size == self.hidden_size:
                nn.init.normal_(self.D)

    def eigenvalues(self) -> torch.Tensor:
        """λ, complex ``(N,)`` (complex64 or complex128, following the parameters' dtype)."""
        if self.nu_log.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"LRU parameters: expected float32 or float64 (there is no complex "
                             f"bf16/fp16 state; run half precision through torch.autocast), got "
                             f"{self.nu_log.dtype}")
        return torch.polar(torch.exp(-torch.exp(self.nu_log)), torch.exp(self.theta_log))

    def _drive(self, x: torch.Tensor) -> torch.Tensor:
        """γ ⊙ (B x), complex, over the last dim of ``x`` (any leading dims)."""
        # 1 − |λ|² = −expm1(−2 exp(ν)), accurate when |λ| is close to 1
        gamma = torch.sqrt(-torch.expm1(-2 * torch.exp(self.nu_log)))
        re, im = x @ (gamma[:, None] * self.B_re).T, x @ (gamma[:, None] * self.B_im).T
        return torch.complex(*in_parameter_dtype(self.nu_log, re, im))  # autocast: bf16/fp16 in

    def _output(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Re(C h) + D x over the last dims of ``h`` and ``x``."""
        y = h.real @ self.C_re.T - h.imag @ self.C_im.T
        return y + (self.D(x) if isinstance(self.D, nn.Module) else x * self.D)

    def initial_state(self, batch: int, x: torch.Tensor) -> torch.Tensor:
        """Zeros, complex ``(batch, N)`` matching ``x``'s precision and device."""
        return torch.zeros(batch, self.state_size, dtype=self._state_dtype(x), device=x.device)

    @staticmethod
    def _state_dtype(x: torch.Tensor) -> torch.dtype:
        return torch.complex128 if x.dtype == torch.float64 else torch.complex64

    def _state(self, state, x: torch.Tensor) -> torch.Tensor:
        if state is None:
            return self.initial_state(x.shape[0], x)
        check_state(state, (x.shape[0], self.state_size), dtype=self._state_dtype(x),
                    device=x.device)
        return state

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None):
        """x ``(B, T, F)``, complex state ``(B, N)`` or None → (y ``(B, T, H)``, last state)."""
        check_input(x, self.input_size, module=self)
        h0 = self._state(state, x)
        lam = self.eigenvalues().to(h0.dtype)
        a = lam.expand(1, x.shape[1], self.state_size)
        h = linear_scan(a, self._drive(x).to(h0.dtype), h0)
        return self._output(h, x), h[:, -1]

    def step(self, x_t: torch.Tensor, state: torch.Tensor | None = None):
        """One step: x_t ``(B, F)``, state complex ``(B, N)`` or None → (y_t ``(B, H)``, state)."""
        check_step_input(x_t, self.input_size, module=self)
        h = self._state(state, x_t)
        h = self.eigenvalues().to(h.dtype) * h + self._drive(x_t).to(h.dtype)
        return self._output(h, x_t), h

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, state_size={self.state_size}, "
                f"r_min={self.r_min}, r_max={self.r_max}, max_phase={self.max_phase}")
