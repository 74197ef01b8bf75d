"""The Triton scan kernels against the plain float64 loop: values and gradients.

Without CUDA the kernels run on the CPU under ``TRITON_INTERPRET=1`` (see triton_kernels.py);
the interpreter is slow, so sizes stay small. With CUDA the same tests run compiled.
"""


import pytest
import torch

from bistable.scan import linear_scan, linear_scan_reference
from bistable.scan.autograd import BACKENDS, scan
from triton_kernels import DEVICE, load

ts = load("bistable.scan.triton_scan")
BACKENDS.pop("triton", None)  # drop a backend cached from a module without interpreter


def _inputs(B, T, D, dtype, broadcast_a=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    real = dtype.to_real()
    a = torch.rand(1 if broadcast_a else B, T, D, generator=g, dtype=real) * 0.2 + 0.79
    b = torch.randn(B, T, D, generator=g, dtype=real)
    h0 = torch.randn(B, D, generator=g, dtype=real)
    if dtype.is_complex:
        a = torch.polar(a, torch.rand(a.shape, generator=g, dtype=real) * 6.283)
        b = torch.complex(b, torch.randn(B, T, D, generator=g, dtype=real))
        h0 = torch.complex(h0, torch.randn(B, D, generator=g, dtype=real))
    return a, b, h0


def _values_and_grads(fn, a, b, h0, reverse, w):
    a, b = a.clone().requires_grad_(), b.clone().requires_grad_()
    h0 = None if h0 is None else h0.clone().requires_grad_()
    h = fn(a, b, h0, reverse)
    loss = (h * w.to(h.device)).real.sum()
    leaves = [x for x in (a, b, h0) if x is not None]
    return [h.detach(), *torch.autograd.grad(loss, leaves)]


def _compare(a, b, h0, reverse, config=None, rtol=1e-12):
    """Kernel (inputs as given, on DEVICE) against the float64/complex128 loop on the CPU."""
    wide = torch.complex128 if b.is_complex() else torch.float64
    w = torch.randn(b.shape, dtype=torch.float64)

    def kernel(a, b, h0, reverse):
        name = f"triton {config}"  # the kernels with these tiles, as a scan backend
        BACKENDS[name] = ts.Backend(lambda *x: ts.forward(*x, config=config),
                                    lambda *x: ts.backward(*x, config=config))
        return scan(a, b, h0, reverse, name)

    on = [None if x is None else x.to(DEVICE) for x in (a, b, h0)]
    got = _values_and_grads(kernel, *on, reverse, w)
    up = [None if x is None else x.to(wide) for x in (a, b, h0)]
    want = _values_and_grads(lambda a, b, h0, r: linear_scan_reference(a, b, h0, reverse=r),
                             *up, reverse, w)
    for name, x, y in zip(("h", "da", "db", "dh0"), got, want):
        assert x.shape == y.shape, name
        err = ((x.cpu().to(wide) - y).abs().max() / y.abs().max().clamp_min(1e-30)).item()
        assert err < rtol, f"{name}: relative error {err:.2e}"


SMALL = None if DEVICE == "cuda" else ts.Config(4, 4, 1)  # the default tiles are slow to interpret
CASES = [  # B, T, D, h0, broadcast a, tiles (None: the default)
    (2, 1, 3, True, False, SMALL),
    (2, 7, 3, True, True, ts.Config(4, 2, 1)),
    (1, 1000, 1, False, False, ts.Config(64, 1, 1)),
    (2, 7, 130, True, False, ts.Config(4, 32, 1)),
    (3, 20, 5, False, True, ts.Config(8, 4, 1)),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c[:3])))
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_real_matches_reference(reverse, case):
    B, T, D, with_h0, broadcast, config = case
    a, b, h0 = _inputs(B, T, D, torch.float64, broadcast, seed=T + D)
    _compare(a, b, h0 if with_h0 else None, reverse, config)


@pytest.mark.parametrize("case", CASES[:3], ids=lambda c: "x".join(map(str, c[:3])))
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_complex_matches_reference(reverse, case):
    B, T, D, with_h0, broadcast, config = case
    a, b, h0 = _inputs(B, T, D, torch.complex128, broadcast, seed=T + D)
    _compare(a, b, h0 if with_h0 else None, reverse, config)


@pytest.mark.parametrize("dtype,rtol", [(torch.float32, 1e-5), (torch.complex64, 1e-5),
                                        (torch.bfloat16, 3e-2), (torch.float16, 5e-3)],
                         ids=["fp32", "c64", "bf16", "fp16"])
def test_storage_dtypes(dtype, rtol):
    a, b, h0 = _inputs(2, 19, 6, dtype, seed=1)
    _compare(a, b, h0, False, ts.Config(8, 4, 1), rtol=rtol)


def test_through_linear_scan():
    """The dispatcher's ``backend="triton"``: bf16 stays bf16, gradients reach every input."""
    a, b, h0 = (x.to(DEVICE).requires_grad_() for x in _inputs(2, 9, 3, torch.bfloat16, seed=2))
    h = linear_scan(a, b, h0, backend="triton")
    assert h.dtype == torch.bfloat16
    h.float().sum().backward()
    want = linear_scan_reference(a.double(), b.double(), h0.double())
    assert torch.allclose(h.double(), want, rtol=3e-2, atol=3e-2)
    assert all(x.grad is not None and x.grad.dtype == torch.bfloat16 for x in (a, b, h0))


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128], ids=["real", "complex"])
@pytest.mark.parametrize("broadcast", [False, True], ids=["a", "a-broadcast"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_constant_a_skips_da(reverse, broadcast, dtype):
    """``need_da=False`` (``a`` a constant, as the SRC's leak): no ``da``, and ``db``, ``dh0``
    equal to the full backward's; through ``linear_scan`` they match the reference's."""
    a, b, h0 = (x.to(DEVICE) for x in _inputs(3, 11, 5, dtype, broadcast, seed=6))
    config = ts.Config(4, 4, 1)
    h = ts.forward(a, b, h0, reverse, config=config)
    w = torch.randn_like(h)
    da, db, dh0 = ts.backward(a, h, h0, w, reverse, need_da=False, config=config)
    assert da is None
    _, db_full, dh0_full = ts.backward(a, h, h0, w, reverse, config=config)
    torch.testing.assert_close(db, db_full, rtol=0, atol=0)
    torch.testing.assert_close(dh0, dh0_full, rtol=0, atol=0)
    b, h0 = b.requires_grad_(), h0.requires_grad_()
    got = torch.autograd.grad((linear_scan(a, b, h0, reverse=reverse, backend="triton") * w)
                              .real.sum(), (b, h0))
    up = [x.cpu() for x in (a, b, h0)]
    want = torch.autograd.grad((linear_scan_reference(*up, reverse=reverse) * w.cpu()).real.sum(),
                               up[1:])
    for x, y in zip(got, want, strict=True):
        torch.testing.assert_close(x.cpu(), y, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(0, 5, 3), (2, 5, 0)], ids=["B=0", "D=0"])
def test_empty_batch_or_width(shape):
    """Nothing to launch: empty results, as on the CPU, not an error from the launch grid."""
    a, b = torch.rand(shape, device=DEVICE), torch.rand(shape, device=DEVICE)
    assert linear_scan(a, b, backend="triton").shape == shape


@pytest.mark.gpu  # many tiles in flight at once
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_many_tiles_in_flight(reverse):
    """The default tiles at a size where hundreds of programs hand states on concurrently."""
    a, b, h0 = _inputs(4, 3000, 300, torch.float32, seed=5)
    _compare(a, b, h0, reverse, rtol=1e-4)


def test_strided_inputs_through_linear_scan():
    """Dense but not contiguous inputs (the last two dims swapped in memory) give the values and
    gradients of their contiguous copies."""
    a, b, h0 = _inputs(2, 7, 3, torch.float64, seed=4)
    a_s, b_s, h0_s = (x.transpose(-1, -2).contiguous().transpose(-1, -2) for x in (a, b, h0))
    assert not any(x.is_contiguous() for x in (a_s, b_s, h0_s))
    w = torch.randn(b.shape, dtype=torch.float64)
    got = _values_and_grads(lambda a, b, h0, r: linear_scan(a, b, h0, reverse=r,
                                                            backend="triton"),
                            *(x.to(DEVICE) for x in (a_s, b_s, h0_s)), False, w)
    want = _values_and_grads(lambda a, b, h0, r: linear_scan_reference(a, b, h0, reverse=r),
                             a, b, h0, False, w)
    for name, x, y in zip(("h", "da", "db", "dh0"), got, want):
        torch.testing.assert_close(x.cpu(), y, rtol=1e-12, atol=1e-12, msg=name)


def test_a_compiled_scan_finds_the_triton_backend_on_its_first_call():
    """The backend registers itself on first use, and a compiled graph's first call came before
    that registration (dynamo replays it after the graph): KeyError 'triton' on every call."""
    BACKENDS.pop("triton", None)
    scan_fn = torch.compile(lambda a, b: linear_scan(a, b, backend="triton"),
                            backend="aot_eager", fullgraph=True)
    a, b, _ = _inputs(2, 20, 3, torch.float32, seed=6)
    torch.testing.assert_close(scan_fn(a.to(DEVICE), b.to(DEVICE)).cpu(),
                               linear_scan_reference(a, b), rtol=1e-5, atol=1e-6)
