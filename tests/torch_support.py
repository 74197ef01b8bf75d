"""Markers for tests that need more of torch than the declared minimum (``torch>=2.4``)."""

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
