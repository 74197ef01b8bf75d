"""Markers for tests that need more of torch than the declared minimum (``torch>=2.4``)."""

import pytest
import torch

# torch.compile tracing whole models: tested on torch 2.11 and later. On 2.4, dynamo breaks the
# graph where a unit sets an attribute (the memory units' write_rate), its partitioner stalls on
# the SRC's unrolled loop, and triton 3.0 is below the kernels' 3.6; eager mode is unaffected.
whole_graph = pytest.mark.skipif(
    torch.__version__ < "2.11",
    reason=f"whole-model torch.compile is tested from torch 2.11; this is {torch.__version__}")
