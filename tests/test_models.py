"""The model registry: names, building, parameter budgets, descriptions."""

import warnings

import numpy as np
import pytest
import torch

from bistable import models
from bistable.cli import main
from bistable.models import (
    MODEL_NAMES,
    build_model,
    count_parameters,
    describe_models,
    register_model,
    width_for_budget,
)
from bistable.units.bmru import MRU, write_rate
from torch_support import whole_graph

CORE = ["bmru", "cmru", "lru", "hybrid", "brc", "nbrc", "mingru", "gru", "lstm"]


def test_registry_names():
    assert MODEL_NAMES[: len(CORE) + 2] == [*CORE, "src", "lif"]


@pytest.mark.parametrize("name", CORE)
def test_every_model_streams(name):
    torch.manual_seed(0)
    model = build_model(name, 3, 2, hidden=6, layers=2).double()
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    y, state = model(x)
    assert y.shape == (2, 5, 2)
    ys, s = [], None
    for t in range(5):
        y_t, s = model.step(x[:, t], s)
        ys.append(y_t)
    torch.testing.assert_close(torch.stack(ys, dim=1), y, rtol=1e-9, atol=1e-9)


def test_options_reach_the_network_and_the_units():
    model = build_model("cmru", 1, 1, hidden=4, epsilon=0.25, norm="rms")
    assert torch.all(model.blocks[0].units[0].epsilon() == 0.25)
    assert isinstance(model.norm, torch.nn.RMSNorm)
    lru = build_model("lru", 1, 1, hidden=4, state_size=9)
    assert lru.blocks[1].units[0].state_size == 9
    alternating = build_model("hybrid", 1, 1, hidden=4, layers=2, mixer="lru,bmru")
    assert [b.mixer for b in alternating.blocks] == [("lru",), ("bmru",)]
    assert build_model("hybrid", 1, 1, hidden=4).blocks[0].mixer == ("lru", "bmru")


def test_unknown_model_lists_the_choices():
    with pytest.raises(ValueError, match="bmru, cmru, lru"):
        build_model("transformer", 1, 1)
    with pytest.raises(ValueError, match=r"model: expected one of bmru, .*got \['bmru'\]"):
        build_model(["bmru"], 1, 1)


def test_the_models_command_lists_every_model_with_its_count(capsys):
    assert main(["models", "--input-size", "3", "--output-size", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(MODEL_NAMES)
    for line, name in zip(lines, MODEL_NAMES):
        count = line.split()[1]
        if count != "-":  # "-": its optional dependency is missing
            model = build_model(name, 3, 2, hidden=64, layers=2)
            assert int(count.replace(",", "")) == count_parameters(model)


def test_the_models_command_names_its_flags(capsys):
    assert main(["models", "--input-size", "0"]) == 2
    assert "--input-size must be >= 1, got 0" in capsys.readouterr().err


@pytest.mark.parametrize("budget", [20_000, 1_000_000])
def test_budget_widths_give_counts_within_10_percent(budget):
    counts = {}
    for name in [*CORE, "src"]:
        hidden = width_for_budget(name, budget, 28, 10, layers=3)
        with torch.device("meta"):  # shapes only: counts without the cost of initialisation
            counts[name] = count_parameters(build_model(name, 28, 10, hidden=hidden, layers=3))
        assert abs(counts[name] - budget) <= 0.05 * budget, (name, hidden, counts[name])
    assert max(counts.values()) <= 1.1 * min(counts.values()), counts


def test_width_for_budget_is_the_closest_width():
    budget = 30_000
    hidden = width_for_budget("gru", budget, 1, 1)

    def gap(h):
        return abs(count_parameters(build_model("gru", 1, 1, hidden=h)) - budget)

    assert gap(hidden) <= gap(hidden - 1) and gap(hidden) <= gap(hidden + 1)
    smallest = count_parameters(build_model("gru", 1, 1, hidden=1))
    with pytest.warns(UserWarning, match=f"below the smallest gru \\({smallest} parameters"):
        assert width_for_budget("gru", 1, 1, 1) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert width_for_budget("gru", smallest, 1, 1) == 1
    for bad in (0, True, 3e4):
        with pytest.raises(ValueError, match=f"params: expected a positive int, got {bad!r}"):
            width_for_budget("gru", bad, 1, 1)
    assert width_for_budget("gru", np.int64(budget), 1, 1) == hidden


def test_a_budget_no_width_changes_is_refused():
    """Without a hidden layer the width changes nothing: an error, not an endless search."""
    with pytest.raises(ValueError, match=r"src with layers=0 has 78400 parameters at every width"):
        width_for_budget("src", 100_000, 784, 10, layers=0)


def test_describe_models_counts_the_default_size():
    rows = describe_models(3, 2)
    assert [r[0] for r in rows] == MODEL_NAMES
    for name, n_params, description in rows:
        if name == "lif" and n_params is None:
            pytest.importorskip("snntorch")
        assert n_params == count_parameters(build_model(name, 3, 2)) and description


def test_describe_models_without_an_optional_dependency(monkeypatch):
    def needs_extra(*args, **kwargs):
        raise ImportError("pip install 'bistable[peers]'")

    monkeypatch.setattr(models, "_REGISTRY", {"peer": models.ModelSpec(needs_extra, "a peer")})
    assert describe_models() == [("peer", None, "a peer")]


def test_register_model(monkeypatch):
    monkeypatch.setattr(models, "_REGISTRY", dict(models._REGISTRY))
    monkeypatch.setattr(models, "MODEL_NAMES", list(MODEL_NAMES))

    def tiny(input_size, output_size, *, hidden, layers):
        return torch.nn.Linear(input_size, output_size)

    register_model("tiny", tiny, "a linear map")
    assert models.MODEL_NAMES[-1] == "tiny"
    assert count_parameters(models.build_model("tiny", 3, 2)) == 8
    with pytest.raises(ValueError, match="already registered"):
        register_model("tiny", tiny, "again")


# nn.GRU and nn.LSTM break the graph inside PyTorch itself (their flat weights)
COMPILED = [name for name in MODEL_NAMES if name not in ("gru", "lstm")]


@whole_graph
@pytest.mark.parametrize("name", COMPILED)
def test_every_model_compiles_into_one_graph_with_eager_values_and_gradients(name):
    """The scan and the SRC loop are opaque operators to torch.compile, so the models trace
    whole (``fullgraph=True`` fails on any graph break); ``aot_eager`` traces forward and backward
    without code generation, to keep the test quick. The loss takes the memory units' write rate
    too (the training tool's penalty): torch 2.11 compiled the rate's and the learned initial
    state's gradients wrong through the units' autograd Functions (pytorch/pytorch#180642)."""
    if name == "lif":
        pytest.importorskip("snntorch")
    torch.manual_seed(0)
    model = models.build_model(name, input_size=3, output_size=2, hidden=8, layers=2).double()
    x = torch.randn(2, 13, 3, dtype=torch.float64)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    memory = any(isinstance(m, MRU) for m in model.modules())

    def loss(net):
        y, _ = net(x)
        return y, y.sum() + (write_rate(model) if memory else 0)

    (y, got_loss), (want, want_loss) = loss(compiled), loss(model)
    torch.testing.assert_close(y, want, rtol=0, atol=0)
    params = [p for p in model.parameters() if p.requires_grad]
    for got, expected in zip(torch.autograd.grad(got_loss, params),
                             torch.autograd.grad(want_loss, params), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@whole_graph
@pytest.mark.parametrize("name", ["hybrid", "src"])
def test_a_compiled_model_follows_new_lengths_without_recompiling(name):
    """Sequence lengths vary (``--pad-min``): after the first graph, one graph with a symbolic T
    serves every length (a loop over T would fix it and recompile for each)."""
    torch.manual_seed(0)
    model = models.build_model(name, input_size=1, output_size=2, hidden=8, layers=2).double()
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = torch.compile(model, backend="aot_eager")
    for T in (20, 27, 41, 33):
        x = torch.randn(3, T, 1, dtype=torch.float64)
        torch.testing.assert_close(compiled(x)[0], model(x)[0], rtol=0, atol=0)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 2


# units whose outputs are continuous in their inputs: bfloat16 products move them a little; the
# memory units' and spiking neurons' thresholds may flip where float32 sat near them
CONTINUOUS = ["lru", "brc", "nbrc", "mingru", "gru", "lstm"]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_trains_under_bf16_autocast(name):
    """``--precision bf16``: forward and step under ``torch.autocast`` (the LRU's complex drive
    built from bfloat16 products), float32 gradients, continuous models near their float32
    outputs; the spiking networks' readout integrates in float32 (as autocast's own cumsum
    does), so that α_ro is not rounded."""
    if name == "lif":
        pytest.importorskip("snntorch")
    torch.manual_seed(0)
    model = build_model(name, 3, 10, hidden=16, layers=2)
    x = torch.randn(4, 30, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, state = model(x)
        y_t, _ = model.step(x[:, 0])
    assert y.dtype == y_t.dtype == (torch.float32 if name in ("src", "lif") else torch.bfloat16)
    y.float().square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and g.dtype == torch.float32 and bool(g.isfinite().all())
               for g in grads)
    if name in CONTINUOUS:
        with torch.no_grad():
            want, _ = model(x)
            assert float((y.detach().float() - want).abs().max()) < 0.05 * float(want.abs().max())


def test_count_parameters_counts_the_trained_ones():
    model = build_model("lru", 2, 3, hidden=4, layers=1)
    total = count_parameters(model)
    model.encoder.weight.requires_grad_(False)
    assert count_parameters(model) == total - model.encoder.weight.numel()
