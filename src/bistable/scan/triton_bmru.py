"""The MRU family's scan with its gates fused in (SPEC.md §2.1–2.2), as Triton kernels.

From the drive ``c`` and the band half-width ``β`` (both ``(B, T, H)``):

    z_t = H(|c_t| − |β_t|)   (H(0) = 1),    v_t = sign(c_t)   (sign(0) = +1)
    s_t = (1 − z_t + ε z_t) ⊙ s_{t-1} + z_t ⊙ v_t ,   s_0 given (zeros by default)

``ε = 0`` (``epsilon=None``) is the BMRU, ``ε = 1`` the CMRU, ``0 < ε < 1`` the leaky variants
(``ε`` per unit, ``(H,)``). The forward reads ``c, β`` and writes ``s`` in one pass (the gates
never reach memory). The backward is one reverse pass reading ``c, β`` (at ``t`` and ``t+1``),
``s_{t-1}`` and ``grad_s`` and writing ``dc, dβ``: with ``g_t = grad_s_t + a_{t+1} g_{t+1}``,
``a_t = 1 − z_t + ε z_t``,

    dL/dz_t = g_t ((ε − 1) s_{t-1} + v_t) ,   dL/dv_t = g_t z_t
    dL/dc_t = dL/dz_t H'(u_t) sign(c_t) + dL/dv_t sign'(c_t) ,
    dL/dβ_t = −dL/dz_t H'(u_t) sign(β_t) ,
    dL/dε = Σ_{b,t} g_t z_t s_{t-1} ,   dL/ds_0 = a_1 g_1 ,   u_t = |c_t| − |β_t|

through the arctan surrogate ``H'(u) ≈ k / (1 + (π k u)²)``, ``sign'(u) ≈ 2k / (1 + (π k u)²)``
(sharpness ``k``); ``sign(c_t)`` and ``sign(β_t)`` here are ``d|x|/dx``, 0 at 0 as in PyTorch's
autograd and the units' own backward. :func:`fused_mru_reference` computes the same in plain
PyTorch (a loop, autograd through a surrogate step), the truth the kernels are tested against.

Under ``torch.compile``, forward and backward are PyTorch custom operators
(``bistable::fused_mru``, ``bistable::fused_mru_backward``): one opaque node each, with known
output shapes. In eager mode the same kernel launches run through a plain
``torch.autograd.Function``, without the operators' Python dispatch (as :mod:`.autograd` does for
the scan).
"""

import math
from typing import List, Optional  # noqa: UP035 (torch 2.4 reads typing.List only)

import torch
from torch import Tensor

from .autograd import recorded_grads, recording
from .dispatch import linear_scan, triton_interpreting
from .reference import linear_scan_reference
from .triton_lang import constants, on_device
from .triton_scan import (
    Config,
    chain_buffers,
    claim,
    combine,
    handoff,
    pick_row,
    store_tile,
    tile,
    tile_start,
    tl,
    triton,
)
from .triton_scan import default_config as scan_config

SURROGATES = ("atan",)
PI: tl.constexpr = tl.constexpr(math.pi)


def default_config(H: int, dtype: torch.dtype = torch.float32, backward: bool = False) -> Config:
    """Forward: the scan's tiles. Backward (it keeps six tiles of inputs and the surrogate terms
    live): tiles of 2048 numbers (1024 in float64), 32 units wide, 4 warps."""
    if not backward:
        return scan_config(H, dtype)
    block_d = min(32, triton.next_power_of_2(H))
    return Config(block_t=max(16, (1024 if dtype == torch.float64 else 2048) // block_d),
                  block_d=block_d, num_warps=4)


# ---------------------------------------------------------------------------------------------
# kernels


@triton.jit
def _sign(x):
    return tl.where(x >= 0, 1.0, -1.0)


@triton.jit
def _dabs(x):
    """d|x|/dx, 0 at 0 (as PyTorch's autograd and the units' own gradients)."""
    return tl.where(x > 0, 1.0, tl.where(x < 0, -1.0, 0.0))


@triton.jit
def _gates(c, beta, eps, HAS_EPS: tl.constexpr):
    """``(z, v, a)`` of a tile: write gate, written value and the scan coefficient."""
    z = (tl.abs(c) >= tl.abs(beta)).to(c.dtype)
    if HAS_EPS:
        a = 1.0 - z + eps * z
    else:
        a = 1.0 - z
    return z, _sign(c), a


@triton.jit
def _load_cb(c_ptr, beta_ptr, off, mask, ACC: tl.constexpr):
    """``c`` and ``β``; outside ``mask``, ``c = 0, β = 1``: no write, the identity step."""
    c = tl.load(c_ptr + off, mask=mask, other=0.0).to(ACC)
    return c, tl.load(beta_ptr + off, mask=mask, other=1.0).to(ACC)


@triton.jit
def _fwd_kernel(c_ptr, beta_ptr, s0_ptr, eps_ptr, s_ptr, sync_ptr, carry_ptr, T, H, n_seq, n_dblk,
                HAS_S0: tl.constexpr, HAS_EPS: tl.constexpr, ACC: tl.constexpr,
                BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    i, seq = claim(sync_ptr, n_seq)
    pid_b = (seq // n_dblk).to(tl.int64)
    for_batch = pid_b * T * H
    d = (seq % n_dblk) * BLOCK_D + tl.arange(0, BLOCK_D)
    dmask = d < H
    rows = tl.arange(0, BLOCK_T)
    eps = tl.load(eps_ptr + d, mask=dmask, other=0.0).to(ACC)[None, :] if HAS_EPS else 0.0

    off, mask = tile(i, T, H, d, dmask, rows, False, False, BLOCK_T)
    c, beta = _load_cb(c_ptr + for_batch, beta_ptr + for_batch, off, mask, ACC)
    z, v, a = _gates(c, beta, eps, HAS_EPS)
    A, Bc = tl.associative_scan((a, z * v), 0, combine)
    e, f = pick_row(A, rows, BLOCK_T - 1), pick_row(Bc, rows, BLOCK_T - 1)
    s_in, _ = handoff(s0_ptr + pid_b * H, sync_ptr, carry_ptr, i, seq, n_seq, d, dmask, e, e, f,
                      f, HAS_S0, False, ACC, BLOCK_D)
    s = A * s_in[None, :] + Bc
    store_tile(s_ptr + for_batch, s, i, T, H, d, dmask, rows, False, False, BLOCK_T)


@triton.jit
def _bwd_kernel(c_ptr, beta_ptr, s0_ptr, eps_ptr, s_ptr, gs_ptr, dc_ptr, dbeta_ptr, ds0_ptr,
                deps_ptr, sync_ptr, carry_ptr, T, H, n_seq, n_dblk, n_tiles, k_ptr,
                HAS_S0: tl.constexpr, HAS_EPS: tl.constexpr, ACC: tl.constexpr,
                BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    i, seq = claim(sync_ptr, n_seq)
    pid_b = (seq // n_dblk).to(tl.int64)
    for_batch = pid_b * T * H
    c_ptr += for_batch
    beta_ptr += for_batch
    d = (seq % n_dblk) * BLOCK_D + tl.arange(0, BLOCK_D)
    dmask = d < H
    rows = tl.arange(0, BLOCK_T)
    eps = tl.load(eps_ptr + d, mask=dmask, other=0.0).to(ACC)[None, :] if HAS_EPS else 0.0
    if HAS_S0:
        s0_row = tl.load(s0_ptr + pid_b * H + d, mask=dmask, other=0.0).to(ACC)[None, :]
    else:
        s0_row = 0.0
    k = tl.load(k_ptr).to(ACC)  # the sharpness, in the data's precision
    pik = PI * k

    off, mask = tile(i, T, H, d, dmask, rows, True, False, BLOCK_T)
    t = (tile_start(i, T, BLOCK_T, True) + rows)[:, None]
    c, beta = _load_cb(c_ptr, beta_ptr, off, mask, ACC)
    gs = tl.load(gs_ptr + for_batch + off, mask=mask, other=0.0).to(ACC)
    # a_{t+1}: 0 past the end (nothing flows back from there), the identity on padding rows
    c_n, beta_n = _load_cb(c_ptr + H, beta_ptr + H, off, mask & (t + 1 < T), ACC)
    _, _, a_n = _gates(c_n, beta_n, eps, HAS_EPS)
    a_n = tl.where(mask, tl.where(t + 1 < T, a_n, 0.0), 1.0)
    # s_{t-1}: s0 (or 0) before the start
    s_p = tl.load(s_ptr + for_batch + off - H, mask=mask & (t >= 1), other=0.0).to(ACC)
    if HAS_S0:
        s_p = tl.where(t == 0, s0_row, s_p)

    A, G = tl.associative_scan((a_n, gs), 0, combine, reverse=True)
    e, f = pick_row(A, rows, 0), pick_row(G, rows, 0)
    g_in, _ = handoff(s0_ptr, sync_ptr, carry_ptr, i, seq, n_seq, d, dmask, e, e, f, f, False,
                      False, ACC, BLOCK_D)
    g_out = e * g_in + f
    g = A * g_in[None, :] + G

    z, v, _ = _gates(c, beta, eps, HAS_EPS)
    da = g * s_p
    dz = (eps - 1.0) * da + g * v
    u = tl.abs(c) - tl.abs(beta)
    dz_du = dz * k / (1.0 + (pik * u) * (pik * u))
    dc = dz_du * _dabs(c) + g * z * 2.0 * k / (1.0 + (pik * c) * (pik * c))
    store_tile(dc_ptr + for_batch, dc, i, T, H, d, dmask, rows, True, False, BLOCK_T)
    store_tile(dbeta_ptr + for_batch, -dz_du * _dabs(beta), i, T, H, d, dmask, rows, True, False,
               BLOCK_T)
    if HAS_EPS:  # this tile's share of dL/dε
        tl.store(deps_ptr + (i * n_seq + seq) * BLOCK_D + tl.arange(0, BLOCK_D),
                 tl.sum(da * z, axis=0))
    if HAS_S0:  # the last tile visited holds the first step: ds0 = a_1 g_1
        if i == n_tiles - 1:
            c0 = tl.load(c_ptr + d, mask=dmask, other=0.0).to(ACC)
            beta0 = tl.load(beta_ptr + d, mask=dmask, other=1.0).to(ACC)
            # names of their own: a runtime branch may not rebind `_` (a tile above) to a row
            z0, v0, a0 = _gates(c0[None, :], beta0[None, :], eps, HAS_EPS)
            ds0 = tl.sum(a0, axis=0) * g_out
            tl.store(ds0_ptr + pid_b * H + d, ds0.to(ds0_ptr.dtype.element_ty), mask=dmask)


# ---------------------------------------------------------------------------------------------
# host side


def _work(dtype: torch.dtype) -> torch.dtype:
    """The dtype the kernels compute in: float64 for float64, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _config(tiles: list[int], H: int, dtype: torch.dtype, backward: bool) -> Config:
    return Config(*tiles) if tiles else default_config(H, dtype, backward)


def _launch_forward(c: Tensor, beta: Tensor, s0: Optional[Tensor], epsilon: Optional[Tensor],  # noqa: UP045
                    tiles: list[int]) -> Tensor:
    """``s`` by the forward kernel (inputs checked and contiguous, ``beta``, ``s0`` in ``c``'s
    dtype); ``tiles`` a :class:`Config` as a list, empty for :func:`default_config`."""
    B, T, H = c.shape
    cfg = _config(tiles, H, c.dtype, backward=False)
    s = torch.empty_like(c)
    n_tiles, n_dblk = triton.cdiv(T, cfg.block_t), triton.cdiv(H, cfg.block_d)
    sync, carry = chain_buffers(n_tiles, B * n_dblk, cfg.block_d, _work(c.dtype), c.device)
    with on_device(c):
        _fwd_kernel[(n_tiles * B * n_dblk,)](
            c, beta, s0 if s0 is not None else c, epsilon if epsilon is not None else c, s,
            sync, carry, T, H, B * n_dblk, n_dblk, HAS_S0=s0 is not None,
            HAS_EPS=epsilon is not None, ACC=_acc(c.dtype), BLOCK_T=cfg.block_t,
            BLOCK_D=cfg.block_d, num_warps=cfg.num_warps)
    return s


def _launch_backward(grad_s: Tensor, c: Tensor, beta: Tensor, s0: Optional[Tensor],  # noqa: UP045
                     epsilon: Optional[Tensor], s: Tensor, sharpness: float,  # noqa: UP045
                     tiles: list[int]) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """``(dc, dβ, ds0, dε)`` by the backward kernel; ``ds0``, ``dε`` None when ``s0``, ``ε``
    are."""
    B, T, H = c.shape
    cfg = _config(tiles, H, c.dtype, backward=True)
    dc, dbeta = torch.empty_like(c), torch.empty_like(beta)
    ds0 = torch.empty_like(s0) if s0 is not None else None
    acc = _work(c.dtype)
    n_tiles, n_dblk = triton.cdiv(T, cfg.block_t), triton.cdiv(H, cfg.block_d)
    sync, carry = chain_buffers(n_tiles, B * n_dblk, cfg.block_d, acc, c.device)
    deps = (torch.empty(n_tiles, B, n_dblk * cfg.block_d, device=c.device, dtype=acc)
            if epsilon is not None else None)
    with on_device(c):
        _bwd_kernel[(n_tiles * B * n_dblk,)](
            c, beta, s0 if s0 is not None else c, epsilon if epsilon is not None else c, s,
            grad_s, dc, dbeta, ds0 if s0 is not None else c, deps if deps is not None else c, sync,
            carry, T, H, B * n_dblk, n_dblk, n_tiles, constants(c.device, acc, float(sharpness)),
            HAS_S0=s0 is not None, HAS_EPS=epsilon is not None, ACC=_acc(c.dtype),
            BLOCK_T=cfg.block_t, BLOCK_D=cfg.block_d, num_warps=cfg.num_warps)
    deps = deps.sum((0, 1))[:H].to(epsilon.dtype) if deps is not None else None
    return dc, dbeta, ds0, deps


# the operators' schemas are read from these annotations: evaluated (no `from __future__ import
# annotations` in this module) and in typing's spelling, as every torch >= 2.4 reads them
@torch.library.custom_op("bistable::fused_mru", mutates_args=())
def fused_mru_op(c: Tensor, beta: Tensor, s0: Optional[Tensor], epsilon: Optional[Tensor],  # noqa: UP045
                 sharpness: float, tiles: List[int]) -> Tensor:  # noqa: UP006
    """:func:`_launch_forward` as an operator; ``sharpness`` is the backward's."""
    return _launch_forward(c, beta, s0, epsilon, tiles)


@fused_mru_op.register_fake
def _fused_mru_shape(c, beta, s0, epsilon, sharpness, tiles):
    return torch.empty_like(c)


@torch.library.custom_op("bistable::fused_mru_backward", mutates_args=())
def fused_mru_backward_op(grad_s: Tensor, c: Tensor, beta: Tensor, s0: Optional[Tensor],  # noqa: UP045
                          epsilon: Optional[Tensor], s: Tensor, sharpness: float,  # noqa: UP045
                          tiles: List[int]) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # noqa: UP006
    """:func:`_launch_backward` as an operator: ``ds0``, ``dε`` empty when ``s0``, ``ε`` are
    None (an operator returns tensors only)."""
    dc, dbeta, ds0, deps = _launch_backward(grad_s, c, beta, s0, epsilon, s, sharpness, tiles)
    return (dc, dbeta, c.new_empty(0) if ds0 is None else ds0,
            c.new_empty(0) if deps is None else deps)


@fused_mru_backward_op.register_fake
def _fused_mru_backward_shapes(grad_s, c, beta, s0, epsilon, s, sharpness, tiles):
    return (torch.empty_like(c), torch.empty_like(beta),
            torch.empty_like(s0) if s0 is not None else c.new_empty(0),
            torch.empty_like(epsilon) if epsilon is not None else c.new_empty(0))


def _save(ctx, inputs, output):
    c, beta, s0, epsilon, ctx.sharpness, ctx.tiles = inputs
    ctx.save_for_backward(c, beta, s0, epsilon, output)


def _backward(ctx, grad_s):
    c, beta, s0, epsilon, s = ctx.saved_tensors
    dc, dbeta, ds0, deps = fused_mru_backward_op(grad_s.contiguous(), c, beta, s0, epsilon, s,
                                                 ctx.sharpness, ctx.tiles)
    return (dc, dbeta, ds0 if s0 is not None else None,
            deps if epsilon is not None else None, None, None)


fused_mru_op.register_autograd(_backward, setup_context=_save)


class _EagerFusedMRU(torch.autograd.Function):
    """The operators' autograd for eager mode: the same kernel launches, without their
    dispatch."""

    @staticmethod
    def forward(ctx, c, beta, s0, epsilon, sharpness, tiles):
        s = _launch_forward(c, beta, s0, epsilon, tiles)
        ctx.save_for_backward(c, beta, s0, epsilon, s)
        ctx.sharpness, ctx.tiles = sharpness, tiles
        return s

    @staticmethod
    def backward(ctx, grad_s):
        c, beta, s0, epsilon, s = ctx.saved_tensors
        if recording():  # create_graph=True: recomputed in plain operations, recorded
            inputs = (c, beta, s0, epsilon)
            plain = _plain_states(*inputs, ctx.sharpness, linear_scan)
            return (*recorded_grads((plain,), inputs, (grad_s,), ctx.needs_input_grad[:4]),
                    None, None)
        return (*_launch_backward(grad_s.contiguous(), c, beta, s0, epsilon, s, ctx.sharpness,
                                  ctx.tiles), None, None)


def _check(c, beta, s0, epsilon, surrogate, sharpness) -> None:
    if not isinstance(c, torch.Tensor) or c.dim() != 3 or not c.is_floating_point():
        got = (f"{tuple(c.shape)} {c.dtype}" if isinstance(c, torch.Tensor)
               else type(c).__name__)
        raise ValueError(f"c: expected a floating tensor of shape (B, T, H), got {got}")
    B, T, H = c.shape
    if T < 1:
        raise ValueError(f"c: expected at least one time step, got shape {tuple(c.shape)}")
    expected = {"beta": (beta, (B, T, H)), "s0": (s0, (B, H)), "epsilon": (epsilon, (H,))}
    for name, (x, shape) in expected.items():
        if x is None and name != "beta":
            continue
        if not isinstance(x, torch.Tensor) or tuple(x.shape) != shape:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{name}: expected shape {shape}, got {got}")
        if not x.is_floating_point():
            raise ValueError(f"{name}: expected a floating dtype, got {x.dtype}")
        if x.device != c.device:
            raise ValueError(f"{name}: expected device {c.device} (that of c), got {x.device}")
    if T * H >= 2**31:
        raise ValueError(f"c: a batch row of shape {(T, H)} is too large for 32-bit offsets")
    if surrogate not in SURROGATES:
        raise ValueError(f"surrogate: expected one of {SURROGATES}, got {surrogate!r}")
    try:  # a number of any kind (numpy's, a 0-dim tensor), not a flag
        k = None if isinstance(sharpness, (bool, str)) else float(sharpness)
    except (TypeError, ValueError, RuntimeError):
        k = None
    if k is None or not math.isfinite(k) or k <= 0:
        raise ValueError(f"sharpness: expected a finite number > 0, got {sharpness!r}")


def fused_mru(c: torch.Tensor, beta: torch.Tensor, s0: torch.Tensor | None = None,
              epsilon: torch.Tensor | None = None, surrogate: str = "atan",
              sharpness: float = 1.0, *, config: Config | None = None) -> torch.Tensor:
    """States ``s`` ``(B, T, H)`` of the MRU family from ``c, β`` ``(B, T, H)`` (module docstring).

    Args:
        c: the drive, ``(B, T, H)``; ``s`` comes back in its dtype (bf16/fp16 computed in fp32).
        beta: the band half-width, ``(B, T, H)``.
        s0: ``(B, H)`` initial state, or None for zeros.
        epsilon: ``(H,)`` per-unit ε (CMRU family), or None for the BMRU (ε = 0).
        surrogate: the backward's surrogate of ``H`` and ``sign``; only ``"atan"``.
        sharpness: its ``k``.
        config: launch shape (tiles), :func:`default_config` when None.
    """
    _check(c, beta, s0, epsilon, surrogate, sharpness)
    if c.device.type != "cuda" and not triton_interpreting():
        raise ValueError(f"c: expected a CUDA tensor for the Triton kernels (or "
                         f"TRITON_INTERPRET=1), got device {c.device}; fused_mru_reference runs "
                         "anywhere")
    if c.numel() == 0:  # B = 0 or H = 0: nothing to launch
        return fused_mru_reference(c, beta, s0, epsilon, surrogate, sharpness)
    beta = beta.to(c.dtype).contiguous()
    s0 = None if s0 is None else s0.to(c.dtype).contiguous()
    epsilon = None if epsilon is None else epsilon.contiguous()
    op = fused_mru_op if torch.compiler.is_compiling() else _EagerFusedMRU.apply
    return op(c.contiguous(), beta, s0, epsilon, float(sharpness),
              list(config) if config is not None else [])


class _AtanStep(torch.autograd.Function):
    """``H(u)`` (``H(0) = 1``) forward; ``k / (1 + (π k u)²)`` backward."""

    @staticmethod
    def forward(ctx, u, k: float):
        ctx.save_for_backward(u)
        ctx.k = k
        return (u >= 0).to(u.dtype)

    @staticmethod
    def backward(ctx, grad):
        (u,) = ctx.saved_tensors
        return grad * ctx.k / (1 + (math.pi * ctx.k * u) ** 2), None


def fused_mru_reference(c: torch.Tensor, beta: torch.Tensor, s0: torch.Tensor | None = None,
                        epsilon: torch.Tensor | None = None, surrogate: str = "atan",
                        sharpness: float = 1.0) -> torch.Tensor:
    """:func:`fused_mru` in plain PyTorch: surrogate gates, then the plain-loop scan."""
    _check(c, beta, s0, epsilon, surrogate, sharpness)
    return _plain_states(c, beta, s0, epsilon, sharpness, linear_scan_reference)


def _plain_states(c, beta, s0, epsilon, sharpness: float, scan):
    """The states by surrogate gates in plain operations and ``scan`` (autograd to any order)."""
    z = _AtanStep.apply(c.abs() - beta.abs(), sharpness)  # autograd: d|x|/dx = 0 at 0
    v = 2 * _AtanStep.apply(c, sharpness) - 1  # sign(c), with the surrogate 2k / (1 + (πkc)²)
    a = 1 - z if epsilon is None else 1 - z + epsilon * z
    return scan(a, z * v, s0)
