"""Shared checks of the streaming interface: ``step`` one time step at a time, and nested
state comparison."""

import torch


def stepped(module, x, state=None):
    """``module.step`` over ``x`` of shape ``(B, T, ...)``: the stacked outputs, the last state."""
    ys = []
    for t in range(x.shape[1]):
        y_t, state = module.step(x[:, t], state)
        ys.append(y_t)
    return torch.stack(ys, dim=1), state


def assert_nested_close(a, b, tol=1e-9):
    """Tensors, or tuples of them nested, equal to ``tol``."""
    if isinstance(a, tuple):
        assert isinstance(b, tuple) and len(a) == len(b)
        for u, v in zip(a, b):
            assert_nested_close(u, v, tol)
    else:
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
