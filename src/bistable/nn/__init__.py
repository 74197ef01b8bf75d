"""Networks built from units: residual blocks, stacks and hybrids (SPEC.md §4), and the spiking
networks of SPEC.md §6 with their encoders and readout."""

from .blocks import GLUMLP, NORMS, UNITS, Block, make_norm, make_unit
from .encoders import flatten_frames, rate_code
from .network import Network, parse_mixers
from .readout import PopulationReadout
from .spiking import SpikingNetwork

__all__ = ["GLUMLP", "NORMS", "UNITS", "Block", "Network", "PopulationReadout", "SpikingNetwork",
           "flatten_frames", "make_norm", "make_unit", "parse_mixers", "rate_code"]
