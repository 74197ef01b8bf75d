"""linear_scan against the plain float64 loop: values and gradients, every backend on CPU."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bistable.scan import linear_scan, linear_scan_reference
from bistable.scan.autograd import backward_by_scan, scan, scan_backward_op, scan_op
from bistable.scan.cpu import chunk_length, scan_cpu


def _inputs(B, T, D, dtype, broadcast_a=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    real = torch.float64 if dtype == torch.complex128 else dtype
    a = torch.rand(1 if broadcast_a else B, T, D, generator=g, dtype=real) * 0.2 + 0.79
    b = torch.randn(B, T, D, generator=g, dtype=real)
    h0 = torch.randn(B, D, generator=g, dtype=real)
    if dtype.is_complex:
        phase = torch.rand(a.shape, generator=g, dtype=real) * 6.283
        a = torch.polar(a, phase)
        b = torch.complex(b, torch.randn(B, T, D, generator=g, dtype=real))
        h0 = torch.complex(h0, torch.randn(B, D, generator=g, dtype=real))
    return a, b, h0


def _values_and_grads(fn, a, b, h0, reverse):
    a, b = a.clone().requires_grad_(), b.clone().requires_grad_()
    h0 = None if h0 is None else h0.clone().requires_grad_()
    h = fn(a, b, h0, reverse=reverse)
    w = torch.linspace(-1, 1, h.numel(), dtype=h.real.dtype).reshape(h.shape)
    loss = (h * w).real.sum() if h.is_complex() else (h * w).sum()
    leaves = [x for x in (a, b, h0) if x is not None]
    return [h.detach(), *torch.autograd.grad(loss, leaves)]


def _rel_err(x, y):
    return ((x - y).abs().max() / y.abs().max().clamp_min(1e-30)).item()


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128], ids=["real", "complex"])
@pytest.mark.parametrize("T", [1, 7, 1000, 4099])
@pytest.mark.parametrize("D", [1, 3, 130])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("with_h0", [False, True], ids=["zeros", "h0"])
def test_matches_float64_loop(dtype, T, D, reverse, with_h0):
    if T == 4099 and D == 130 and dtype.is_complex:
        pytest.skip("covered by the real case; keeps the suite short")
    a, b, h0 = _inputs(2, T, D, dtype, broadcast_a=(T % 2 == 1 and D == 3))
    h0 = h0 if with_h0 else None
    fast = _values_and_grads(linear_scan, a, b, h0, reverse)
    ref = _values_and_grads(linear_scan_reference, a, b, h0, reverse)
    for x, y in zip(fast, ref):
        assert x.shape == y.shape
        assert _rel_err(x, y) <= 1e-9


@settings(max_examples=40, deadline=None)
@given(B=st.integers(1, 3), T=st.integers(1, 700), D=st.integers(1, 5),
       reverse=st.booleans(), chunk=st.integers(2, 40))
def test_chunked_matches_loop_any_shape(B, T, D, reverse, chunk):
    a, b, h0 = _inputs(B, T, D, torch.float64, seed=T)
    from bistable.scan import cpu

    saved = cpu.MIN_CHUNK, cpu.MAX_CHUNK
    cpu.MIN_CHUNK = cpu.MAX_CHUNK = chunk  # force every chunk length, remainders included
    try:
        h = scan_cpu(a, b, h0, reverse)
    finally:
        cpu.MIN_CHUNK, cpu.MAX_CHUNK = saved
    assert _rel_err(h, linear_scan_reference(a, b, h0, reverse=reverse)) <= 1e-12


def test_chunk_length_bounds():
    assert chunk_length(1) == 16 and chunk_length(4096) == 64 and chunk_length(10**7) == 256


def test_gradient_of_h0_and_broadcast_a_by_gradcheck():
    a, b, h0 = _inputs(2, 37, 3, torch.float64, broadcast_a=True)
    args = [x.requires_grad_() for x in (a, b, h0)]
    assert torch.autograd.gradcheck(lambda a, b, h0: linear_scan(a, b, h0), args)
    assert torch.autograd.gradcheck(lambda a, b, h0: linear_scan(a, b, h0, reverse=True), args)


def test_float32_long_sequence_precision():
    a, b, h0 = _inputs(2, 65536, 4, torch.float64)
    a = a.clamp(max=1.0)
    exact = linear_scan_reference(a, b, h0)  # the plain loop in float64
    h32 = linear_scan(a.float(), b.float(), h0.float())
    assert h32.dtype == torch.float32
    assert _rel_err(h32.double(), exact) <= 1e-5


def test_float32_million_steps_stay_finite():
    g = torch.Generator().manual_seed(1)
    a = torch.ones(1, 10**6, 2)  # |a| = 1: the hardest case, states grow like a random walk
    b = torch.randn(1, 10**6, 2, generator=g)
    h = linear_scan(a, b)
    assert torch.isfinite(h).all()
    assert _rel_err(h[:, -1].double(), b.double().sum(1)) < 1e-3


def test_bfloat16_accumulates_in_float32():
    a, b, h0 = _inputs(2, 3000, 8, torch.float32)
    ones = torch.ones_like(a)
    h = linear_scan(ones.bfloat16(), b.bfloat16())
    assert h.dtype == torch.bfloat16
    exact = b.bfloat16().double().cumsum(1)
    # fp32 accumulation keeps the error at bf16 rounding of the result, not 3000 roundings
    assert _rel_err(h.double(), exact) < 1e-2


def test_bfloat16_gradients_flow():
    """bfloat16 gradients, and their values: those of the float64 scan of the same inputs, to
    bfloat16's rounding."""
    a, b, _ = _inputs(2, 50, 3, torch.float32)
    a = a.bfloat16().requires_grad_()
    b = b.bfloat16().requires_grad_()
    w = torch.randn(2, 50, 3, generator=torch.Generator().manual_seed(3))
    (linear_scan(a, b).float() * w).sum().backward()
    assert a.grad.dtype == torch.bfloat16 and b.grad.dtype == torch.bfloat16
    a64, b64 = (x.detach().double().requires_grad_() for x in (a, b))
    want = torch.autograd.grad((linear_scan_reference(a64, b64) * w.double()).sum(), [a64, b64])
    for got, ref in zip((a.grad, b.grad), want):
        assert _rel_err(got.double(), ref) < 2e-2


def test_backends_agree_and_mixed_dtypes_promote():
    a, b, h0 = _inputs(2, 50, 3, torch.float64)
    for reverse in (False, True):
        ref = linear_scan(a, b, h0, reverse=reverse, backend="reference")
        assert _rel_err(linear_scan(a, b, h0, reverse=reverse, backend="cpu"), ref) < 1e-12
    mixed = linear_scan(a.float(), b, h0)
    assert mixed.dtype == torch.float64


@pytest.mark.parametrize(
    "a_shape, b_shape, h0_shape, dtype, message",
    [
        ((2, 5), (2, 5), None, torch.float32, "a: expected shape (B, T, D)"),
        ((2, 5, 3), (2, 5, 3, 1), None, torch.float32, "b: expected shape (B, T, D)"),
        ((2, 4, 3), (2, 5, 3), None, torch.float32, "a: expected shape (2, 5, 3) or (1, 5, 3)"),
        ((2, 5, 3), (1, 5, 3), None, torch.float32,
         "a: expected shape (1, 5, 3) (b is (1, 5, 3)), got (2, 5, 3); only a broadcasts"),
        ((3, 5, 3), (2, 5, 3), None, torch.float32, "a: expected shape (2, 5, 3)"),
        ((2, 5, 3), (2, 5, 3), (2, 4), torch.float32, "h0: expected shape (2, 3), got (2, 4)"),
        ((2, 5, 3), (2, 5, 3), None, torch.int64, "expected a floating or complex dtype"),
        ((2, 0, 3), (2, 0, 3), None, torch.float32, "at least one time step"),
    ],
)
def test_bad_input_is_a_clear_value_error(a_shape, b_shape, h0_shape, dtype, message):
    a = torch.ones(a_shape, dtype=dtype)
    b = torch.ones(b_shape, dtype=dtype)
    h0 = None if h0_shape is None else torch.ones(h0_shape, dtype=dtype)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        linear_scan(a, b, h0)


def test_h0_must_be_floating_and_inputs_dense():
    a, b = torch.ones(2, 5, 3), torch.ones(2, 5, 3)
    with pytest.raises(ValueError, match="h0: expected a floating or complex dtype .*, got "
                                         "torch.int"):
        linear_scan(a, b, torch.ones(2, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="a: expected a dense .* got layout torch.sparse_coo"):
        linear_scan(a.to_sparse(), b)
    # both once a RuntimeError from deep inside torch
    with pytest.raises(ValueError, match="h0: expected a dense .* got layout torch.sparse_coo"):
        linear_scan(a, b, torch.ones(2, 3).to_sparse())
    with pytest.raises(ValueError, match=r"b: expected a floating or complex dtype \(float16, .*"
                                         r"complex128\), got torch.float8_e4m3fn"):
        linear_scan(a, b.to(torch.float8_e4m3fn))


def test_reference_accumulates_half_precision_in_float32():
    """As the other backends: the plain loop in float32, the result rounded once to bfloat16."""
    a, b, h0 = _inputs(2, 300, 4, torch.float32)
    a, b, h0 = a.bfloat16(), b.bfloat16(), h0.bfloat16()
    h = linear_scan(a, b, h0, backend="reference")
    assert h.dtype == torch.bfloat16
    assert torch.equal(h, linear_scan_reference(a.float(), b.float(), h0.float()).bfloat16())


@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")
def test_complex32_keeps_its_imaginary_part():
    a, b = (x.to(torch.complex32) for x in _inputs(2, 7, 3, torch.complex128)[:2])
    h = linear_scan(a, b)
    assert h.dtype == torch.complex32
    want = linear_scan_reference(a.to(torch.complex128), b.to(torch.complex128))
    assert _rel_err(h.to(torch.complex128), want) < 1e-2


def test_triton_backend_wants_a_cuda_tensor(monkeypatch):
    pytest.importorskip("triton")
    from bistable.scan import dispatch

    if dispatch._triton_backend() is None:
        pytest.skip(dispatch._UNAVAILABLE["triton"])
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="b: expected a CUDA tensor for backend='triton'"):
        linear_scan(torch.ones(1, 2, 1), torch.ones(1, 2, 1), backend="triton")


def test_unknown_backend_is_a_value_error():
    with pytest.raises(ValueError, match="backend: expected one of"):
        linear_scan(torch.ones(1, 2, 1), torch.ones(1, 2, 1), backend="fast")


@pytest.mark.parametrize("reverse", ["yes", 1, None])
def test_reverse_must_be_a_bool(reverse):
    with pytest.raises(ValueError, match=f"reverse: expected a bool, got {reverse!r}"):
        linear_scan(torch.ones(1, 2, 1), torch.ones(1, 2, 1), reverse=reverse)


@pytest.mark.parametrize("broadcast_a, with_h0, reverse, constant_a",
                         [(False, True, False, False), (True, False, True, False),
                          (False, False, True, False), (True, True, False, True)])
def test_eager_autograd_is_the_operators(broadcast_a, with_h0, reverse, constant_a):
    """Eager mode's autograd.Function and the custom operators (what torch.compile calls) give
    the same values and gradients, bit for bit: the same backend calls behind both (a constant
    ``a`` skipping dL/da in both)."""
    a = torch.rand(1 if broadcast_a else 3, 37, 5, dtype=torch.float64,
                   requires_grad=not constant_a)
    b = torch.randn(3, 37, 5, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(3, 5, dtype=torch.float64, requires_grad=True) if with_h0 else None
    w = torch.randn(3, 37, 5, dtype=torch.float64)
    leaves = [x for x in (a, b, h0) if x is not None and x.requires_grad]
    results = []
    for fn in (scan, scan_op):
        h = fn(a, b, h0, reverse, "cpu")
        results.append([h, *torch.autograd.grad((h * w).sum(), leaves)])
    for got, want in zip(*results, strict=True):
        assert torch.equal(got, want)


@pytest.mark.parametrize("broadcast_a, with_h0, reverse",
                         [(True, True, False), (False, False, True), (True, False, True)])
def test_a_constant_a_gets_no_gradient_and_the_others_theirs(broadcast_a, with_h0, reverse):
    """A leak that needs no gradient (the SRC's α) skips dL/da; b's and h0's gradients are the
    float64 loop's, and a gradient wanted of a alone is still given."""
    a, b, h0 = _inputs(3, 41, 5, torch.float64, broadcast_a)
    h0 = h0 if with_h0 else None
    b.requires_grad_()
    if h0 is not None:
        h0.requires_grad_()
    w = torch.randn(3, 41, 5, dtype=torch.float64)
    leaves = [x for x in (b, h0) if x is not None]
    got = torch.autograd.grad((linear_scan(a, b, h0, reverse=reverse) * w).sum(), leaves)
    want = torch.autograd.grad((linear_scan_reference(a, b, h0, reverse=reverse) * w).sum(),
                               leaves)
    for g, r in zip(got, want, strict=True):
        torch.testing.assert_close(g, r)
    with torch.no_grad():
        h = scan_cpu(a, b, h0, reverse)
        assert backward_by_scan(scan_cpu, a, h, h0, w, reverse, need_da=False)[0] is None
    a.requires_grad_()
    (da,) = torch.autograd.grad((linear_scan(a, b, h0, reverse=reverse) * w).sum(), a)
    (ref,) = torch.autograd.grad((linear_scan_reference(a, b, h0, reverse=reverse) * w).sum(),
                                 a)
    torch.testing.assert_close(da, ref)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("broadcast_a, with_h0, reverse",
                         [(False, True, False), (True, False, True), (True, True, False)])
def test_eager_scan_second_derivatives(dtype, broadcast_a, with_h0, reverse):
    """``create_graph=True`` (a gradient penalty, a Hessian-vector product): the backward is then
    built of scans itself, and ``gradgradcheck`` holds."""
    a, b, h0 = _inputs(2, 6, 3, dtype, broadcast_a)
    inputs = [x.requires_grad_() for x in ((a, b, h0) if with_h0 else (a, b))]

    def fn(a, b, h0=None):
        return linear_scan(a, b, h0, reverse=reverse, backend="cpu")
    assert torch.autograd.gradgradcheck(fn, inputs)


@pytest.mark.parametrize("broadcast_a, with_h0, reverse",
                         [(False, True, False), (True, False, True)])
def test_scan_operators_pass_pytorch_s_opcheck(broadcast_a, with_h0, reverse):
    """Schema, fake tensors (torch.compile's shapes), autograd registration and AOT dispatch of
    ``bistable::linear_scan`` and its backward operator."""
    a = torch.rand(1 if broadcast_a else 3, 40, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, 40, 5, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(3, 5, dtype=torch.float64, requires_grad=True) if with_h0 else None
    torch.library.opcheck(scan_op, (a, b, h0, reverse, "cpu"))
    a, h0 = a.detach(), None if h0 is None else h0.detach()  # the backward is not differentiable
    h = scan_op(a, b.detach(), h0, reverse, "cpu")
    for need_da in (True, False):
        torch.library.opcheck(scan_backward_op,
                              (a, h, h0, torch.randn_like(h), reverse, "cpu", need_da))
    assert scan_backward_op(a, h, h0, torch.randn_like(h), reverse, "cpu", False)[0].numel() == 0


def test_a_and_h0_must_be_on_b_s_device():
    """A tensor on another device than ``b`` is a named ValueError, not a failure deep in a
    backend (``meta`` stands in for a second device on any machine)."""
    a, b = torch.ones(2, 5, 3), torch.ones(2, 5, 3)
    with pytest.raises(ValueError, match=r"a: expected device cpu \(that of b\), got meta"):
        linear_scan(a.to("meta"), b)
    with pytest.raises(ValueError, match=r"h0: expected device cpu \(that of b\), got meta"):
        linear_scan(a, b, torch.ones(2, 3, device="meta"))


@pytest.mark.parametrize("h0_dtype", [torch.float64, torch.complex128], ids=["f64", "c128"])
def test_h0_takes_part_in_dtype_promotion(h0_dtype):
    """float32 ``a, b`` with a float64 or complex128 ``h0``: the result is in the promoted dtype
    and keeps all of ``h0`` (no rounding to float32, no dropped imaginary part)."""
    a, b, h0 = _inputs(2, 7, 3, torch.complex128 if h0_dtype.is_complex else torch.float64)
    a, b = a.real.float(), b.real.float()
    h = linear_scan(a, b, h0)
    assert h.dtype == h0_dtype
    want = linear_scan_reference(a.to(h0_dtype), b.to(h0_dtype), h0)
    assert _rel_err(h, want) <= 1e-12
