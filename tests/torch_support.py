"""Markers for tests that need more than the declared minimum (``torch>=2.4``): a newer torch,
or the C++ toolchain that builds the fused CPU loops."""

import shutil

import pytest
import torch
from torch.torch_version import TorchVersion

from bistable.units.base import COMPILE_TESTED_FROM

# torch.compile tracing whole models: tested on torch 2.11 and later. On 2.4, dynamo breaks the
# graph where a unit sets an attribute (the memory units' write_rate), its partitioner stalls on
# the SRC's unrolled loop, and triton 3.0 is below the kernels' 3.6; eager mode is unaffected.
whole_graph = pytest.mark.skipif(
    TorchVersion(torch.__version__) < COMPILE_TESTED_FROM,
    reason=f"whole-model torch.compile is tested from torch 2.11; this is {torch.__version__}")

# the fused CPU loops (BRC, SRC) are built on first use by torch.utils.cpp_extension, with the
# ninja package's binary (a dependency) or the system's
try:
    import ninja
except ImportError:
    ninja = None
needs_cpp = pytest.mark.skipif((ninja is None and shutil.which("ninja") is None)
                               or shutil.which("c++") is None,
                               reason="the fused CPU loops are built with ninja and a C++ compiler")
