"""N-MNIST event recordings: the binary codec, frames, denoising, the dataset and its frame cache.

File format (Orchard et al. 2015; SPEC.md §7): one file per sample, ``Train|Test/<digit>/<id>.bin``,
5 bytes per event, big-endian::

    byte 0 = x (0..33)   byte 1 = y (0..33)   byte 2 bit 7 = p (1 = ON)
    byte 2 bits 6..0, byte 3, byte 4 = t in µs (23 bits)

Events are a structured array with fields ``x, y, t, p`` in that order, each int64: the dtype of
``tonic.datasets.NMNIST`` (``EVENT_DTYPE``), so arrays pass between the two libraries unchanged.
Frames are event counts ``(T, 2, 34, 34)`` indexed ``[bin, p, y, x]`` (Tonic's ``ToFrame`` layout).
Everything here is vectorised numpy: no Python loop runs per event.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import numbers
import os
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch

from ..extras import MissingExtra
from .atomic import atomic_write_bytes, remove_orphans, temporary

SENSOR = 34  # the sensor is 34 x 34 pixels, 2 polarities
# one non-zero cell of a sample's frames in the cache: flat (bin, polarity, y, x) index, count
_CELL = np.dtype([("index", "<u4"), ("count", "<u2")])
EVENT_DTYPE = np.dtype([("x", np.int64), ("y", np.int64), ("t", np.int64), ("p", np.int64)])
T_MAX = (1 << 23) - 1  # largest timestamp the 23-bit field holds (µs)
SPLITS = {"train": "Train", "test": "Test"}


# --------------------------------------------------------------------------- codec

def _decode(raw: np.ndarray, name) -> tuple[np.ndarray, ...]:
    """Split raw bytes (uint8) into x, y, t, p arrays, checking length and coordinates."""
    if raw.size % 5:
        raise ValueError(f"{name}: truncated N-MNIST file ({raw.size} bytes is not a multiple "
                         f"of 5 bytes per event)")
    ev = raw.reshape(-1, 5)
    x, y = ev[:, 0], ev[:, 1]
    if ev.shape[0] and max(int(x.max()), int(y.max())) >= SENSOR:
        bad = int(np.flatnonzero((x >= SENSOR) | (y >= SENSOR))[0])
        raise ValueError(f"{name}: event {bad} has coordinate (x={x[bad]}, y={y[bad]}) outside "
                         f"the {SENSOR}x{SENSOR} sensor (0..{SENSOR - 1})")
    b2 = ev[:, 2].astype(np.int64)
    t = ((b2 & 0x7F) << 16) | (ev[:, 3].astype(np.int64) << 8) | ev[:, 4]
    return x, y, t, b2 >> 7


def _raw(path) -> np.ndarray:
    with open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8)


def read_events(path) -> np.ndarray:
    """Read one N-MNIST ``.bin`` file into a structured array ``(N,)`` of ``EVENT_DTYPE``.

    Raises ``ValueError`` naming the file when its length is not a multiple of 5 bytes or an
    event lies outside the 34 x 34 sensor.
    """
    return _structured(*_decode(_raw(path), path))


def _structured(x, y, t, p) -> np.ndarray:
    events = np.empty(t.size, dtype=EVENT_DTYPE)
    events["x"], events["y"], events["t"], events["p"] = x, y, t, p
    return events


def _fields(events, keys: str = "xytp") -> tuple[np.ndarray, ...]:
    """The fields ``keys`` of a structured event array as int64 arrays; ValueError unless it has
    them all as integer or bool fields (float timestamps in seconds would be cut to 0 silently)."""
    names = getattr(getattr(events, "dtype", None), "names", None) or ()
    if not set(keys) <= set(names):
        raise ValueError(f"events: expected a structured array with fields {', '.join(keys)} "
                         f"(EVENT_DTYPE), got fields {', '.join(names) or 'none'}")
    odd = [k for k in keys if events.dtype[k].kind not in "iub"]
    if odd:
        raise ValueError(f"events: expected integer or bool fields (t in µs), got {odd[0]} of "
                         f"dtype {events.dtype[odd[0]]}")
    return tuple(np.asarray(events[k]).astype(np.int64) for k in keys)


def encode_events(events: np.ndarray) -> bytes:
    """The exact N-MNIST bytes of ``events`` (fields x, y, t, p; any integer or bool dtypes)."""
    x, y, t, p = _fields(events)
    for key, arr, hi in (("x", x, SENSOR - 1), ("y", y, SENSOR - 1), ("t", t, T_MAX), ("p", p, 1)):
        if arr.size and (arr.min() < 0 or arr.max() > hi):
            raise ValueError(f"events: field {key} must lie in 0..{hi}, got "
                             f"{arr.min()}..{arr.max()}")
    out = np.empty((t.size, 5), dtype=np.uint8)
    out[:, 0], out[:, 1] = x, y
    out[:, 2] = (p << 7) | (t >> 16)
    out[:, 3] = (t >> 8) & 0xFF
    out[:, 4] = t & 0xFF
    return out.tobytes()


def write_events(path, events: np.ndarray) -> None:
    """Write ``events`` to ``path`` in the exact N-MNIST format, atomically (temp + os.replace)."""
    atomic_write_bytes(Path(path), encode_events(events))


def from_tonic(events: np.ndarray) -> np.ndarray:
    """Events from ``tonic.datasets.NMNIST`` (or any x, y, t, p structured array of integer or
    bool fields, t in µs) as ours."""
    return _structured(*_fields(events))


def to_tonic(events: np.ndarray) -> np.ndarray:
    """Our events in the dtype of ``tonic.datasets.NMNIST`` (needs the ``neuromorphic`` extra)."""
    try:
        import tonic
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise MissingExtra("to_tonic needs tonic: pip install 'bistable[neuromorphic]'") from err
    return from_tonic(events).astype(tonic.datasets.NMNIST.dtype)


# --------------------------------------------------------------------------- frames, denoise

def _bins(t: np.ndarray, n_time_bins, time_window) -> tuple[np.ndarray, int]:
    if (n_time_bins is None) == (time_window is None):
        raise ValueError("expected exactly one of n_time_bins and time_window, got "
                         f"n_time_bins={n_time_bins!r}, time_window={time_window!r}")
    if n_time_bins is not None:
        if isinstance(n_time_bins, bool) or not isinstance(n_time_bins, numbers.Integral) \
                or n_time_bins < 1:
            raise ValueError(f"n_time_bins must be an int >= 1, got {n_time_bins!r}")
        if t.size == 0:
            return t, int(n_time_bins)
        t0, span = t.min(), int(t.max() - t.min()) + 1
        return (t - t0) * int(n_time_bins) // span, int(n_time_bins)
    if isinstance(time_window, bool) or not isinstance(time_window, numbers.Real) \
            or not (math.isfinite(time_window) and time_window > 0):
        raise ValueError(f"time_window must be a finite number > 0 µs, got {time_window!r}")
    if t.size == 0:
        return t, 0
    b = ((t - t.min()) // time_window).astype(np.int64)
    return b, int(b.max()) + 1


def _check_on_sensor(**fields: np.ndarray) -> None:
    """ValueError unless x, y lie on the sensor and p is 0 or 1."""
    for name, v in fields.items():
        high = 2 if name == "p" else SENSOR
        if v.size and not (0 <= v.min() and v.max() < high):
            raise ValueError(f"events: expected {name} in [0, {high}) (the {SENSOR}x{SENSOR} "
                             f"N-MNIST sensor, 2 polarities), got values in "
                             f"[{v.min()}, {v.max()}]")


def _check_filter_time(filter_time) -> None:
    if isinstance(filter_time, bool) or not isinstance(filter_time, numbers.Real) \
            or not (math.isfinite(filter_time) and filter_time > 0):
        raise ValueError(f"filter_time must be a finite number > 0 µs, got {filter_time!r}")


def _frames(x, y, t, p, n_time_bins=None, time_window=None) -> np.ndarray:
    _check_on_sensor(x=x, y=y, p=p)
    b, n = _bins(t, n_time_bins, time_window)
    cell = ((b * 2 + p) * SENSOR + y) * SENSOR + x
    counts = np.bincount(cell, minlength=n * 2 * SENSOR * SENSOR)
    return counts.astype(np.int32).reshape(n, 2, SENSOR, SENSOR)


def to_frames(events: np.ndarray, *, n_time_bins: int | None = None,
              time_window: float | None = None) -> np.ndarray:
    """Event counts per time bin: int32 ``(T, 2, 34, 34)`` indexed ``[bin, p, y, x]``.

    Give exactly one of
    - ``n_time_bins=n``: ``[t_min, t_max]`` cut into ``n`` equal bins, ``bin = (t - t_min) * n //
      (t_max - t_min + 1)``; ``T = n``;
    - ``time_window=w`` (µs): bins of width ``w`` from ``t_min``, ``T = (t_max - t_min) // w + 1``.
    Every event is counted (unlike Tonic's ``ToFrame``, which drops the incomplete last slice).
    No events gives zeros with ``T = n`` (or ``T = 0`` for ``time_window``).
    """
    return _frames(*_fields(events), n_time_bins=n_time_bins, time_window=time_window)


def denoise(events: np.ndarray, filter_time: float = 10_000) -> np.ndarray:
    """Drop isolated events, with the semantics of ``tonic.transforms.Denoise``.

    Events are taken in array order. Event ``i`` at ``(x, y, t_i)`` is kept iff one of its four
    neighbours ``(x±1, y)``, ``(x, y±1)`` on the sensor last fired (before ``i``) at ``t_j`` with
    ``t_j + filter_time > t_i``; as in Tonic, a pixel that never fired counts as having fired at
    ``t = 0``. Vectorised with a sort and ``searchsorted``, O(N log N).
    """
    _check_filter_time(filter_time)
    x, y, t = _fields(events, "xyt")
    n = events.shape[0]
    if n == 0:
        return events[:0]
    _check_on_sensor(x=x, y=y)
    order = np.argsort(y * SENSOR + x, kind="stable")  # grouped by pixel, in array order
    x, y, t = x[order], y[order], t[order]
    pix = y * SENSOR + x
    key = pix * n + order                              # sorted: (pixel, index)
    keep = np.zeros(n, dtype=bool)
    for dx, dy in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        step = dy * SENSOR + dx
        pos = np.searchsorted(key, key + step * n) - 1  # last event at the neighbour before i
        pos_c = np.maximum(pos, 0)
        found = (pos >= 0) & (pix[pos_c] == pix + step)
        last = np.where(found, t[pos_c], 0) + filter_time
        inside = (x + dx >= 0) & (x + dx < SENSOR) & (y + dy >= 0) & (y + dy < SENSOR)
        keep |= inside & (last > t)
    keep[order] = keep.copy()
    return events[keep]


# --------------------------------------------------------------------------- dataset + cache

def list_samples(root, split: str) -> tuple[list[Path], np.ndarray]:
    """The ``.bin`` files under ``root/Train|Test/<digit>/`` sorted by (digit, name), and labels.

    Refuses a simulation that was interrupted (``SIMULATED.json`` with ``"complete": false``).
    """
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {sorted(SPLITS)}, got {split!r}")
    marker = Path(root) / "SIMULATED.json"
    try:
        label = json.loads(marker.read_text()) if marker.exists() else {}
    except ValueError as err:
        raise ValueError(f"{marker}: not valid JSON ({err}); it labels the recordings "
                         "simulated: restore it or simulate them again") from None
    if not isinstance(label, dict):
        raise ValueError(f"{marker}: expected a JSON object (the simulation's settings), got "
                         f"{type(label).__name__}; restore it or simulate the recordings again")
    if label.get("complete", True) is False:
        raise ValueError(f"{root}: expected a complete simulation, got an interrupted one "
                         f"({marker} says complete: false); run the same `bistable data "
                         f"simulate-nmnist --out {root} ...` again to finish it")
    base = Path(root) / SPLITS[split]
    if not base.is_dir():
        raise FileNotFoundError(f"no N-MNIST folder {base} (expected {base}/<digit>/*.bin; "
                                f"`bistable data fetch nmnist` or `data simulate-nmnist` make one)")
    files, labels = [], []
    for digit in range(10):
        d = base / str(digit)
        if d.is_dir():
            names = sorted(e.name for e in os.scandir(d) if e.name.endswith(".bin"))
            files += [d / nm for nm in names]
            labels += [digit] * len(names)
    if not files:
        raise FileNotFoundError(f"no .bin files under {base}/<digit>/")
    return files, np.asarray(labels, dtype=np.int64)


def load_frames(path, *, n_time_bins=None, time_window=None, filter_time=None) -> np.ndarray:
    """Read ``path``, optionally denoise (``filter_time`` µs), and bin: ``(T, 2, 34, 34)`` int32."""
    x, y, t, p = _decode(_raw(path), path)
    if filter_time is not None:
        return to_frames(denoise(_structured(x, y, t, p), filter_time), n_time_bins=n_time_bins,
                         time_window=time_window)
    return _frames(x, y, t, p, n_time_bins, time_window)


class NMNIST(torch.utils.data.Dataset):
    """N-MNIST (real or simulated) over ``root/Train|Test/<digit>/*.bin``.

    Items are ``(frames, label)``: frames a float32 tensor ``(T, 2, 34, 34)`` of event counts
    (``n_time_bins`` or ``time_window`` µs, see ``to_frames``), optionally after ``denoise`` with
    ``filter_time`` µs. With neither binning argument, items are ``(events, label)`` with the raw
    structured events. ``time_window`` gives a different T per sample: batch with ``pad_collate``.

    ``cache=True`` (with binning) stores all binned tensors of the split in one file under
    ``cache_dir`` (default ``root/.cache``), keyed by the binning parameters and the file list;
    writes are atomic and a file that fails its size or CRC-32 check is rebuilt.
    ``simulated`` tells whether the recordings came from ``nmnist_sim`` (label results so).
    """

    def __init__(self, root, split: str = "train", *, n_time_bins: int | None = None,
                 time_window: float | None = None, filter_time: float | None = None,
                 cache: bool = True, cache_dir=None, progress: bool = True):
        self.root = Path(root)
        self.files, self.labels = list_samples(root, split)
        self.binned = n_time_bins is not None or time_window is not None
        if self.binned:
            _bins(np.zeros(0, np.int64), n_time_bins, time_window)  # validate the arguments
        if filter_time is not None:
            _check_filter_time(filter_time)
        # numpy scalars as Python numbers: the cache key is JSON
        self.binning = {k: v.item() if isinstance(v, np.generic) else v for k, v in
                        dict(n_time_bins=n_time_bins, time_window=time_window,
                             filter_time=filter_time).items()}
        self.simulated = (self.root / "SIMULATED.json").exists()
        self._cache = self._memmap = None
        if cache and self.binned:
            cache_dir = Path(cache_dir) if cache_dir is not None else self.root / ".cache"
            try:
                self._cache = FrameCache(cache_dir, split, self).load(progress)  # (path, offsets)
            except OSError as err:  # a shared read-only copy of the recordings
                if err.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                    raise
                warnings.warn(f"N-MNIST frame cache in {cache_dir} cannot be written ({err}); "
                              "reading the recordings without it (slower; give cache_dir= a "
                              "writable folder)", stacklevel=2)

    def __len__(self) -> int:
        return len(self.files)

    def __getstate__(self):
        return {**self.__dict__, "_memmap": None}

    def __getitem__(self, i):
        i = range(len(self))[i]  # negative indices as a list's; IndexError when out of range
        label = int(self.labels[i])
        if self._cache is not None:
            path, offsets, lengths = self._cache
            a, b = offsets[i], offsets[i + 1]
            frames = np.zeros(int(lengths[i]) * 2 * SENSOR * SENSOR, np.float32)
            if b > a:
                if self._memmap is None:  # opened lazily, so that DataLoader workers reopen it
                    self._memmap = np.memmap(path, dtype=_CELL, mode="r",
                                             shape=(int(offsets[-1]),))
                cells = self._memmap[a:b]
                frames[cells["index"]] = cells["count"]
            return torch.from_numpy(frames.reshape(-1, 2, SENSOR, SENSOR)), label
        if not self.binned:
            ev = read_events(self.files[i])
            ft = self.binning["filter_time"]
            return (denoise(ev, ft) if ft is not None else ev), label
        frames = load_frames(self.files[i], **self.binning)
        return torch.from_numpy(frames.astype(np.float32)), label


def pad_collate(batch):
    """Batch ``(frames, label)`` items of different T: zero-pad at the end in time.

    Returns ``frames (B, T_max, 2, 34, 34)``, ``labels (B,)`` int64 and ``lengths (B,)`` int64.
    """
    if not batch:
        raise ValueError("batch: expected at least one (frames, label) item, got none")
    lengths = torch.tensor([f.shape[0] for f, _ in batch], dtype=torch.int64)
    out = torch.zeros(len(batch), int(lengths.max()), 2, SENSOR, SENSOR)
    for k, (f, _) in enumerate(batch):
        out[k, : f.shape[0]] = f
    return out, torch.tensor([lab for _, lab in batch], dtype=torch.int64), lengths


class FrameCache:
    """One split's binned frames in ``<dir>/<split>-<key>.frames`` plus ``.json`` metadata
    (binning, file fingerprint, per-sample cell offsets and T, byte count, CRC-32).

    Frames are sparse (a recording fills about 2 % of its cells at 100 bins), so the file holds
    only the non-zero cells: a ``(flat index uint32, count uint16)`` record each, sample after
    sample; items are rebuilt dense on reading.
    The fingerprint covers every file's relative path, size, inode, and modification and status
    change times, so a file rewritten in place, even with the same size and its modification time
    restored (``cp -p``, ``rsync -a``), gives a new cache; building one removes the split's
    caches of the same binning over other files of the same root (or of a root no longer
    there), and keeps those of other roots sharing the folder."""

    VERSION = 2  # 1: dense uint16 frames

    def __init__(self, cache_dir: Path, split: str, ds: NMNIST):
        self.ds = ds
        rel = [str(f.relative_to(ds.root)) for f in ds.files]
        stats = [(st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
                 for st in map(os.stat, ds.files)]
        self.key = {"version": self.VERSION, "split": split, **ds.binning,
                    "files": hashlib.sha1(json.dumps([rel, stats]).encode()).hexdigest()}
        self.root = str(Path(ds.root).resolve())
        digest = hashlib.sha1(json.dumps(self.key, sort_keys=True).encode()).hexdigest()[:16]
        self.data = Path(cache_dir) / f"{split}-{digest}.frames"
        self.meta = self.data.with_suffix(".json")

    def load(self, progress: bool = True):
        """``(path, cell offsets, T per sample)`` of the checked cache, built or rebuilt when
        missing or corrupt."""
        try:
            return self._open()
        except FileNotFoundError:
            pass
        except (ValueError, KeyError, OSError) as err:
            warnings.warn(f"rebuilding corrupt N-MNIST cache {self.data}: {err}", stacklevel=3)
        self._build(progress)
        return self._open()

    def _open(self):
        meta = json.loads(self.meta.read_text())
        if not isinstance(meta, dict):
            raise ValueError(f"{self.meta}: expected a JSON object, got {type(meta).__name__}")
        if meta["key"] != self.key:
            raise ValueError("cache key does not match the binning parameters or file list")
        size = self.data.stat().st_size
        if size != meta["nbytes"]:
            raise ValueError(f"cache file has {size} bytes, expected {meta['nbytes']}")
        crc = 0
        with open(self.data, "rb") as f:
            while chunk := f.read(1 << 24):
                crc = zlib.crc32(chunk, crc)
        if crc != meta["crc32"]:
            raise ValueError("cache CRC-32 mismatch")
        return (self.data, np.asarray(meta["offsets"], dtype=np.int64),
                np.asarray(meta["lengths"], dtype=np.int64))

    def _build(self, progress: bool):
        self.data.parent.mkdir(parents=True, exist_ok=True)
        remove_orphans(self.data.parent)
        tmp = temporary(self.data)
        try:
            offsets, lengths, crc, nbytes = self._write(tmp, progress)
        except BaseException:
            with contextlib.suppress(OSError):  # (on a read-only folder, the error above)
                tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, self.data)
        meta = {"key": self.key, "root": self.root, "offsets": offsets, "lengths": lengths,
                "nbytes": nbytes, "crc32": crc}
        atomic_write_bytes(self.meta, json.dumps(meta).encode())
        self._remove_stale()

    def _remove_stale(self) -> None:
        """Delete this split's caches of the same binning over other files of the same root
        (older versions of the recordings, or a root since moved): each would hold a full copy
        of the frames. A cache of another root that still exists (a shared ``cache_dir``) is
        kept."""
        binning = {k: v for k, v in self.key.items() if k != "files"}
        for meta in self.data.parent.glob(f"{self.key['split']}-*.json"):
            if meta == self.meta:
                continue
            try:
                saved = json.loads(meta.read_text())
                key, root = saved["key"], saved.get("root")
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                continue
            if isinstance(root, str) and root != self.root and Path(root).is_dir():
                continue
            if {k: v for k, v in key.items() if k != "files"} == binning:
                meta.with_suffix(".frames").unlink(missing_ok=True)
                meta.unlink(missing_ok=True)

    def _write(self, tmp: Path, progress: bool):
        """Bin every recording into ``tmp``; returns ``(offsets, lengths, crc32, nbytes)``."""
        from tqdm import tqdm

        offsets, lengths, crc, nbytes = [0], [], 0, 0
        with open(tmp, "wb") as f:
            for path in tqdm(self.ds.files, desc=f"binning {self.data.name}", unit="file",
                             disable=None if progress else True):
                fr = load_frames(path, **self.ds.binning)
                if fr.size and fr.max() > np.iinfo(np.uint16).max:
                    raise ValueError(f"{path}: more than 65535 events in one pixel and bin")
                if fr.size > np.iinfo(np.uint32).max:
                    raise ValueError(f"{path}: {fr.shape[0]} time bins are too many to cache")
                flat = np.flatnonzero(fr)
                cells = np.empty(len(flat), _CELL)
                cells["index"], cells["count"] = flat, fr.ravel()[flat]
                chunk = cells.tobytes()
                f.write(chunk)
                crc, nbytes = zlib.crc32(chunk, crc), nbytes + len(chunk)
                offsets.append(offsets[-1] + len(flat))
                lengths.append(fr.shape[0])
        return offsets, lengths, crc, nbytes
