"""The N-MNIST simulator (bistable.data.nmnist_sim)."""

import argparse
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bistable.data import commands, nmnist, nmnist_sim
from bistable.data.nmnist_sim import SimConfig

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def digits(n=4):
    """Tiny hand-made digits: a bar, a ring, a cross, a slanted stroke (uint8, 28 x 28)."""
    yy, xx = np.mgrid[:28, :28]
    shapes = [(abs(xx - 14) < 2) & (abs(yy - 14) < 10),
              abs(np.hypot(xx - 14, yy - 14) - 8) < 1.6,
              ((abs(xx - 14) < 2) | (abs(yy - 14) < 2)) & (abs(xx - 14) < 9) & (abs(yy - 14) < 9),
              (abs(xx - 14 - (yy - 14) // 2) < 2) & (abs(yy - 14) < 10)]
    return np.stack([np.where(s, 255, 0).astype(np.uint8) for s in shapes[:n]])


def test_deterministic_and_independent_of_batching():
    imgs = digits()
    seeds = [[7, 0, i] for i in range(4)]
    a = nmnist_sim.simulate(imgs, seeds)
    b = nmnist_sim.simulate(imgs, seeds)
    c = [nmnist_sim.simulate(imgs[i:i + 1], seeds[i:i + 1])[0] for i in range(4)]
    for x, y, z in zip(a, b, c):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(x, z)
    d = nmnist_sim.simulate(imgs, [[8, 0, i] for i in range(4)])
    assert not np.array_equal(a[0], d[0])


def test_recordings_are_valid_n_mnist(tmp_path):
    recs = nmnist_sim.simulate(digits(), range(4))
    for k, ev in enumerate(recs):
        assert ev.dtype == nmnist.EVENT_DTYPE and len(ev) > 100
        assert np.all(np.diff(ev["t"]) >= 0)
        assert ev["x"].max() < 34 and ev["y"].max() < 34 and ev["t"].max() <= 300_000
        path = tmp_path / f"{k}.bin"
        nmnist.write_events(path, ev)
        np.testing.assert_array_equal(nmnist.read_events(path), ev)


def test_three_saccades_balanced_polarity_and_refractory():
    config = replace(SimConfig(), noise_hz=0.0)
    stats = nmnist_sim.statistics(nmnist_sim.simulate(digits(), range(4), config))
    assert 0.4 < stats["on_fraction"] < 0.6
    assert 250 < stats["duration_ms_mean"] <= 300
    for ev in nmnist_sim.simulate(digits(), range(4), config):
        per_saccade = np.bincount(ev["t"] // 100_000, minlength=3)[:3]
        assert per_saccade.min() > 0.05 * per_saccade.sum()  # activity in each of the three
        # each saccade starts and ends at rest: the quiet 2 ms around the vertices
        assert not np.any((ev["t"] % 100_000 < 2_000) & (ev["t"] > 2_000))
        order = np.lexsort((ev["t"], ev["y"] * 34 + ev["x"]))
        same_pixel = np.diff((ev["y"] * 34 + ev["x"])[order]) == 0
        gaps = np.diff(ev["t"][order])[same_pixel]
        assert gaps.min() >= config.refractory_us - 1  # floor() of the µs timestamps


def test_static_or_blank_scene_gives_no_events_but_noise():
    still = replace(SimConfig(), amplitude=0.0, noise_hz=0.0)
    assert all(len(ev) == 0 for ev in nmnist_sim.simulate(digits(), range(4), still))
    blank = np.zeros((2, 28, 28), np.uint8)
    quiet = nmnist_sim.simulate(blank, range(2), replace(SimConfig(), noise_hz=0.0))
    assert all(len(ev) == 0 for ev in quiet)
    noisy = nmnist_sim.simulate(blank, range(2), replace(SimConfig(), noise_hz=10.0))
    expected = 10.0 * 34 * 34 * 0.3
    assert all(abs(len(ev) - expected) < 5 * expected**0.5 for ev in noisy)


def test_lower_threshold_more_events():
    imgs = digits(2)
    n = [sum(map(len, nmnist_sim.simulate(imgs, range(2), replace(SimConfig(), threshold=th))))
         for th in (0.15, 0.3)]
    assert n[0] > 1.5 * n[1]


def test_bad_arguments():
    with pytest.raises(ValueError, match="images"):
        nmnist_sim.simulate(np.zeros((2, 28, 27), np.uint8), range(2))
    with pytest.raises(ValueError, match="seeds"):
        nmnist_sim.simulate(digits(2), range(3))
    assert nmnist_sim.simulate(np.zeros((0, 28, 28), np.uint8), []) == []


@pytest.fixture
def fake_mnist(monkeypatch):
    imgs = np.concatenate([digits(), digits()])
    labels = np.array([1, 0, 4, 7, 1, 0, 4, 7])

    def load(name, split, data_dir=None, verify=True):
        assert name == "mnist"
        return (imgs, labels) if split == "train" else (imgs[:3], labels[:3])

    monkeypatch.setattr(nmnist_sim.idx, "load", load)


def test_write_dataset_layout_and_label(tmp_path, fake_mnist):
    out = tmp_path / "sim"
    summary = nmnist_sim.write_dataset(out, n_train=5, seed=3, progress=False)
    assert summary["train"]["samples"] == 5 and summary["test"]["samples"] == 3
    marker = json.loads((out / "SIMULATED.json").read_text())
    assert marker["simulated"] is True and marker["complete"] is True
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.bin")) == [
        "Test/0/00001.bin", "Test/1/00000.bin", "Test/4/00002.bin",
        "Train/0/00001.bin", "Train/1/00000.bin", "Train/1/00004.bin", "Train/4/00002.bin",
        "Train/7/00003.bin"]
    ds = nmnist.NMNIST(out, "train", n_time_bins=3, progress=False)
    assert ds.simulated and len(ds) == 5 and ds[0][0].shape == (3, 2, 34, 34)
    again = tmp_path / "again"
    nmnist_sim.write_dataset(again, n_train=5, seed=3, progress=False)
    for p in out.rglob("*.bin"):
        assert (again / p.relative_to(out)).read_bytes() == p.read_bytes()


def test_cli_simulate(tmp_path, fake_mnist, capsys):
    parser = argparse.ArgumentParser()
    commands.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", "simulate-nmnist", "--out", str(tmp_path / "o"),
                              "--n-train", "2", "--n-test", "1", "--seed", "5"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "train: 2 simulated recordings" in printed and "test: 1 simulated recordings" in printed
    assert len(list((tmp_path / "o").rglob("*.bin"))) == 3
    assert json.loads((tmp_path / "o" / "SIMULATED.json").read_text())["seed"] == 5


@pytest.mark.parametrize("flag, value, what", [
    ("--n-train", "0", "a positive number of digits"),
    ("--n-test", "-5", "a positive number of digits"),
    ("--n-test", "2.5", "a positive number of digits"),
    ("--seed", "-1", "an integer >= 0")])
def test_cli_simulate_names_the_flag_of_a_bad_count(tmp_path, capsys, flag, value, what):
    parser = argparse.ArgumentParser()
    commands.add_parser(parser.add_subparsers(dest="command"))
    with pytest.raises(SystemExit):
        parser.parse_args(["data", "simulate-nmnist", "--out", str(tmp_path / "o"), flag, value])
    err = capsys.readouterr().err
    assert f"argument {flag}: expected {what}, got " in err
    assert value.lstrip("-").split(".")[0] in err


def test_write_dataset_refuses_a_negative_seed_before_making_the_folder(tmp_path, fake_mnist):
    with pytest.raises(ValueError, match=r"seed: expected an integer >= 0, got -1"):
        nmnist_sim.write_dataset(tmp_path / "o", seed=-1, progress=False)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("n", [0, -5, 2.5, True])
def test_write_dataset_refuses_a_count_that_is_not_positive(tmp_path, fake_mnist, n):
    with pytest.raises(ValueError, match=r"n_test: expected a positive number of digits"):
        nmnist_sim.write_dataset(tmp_path / "o", n_test=n, progress=False)
    assert not (tmp_path / "o").exists()


def test_an_interrupted_run_is_labelled_simulated_and_refused(tmp_path, fake_mnist, monkeypatch):
    written = []

    def write_then_die(path, ev):
        if len(written) == 3:
            raise KeyboardInterrupt
        written.append(path)
        nmnist.write_events(path, ev)

    monkeypatch.setattr(nmnist_sim, "write_events", write_then_die)
    out = tmp_path / "sim"
    with pytest.raises(KeyboardInterrupt):
        nmnist_sim.write_dataset(out, n_train=5, batch=2, progress=False)
    assert len(list(out.rglob("*.bin"))) == 3
    marker = json.loads((out / "SIMULATED.json").read_text())
    assert marker["simulated"] is True and marker["complete"] is False
    with pytest.raises(ValueError, match=r"interrupted.*simulate-nmnist"):
        nmnist.NMNIST(out, "train", n_time_bins=3, progress=False)
    # the same call again goes on from there; other arguments are refused
    with pytest.raises(ValueError, match=r"out: expected a new or empty folder.*not empty"):
        nmnist_sim.write_dataset(out, n_train=5, batch=2, seed=1, progress=False)
    again = []
    monkeypatch.setattr(nmnist_sim, "write_events",
                        lambda path, ev: again.append(path) or nmnist.write_events(path, ev))
    summary = nmnist_sim.write_dataset(out, n_train=5, batch=2, progress=False)
    assert summary["complete"] and summary["train"]["samples"] == 5
    assert not set(again) & set(written[:2])    # the first batch (2 files) was kept
    whole = tmp_path / "whole"
    assert nmnist_sim.write_dataset(whole, n_train=5, batch=2, progress=False) == summary
    assert sorted(p.relative_to(whole) for p in whole.rglob("*.bin")) == \
        sorted(p.relative_to(out) for p in out.rglob("*.bin"))
    for p in whole.rglob("*.bin"):
        assert (out / p.relative_to(whole)).read_bytes() == p.read_bytes()
    assert len(nmnist.NMNIST(out, "train", n_time_bins=3, progress=False)) == 5


def test_a_run_killed_while_writing_its_first_marker_is_finished_by_the_same_call(tmp_path,
                                                                                 fake_mnist):
    """Killed between writing SIMULATED.json's temporary file and renaming it, a call left only
    that file, which the same call again took for another run's content and refused."""
    out = tmp_path / "sim"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs
    (out / f".SIMULATED.json.{dead.pid}.tmp").write_text("{")
    summary = nmnist_sim.write_dataset(out, n_train=5, batch=2, progress=False)
    assert summary["complete"] and not list(out.glob(".*.tmp"))


def test_recordings_killed_writers_left_are_removed_when_the_run_goes_on(tmp_path, fake_mnist):
    """A call killed while writing recordings leaves their temporaries beside them (hidden); the
    same call again finishes the run and removes them."""
    out = tmp_path / "sim"
    nmnist_sim.write_dataset(out, n_train=5, batch=2, progress=False)
    marker = json.loads((out / "SIMULATED.json").read_text())
    started = {k: v for k, v in marker.items() if k not in ("train", "test")}  # as first written
    (out / "SIMULATED.json").write_text(json.dumps({**started, "complete": False}))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs
    recording = next(out.rglob("*.bin"))
    orphan = recording.with_name(f".{recording.name}.{dead.pid}.tmp")
    orphan.write_bytes(recording.read_bytes()[:7])
    assert nmnist_sim.write_dataset(out, n_train=5, batch=2, progress=False)["complete"]
    assert not list(out.rglob(".*.tmp"))


def test_an_interrupted_run_again_with_other_arguments_names_them(tmp_path, fake_mnist,
                                                                   monkeypatch):
    def die(path, ev):
        raise KeyboardInterrupt

    out = tmp_path / "sim"
    with monkeypatch.context() as m:
        m.setattr(nmnist_sim, "write_events", die)
        with pytest.raises(KeyboardInterrupt):
            nmnist_sim.write_dataset(out, n_train=5, progress=False)
    with pytest.raises(ValueError, match=r"interrupted simulation there was run with n_train=5, "
                                         r"now n_train=6 \(run it again with its arguments"):
        nmnist_sim.write_dataset(out, n_train=6, progress=False)
    with pytest.raises(ValueError, match=r"run with n_test=None, seed=0, now n_test=2, seed=4 "):
        nmnist_sim.write_dataset(out, n_train=5, n_test=2, seed=4, progress=False)


@pytest.mark.parametrize("counts, message", [
    ({"n_train": 9}, r"n_train: expected at most 8 \(the MNIST train set's size\), got 9"),
    ({"n_test": 100000}, r"n_test: expected at most 3 \(the MNIST test set's size\), got 100000")])
def test_write_dataset_refuses_more_digits_than_mnist_holds(tmp_path, fake_mnist, counts,
                                                            message):
    with pytest.raises(ValueError, match=message):
        nmnist_sim.write_dataset(tmp_path / "o", **counts, progress=False)
    assert not (tmp_path / "o").exists()


def test_write_dataset_refuses_a_folder_that_is_not_empty(tmp_path, fake_mnist):
    out = tmp_path / "sim"
    out.mkdir()  # an empty folder is fine
    nmnist_sim.write_dataset(out, n_train=4, n_test=1, progress=False)
    before = sorted(out.rglob("*"))
    with pytest.raises(ValueError, match=r"out: expected a new or empty folder, got .*sim"):
        nmnist_sim.write_dataset(out, n_train=2, n_test=1, progress=False)
    assert sorted(out.rglob("*")) == before
    assert json.loads((out / "SIMULATED.json").read_text())["train"]["samples"] == 4
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="empty folder"):
        nmnist_sim.write_dataset(other, n_train=1, n_test=1, progress=False)


@pytest.mark.parametrize("amplitude", [4.5, 10.0, -0.1, float("nan"), "3", True])
def test_amplitude_must_keep_the_saccade_on_the_canvas(amplitude):
    with pytest.raises(ValueError, match=r"amplitude: expected a number in \[0, 4\.5\) px, got"):
        SimConfig(amplitude=amplitude)


@pytest.mark.parametrize("field,value", [
    ("threshold", 0.0), ("threshold", -0.2), ("dt_us", 0), ("dt_us", 200_000),
    ("saccade_us", 0), ("background", 0.0), ("background", 1.5), ("threshold_sigma", -0.1),
    ("refractory_us", float("nan")), ("noise_hz", -1.0), ("noise_hz", True)])
def test_other_parameters_are_checked(field, value):
    """Each once gave a wrong recording or a deep error: 75 680 events for threshold 0,
    ZeroDivisionError for dt_us 0, an empty recording for dt_us > saccade_us, NaN for
    background 0."""
    with pytest.raises(ValueError, match=f"^{field}: expected .*, got {value!r}$"):
        SimConfig(**{field: value})


def test_statistics_want_recordings_with_events():
    """An empty list, or only empty recordings, gave numpy's mean-of-empty errors."""
    for recordings in ([], [np.zeros(0, nmnist.EVENT_DTYPE)]):
        with pytest.raises(ValueError, match="recordings: expected at least one with events"):
            nmnist_sim.statistics(recordings)


def test_largest_amplitude_simulates():
    (ev,) = nmnist_sim.simulate(digits(1), [0], SimConfig(amplitude=4.49))
    assert len(ev) > 100 and ev["x"].max() < 34 and ev["y"].max() < 34


@pytest.mark.slow
def test_calibrated_to_real_n_mnist_statistics():
    """Mean events per sample ~4k, ON/OFF balanced, ~300 ms (docs/data.md gives the sources)."""
    if not (SHARED / "mnist").is_dir():
        pytest.skip("no shared data here")
    from bistable.data import idx

    images, _ = idx.load("mnist", "test", SHARED)
    stats = nmnist_sim.statistics(nmnist_sim.simulate(images[:300], [[0, 1, i]
                                                                     for i in range(300)]))
    assert 3000 < stats["events_mean"] < 5000
    assert 0.4 < stats["on_fraction"] < 0.6
    assert 280 < stats["duration_ms_mean"] <= 300


def _bar():
    """A vertical bar, 3 px wide, in the middle of a 28 × 28 image."""
    yy, xx = np.mgrid[:28, :28]
    return np.where((abs(xx - 14) < 2) & (abs(yy - 14) < 10), 255, 0).astype(np.uint8)[None]


def test_trajectory_samples_each_vertex_once():
    config = SimConfig()
    _, offsets = nmnist_sim.trajectory(config)
    n = config.saccade_us // config.dt_us
    assert offsets.shape == (3 * n + 1, 2)
    assert np.all(np.abs(np.diff(offsets, axis=0)).sum(1) > 0)
    a = config.amplitude  # the triangle A → B → C → A of the module docstring, at t = 0, n, 2n, 3n
    vertices = np.array([[-a / 2, a / 3], [a / 2, a / 3], [0, -2 * a / 3], [-a / 2, a / 3]])
    np.testing.assert_allclose(offsets[::n], vertices, atol=1e-12)
    for vertex in vertices[1:3]:  # B and C once each (A starts and ends the recording)
        assert np.isclose(offsets, vertex, atol=1e-9).all(axis=1).sum() == 1
    # the minimum-jerk profile s(u) = 10u³ − 15u⁴ + 6u⁵ along A → B at u = ¼
    u = (n // 4) / n
    np.testing.assert_allclose(offsets[n // 4], vertices[0] + (10 * u**3 - 15 * u**4 + 6 * u**5)
                               * (vertices[1] - vertices[0]), atol=1e-12)


def test_refractory_period_longer_than_a_sample_step():
    config = replace(SimConfig(), noise_hz=0.0, refractory_us=5000.0)
    ev = nmnist_sim.simulate(_bar(), [0], config)[0]
    pixel = ev["y"].astype(np.int64) * 34 + ev["x"]
    order = np.lexsort((ev["t"], pixel))
    same = np.diff(pixel[order]) == 0
    assert np.diff(ev["t"][order].astype(np.int64))[same].min() >= 4999


def test_leading_edge_of_a_bar_moving_right_is_on():
    """First saccade, A → B: the image moves right, its right edge brightens pixels (ON, p = 1)
    and its left edge darkens them (OFF)."""
    ev = nmnist_sim.simulate(_bar(), [0], replace(SimConfig(), noise_hz=0.0))[0]
    first = ev[ev["t"] < 100_000]
    right, left = first[first["x"] >= 19], first[first["x"] <= 15]
    assert right["p"].mean() > 0.8 and left["p"].mean() < 0.2


def test_threshold_floor_keeps_a_still_scene_silent():
    config = replace(SimConfig(), amplitude=0.0, noise_hz=0.0, threshold_sigma=3.0)
    assert all(len(e) == 0 for e in nmnist_sim.simulate(_bar(), [0], config))


def test_blur_preserves_luminance():
    lum = nmnist_sim._luminance(np.full((1, 28, 28), 255, np.uint8), 0.1)
    assert lum.max() <= 1 + 1e-6 and abs(lum[0, 20, 20] - 1) < 1e-6
    assert abs((lum - 0.1).sum() - 0.9 * 28 * 28) < 1e-2
