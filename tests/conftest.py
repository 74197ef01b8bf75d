"""Test-wide settings: one intra-op thread, so that small-tensor tests do not pay for thread
hand-offs (and stay fast when the machine is shared); shared fixtures."""

import os
import subprocess
import sys

import pytest
import torch

from bistable.train import loop

torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` are skipped without a CUDA device (``pytest -m gpu`` selects them on
    a GPU machine)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def script_validation(monkeypatch):
    """``script_validation(losses, accuracies=None)``: the validation losses (and accuracies)
    of the runs that follow are ``losses`` (``accuracies``), in turn (the test split is evaluated
    for real)."""
    def script(losses, accuracies=None):
        scripted, real = iter(losses), loop.evaluate
        correct = iter(accuracies) if accuracies is not None else None

        def evaluate_(model, task, split, *args, **kw):
            result = real(model, task, split, *args, **kw)
            if split != "val":
                return result
            result = {**result, "loss": next(scripted)}
            return result if correct is None else {**result, "accuracy": next(correct)}

        monkeypatch.setattr(loop, "evaluate", evaluate_)
    return script


@pytest.fixture
def torchrun(tmp_path):
    """``torchrun(*args, timeout=300)``: ``python -m torch.distributed.run`` on two local ranks
    (one thread each), output captured; its logs go under ``tmp_path``, not into a new
    ``/tmp/torchelastic_*`` folder per run. ``args`` start with ``-m bistable`` or a script."""
    def run(*args, timeout=300):
        return subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
             "--log-dir", str(tmp_path / "torchrun"), *map(str, args)],
            text=True, capture_output=True, timeout=timeout,
            env={**os.environ, "OMP_NUM_THREADS": "1"})
    return run
