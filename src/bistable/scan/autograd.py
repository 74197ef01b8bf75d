"""Autograd for the scan by its analytic backward, itself a scan in the other direction.

With ``g_t = dL/dh_t`` (total) and the forward ``h_t = a_t ⊙ h_{t-1} + b_t``:

    g_t = dL/dh_t(direct) + conj(a_{t+1}) ⊙ g_{t+1}
    dL/db_t = g_t ,   dL/da_t = g_t ⊙ conj(h_{t-1}) ,   dL/dh_0 = conj(a_1) ⊙ g_1

(``reverse=True`` swaps the roles of ``t-1`` and ``t+1``.) A backend supplies ``forward(a, b,
h0, reverse) -> h`` and may supply a fused ``backward(a, h, h0, grad_h, reverse, need_da)``
(``da`` None unless ``need_da``); otherwise :func:`backward_by_scan` builds it from the backend's
forward (which must then take ``out=``).

:func:`scan` wires it. Under ``torch.compile`` it calls PyTorch custom operators
(``bistable::linear_scan``, ``bistable::linear_scan_backward``) taking the backend by its name in
:data:`BACKENDS`: each is one opaque node with a known output shape, so a model around the scan
compiles into one graph. In eager mode it calls the same backend functions through a plain
``torch.autograd.Function``, which costs a fraction of the operators' Python dispatch per call
(``benchmarks/dispatch.py``).
"""

from collections.abc import Callable
from typing import NamedTuple, Optional

import torch
from torch import Tensor
from torch._functorch.utils import unwrap_dead_wrappers
from torch.autograd import forward_ad

Forward = Callable[..., torch.Tensor]  # (a, b, h0, reverse, out=None) -> h


class Backend(NamedTuple):
    forward: Forward
    backward: Callable | None = None


def backward_by_scan(forward: Forward, a, h, h0, grad_h, reverse: bool, need_da: bool = True):
    """``(da, db, dh0)`` of the scan, with ``da`` already summed over a broadcast batch (None
    unless ``need_da``: a constant ``a``, as the SRC's leak, spares a pass over the sequence).

    ``forward`` must accept strided views along time and an ``out=`` tensor: the shifted
    coefficients ``a_{t+1}`` and states ``h_{t-1}`` are then views, never copies.
    """
    a = a.conj() if a.is_complex() else a
    h = h.conj() if h.is_complex() else h
    T = h.shape[1]
    # the later and earlier time indices in the forward direction of this scan
    later, earlier = (slice(0, T - 1), slice(1, T)) if reverse else (slice(1, T), slice(0, T - 1))
    last, first = (0, -1) if reverse else (-1, 0)
    g = torch.empty_like(grad_h)
    g[:, last] = grad_h[:, last]
    if T > 1:  # g_t = grad_t + conj(a_{t+1}) g_{t+1}: a scan in the other direction
        forward(a[:, later], grad_h[:, earlier], grad_h[:, last], not reverse, out=g[:, earlier])
    dh0 = a[:, first] * g[:, first] if h0 is not None else None
    if not need_da:
        return None, g, dh0
    da = torch.empty_like(g)
    torch.mul(g[:, later], h[:, earlier], out=da[:, later])  # da_t = g_t ⊙ conj(h_{t-1})
    if h0 is None:
        da[:, first] = 0
    else:
        torch.mul(g[:, first], h0.conj() if h0.is_complex() else h0, out=da[:, first])
    if a.shape[0] == 1 and g.shape[0] != 1:
        da = da.sum(0, keepdim=True)
    return da, g, dh0


def apply(function: type[torch.autograd.Function], *args):
    """``function.apply(*args)`` (all arguments positional) without ``Function.apply``'s
    Python wrapper: for a ``setup_context``-style function it binds the signature by ``inspect``
    on every call, about 15 µs, more than the C++ ``apply`` itself costs. Inside ``torch.func``
    transforms, and while ``torch.compile`` traces, the wrapper is needed, and called."""
    if torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active():
        return function.apply(*args)
    return super(torch.autograd.Function, function).apply(*unwrap_dead_wrappers(args))


def recorded_grads(outputs, inputs, grads, needed) -> list:
    """The gradients of ``outputs`` (weighted by ``grads``) in the ``inputs`` marked ``needed``,
    recorded (``create_graph=True``), None for the others: a fused function's backward when its
    gradients are to be differentiated again, by autograd through its plain operations
    (``outputs``, computed from ``inputs`` under grad mode)."""
    wanted = [x for x, need in zip(inputs, needed) if need]
    pairs = [(o, g) for o, g in zip(outputs, grads) if o.requires_grad]
    found = iter(torch.autograd.grad([o for o, _ in pairs], wanted, [g for _, g in pairs],
                                     create_graph=True, allow_unused=True) if pairs else
                 [None] * len(wanted))
    return [next(found) if need else None for need in needed]


def recording() -> bool:
    """True in a backward whose gradients autograd records to differentiate them again
    (``create_graph=True``, ``torch.func``), outside ``torch.compile``: a fused function's
    backward then runs its plain operations (:func:`recorded_grads`)."""
    return torch.is_grad_enabled() and not torch.compiler.is_compiling()


def forward_mode() -> bool:
    """True under forward-mode AD (``torch.func.jvp``/``jacfwd``, ``torch.autograd.forward_ad``)
    outside ``torch.compile``: a Function's ``jvp`` is needed then, and dynamo cannot trace a
    Function that has one, so the units apply a subclass with ``jvp`` only here."""
    return not torch.compiler.is_compiling() and forward_ad._current_level >= 0


def refuse_nested_forward_mode(name: str) -> None:
    """Raise inside forward mode nested in forward mode (``jacfwd(jacfwd(f))``, ``jvp`` of
    ``jvp``, two ``forward_ad`` dual levels): PyTorch does not differentiate a Function's
    ``jvp`` at the outer level (pytorch/pytorch#197867), so the result would be silently wrong.
    Called from each ``jvp`` here."""
    from torch._functorch import eager_transforms

    if getattr(eager_transforms, "JVP_NESTING", 0) > 1 or forward_ad._current_level > 0:
        raise RuntimeError(f"{name}: forward mode nested in forward mode (jacfwd of jacfwd, jvp "
                           "of jvp) is not supported: PyTorch does not differentiate a custom "
                           "jvp; use jacfwd(jacrev(f)) or torch.func.hessian(f)")


BACKENDS: dict[str, Backend] = {}
"""The scan backends by name (filled by :mod:`.dispatch`; tests add tuned variants)."""
LOADERS: dict[str, Callable[[], "Backend | None"]] = {}
"""Backends imported on first use, by name: the function that imports and registers one."""


def _backend(name: str) -> Backend:
    """``BACKENDS[name]``, imported now if not yet: a compiled graph's first call can come before
    the registration done while tracing it, which dynamo replays only after the graph runs."""
    if name not in BACKENDS and name in LOADERS:
        LOADERS[name]()
    return BACKENDS[name]


# the operators' schemas are read from these annotations: evaluated (no `from __future__ import
# annotations` in this module) and in typing's spelling, as every torch >= 2.4 reads them
@torch.library.custom_op("bistable::linear_scan", mutates_args=())
def scan_op(a: Tensor, b: Tensor, h0: Optional[Tensor], reverse: bool, backend: str) -> Tensor:  # noqa: UP045
    """``h`` by the backend named ``backend`` (inputs contiguous, of one dtype it stores)."""
    return _backend(backend).forward(a, b, h0, reverse)


@scan_op.register_fake
def _scan_shape(a, b, h0, reverse, backend):
    return torch.empty_like(b, memory_format=torch.contiguous_format)


@torch.library.custom_op("bistable::linear_scan_backward", mutates_args=())
def scan_backward_op(a: Tensor, h: Tensor, h0: Optional[Tensor], grad_h: Tensor,  # noqa: UP045
                     reverse: bool, backend: str, need_da: bool) -> tuple[Tensor, Tensor, Tensor]:
    """``(da, db, dh0)`` by the backend named ``backend``; ``dh0`` is empty when ``h0`` is None,
    and ``da`` when not ``need_da`` (an operator returns tensors only)."""
    da, db, dh0 = _backward_by(backend, a, h, h0, grad_h, reverse, need_da)
    return (da if need_da else a.new_empty(0), db,
            h.new_empty(0) if dh0 is None else dh0)


def _backward_by(backend: str, a, h, h0, grad_h, reverse: bool, need_da: bool = True):
    """``(da, db, dh0)`` by the backend's fused backward, or built from its forward (``da``
    None when not ``need_da``)."""
    fused = _backend(backend).backward
    if fused is None:
        return backward_by_scan(_backend(backend).forward, a, h, h0, grad_h, reverse, need_da)
    return fused(a, h, h0, grad_h, reverse, need_da)


@scan_backward_op.register_fake
def _scan_backward_shapes(a, h, h0, grad_h, reverse, backend, need_da):
    return (torch.empty_like(a) if need_da else a.new_empty(0), torch.empty_like(grad_h),
            h.new_empty(0) if h0 is None else torch.empty_like(h0))


def _save(ctx, inputs, output):
    a, _, h0, ctx.reverse, ctx.backend = inputs
    ctx.save_for_backward(a, output, h0)


def _backward(ctx, grad_h):
    a, h, h0 = ctx.saved_tensors
    need_da = ctx.needs_input_grad[0]
    da, db, dh0 = scan_backward_op(a, h, h0, grad_h.contiguous(), ctx.reverse, ctx.backend,
                                   need_da)
    return da if need_da else None, db, None if h0 is None else dh0, None, None


scan_op.register_autograd(_backward, setup_context=_save)


class _EagerScan(torch.autograd.Function):
    """The operators' autograd for eager mode: the same backend calls, without their dispatch.

    The backward runs the backend's (fused) backward, or, when it must itself be differentiable
    (``create_graph=True``, ``torch.func`` transforms), :func:`_differentiable_backward`: any
    order then. Forward mode by ``jvp``: the tangent is a scan with the same coefficients,
    ``ḣ_t = a_t ⊙ ḣ_{t-1} + ȧ_t ⊙ h_{t-1} + ḃ_t``, ``ḣ_{-1} = ḣ_0``. ``vmap`` folds the mapped
    dimension into the batch."""

    @staticmethod
    def forward(a, b, h0, reverse, backend):
        return _backend(backend).forward(a, b, h0, reverse)

    @staticmethod
    def setup_context(ctx, inputs, output):
        a, _, h0, ctx.reverse, ctx.backend = inputs
        ctx.save_for_backward(a, output, h0)
        if forward_mode():  # only then: ctx would keep `output` alive
            ctx.save_for_forward(a, output, h0)

    @staticmethod
    def backward(ctx, grad_h):
        a, h, h0 = ctx.saved_tensors
        grad_h, need_da = grad_h.contiguous(), ctx.needs_input_grad[0]
        if recording() or torch._C._are_functorch_transforms_active():
            grads = _differentiable_backward(a, h, h0, grad_h, ctx.reverse, ctx.backend, need_da)
        else:
            grads = _backward_by(ctx.backend, a, h, h0, grad_h, ctx.reverse, need_da)
        return *grads, None, None

    @staticmethod
    def jvp(ctx, da, db, dh0, _reverse, _backend_name):
        refuse_nested_forward_mode("linear_scan")
        a, h, h0 = ctx.saved_tensors
        rhs = torch.zeros_like(h) if db is None else db
        if da is not None:  # + ȧ_t ⊙ h_{t∓1}
            rhs = rhs + da * _previous(h, h0, ctx.reverse)
        if dh0 is not None:
            dh0 = dh0.contiguous()
        return apply(_EagerScan, a, rhs.contiguous(), dh0, ctx.reverse, ctx.backend)

    @staticmethod
    def vmap(info, in_dims, a, b, h0, reverse, backend):
        N = info.batch_size
        b = _mapped(b, in_dims[1], N)
        B = b.shape[1]
        if in_dims[0] is not None or a.shape[0] != 1:  # else a (1, T, D) broadcasts as it is
            a = _fold(_mapped(a, in_dims[0], N), B)
        h0 = None if h0 is None else _fold(_mapped(h0, in_dims[2], N))
        h = apply(_EagerScan, a, _fold(b), h0, reverse, backend)
        return h.unflatten(0, (N, B)), 0


def _differentiable_backward(a, h, h0, grad_h, reverse: bool, backend: str, need_da: bool):
    """``(da, db, dh0)`` as :func:`backward_by_scan` computes them, in operations autograd and
    ``torch.func`` differentiate: ``g`` is a :func:`scan` (so itself differentiable) in the
    other direction with the coefficients ``conj(a_{t±1})``, 0 beyond the edge."""
    a = a.conj() if a.is_complex() else a
    edge = torch.zeros_like(a[:, :1])
    later = torch.cat([edge, a[:, :-1]] if reverse else [a[:, 1:], edge], 1)
    g = apply(_EagerScan, later, grad_h, None, not reverse, backend)
    dh0 = None if h0 is None else a[:, -1 if reverse else 0] * g[:, -1 if reverse else 0]
    if not need_da:
        return None, g, dh0
    previous = _previous(h, h0, reverse)
    da = g * (previous.conj() if previous.is_complex() else previous)
    if a.shape[0] == 1 and g.shape[0] != 1:
        da = da.sum(0, keepdim=True)
    return da, g, dh0


def _previous(h, h0, reverse: bool):
    """``h_{t-1}`` (``h_{t+1}`` when ``reverse``), with ``h0`` (or zeros) beyond the edge."""
    edge = (torch.zeros_like(h[:, 0]) if h0 is None else h0).unsqueeze(1)
    return torch.cat([h[:, 1:], edge] if reverse else [edge, h[:, :-1]], 1)


def _mapped(x: Tensor, dim, N: int) -> Tensor:
    """``x`` with the ``vmap``-ped dimension first: moved from ``dim``, or expanded to ``N``
    where not mapped (``dim`` None)."""
    return x.unsqueeze(0).expand(N, *x.shape) if dim is None else x.movedim(dim, 0)


def _fold(x: Tensor, B: int | None = None) -> Tensor:
    """``(N, B, ...) → (N·B, ...)``, contiguous; a batch of 1 expanded to ``B`` first if given."""
    if B is not None:
        x = x.expand(x.shape[0], B, *x.shape[2:])
    return x.flatten(0, 1).contiguous()


def scan(a: Tensor, b: Tensor, h0: Optional[Tensor], reverse: bool, backend: str) -> Tensor:  # noqa: UP045
    """``h`` by the backend named ``backend`` (inputs contiguous, of one dtype it stores), with
    its autograd: the custom operator while ``torch.compile`` traces, else :class:`_EagerScan`."""
    if torch.compiler.is_compiling():
        return scan_op(a, b, h0, reverse, backend)
    return apply(_EagerScan, a, b, h0, reverse, backend)
