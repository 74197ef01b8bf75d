"""The model registry: every model of a results table is one name away.

``build_model(name, input_size, output_size, hidden=64, layers=2, **options)`` returns an
``nn.Module`` with ``forward(x, state=None) -> (y (B, T, output_size), state)`` and ``step``.
The recurrent models are :class:`~bistable.nn.network.Network` stacks of SPEC.md §4 blocks that
differ only in the mixer (GRU and LSTM too, so that tables compare like with like); ``hybrid``
puts an LRU and a BMRU side by side in every block. ``src`` and ``lif`` are the spiking networks of
:mod:`bistable.nn.spiking` (``output_size`` = number of classes). More builders join through
:func:`register_model`.
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from .nn.network import Network
from .nn.spiking import build_lif, build_src
from .units.base import check_sizes

Builder = Callable[..., nn.Module]  # builder(input_size, output_size, *, hidden, layers, **options)


class ModelSpec(NamedTuple):
    builder: Builder
    description: str


_REGISTRY: dict[str, ModelSpec] = {}
MODEL_NAMES: list[str] = []  # registry order; register_model appends


def register_model(name: str, builder: Builder, description: str) -> None:
    """Add a model: ``builder(input_size, output_size, *, hidden, layers, **options)``."""
    if name in _REGISTRY:
        raise ValueError(f"name: model {name!r} is already registered")
    _REGISTRY[name] = ModelSpec(builder, description)
    MODEL_NAMES.append(name)


def _unit_network(unit: str) -> Builder:
    """A builder of Networks whose every block mixes one ``unit``; options that are not Network
    options (``norm``, ``mlp_ratio``) go to the unit's constructor (e.g. ``epsilon`` for cmru)."""

    def build(input_size, output_size, *, hidden, layers, norm="layer", mlp_ratio=4,
              **unit_options):
        return Network(input_size, output_size, hidden=hidden, layers=layers, mixer=unit, norm=norm,
                       mlp_ratio=mlp_ratio, unit_kwargs={unit: unit_options})

    return build


def _hybrid(input_size, output_size, *, hidden, layers, mixer="lru+bmru", **options):
    """A Network mixing LRU and BMRU: side by side (``"lru+bmru"``, default) or alternating blocks
    (``mixer="lru,bmru"``); any mixer spec of :func:`~bistable.nn.network.parse_mixers` works."""
    return Network(input_size, output_size, hidden=hidden, layers=layers, mixer=mixer, **options)


for _name, _description in (
    ("bmru", "bistable memory recurrent unit (SPEC 2.1): persistent +-1 memory, parallel scan"),
    ("cmru", "cumulative memory unit (SPEC 2.2): epsilon=1 counter, 0<epsilon<1 leaky"),
    ("lru", "linear recurrent unit (SPEC 3): complex diagonal state space, fading memory"),
):
    register_model(_name, _unit_network(_name), _description)
register_model("hybrid", _hybrid, "LRU and BMRU side by side in every block (SPEC 4); "
               "mixer='lru,bmru' alternates blocks")
for _name, _description in (
    ("brc", "bistable recurrent cell (SPEC 5): diagonal recurrent gates, step-wise"),
    ("nbrc", "neuromodulated BRC (SPEC 5): full recurrent gate matrices, step-wise"),
    ("mingru", "minGRU (SPEC 5): input-only gates, parallel scan"),
    ("gru", "PyTorch nn.GRU in the same blocks"),
    ("lstm", "PyTorch nn.LSTM in the same blocks"),
):
    register_model(_name, _unit_network(_name), _description)
register_model("src", build_src, "spiking recurrent cell network (SPEC 6), population readout")
register_model("lif", build_lif, "snnTorch LIF network, same sizes and readout (needs "
               "bistable[peers])")


def build_model(name: str, input_size: int, output_size: int, *, hidden: int = 64, layers: int = 2,
                **options) -> nn.Module:
    """The registered model ``name`` of width ``hidden`` and depth ``layers``."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"model: expected one of {', '.join(MODEL_NAMES)}, got {name!r}")
    try:
        return _REGISTRY[name].builder(input_size, output_size, hidden=hidden, layers=layers,
                                       **options)
    except TypeError as e:  # an option no constructor takes: name it, not the constructor's frame
        unknown = re.search(r"unexpected keyword argument '(\w+)'", str(e))
        twice = re.search(r"multiple values for (?:keyword )?argument '(\w+)'", str(e))
        if twice is not None and twice[1] in options:  # a builder sets it from the sizes
            raise ValueError(f"options: model {name!r} sets {twice[1]!r} itself (from "
                             "input_size, output_size, hidden and layers); give those "
                             "instead") from None
        if unknown is None or unknown[1] not in options:  # not the user's: a bug to see whole
            raise
        raise ValueError(f"options: model {name!r} takes no option {unknown[1]!r} "
                         "(docs/models.md lists each model's options)") from None


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (``requires_grad``), each counted once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _count(name: str, input_size: int, output_size: int, hidden: int, layers: int,
           **options) -> int:
    """Parameter count of a model built on the meta device (shapes only: no memory and no
    initialisation cost), or on the CPU for builders that need values (snnTorch's layers)."""
    try:
        with torch.device("meta"):
            model = build_model(name, input_size, output_size, hidden=hidden, layers=layers,
                                **options)
    except RuntimeError:
        model = build_model(name, input_size, output_size, hidden=hidden, layers=layers, **options)
    return count_parameters(model)


def width_for_budget(name: str, params: int, input_size: int, output_size: int, *,
                     layers: int = 2, **options) -> int:
    """The width ``hidden`` whose parameter count is closest to ``params`` (ties: the smaller).

    Counts grow with the width, so a bisection finds the smallest width reaching the budget; the
    answer is it or the width below. A budget below the width-1 model's count warns and gives 1.
    """
    check_sizes(params=params)
    if "hidden" in options:
        raise ValueError("hidden: expected none, since width_for_budget finds it; got "
                         f"{options['hidden']!r}")

    @functools.cache
    def count(hidden: int) -> int:
        return _count(name, input_size, output_size, hidden, layers, **options)

    if count(1) >= params:
        if count(1) > params:
            warnings.warn(f"params={params} is below the smallest {name} ({count(1)} parameters "
                          f"at hidden=1, layers={layers}); using hidden=1", stacklevel=2)
        return 1
    lo, hi = 1, 2  # invariant: count(lo) < params
    while count(hi) < params:
        if count(hi) == count(lo):  # the width does not change the count (e.g. no hidden layer)
            raise ValueError(f"params: {name} with layers={layers} has {count(lo)} parameters at "
                             f"every width; a budget of {params} cannot pick --hidden")
        lo, hi = hi, 2 * hi
    while hi - lo > 1:  # invariant: count(lo) < params <= count(hi)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(mid) < params else (lo, mid)
    return min((lo, hi), key=lambda h: (abs(count(h) - params), h))


def describe_models(input_size: int = 1,
                    output_size: int = 1) -> list[tuple[str, int | None, str]]:
    """``(name, parameter count at hidden=64 and layers=2, description)`` for every model; the
    count is None for a model whose optional dependency is not installed."""
    rows = []
    for name, spec in _REGISTRY.items():
        try:
            n_params = _count(name, input_size, output_size, 64, 2)
        except ImportError:
            n_params = None
        rows.append((name, n_params, spec.description))
    return rows
