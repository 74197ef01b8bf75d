"""Sequence networks: encoder Linear → stack of residual blocks → final norm → decoder Linear."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..units.base import check_input, check_sizes, check_step_input
from .blocks import Block, check_unit_kwargs, make_norm, state_kind


def parse_mixers(spec: str | Sequence[str | Sequence[str]]) -> list[tuple[str, ...]]:
    """Block mixers from a spec: ``"+"`` puts units side by side in one block, ``","`` separates
    the mixers of successive blocks (cycled over the stack).

    ``"lru"`` → ``[("lru",)]``; ``"lru+bmru"`` → ``[("lru", "bmru")]`` (a side-by-side hybrid);
    ``"lru,bmru"`` → ``[("lru",), ("bmru",)]`` (alternating blocks). A sequence holds one entry
    per block, each a string (possibly with ``"+"``) or a sequence of unit names.
    Anything else is a ValueError.
    """
    entries = spec.split(",") if isinstance(spec, str) else spec
    mixers = [_names(e) for e in entries] if isinstance(entries, Sequence) else []
    if not mixers or any(not m or not all(isinstance(n, str) and n.strip() for n in m)
                         for m in mixers):
        raise ValueError(f"mixer: expected unit names like 'lru', 'lru+bmru' or 'lru,bmru', "
                         f"got {spec!r}")
    return [tuple(name.strip() for name in m) for m in mixers]


def _names(entry) -> tuple:
    """The unit names of one block's entry (a string with ``"+"`` or a sequence); () if neither."""
    if isinstance(entry, str):
        return tuple(entry.split("+"))
    return tuple(entry) if isinstance(entry, Sequence) else ()


class Network(nn.Module):
    r"""Encoder → ``layers`` residual blocks → final norm → decoder (SPEC.md §4).

        e_t = W_in x_t + b_in,   z = Block_L(… Block_1(e)),   y_t = W_out norm(z_t) + b_out

    Every step is read out: y is ``(B, T, output_size)``; a classifier or a last-step regression
    reads ``y[:, -1]``. ``mixer`` is a spec for :func:`parse_mixers`: ``"bmru"``, ``"lru+bmru"``
    (units side by side in every block), ``"lru,bmru"`` (alternating blocks; ``layers`` must be
    at least the number of mixers, so that each is used). ``norm``, ``mlp_ratio`` and
    ``unit_kwargs`` (extra constructor arguments per unit name of the mixer) go to every
    :class:`~bistable.nn.blocks.Block`. The final norm (the pre-norm stack's usual last norm)
    is of the same kind as the blocks' norms.

    The state is a tuple of block states (``None``: every unit's initial state), so a sequence can
    be streamed in chunks with ``forward`` or one step at a time with ``step``.
    """

    def __init__(
        self,
        input_size: int,
        output_size: int,
        *,
        hidden: int = 64,
        layers: int = 2,
        mixer: str | Sequence[str | Sequence[str]] = "bmru",
        norm: str = "layer",
        mlp_ratio: int = 4,
        unit_kwargs: Mapping[str, Mapping] | None = None,
    ):
        super().__init__()
        check_sizes(input_size=input_size, output_size=output_size, hidden=hidden, layers=layers)
        self.input_size, self.output_size = input_size, output_size
        mixers = parse_mixers(mixer)
        if layers < len(mixers):
            raise ValueError(f"layers: expected at least {len(mixers)}, one block per mixer of "
                             f"{mixer!r}, got {layers}")
        unit_kwargs = unit_kwargs or {}
        check_unit_kwargs(unit_kwargs, [name for m in mixers for name in m])
        self.encoder = nn.Linear(input_size, hidden)
        self.blocks = nn.ModuleList(
            Block(hidden, m, norm=norm, mlp_ratio=mlp_ratio,
                  unit_kwargs={k: v for k, v in unit_kwargs.items() if k in m})
            for m in (mixers * layers)[:layers]  # cycled over the stack
        )
        self.norm = make_norm(norm, hidden)
        self.decoder = nn.Linear(hidden, output_size)

    def _states(self, state) -> tuple:
        if state is None:
            return (None,) * len(self.blocks)
        if not isinstance(state, tuple) or len(state) != len(self.blocks):
            raise ValueError(f"state: expected a tuple of {len(self.blocks)} block states or None, "
                             f"got {state_kind(state)}")
        return state

    def _run(self, x, state, method: str):
        h = self.encoder(x)
        states = []
        for block, s in zip(self.blocks, self._states(state)):
            h, s = getattr(block, method)(h, s)
            states.append(s)
        return self.decoder(self.norm(h)), tuple(states)

    def forward(self, x: torch.Tensor, state: tuple | None = None):
        """x ``(B, T, input_size)``, state or None → (y ``(B, T, output_size)``, state)."""
        check_input(x, self.input_size, module=self)
        return self._run(x, state, "forward")

    def step(self, x_t: torch.Tensor, state: tuple | None = None):
        """One step: x_t ``(B, input_size)``, state or None → (y_t ``(B, output_size)``, state)."""
        check_step_input(x_t, self.input_size, module=self)
        return self._run(x_t, state, "step")
