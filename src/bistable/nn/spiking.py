"""Feed-forward spiking networks: SRC or LIF layers, then the frozen population readout.

``SpikingNetwork("src", F, H, L)`` is ``F → H → … → H`` (``L`` hidden layers) ``→ n_classes ·
per_class`` output neurons ``→`` :class:`~bistable.nn.readout.PopulationReadout`. It returns the
integrated scores ``R`` ``(B, T, n_classes)``; train with cross-entropy on ``R[:, -1]``.
"""

from __future__ import annotations

import contextlib
import math
import warnings

import torch
from torch import nn

from ..units.base import check_count, check_number, check_sizes, check_step_input, evaluating
from ..units.src import SRC
from .readout import MODES, PopulationReadout

KINDS = ("src", "lif")


def _unit(kind: str):
    if kind == "src":
        return SRC
    if kind == "lif":
        from ..units.lif import LIF  # snnTorch is optional: import it only when asked for

        return LIF
    raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")


def layer_stats(out: torch.Tensor, inp: torch.Tensor, *, pulse: bool,
                active_before: torch.Tensor | None = None) -> dict:
    """Spike statistics of one layer from its output ``out`` ``(B, T, N)`` and input ``inp``.

    A neuron is active at step t when ``out[t] > 0``. A spike is one active step (LIF) or, with
    ``pulse=True`` (SRC, whose spike is a pulse lasting 2–3 steps), one onset of activity; a
    pulse already under way at the step before ``out[:, 0]`` (``active_before`` ``(B, N)``, for
    a continued sequence) is not counted again.
    Returns ``firing_rate`` (spikes per neuron per step, over all T steps: a silent prefix
    counts), ``silent_fraction`` (neurons that never spike in the batch: it falls as B grows),
    ``spikes_per_sample``, and ``synops_per_sample``: synaptic operations of the layer, one per
    non-zero input entry and neuron (nonzero inputs × N), the products its weights compute. An
    SRC pulse is non-zero for 2–3 steps, so it costs the next layer 2–3 × N operations where a
    LIF spike costs N; an input frame's entry counts once whatever its event count.
    """
    if not isinstance(out, torch.Tensor) or out.dim() != 3:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"out: expected shape (B, T, N), got {got}")
    B, T, N = out.shape
    if B * T == 0:
        raise ValueError(f"out: expected at least one sample and one step, got shape {(B, T, N)}")
    active = out > 0
    spikes = active
    if pulse:
        spikes = active.clone()
        spikes[:, 1:] &= ~active[:, :-1]
        if active_before is not None:
            spikes[:, 0] &= ~active_before
    count = spikes.sum(dim=(0, 1))
    return {
        "neurons": N,
        "firing_rate": float(count.sum()) / (B * T * N),
        "silent_fraction": float((count == 0).float().mean()),
        "spikes_per_sample": float(count.sum()) / B,
        "synops_per_sample": float((inp != 0).sum()) * N / B,
    }


class SpikingNetwork(nn.Module):
    """A feed-forward stack of spiking layers with the population readout (SPEC.md §6).

    Args:
        kind: ``"src"`` (:class:`~bistable.units.src.SRC`) or ``"lif"`` (snnTorch LIF peer).
        input_size: ``F`` input spikes per step. hidden_size: ``H`` neurons per hidden layer.
        layers: number of hidden layers (0 allowed: input → output neurons directly).
        n_classes: classes (10). per_class: output neurons per class (10).
        readout: ``"population"`` (+1 / −0.1) or ``"count"`` (+1 / 0: the integrated output of
            each class's population). alpha_ro: readout leak (1).
        init_rate: data-driven initialisation (default ``None``: off): at the first forward call
            in training mode, :meth:`calibrate_` scales every layer's weights so that it fires at
            this rate (spikes per neuron per step) on that batch; a buffer remembers that it was
            done, so a resumed run does not do it again. :meth:`step` never calibrates.
        dropout: in training mode, each hidden layer's output spikes are zeroed with this
            probability before the next layer and the rest scaled by ``1 / (1 − p)``: one mask
            per sample and neuron, held over all steps of a call (a neuron is dropped for the
            whole sequence; :meth:`step` draws one per step). 0 (the default): off.
        **unit_kw: passed to every layer (e.g. ``detach_recurrent=True``, ``beta=0.9``).

    Shapes: ``forward(x (B, T, F), state) -> (R (B, T, n_classes), state)``; the state is a tuple
    of each layer's state then the readout's ``R[:, -1]`` (``None``: everything at rest).
    """

    def __init__(self, kind: str, input_size: int, hidden_size: int, layers: int,
                 n_classes: int = 10, *, per_class: int = 10, readout: str = "population",
                 alpha_ro: float = 1.0, init_rate: float | None = None, dropout: float = 0.0,
                 **unit_kw):
        super().__init__()
        unit = _unit(kind)
        check_count(layers, "layers", "hidden layers")
        check_sizes(input_size=input_size, hidden_size=hidden_size, n_classes=n_classes,
                    per_class=per_class)
        check_number(alpha_ro, "alpha_ro", lambda v: 0 <= v <= 1, "a leak in [0, 1]")
        check_number(dropout, "dropout", lambda v: 0 <= v < 1, "a probability in [0, 1)")
        if readout not in MODES:
            raise ValueError(f"readout: expected one of {MODES}, got {readout!r}")
        if init_rate is not None:
            _check_rate(init_rate, "init_rate")
            self.register_buffer("calibrated", torch.tensor(False))
        self.init_rate, self.dropout = init_rate, float(dropout)
        self.kind, self.input_size, self.n_classes = kind, input_size, n_classes
        sizes = [input_size] + [hidden_size] * layers + [n_classes * per_class]
        self.layers = nn.ModuleList(unit(a, b, **unit_kw) for a, b in zip(sizes, sizes[1:]))
        self.readout = PopulationReadout(n_classes, per_class, alpha=alpha_ro, mode=readout)

    def reset_parameters(self) -> None:
        """Forget the data-driven initialisation, so the next training call does it again (each
        layer resets its own weights: loop over ``modules()``)."""
        if self.init_rate is not None:
            self.calibrated.fill_(False)

    def run(self, x: torch.Tensor, state=None):
        """Like :meth:`forward`, also returning every layer's output spikes ``(B, T, N_l)``."""
        n = len(self.layers) + 1
        if state is None:
            state = (None,) * n
        elif not isinstance(state, (tuple, list)) or len(state) != n:
            got = len(state) if isinstance(state, (tuple, list)) else type(state).__name__
            raise ValueError(f"state: expected a tuple of {n} states (one per layer, then the "
                             f"readout), got {got}")
        spikes, new = [], []
        h = x
        for k, (layer, s) in enumerate(zip(self.layers, state)):
            h, s = layer(h, s)
            spikes.append(h)
            new.append(s)
            if self.training and self.dropout and k < len(self.layers) - 1:
                h = h * _keep_mask(h[:, :1], 1 - self.dropout) / (1 - self.dropout)
        R, r = self.readout(h, state[-1])
        return R, (*new, r), spikes

    def _uncalibrated(self) -> bool:
        """Whether the next training call is due to calibrate (``init_rate`` set, not done)."""
        return self.init_rate is not None and self.training and not self.calibrated

    def forward(self, x: torch.Tensor, state=None):
        if self._uncalibrated():
            self.calibrate_(x, self.init_rate, None if state is None else state[:-1])
        R, state, _ = self.run(x, state)
        return R, state

    def step(self, x_t: torch.Tensor, state=None):
        """One time step: ``x_t`` ``(B, F)`` → ``(R_t (B, n_classes), state)``.

        It never calibrates (one step is no sample of firing rates): with ``init_rate``, a model
        in training mode that is not calibrated yet raises RuntimeError; run :meth:`forward` on a
        training batch first.
        """
        check_step_input(x_t, self.input_size, module=self)
        if self._uncalibrated():
            raise RuntimeError("step: init_rate calibrates on a whole sequence; run forward on a "
                               "training batch before stepping in training mode")
        R, state, _ = self.run(x_t[:, None], state)
        return R[:, 0], state

    @torch.no_grad()
    def calibrate_(self, x: torch.Tensor, rate: float, state=None, *, iters: int = 16):
        """Data-driven initialisation: scale each layer's input map (``W``; ``W`` and ``c`` for
        LIF) by a gain ``g`` so that, on the input ``x`` ``(B, T, F)``, the layer fires at
        ``rate`` spikes per neuron per step (:func:`layer_stats`), layer after layer from the
        input (in eval mode: no training noise). ``g`` is found by bisection on
        ``log g ∈ [log 1/100, log 100]`` (the rate grows with the gain); a layer that cannot reach
        the rate keeps the closest gain, with a warning. Under ``torch.distributed`` each rank
        holds a slice of the batch: the slices are gathered first, so that the gains are those
        of one process on the whole batch, and rank 0's are broadcast, so every replica starts
        from the same weights. Returns the gains.
        """
        _check_rate(rate, "rate")
        state = (None,) * len(self.layers) if state is None else state
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            x, state = _gathered(x), _gathered(state)
        with evaluating(self):
            gains = self._calibrate_layers(x, rate, state, iters)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            for layer in self.layers:
                for p in layer.parameters():
                    torch.distributed.broadcast(p, src=0)
        if hasattr(self, "calibrated"):
            self.calibrated.fill_(True)
        return gains

    def _calibrate_layers(self, x, rate, state, iters):
        gains, h, pulse = [], x, self.kind == "src"
        for k, (layer, s) in enumerate(zip(self.layers, state)):
            # the input map: W for SRC (its bias b is intrinsic), W and c for LIF
            maps = [layer.weight] if pulse else list(layer.linear.parameters())
            originals = [m.clone() for m in maps]
            lo, hi = math.log(1e-2), math.log(1e2)
            for _ in range(iters):
                mid = (lo + hi) / 2
                below = _rate_at(math.exp(mid), layer, maps, originals, h, s, pulse)[0] < rate
                lo, hi = (mid, hi) if below else (lo, mid)
            gains.append(math.exp((lo + hi) / 2))
            got, h = _rate_at(gains[-1], layer, maps, originals, h, s, pulse)
            at_bound = hi == math.log(1e2) or lo == math.log(1e-2)  # the rate out of reach
            if at_bound or not rate / 2 <= got <= 2 * rate:
                warnings.warn(f"calibrate_: layer {k} fires at {got:.4g} with gain "
                              f"{gains[-1]:.3g}, the target was {rate:.4g}", stacklevel=3)
        return gains

    @torch.no_grad()
    def spike_stats(self, x: torch.Tensor, state=None) -> list[dict]:
        """:func:`layer_stats` of every spiking layer for the input ``x`` (no gradients), in
        evaluation mode whatever the network's (dropout and training noise would change the
        spikes, and the counts would not match them); with a ``state`` (a continued sequence),
        an SRC pulse under way at its start (``h > 0``) counts in the chunk where it began."""
        with evaluating(self):
            _, _, spikes = self.run(x, state)
        inputs = [x] + spikes[:-1]
        pulse = self.kind == "src"
        layer_states = (None,) * len(spikes) if state is None else state[:-1]
        before = [s[1] > 0 if pulse and s is not None else None for s in layer_states]
        return [layer_stats(o, i, pulse=pulse, active_before=a)
                for o, i, a in zip(spikes, inputs, before)]

    def perturb_(self, sigma: float, generator: torch.Generator | None = None):
        """Noise on the SRC's feedback gains: every neuron's ``r``, ``r_s`` drawn from normals
        around their nominal values (2, −7) with standard deviation ``sigma`` × magnitude
        (0.1 = 10 %); ``sigma=0`` restores them. SRC networks only."""
        if self.kind != "src":
            raise ValueError(f"perturb_: only SRC networks have r, r_s; this one is {self.kind!r}")
        for layer in self.layers:
            layer.perturb_(sigma, generator)
        return self

    @contextlib.contextmanager
    def gains_kept(self):
        """Every layer's ``r``, ``r_s`` as they are now, put back on leaving: the frame for the
        draws of :meth:`perturb_` (whose ``sigma=0`` would restore the nominal values instead,
        losing gains that differ from them, e.g. drawn once for training)."""
        if self.kind != "src":
            raise ValueError(f"gains_kept: only SRC networks have r, r_s; this one is "
                             f"{self.kind!r}")
        saved = [(layer.r.clone(), layer.r_s.clone()) for layer in self.layers]
        try:
            yield self
        finally:
            with torch.no_grad():
                for layer, (r, r_s) in zip(self.layers, saved, strict=True):
                    layer.r.copy_(r)
                    layer.r_s.copy_(r_s)


def _keep_mask(like: torch.Tensor, keep: float) -> torch.Tensor:
    """Bernoulli(``keep``) of the shape of ``like`` (one per sample and neuron). Under
    ``torch.distributed`` each rank holds its slice of the global batch and the same random
    state, so the masks of the whole batch are drawn and this rank's kept: the run draws the
    masks of one process (each rank drawing its own would repeat rank 0's)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return torch.empty_like(like).bernoulli_(keep)
    B, rank = like.shape[0], torch.distributed.get_rank()
    whole = like.new_empty((B * torch.distributed.get_world_size(), *like.shape[1:]))
    return whole.bernoulli_(keep)[rank * B:(rank + 1) * B]


def _gathered(value):
    """``value`` (a tensor of this rank's batch slice, or tuples of them, or None) with every
    rank's slice concatenated in rank order: the global batch (the ranks' slices are contiguous
    and of one size, ``bistable.train.distributed``)."""
    if value is None:
        return None
    if isinstance(value, (tuple, list)):
        return type(value)(_gathered(v) for v in value)
    parts = [torch.empty_like(value) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(parts, value.contiguous())
    return torch.cat(parts)


def _rate_at(gain, layer, maps, originals, x, state, pulse):
    """The firing rate of ``layer`` on ``x`` with its input map ``maps`` set to gain × originals,
    and its output."""
    for m, m0 in zip(maps, originals):
        m.copy_(m0 * gain)
    out, _ = layer(x, state)
    return layer_stats(out, x, pulse=pulse)["firing_rate"], out


def _check_rate(rate, name: str) -> None:
    check_number(rate, name, lambda v: 0 < v < 1,
                 "a firing rate in (0, 1) spikes per neuron per step")


def build_src(input_size: int, output_size: int, hidden: int, layers: int, **kw) -> SpikingNetwork:
    """Registry builder ``src``: an SRC network with ``layers`` hidden layers of ``hidden``."""
    return SpikingNetwork("src", input_size, hidden, layers, n_classes=output_size, **kw)


def build_lif(input_size: int, output_size: int, hidden: int, layers: int, **kw) -> SpikingNetwork:
    """Registry builder ``lif``: the snnTorch LIF peer of :func:`build_src` (same sizes)."""
    return SpikingNetwork("lif", input_size, hidden, layers, n_classes=output_size, **kw)
