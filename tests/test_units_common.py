"""The shared input and state checks of bistable.units.base."""

import math

import pytest
import torch

import bistable as bs
from bistable.units.base import check_input, check_state, check_step_input
from torch_support import whole_graph


def test_valid_inputs_pass():
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        check_input(torch.zeros(2, 3, 4, dtype=dtype), 4)
        check_step_input(torch.zeros(2, 4, dtype=dtype), 4)
    check_state(torch.zeros(2, 5), (2, 5))
    check_state(torch.zeros(2, 5, dtype=torch.complex64), (2, 5))


@pytest.mark.parametrize("bad,message", [
    ([[[0.0] * 4]], r"x: expected a torch.Tensor of shape \(B, T, 4\), got list"),
    (torch.zeros(3, 4), r"x: expected shape \(B, T, 4\) with T >= 1, got \(3, 4\)"),
    (torch.zeros(2, 3, 5), r"x: expected shape \(B, T, 4\) with T >= 1, got \(2, 3, 5\)"),
    (torch.zeros(2, 0, 4), r"got \(2, 0, 4\)"),
    (torch.zeros(2, 3, 4, dtype=torch.int32), r"x: expected a floating dtype .* got torch.int32"),
    (torch.zeros(2, 3, 4, dtype=torch.complex64), "x: expected a floating dtype"),
    (torch.tensor([[[0, 0, 0, math.inf]]]), "x: expected finite values"),
])
def test_check_input_names_argument_expected_and_received(bad, message):
    with pytest.raises(ValueError, match=message):
        check_input(bad, 4)


def test_check_step_input_and_state():
    with pytest.raises(ValueError, match=r"x_t: expected shape \(B, 4\), got \(2, 1, 4\)"):
        check_step_input(torch.zeros(2, 1, 4), 4)
    with pytest.raises(ValueError, match=r"inp: expected finite"):
        check_step_input(torch.tensor([[math.nan] * 4]), 4, name="inp")
    with pytest.raises(ValueError, match=r"state: expected shape \(2, 5\), got \(2, 6\)"):
        check_state(torch.zeros(2, 6), (2, 5))
    with pytest.raises(ValueError, match=r"h: expected a floating or complex dtype, got torch.int"):
        check_state(torch.zeros(2, 5, dtype=torch.int64), (2, 5), name="h")
    with pytest.raises(ValueError, match="state: expected finite"):
        check_state(torch.full((2, 5), math.nan), (2, 5))


def test_dtype_must_match_the_module_parameters_outside_autocast():
    module = torch.nn.Linear(4, 2).double()
    with pytest.raises(ValueError, match=r"x: expected dtype torch.float64 .* got torch.float32"):
        check_input(torch.zeros(2, 3, 4), 4, module=module)
    with pytest.raises(ValueError, match=r"x_t: expected dtype torch.float64 .* got torch.float16"):
        check_step_input(torch.zeros(2, 4, dtype=torch.float16), 4, module=module)
    check_input(torch.zeros(2, 3, 4, dtype=torch.float64), 4, module=module)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # mixed dtypes are autocast's job
        check_input(torch.zeros(2, 3, 4, dtype=torch.bfloat16), 4, module=module)


@pytest.mark.parametrize("name", ["BMRU", "CMRU", "LRU", "BRC", "NBRC", "MinGRU", "SRC"])
def test_every_unit_names_a_dtype_mismatch(name):
    import bistable as bs

    unit = getattr(bs, name)(3, 5).double()
    with pytest.raises(ValueError, match=r"x: expected dtype torch.float64 .* got torch.float32"):
        unit(torch.zeros(2, 4, 3))
    with pytest.raises(ValueError, match=r"x_t: expected dtype torch.float64 .* got torch.float32"):
        unit.step(torch.zeros(2, 3))
    y, _ = unit(torch.zeros(2, 4, 3, dtype=torch.float64))
    assert y.dtype == torch.float64


@pytest.mark.parametrize("name", ["BMRU", "CMRU", "FirstQuadrantBMRU", "LRU", "BRC", "NBRC",
                                  "MinGRU", "SRC", "LIF", "GRU", "LSTM"])
def test_every_unit_names_a_state_dtype_mismatch(name):
    """A state in another dtype than the unit's states (float32 into a float64 unit, complex
    into a real one) is a one-line error naming it, on forward and step, not a failure inside a
    product nor a silent conversion; the unit's own state continues the sequence."""
    import bistable as bs

    if name == "LIF":
        pytest.importorskip("snntorch")
    unit = getattr(bs, name)(3, 5).double()
    x = torch.rand(2, 4, 3, dtype=torch.float64)
    _, state = unit(x)
    parts = state if isinstance(state, tuple) else (state,)
    wrong = [[s.to(torch.complex64 if s.is_complex() else torch.float32) for s in parts]]
    if not parts[0].is_complex():
        wrong.append([s.to(torch.complex128) for s in parts])
    for bad in wrong:
        bad = tuple(bad) if isinstance(state, tuple) else bad[0]
        with pytest.raises(ValueError, match=r"state.*: expected dtype torch\.(float|complex)"):
            unit(x, bad)
        with pytest.raises(ValueError, match=r"state.*: expected dtype torch\.(float|complex)"):
            unit.step(x[:, 0], bad)
    y, _ = unit(x, state)
    assert y.dtype == torch.float64


@pytest.mark.parametrize("name", ["BMRU", "CMRU", "FirstQuadrantBMRU", "LRU", "BRC", "NBRC",
                                  "MinGRU", "SRC", "LIF", "GRU", "LSTM"])
def test_every_unit_names_a_device_mismatch(name):
    """An input or a state on another device than the unit is a one-line error naming it, on
    forward and step, not a failure inside torch (the meta device stands in for a GPU)."""
    import bistable as bs

    if name == "LIF":
        pytest.importorskip("snntorch")
    unit = getattr(bs, name)(3, 5)
    x = torch.rand(2, 4, 3)
    _, state = unit(x)
    on_meta = (tuple(s.to("meta") for s in state) if isinstance(state, tuple)
               else state.to("meta"))
    with pytest.raises(ValueError, match=r"state.*: expected device cpu .* got meta"):
        unit(x, on_meta)
    with pytest.raises(ValueError, match=r"state.*: expected device cpu .* got meta"):
        unit.step(x[:, 0], on_meta)
    with pytest.raises(ValueError, match=r"x: expected device cpu .* got meta"):
        unit(x.to("meta"))
    with pytest.raises(ValueError, match=r"x_t: expected device cpu .* got meta"):
        unit.step(x[:, 0].to("meta"))


@pytest.mark.parametrize("name,kwargs", [
    *[(name, {}) for name in ["BMRU", "CMRU", "FirstQuadrantBMRU", "LRU", "BRC", "NBRC", "MinGRU",
                              "SRC", "GRU", "LSTM"]],
    ("CMRU", {"epsilon": 0.5}), ("CMRU", {"learn_epsilon": True})])
def test_every_unit_takes_an_empty_batch(name, kwargs):
    """B = 0 gives empty outputs and gradients, as torch.nn.GRU does (a last batch that a
    sampler left empty), with and without the CMRU's leak."""
    import bistable as bs

    x = torch.rand(0, 6, 3, requires_grad=True)
    y, state = getattr(bs, name)(3, 5, **kwargs)(x)
    assert y.shape == (0, 6, 5)
    assert all(s.shape[0] == 0 for s in (state if isinstance(state, tuple) else (state,)))
    y.sum().backward()
    assert x.grad.shape == x.shape


@whole_graph
def test_a_compiled_model_names_a_dtype_mismatch_too():
    """Under torch.compile the check runs while tracing (dtypes are static): the same one-line
    error, not one from inside a matrix product."""
    import bistable as bs

    model = bs.build_model("hybrid", input_size=3, output_size=2, hidden=8, layers=1)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="eager")
    with pytest.raises(ValueError, match=r"x: expected dtype torch.float32 .* got torch.float64"):
        compiled(torch.zeros(2, 4, 3, dtype=torch.float64))


@pytest.mark.parametrize("name", ["BMRU", "CMRU", "LRU", "MinGRU", "SRC"])
def test_forward_equals_the_step_loop_under_autocast(name):
    """Under autocast, with bfloat16 inputs, the sequence path and the step loop still agree (the
    memory units bitwise: both cast the drive to float32 before the update)."""
    import bistable as bs

    torch.manual_seed(0)
    unit = getattr(bs, name)(3, 5)
    x = torch.randn(2, 9, 3).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        y, last = unit(x)
        ys, state = [], None
        for t in range(x.shape[1]):
            y_t, state = unit.step(x[:, t], state)
            ys.append(y_t)
    exact = name in ("BMRU", "CMRU")
    tol = dict(rtol=0, atol=0) if exact else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.stack(ys, 1).float(), y.float(), **tol)
    for got, want in zip(state if name == "SRC" else [state], last if name == "SRC" else [last]):
        assert got.dtype == want.dtype and got.dtype in (torch.float32, torch.complex64)
        torch.testing.assert_close(got, want, **tol)


def test_recurrences_run_in_the_parameters_dtype_under_autocast():
    """Autocast lowers the products; given bfloat16 inputs, a CMRU counter counts past 256
    (where bfloat16 keeps only even integers) in float32, over a sequence and step by step, and
    the SRC's membrane stays float32."""
    import bistable as bs

    counter = bs.CMRU(1, 2, epsilon=1.0, learn_init=False)
    with torch.no_grad():
        counter.linear.weight.zero_()
        counter.linear.bias.copy_(torch.tensor([1.0, -1.0, 0.5, 0.5]))  # c = ±1, |β| = 0.5: writes
    # inputs in bfloat16, as a unit fed by a product gets them; odd counts past 256 have none
    x = torch.zeros(1, 299, 1, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, s = counter(x)
        s_step = s
        for t in range(2):
            _, s_step = counter.step(x[:, t], s_step)
        spiking = bs.SRC(3, 4)
        h, hs = spiking.membrane(torch.rand(2, 9, 3, dtype=torch.bfloat16))
    assert s.dtype == torch.float32 and s.tolist() == [[299.0, -299.0]]
    assert s_step.tolist() == [[301.0, -301.0]]
    assert h.dtype == hs.dtype == torch.float32


def _reset_every_module(model: torch.nn.Module) -> None:
    """The loop users write to re-initialise a model (as in many training scripts)."""
    for module in model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()


@pytest.mark.parametrize("make", [
    lambda bs: bs.BMRU(3, 5), lambda bs: bs.CMRU(3, 5, epsilon=0.3, learn_epsilon=True),
    lambda bs: bs.CMRU(3, 5, epsilon=0.7), lambda bs: bs.FirstQuadrantBMRU(3, 5),
    lambda bs: bs.SRC(3, 5, learn_bias=True, bias=-5.0), lambda bs: bs.SRC(3, 5, r=1.5),
    lambda bs: bs.LRU(5, 5), lambda bs: bs.LRU(3, 5), lambda bs: bs.BRC(3, 5),
    lambda bs: bs.NBRC(3, 5), lambda bs: bs.MinGRU(3, 5), lambda bs: bs.GRU(3, 5),
    lambda bs: bs.LSTM(3, 5),
    lambda bs: bs.build_model("hybrid", 2, 3, hidden=6, layers=2),
    lambda bs: bs.build_model("cmru", 2, 3, hidden=6, layers=1),
    lambda bs: bs.build_model("src", 4, 10, hidden=6, layers=2, init_rate=0.05),
], ids=["bmru", "cmru-learned-eps", "cmru", "fq-bmru", "src-learned-bias", "src", "lru",
        "lru-matrix-d", "brc", "nbrc", "mingru", "gru", "lstm", "hybrid-network", "cmru-network",
        "src-network"])
def test_resetting_every_module_rebuilds_the_fresh_unit(make):
    """After training moved every parameter (and ε, r, r_s, b, the calibration flag),
    ``reset_parameters`` over ``modules()`` with the same seed gives back exactly the freshly
    built module: the BMRU's β biases at 1, the SRC's constants, ε at the constructor's value."""
    import bistable as bs

    torch.manual_seed(0)
    fresh = make(bs)
    torch.manual_seed(1)
    used = make(bs)
    moved = ("r", "r_s", "bias", "epsilon_raw")  # buffers that training or perturb_ change
    with torch.no_grad():
        for name, tensor in [*used.named_parameters(), *used.named_buffers()]:
            if isinstance(tensor, torch.nn.Parameter) or name.rsplit(".", 1)[-1] in moved:
                tensor.uniform_(-3, 3)
            elif name == "calibrated":
                tensor.fill_(True)
    torch.manual_seed(0)
    _reset_every_module(used)
    want, got = fresh.state_dict(), used.state_dict()
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=0, msg=key)


@pytest.mark.parametrize(("make", "push"), [
    (lambda: bs.CMRU(3, 4, learn_epsilon=True), lambda m: m.epsilon_raw.fill_(1.3)),
    (lambda: bs.SRC(3, 4, learn_bias=True), lambda m: m.bias.fill_(-2.0)),
    (lambda: bs.LRU(3, 3), lambda m: m.D.mul_(2.0)),
    (lambda: bs.LRU(3, 5), lambda m: None),
], ids=["cmru-epsilon-clamped", "src-bias-clamped", "lru-skip-D", "lru-skip-linear"])
def test_a_functional_call_computes_what_the_module_does(make, push):
    """Parameters passed as plain tensors (``torch.func.functional_call``: ensembles, MAML) give
    the module's own outputs and gradients: ε's clamp to [0, 1] and b's to ≤ bias_max hold (an
    optimiser step can push them past), and the LRU's skip ``D`` works as a tensor."""
    torch.manual_seed(0)
    unit = make().double()
    with torch.no_grad():
        push(unit)
    x = (torch.rand(2, 30, 3, dtype=torch.float64) < 0.5).double() * 3
    params = {k: v.detach().clone().requires_grad_() for k, v in unit.named_parameters()}
    y = torch.func.functional_call(unit, params, (x,))[0]
    want = unit(x)[0]
    torch.testing.assert_close(y, want, rtol=0, atol=1e-12)
    y.sum().backward()
    want.sum().backward()
    for name, p in unit.named_parameters():
        torch.testing.assert_close(params[name].grad, p.grad, rtol=0, atol=1e-10, msg=name)


@pytest.mark.parametrize("values, finite", [
    ([3e38, 3e38, 1.0], True),            # finite, though their float32 sum overflows
    ([1.0, float("inf"), 2.0], False),
    ([float("nan"), 0.0, 0.0], False),
    ([1 + 2j, 3 - 1j, 0j], True),
    ([1 + 2j, complex(0, float("nan")), 0j], False),
])
def test_the_finite_check_on_states(values, finite):
    dtype = torch.complex64 if isinstance(values[0], complex) else torch.float32
    state = torch.tensor([values], dtype=dtype)
    if finite:
        check_state(state, (1, 3))
    else:
        with pytest.raises(ValueError, match="state: expected finite values, got NaN or Inf"):
            check_state(state, (1, 3))
