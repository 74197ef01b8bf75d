"""Checkpoints that a kill cannot corrupt, the random states a resumed run needs, and the lock
that keeps one process writing in a run's folder.

A checkpoint is one ``torch.save`` file written to a temporary name in the same folder, flushed to
disk, then renamed over the old one (``os.replace`` is atomic on POSIX): at every instant the
path holds either the previous complete checkpoint or the new complete one.
"""

from __future__ import annotations

import contextlib
import os
import random
from pathlib import Path

import numpy as np
import torch

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_VERSION = 1  # the format `bistable train` writes; a later one is refused, not misread


def atomic_write(path, write) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, rename it to ``path``.

    The temporary name is fixed (``.<name>.tmp``), so a write killed half-way leaves at most one
    stale temporary file, which the next write replaces. One writer per path at a time.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save_checkpoint(path, state: dict) -> Path:
    """Write ``state`` (tensors, numbers, strings, dicts) to ``path`` atomically."""
    return atomic_write(path, lambda file: torch.save(state, file))


@contextlib.contextmanager
def claimed(folder, flag: str):
    """Hold an exclusive lock on ``folder/.lock`` while a run writes there: a second run started
    on the same folder (given by the command-line option ``flag``) is refused rather than
    overwriting the first (POSIX ``flock``, released by the system when the process dies; where
    there is none, as on Windows, no lock). Opening the file also shows that the folder is
    writable before the first step."""
    folder = Path(folder)
    try:
        file = open(folder / ".lock", "a")
    except OSError as e:
        raise ValueError(f"{flag} {folder}: cannot write there ({e.strerror})") from None
    with file:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            yield
            return
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"{flag} {folder}: another run is writing there (it holds "
                             f"{folder / '.lock'}); wait for it or use another {flag}") from None
        yield


def load_checkpoint(path) -> dict:
    """Read a checkpoint; a missing file raises FileNotFoundError, an unreadable one ValueError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises several kinds on a damaged file
        raise ValueError(f"checkpoint {path} is unreadable ({type(err).__name__}: {err})") from err


def rng_state() -> dict:
    """The global random states a training step may touch: Python, NumPy, torch, and the current
    CUDA device's if this process used CUDA (under DDP each rank's own device, drawn alike)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` captured."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if isinstance(cuda, list):  # checkpoints before 2026-12-05 kept every device's
            cuda = cuda[torch.cuda.current_device()]
        torch.cuda.set_rng_state(cuda)
