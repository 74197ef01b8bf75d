"""Input and state checks shared by every unit, and the linear schedule of the training aids.

Each check raises ``ValueError`` naming the argument, the expected and the received shape or dtype,
so that a wrong call fails at the unit's door instead of deep inside a scan.
"""

from __future__ import annotations

import cmath
import contextlib
import math
import numbers
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.torch_version import TorchVersion


def transforms_active() -> bool:
    """True inside a ``torch.func`` transform (``grad``, ``vjp``, ``jacrev``, ``jvp``, ``jacfwd``,
    ``vmap``) or a ``torch.autograd.forward_ad`` dual level: the units then run paths made of
    operations those transforms know (the plain scan and loops), not the fused kernels (C++
    loops, Triton) or block-recomputing functions. False while ``torch.compile`` traces (it
    cannot trace the question; its operators serve)."""
    if torch.compiler.is_compiling():
        return False
    return (torch._C._functorch.peek_interpreter_stack() is not None
            or torch.autograd.forward_ad._current_level >= 0)


@contextlib.contextmanager
def evaluating(module: nn.Module):
    """``module`` in evaluation mode inside (no dropout, no training noise), back in the mode it
    was in afterwards, however the block ends."""
    mode = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(mode)


def _is_int(n) -> bool:
    return isinstance(n, numbers.Integral) and not isinstance(n, bool)


def check_sizes(**sizes) -> None:
    """Check layer sizes given as keywords (``hidden_size=4``): each a positive integer."""
    for name, n in sizes.items():
        if not _is_int(n) or n < 1:
            raise ValueError(f"{name}: expected a positive int, got {n!r}")


def check_flags(**flags) -> None:
    """Check switches given as keywords (``learn_init=True``): each a bool (the string
    ``"false"`` would count as true)."""
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise ValueError(f"{name}: expected True or False, got {value!r}")


def check_count(n, name: str, what: str = "") -> None:
    """Check a count that may be 0 (``what`` names its items in the message)."""
    if not _is_int(n) or n < 0:
        raise ValueError(f"{name}: expected an int >= 0{' ' + what if what else ''}, got {n!r}")


def check_number(value, name: str, ok: Callable[[float], bool] = lambda v: True,
                 expected: str = "a finite number") -> float:
    """``value`` as a float, or ValueError unless it is a finite real number with ``ok(value)``
    (``expected`` describes the condition in the message)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not math.isfinite(value) or not ok(value):
        raise ValueError(f"{name}: expected {expected}, got {value!r}")
    return float(value)


def _tensor(x, name: str, expected: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor of shape {expected}, "
                         f"got {type(x).__name__}")
    return x


def _floating(x: torch.Tensor, name: str) -> None:
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating dtype (float16/bfloat16/float32/float64), "
                         f"got {x.dtype}")


def _finite(x: torch.Tensor, name: str) -> None:
    # a sum is NaN/Inf whenever an element is, and is much cheaper than a boolean mask; only when
    # it is not finite (an element, or an overflow of finite ones) is the exact mask checked.
    # Skipped under torch.compile (a check on values would break the graph) and torch.func
    # transforms (vmap cannot branch on a value per sample).
    if torch.compiler.is_compiling() or transforms_active():
        return
    x = x.detach()
    total = x.sum().item()  # one kernel and a Python test: a third of isfinite's cost per step
    finite = cmath.isfinite(total) if isinstance(total, complex) else math.isfinite(total)
    if not finite and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: expected finite values, got NaN or Inf")


# the torch from which torch.compile traces every model whole (tested on 2.11 and 2.13; 2.4's
# dynamo cannot trace module.parameters() nor a module's setattr; those between: untested)
COMPILE_TESTED_FROM = (2, 11)
_DYNAMO_TRACES_PARAMETERS = TorchVersion(torch.__version__) >= COMPILE_TESTED_FROM


def _dtypes_may_differ(x: torch.Tensor) -> bool:
    """Whether a dtype check on ``x`` is off: under autocast (it mixes dtypes on purpose), and
    while an older dynamo than :data:`COMPILE_TESTED_FROM` compiles (it cannot trace the check)."""
    if torch.compiler.is_compiling() and not _DYNAMO_TRACES_PARAMETERS:
        return True
    device = x.device.type
    return torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device)


def _like_module(x: torch.Tensor, module: nn.Module | None, name: str) -> None:
    # as torch.nn.RNN asks: the input on its module's device, and in its parameter dtype unless
    # autocast mixes them
    if module is None or (torch.compiler.is_compiling() and not _DYNAMO_TRACES_PARAMETERS):
        return
    p = next(module.parameters(), None)
    if p is None:
        return
    if x.device != p.device:
        raise ValueError(f"{name}: expected device {p.device} (that of the module's parameters; "
                         f"move the input or the module with .to()), got {x.device}")
    if x.dtype != p.dtype and not _dtypes_may_differ(x):
        raise ValueError(f"{name}: expected dtype {p.dtype} (that of the module's parameters; "
                         f"convert the input or the module with .to()), got {x.dtype}")


def check_input(x, input_size: int, name: str = "x", module: nn.Module | None = None) -> None:
    """Check a sequence input: a finite floating tensor of shape ``(B, T, input_size)``, T ≥ 1, in
    the dtype of ``module``'s parameters when a module is given (outside autocast)."""
    expected = f"(B, T, {input_size})"
    x = _tensor(x, name, expected)
    if x.dim() != 3 or x.shape[-1] != input_size or x.shape[1] < 1:
        raise ValueError(f"{name}: expected shape {expected} with T >= 1, got {tuple(x.shape)}")
    _floating(x, name)
    _like_module(x, module, name)
    _finite(x, name)


def check_step_input(x_t, input_size: int, name: str = "x_t",
                     module: nn.Module | None = None) -> None:
    """Check one time step of input: a finite floating tensor of shape ``(B, input_size)``, in the
    dtype of ``module``'s parameters when a module is given (outside autocast)."""
    expected = f"(B, {input_size})"
    x_t = _tensor(x_t, name, expected)
    if x_t.dim() != 2 or x_t.shape[-1] != input_size:
        raise ValueError(f"{name}: expected shape {expected}, got {tuple(x_t.shape)}")
    _floating(x_t, name)
    _like_module(x_t, module, name)
    _finite(x_t, name)


def check_state(state, shape: Sequence[int], name: str = "state",
                dtype: torch.dtype | None = None, device: torch.device | None = None) -> None:
    """Check a state tensor: shape exactly ``shape`` (e.g. ``(B, hidden_size)``), floating or
    complex dtype, ``dtype`` when given (that of the states the unit returns; as ``nn.RNN`` asks
    of ``hx``, unless autocast mixes them), on ``device`` when given (the input's), finite
    values."""
    expected = tuple(shape)
    state = _tensor(state, name, str(expected))
    if tuple(state.shape) != expected:
        raise ValueError(f"{name}: expected shape {expected}, got {tuple(state.shape)}")
    if not (state.is_floating_point() or state.is_complex()):
        raise ValueError(f"{name}: expected a floating or complex dtype, got {state.dtype}")
    if dtype is not None and state.dtype != dtype and not _dtypes_may_differ(state):
        raise ValueError(f"{name}: expected dtype {dtype} (that of the unit's states; convert "
                         f"the state with .to()), got {state.dtype}")
    if device is not None and state.device != torch.device(device):
        raise ValueError(f"{name}: expected device {device} (that of the input; move the state "
                         f"with .to()), got {state.device}")
    _finite(state, name)


def check_operands(reference: tuple[str, torch.Tensor], rank: int, **operands) -> None:
    """Check a fused operator's operands before they reach its kernel, which trusts its sizes:
    ``reference`` (its name and tensor) of rank ``rank`` and floating, each
    ``name=(tensor, shape)`` of that shape and in the reference's dtype and device."""
    name, reference = reference
    if reference.dim() != rank or not reference.is_floating_point():
        raise ValueError(f"{name}: expected a floating tensor of rank {rank}, got "
                         f"{reference.dtype} of shape {tuple(reference.shape)}")
    for name, (t, shape) in operands.items():
        if (tuple(t.shape), t.dtype, t.device) != (tuple(shape), reference.dtype,
                                                    reference.device):
            raise ValueError(f"{name}: expected shape {tuple(shape)}, {reference.dtype} on "
                             f"{reference.device}, got {tuple(t.shape)}, {t.dtype} on {t.device}")


def in_parameter_dtype(parameter: torch.Tensor, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``tensors`` in the dtype of ``parameter``, one of the unit's own (a no-op outside autocast).
    Under ``torch.autocast`` the products arrive in bfloat16; a unit's recurrence (held states,
    counters, membrane potentials) runs in its parameters' precision, as Mamba's selective scan runs
    in float32: a count past 256 or a potential near its threshold would not survive 8 bits."""
    return tuple(t if t.dtype == parameter.dtype else t.to(parameter.dtype) for t in tensors)


def state_or_zeros(state, x: torch.Tensor, hidden_size: int, name: str = "state") -> torch.Tensor:
    """``state`` checked against ``(B, hidden_size)`` and ``x``'s dtype (``B`` from ``x``), or
    zeros like ``x``."""
    if state is None:
        return x.new_zeros(x.shape[0], hidden_size)
    check_state(state, (x.shape[0], hidden_size), name, x.dtype, x.device)
    return state


def linear_schedule(step: int, total: int, start: float, end: float) -> float:
    """``start + (end − start) · min(step / total, 1)``: a training aid's value at ``step``
    (``start`` at step 0, ``end`` from step ``total`` on)."""
    if total < 1:
        raise ValueError(f"total: expected a positive number of steps, got {total!r}")
    return start + (end - start) * min(max(step, 0) / total, 1.0)
