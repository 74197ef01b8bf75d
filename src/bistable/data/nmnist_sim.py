"""Simulated N-MNIST: MNIST digits rendered as event-camera recordings in the N-MNIST format.

Model (SPEC.md §7; the recording set-up of Orchard et al. 2015, here simulated):

- Scene: the 28 x 28 digit on a 34 x 34 sensor, centred (offset 3 px), luminance
  ``I = b + (1 - b) · blur(digit / 255)`` with ``b = background`` (a monitor's black is not dark),
  ``blur`` a [1, 2, 1]/4 separable kernel (optics).
- Motion: three saccades of ``saccade_us`` each (100 ms: 300 ms per recording) along a triangle
  with vertices ``A = (-a/2, a/3)``, ``B = (a/2, a/3)``, ``C = (0, -2a/3)`` (``a = amplitude`` px,
  ``0 <= a < 4.5`` so that the image stays on the canvas), A → B → C → A, each with the
  minimum-jerk profile ``s(u) = 10u³ - 15u⁴ + 6u⁵``; the image moves by bilinear interpolation,
  sampled every ``dt_us``.
- Pixels (the DVS/ATIS model): each pixel keeps a reference log intensity ``r``; when
  ``L = log I`` reaches ``r + θ_on`` it emits an ON event (p = 1) and ``r += θ_on``; when it
  reaches ``r - θ_off`` an OFF event (p = 0) and ``r -= θ_off``. The event time is where ``L``
  crosses the level, linearly interpolated between samples, delayed to at least
  ``refractory_us`` after the pixel's previous event; one event per pixel per sample step (a
  larger change fires over the next steps). Per pixel, ``θ_on, θ_off = threshold·(1 + σ·N(0,1))``
  (mismatch, ``σ = threshold_sigma``, at least ``0.6·threshold``) and ``r`` starts at
  ``L + U(-½, ½)·threshold``.
- Background activity: ``noise_hz`` events per pixel per second, uniform in time, random polarity.

Deterministic: sample ``i`` of a split uses ``numpy.random.default_rng([seed, split, i])``, so
output does not depend on batching. Defaults are calibrated to the published statistics of real
N-MNIST (see docs/data.md; ``benchmarks/data.py`` measures them). Results obtained on these
recordings must be labelled *simulated*: ``write_dataset`` leaves ``SIMULATED.json`` in the root.
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import idx
from .atomic import atomic_write_bytes, remove_orphans
from .nmnist import EVENT_DTYPE, SENSOR, SPLITS, write_events

PAD = 3  # the digit's offset on the sensor: (34 - 28) / 2
# The canvas margin leaves PAD px for the image to move up; vertex C moves it by 2a/3 and the
# bilinear window reads one pixel beyond, so 2a/3 < PAD.
MAX_AMPLITUDE = 1.5 * PAD


@dataclass(frozen=True)
class SimConfig:
    """Simulator parameters (see the module docstring)."""

    saccade_us: int = 100_000
    dt_us: int = 1000
    amplitude: float = 3.0
    background: float = 0.1
    threshold: float = 0.2
    threshold_sigma: float = 0.05
    refractory_us: float = 500.0
    noise_hz: float = 0.2

    def __post_init__(self):
        for name, ok, expected in (
                ("amplitude", lambda v: 0 <= v < MAX_AMPLITUDE,
                 f"a number in [0, {MAX_AMPLITUDE}) px"),
                ("saccade_us", lambda v: v > 0, "a number > 0 µs"),
                ("dt_us", lambda v: 0 < v <= self.saccade_us,
                 f"a number in (0, saccade_us = {self.saccade_us}] µs"),
                ("background", lambda v: 0 < v < 1, "a number in (0, 1) (the digit is brighter)"),
                ("threshold", lambda v: v > 0, "a number > 0"),
                ("threshold_sigma", lambda v: v >= 0, "a number >= 0"),
                ("refractory_us", lambda v: v >= 0, "a number >= 0 µs"),
                ("noise_hz", lambda v: v >= 0, "a number >= 0")):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) \
                    or not math.isfinite(value) or not ok(value):
                raise ValueError(f"{name}: expected {expected}, got {value!r}")


def trajectory(config: SimConfig) -> tuple[np.ndarray, np.ndarray]:
    """Sample times ``t`` (µs, ``(K,)``) and image offsets ``(dx, dy)`` (px, ``(K, 2)``)."""
    a = config.amplitude
    vertices = np.array([[-a / 2, a / 3], [a / 2, a / 3], [0.0, -2 * a / 3], [-a / 2, a / 3]])
    n = config.saccade_us // config.dt_us
    u = np.arange(n) / n
    s = 10 * u**3 - 15 * u**4 + 6 * u**5
    path = [v0 + s[:, None] * (v1 - v0) for v0, v1 in zip(vertices[:-1], vertices[1:])]
    offsets = np.concatenate(path + [vertices[-1:]])
    return np.arange(offsets.shape[0]) * float(config.dt_us), offsets


def _luminance(images: np.ndarray, background: float) -> np.ndarray:
    """Blurred luminance on a canvas with a 6 px margin: ``(B, 40, 40)`` float32."""
    m = 2 * PAD
    canvas = np.zeros((images.shape[0], 28 + 2 * m, 28 + 2 * m), np.float32)
    canvas[:, m:-m, m:-m] = images / np.float32(255)
    for axis in (1, 2):
        canvas = (2 * canvas + np.roll(canvas, 1, axis) + np.roll(canvas, -1, axis)) / 4
    return background + (1 - background) * canvas


def _active(canvas: np.ndarray, offsets: np.ndarray, background: float) -> np.ndarray:
    """Sensor pixels ``(B, 34*34)`` whose bilinear window ever covers a lit canvas pixel; the
    others see a constant luminance and can never fire."""
    lit = canvas > background
    ox, oy = PAD - offsets[:, 0], PAD - offsets[:, 1]
    active = np.zeros((canvas.shape[0], SENSOR, SENSOR), bool)
    for iy in range(int(np.floor(oy.min())), int(np.floor(oy.max())) + 2):
        for ix in range(int(np.floor(ox.min())), int(np.floor(ox.max())) + 2):
            active |= lit[:, iy:iy + SENSOR, ix:ix + SENSOR]
    return active.reshape(canvas.shape[0], -1)


def _sampler(canvas: np.ndarray, b: np.ndarray, pix: np.ndarray):
    """``view(dx, dy)``: log luminance at sensor pixels ``(b, pix)`` with the digit shifted by
    ``(dx, dy)`` px, by bilinear interpolation of the canvas. The four neighbours gathered for
    each integer part of the shift are kept (the trajectory visits only a few)."""
    width = canvas.shape[-1]
    flat = canvas.ravel()
    base = b * canvas[0].size + (pix // SENSOR) * width + pix % SENSOR
    corners = {}

    def view(dx: float, dy: float) -> np.ndarray:
        ox, oy = PAD - dx, PAD - dy
        ix, iy = int(np.floor(ox)), int(np.floor(oy))
        fx, fy = np.float32(ox - ix), np.float32(oy - iy)
        if (ix, iy) not in corners:
            i = base + (iy * width + ix)
            corners[ix, iy] = (flat[i], flat[i + 1], flat[i + width], flat[i + width + 1])
        c00, c01, c10, c11 = corners[ix, iy]
        top = (1 - fx) * c00 + fx * c01
        bottom = (1 - fx) * c10 + fx * c11
        return np.log((1 - fy) * top + fy * bottom)

    return view


def simulate(images: np.ndarray, seeds, config: SimConfig = SimConfig()) -> list[np.ndarray]:
    """Render digits ``(B, 28, 28)`` uint8 as recordings: a list of ``B`` event arrays
    (``EVENT_DTYPE``, sorted by time). ``seeds[i]`` seeds sample ``i`` (an int or int sequence).

    Pixels that never see a change are skipped (they cannot fire); the rest advance together,
    vectorised over the batch, one ``dt_us`` sample step at a time.
    """
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"images: expected shape (B, 28, 28), got {images.shape}")
    B, P = images.shape[0], SENSOR * SENSOR
    rngs = [np.random.default_rng(s) for s in seeds]
    if len(rngs) != B:
        raise ValueError(f"seeds: expected one per image ({B}), got {len(rngs)}")
    if B == 0:
        return []
    times, offsets = trajectory(config)
    canvas = _luminance(images, config.background)
    act_b, act_pix = np.nonzero(_active(canvas, offsets, config.background))
    view = _sampler(canvas, act_b, act_pix)
    c = config.threshold
    th = np.stack([np.maximum(c * (1 + config.threshold_sigma * r.standard_normal((2, P))),
                              0.6 * c) for r in rngs]).astype(np.float32)
    th_on, th_off = th[act_b, 0, act_pix], th[act_b, 1, act_pix]
    offset = np.stack([r.uniform(-0.5, 0.5, P) for r in rngs]).astype(np.float32)
    logs = view(*offsets[0])
    ref = logs + c * offset[act_b, act_pix]
    ready = np.zeros_like(ref)  # earliest time each pixel may fire again (refractory)
    frac = np.empty_like(ref)
    out_b, out_pix, out_t, out_p = [], [], [], []
    for k in range(1, len(times)):
        new = view(*offsets[k])
        diff = new - ref
        on, off = diff >= th_on, diff <= -th_off
        crossed = on | off
        if crossed.any():
            level = np.where(on, ref + th_on, ref - th_off)
            step = new - logs
            frac.fill(0)
            np.divide(level - logs, step, out=frac, where=step != 0)
            t_ev = np.maximum(np.float32(times[k - 1]) + np.clip(frac, 0, 1) * config.dt_us,
                              ready)
            fire = np.flatnonzero(crossed & (t_ev <= times[k]))
            out_b.append(act_b[fire])
            out_pix.append(act_pix[fire])
            out_t.append(t_ev[fire])
            out_p.append(on[fire])
            ref[fire] = level[fire]
            ready[fire] = t_ev[fire] + np.float32(config.refractory_us)
        logs = new
    _add_noise(rngs, config, times[-1], out_b, out_pix, out_t, out_p)
    b, pix, t, p = (np.concatenate(a) for a in (out_b, out_pix, out_t, out_p))
    order = np.lexsort((t, b))
    b, pix, t, p = b[order], pix[order], t[order], p[order]
    bounds = np.searchsorted(b, np.arange(B + 1))
    result = []
    for i in range(B):
        sl = slice(bounds[i], bounds[i + 1])
        ev = np.empty(bounds[i + 1] - bounds[i], EVENT_DTYPE)
        ev["x"], ev["y"] = pix[sl] % SENSOR, pix[sl] // SENSOR
        ev["t"], ev["p"] = np.floor(t[sl]), p[sl]
        result.append(ev)
    return result


def _add_noise(rngs, config, duration, out_b, out_pix, out_t, out_p) -> None:
    P = SENSOR * SENSOR
    for i, r in enumerate(rngs):
        n = r.poisson(config.noise_hz * P * duration * 1e-6)
        out_b.append(np.full(n, i))
        out_pix.append(r.integers(0, P, n))
        out_t.append(r.uniform(0, duration, n))
        out_p.append(r.integers(0, 2, n).astype(bool))


def statistics(recordings: list[np.ndarray]) -> dict:
    """Events per sample (mean, std), fraction of ON events, and duration ``t_max - t_min`` (ms)
    of the recordings that have events."""
    if not any(len(ev) for ev in recordings):
        raise ValueError(f"recordings: expected at least one with events, got "
                         f"{len(recordings)} without")
    counts = np.array([len(ev) for ev in recordings])
    on = sum(int(ev["p"].sum()) for ev in recordings)
    dur = np.array([(ev["t"].max() - ev["t"].min()) / 1000 for ev in recordings if len(ev)])
    return {"samples": len(recordings), "events_mean": float(counts.mean()),
            "events_std": float(counts.std()), "on_fraction": on / max(int(counts.sum()), 1),
            "duration_ms_mean": float(dur.mean()), "duration_ms_min": float(dur.min()),
            "duration_ms_max": float(dur.max())}


def write_dataset(out, mnist_dir=None, *, n_train: int | None = None, n_test: int | None = None,
                  seed: int = 0, config: SimConfig = SimConfig(), batch: int = 256,
                  progress: bool = True) -> dict:
    """Simulate the first ``n_train`` / ``n_test`` MNIST digits (all when None; more than the
    split holds is a ``ValueError``) into ``out/Train|Test/<digit>/<index:05d>.bin``, which must
    be a new or empty folder, or one that an interrupted call with the same arguments left (it
    goes on from there).

    ``out/SIMULATED.json`` is written before the first recording with ``"complete": false``
    (``nmnist.list_samples`` refuses such a folder) and rewritten complete at the end; returned.
    Each recording is written atomically and depends only on ``(seed, split, index)``, so the
    recordings an interrupted call left are kept, not simulated again.
    """
    from tqdm import tqdm

    for name, n in (("n_train", n_train), ("n_test", n_test)):
        if n is not None and (isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1):
            raise ValueError(f"{name}: expected a positive number of digits (None: all), "
                             f"got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed: expected an integer >= 0, got {seed!r}")
    out = Path(out)
    summary = {"simulated": True, "complete": False, "source": "MNIST", "seed": seed,
               "config": asdict(config), "requested": {"train": n_train, "test": n_test}}
    if out.is_file():
        raise ValueError(f"out: expected a new or empty folder, got {out}, which is a file")
    if out.is_dir():  # what killed calls were writing is not content (a marker alone: new)
        remove_orphans(out, recursive=True)
    if out.exists() and any(out.iterdir()):
        _check_resumable(out, summary)
    mnist = {split: idx.load("mnist", split, mnist_dir) for split in SPLITS}
    for name, split, n in (("n_train", "train", n_train), ("n_test", "test", n_test)):
        if n is not None and n > len(mnist[split][1]):
            raise ValueError(f"{name}: expected at most {len(mnist[split][1])} (the MNIST {split} "
                             f"set's size), got {n}")
    out.mkdir(parents=True, exist_ok=True)
    _write_marker(out, summary)
    for code, (split, n) in enumerate((("train", n_train), ("test", n_test))):
        images, labels = mnist[split]
        n = len(labels) if n is None else int(n)
        for digit in range(10):
            (out / SPLITS[split] / str(digit)).mkdir(parents=True, exist_ok=True)
        counts = []
        for lo in tqdm(range(0, n, batch), desc=f"simulating {split}", unit="batch",
                       disable=None if progress else True):
            hi = min(lo + batch, n)
            paths = [out / SPLITS[split] / str(labels[i]) / f"{i:05d}.bin" for i in range(lo, hi)]
            if all(p.is_file() for p in paths):  # left by an interrupted call: kept
                counts += [p.stat().st_size // 5 for p in paths]
                continue
            recs = simulate(images[lo:hi], [[seed, code, i] for i in range(lo, hi)], config)
            for path, ev in zip(paths, recs):
                write_events(path, ev)
                counts.append(len(ev))
        summary[split] = {"samples": n, "events_mean": float(np.mean(counts)) if counts else 0.0}
    summary["complete"] = True
    _write_marker(out, summary)
    return summary


def _check_resumable(out: Path, summary: dict) -> None:
    """``ValueError`` unless the folder ``out`` (not empty) holds the recordings of an interrupted
    :func:`write_dataset` call with the arguments of ``summary`` (its ``SIMULATED.json`` says so);
    for another call's, it names the arguments that differ."""
    try:
        marker = json.loads((out / "SIMULATED.json").read_text())
    except (OSError, ValueError):
        marker = None
    if marker == summary:
        return
    problem = f"out: expected a new or empty folder, got {out}, which exists and is not empty"
    if isinstance(marker, dict) and marker.get("complete") is False:
        was, now = _arguments(marker), _arguments(summary)
        changed = [k for k in now if was[k] != now[k]]
        if changed:
            raise ValueError(
                f"{problem}: an interrupted simulation there was run with "
                f"{', '.join(f'{k}={was[k]}' for k in changed)}, now "
                f"{', '.join(f'{k}={now[k]}' for k in changed)} (run it again with its "
                "arguments to finish it, or remove the folder to simulate anew)")
    raise ValueError(f"{problem} (remove it to simulate again)")


def _arguments(summary: dict) -> dict:
    """The arguments a ``SIMULATED.json`` records, by name (``n_train=None``: all digits)."""
    requested, config = (summary.get(k) if isinstance(summary.get(k), dict) else {}
                         for k in ("requested", "config"))
    return {"n_train": requested.get("train"), "n_test": requested.get("test"),
            "seed": summary.get("seed"), **{k: config.get(k) for k in asdict(SimConfig())}}


def _write_marker(out: Path, summary: dict) -> None:
    atomic_write_bytes(out / "SIMULATED.json", json.dumps(summary, indent=2).encode())
