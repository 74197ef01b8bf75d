"""Inputs shared by the tests of the SRC's fused loops (C++ on CPU, Triton on CUDA)."""

import torch

RHO, Z_HYP, Z_DEP = 3.0, 0.9, 0.0  # SPEC.md §6


def loop_inputs(B, T, H, seed=0, device="cpu"):
    """``i, h0, hs0, r, r_s, b`` in float64 around the SPEC's constants, ``i`` strong enough
    to drive some neurons past the gate."""
    g = torch.Generator().manual_seed(seed)
    kw = {"dtype": torch.float64}
    i = torch.randn(B, T, H, generator=g, **kw) * 4
    h0 = torch.rand(B, H, generator=g, **kw) * 2 - 1
    hs0 = torch.rand(B, H, generator=g, **kw) * 2 - 1
    r = 2 + 0.2 * torch.randn(H, generator=g, **kw)
    r_s = -7 + 0.7 * torch.randn(H, generator=g, **kw)
    b = -6 + torch.randn(H, generator=g, **kw)
    return [x.to(device) for x in (i, h0, hs0, r, r_s, b)]


def assert_same_run(got, want):
    """Two ``(h, h_s[T], gradients into i, b, h0, hs0)`` equal to float64 rounding (a gradient
    None on both sides: none flows there)."""
    (h_k, hs_k, g_k), (h_r, hs_r, g_r) = got, want
    torch.testing.assert_close(h_k, h_r, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(hs_k, hs_r, rtol=1e-12, atol=1e-12)
    for name, a, b in zip(("i", "b", "h0", "hs0"), g_k, g_r, strict=True):
        if b is None:
            assert a is None, f"grad {name}"
        else:
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=f"grad {name}")
