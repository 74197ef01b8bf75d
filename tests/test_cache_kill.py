"""The N-MNIST frame cache is never left corrupt by a kill (SIGKILL) during its build.

A forked child builds the cache and is killed either at a fixed point of the build (after k files
are binned, just before or after each ``os.replace``) or by the parent after a random short delay.
Opening the dataset again must then use a valid cache or rebuild it, and give exactly the frames
of an uncached computation; a second open must reuse that cache without rebuilding it.
"""

import os
import signal
import time
import warnings

import numpy as np
import pytest

from bistable.data import nmnist

N_FILES, N_EVENTS, BINS = 40, 3000, 100


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("nmnist")
    rng = np.random.default_rng(0)
    for i in range(N_FILES):
        ev = np.empty(N_EVENTS, nmnist.EVENT_DTYPE)
        ev["x"], ev["y"] = rng.integers(0, 34, (2, N_EVENTS))
        ev["t"] = np.sort(rng.integers(0, 300_000, N_EVENTS))
        ev["p"] = rng.integers(0, 2, N_EVENTS)
        folder = root / "Train" / str(i % 10)
        folder.mkdir(parents=True, exist_ok=True)
        nmnist.write_events(folder / f"{i:03d}.bin", ev)
    return root


@pytest.fixture(scope="module")
def fresh(root):
    ds = nmnist.NMNIST(root, n_time_bins=BINS, cache=False)
    return [(f.numpy(), label) for f, label in ds]


def _open(root, cache_dir):
    return nmnist.NMNIST(root, n_time_bins=BINS, cache=True, cache_dir=cache_dir, progress=False)


def _kill_self_after(calls: int, fn):
    """``fn`` wrapped so that the process SIGKILLs itself once ``fn`` has run ``calls`` times
    (``calls=0``: before the first call)."""
    count = 0

    def wrapper(*args, **kwargs):
        nonlocal count
        if count == calls:
            os.kill(os.getpid(), signal.SIGKILL)
        out = fn(*args, **kwargs)
        count += 1
        if count == calls:
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    return wrapper


def _fork_build(root, cache_dir, hook=None) -> int:
    """Fork a child that builds the cache (after ``hook()``, which installs a kill point)."""
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        try:
            if hook is not None:
                hook()
            _open(root, cache_dir)
        finally:
            os._exit(0)
    return pid


def _check_recovers(root, cache_dir, fresh):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a "rebuilding corrupt cache" warning is allowed
        ds = _open(root, cache_dir)
    assert len(ds) == len(fresh)
    for (frames, label), (want, want_label) in zip(ds, fresh):
        assert label == want_label
        np.testing.assert_array_equal(frames.numpy(), want)
    (data,) = cache_dir.glob("*.frames")
    stamp = os.stat(data).st_mtime_ns, os.stat(data).st_ino
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the recovered cache must now be valid: no rebuild
        _open(root, cache_dir)
    assert list(cache_dir.glob("*.frames")) == [data]
    assert (os.stat(data).st_mtime_ns, os.stat(data).st_ino) == stamp
    assert not list(cache_dir.glob(".*.tmp")), "a killed writer's temp file was left behind"


def _binned(k):
    return lambda: setattr(nmnist, "load_frames", _kill_self_after(k, nmnist.load_frames))


def _replaced(k):
    return lambda: setattr(os, "replace", _kill_self_after(k, os.replace))


KILL_POINTS = {
    "before-binning": _binned(0),
    "after-1-file": _binned(1),
    "mid-build": _binned(N_FILES // 2),
    "all-binned": _binned(N_FILES),
    "before-data-replace": _replaced(0),
    "data-replaced-no-meta": _replaced(1),
    "meta-replaced": _replaced(2),
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_kill_at_fixed_point_leaves_no_corrupt_cache(root, fresh, tmp_path, point):
    pid = _fork_build(root, tmp_path / "cache", KILL_POINTS[point])
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    _check_recovers(root, tmp_path / "cache", fresh)


def test_kill_after_random_delays_leaves_no_corrupt_cache(root, fresh, tmp_path):
    start = time.perf_counter()  # how long a child takes to fork and build the whole cache
    os.waitpid(_fork_build(root, tmp_path / "timing"), 0)
    lifetime = time.perf_counter() - start
    rng = np.random.default_rng(1)
    cache_dir = tmp_path / "cache"  # shared: each round starts from what the last one left
    for delay in rng.uniform(0, 1.2 * lifetime, 8):
        pid = _fork_build(root, cache_dir)
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        _check_recovers(root, cache_dir, fresh)
        if rng.random() < 0.5:  # next round: rebuild from scratch, or open the valid cache
            for f in cache_dir.glob("*.frames"):
                f.unlink()
