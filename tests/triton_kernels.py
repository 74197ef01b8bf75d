"""Import a module of Triton kernels so that its tests run anywhere: compiled on a GPU, and on
the CPU under ``TRITON_INTERPRET=1`` (the interpreter is slow, so CPU tests keep sizes small)."""

import importlib
import os

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# set before anything imports triton: triton.language's own jit helpers (tl.zeros_like) are
# interpreted only if it is set when triton is imported (test_triton_compile, first, failed the
# SRC kernel tests after it)
if DEVICE == "cpu":
    os.environ["TRITON_INTERPRET"] = "1"


def require_triton() -> None:
    """Skip unless triton imports at the version the kernels need (``scan.triton_lang``)."""
    try:
        importlib.import_module("bistable.scan.triton_lang")
    except ImportError as err:
        pytest.skip(str(err), allow_module_level=True)


def load(name: str):
    """The module ``name`` with its kernels compiled (GPU) or interpreted (CPU); skip without
    triton ≥ 3.6. The variable must be set before triton decorates the kernels, so a module imported
    earlier without it is reloaded."""
    require_triton()
    from triton.runtime.interpreter import InterpretedFunction

    module = importlib.import_module(name)
    if DEVICE == "cpu" and not isinstance(module._fwd_kernel, InterpretedFunction):
        module = importlib.reload(module)
    return module
