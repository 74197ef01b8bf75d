"""Spike encoders: static images to Bernoulli rate-coded spike trains, event frames to inputs.

Both return batch-first float spike tensors ``(B, T, F)`` that every spiking unit takes.
"""

from __future__ import annotations

import torch

from ..units.base import check_count, check_number, check_sizes


def rate_code(images: torch.Tensor, *, steps: int = 200, silent: int = 20, gain: float = 0.25,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Bernoulli rate coding (SPEC.md §6).

    ``images`` ``(B, ...)`` with intensities in ``[0, 1]`` (flattened to ``F`` pixels) →
    spikes ``(B, silent + steps, F)``: ``silent`` all-zero steps (the network settles at rest),
    then ``steps`` steps where each pixel spikes independently with probability
    ``gain · intensity`` (0.25 · intensity by default). ``generator`` makes the draw reproducible.
    """
    if not isinstance(images, torch.Tensor) or images.dim() < 2:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images: expected a tensor of shape (B, ...), got {got}")
    if not images.is_floating_point():
        raise ValueError(f"images: expected a floating dtype (intensities in [0, 1]), "
                         f"got {images.dtype}")
    check_sizes(steps=steps)
    check_count(silent, "silent")
    check_number(gain, "gain", lambda v: 0 <= v <= 1, "a spike probability per unit intensity "
                 "in [0, 1]")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator: expected a torch.Generator or None, got "
                         f"{type(generator).__name__}")
    low, high = torch.stack(images.aminmax()).tolist() if images.numel() else (0.0, 0.0)
    if not (0 <= low and high <= 1):  # NaN fails too
        raise ValueError(f"images: expected intensities in [0, 1] (scale 8-bit pixels by 1/255), "
                         f"got values in [{low:g}, {high:g}]")
    # p and the draw in at least float32: a bfloat16 uniform has 8 bits, which biases p (0.077
    # for 0.075), and gain · intensity rounded to bfloat16 would too (0.3 · 0.5 → 0.1504)
    draw = torch.promote_types(images.dtype, torch.float32)
    p = gain * images.flatten(1).to(draw)
    B, F = p.shape
    out = torch.zeros(B, silent + steps, F, dtype=images.dtype, device=images.device)
    u = torch.rand(B, steps, F, generator=generator, dtype=draw, device=images.device)
    out[:, silent:] = (u < p[:, None]).to(images.dtype)
    return out


def flatten_frames(frames: torch.Tensor) -> torch.Tensor:
    """Pass-through for event frames: ``(B, T, 2, 34, 34)`` (any ``(B, T, ...)``) → float
    ``(B, T, 2·34·34)``, the event counts per bin and pixel kept as they are."""
    if not isinstance(frames, torch.Tensor) or frames.dim() < 3:
        got = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise ValueError(f"frames: expected a tensor of shape (B, T, ...), e.g. (B, T, 2, 34, 34), "
                         f"got {got}")
    if frames.is_complex():
        raise ValueError(f"frames: expected real event counts, got {frames.dtype}")
    low = float(frames.min()) if frames.numel() and frames.dtype != torch.bool else 0.0
    if not low >= 0:  # NaN fails too
        raise ValueError(f"frames: expected event counts >= 0, got a minimum of {low:g}")
    x = frames.flatten(2)
    return x if x.is_floating_point() else x.float()
