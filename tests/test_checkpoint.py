"""Checkpoints: round trip, atomic replacement (also under SIGKILL), damaged files, RNG states."""

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from bistable.train.checkpoint import (
    atomic_write,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


def test_round_trip(tmp_path):
    state = {"step": 3, "model": {"w": torch.arange(5.0)}, "history": [{"loss": 0.5}]}
    save_checkpoint(tmp_path / "c.pt", state)
    back = load_checkpoint(tmp_path / "c.pt")
    assert back["step"] == 3 and back["history"] == [{"loss": 0.5}]
    assert torch.equal(back["model"]["w"], torch.arange(5.0))
    assert os.listdir(tmp_path) == ["c.pt"]                    # no temporary file left


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"step": 1})

    def broken(file):
        file.write(b"half a checkpoint")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, broken)
    assert load_checkpoint(path)["step"] == 1
    assert os.listdir(tmp_path) == ["c.pt"]


def test_the_data_is_synced_to_disk_before_it_takes_the_name(tmp_path, monkeypatch):
    """fsync of the temporary file, then the rename: after a power cut the name never points at
    a file whose data did not reach the disk."""
    events, fsync, replace = [], os.fsync, os.replace

    def fsync_(fd):
        events.append(("fsync", os.path.samestat(os.fstat(fd), os.stat(tmp_path / ".c.pt.tmp"))))
        fsync(fd)

    def replace_(src, dst):
        events.append(("replace", os.path.basename(src), os.path.basename(dst)))
        replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync_)
    monkeypatch.setattr(os, "replace", replace_)
    save_checkpoint(tmp_path / "c.pt", {"step": 1})
    assert events == [("fsync", True), ("replace", ".c.pt.tmp", "c.pt")]
    assert load_checkpoint(tmp_path / "c.pt")["step"] == 1


def test_missing_and_damaged_files_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "none.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt is unreadable"):
        load_checkpoint(tmp_path / "bad.pt")


def test_rng_states_restore_every_generator():
    state = rng_state()
    first = (random.random(), np.random.rand(), torch.rand(1))
    set_rng_state(state)
    again = (random.random(), np.random.rand(), torch.rand(1))
    assert first[:2] == again[:2] and torch.equal(first[2], again[2])


WRITER = textwrap.dedent("""
    import sys, torch
    from bistable.train.checkpoint import save_checkpoint
    step = 0
    while True:
        step += 1
        save_checkpoint(sys.argv[1], {"step": step, "w": torch.full((200_000,), float(step))})
        print(step, flush=True)
""")


def test_cuda_rng_is_this_process_device_only(monkeypatch):
    """Under DDP each rank restores its own device's generator (drawn alike on every rank); all
    devices' states, saved by rank 0, once gave rank 1 a generator rank 0 never advanced. A
    process that never used CUDA saves none (and creates no CUDA context)."""
    assert "cuda" not in rng_state()  # this CPU-only process
    restored = []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda: torch.tensor([7], dtype=torch.uint8))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", restored.append)
    state = rng_state()
    assert state["cuda"].tolist() == [7]
    set_rng_state(state)
    set_rng_state({**state, "cuda": [torch.tensor([5]), torch.tensor([6])]})  # older checkpoints
    assert [t.tolist() for t in restored] == [[7], [6]]


def test_sigkill_during_writes_never_leaves_a_damaged_checkpoint(tmp_path):
    path = tmp_path / "c.pt"
    for delay in (0.05, 0.2):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE,
                                text=True)
        proc.stdout.readline()                                 # at least one write finished
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        state = load_checkpoint(path)                          # complete, whatever the moment
        assert torch.equal(state["w"], torch.full((200_000,), float(state["step"])))
    assert set(os.listdir(tmp_path)) <= {"c.pt", ".c.pt.tmp"}  # at most one stale temporary
