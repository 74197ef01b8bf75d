"""Triton kernels for the scan ``h_t = a_t ⊙ h_{t-1} + b_t`` (SPEC.md §1), forward and backward.

Layout ``(B, T, D)``, no transposes. The work is cut into tiles of ``BLOCK_T`` steps ×
``BLOCK_D`` channels of one batch row, one tile per program, so that ``B · D / BLOCK_D · T /
BLOCK_T`` programs fill the GPU for any shape. A program loads its tile with coalesced rows of
``D``, scans it along time (``tl.associative_scan`` with ``(a1, b1) • (a2, b2) = (a1 a2, a2 b1 +
b2)``), then takes the state entering the tile from the tiles before it in time (a single-pass
scan with decoupled look-back, see :func:`handoff`) and writes ``h = A ⊙ h_in + B``. Every
element is read and written once:

- forward: reads ``a, b``, writes ``h`` (12 bytes per fp32 element);
- backward (fused): a reverse scan reading ``grad_h``, ``a`` shifted by one step and ``h`` shifted
  the other way, writing ``da = g ⊙ conj(h_{t-1})`` and ``db = g`` where
  ``g_t = grad_h_t + conj(a_{t+1}) ⊙ g_{t+1}`` (20 bytes per element); ``dh0 = conj(a_1) ⊙ g_1``.

Storage dtypes: float32, float64, bfloat16 and float16 (bf16/fp16 accumulate in float32), complex64
and complex128 (``view_as_real``: interleaved (re, im) pairs, loaded as ``(BLOCK_T, BLOCK_D, 2)``
tiles and split in registers).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .autograd import Backend
from .triton_lang import on_device, tl, triton

NATIVE_DTYPES = {torch.float32, torch.float64, torch.bfloat16, torch.float16,
                 torch.complex64, torch.complex128}


class Config(NamedTuple):
    """Launch shape: tiles of ``block_t`` steps × ``block_d`` channels, ``num_warps`` a program."""

    block_t: int
    block_d: int
    num_warps: int


def default_config(D: int, dtype: torch.dtype = torch.float32) -> Config:
    """Real: each thread holds 4 adjacent channels (a 16-byte load in fp32) over all the tile's
    steps, so the scan inside a tile needs no thread exchange; a warp covers 128 channels (64 in
    float64), a tile up to two warps (one for 2-byte storage) × 16 steps. Complex: tiles of 64
    steps × 16 pairs, 4 warps."""
    if dtype.is_complex:
        return Config(block_t=64, block_d=min(16, triton.next_power_of_2(D)), num_warps=4)
    per_warp = 64 if dtype == torch.float64 else 128
    block_d = min(per_warp * (1 if dtype.itemsize == 2 else 2), triton.next_power_of_2(D))
    num_warps = max(1, block_d // per_warp)
    return Config(block_t=max(16, 16 * per_warp * num_warps // block_d), block_d=block_d,
                  num_warps=num_warps)


# ---------------------------------------------------------------------------------------------
# pieces shared by the kernels (also used by triton_bmru.py)


@triton.jit
def combine(a1, b1, a2, b2):
    """Two real steps in scan order: first ``(a1, b1)``, then ``(a2, b2)``."""
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _combine_complex(ar1, ai1, br1, bi1, ar2, ai2, br2, bi2):
    return (ar1 * ar2 - ai1 * ai2, ar1 * ai2 + ai1 * ar2,
            ar2 * br1 - ai2 * bi1 + br2, ar2 * bi1 + ai2 * br1 + bi2)


@triton.jit
def pick_row(x, rows, r):
    """Row ``r`` of a ``(BLOCK_T, BLOCK_D)`` tile, as a ``(BLOCK_D,)`` vector."""
    return tl.sum(tl.where((rows == r)[:, None], x, 0.0), axis=0)


@triton.jit
def tile_start(i, T, BLOCK_T: tl.constexpr, DOWN: tl.constexpr):
    """First step of the ``i``-th tile visited, walking up from 0 or down from ``T``."""
    if DOWN:
        return T - (i + 1) * BLOCK_T
    else:
        return i * BLOCK_T


@triton.jit
def tile(i, T, D, d, dmask, rows, DOWN: tl.constexpr, COMPLEX: tl.constexpr,
         BLOCK_T: tl.constexpr):
    """Offsets (in real numbers) and mask of the ``i``-th tile visited; complex tiles have a
    trailing (re, im) axis of 2."""
    t = tile_start(i, T, BLOCK_T, DOWN) + rows
    off = t[:, None] * D + d[None, :]
    mask = ((t >= 0) & (t < T))[:, None] & dmask[None, :]
    if COMPLEX:
        k = tl.arange(0, 2)[None, None, :]
        return (off * 2)[:, :, None] + k, mask[:, :, None] & (k < 2)
    else:
        return off, mask


@triton.jit
def store_tile(ptr, x, i, T, D, d, dmask, rows, DOWN: tl.constexpr, COMPLEX: tl.constexpr,
               BLOCK_T: tl.constexpr):
    """Store tile ``x`` where :func:`tile` loads from, its addresses built anew from the tile's
    first row: the loads' offsets are not kept live across the hand-off (a 16 × 256 fp32 tile
    then needs 209 registers, not 255 and spills; ``benchmarks/kernel_resources.py``)."""
    C: tl.constexpr = 2 if COMPLEX else 1
    t0 = tile_start(i, T, BLOCK_T, DOWN)
    t = t0 + rows
    first = ptr + (t0 * D + d) * C
    ptrs = first[None, :] + (rows * (D * C))[:, None]
    mask = ((t >= 0) & (t < T))[:, None] & dmask[None, :]
    if COMPLEX:
        k = tl.arange(0, 2)[None, None, :]
        tl.store(ptrs[:, :, None] + k, x.to(ptr.dtype.element_ty), mask=mask[:, :, None] & (k < 2))
    else:
        tl.store(ptrs, x.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def _one(COMPLEX: tl.constexpr):
    """The multiplicative identity, broadcastable against a tile."""
    if COMPLEX:
        return tl.where(tl.arange(0, 2) == 0, 1.0, 0.0)[None, None, :]
    else:
        return 1.0


@triton.jit
def _load_vec(ptr, d, dmask, ACC: tl.constexpr, COMPLEX: tl.constexpr):
    """A ``(BLOCK_D,)`` row as ``(re, im)`` (``im = 0`` for real)."""
    if COMPLEX:
        re = tl.load(ptr + 2 * d, mask=dmask, other=0.0).to(ACC)
        im = tl.load(ptr + 2 * d + 1, mask=dmask, other=0.0).to(ACC)
    else:
        re = tl.load(ptr + d, mask=dmask, other=0.0).to(ACC)
        im = tl.zeros_like(re)
    return re, im


@triton.jit
def _store_vec(ptr, d, dmask, re, im, COMPLEX: tl.constexpr):
    ty = ptr.dtype.element_ty
    if COMPLEX:
        tl.store(ptr + 2 * d, re.to(ty), mask=dmask)
        tl.store(ptr + 2 * d + 1, im.to(ty), mask=dmask)
    else:
        tl.store(ptr + d, re.to(ty), mask=dmask)


# ---------------------------------------------------------------------------------------------
# the hand-off between tiles (a decoupled look-back, also used by triton_bmru)
#
# Tile i of a sequence maps the state entering it to the state leaving it, h_out = E h_in + F.
# It publishes (E, F) at once (flag 1), then looks back: tile j < i gives either its h_out
# (flag 2: done) or its (E, F) (flag 1: compose and look further back). Having found h_in, it
# publishes h_out (flag 2). Tile ids are handed out by an atomic counter in time order, so a
# program only ever waits on programs that already run, and rarely waits long.

_SLOT = tl.constexpr(6)  # per tile: E (re, im), F (re, im), h_out (re, im), BLOCK_D each


@triton.jit
def claim(sync_ptr, n_seq):
    """This program's tile ``(i, seq)``: the ``i``-th tile visited of sequence ``seq``."""
    lin = tl.atomic_add(sync_ptr, 1)
    return lin // n_seq, lin % n_seq


@triton.jit
def _put(base, k, re, im, COMPLEX: tl.constexpr, BLOCK_D: tl.constexpr):
    tl.store(base + k, re)
    if COMPLEX:
        tl.store(base + BLOCK_D + k, im)


@triton.jit
def _get(base, k, COMPLEX: tl.constexpr, ACC: tl.constexpr, BLOCK_D: tl.constexpr):
    re = tl.load(base + k, volatile=True).to(ACC)
    if COMPLEX:
        im = tl.load(base + BLOCK_D + k, volatile=True).to(ACC)
    else:
        im = tl.zeros((BLOCK_D,), ACC)
    return re, im


@triton.jit
def _flag(sync_ptr, slot, value):
    tl.debug_barrier()  # every thread's stores before the flag
    tl.atomic_xchg(sync_ptr + 1 + slot, value, sem="release")


@triton.jit
def handoff(init_ptr, sync_ptr, carry_ptr, i, seq, n_seq, d, dmask, er, ei, fr, fi,
            HAS_INIT: tl.constexpr, COMPLEX: tl.constexpr, ACC: tl.constexpr,
            BLOCK_D: tl.constexpr):
    """The state entering tile ``i`` of ``seq`` (``init`` or 0 for the first), given the tile's
    own map ``h_out = E h_in + F``; publishes what later tiles need."""
    k = tl.arange(0, BLOCK_D)
    W: tl.constexpr = 2 * BLOCK_D
    mine = carry_ptr + (i * n_seq + seq) * _SLOT * BLOCK_D
    if i == 0:
        if HAS_INIT:
            hr, hi = _load_vec(init_ptr, d, dmask, ACC, COMPLEX)
        else:
            hr = tl.zeros((BLOCK_D,), ACC)
            hi = tl.zeros((BLOCK_D,), ACC)
    else:
        _put(mine, k, er, ei, COMPLEX, BLOCK_D)
        _put(mine + W, k, fr, fi, COMPLEX, BLOCK_D)
        _flag(sync_ptr, i * n_seq + seq, 1)
        # (Ar, Ai, Br, Bi): the map across tiles j+1 .. i-1, composed so far
        Ar = tl.full((BLOCK_D,), 1.0, ACC)
        Ai = tl.zeros((BLOCK_D,), ACC)
        Br = tl.zeros((BLOCK_D,), ACC)
        Bi = tl.zeros((BLOCK_D,), ACC)
        hr = tl.zeros((BLOCK_D,), ACC)
        hi = tl.zeros((BLOCK_D,), ACC)
        j = i - 1
        while j >= 0:
            slot = j * n_seq + seq
            flag = tl.atomic_add(sync_ptr + 1 + slot, 0, sem="acquire")
            while flag == 0:
                flag = tl.atomic_add(sync_ptr + 1 + slot, 0, sem="acquire")
            theirs = carry_ptr + slot * _SLOT * BLOCK_D
            if flag == 2:
                pr, pi = _get(theirs + 2 * W, k, COMPLEX, ACC, BLOCK_D)
                hr = Ar * pr - Ai * pi + Br
                hi = Ar * pi + Ai * pr + Bi
                j = -1
            else:
                tr, ti = _get(theirs, k, COMPLEX, ACC, BLOCK_D)
                ur, ui = _get(theirs + W, k, COMPLEX, ACC, BLOCK_D)
                Br, Bi = Ar * ur - Ai * ui + Br, Ar * ui + Ai * ur + Bi
                Ar, Ai = Ar * tr - Ai * ti, Ar * ti + Ai * tr
                j -= 1
    _put(mine + 2 * W, k, er * hr - ei * hi + fr, er * hi + ei * hr + fi, COMPLEX, BLOCK_D)
    _flag(sync_ptr, i * n_seq + seq, 2)
    return hr, hi


def chain_buffers(n_tiles: int, n_seq: int, block_d: int, acc: torch.dtype,
                  device) -> tuple[torch.Tensor, torch.Tensor]:
    """The tile counter and flags (zeroed) and the published maps and states of one launch."""
    if n_tiles * n_seq * _SLOT.value * block_d >= 2**31:
        raise ValueError(f"sequence too large for the Triton kernels' 32-bit offsets: "
                         f"{n_tiles} tiles × {n_seq} sequences of {block_d} channels")
    sync = torch.zeros(1 + n_tiles * n_seq, dtype=torch.int32, device=device)
    return sync, torch.empty(n_tiles * n_seq * _SLOT.value * block_d, dtype=acc, device=device)


# ---------------------------------------------------------------------------------------------
# forward


@triton.jit
def _fwd_kernel(a_ptr, b_ptr, h0_ptr, h_ptr, sync_ptr, carry_ptr, T, D, a_bstride, n_seq, n_dblk,
                HAS_H0: tl.constexpr, REVERSE: tl.constexpr, COMPLEX: tl.constexpr,
                ACC: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    i, seq = claim(sync_ptr, n_seq)
    pid_b = (seq // n_dblk).to(tl.int64)
    C: tl.constexpr = 2 if COMPLEX else 1
    a_ptr += pid_b * a_bstride
    b_ptr += pid_b * T * D * C
    h_ptr += pid_b * T * D * C
    d = (seq % n_dblk) * BLOCK_D + tl.arange(0, BLOCK_D)
    dmask = d < D
    rows = tl.arange(0, BLOCK_T)
    LAST: tl.constexpr = 0 if REVERSE else BLOCK_T - 1  # the row a tile hands on

    off, mask = tile(i, T, D, d, dmask, rows, REVERSE, COMPLEX, BLOCK_T)
    # padding steps are the identity (a = 1, b = 0) and come last in scan order
    a = tl.where(mask, tl.load(a_ptr + off, mask=mask, other=0.0).to(ACC), _one(COMPLEX))
    b = tl.load(b_ptr + off, mask=mask, other=0.0).to(ACC)
    h0_ptr += pid_b * D * C
    if COMPLEX:
        ar, ai = tl.split(a)
        br, bi = tl.split(b)
        Ar, Ai, Br, Bi = tl.associative_scan((ar, ai, br, bi), 0, _combine_complex,
                                             reverse=REVERSE)
        er, ei = pick_row(Ar, rows, LAST), pick_row(Ai, rows, LAST)
        fr, fi = pick_row(Br, rows, LAST), pick_row(Bi, rows, LAST)
        cr, ci = handoff(h0_ptr, sync_ptr, carry_ptr, i, seq, n_seq, d, dmask, er, ei, fr, fi,
                         HAS_H0, COMPLEX, ACC, BLOCK_D)
        hr = Ar * cr[None, :] - Ai * ci[None, :] + Br
        hi = Ar * ci[None, :] + Ai * cr[None, :] + Bi
        store_tile(h_ptr, tl.join(hr, hi), i, T, D, d, dmask, rows, REVERSE, COMPLEX, BLOCK_T)
    else:
        A, Bc = tl.associative_scan((a, b), 0, combine, reverse=REVERSE)
        e, f = pick_row(A, rows, LAST), pick_row(Bc, rows, LAST)
        c, _ = handoff(h0_ptr, sync_ptr, carry_ptr, i, seq, n_seq, d, dmask, e, e, f, f, HAS_H0,
                       COMPLEX, ACC, BLOCK_D)
        store_tile(h_ptr, A * c[None, :] + Bc, i, T, D, d, dmask, rows, REVERSE, COMPLEX, BLOCK_T)


# ---------------------------------------------------------------------------------------------
# backward


@triton.jit
def _row_tile(re, im, COMPLEX: tl.constexpr):
    """A ``(BLOCK_D,)`` row as a tile row, broadcastable against a tile."""
    if COMPLEX:
        return tl.join(re, im)[None, :, :]
    else:
        return re[None, :]


@triton.jit
def _bwd_load(a_ptr, h_ptr, h0_ptr, gh_ptr, i, T, D, d, dmask, rows,
              HAS_H0: tl.constexpr, REVERSE: tl.constexpr, COMPLEX: tl.constexpr,
              NEED_DA: tl.constexpr, ACC: tl.constexpr, BLOCK_T: tl.constexpr):
    """Tile ``i`` of the backward walk: ``grad_h_t``, ``a_{t+1}`` and ``h_{t-1}`` (forward order;
    ``h_{t-1}`` only if ``NEED_DA``, else 0, and neither ``h`` nor ``h0`` read).

    ``a`` past the sequence end is 0 (nothing flows back from there); padding steps are the
    identity; ``h`` before the start is ``h0`` (or 0)."""
    C: tl.constexpr = 2 if COMPLEX else 1
    S: tl.constexpr = -1 if REVERSE else 1  # one step forward in time, in the forward's order
    off, mask = tile(i, T, D, d, dmask, rows, not REVERSE, COMPLEX, BLOCK_T)
    t = tile_start(i, T, BLOCK_T, not REVERSE) + rows
    if COMPLEX:
        t = t[:, None, None]
    else:
        t = t[:, None]
    gh = tl.load(gh_ptr + off, mask=mask, other=0.0).to(ACC)
    a_n = tl.load(a_ptr + off + S * D * C, mask=mask & (t + S >= 0) & (t + S < T), other=0.0)
    a_n = tl.where(mask, a_n.to(ACC), _one(COMPLEX))
    h_p = 0.0
    if NEED_DA:
        h_p = tl.load(h_ptr + off - S * D * C, mask=mask & (t - S >= 0) & (t - S < T), other=0.0)
        h_p = h_p.to(ACC)
        if HAS_H0:
            h0r, h0i = _load_vec(h0_ptr, d, dmask, ACC, COMPLEX)
            h_p = tl.where(t - S == (T if REVERSE else -1), _row_tile(h0r, h0i, COMPLEX), h_p)
    return gh, a_n, h_p


@triton.jit
def _bwd_kernel(a_ptr, h_ptr, h0_ptr, gh_ptr, da_ptr, db_ptr, dh0_ptr, sync_ptr, carry_ptr,
                T, D, a_bstride, n_seq, n_dblk, n_tiles,
                HAS_H0: tl.constexpr, REVERSE: tl.constexpr, COMPLEX: tl.constexpr,
                NEED_DA: tl.constexpr, ACC: tl.constexpr, BLOCK_T: tl.constexpr,
                BLOCK_D: tl.constexpr):
    i, seq = claim(sync_ptr, n_seq)
    pid_b = (seq // n_dblk).to(tl.int64)
    C: tl.constexpr = 2 if COMPLEX else 1
    a_ptr += pid_b * a_bstride
    for_batch = pid_b * T * D * C
    h_ptr += for_batch
    gh_ptr += for_batch
    da_ptr += for_batch
    db_ptr += for_batch
    d = (seq % n_dblk) * BLOCK_D + tl.arange(0, BLOCK_D)
    dmask = d < D
    rows = tl.arange(0, BLOCK_T)
    LAST: tl.constexpr = BLOCK_T - 1 if REVERSE else 0  # the row a tile hands on

    gh, a_n, h_p = _bwd_load(a_ptr, h_ptr, h0_ptr + pid_b * D * C, gh_ptr, i, T, D, d, dmask,
                             rows, HAS_H0, REVERSE, COMPLEX, NEED_DA, ACC, BLOCK_T)
    if COMPLEX:
        ar, ai = tl.split(a_n)
        gr, gi = tl.split(gh)
        Ar, Ai, Gr, Gi = tl.associative_scan((ar, -ai, gr, gi), 0, _combine_complex,
                                             reverse=not REVERSE)
        er, ei = pick_row(Ar, rows, LAST), pick_row(Ai, rows, LAST)
        fr, fi = pick_row(Gr, rows, LAST), pick_row(Gi, rows, LAST)
        cr, ci = handoff(h0_ptr, sync_ptr, carry_ptr, i, seq, n_seq, d, dmask, er, ei, fr, fi,
                         False, COMPLEX, ACC, BLOCK_D)
        xr, xi = er * cr - ei * ci + fr, er * ci + ei * cr + fi
        gr = Ar * cr[None, :] - Ai * ci[None, :] + Gr
        gi = Ar * ci[None, :] + Ai * cr[None, :] + Gi
        if NEED_DA:
            hr, hi = tl.split(h_p)
            da = tl.join(gr * hr + gi * hi, gi * hr - gr * hi)
            store_tile(da_ptr, da, i, T, D, d, dmask, rows, not REVERSE, COMPLEX, BLOCK_T)
        store_tile(db_ptr, tl.join(gr, gi), i, T, D, d, dmask, rows, not REVERSE, COMPLEX, BLOCK_T)
    else:
        A, G = tl.associative_scan((a_n, gh), 0, combine, reverse=not REVERSE)
        e, f = pick_row(A, rows, LAST), pick_row(G, rows, LAST)
        c, _ = handoff(h0_ptr, sync_ptr, carry_ptr, i, seq, n_seq, d, dmask, e, e, f, f, False,
                       COMPLEX, ACC, BLOCK_D)
        xr = e * c + f
        xi = tl.zeros_like(xr)  # (no imaginary part)
        g = A * c[None, :] + G
        if NEED_DA:
            store_tile(da_ptr, g * h_p, i, T, D, d, dmask, rows, not REVERSE, COMPLEX, BLOCK_T)
        store_tile(db_ptr, g, i, T, D, d, dmask, rows, not REVERSE, COMPLEX, BLOCK_T)

    if HAS_H0:  # the last tile visited holds the first step: dh0 = conj(a_first) g_first
        if i == n_tiles - 1:
            first = (T - 1 if REVERSE else 0) * D * C
            a0r, a0i = _load_vec(a_ptr + first, d, dmask, ACC, COMPLEX)
            _store_vec(dh0_ptr + pid_b * D * C, d, dmask, a0r * xr + a0i * xi,
                       a0r * xi - a0i * xr, COMPLEX)


# ---------------------------------------------------------------------------------------------
# host side


def _acc_torch(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype in (torch.float64, torch.complex128) else torch.float32


def _acc(dtype: torch.dtype):
    return tl.float64 if _acc_torch(dtype) == torch.float64 else tl.float32


def _check_size(x: torch.Tensor) -> None:
    """Offsets inside one batch row are 32-bit: ``T · D`` (× 2 if complex) must stay below 2³¹."""
    if x[0].numel() * (2 if x.is_complex() else 1) >= 2**31:
        raise ValueError(f"b: a batch row of shape {tuple(x.shape[1:])} is too large for the "
                         "Triton kernels' 32-bit offsets (T · D < 2**31)")


def _real(x: torch.Tensor) -> torch.Tensor:
    x = x.contiguous()
    return torch.view_as_real(x) if x.is_complex() else x


def forward(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None, reverse: bool,
            config: Config | None = None) -> torch.Tensor:
    """``h`` with ``h_t = a_t ⊙ h_{t∓1} + b_t``: ``a`` ``(B|1, T, D)``, ``b`` ``(B, T, D)``,
    ``h0`` ``(B, D)`` or None, all of one dtype of :data:`NATIVE_DTYPES`."""
    B, T, D = b.shape
    _check_size(b)
    cfg = config or default_config(D, b.dtype)
    h = torch.empty_like(b, memory_format=torch.contiguous_format)
    av = _real(a)
    n_tiles, n_dblk = triton.cdiv(T, cfg.block_t), triton.cdiv(D, cfg.block_d)
    sync, carry = chain_buffers(n_tiles, B * n_dblk, cfg.block_d, _acc_torch(b.dtype), b.device)
    with on_device(b):
        _fwd_kernel[(n_tiles * B * n_dblk,)](
            av, _real(b), _real(h0) if h0 is not None else av, _real(h), sync, carry, T, D,
            0 if a.shape[0] == 1 else av[0].numel(), B * n_dblk, n_dblk,
            HAS_H0=h0 is not None, REVERSE=bool(reverse), COMPLEX=b.is_complex(), ACC=_acc(b.dtype),
            BLOCK_T=cfg.block_t, BLOCK_D=cfg.block_d, num_warps=cfg.num_warps)
    return h


def backward(a: torch.Tensor, h: torch.Tensor, h0: torch.Tensor | None, grad_h: torch.Tensor,
             reverse: bool, need_da: bool = True, config: Config | None = None):
    """``(da, db, dh0)`` in one fused pass (see the module docstring); ``da`` is summed over the
    batch when ``a`` is ``(1, T, D)``, and None unless ``need_da`` (then ``h`` is not read: a
    constant ``a`` spares a read and a write of the sequence); ``dh0`` is None when ``h0`` is
    None."""
    B, T, D = h.shape
    cfg = config or default_config(D, h.dtype)
    broadcast = a.shape[0] == 1 and B != 1
    if not need_da:
        da = None
    elif broadcast:
        da = torch.empty_like(h, dtype=a.dtype)
    else:
        da = torch.empty_like(a)
    db = torch.empty_like(h, dtype=grad_h.dtype)
    dh0 = torch.empty_like(h0) if h0 is not None else None
    av = _real(a)
    n_tiles, n_dblk = triton.cdiv(T, cfg.block_t), triton.cdiv(D, cfg.block_d)
    sync, carry = chain_buffers(n_tiles, B * n_dblk, cfg.block_d, _acc_torch(h.dtype), h.device)
    with on_device(h):
        _bwd_kernel[(n_tiles * B * n_dblk,)](
            av, _real(h), _real(h0) if h0 is not None else av, _real(grad_h),
            _real(da) if need_da else av, _real(db),
            _real(dh0) if dh0 is not None else av, sync, carry, T, D,
            0 if a.shape[0] == 1 else av[0].numel(), B * n_dblk, n_dblk, n_tiles,
            HAS_H0=h0 is not None, REVERSE=bool(reverse), COMPLEX=h.is_complex(),
            NEED_DA=bool(need_da), ACC=_acc(h.dtype), BLOCK_T=cfg.block_t, BLOCK_D=cfg.block_d,
            num_warps=cfg.num_warps)
    if broadcast and need_da:
        da = da.sum(0, keepdim=True)
    return da, db, dh0


BACKEND = Backend(forward, backward)
