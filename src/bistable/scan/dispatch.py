"""``linear_scan``: checks its arguments, picks a backend, and wires autograd."""

from __future__ import annotations

import os

import torch

from .autograd import BACKENDS, LOADERS, Backend, scan
from .cpu import scan_cpu
from .reference import linear_scan_reference

BACKENDS["cpu"] = Backend(scan_cpu)
# dtypes each backend stores natively; others are computed in float32 and cast back
_NATIVE = {"cpu": {torch.float32, torch.float64, torch.bfloat16, torch.float16, torch.complex64,
                   torch.complex128}}
BACKEND_NAMES = ("auto", "reference", "cpu", "triton")
_UNAVAILABLE: dict[str, str] = {}  # backend name -> why it did not import


def _triton_backend() -> Backend | None:
    """The Triton backend, imported on first use; None when it cannot be (the reason in
    ``_UNAVAILABLE``, and not tried again: a failed import costs milliseconds)."""
    if "triton" in _UNAVAILABLE:
        return None
    if "triton" not in BACKENDS:
        try:
            from . import triton_scan
        except ImportError as err:
            _UNAVAILABLE["triton"] = str(err)
            return None
        BACKENDS["triton"] = triton_scan.BACKEND
        _NATIVE["triton"] = triton_scan.NATIVE_DTYPES
    return BACKENDS["triton"]


LOADERS["triton"] = _triton_backend


def triton_interpreting() -> bool:
    """Whether ``TRITON_INTERPRET`` asks for Triton's interpreter, read as Triton reads a switch
    (``1``, ``true``, ``yes``, ``on``, any case): its kernels then run on CPU tensors."""
    switch = os.environ.get("TRITON_INTERPRET", "0").strip().lower()
    return switch in ("1", "true", "yes", "on", "y")


def _pick(name: str, device: torch.device) -> str:
    if name not in BACKEND_NAMES:
        raise ValueError(f"backend: expected one of {BACKEND_NAMES}, got {name!r}")
    if name == "auto":
        return "triton" if device.type == "cuda" and _triton_backend() is not None else "cpu"
    if name == "triton" and _triton_backend() is None:
        raise ValueError(f"backend='triton' is unavailable: {_UNAVAILABLE['triton']}")
    if name == "triton" and device.type != "cuda" and not triton_interpreting():
        raise ValueError(f"b: expected a CUDA tensor for backend='triton' (or TRITON_INTERPRET=1), "
                         f"got device {device}")
    return name


_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex32,
           torch.complex64, torch.complex128)


def _check_tensor(name: str, x) -> None:
    """A dense tensor of a dtype the scan computes in (no float8: it has no arithmetic)."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _DTYPES:
        raise ValueError(f"{name}: expected a floating or complex dtype "
                         f"({', '.join(str(d).removeprefix('torch.') for d in _DTYPES)}), "
                         f"got {x.dtype}")
    if not torch.compiler.is_compiling() and x.layout != torch.strided:  # dense under dynamo
        raise ValueError(f"{name}: expected a dense (strided) tensor, got layout {x.layout}")


def _check(a, b, h0, reverse):
    if not isinstance(reverse, bool):
        raise ValueError(f"reverse: expected a bool, got {reverse!r}")
    for name, x in (("a", a), ("b", b)):
        if isinstance(x, torch.Tensor) and x.dim() != 3:
            raise ValueError(f"{name}: expected shape (B, T, D), got {tuple(x.shape)}")
        _check_tensor(name, x)
    B, T, D = b.shape
    if T < 1:
        raise ValueError(f"b: expected at least one time step, got shape {tuple(b.shape)}")
    if a.shape[1:] != b.shape[1:] or a.shape[0] not in (1, B):
        shapes = " or ".join(dict.fromkeys(f"({n}, {T}, {D})" for n in (B, 1)))
        hint = ("; only a broadcasts over the batch, b is (B, T, D)"
                if a.shape[1:] == b.shape[1:] and B == 1 else "")
        raise ValueError(f"a: expected shape {shapes} (b is {tuple(b.shape)}), got "
                         f"{tuple(a.shape)}{hint}")
    if a.device != b.device:
        raise ValueError(f"a: expected device {b.device} (that of b), got {a.device}")
    if h0 is not None:
        if not isinstance(h0, torch.Tensor) or tuple(h0.shape) != (B, D):
            shape = tuple(h0.shape) if isinstance(h0, torch.Tensor) else type(h0).__name__
            raise ValueError(f"h0: expected shape ({B}, {D}), got {shape}")
        _check_tensor("h0", h0)
        if h0.device != b.device:
            raise ValueError(f"h0: expected device {b.device} (that of b), got {h0.device}")


def linear_scan(
    a: torch.Tensor,
    b: torch.Tensor,
    h0: torch.Tensor | None = None,
    *,
    reverse: bool = False,
    backend: str = "auto",
) -> torch.Tensor:
    """First-order linear recurrence over dim 1, differentiable in ``a``, ``b`` and ``h0``.

        h[:, t] = a[:, t] * h[:, t-1] + b[:, t],   h[:, -1] = h0 (zeros if None)

    ``reverse=True`` runs from the end: ``h[:, t] = a[:, t] * h[:, t+1] + b[:, t]``,
    ``h[:, T] = h0``.

    Args:
        a: ``(B, T, D)`` or ``(1, T, D)`` (broadcast over the batch), real or complex.
        b: ``(B, T, D)``.
        h0: ``(B, D)`` initial state, or None for zeros.
        backend: ``"auto"`` (Triton on CUDA when installed, else the chunked ``"cpu"`` path),
            ``"cpu"``, ``"triton"`` or ``"reference"`` (the plain loop).

    Mixed dtypes promote as in ``a * h + b`` (``torch.promote_types``: float32 with float64 gives
    float64, real with complex gives complex). bfloat16/float16 inputs are accumulated in float32
    and returned in their own dtype.
    The backward pass is a scan in the other direction (SPEC.md §1), not autograd of a loop;
    with ``create_graph=True`` it is built of such scans itself, so derivatives of any order
    exist (a gradient penalty, Hessian-vector products). ``torch.func`` transforms work too
    (``grad``, ``vjp``, ``jacrev``, ``jvp``, ``jacfwd``, ``hessian``, ``vmap``); forward mode
    nested in forward mode (``jacfwd(jacfwd(f))``) raises: PyTorch does not differentiate a
    custom ``jvp``.

    The parallel paths (``"cpu"`` chunks, ``"triton"`` tiles) compose products of ``a`` over a
    chunk: where such a product overflows (``|a| > 1`` for long enough) and the state entering
    it is exactly 0, ``inf · 0`` gives NaN where the plain loop stays finite. Every unit here has
    ``|a| ≤ 1``.
    """
    _check(a, b, h0, reverse)
    dtype = torch.promote_types(a.dtype, b.dtype)
    if h0 is not None:
        dtype = torch.promote_types(dtype, h0.dtype)
    name = _pick(backend, b.device)
    if name == "reference":
        work = torch.promote_types(dtype, torch.float32)  # bf16/fp16 accumulated in fp32 too
        h0 = h0 if h0 is None else h0.to(work)
        return linear_scan_reference(a.to(work), b.to(work), h0, reverse=reverse).to(dtype)
    if b.numel() == 0 or (dtype.is_complex and dtype not in _NATIVE[name]):
        name = "cpu"  # no work to launch; never drop an imaginary part
    work = (dtype if dtype in _NATIVE[name] else
            torch.promote_types(dtype, torch.complex64 if dtype.is_complex else torch.float32))
    a, b = a.to(work).contiguous(), b.to(work).contiguous()
    h0 = None if h0 is None else h0.to(work).contiguous()
    h = scan(a, b, h0, reverse, name)
    return h.to(dtype)
