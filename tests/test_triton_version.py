"""The Triton kernels refuse a missing triton, or one older than they are written for, naming the
extra and the version needed; ``linear_scan`` then falls back to PyTorch or says why it cannot use
them. Runs with any triton, or none."""

import importlib
import sys

import pytest
import torch

import bistable.scan
from bistable.scan import dispatch
from triton_kernels import require_triton


def _unload_kernels(monkeypatch):
    """bistable's kernel modules unloaded (restored afterwards), so that they import afresh: out
    of ``sys.modules`` and off their package, where ``from . import`` would find them."""
    for name in ("triton_lang", "triton_scan"):
        monkeypatch.delitem(sys.modules, f"bistable.scan.{name}", raising=False)
        monkeypatch.delattr(bistable.scan, name, raising=False)
    monkeypatch.delitem(dispatch.BACKENDS, "triton", raising=False)
    monkeypatch.setattr(dispatch, "_UNAVAILABLE", {})


def test_a_missing_triton_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "triton", None)
    _unload_kernels(monkeypatch)
    with pytest.raises(ImportError, match=r"triton package: pip install 'bistable\[triton\]'"):
        importlib.import_module("bistable.scan.triton_scan")


@pytest.fixture
def old_triton(monkeypatch):
    """triton reporting version 3.0.0 (torch 2.4's pin), the kernel modules to import afresh."""
    triton = pytest.importorskip("triton")
    monkeypatch.setattr(triton, "__version__", "3.0.0")
    _unload_kernels(monkeypatch)
    return dispatch


def test_an_old_triton_is_refused_with_the_version_needed(old_triton):
    with pytest.raises(ImportError, match=r"need triton >= 3\.6, found 3\.0\.0"):
        importlib.import_module("bistable.scan.triton_lang")


def test_linear_scan_says_why_the_triton_backend_is_unavailable(old_triton):
    a, b = torch.rand(1, 4, 2), torch.rand(1, 4, 2)
    with pytest.raises(ValueError, match=r"backend='triton' is unavailable: .*found 3\.0\.0"):
        old_triton.linear_scan(a, b, backend="triton")
    assert old_triton._pick("auto", torch.device("cuda")) == "cpu"  # auto falls back


def test_a_failed_import_is_not_tried_again(old_triton, monkeypatch):
    """Every ``auto`` call on CUDA asks for the backend: the failure is remembered (an import
    attempt costs milliseconds), with its first reason."""
    assert old_triton._pick("auto", torch.device("cuda")) == "cpu"
    reason = old_triton._UNAVAILABLE["triton"]
    monkeypatch.setitem(sys.modules, "bistable.scan.triton_scan", None)  # would fail otherwise
    assert old_triton._pick("auto", torch.device("cuda")) == "cpu"
    assert old_triton._UNAVAILABLE["triton"] == reason and "3.0.0" in reason


def test_an_unreadable_version_is_an_import_error(old_triton, monkeypatch):
    import triton

    monkeypatch.setattr(triton, "__version__", "dev")
    with pytest.raises(ImportError, match=r"need triton >= 3\.6: .*got 'dev'"):
        importlib.import_module("bistable.scan.triton_lang")
    assert old_triton._pick("auto", torch.device("cuda")) == "cpu"


def test_version_strings_are_read_to_major_minor():
    require_triton()
    from bistable.scan import triton_lang as lang

    assert lang.version_tuple("3.6.0") == (3, 6)
    assert lang.version_tuple("3.10.1+git3f2a") == (3, 10)
    with pytest.raises(ValueError, match="expected 'MAJOR.MINOR...', got 'nightly'"):
        lang.version_tuple("nightly")


def test_importing_bistable_imports_neither_triton_nor_dynamo():
    """``import bistable`` stays light: Triton and torch._dynamo load on first use, not at import
    (dynamo imports triton, and the interpreter's tests need TRITON_INTERPRET set before that)."""
    import subprocess

    code = ("import sys, bistable, bistable.units.brc_loop, bistable.units.src_loop; "
            "print(sorted(m for m in ('triton', 'torch._dynamo') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
