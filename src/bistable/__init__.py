"""bistable: memory recurrent units, state-space hybrids and spiking recurrent cells in PyTorch."""

from .scan import linear_scan

__version__ = "0.1.0"
__all__ = ["linear_scan"]
