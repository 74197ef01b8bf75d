"""Figures: learning and horizon curves (and, from other modules, rasters and state traces).

matplotlib is optional (the ``plot`` extra) and imported only when a figure is drawn; every
function writes its PNG atomically (temp file + ``os.replace``) and returns the path.
"""

from __future__ import annotations

import os
from pathlib import Path

from .extras import MissingExtra


def _pyplot():
    """pyplot on the non-interactive Agg backend, or a MissingExtra naming the extra."""
    try:
        import matplotlib
    except ImportError as err:
        raise MissingExtra(
            "plots need matplotlib: pip install 'bistable[plot]' (or pip install matplotlib)"
        ) from err
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> Path:
    """Write ``fig`` to ``path`` atomically and close it, even when the write fails (which leaves
    no temporary file behind)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=120,
                        bbox_inches="tight")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    finally:
        _pyplot().close(fig)
    return path


def _finish(fig, ax, path, xlabel: str, ylabel: str, title: str | None, legend_size=None) -> Path:
    """Axis labels, grid, legend and optional title, then :func:`_save`."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_size)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def learning_curve(history: list[dict], path, *, title: str | None = None) -> Path:
    """Training loss (and evaluation loss, where recorded) against the step.

    ``history`` is the ``metrics.json`` history: dicts with ``step`` and ``loss``, and optionally
    ``eval_loss`` / ``eval_accuracy`` with the ``split`` scored (default ``"test"``). The loss
    axis is logarithmic when every loss is positive.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    train = [(h["step"], h["loss"]) for h in history if h.get("loss") is not None]
    scored = [h for h in history if h.get("eval_loss") is not None]
    evals = [(h["step"], h["eval_loss"]) for h in scored]
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss", lw=1)
    if evals:
        ax.plot(*zip(*evals, strict=True), "o-", label=f"{scored[0].get('split', 'test')} loss",
                ms=3)
    values = [v for _, v in train + evals]
    if values and min(values) > 0:
        ax.set_yscale("log")
    return _finish(fig, ax, path, "step", "loss", title)


def horizon_curve(evals: list[dict], path, *, title: str | None = None,
                  train_seq_len: int | None = None, chance: float | None = None) -> Path:
    """Evaluation metric against the evaluated sequence length (log axis): does memory hold?

    ``evals`` is the ``metrics.json`` eval list (``seq_len``, ``loss``, ``mse``, ``accuracy``).
    Plots MSE when present (on a log axis unless one is 0), else accuracy, else loss; one line
    per split. A dashed vertical line marks ``train_seq_len``, a dotted horizontal one the
    ``chance`` level of the metric.
    """
    plt = _pyplot()
    key = next((k for k in ("mse", "accuracy", "loss")
                if any(e.get(k) is not None for e in evals)), "loss")
    fig, ax = plt.subplots(figsize=(6, 4))
    for split in dict.fromkeys(e["split"] for e in evals):
        rows = sorted((e["seq_len"], e[key]) for e in evals
                      if e["split"] == split and e.get(key) is not None)
        if rows:
            ax.plot(*zip(*rows, strict=True), "o-", label=split)
    ax.set_xscale("log")
    if key == "mse" and all(e[key] > 0 for e in evals if e.get(key) is not None):
        ax.set_yscale("log")
    if train_seq_len:
        ax.axvline(train_seq_len, ls="--", color="grey", lw=1, label="training length")
    if chance is not None:
        ax.axhline(chance, ls=":", color="black", lw=1, label="chance")
    return _finish(fig, ax, path, "sequence length T", key, title)


def _numpy(v):
    """A tensor (detached, on the CPU; half precision as float32, which numpy reads) or
    array-like as a numpy array."""
    import numpy as np

    if not hasattr(v, "detach"):
        return np.asarray(v)
    v = v.detach().cpu()
    return (v.float() if v.is_floating_point() and v.element_size() < 4 else v).numpy()


def _check_not_empty(a, name: str) -> None:
    if 0 in a.shape:
        raise ValueError(f"{name}: expected at least one step and one unit, got shape "
                         f"{tuple(a.shape)}")


def _matrix(x, name: str):
    """``x`` as a ``(T, N)`` numpy array, or a ValueError naming ``name``."""
    a = _numpy(x)
    if a.ndim != 2:
        raise ValueError(f"{name}: expected shape (T, N), one sample, got {tuple(a.shape)}")
    _check_not_empty(a, name)
    return a


def _check_labels(labels, n: int) -> None:
    if labels is not None and len(labels) != n:
        raise ValueError(f"labels: expected one per unit ({n}), got {len(labels)}")


def raster(spikes, path, *, title: str | None = None, max_neurons: int = 200) -> Path:
    """Spike raster of one sample: a dot where ``spikes[t, n] > 0``.

    ``spikes`` is ``(T, N)`` (one sample of a spiking layer's output, tensor or array); at most
    ``max_neurons`` neurons (the first ones) are drawn, and the axis label says so when N is more.
    """
    full = _matrix(spikes, "spikes")
    s = full[:, :max_neurons]
    plt = _pyplot()
    t, n = (s > 0).nonzero()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(t, n, s=2, marker="|", color="black")
    ax.set_xlim(0, s.shape[0])
    ax.set_ylim(-0.5, s.shape[1] - 0.5)
    ax.set_xlabel("step t")
    ax.set_ylabel("neuron" if s.shape[1] == full.shape[1]
                  else f"neuron (the first {s.shape[1]} of {full.shape[1]})")
    if title:
        ax.set_title(title)
    return _save(fig, path)


def membrane_traces(h, path, *, h_s=None, neurons=None, title: str | None = None) -> Path:
    """Membrane traces ``h[t]`` (and the slow variable ``h_s[t]``, dashed) of a few neurons.

    ``h`` and ``h_s`` are ``(T, N)`` for one sample (e.g. ``h, h_s = SRC.membrane(x)`` then
    ``h[0]``, ``h_s[0]``); ``neurons`` are indices into N, by default the first three (or fewer).
    """
    h = _matrix(h, "h")
    if h_s is not None:
        h_s = _matrix(h_s, "h_s")
        if h_s.shape != h.shape:
            raise ValueError(f"h_s: expected the shape of h, {h.shape}, got {h_s.shape}")
    count = h.shape[1]
    neurons = range(min(3, count)) if neurons is None else list(neurons)
    if any(not 0 <= n < count for n in neurons):
        raise ValueError(f"neurons: expected indices from 0 to {count - 1}, got {list(neurons)}")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for k, n in enumerate(neurons):
        ax.plot(h[:, n], color=f"C{k}", lw=1, label=f"h, neuron {n}")
        if h_s is not None:
            ax.plot(h_s[:, n], color=f"C{k}", lw=1, ls="--", label=f"h_s, neuron {n}")
    return _finish(fig, ax, path, "step t", "state", title, legend_size=7)


def plot_hysteresis(drive, states, path, *, labels=None, title: str | None = None) -> Path:
    """Hysteresis loops: each unit's state against a slowly swept scalar input, up then down.

    ``drive`` is ``(T,)``, the swept input value at each step; ``states`` is ``(T, N)`` (or
    ``(T,)``), e.g. ``y[0]`` of a memory unit fed that sweep. Steps where the drive rises are drawn
    solid, falling dashed, so the two branches of each loop can be told apart.
    """
    u, s = _numpy(drive).reshape(-1), _numpy(states)
    if s.ndim not in (1, 2) or s.shape[0] != len(u):
        raise ValueError(f"states: expected shape ({len(u)},) or ({len(u)}, N), one row per "
                         f"drive step, got {tuple(s.shape)}")
    _check_not_empty(s, "states")
    s = s.reshape(len(u), -1)
    _check_labels(labels, s.shape[1])
    plt = _pyplot()
    rising = u[1:] >= u[:-1]
    fig, ax = plt.subplots(figsize=(6, 4))
    for n in range(s.shape[1]):
        label = labels[n] if labels is not None else f"unit {n}"
        for mask, style, tag in ((rising, "-", "up"), (~rising, "--", "down")):
            seg_u, seg_s = u[1:].copy(), s[1:, n].copy()
            seg_u[~mask], seg_s[~mask] = float("nan"), float("nan")
            ax.plot(seg_u, seg_s, style, color=f"C{n}", lw=1.5, label=f"{label} ({tag})")
    return _finish(fig, ax, path, "input", "state", title, legend_size=7)


def plot_state_traces(states, path, *, inputs=None, labels=None,
                      title: str | None = None) -> Path:
    """State traces of a few units over time, one panel each, below the input when given.

    ``states`` is ``(T, N)`` (one sample, tensor or array); ``inputs`` is ``(T,)`` or ``(T, F)``.
    """
    s = _numpy(states)
    if s.ndim not in (1, 2):
        raise ValueError(f"states: expected shape (T,) or (T, N), got {tuple(s.shape)}")
    _check_not_empty(s, "states")
    s = s.reshape(s.shape[0], -1)
    _check_labels(labels, s.shape[1])
    if inputs is not None:
        inputs = _numpy(inputs)
        if inputs.ndim not in (1, 2) or len(inputs) != len(s):
            raise ValueError(f"inputs: expected shape ({len(s)},) or ({len(s)}, F), one row per "
                             f"step of states, got {tuple(inputs.shape)}")
    plt = _pyplot()
    panels = s.shape[1] + (inputs is not None)
    fig, axes = plt.subplots(panels, 1, figsize=(7, 1.4 * panels + 0.6), sharex=True,
                             squeeze=False)
    axes = axes[:, 0]
    if inputs is not None:
        axes[0].plot(inputs, color="grey", lw=1)
        axes[0].set_ylabel("input")
    for n, ax in enumerate(axes[panels - s.shape[1]:]):
        ax.step(range(len(s)), s[:, n], where="post", color=f"C{n}", lw=1.2)
        ax.set_ylabel(labels[n] if labels is not None else f"unit {n}", fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("step t")
    if title:
        axes[0].set_title(title)
    return _save(fig, path)
