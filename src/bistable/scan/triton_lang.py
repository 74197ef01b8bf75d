"""``triton`` and ``triton.language`` for bistable's kernels, or a
:class:`~bistable.extras.MissingExtra` (an ImportError) that says what is needed: the kernels are
written for and tested on triton ≥ 3.6 (an older triton, such as the 3.0 that torch 2.4 pins,
compiles some of them wrongly or not at all). Callers that pick a backend catch the error and fall
back to PyTorch."""

from __future__ import annotations

import contextlib
import functools
import re

import torch

from ..extras import MissingExtra

MIN_TRITON = (3, 6)
_NEED = "pip install 'bistable[triton]'"

try:
    import triton
    import triton.language as tl
except ImportError as exc:  # pragma: no cover - exercised only without triton
    raise MissingExtra(f"bistable's Triton kernels need the triton package: {_NEED}") from exc


def version_tuple(version: str) -> tuple[int, int]:
    """``(major, minor)`` of a version string such as ``"3.6.0"`` or ``"3.7.0+git1234"``."""
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None:
        raise ValueError(f"triton version: expected 'MAJOR.MINOR...', got {version!r}")
    return int(match[1]), int(match[2])


try:
    _FOUND = version_tuple(triton.__version__)
except ValueError as exc:  # an unreadable version: the kernels are not known to work with it
    raise MissingExtra(f"bistable's Triton kernels need triton >= "
                       f"{'.'.join(map(str, MIN_TRITON))}: {exc}; {_NEED}") from exc
if _FOUND < MIN_TRITON:
    raise MissingExtra(f"bistable's Triton kernels need triton >= "
                       f"{'.'.join(map(str, MIN_TRITON))}, found {triton.__version__}: {_NEED}")


def on_device(x: torch.Tensor):
    """The device guard of a launch for ``x``: Triton launches on the current CUDA device and its
    current stream, which need not be ``x``'s (a model on ``cuda:1``); a null context on the CPU
    (the interpreter)."""
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


@functools.cache
def constants(device: torch.device, dtype: torch.dtype, *values: float) -> torch.Tensor:
    """``values`` in the data's dtype on its device, for a kernel to load: as float arguments
    they would reach it rounded to float32 (0.9 → 0.8999999761…) whatever the data's precision.
    Made once per device, dtype and values (no work per call)."""
    return torch.tensor(values, dtype=dtype, device=device)


__all__ = ["MIN_TRITON", "constants", "on_device", "tl", "triton", "version_tuple"]
