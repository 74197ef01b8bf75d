"""The frozen population readout of spiking networks (SPEC.md §6).

``n_classes · per_class`` output neurons feed ``n_classes`` scores through a fixed matrix ``M``
(``n_classes × n_classes · per_class``), integrated over time::

    R[t] = α_ro · R[t-1] + M out[t]           R[0] = 0 unless a state is given

``mode="population"`` (default): ``M`` is +1 from the class's own ``per_class`` neurons and −0.1
from all others. ``mode="count"``: +1 from its own neurons, 0 from the others, so ``R[t]`` is the
integrated (with α_ro = 1: summed) output of each class's population so far, unweighted; it
sums output values, not spikes (an SRC pulse adds its 2–3 steps of ReLU(h)), and so stays
differentiable. The two differ by a factor and a term common to all classes,
``R_pop = 1.1 · R_count − 0.1 · Σ_c R_count``: the same predictions, and under a softmax the
population readout is the count readout with its logits scaled by 1.1. A training loop uses
cross-entropy on ``R[:, -1]``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..scan import linear_scan
from ..units.base import check_input, check_number, check_sizes, check_state

MODES = ("population", "count")


class PopulationReadout(nn.Module):
    """Frozen population readout, integrated over time (no learned parameters).

    Shapes: ``forward(out (B, T, n_classes·per_class), state (B, n_classes) or None)
    -> (R (B, T, n_classes), R[:, -1])``, ``R`` in ``out``'s dtype, float32 at least (the
    integration keeps α_ro exact under bfloat16 autocast).
    """

    def __init__(self, n_classes: int = 10, per_class: int = 10, *, alpha: float = 1.0,
                 mode: str = "population"):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
        check_sizes(n_classes=n_classes, per_class=per_class)
        check_number(alpha, "alpha", lambda v: 0 <= v <= 1, "a leak in [0, 1]")
        self.n_classes, self.per_class, self.alpha, self.mode = n_classes, per_class, alpha, mode
        self.input_size = n_classes * per_class

    def matrix(self, dtype=torch.float64, device=None) -> torch.Tensor:
        """``M`` (n_classes × n_classes·per_class), built where and when it is used: it follows
        from ``mode`` alone, so no checkpoint can carry one mode's matrix into a model built with
        the other (--init-from with another readout), and no ``to_empty()`` can leave it unset."""
        own = torch.eye(self.n_classes, dtype=dtype, device=device)
        own = own.repeat_interleave(self.per_class, dim=1)
        other = 0.0 if self.mode == "count" else -0.1
        return own + other * (1 - own)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.pop(prefix + "matrix", None)  # checkpoints before 2026-12-06 saved it
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"{self.n_classes}, {self.per_class}, alpha={self.alpha}, mode={self.mode!r}"

    def forward(self, out: torch.Tensor, state: torch.Tensor | None = None):
        check_input(out, self.input_size, "out")
        # in out's dtype, float32 at least, even under autocast: a bfloat16 α_ro = 0.99 is
        # 0.98828125, a time constant of 85 steps instead of 100; R and its state likewise
        work = torch.promote_types(out.dtype, torch.float32)
        if state is not None:
            check_state(state, (out.shape[0], self.n_classes), "state", work, out.device)
        with torch.autocast(out.device.type, enabled=False):
            drive = out.to(work) @ self.matrix(work, out.device).t()
        if self.alpha == 1.0:
            R = drive.cumsum(dim=1)
            R = R if state is None else R + state[:, None]
        else:
            a = torch.full((1,) + drive.shape[1:], self.alpha, dtype=drive.dtype,
                           device=drive.device)
            R = linear_scan(a, drive, state)
        return R, R[:, -1]
