"""Atomic writes and the temporaries killed writers leave (bistable.data.atomic)."""

import os
import subprocess
import sys

import pytest

from bistable.data.atomic import atomic_copy, atomic_write_bytes, remove_orphans, temporary


@pytest.fixture
def dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_write_replaces_the_file_whole_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a.json"
    target.write_bytes(b"old")
    atomic_write_bytes(target, b"new")
    atomic_copy(target, tmp_path / "b.json")
    assert target.read_bytes() == (tmp_path / "b.json").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]
    assert temporary(target).name == f".a.json.{os.getpid()}.tmp"


def test_a_failed_write_names_the_file_and_keeps_the_old_one(tmp_path):
    target = tmp_path / "missing" / "a.json"
    with pytest.raises(OSError, match="missing/a.json"):
        atomic_write_bytes(target, b"x")


def test_only_dead_writers_temporaries_are_removed(tmp_path, dead_pid):
    sub = tmp_path / "Train" / "3"
    sub.mkdir(parents=True)
    dead = [tmp_path / f".a.bin.{dead_pid}.tmp", sub / f".00001.bin.{dead_pid}.tmp"]
    kept = [tmp_path / f".b.bin.{os.getpid()}.tmp",  # a live writer (this one)
            tmp_path / ".notes.tmp", tmp_path / ".c.bin.x1.tmp", tmp_path / "a.bin"]
    for p in dead + kept:
        p.write_bytes(b"x")
    remove_orphans(tmp_path)
    assert not dead[0].exists() and dead[1].exists()  # not recursive: the subfolder's stays
    remove_orphans(tmp_path, recursive=True)
    assert not dead[1].exists() and all(p.exists() for p in kept)
