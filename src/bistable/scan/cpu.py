"""Chunked scan for the CPU, in plain PyTorch tensor ops (no autograd inside).

The sequence is cut into ``n`` chunks of ``L`` steps, viewed as ``(B, n, L, D)``:

1. every chunk is scanned from a zero state at once, keeping only its end state ``e_c``
   (``L`` fused multiply-adds over ``(B, n, D)`` slices), and ``P_c = prod_l a_{c,l}``;
2. the chunk start states follow from the short scan ``S_c = P_c ⊙ S_{c-1} + e_c``
   (the same function, recursively);
3. every chunk is scanned again from its true start state, writing ``h``.

Memory traffic: passes 1 and 2 read ``a, b`` and ``a`` again; pass 3 reads ``a, b`` and writes ``h``
(24 bytes per fp32 element against the 12-byte floor), with ``2L + n`` kernel launches instead of
the ``T`` of a step loop. The ``T mod L`` steps left over run as a plain loop.
"""

from __future__ import annotations

import math

import torch

MIN_CHUNK = 16
MAX_CHUNK = 256
ACCUMULATE = {torch.bfloat16: torch.float32, torch.float16: torch.float32}


def chunk_length(T: int) -> int:
    """Chunk length ``L ≈ sqrt(T)``, clamped to ``[MIN_CHUNK, MAX_CHUNK]``."""
    return max(MIN_CHUNK, min(MAX_CHUNK, math.isqrt(T)))


def _step(a_t, b_t, h, out_t):
    """``h ← a_t ⊙ h + b_t`` in ``h``'s (accumulation) dtype, stored into ``out_t``."""
    if out_t.dtype == h.dtype:
        return torch.addcmul(b_t, a_t, h, out=out_t)
    h = torch.addcmul(b_t, a_t, h)  # low-precision inputs promote to h's float32
    out_t.copy_(h)
    return h


def _loop(a, b, h, steps, out):
    """``h ← a_t ⊙ h + b_t`` for ``t`` in ``steps``, writing each state into ``out[:, t]``."""
    for t in steps:
        h = _step(a[:, t], b[:, t], h, out[:, t])
    return h


def scan_cpu(
    a: torch.Tensor,
    b: torch.Tensor,
    h0: torch.Tensor | None,
    reverse: bool = False,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``h`` with ``h_t = a_t ⊙ h_{t∓1} + b_t``; ``a`` is ``(B|1, T, D)``, ``b`` is ``(B, T, D)``.

    Inputs may be strided views along time; ``out`` (same shape as ``b``) receives ``h``.
    bfloat16/float16 are read and written as they are, and accumulated in float32.
    """
    B, T, D = b.shape
    acc = ACCUMULATE.get(b.dtype, b.dtype)
    h = torch.empty_like(b, memory_format=torch.contiguous_format) if out is None else out
    start = b.new_zeros(B, D, dtype=acc) if h0 is None else h0.to(acc)
    L = chunk_length(T)
    n = T // L
    if n < 2:
        steps = range(T - 1, -1, -1) if reverse else range(T)
        _loop(a, b, start, steps, h)
        return h

    rest = T - n * L
    lo = rest if reverse else 0  # the chunked part is [lo, lo + nL); the rest is before or after
    ac, bc, hc = (x[:, lo : lo + n * L].unflatten(1, (n, L)) for x in (a, b, h))
    order = range(L - 1, -1, -1) if reverse else range(L)
    first, *others = order

    # 1. chunk end states from zero, and chunk products
    e = bc[:, :, first].to(acc, copy=True)
    for l in others:
        torch.addcmul(bc[:, :, l], ac[:, :, l], e, out=e)
    p = ac.prod(dim=2, dtype=acc)
    # 2. chunk start states
    ends = scan_cpu(p, e, start, reverse)
    starts = torch.empty_like(ends)
    if reverse:
        starts[:, :-1] = ends[:, 1:]
        starts[:, -1] = start
    else:
        starts[:, 1:] = ends[:, :-1]
        starts[:, 0] = start
    # 3. every chunk again from its start state
    state = starts
    for l in order:
        state = _step(ac[:, :, l], bc[:, :, l], state, hc[:, :, l])

    if rest:  # from the state next to the rest, kept in the accumulation dtype
        if reverse:
            _loop(a, b, state[:, 0], range(rest - 1, -1, -1), h)
        else:
            _loop(a, b, state[:, -1], range(n * L, T), h)
    return h
