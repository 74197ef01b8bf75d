"""Inputs shared by the tests of the SRC's fused loops (C++ on CPU, Triton on CUDA)."""

import torch

ALPHA, RHO, Z_HYP, Z_DEP = 0.9, 3.0, 0.9, 0.0  # SPEC.md §6


def loop_inputs(B, T, H, seed=0, device="cpu"):
    """``d, i0, h0, hs0, r, r_s, b`` in float64 around the SPEC's constants, the drive ``d``
    strong enough to push some neurons past the gate."""
    g = torch.Generator().manual_seed(seed)
    kw = {"dtype": torch.float64}
    d = torch.randn(B, T, H, generator=g, **kw) * 1.5
    i0 = torch.randn(B, H, generator=g, **kw) * 2
    h0 = torch.rand(B, H, generator=g, **kw) * 2 - 1
    hs0 = torch.rand(B, H, generator=g, **kw) * 2 - 1
    r = 2 + 0.2 * torch.randn(H, generator=g, **kw)
    r_s = -7 + 0.7 * torch.randn(H, generator=g, **kw)
    b = -6 + torch.randn(H, generator=g, **kw)
    return [x.to(device) for x in (d, i0, h0, hs0, r, r_s, b)]


def loss_weights(h, use_i):
    """Fixed random weights of a loss on ``h`` (and on ``i`` when ``use_i``: then a gradient
    flows into the returned ``i`` too)."""
    g = torch.Generator().manual_seed(1)
    w = torch.randn(h.shape, generator=g, dtype=h.dtype).to(h.device)
    w_i = torch.randn(h.shape, generator=g, dtype=h.dtype).to(h.device) if use_i else None
    return w, w_i


def loss(h, i, hs, w, w_i, with_state=True):
    out = (h * w).sum()
    if with_state:
        out = out + (hs * w[:, 0]).sum()
    return out if w_i is None else out + (i * w_i).sum()


def assert_same_run(got, want):
    """Two ``(h, i, h_s[T], gradients into d, i0, b, h0, hs0)`` equal to float64 rounding (a
    gradient None on both sides: none flows there)."""
    (h_k, i_k, hs_k, g_k), (h_r, i_r, hs_r, g_r) = got, want
    torch.testing.assert_close(h_k, h_r, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(i_k, i_r, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(hs_k, hs_r, rtol=1e-12, atol=1e-12)
    for name, a, b in zip(("d", "i0", "b", "h0", "hs0"), g_k, g_r, strict=True):
        if b is None:
            assert a is None, f"grad {name}"
        else:
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=f"grad {name}")
