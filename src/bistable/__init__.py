"""bistable: memory recurrent units, state-space hybrids and spiking recurrent cells in PyTorch.

Units (``forward(x, state=None) -> (y, state)``, ``step(x_t, state=None) -> (y_t, state)``):
BMRU, CMRU, FirstQuadrantBMRU (SPEC §2), LRU (§3), BRC, NBRC, MinGRU, GRU, LSTM (§5), SRC (§6),
LIF (snnTorch peer). Networks come from :func:`build_model`; the scan from :func:`linear_scan`.
"""

from .models import MODEL_NAMES, build_model, count_parameters, describe_models, width_for_budget
from .scan import linear_scan
from .units.bmru import BMRU, CMRU, MRU, FirstQuadrantBMRU, anneal_epsilon, write_rate
from .units.brc import BRC, NBRC
from .units.lif import LIF
from .units.lru import LRU
from .units.mingru import MinGRU
from .units.rnn import GRU, LSTM
from .units.src import SRC, ramp_train_noise

__version__ = "0.1.0"
__all__ = [
    "BMRU", "BRC", "CMRU", "GRU", "LIF", "LRU", "LSTM", "MODEL_NAMES", "MRU", "NBRC", "SRC",
    "FirstQuadrantBMRU", "MinGRU", "anneal_epsilon", "build_model", "count_parameters",
    "describe_models", "linear_scan", "ramp_train_noise", "width_for_budget", "write_rate",
]
