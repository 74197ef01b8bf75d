"""What a finished run leaves besides ``metrics.json``: the horizon table it prints, the learning-
and horizon-curve plots, and for spiking networks the spike statistics, a raster and membrane
traces."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from ..data.tasks import Task
from ..units.base import evaluating
from .checkpoint import atomic_write

SPIKE_SAMPLES = 64  # test examples behind spikes.json


def horizon_table(evals: list) -> str:
    """The final evaluation as a small plain-text table (one row per split and length)."""
    def fmt(v):
        return "-" if v is None else f"{v:.4f}"

    lines = [f"{'split':<6} {'seq_len':>8} {'loss':>9} {'mse':>9} {'accuracy':>9}"]
    lines += [f"{e['split']:<6} {e['seq_len']:>8} {fmt(e['loss']):>9} {fmt(e['mse']):>9} "
              f"{fmt(e['accuracy']):>9}" for e in evals]
    return "\n".join(lines)


def plots(out: Path, title: str, task: Task, seq_len: int, history: list, evals: list) -> None:
    """``learning-curve.png`` and ``horizon-curve.png`` (skipped, with a warning, without
    matplotlib)."""
    try:
        from ..plot import horizon_curve, learning_curve

        learning_curve(history, out / "learning-curve.png", title=title)
        horizon_curve(evals, out / "horizon-curve.png", title=title, train_seq_len=seq_len,
                      chance=task.chance)
    except ImportError as err:
        warnings.warn(f"plots skipped: {err}", stacklevel=2)


def saved_files(out) -> str:
    """A run's closing line: what lies in ``out``, plots only where they were drawn (matplotlib
    installed)."""
    drawn = (Path(out) / "learning-curve.png").is_file()
    return f"metrics.json, checkpoint{' and plots' if drawn else ''} in {out}"


def busiest(spikes: torch.Tensor, n: int = 3) -> list[int]:
    """The ``n`` neurons active at the most steps of the first example of ``spikes`` ``(B, T,
    N)``, ties (a silent first example) broken by their activity over all examples."""
    first = spikes[0].gt(0).sum(0)
    everywhere = spikes.gt(0).sum((0, 1))
    score = first * (spikes.shape[0] * spikes.shape[1] + 1) + everywhere  # first, then all
    return score.topk(min(n, spikes.shape[2])).indices.tolist()


@torch.no_grad()
def spiking_figures(out: Path, title: str, task: Task, seq_len: int, model: torch.nn.Module,
                    device) -> None:
    """For a spiking network: ``spikes.json`` (every layer's firing rate, silent fraction, spikes
    and synaptic operations per sample on a fixed random subset of the test examples, the same for
    every run), ``raster.png`` (the first hidden layer on the first example of that subset) and,
    for SRCs, ``membrane.png`` (``h``, ``h_s`` of that layer's three most active neurons on it,
    :func:`busiest`). Other models: nothing."""
    from ..nn.spiking import SpikingNetwork

    if not isinstance(model, SpikingNetwork):
        return
    x, _ = next(task.eval_batches("test", seq_len, SPIKE_SAMPLES, SPIKE_SAMPLES, device))
    text = json.dumps({"samples": x.shape[0], "layers": model.spike_stats(x)}, indent=1)
    atomic_write(out / "spikes.json", lambda file: file.write(text.encode()))
    try:
        from ..plot import membrane_traces, raster

        with evaluating(model):
            layer1 = model.run(x)[2][0]  # (B, T, N)
            title = f"{title}: layer 1, one test example"
            raster(layer1[0], out / "raster.png", title=title)  # the subset's first example
            if model.kind == "src":
                h, h_s = model.layers[0].membrane(x[:1])
                membrane_traces(h[0], out / "membrane.png", h_s=h_s[0],
                                neurons=busiest(layer1), title=title)
    except ImportError as err:
        warnings.warn(f"plots skipped: {err}", stacklevel=2)
