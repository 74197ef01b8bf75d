"""The plain-loop scan: the truth every fast path is tested against.

    h_t = a_t ⊙ h_{t-1} + b_t ,  h_0 given (zeros by default)

Autograd differentiates the loop itself, so this is slow but obviously right (use float64).
"""

from __future__ import annotations

import torch


def linear_scan_reference(
    a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None, *, reverse: bool = False
) -> torch.Tensor:
    """Sequential scan over dim 1 of ``(B, T, D)`` tensors; ``a`` may be ``(1, T, D)``."""
    a = a.expand_as(b)
    h = torch.zeros_like(b[:, 0]) if h0 is None else h0
    steps = range(b.shape[1] - 1, -1, -1) if reverse else range(b.shape[1])
    out = [None] * b.shape[1]
    for t in steps:
        h = a[:, t] * h + b[:, t]
        out[t] = h
    return torch.stack(out, dim=1)
