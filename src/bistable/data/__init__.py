"""Datasets: MNIST-style IDX images (``idx``) and N-MNIST event recordings (``nmnist``)."""

from . import idx, nmnist

__all__ = ["idx", "nmnist"]
