"""Test-wide settings: one intra-op thread, so that small-tensor tests do not pay for thread
hand-offs (and stay fast when the machine is shared)."""

import torch

torch.set_num_threads(1)
