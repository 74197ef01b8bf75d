"""Encoders, the population readout, the LIF peer and spiking networks (SPEC.md §6)."""

import math
import re
import sys

import numpy as np
import pytest
import torch

from bistable.nn.encoders import flatten_frames, rate_code
from bistable.nn.readout import PopulationReadout
from bistable.nn.spiking import SpikingNetwork, build_lif, build_src, layer_stats
from bistable.scan import linear_scan_reference


def test_rate_code_shape_silence_rate_and_reproducibility():
    images = torch.tensor([[0.0, 0.4, 1.0]]).repeat(2, 1)
    x = rate_code(images, steps=4000, silent=20, generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 4020, 3) and x.dtype == torch.float32
    assert float(x[:, :20].abs().sum()) == 0.0
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    rate = x[:, 20:].mean(dim=(0, 1))
    assert float(rate[0]) == 0.0
    assert abs(float(rate[1]) - 0.1) < 0.01 and abs(float(rate[2]) - 0.25) < 0.015
    again = rate_code(images, steps=4000, silent=20, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, again)
    assert rate_code(torch.rand(3, 28, 28)).shape == (3, 220, 784)


@pytest.mark.parametrize("gain", [0.25, 0.3])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_rate_code_is_unbiased_in_every_dtype(dtype, gain):
    """The uniform draw and gain · intensity are computed in float32 at least: a bfloat16 draw
    (8 bits) gave 0.0768 for a spike probability of 0.075, and 0.3 · 0.5 rounded to bfloat16 is
    0.1504 (0.26 % high: 14 standard errors of this test's 8 million draws)."""
    images = torch.full((100, 2000), 0.5, dtype=dtype)
    p = gain * float(images[0, 0])  # the probability of the image as stored
    rate = float(rate_code(images, steps=40, silent=0, gain=gain,
                           generator=torch.Generator().manual_seed(0)).double().mean())
    assert abs(rate - p) < 4 * (p * (1 - p) / images.numel() / 40) ** 0.5


def test_rate_code_rejects_bad_images():
    with pytest.raises(ValueError, match="images: expected a floating dtype"):
        rate_code(torch.zeros(2, 784, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"images: expected a tensor of shape \(B, ...\)"):
        rate_code(torch.zeros(784))
    for bad, shown in ((255.0, r"\[0, 255\]"), (-0.5, r"\[-0\.5, 0\]"), (float("nan"), "nan")):
        images = torch.zeros(2, 784)
        images[1, 7] = bad  # one pixel out of range (8-bit values not scaled, a sign error, NaN)
        with pytest.raises(ValueError, match=r"images: expected intensities in \[0, 1\].*" + shown):
            rate_code(images)
    with pytest.raises(ValueError, match=r"gain: expected .* in \[0, 1\], got 2"):
        rate_code(torch.zeros(2, 784), gain=2)
    for bad in (0, 2.5, "200", True):
        with pytest.raises(ValueError, match=f"steps: expected a positive int, got {bad!r}"):
            rate_code(torch.zeros(2, 784), steps=bad)
    for bad in (-1, 1.5, None):
        with pytest.raises(ValueError, match=f"silent: expected an int >= 0, got {bad!r}"):
            rate_code(torch.zeros(2, 784), silent=bad)
    with pytest.raises(ValueError, match="generator: expected a torch.Generator or None, got str"):
        rate_code(torch.zeros(2, 784), generator="x")


def test_flatten_frames_passes_counts_through():
    frames = torch.randint(0, 3, (2, 5, 2, 34, 34))
    x = flatten_frames(frames)
    assert x.shape == (2, 5, 2312) and x.dtype == torch.float32
    assert torch.equal(x.view(2, 5, 2, 34, 34), frames.float())
    with pytest.raises(ValueError, match="frames"):
        flatten_frames(torch.zeros(2, 5))
    assert torch.equal(flatten_frames(frames > 0), (frames > 0).float().flatten(2))
    for bad, message in ((-1.0, "minimum of -1"), (float("nan"), "minimum of nan")):
        broken = frames.float()
        broken[1, 2, 0, 3, 4] = bad
        with pytest.raises(ValueError, match=f"expected event counts >= 0, got a {message}"):
            flatten_frames(broken)
    with pytest.raises(ValueError, match="frames: expected real event counts, got torch.complex64"):
        flatten_frames(frames.to(torch.complex64))


def test_population_readout_weights_and_integration():
    ro = PopulationReadout(3, 2).double()
    expected = torch.tensor([[1, 1, -.1, -.1, -.1, -.1], [-.1, -.1, 1, 1, -.1, -.1],
                             [-.1, -.1, -.1, -.1, 1, 1]], dtype=torch.float64)
    assert torch.equal(ro.matrix(), expected)  # exactly −0.1 in float64
    assert list(ro.parameters()) == []  # frozen
    out = torch.rand(2, 9, 6, dtype=torch.float64)
    R, last = ro(out)
    torch.testing.assert_close(R, torch.cumsum(out @ expected.t(), 1))
    first, s = ro(out[:, :4])
    second, _ = ro(out[:, 4:], s)
    torch.testing.assert_close(torch.cat([first, second], 1), R)
    assert torch.equal(last, R[:, -1])
    out32 = out.float()
    R32, _ = PopulationReadout(3, 2)(out32)
    assert torch.equal(R32, torch.cumsum(out32 @ expected.float().t(), 1))


def test_leaky_and_count_readouts():
    out = torch.rand(2, 9, 4, dtype=torch.float64)
    R, _ = PopulationReadout(2, 2, alpha=0.8).double()(out)
    drive = out @ PopulationReadout(2, 2).matrix().t()
    a = torch.full_like(drive, 0.8)
    torch.testing.assert_close(R, linear_scan_reference(a, drive, None))
    leaky = PopulationReadout(2, 2, alpha=0.8).double()
    first, state = leaky(out[:, :4])  # the state carries R across calls, leak included
    torch.testing.assert_close(torch.cat([first, leaky(out[:, 4:], state)[0]], 1), R)
    counts, _ = PopulationReadout(2, 2, mode="count").double()(out)
    torch.testing.assert_close(counts[:, -1], out.sum(1).view(2, 2, 2).sum(-1))
    with pytest.raises(ValueError, match="mode"):
        PopulationReadout(mode="softmax")
    with pytest.raises(ValueError, match=r"out: expected shape \(B, T, 4\)"):
        PopulationReadout(2, 2)(torch.zeros(1, 3, 5))


@pytest.mark.parametrize("alpha", [1.0, 0.9])
def test_population_readout_is_the_count_readout_at_a_lower_temperature(alpha):
    """R_pop = 1.1 R_count - 0.1 Σ_c R_count (the last term the same for every class), so the
    two readouts predict alike and softmax(R_pop) = softmax(1.1 R_count)."""
    out = torch.rand(3, 7, 30, dtype=torch.float64)
    pop, _ = PopulationReadout(3, 10, alpha=alpha).double()(out)
    count, _ = PopulationReadout(3, 10, alpha=alpha, mode="count").double()(out)
    torch.testing.assert_close(pop, 1.1 * count - 0.1 * count.sum(-1, keepdim=True))
    torch.testing.assert_close(pop.log_softmax(-1), (1.1 * count).log_softmax(-1))


def test_layer_stats_counts_by_hand():
    out = torch.zeros(1, 6, 2)
    out[0, 1:4, 0] = 0.9  # one SRC pulse of 3 steps in neuron 0; neuron 1 silent
    inp = torch.zeros(1, 6, 3)
    inp[0, 0, :2] = 1.0
    pulse = layer_stats(out, inp, pulse=True)
    assert pulse == {"neurons": 2, "firing_rate": 1 / 12, "silent_fraction": 0.5,
                     "spikes_per_sample": 1.0, "synops_per_sample": 4.0}
    assert layer_stats(out, inp, pulse=False)["spikes_per_sample"] == 3.0
    with pytest.raises(ValueError, match=r"out: expected shape \(B, T, N\), got \(6, 2\)"):
        layer_stats(out[0], inp, pulse=True)  # "not enough values to unpack" came from inside


@pytest.mark.parametrize("layers", [0, 2])
def test_src_network_shapes_step_split_and_gradients(layers):
    torch.manual_seed(0)
    net = SpikingNetwork("src", 6, 5, layers, n_classes=3).double()
    with torch.no_grad():
        for layer in net.layers:
            layer.weight.mul_(15)
    assert len(net.layers) == layers + 1 and net.layers[-1].hidden_size == 30
    x = (torch.rand(2, 23, 6, dtype=torch.float64) < 0.5).double()
    R, state = net(x)
    assert R.shape == (2, 23, 3) and len(state) == layers + 2
    steps, s = [], None
    for t in range(23):
        r, s = net.step(x[:, t], s)
        steps.append(r)
    torch.testing.assert_close(torch.stack(steps, 1), R, atol=1e-9, rtol=0)
    first, s = net(x[:, :10])
    second, _ = net(x[:, 10:], s)
    torch.testing.assert_close(torch.cat([first, second], 1), R, atol=1e-9, rtol=0)
    torch.nn.functional.cross_entropy(R[:, -1], torch.tensor([0, 2])).backward()
    assert float(net.layers[0].weight.grad.abs().sum()) > 0
    stats = net.spike_stats(x)
    assert [s["neurons"] for s in stats] == [5] * layers + [30]
    n0 = net.layers[0].hidden_size
    assert stats[0]["synops_per_sample"] == float((x != 0).sum()) * n0 / 2


@pytest.mark.parametrize("kind", ["src", "lif"])
def test_dropout_masks_each_hidden_neuron_for_the_whole_sequence(kind):
    """In training, the next layer sees each hidden layer's spikes times a mask of 0 or
    1 / (1 − p), one per sample and neuron over all steps, about p of them 0; in eval mode the
    network is the one without dropout; the output layer's spikes are never dropped."""
    if kind == "lif":
        pytest.importorskip("snntorch")
    torch.manual_seed(0)
    p = 0.3
    net = SpikingNetwork(kind, 6, 40, 2, n_classes=2, dropout=p).double()
    plain = SpikingNetwork(kind, 6, 40, 2, n_classes=2).double()
    with torch.no_grad():
        for layer in net.layers:
            (layer.weight if kind == "src" else layer.linear.weight).mul_(15)
    plain.load_state_dict(net.state_dict())
    x = (torch.rand(64, 30, 6, dtype=torch.float64) < 0.5).double()
    seen = []
    hooks = [module.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
             for module in (*net.layers, net.readout)]
    _, _, spikes = net.train().run(x)
    for k in (0, 1):  # the input of layer k + 1 over the output of layer k
        out, inp = spikes[k], seen[k + 1]
        assert bool((out > 0).any())
        mask = inp.sum(1) / out.sum(1).where(out.sum(1) > 0, torch.nan)
        fired = ~mask.isnan()
        assert set(mask[fired].round(decimals=9).unique().tolist()) <= {0.0, round(1 / (1 - p), 9)}
        torch.testing.assert_close(inp, out * (inp.sum(1, keepdim=True) > 0) / (1 - p))
        assert 0.2 < float((mask[fired] == 0).double().mean()) < 0.4
    torch.testing.assert_close(seen[0], x)  # neither the input nor the output spikes
    torch.testing.assert_close(seen[3], spikes[2], rtol=0, atol=0)
    for h in hooks:
        h.remove()
    torch.testing.assert_close(net.eval()(x)[0], plain.eval()(x)[0], rtol=0, atol=0)
    for bad in (1.0, -0.1, "0.2"):
        with pytest.raises(ValueError, match=f"dropout: expected a probability in \\[0, 1\\), "
                                             f"got {bad!r}"):
            SpikingNetwork(kind, 6, 4, 1, dropout=bad)


def test_noise_helper_perturbs_every_src_layer():
    net = build_src(4, 2, hidden=8, layers=2)
    net.perturb_(0.1, torch.Generator().manual_seed(0))
    for layer in net.layers:
        assert float(layer.r.std()) > 0 and float(layer.r_s.std()) > 0
    net.perturb_(0.0)
    assert all(bool((layer.r == 2.0).all()) for layer in net.layers)


def test_gains_kept_puts_back_the_gains_as_they_were_not_the_nominal_ones():
    """A network whose gains differ from 2, -7 (drawn once, for training) keeps them through a
    noise check; perturb_(0) alone would have set them to the nominal values."""
    net = build_src(4, 2, hidden=8, layers=2)
    net.perturb_(0.2, torch.Generator().manual_seed(0))
    own = [(layer.r.clone(), layer.r_s.clone()) for layer in net.layers]
    with net.gains_kept():
        net.perturb_(0.1, torch.Generator().manual_seed(1))
        assert not torch.equal(net.layers[0].r, own[0][0])
    for layer, (r, r_s) in zip(net.layers, own, strict=True):
        assert torch.equal(layer.r, r) and torch.equal(layer.r_s, r_s)


def test_bad_network_arguments_raise():
    with pytest.raises(ValueError, match="kind"):
        SpikingNetwork("izhikevich", 4, 8, 1)
    for bad in (-1, 1.5, "2", True):
        with pytest.raises(ValueError, match=f"layers: expected an int >= 0 hidden layers, "
                                             f"got {bad!r}"):
            SpikingNetwork("src", 4, 8, bad)
    with pytest.raises(ValueError, match="hidden_size: expected a positive int, got True"):
        SpikingNetwork("src", 4, True, 0)  # checked even where no layer uses it
    assert SpikingNetwork("src", 4, np.int64(8), np.int64(1)).layers[0].hidden_size == 8
    net = SpikingNetwork("src", 4, 8, 1, n_classes=2)
    with pytest.raises(ValueError, match="state: expected a tuple of 3 states"):
        net(torch.zeros(1, 3, 4), (None,))
    with pytest.raises(ValueError, match=r"x_t: expected shape \(B, 4\)"):
        net.step(torch.zeros(1, 3, 4))
    with pytest.raises(ValueError, match=r"x_t: expected shape \(B, 4\), got \(2, 3\)"):
        net.step(torch.zeros(2, 3))


def _rates(net, x):
    return [s["firing_rate"] for s in net.spike_stats(x)]


@pytest.mark.parametrize("kind", ["src", "lif"])
def test_calibrate_sets_every_layer_to_the_target_rate(kind):
    if kind == "lif":
        pytest.importorskip("snntorch")
    torch.manual_seed(0)
    x = rate_code(torch.rand(8, 30) * 0.5, silent=5, steps=40, generator=torch.Generator()
                  .manual_seed(1))
    net = SpikingNetwork(kind, 30, 24, 3, per_class=3)
    assert _rates(net, x) != pytest.approx([0.02] * 4, rel=0.25)  # not there by chance
    gains = net.calibrate_(x, 0.02)
    assert len(gains) == 4 and all(g != pytest.approx(1.0) for g in gains)
    assert _rates(net, x) == pytest.approx([0.02] * 4, rel=0.25)


def test_init_rate_calibrates_once_at_the_first_training_call():
    torch.manual_seed(0)
    x = rate_code(torch.rand(6, 30) * 0.5, silent=5, steps=40, generator=torch.Generator()
                  .manual_seed(1))
    net = SpikingNetwork("src", 30, 24, 2, per_class=3, init_rate=0.02)
    w0 = [layer.weight.clone() for layer in net.layers]
    net.eval()(x)  # evaluation does not calibrate
    assert all(torch.equal(a, layer.weight) for a, layer in zip(w0, net.layers))
    assert not net.calibrated
    net.train()(x)
    assert net.calibrated
    assert _rates(net, x) == pytest.approx([0.02] * 3, rel=0.25)
    w1 = [layer.weight.clone() for layer in net.layers]
    net(x[:3])  # a second batch: left alone
    assert all(torch.equal(a, layer.weight) for a, layer in zip(w1, net.layers))
    # a resumed run (state loaded) is not calibrated again
    again = SpikingNetwork("src", 30, 24, 2, per_class=3, init_rate=0.02)
    again.load_state_dict(net.state_dict())
    again(x[:3])
    assert all(torch.equal(a, layer.weight) for a, layer in zip(w1, again.layers))


def test_step_never_calibrates():
    x = rate_code(torch.rand(4, 30) * 0.5, silent=5, steps=20)
    net = SpikingNetwork("src", 30, 24, 1, per_class=3, init_rate=0.02)
    w0 = net.layers[0].weight.clone()
    with pytest.raises(RuntimeError, match="step: init_rate calibrates on a whole sequence"):
        net.train().step(x[:, 0])
    assert not net.calibrated and torch.equal(net.layers[0].weight, w0)
    net(x)
    assert net.calibrated
    w1 = net.layers[0].weight.clone()
    net.step(x[:, 0])
    assert torch.equal(net.layers[0].weight, w1)


def test_calibrate_rejects_bad_rates_and_warns_when_out_of_reach():
    with pytest.raises(ValueError, match="init_rate: expected a firing rate in \\(0, 1\\)"):
        SpikingNetwork("src", 30, 24, 1, init_rate=0.0)
    net = SpikingNetwork("src", 30, 24, 1, per_class=3)
    x = rate_code(torch.rand(4, 30), silent=5, steps=20)
    with pytest.raises(ValueError, match="rate: expected"):
        net.calibrate_(x, 1.5)
    with pytest.warns(UserWarning, match="the target was 0.9"):
        net.calibrate_(x, 0.9)  # an SRC pulse lasts 2-3 steps: 0.9 pulses a step is impossible
    # too high: an input so strong that the layer fires at the smallest gain (1/100)
    with pytest.warns(UserWarning) as caught:  # every layer fed such input says so
        net.calibrate_(torch.full_like(x, 1e4), 1e-4)
    said = [str(w.message) for w in caught]
    assert said and all(re.match(r"calibrate_: layer \d fires at .* the target was 0.0001", m)
                        for m in said)
    assert said[0].startswith("calibrate_: layer 0 fires at")


def test_calibrate_warns_when_the_largest_gain_cannot_reach_the_rate():
    """A layer whose rate saturates below the target, even less than 2× below, says so: its gain
    is left at the top of the search (100), the layer pinned in saturation."""
    torch.manual_seed(0)
    net = SpikingNetwork("src", 100, 64, 1, per_class=3)
    x = rate_code(torch.rand(8, 100), silent=5, steps=40,
                  generator=torch.Generator().manual_seed(1))
    with pytest.warns(UserWarning) as caught:  # the output layer too
        net.calibrate_(x, 0.05)
    said = str(caught[0].message)
    assert re.match(r"calibrate_: layer 0 fires at 0\.0[34]\d* with gain 100,", said), said


def test_spike_stats_of_no_sample_and_a_wrong_readout_name_are_clear():
    net = SpikingNetwork("src", 3, 4, 1, per_class=2)
    with pytest.raises(ValueError, match=r"out: expected at least one sample .* \(0, 5, 4\)"):
        net.spike_stats(torch.zeros(0, 5, 3))
    with pytest.raises(ValueError, match=r"readout: expected one of \('population', 'count'\), "
                       "got 'pop'"):
        SpikingNetwork("src", 3, 4, 1, readout="pop")


CALIBRATE_RANKS = """
import torch, torch.distributed as dist
from bistable.nn.encoders import rate_code
from bistable.nn.spiking import SpikingNetwork
from bistable.train.distributed import setup, teardown
context = setup()
rank = dist.get_rank()
torch.manual_seed(0)
net = SpikingNetwork("src", 30, 24, 2, per_class=3, init_rate=0.02)
images = torch.rand(6, 30, generator=torch.Generator().manual_seed(rank)) * 0.5
net(rate_code(images, silent=5, steps=40))  # each rank calibrates on its own batch
w = torch.cat([layer.weight.flatten() for layer in net.layers])
every = [torch.empty_like(w) for _ in range(2)]
dist.all_gather(every, w)
assert torch.equal(every[0], every[1]), "the ranks start from different weights"
teardown(context)
"""


def test_init_rate_under_two_ranks_starts_every_replica_alike(tmp_path, torchrun):
    script = tmp_path / "calibrate_ranks.py"
    script.write_text(CALIBRATE_RANKS)
    proc = torchrun(script)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_lif_matches_its_equations_and_steps():
    pytest.importorskip("snntorch")
    from bistable.units.lif import LIF

    torch.manual_seed(0)
    m = LIF(3, 4, beta=0.9).double()
    x = torch.rand(2, 30, 3, dtype=torch.float64) * 2
    out, mem = m(x)
    beta = m.leaky.beta  # the stored decay (0.9 rounded to float32, then cast)
    ref_mem, ref = torch.zeros(2, 4, dtype=torch.float64), []
    for t in range(30):
        reset = (ref_mem > 1.0).double()
        ref_mem = beta * ref_mem + m.linear(x[:, t]) - reset
        ref.append((ref_mem > 1.0).double())
    assert out.dtype == torch.float64 and float(out.detach().sum()) > 0
    torch.testing.assert_close(out, torch.stack(ref, 1))
    torch.testing.assert_close(mem, ref_mem)
    s, steps = None, []
    for t in range(30):
        y, s = m.step(x[:, t], s)
        steps.append(y)
    torch.testing.assert_close(torch.stack(steps, 1), out)
    torch.testing.assert_close(s, mem)


def test_a_bf16_lif_continues_from_its_own_state():
    """snnTorch's membrane comes out float32 for a bf16 layer; the unit once rejected it as the
    next call's state (so halves and steps failed)."""
    pytest.importorskip("snntorch")
    from bistable.units.lif import LIF

    torch.manual_seed(0)
    m = LIF(3, 4).bfloat16()
    x = (torch.rand(2, 8, 3) * 3).bfloat16()
    out, mem = m(x)
    assert mem.dtype == m.init_state(2).dtype == torch.float32
    first, state = m(x[:, :5])
    second, _ = m(x[:, 5:], state)
    torch.testing.assert_close(torch.cat([first, second], 1), out)
    s = None
    for t in range(8):
        _, s = m.step(x[:, t], s)


def test_lif_network_trains_through_the_surrogate():
    pytest.importorskip("snntorch")
    torch.manual_seed(0)
    net = build_lif(6, 2, hidden=8, layers=1)
    x = (torch.rand(2, 15, 6) < 0.5).float()
    R, state = net(x)
    assert R.shape == (2, 15, 2) and state[0].shape == (2, 8)
    torch.nn.functional.cross_entropy(R[:, -1] + 0.0, torch.tensor([0, 1])).backward()
    assert float(net.layers[0].linear.weight.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="perturb_"):
        net.perturb_(0.1)
    with pytest.raises(ValueError, match="gains_kept: only SRC networks"):
        with net.gains_kept():
            pass


def test_lif_without_snntorch_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "snntorch", None)
    from bistable.units.lif import LIF

    with pytest.raises(ImportError, match=r"bistable\[peers\]"):
        LIF(3, 4)


def test_raster_and_membrane_plots_are_written(tmp_path):
    pytest.importorskip("matplotlib")
    from bistable import plot
    from bistable.units.src import SRC

    torch.manual_seed(0)
    cell = SRC(6, 4)
    with torch.no_grad():
        cell.weight.mul_(15)
    x = (torch.rand(1, 40, 6) < 0.5).float()
    out, _ = cell(x)
    h, h_s = cell.membrane(x)
    assert torch.equal(out.detach(), h.clamp(min=0))
    for path in (plot.raster(out[0], tmp_path / "raster.png", title="SRC"),
                 plot.membrane_traces(h[0], tmp_path / "traces.png", h_s=h_s[0])):
        assert path.stat().st_size > 1000 and path.read_bytes()[:4] == b"\x89PNG"


def _lif_with_unit_weight(**kw):
    from bistable.units.lif import LIF

    unit = LIF(1, 1, **kw).double()
    with torch.no_grad():
        unit.linear.weight.fill_(1.0)
        unit.linear.bias.zero_()
    return unit


def test_lif_threshold_and_slope_reach_the_neuron():
    """A drive of 0.6 fires a neuron of threshold 0.5 (mem 0.6 before the reset); the spike's
    gradient is snnTorch's arctan surrogate of slope α: (α/2) / (1 + (π/2 · α · (x − 1))²)."""
    pytest.importorskip("snntorch")
    out, mem = _lif_with_unit_weight(threshold=0.5)(torch.full((1, 1, 1), 0.6,
                                                               dtype=torch.float64))
    assert out.item() == 1.0 and abs(mem.item() - 0.6) < 1e-12
    for slope in (2.0, 5.0):
        x = torch.full((1, 1, 1), 0.9, dtype=torch.float64, requires_grad=True)
        _lif_with_unit_weight(slope=slope)(x)[0].sum().backward()
        want = slope / 2 / (1 + (math.pi / 2 * slope * (0.9 - 1.0)) ** 2)
        assert abs(x.grad.item() - want) < 1e-6


def test_rate_code_fires_at_the_gain():
    x = rate_code(torch.ones(2, 3), steps=4000, silent=0, gain=0.5,
                  generator=torch.Generator().manual_seed(0))
    assert abs(x.mean().item() - 0.5) < 0.02


def test_spike_stats_count_each_layer_s_own_input():
    """Synaptic operations per sample = non-zero inputs of the layer × its neurons / B."""
    torch.manual_seed(0)
    net = SpikingNetwork("src", 6, 8, 2, n_classes=2, per_class=2)
    x = (torch.rand(3, 40, 6) < 0.3).float()
    _, _, spikes = net.run(x)
    for stats, inp, out in zip(net.spike_stats(x), [x] + spikes[:-1], spikes, strict=True):
        assert stats["synops_per_sample"] == float((inp != 0).sum()) * out.shape[-1] / 3


def test_spike_stats_of_a_sequence_in_chunks_add_up_to_the_whole():
    """A pulse that spans two chunks of a continued sequence is one spike, counted once."""
    torch.manual_seed(0)
    net = SpikingNetwork("src", 6, 8, 2, n_classes=2, per_class=2).double()
    x = (torch.rand(3, 60, 6, dtype=torch.float64) < 0.4).double() * 3
    _, _, spikes = net.run(x)
    whole = [st["spikes_per_sample"] for st in net.spike_stats(x)]
    cuts = [t for t in range(1, 60) if ((spikes[0][:, t - 1] > 0) & (spikes[0][:, t] > 0)).any()]
    assert cuts and sum(whole) > 0                 # some cut falls inside a pulse
    for t in cuts[:5]:
        _, state, _ = net.run(x[:, :t])
        parts = zip(net.spike_stats(x[:, :t]), net.spike_stats(x[:, t:], state), strict=True)
        assert [a["spikes_per_sample"] + b["spikes_per_sample"] for a, b in parts] == whole


def test_layer_stats_are_per_sample_in_a_batch():
    out = torch.zeros(2, 6, 2)
    out[0, 1:4, 0] = 0.9                   # one pulse in sample 0, one in sample 1
    out[1, 2:4, 1] = 0.5
    inp = torch.zeros(2, 6, 3)
    inp[0, 0, :2] = 1.0
    inp[1, 3, 0] = 1.0
    stats = layer_stats(out, inp, pulse=True)
    assert stats["spikes_per_sample"] == 1.0 and stats["synops_per_sample"] == 3.0
    assert stats["firing_rate"] == 2 / 24 and stats["silent_fraction"] == 0.0


def test_calibrate_leaves_the_network_in_the_mode_it_was_in():
    torch.manual_seed(0)
    x = rate_code(torch.rand(4, 30) * 0.5, silent=5, steps=20, generator=torch.Generator()
                  .manual_seed(1))
    net = SpikingNetwork("src", 30, 24, 1, per_class=3)
    for training in (False, True):
        net.train(training).calibrate_(x, 0.02)
        assert net.training is training and all(m.training is training for m in net.modules())


def test_readout_integrates_in_float32_under_bfloat16_autocast():
    """Under autocast the leak stays α_ro (a bfloat16 0.99 is 0.98828125: R off by 14 %)."""
    g = torch.Generator().manual_seed(0)
    out = (torch.rand(4, 220, 100, generator=g) < 0.05) * torch.rand(4, 220, 100, generator=g)
    readout = PopulationReadout(alpha=0.99)
    R, last = readout(out)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        R_bf16, last_bf16 = readout(out)
    assert R_bf16.dtype == torch.float32
    torch.testing.assert_close(R_bf16, R)
    R2, _ = readout(out[:, 110:], readout(out[:, :110])[1])  # its state continues the sequence
    torch.testing.assert_close(R2, R[:, 110:])


def test_a_checkpoint_does_not_carry_one_readout_s_matrix_into_another():
    """The readout's matrix follows from its mode: loading a count-readout network's weights
    into a population-readout network keeps +1 / −0.1 (the --init-from of another readout);
    checkpoints that saved the matrix (before 2026-12-06) still load."""
    count = build_src(784, 10, hidden=8, layers=1, readout="count")
    population = build_src(784, 10, hidden=8, layers=1)
    state = count.state_dict()
    assert "readout.matrix" not in state
    population.load_state_dict({**state, "readout.matrix": count.readout.matrix()})
    assert population.readout.matrix()[0].unique().tolist() == [-0.1, 1.0]


def test_a_network_built_on_the_meta_device_loads_and_computes_as_its_original():
    """Build on "meta", ``to_empty()``, ``load_state_dict``: the usual way to load a large model.
    The readout's matrix was a buffer outside the state dict, left as uninitialised memory."""
    torch.manual_seed(0)
    original = build_src(16, 10, hidden=8, layers=1)
    with torch.no_grad():
        for layer in original.layers:
            layer.weight.mul_(8)  # spikes at the output, so that the readout matters
    with torch.device("meta"):
        copy = build_src(16, 10, hidden=8, layers=1)
    copy.to_empty(device="cpu")
    copy.load_state_dict(original.state_dict())
    x = (torch.rand(2, 100, 16) < 0.3).float()
    expected = original(x)[0]
    assert expected.abs().sum() > 0
    torch.testing.assert_close(copy(x)[0], expected, rtol=0, atol=0)


def test_spike_stats_are_those_of_evaluation_mode_whatever_the_network_s():
    torch.manual_seed(3)
    net = build_src(20, 3, hidden=30, layers=2, dropout=0.5, train_noise=0.2)
    x = rate_code(torch.rand(6, 20), generator=torch.Generator().manual_seed(1))
    training = [net.spike_stats(x) for _ in range(2)]
    assert net.training
    net.eval()
    assert training[0] == training[1] == net.spike_stats(x)
