"""Training-time augmentation of image data: random translations (``bistable train --shift N``).

Each training example is moved by ``(dy, dx)`` drawn uniformly from ``{-N, …, N}²``, the pixels
moved in from outside the image are 0 (no intensity, no events):
``out[..., y, x] = in[..., y − dy, x − dx]``. This is torchvision's ``RandomAffine(translate=…)``
on whole pixels, or ``RandomCrop(size, padding=N)``; on N-MNIST frames it moves every time bin of
a recording alike, the spatial jitter of Tonic's transforms. Evaluation data are never moved.
"""

from __future__ import annotations

import torch


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """``x (B, ..., H, W)`` with each example translated by its own ``(dy, dx)`` drawn from
    ``generator`` in ``{-max_shift, …, max_shift}²``, zero fill; ``x`` itself when
    ``max_shift = 0`` (no draw)."""
    if x.dim() < 3:
        raise ValueError(f"random_shift: expected images (B, ..., H, W), got shape "
                         f"{tuple(x.shape)}")
    height, width = x.shape[-2:]
    if not 0 <= max_shift < min(height, width):
        raise ValueError(f"random_shift: the shift must be in 0 … {min(height, width) - 1} "
                         f"(images of {height} × {width}), got {max_shift}")
    if max_shift == 0:
        return x
    shifts = torch.randint(-max_shift, max_shift + 1, (len(x), 2), generator=generator)
    out = torch.zeros_like(x)
    for b, (dy, dx) in enumerate(shifts.tolist()):
        out[b, ..., max(dy, 0):height + min(dy, 0), max(dx, 0):width + min(dx, 0)] = \
            x[b, ..., max(-dy, 0):height + min(-dy, 0), max(-dx, 0):width + min(-dx, 0)]
    return out
