"""The sparse input product against the plain one: values and gradients (float64, any density),
which path spike_matmul takes, and the SRC layer with the sparse product against without it."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bistable.units import spike_matmul as sm
from bistable.units.spike_matmul import dense_matmul, sparse_matmul, spike_matmul
from bistable.units.src import SRC


def _spikes(shape, density, seed, signed=False, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(shape, generator=g, dtype=dtype)
    values = values if signed else values.abs()
    return torch.where(torch.rand(shape, generator=g, dtype=dtype) < density, values, 0.0)


def _values_and_grads(product, x, w, create_graph=False):
    x, w = x.clone().requires_grad_(), w.clone().requires_grad_()
    out = product(x, w)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    return (out, *torch.autograd.grad(out, (x, w), grad, create_graph=create_graph))


@settings(max_examples=40, deadline=None)
@given(lead=st.lists(st.integers(0, 5), min_size=0, max_size=2), F=st.integers(1, 37),
       H=st.integers(1, 19), density=st.sampled_from([0.0, 0.03, 0.3, 1.0]),
       signed=st.booleans(), seed=st.integers(0, 2**16))
def test_sparse_equals_dense_values_and_gradients(lead, F, H, density, signed, seed):
    x = _spikes((*lead, F), density, seed, signed)
    w = torch.randn(H, F, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    for got, want in zip(_values_and_grads(sparse_matmul, x, w),
                         _values_and_grads(dense_matmul, x, w)):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_float32_and_a_non_contiguous_input():
    x = _spikes((7, 61, 33), 0.05, 3, dtype=torch.float32).transpose(0, 1)  # (61, 7, 33) view
    w = torch.randn(29, 33)
    for got, want in zip(_values_and_grads(sparse_matmul, x, w),
                         _values_and_grads(dense_matmul, x, w)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("needs", [(True, False), (False, True)])
def test_only_the_gradients_asked_for(needs):
    x0, w0 = _spikes((5, 9, 11), 0.2, 4), torch.randn(6, 11, dtype=torch.float64)
    grads = []
    for product in (sparse_matmul, dense_matmul):
        x, w = x0.clone().requires_grad_(needs[0]), w0.clone().requires_grad_(needs[1])
        out = product(x, w)
        out.backward(torch.ones_like(out))
        assert (x.grad is None) != needs[0] and (w.grad is None) != needs[1]
        grads.append(x.grad if needs[0] else w.grad)
    torch.testing.assert_close(*grads, rtol=1e-12, atol=1e-12)


def test_second_derivatives_equal_the_dense_products():
    # a gradient penalty: the gradients of the gradients, by the plain operations
    x0, w0 = _spikes((4, 13, 10), 0.1, 5), torch.randn(7, 10, dtype=torch.float64)
    results = []
    for product in (sparse_matmul, dense_matmul):
        x, w = x0.clone().requires_grad_(), w0.clone().requires_grad_()
        out, gx, gw = _values_and_grads(lambda a, b, p=product: p(a, b).tanh(), x, w, True)
        penalty = gx.pow(2).sum() + gw.pow(3).sum()
        results.append(torch.autograd.grad(penalty, (x, w)))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_a_weight_gradient_penalty_on_a_first_layer_equals_the_dense_one():
    """The input needs no gradient (data): the product keeps only its nonzeros, from which the
    recorded weight gradient rebuilds it."""
    x, w0 = _spikes((4, 13, 10), 0.1, 6), torch.randn(7, 10, dtype=torch.float64)
    results = []
    for product in (sparse_matmul, dense_matmul):
        w = w0.clone().requires_grad_()
        gw, = torch.autograd.grad(product(x, w).tanh().sum(), w, create_graph=True)
        results.append(torch.autograd.grad(gw.pow(2).sum(), w)[0])
    torch.testing.assert_close(*results, rtol=1e-10, atol=1e-10)


def _big(density=0.02, seed=0, dtype=torch.float64):
    """An input just large enough for spike_matmul's sparse path."""
    return _spikes((sm.MIN_ELEMENTS // 64, 64), density, seed, dtype=dtype)


def test_the_result_can_be_changed_in_place_and_the_weight_after_the_forward():
    """As with the plain product: an in-place op on the result, and (a first layer: the input
    needs no gradient) the weight changed in place between forward and backward."""
    grads = []
    for product in (spike_matmul, dense_matmul):
        w = torch.randn(5, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
        w.requires_grad_()
        out = product(_big(), w)
        out.mul_(2)
        with torch.no_grad():
            w.mul_(0.5)
        out.pow(2).sum().backward()
        grads.append(w.grad)
    torch.testing.assert_close(*grads, rtol=1e-12, atol=1e-12)


def test_what_the_sparse_product_keeps_for_backward_is_what_the_gradients_need():
    x = _big(0.05).requires_grad_()
    frozen = torch.randn(5, 64, dtype=torch.float64)
    kept = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
        out = sparse_matmul(x, frozen)
    assert not any(t.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()
                   for t in kept)  # only the weight: x's gradient is g W
    assert sum(t.numel() for t in kept) == frozen.numel()
    out.sum().backward()
    torch.testing.assert_close(x.grad, torch.ones(x.shape[0], 5, dtype=x.dtype) @ frozen)


@pytest.mark.parametrize("x_shape, w_shape", [((5, 64), (0, 64)), ((3, 0), (4, 0)),
                                              ((0, 7), (2, 7))])
def test_empty_operands_give_the_plain_product(x_shape, w_shape):
    x = torch.zeros(x_shape, dtype=torch.float64, requires_grad=True)
    w = torch.zeros(w_shape, dtype=torch.float64, requires_grad=True)
    for product in (sparse_matmul, spike_matmul):
        out = product(x, w)
        out.sum().backward()
        assert out.shape == (x_shape[0], w_shape[0]) and not out.any()
        assert w.grad.shape == w.shape and x.grad.shape == x.shape


def test_under_dispatch_modes_the_plain_product_serves():
    """Tools that trace or count (FlopCounterMode, fake tensors) see the plain product: the
    sparse one reads values to choose its shapes."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode

    x, w = _big(dtype=torch.float32), torch.randn(16, 64)
    with FlopCounterMode(display=False) as counter:
        spike_matmul(x, w)
    assert counter.get_total_flops() == 2 * x.shape[0] * 64 * 16
    with FakeTensorMode() as mode:
        out = spike_matmul(mode.from_tensor(x), mode.from_tensor(w))
    assert out.shape == (x.shape[0], 16)


def _path(x, w):
    """Which product spike_matmul took: the sparse one leaves its own backward node."""
    out = spike_matmul(x, w.requires_grad_())
    torch.testing.assert_close(out, dense_matmul(x, w), rtol=1e-4, atol=1e-4)
    nodes = [out.grad_fn, *(f for f, _ in out.grad_fn.next_functions if f is not None)]
    return "sparse" if any(type(f).__name__ == "_SparseMatmulBackward" for f in nodes) else "dense"


def test_spike_matmul_takes_the_sparse_product_only_where_it_pays():
    w = torch.randn(16, 256)
    rows = sm.MIN_ELEMENTS // 256
    assert _path(_spikes((rows, 256), 0.02, 0, dtype=torch.float32), w) == "sparse"
    assert _path(_spikes((rows, 256), 0.0, 0, dtype=torch.float32), w) == "sparse"
    assert _path(_spikes((rows, 256), 0.3, 0, dtype=torch.float32), w) == "dense"   # too dense
    assert _path(_spikes((rows - 1, 256), 0.02, 0, dtype=torch.float32), w) == "dense"  # small
    assert _path(_spikes((rows, 256), 0.02, 0), w.double()) == "sparse"
    assert _path(_spikes((rows, 256), 0.02, 0, dtype=torch.bfloat16), w.bfloat16()) == "dense"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert _path(_spikes((rows, 256), 0.02, 0, dtype=torch.float32), w) == "dense"


def test_under_torch_func_the_plain_product_serves():
    x = _spikes((sm.MIN_ELEMENTS // 64, 64), 0.02, 6)
    w = torch.randn(5, 64, dtype=torch.float64)
    got = torch.func.grad(lambda w: spike_matmul(x, w).sin().sum())(w)
    want = torch.func.grad(lambda w: dense_matmul(x, w).sin().sum())(w)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("x, w, match", [
    (torch.zeros(3, 6), torch.zeros(5, 7), r"expected \(\.\.\., F\) and \(H, F\), got \(3, 6\)"),
    (torch.zeros(3, 7), torch.zeros(7), r"got \(3, 7\) and \(7,\)"),
    (torch.zeros(3, 7), torch.zeros(5, 7, dtype=torch.float64), "expected the dtype of weight"),
    (torch.zeros(3, 7, dtype=torch.int64), torch.zeros(5, 7, dtype=torch.int64),
     "expected a float32 or float64 CPU tensor, got torch.int64"),
])
def test_bad_operands_are_refused(x, w, match):
    with pytest.raises(ValueError, match=match):
        sparse_matmul(x, w)
    if "dtype" not in match and "float32" not in match:
        with pytest.raises(ValueError, match=match):
            spike_matmul(x, w)


@pytest.mark.parametrize("detach", [False, True])
def test_src_layer_with_and_without_the_sparse_product(monkeypatch, detach):
    """The same SRC network (float64, two layers: coded pixels, then the first layer's spikes)
    with the sparse product on every input and with the plain one: values and gradients."""
    torch.manual_seed(0)
    layers = [SRC(40, 30, detach_recurrent=detach).double(),
              SRC(30, 20, detach_recurrent=detach).double()]
    with torch.no_grad():
        for layer in layers:
            layer.weight.mul_(8)  # the second layer's input spikes too
    x = _spikes((3, 57, 40), 0.1, 7).gt(0).double()
    taken = []
    real_sparse = sm._sparse_product
    monkeypatch.setattr(sm, "_sparse_product", lambda *a: taken.append(1) or real_sparse(*a))

    def run(min_elements, max_density):
        monkeypatch.setattr(sm, "MIN_ELEMENTS", min_elements)
        monkeypatch.setattr(sm, "MAX_DENSITY", max_density)
        out = x
        for layer in layers:
            layer.zero_grad()
            out, state = layer(out)
        (out.sum() + sum(s.sum() for s in state)).backward()
        return [out.detach()] + [p.grad.clone() for layer in layers for p in layer.parameters()]

    sparse = run(0, 1.0)
    assert len(taken) == 2
    hidden = layers[0](x)[0]
    assert 0 < hidden.count_nonzero() < hidden.numel() / 2
    taken.clear()
    dense = run(0, -1.0)
    assert not taken  # the plain product only
    for got, want in zip(sparse, dense):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
