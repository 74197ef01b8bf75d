"""Sequence networks: encoder Linear → stack of residual blocks → final norm → decoder Linear."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..units.base import check_input, check_step_input
from .blocks import Block, make_norm


def parse_mixers(spec: str | Sequence[str | Sequence[str]]) -> list[tuple[str, ...]]:
    """Block mixers from a spec: ``"+"`` puts units side by side in one block, ``","`` separates
    the mixers of successive blocks (cycled over the stack).

    ``"lru"`` → ``[("lru",)]``; ``"lru+bmru"`` → ``[("lru", "bmru")]`` (a side-by-side hybrid);
    ``"lru,bmru"`` → ``[("lru",), ("bmru",)]`` (alternating blocks). A sequence holds one entry
    per block, each a string (possibly with ``"+"``) or a sequence of unit names.
    """
    entries = spec.split(",") if isinstance(spec, str) else list(spec)
    mixers = [tuple(e.split("+")) if isinstance(e, str) else tuple(e) for e in entries]
    mixers = [tuple(name.strip() for name in m) for m in mixers]
    if not mixers or any(not m or "" in m for m in mixers):
        raise ValueError(f"mixer: expected unit names like 'lru', 'lru+bmru' or 'lru,bmru', "
                         f"got {spec!r}")
    return mixers


class Network(nn.Module):
    r"""Encoder → ``layers`` residual blocks → final norm → decoder (SPEC.md §4).

        e_t = W_in x_t + b_in,   z = Block_L(… Block_1(e)),   y_t = W_out norm(z_t) + b_out

    Every step is read out: y is ``(B, T, output_size)``; a classifier or a last-step regression
    reads ``y[:, -1]``. ``mixer`` is a spec for :func:`parse_mixers`: ``"bmru"``, ``"lru+bmru"``
    (units side by side in every block), ``"lru,bmru"`` (alternating blocks). ``norm``,
    ``mlp_ratio`` and ``unit_kwargs`` (extra constructor arguments per unit name) go to every
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
        for name, value in (("input_size", input_size), ("output_size", output_size),
                            ("hidden", hidden), ("layers", layers), ("mlp_ratio", mlp_ratio)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        self.input_size, self.output_size = input_size, output_size
        mixers = parse_mixers(mixer)
        self.encoder = nn.Linear(input_size, hidden)
        self.blocks = nn.ModuleList(
            Block(hidden, mixers[i % len(mixers)], norm=norm, mlp_ratio=mlp_ratio,
                  unit_kwargs=unit_kwargs)
            for i in range(layers)
        )
        self.norm = make_norm(norm, hidden)
        self.decoder = nn.Linear(hidden, output_size)

    def _states(self, state) -> tuple:
        if state is None:
            return (None,) * len(self.blocks)
        if not isinstance(state, tuple) or len(state) != len(self.blocks):
            raise ValueError(f"state: expected a tuple of {len(self.blocks)} block states or None, "
                             f"got {type(state).__name__}")
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
