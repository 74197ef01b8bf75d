"""The MRU pictures of docs/mru.md: files written, bad shapes refused before drawing."""

import re
from pathlib import Path

import pytest
import torch

import bistable as bs

plot = pytest.importorskip("bistable.plot")
pytest.importorskip("matplotlib")


def _sweep(T: int = 41):
    up = torch.linspace(-2, 2, T)
    return torch.cat([up, up.flip(0)])


def test_hysteresis_and_state_traces_are_png_files(tmp_path):
    drive = _sweep()
    unit = bs.BMRU(1, 3)
    y, _ = unit(drive[None, :, None])
    paths = [plot.plot_hysteresis(drive, y[0].detach(), tmp_path / "loops.png", title="BMRU"),
             plot.plot_hysteresis(drive, y[0, :, 0].detach(), tmp_path / "one.png"),
             plot.plot_state_traces(y[0].detach(), tmp_path / "traces.png", inputs=drive,
                                    labels=["a", "b", "c"])]
    for path in paths:
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


def test_bad_shapes_and_labels_are_clear_errors(tmp_path):
    drive = _sweep()
    with pytest.raises(ValueError, match=r"states: expected shape \(82,\) or \(82, N\).*"
                                         r"got \(81, 2\)"):
        plot.plot_hysteresis(drive, torch.zeros(81, 2), tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"labels: expected one per unit \(2\), got 1"):
        plot.plot_hysteresis(drive, torch.zeros(82, 2), tmp_path / "x.png", labels=["a"])
    with pytest.raises(ValueError, match=r"states: expected shape \(T,\) or \(T, N\), "
                                         r"got \(2, 3, 4\)"):
        plot.plot_state_traces(torch.zeros(2, 3, 4), tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"inputs: expected shape \(9,\) or \(9, F\), one row "
                                         r"per step of states, got \(8,\)"):
        plot.plot_state_traces(torch.zeros(9, 2), tmp_path / "x.png", inputs=torch.zeros(8))
    with pytest.raises(ValueError, match=r"inputs: .*got \(9, 2, 2\)"):
        plot.plot_state_traces(torch.zeros(9, 2), tmp_path / "x.png", inputs=torch.zeros(9, 2, 2))
    assert not (tmp_path / "x.png").exists()


def test_spike_pictures_refuse_bad_shapes_and_neurons(tmp_path):
    with pytest.raises(ValueError, match=r"spikes: expected shape \(T, N\), one sample, "
                                         r"got \(5,\)"):
        plot.raster(torch.ones(5), tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"spikes: expected .*got \(2, 5, 3\)"):
        plot.raster(torch.ones(2, 5, 3), tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"neurons: expected indices from 0 to 1, got \[0, 2\]"):
        plot.membrane_traces(torch.ones(5, 2), tmp_path / "x.png", neurons=[0, 2])
    with pytest.raises(ValueError, match=r"h_s: expected the shape of h, \(5, 2\), got \(5, 3\)"):
        plot.membrane_traces(torch.ones(5, 2), tmp_path / "x.png", h_s=torch.ones(5, 3))
    assert not (tmp_path / "x.png").exists()
    # the default neurons: the first three, or as many as there are
    path = plot.membrane_traces(torch.ones(5, 2), tmp_path / "two.png", h_s=torch.zeros(5, 2))
    assert path.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_tensors_are_drawn(tmp_path, dtype):
    """What a network under bf16 autocast hands over: numpy has no bfloat16."""
    x = (torch.rand(20, 4) > 0.7).to(dtype)
    for draw in (plot.raster, plot.membrane_traces, plot.plot_state_traces):
        assert draw(x, tmp_path / f"{draw.__name__}.png").read_bytes()[:4] == b"\x89PNG"
    assert plot.plot_hysteresis(torch.linspace(0, 1, 20).to(dtype), x,
                                tmp_path / "loops.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("draw", [
    lambda x, p: plot.raster(x, p), lambda x, p: plot.membrane_traces(x, p),
    lambda x, p: plot.plot_state_traces(x, p),
    lambda x, p: plot.plot_hysteresis(torch.zeros(len(x)), x, p)],
    ids=["raster", "membrane", "state-traces", "hysteresis"])
@pytest.mark.parametrize("shape", [(0, 2), (5, 0)])
def test_empty_input_is_a_clear_error(tmp_path, draw, shape):
    with pytest.raises(ValueError, match=r": expected at least one step and one unit, got shape "
                                         + re.escape(str(shape))):
        draw(torch.zeros(shape), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_a_failed_save_closes_the_figure_and_leaves_no_file(tmp_path, monkeypatch):
    import matplotlib.figure
    import matplotlib.pyplot as plt

    def half_written(fig, fname, **kw):
        Path(fname).write_bytes(b"\x89PNG")
        raise OSError("disk full")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", half_written)
    plt.close("all")
    with pytest.raises(OSError, match="disk full"):
        plot.raster(torch.ones(5, 2), tmp_path / "r.png")
    assert plt.get_fignums() == [] and list(tmp_path.iterdir()) == []


def test_curves_pick_their_metric_and_axes(tmp_path, monkeypatch):
    """horizon_curve: MSE when there is one (log axes; linear where one is 0, which a log axis
    would drop), else accuracy (linear); learning_curve: a log loss axis only when every loss is
    positive."""
    drawn, save = [], plot._save

    def save_(fig, path):
        ax = fig.axes[0]
        drawn.append((ax.get_ylabel(), ax.get_xscale(), ax.get_yscale(),
                      [list(line.get_ydata()) for line in ax.get_lines()]))
        return save(fig, path)

    monkeypatch.setattr(plot, "_save", save_)
    evals = [{"split": "test", "seq_len": n, "loss": 2.0, "mse": mse, "accuracy": None}
             for n, mse in ((100, 0.4), (10, 0.2))]
    plot.horizon_curve(evals, tmp_path / "h.png")
    plot.horizon_curve([{**e, "mse": None, "accuracy": 0.5} for e in evals], tmp_path / "a.png")
    plot.horizon_curve([evals[0], {**evals[1], "mse": 0.0}], tmp_path / "z.png")  # MSE 0: linear
    plot.learning_curve([{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.0}], tmp_path / "l.png")
    plot.learning_curve([{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}], tmp_path / "p.png")
    assert drawn == [("mse", "log", "log", [[0.2, 0.4]]),
                     ("accuracy", "log", "linear", [[0.5, 0.5]]),
                     ("mse", "log", "linear", [[0.0, 0.4]]),
                     ("loss", "linear", "linear", [[1.0, 0.0]]),
                     ("loss", "linear", "log", [[1.0, 0.5]])]
