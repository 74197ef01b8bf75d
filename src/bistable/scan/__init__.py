"""The scan engine: ``h_t = a_t ⊙ h_{t-1} + b_t`` over a sequence, forward and backward.

``linear_scan`` is the one public entry point; it hides the backends (``reference``: plain loop;
``cpu``: chunked tensor ops, any device; ``triton``: GPU kernels). Nothing here knows about units.
"""

from .dispatch import BACKEND_NAMES, linear_scan
from .reference import linear_scan_reference

__all__ = ["BACKEND_NAMES", "linear_scan", "linear_scan_reference"]
