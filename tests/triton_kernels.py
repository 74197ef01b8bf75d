"""Import a module of Triton kernels so that its tests run anywhere: compiled on a GPU, and on
the CPU under ``TRITON_INTERPRET=1`` (the interpreter is slow, so CPU tests keep sizes small)."""

import importlib
import os

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def load(name: str):
    """The module ``name`` with its kernels compiled (GPU) or interpreted (CPU); skip without
    triton. The variable must be set before triton decorates the kernels, so a module imported
    earlier without it is reloaded."""
    if DEVICE == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"
    pytest.importorskip("triton")
    from triton.runtime.interpreter import InterpretedFunction

    module = importlib.import_module(name)
    if DEVICE == "cpu" and not isinstance(module._fwd_kernel, InterpretedFunction):
        module = importlib.reload(module)
    return module
