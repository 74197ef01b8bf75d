"""The residual block of SPEC.md §4: pre-norm → mixer → residual; pre-norm → GLU MLP → residual."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..units.base import check_input, check_sizes, check_step_input
from ..units.bmru import BMRU, CMRU
from ..units.brc import BRC, NBRC
from ..units.lru import LRU
from ..units.mingru import MinGRU
from ..units.rnn import GRU, LSTM

UNITS: dict[str, type[nn.Module]] = {
    "bmru": BMRU, "cmru": CMRU, "lru": LRU, "brc": BRC, "nbrc": NBRC, "mingru": MinGRU,
    "gru": GRU, "lstm": LSTM,
}
NORMS: dict[str, type[nn.Module]] = {"layer": nn.LayerNorm, "rms": nn.RMSNorm}


def make_unit(name: str, input_size: int, hidden_size: int, **kwargs) -> nn.Module:
    """The unit ``UNITS[name](input_size, hidden_size, **kwargs)``."""
    if name not in UNITS:
        raise ValueError(f"unit: expected one of {sorted(UNITS)}, got {name!r}")
    options = [p for p in inspect.signature(UNITS[name]).parameters
               if p not in ("input_size", "hidden_size")]
    unknown = sorted(set(kwargs) - set(options))
    if unknown:
        raise ValueError(f"{name}: unknown option(s) {', '.join(unknown)}; "
                         f"valid: {', '.join(options) or 'none'}")
    return UNITS[name](input_size, hidden_size, **kwargs)


def make_norm(kind: str, size: int) -> nn.Module:
    """``nn.LayerNorm(size)`` for ``"layer"``, ``nn.RMSNorm(size)`` for ``"rms"``."""
    if kind not in NORMS:
        raise ValueError(f"norm: expected one of {sorted(NORMS)}, got {kind!r}")
    return NORMS[kind](size)


def check_unit_kwargs(unit_kwargs: Mapping[str, Mapping], names: Sequence[str]) -> None:
    """ValueError unless ``unit_kwargs`` maps names of the units ``names`` to option mappings."""
    if not isinstance(unit_kwargs, Mapping):
        raise ValueError(f"unit_kwargs: expected a mapping of unit name to options, got "
                         f"{type(unit_kwargs).__name__}")
    odd = [key for key, options in unit_kwargs.items() if not isinstance(options, Mapping)]
    if odd:
        raise ValueError(f"unit_kwargs[{odd[0]!r}]: expected a mapping of option to value, got "
                         f"{type(unit_kwargs[odd[0]]).__name__}")
    unknown = [key for key in unit_kwargs if key not in names]
    if unknown:
        raise ValueError(f"unit_kwargs: expected keys among the mixer's units "
                         f"{', '.join(dict.fromkeys(names))}, got {', '.join(map(repr, unknown))}")


def state_kind(state) -> str:
    """How a received state reads in an error message: ``"a tuple of 3"`` or its type name."""
    return f"a tuple of {len(state)}" if isinstance(state, tuple) else type(state).__name__


class GLUMLP(nn.Module):
    r"""Gated MLP: [u; g] = W_1 x + b_1 (2·ratio·d outputs), y = W_2 (u ⊙ σ(g)) + b_2.

    Shapes: ``(..., d)`` → ``(..., d)``; inner width ``ratio · d`` (4× by default).
    """

    def __init__(self, size: int, ratio: int = 4):
        super().__init__()
        self.up = nn.Linear(size, 2 * ratio * size)
        self.down = nn.Linear(ratio * size, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.glu(self.up(x), dim=-1))


class Block(nn.Module):
    r"""One residual block (SPEC.md §4), width d = ``size``:

        u = x + Σ_k unit_k(norm_1(x))        mixer: one unit, or several side by side, summed
        y = u + MLP(norm_2(u))               GLU MLP, inner width mlp_ratio · d

    ``mixer`` names the units (keys of :data:`UNITS`): ``"lru"``, ``"lru+bmru"`` or a sequence of
    names; each unit maps d → d and gets ``unit_kwargs[name]`` as extra constructor arguments
    (a key that names no unit of the mixer is a ValueError).
    ``norm`` is ``"layer"`` (LayerNorm) or ``"rms"`` (RMSNorm).

    Shapes: x ``(B, T, d)`` → y ``(B, T, d)``; the state is a tuple with one unit state per mixer
    unit (``None`` means every unit's initial state).
    """

    def __init__(
        self,
        size: int,
        mixer: str | Sequence[str],
        *,
        norm: str = "layer",
        mlp_ratio: int = 4,
        unit_kwargs: Mapping[str, Mapping] | None = None,
    ):
        super().__init__()
        check_sizes(size=size, mlp_ratio=mlp_ratio)
        names = tuple(mixer.split("+")) if isinstance(mixer, str) else tuple(mixer)
        if not names:
            raise ValueError("mixer: expected at least one unit name, got none")
        unit_kwargs = unit_kwargs or {}
        check_unit_kwargs(unit_kwargs, names)
        self.size, self.mixer = size, names
        self.norm1, self.norm2 = make_norm(norm, size), make_norm(norm, size)
        self.units = nn.ModuleList(
            make_unit(name, size, size, **unit_kwargs.get(name, {})) for name in names
        )
        self.mlp = GLUMLP(size, mlp_ratio)

    def _states(self, state) -> tuple:
        if state is None:
            return (None,) * len(self.units)
        if not isinstance(state, tuple) or len(state) != len(self.units):
            raise ValueError(f"state: expected a tuple of {len(self.units)} unit states or None, "
                             f"got {state_kind(state)}")
        return state

    def _mix(self, x, state, method: str):
        """(x + Σ_k unit_k.method(norm_1(x)), new states), then the MLP with its residual.
        ``forward`` goes through the unit's ``__call__``, so its forward hooks run."""
        u = self.norm1(x)
        calls = self.units if method == "forward" else [unit.step for unit in self.units]
        outputs, states = zip(*(call(u, s) for call, s in zip(calls, self._states(state))))
        x = x + sum(outputs)
        return x + self.mlp(self.norm2(x)), tuple(states)

    def forward(self, x: torch.Tensor, state: tuple | None = None):
        """x ``(B, T, d)``, state tuple or None → (y ``(B, T, d)``, state tuple)."""
        check_input(x, self.size, module=self)
        return self._mix(x, state, "forward")

    def step(self, x_t: torch.Tensor, state: tuple | None = None):
        """One step: x_t ``(B, d)``, state tuple or None → (y_t ``(B, d)``, state tuple)."""
        check_step_input(x_t, self.size, module=self)
        return self._mix(x_t, state, "step")

    def extra_repr(self) -> str:
        return f"mixer={'+'.join(self.mixer)}"
