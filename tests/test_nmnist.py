"""N-MNIST codec, frames, denoise, dataset and cache (bistable.data.nmnist)."""

import errno
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from bistable.data import nmnist
from bistable.data.nmnist import EVENT_DTYPE

# ---- an independent codec: plain Python bit-twiddling, one event at a time ----

def ref_encode(events) -> bytes:
    out = bytearray()
    for x, y, t, p in zip(events["x"], events["y"], events["t"], events["p"]):
        x, y, t, p = int(x), int(y), int(t), int(p)
        out += bytes([x, y, (p << 7) | ((t >> 16) & 0x7F), (t >> 8) & 0xFF, t & 0xFF])
    return bytes(out)


def ref_decode(data: bytes) -> list[tuple[int, int, int, int]]:
    events = []
    for i in range(0, len(data), 5):
        b = data[i:i + 5]
        events.append((b[0], b[1], ((b[2] & 0x7F) << 16) + (b[3] << 8) + b[4], b[2] >> 7))
    return events


def random_events(rng, n, t_max=(1 << 23) - 1, sort=True):
    ev = np.empty(n, EVENT_DTYPE)
    ev["x"], ev["y"] = rng.integers(0, 34, n), rng.integers(0, 34, n)
    t = rng.integers(0, t_max + 1, n)
    ev["t"] = np.sort(t) if sort else t
    ev["p"] = rng.integers(0, 2, n)
    return ev


def as_tuples(ev):
    return [tuple(int(v) for v in e) for e in ev]


@pytest.mark.parametrize("n", [0, 1, 7, 1000])
def test_write_matches_independent_encoder_and_reads_back(tmp_path, n):
    ev = random_events(np.random.default_rng(n), n)
    path = tmp_path / "a.bin"
    nmnist.write_events(path, ev)
    data = path.read_bytes()
    assert data == ref_encode(ev)
    back = nmnist.read_events(path)
    assert back.dtype == EVENT_DTYPE and back.dtype.names == ("x", "y", "t", "p")
    np.testing.assert_array_equal(back, ev)


def test_read_matches_independent_decoder_and_rewrites_byte_exact(tmp_path):
    rng = np.random.default_rng(1)
    raw = rng.integers(0, 256, (513, 5), dtype=np.uint8)
    raw[:, 0] %= 34
    raw[:, 1] %= 34
    raw[0] = [33, 33, 0xFF, 0xFF, 0xFF]  # largest coordinate, ON, t = 2^23 - 1
    data = raw.tobytes()
    src, dst = tmp_path / "src.bin", tmp_path / "dst.bin"
    src.write_bytes(data)
    ev = nmnist.read_events(src)
    assert as_tuples(ev) == ref_decode(data)
    assert ev["t"][0] == (1 << 23) - 1 and ev["p"][0] == 1
    nmnist.write_events(dst, ev)
    assert dst.read_bytes() == data


def test_truncated_file_is_a_value_error_naming_the_file(tmp_path):
    path = tmp_path / "trunc.bin"
    path.write_bytes(ref_encode(random_events(np.random.default_rng(2), 4))[:-2])
    with pytest.raises(ValueError, match="trunc.bin.*truncated"):
        nmnist.read_events(path)


@pytest.mark.parametrize("byte", [0, 1])
def test_oversized_coordinate_is_a_value_error_naming_the_file(tmp_path, byte):
    raw = bytearray(ref_encode(random_events(np.random.default_rng(3), 5)))
    raw[10 + byte] = 34
    path = tmp_path / "big.bin"
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"big.bin: event 2 .*outside"):
        nmnist.read_events(path)
    with pytest.raises(ValueError, match="big.bin"):
        nmnist.load_frames(path, n_time_bins=3)


@pytest.mark.parametrize("field,value", [("x", 34), ("y", -1), ("t", 1 << 23), ("p", 2)])
def test_write_rejects_values_the_format_cannot_hold(tmp_path, field, value):
    ev = random_events(np.random.default_rng(4), 3)
    ev[field][1] = value
    with pytest.raises(ValueError, match=f"field {field}"):
        nmnist.write_events(tmp_path / "x.bin", ev)
    assert not (tmp_path / "x.bin").exists()


def test_write_rejects_non_structured_input(tmp_path):
    with pytest.raises(ValueError, match="fields x, y, t, p"):
        nmnist.write_events(tmp_path / "x.bin", np.zeros((3, 4), np.int64))


def test_write_into_a_missing_folder_names_the_file_and_leaves_nothing(tmp_path):
    target = tmp_path / "nowhere" / "a.bin"
    with pytest.raises(FileNotFoundError, match=r"No such file or directory: '.*nowhere/a\.bin'"):
        nmnist.write_events(target, np.zeros(1, nmnist.EVENT_DTYPE))
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro" / "a.bin").mkdir()  # a folder where the file goes: the rename fails
    with pytest.raises(OSError, match=r"ro/a\.bin'$"):
        nmnist.write_events(tmp_path / "ro" / "a.bin", np.zeros(1, nmnist.EVENT_DTYPE))
    assert [p.name for p in (tmp_path / "ro").iterdir()] == ["a.bin"]  # no temporary file left


# ---- frames ----

def ref_frames(ev, n_bins=None, window=None):
    t = [int(v) for v in ev["t"]]
    t0, t1 = min(t), max(t)
    n = n_bins if n_bins is not None else (t1 - t0) // window + 1
    out = np.zeros((n, 2, 34, 34), np.int64)
    for x, y, tt, p in as_tuples(ev):
        b = (tt - t0) * n_bins // (t1 - t0 + 1) if n_bins is not None else (tt - t0) // window
        out[b, p, y, x] += 1
    return out


@pytest.mark.parametrize("n_bins", [1, 3, 10])
def test_to_frames_by_bin_count_matches_loop(n_bins):
    ev = random_events(np.random.default_rng(5), 700, t_max=300_000, sort=False)
    fr = nmnist.to_frames(ev, n_time_bins=n_bins)
    assert fr.shape == (n_bins, 2, 34, 34) and fr.dtype == np.int32
    np.testing.assert_array_equal(fr, ref_frames(ev, n_bins=n_bins))
    assert fr.sum() == len(ev)  # every event lands in a bin


@pytest.mark.parametrize("window,t_max", [(1, 40), (7, 700), (999, 200_000), (50_000, 200_000)])
def test_to_frames_by_time_window_matches_loop(window, t_max):
    ev = random_events(np.random.default_rng(6), 300, t_max=t_max)
    fr = nmnist.to_frames(ev, time_window=window)
    np.testing.assert_array_equal(fr, ref_frames(ev, window=window))


def test_to_frames_edge_cases():
    empty = np.empty(0, EVENT_DTYPE)
    assert nmnist.to_frames(empty, n_time_bins=4).shape == (4, 2, 34, 34)
    assert nmnist.to_frames(empty, time_window=10).shape == (0, 2, 34, 34)
    with pytest.raises(ValueError, match="exactly one .* got n_time_bins=None, time_window=None"):
        nmnist.to_frames(empty)
    with pytest.raises(ValueError, match="exactly one .* got n_time_bins=2, time_window=5"):
        nmnist.to_frames(empty, n_time_bins=2, time_window=5)
    for bad in (0, 2.5):
        with pytest.raises(ValueError, match=r"n_time_bins must be an int >= 1"):
            nmnist.to_frames(empty, n_time_bins=bad)
    with pytest.raises(ValueError, match=r"events: expected a structured array .*x, y, t, p"):
        nmnist.to_frames(np.zeros((3, 4)), n_time_bins=2)


@pytest.mark.parametrize("convert", [
    lambda ev: nmnist.to_frames(ev, n_time_bins=10), lambda ev: nmnist.denoise(ev),
    nmnist.from_tonic, nmnist.encode_events])
def test_float_event_fields_are_refused_not_cut(convert):
    """Timestamps in seconds as floats would all land in bin 0 if cast to integers."""
    ev = np.zeros(300, [("x", "f8"), ("y", "f8"), ("t", "f8"), ("p", "f8")])
    ev["t"] = np.linspace(0, 0.3, 300)
    with pytest.raises(ValueError, match=r"expected integer or bool fields \(t in µs\), got x "
                                         r"of dtype float64"):
        convert(ev)
    tonic_like = np.zeros(3, [("x", "i2"), ("y", "i2"), ("t", "i8"), ("p", "?")])
    tonic_like["t"], tonic_like["p"] = [5, 9, 12], [True, False, True]
    assert convert(tonic_like) is not None          # integer and bool fields are welcome


@pytest.mark.parametrize("field, value", [("x", 34), ("y", -1), ("p", 2)])
def test_to_frames_refuses_events_off_the_sensor(field, value):
    """An out-of-range coordinate would land in another pixel, polarity or bin: refused."""
    ev = np.zeros(3, EVENT_DTYPE)
    ev["t"] = [0, 5, 9]
    ev[field][1] = value
    with pytest.raises(ValueError, match=rf"events: expected {field} in \[0, (34|2)\).*"
                                         rf"got values in \[{min(value, 0)}, {max(value, 0)}\]"):
        nmnist.to_frames(ev, n_time_bins=2)


@pytest.mark.parametrize("bad", [0, -1.5, float("nan"), float("inf"), "1000", True])
def test_to_frames_refuses_a_time_window_that_is_not_a_positive_number(bad):
    ev = random_events(np.random.default_rng(7), 20, t_max=5000)
    with pytest.raises(ValueError, match=r"time_window must be a finite number > 0 µs, got"):
        nmnist.to_frames(ev, time_window=bad)


# ---- denoise: Tonic's semantics, checked against a per-event loop ----

def ref_denoise(ev, filter_time):
    memory = np.full((34, 34), float(filter_time))  # Tonic: untouched pixels count as t = 0
    keep = []
    for i, (x, y, t, _) in enumerate(as_tuples(ev)):
        memory[x, y] = t + filter_time
        if ((x > 0 and memory[x - 1, y] > t) or (x < 33 and memory[x + 1, y] > t)
                or (y > 0 and memory[x, y - 1] > t) or (y < 33 and memory[x, y + 1] > t)):
            keep.append(i)
    return ev[keep]


@pytest.mark.parametrize("filter_time", [1, 500, 10_000])
def test_denoise_matches_reference_loop(filter_time):
    rng = np.random.default_rng(7)
    ev = random_events(rng, 2000, t_max=100_000)
    ev["x"], ev["y"] = rng.integers(10, 16, 2000), rng.integers(10, 16, 2000)  # dense patch
    ev = np.concatenate([ev, random_events(rng, 50, t_max=100_000)])  # plus isolated ones
    ev = ev[np.argsort(ev["t"], kind="stable")]
    got = nmnist.denoise(ev, filter_time)
    np.testing.assert_array_equal(got, ref_denoise(ev, filter_time))
    assert 0 < len(got) < len(ev)


def test_denoise_drops_isolated_event_and_keeps_neighbours():
    ev = np.array([(5, 5, 20_000, 1), (6, 5, 20_100, 0), (20, 20, 40_000, 1)], EVENT_DTYPE)
    got = nmnist.denoise(ev, 1000)
    assert as_tuples(got) == [(6, 5, 20_100, 0)]
    assert len(nmnist.denoise(ev[:0], 1000)) == 0


@pytest.mark.parametrize("filter_time", [0, -5, float("nan"), True, "10"])
def test_denoise_rejects_a_filter_time_that_would_drop_everything(filter_time):
    ev = np.array([(5, 5, 20_000, 1), (6, 5, 20_100, 0)], EVENT_DTYPE)
    with pytest.raises(ValueError, match=r"filter_time must be a finite number > 0 µs, got"):
        nmnist.denoise(ev, filter_time)


def test_denoise_rejects_events_off_the_sensor():
    """x = 34 once aliased onto the next row's pixel 0 instead of failing."""
    ev = np.array([(34, 5, 20_000, 1), (0, 6, 20_100, 0)], [("x", "i4"), ("y", "i4"),
                                                            ("t", "i8"), ("p", "i1")])
    with pytest.raises(ValueError, match=r"expected x in \[0, 34\).*got values in \[0, 34\]"):
        nmnist.denoise(ev, 1000)


def test_pad_collate_wants_a_batch():
    with pytest.raises(ValueError, match="batch: expected at least one"):
        nmnist.pad_collate([])


def test_denoise_matches_tonic():
    tonic = pytest.importorskip("tonic")
    rng = np.random.default_rng(8)
    ev = random_events(rng, 3000, t_max=300_000)
    ev["x"][0], ev["y"][0] = 33, 33  # Tonic sizes its map from the largest coordinates
    ev = ev[np.argsort(ev["t"], kind="stable")]
    want = tonic.transforms.Denoise(filter_time=3000)(ev)
    np.testing.assert_array_equal(nmnist.denoise(ev, 3000), want)


# ---- Tonic interop ----

def test_tonic_reads_our_files_and_we_read_tonics(tmp_path):
    tonic = pytest.importorskip("tonic")
    from tonic.io import read_mnist_file

    ev = random_events(np.random.default_rng(9), 400, t_max=300_000)
    nmnist.write_events(tmp_path / "a.bin", ev)
    theirs = read_mnist_file(str(tmp_path / "a.bin"), dtype=tonic.datasets.NMNIST.dtype)
    assert theirs.dtype == nmnist.to_tonic(ev).dtype
    np.testing.assert_array_equal(nmnist.from_tonic(theirs), ev)
    np.testing.assert_array_equal(nmnist.to_tonic(ev), theirs)
    ev["t"] -= ev["t"][0]
    ev["t"][-1] = 300_001  # a span that is not a multiple of the window
    frames = tonic.transforms.ToFrame(sensor_size=tonic.datasets.NMNIST.sensor_size,
                                      time_window=10_000, include_incomplete=True)(ev)
    np.testing.assert_array_equal(nmnist.to_frames(ev, time_window=10_000), frames)


def test_from_tonic_accepts_other_integer_dtypes():
    ev = np.array([(1, 2, 3, True)], dtype=[("x", "u1"), ("y", "u1"), ("t", "<u4"), ("p", "?")])
    out = nmnist.from_tonic(ev)
    assert out.dtype == EVENT_DTYPE and as_tuples(out) == [(1, 2, 3, 1)]


# ---- dataset and cache ----

@pytest.fixture
def root(tmp_path):
    rng = np.random.default_rng(10)
    for split, n in (("Train", 3), ("Test", 2)):
        for digit in (0, 3, 9):
            d = tmp_path / split / str(digit)
            d.mkdir(parents=True)
            for k in range(n):
                nmnist.write_events(d / f"{k:05d}.bin", random_events(rng, 50 + k, 90_000))
    (tmp_path / "Train" / "3" / "notes.txt").write_text("not a sample")
    return tmp_path


def test_dataset_lists_files_and_bins_like_to_frames(root):
    ds = nmnist.NMNIST(root, "train", n_time_bins=4, cache=False)
    assert len(ds) == 9 and list(ds.labels) == [0, 0, 0, 3, 3, 3, 9, 9, 9]
    assert not ds.simulated
    x, y = ds[4]
    assert x.dtype == torch.float32 and x.shape == (4, 2, 34, 34) and y == 3
    want = nmnist.to_frames(nmnist.read_events(ds.files[4]), n_time_bins=4)
    np.testing.assert_array_equal(x.numpy(), want)
    ev, _ = nmnist.NMNIST(root, "test", cache=False)[0]
    assert ev.dtype == EVENT_DTYPE


def test_dataset_denoise_option(root):
    ds = nmnist.NMNIST(root, "test", n_time_bins=2, filter_time=2000, cache=False)
    ev = nmnist.read_events(ds.files[1])
    want = nmnist.to_frames(nmnist.denoise(ev, 2000), n_time_bins=2)
    np.testing.assert_array_equal(ds[1][0].numpy(), want)


def test_dataset_errors(tmp_path, root):
    with pytest.raises(FileNotFoundError, match="Train"):
        nmnist.NMNIST(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="split"):
        nmnist.NMNIST(root, "valid")
    with pytest.raises(ValueError, match="exactly one"):
        nmnist.NMNIST(root, n_time_bins=3, time_window=100)
    with pytest.raises(ValueError, match="filter_time must be"):
        nmnist.NMNIST(root, n_time_bins=3, filter_time=float("nan"))


def test_numpy_scalars_bin_and_cache_as_python_numbers(root):
    """``np.int64`` passes the checks as any int; the cache key (JSON) once failed on it."""
    ds = nmnist.NMNIST(root, "train", n_time_bins=np.int64(3), filter_time=np.float64(2000),
                       progress=False)
    want = nmnist.NMNIST(root, "train", n_time_bins=3, filter_time=2000.0, cache=False)
    torch.testing.assert_close(ds[2][0], want[2][0], rtol=0, atol=0)


def test_cache_is_built_reused_keyed_and_rebuilt_when_corrupt(root, monkeypatch):
    fresh = list(nmnist.NMNIST(root, "train", n_time_bins=3, cache=False))
    ds = nmnist.NMNIST(root, "train", n_time_bins=3, progress=False)
    frames_files = sorted((root / ".cache").glob("*.frames"))
    assert len(frames_files) == 1
    for i in range(len(ds)):
        torch.testing.assert_close(ds[i][0], fresh[i][0], rtol=0, atol=0)

    def no_binning(*a, **k):
        raise AssertionError("binned again although the cache is valid")

    monkeypatch.setattr(nmnist, "load_frames", no_binning)
    again = nmnist.NMNIST(root, "train", n_time_bins=3)
    torch.testing.assert_close(again[5][0], fresh[5][0], rtol=0, atol=0)
    monkeypatch.undo()

    nmnist.NMNIST(root, "train", n_time_bins=5, progress=False)  # other parameters, other file
    assert len(list((root / ".cache").glob("*.frames"))) == 2

    data = bytearray(frames_files[0].read_bytes())
    data[100] ^= 0xFF
    frames_files[0].write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="CRC"):
        rebuilt = nmnist.NMNIST(root, "train", n_time_bins=3, progress=False)
    torch.testing.assert_close(rebuilt[0][0], fresh[0][0], rtol=0, atol=0)

    frames_files[0].write_bytes(frames_files[0].read_bytes()[:-7])
    meta = frames_files[0].with_suffix(".json")
    with pytest.warns(UserWarning, match="bytes"):
        nmnist.NMNIST(root, "train", n_time_bins=3, progress=False)
    meta.write_text("{not json")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ok = nmnist.NMNIST(root, "train", n_time_bins=3, progress=False)
    assert any("rebuilding" in str(w.message) for w in caught)
    torch.testing.assert_close(ok[8][0], fresh[8][0], rtol=0, atol=0)


def test_cache_tracks_changed_files(root):
    nmnist.NMNIST(root, "test", n_time_bins=2, progress=False)
    nmnist.write_events(root / "Test" / "0" / "00000.bin",
                        random_events(np.random.default_rng(11), 7, 1000))
    ds = nmnist.NMNIST(root, "test", n_time_bins=2, progress=False)
    assert ds[0][0].sum() == 7


def test_time_window_items_pad_collate(root):
    ds = nmnist.NMNIST(root, "train", time_window=20_000, progress=False)
    batch = [ds[i] for i in range(4)]
    frames, labels, lengths = nmnist.pad_collate(batch)
    assert frames.shape == (4, int(lengths.max()), 2, 34, 34)
    assert labels.tolist() == [0, 0, 0, 3]
    for k, (f, _) in enumerate(batch):
        assert lengths[k] == f.shape[0]
        torch.testing.assert_close(frames[k, : f.shape[0]], f)
        assert frames[k, f.shape[0]:].abs().sum() == 0


def test_cached_dataset_pickles_without_its_memory_map(root):
    import pickle

    ds = nmnist.NMNIST(root, "test", n_time_bins=2, progress=False)
    first = ds[0][0]
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._memmap is None
    torch.testing.assert_close(clone[0][0], first, rtol=0, atol=0)


def test_empty_recordings(root):
    nmnist.write_events(root / "Test" / "9" / "00000.bin", np.empty(0, EVENT_DTYPE))
    ds = nmnist.NMNIST(root, "test", time_window=1000, progress=False)
    assert ds[4][0].shape == (0, 2, 34, 34) and ds[4][1] == 9
    assert ds[0][0].shape[0] > 0
    assert nmnist.NMNIST(root, "test", n_time_bins=3, progress=False)[4][0].abs().sum() == 0


def test_cache_follows_a_file_rewritten_with_the_same_size(root):
    ds = nmnist.NMNIST(root, "train", n_time_bins=3, progress=False)
    old = ds[0][0]      # read (memory-mapped) before its cache is replaced and removed
    path = ds.files[0]
    ev = nmnist.read_events(path)
    ev["p"] = 1 - ev["p"]  # same events, polarities swapped: same size, other frames
    nmnist.write_events(path, ev)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # coarse clocks
    again = nmnist.NMNIST(root, "train", n_time_bins=3, progress=False)
    want = nmnist.to_frames(ev, n_time_bins=3)
    np.testing.assert_array_equal(again[0][0].numpy(), want)
    assert not np.array_equal(old.numpy(), want)


def test_cache_follows_a_file_rewritten_with_its_modification_time_restored(root):
    """cp -p / rsync -a put the old mtime back on new content of the same size: the old cache
    was served. The status change time, which utime cannot set, gives it away."""
    ds = nmnist.NMNIST(root, "train", n_time_bins=3, progress=False)
    path = ds.files[0]
    st = os.stat(path)
    ev = nmnist.read_events(path)
    ev["p"] = 1 - ev["p"]
    nmnist.write_events(path, ev)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))        # as cp -p leaves it
    again = nmnist.NMNIST(root, "train", n_time_bins=3, progress=False)
    np.testing.assert_array_equal(again[0][0].numpy(), nmnist.to_frames(ev, n_time_bins=3))
    caches = sorted(p.name for p in (root / ".cache").iterdir())
    assert len(caches) == 2 and {p.rsplit(".", 1)[1] for p in caches} == {"frames", "json"}


def test_a_new_cache_replaces_the_old_one_of_the_same_binning_only(root):
    nmnist.NMNIST(root, "train", n_time_bins=3, progress=False)
    nmnist.NMNIST(root, "train", n_time_bins=5, progress=False)
    nmnist.NMNIST(root, "test", n_time_bins=3, progress=False)
    nmnist.write_events(root / "Train" / "0" / "00000.bin",
                        random_events(np.random.default_rng(12), 9, 1000))
    nmnist.NMNIST(root, "train", n_time_bins=3, progress=False)   # the files changed
    assert len(list((root / ".cache").glob("*.frames"))) == 3      # not 4: the stale one went


def test_a_failed_cache_build_leaves_no_temporary_file(root, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("a bad recording")

    monkeypatch.setattr(nmnist, "load_frames", broken)
    with pytest.raises(ValueError, match="a bad recording"):
        nmnist.NMNIST(root, "train", n_time_bins=3, progress=False)
    assert list((root / ".cache").iterdir()) == []


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS])
def test_an_unwritable_cache_reads_the_recordings_directly(root, monkeypatch, code):
    """Permission denied, or a read-only file system (a shared copy mounted so): its temporary
    file cannot even be removed, and that error must not replace the first."""
    def refuse(self, tmp, progress):
        raise OSError(code, os.strerror(code), str(tmp))

    def unlink(self, missing_ok=False):
        raise OSError(code, os.strerror(code), str(self))

    monkeypatch.setattr(nmnist.FrameCache, "_write", refuse)
    monkeypatch.setattr(Path, "unlink", unlink)
    with pytest.warns(UserWarning, match=r"frame cache in \S+ cannot be written .*without it"):
        ds = nmnist.NMNIST(root, "train", n_time_bins=3, progress=False)
    assert ds._cache is None
    np.testing.assert_array_equal(ds[1][0].numpy(),
                                  nmnist.to_frames(nmnist.read_events(ds.files[1]), n_time_bins=3))


def test_two_roots_share_a_cache_folder_without_removing_each_other_s_cache(root, tmp_path):
    other = tmp_path / "other"
    for split in ("Train", "Test"):
        (other / split / "5").mkdir(parents=True)
        nmnist.write_events(other / split / "5" / "00000.bin",
                            random_events(np.random.default_rng(3), 30, 50_000))
    shared = tmp_path / "cache"
    a = nmnist.NMNIST(root, "train", n_time_bins=3, cache_dir=shared, progress=False)
    b = nmnist.NMNIST(other, "train", n_time_bins=3, cache_dir=shared, progress=False)
    assert len(list(shared.glob("*.frames"))) == 2
    np.testing.assert_array_equal(a[0][0].numpy(), nmnist.to_frames(
        nmnist.read_events(a.files[0]), n_time_bins=3))
    assert b[0][1] == 5


def test_a_cache_index_or_marker_of_the_wrong_json_kind(root):
    nmnist.NMNIST(root, "train", n_time_bins=3, progress=False)
    (index,) = (root / ".cache").glob("train-*.json")
    index.write_text("[]")
    with pytest.warns(UserWarning, match="rebuilding corrupt N-MNIST cache .*JSON object"):
        ds = nmnist.NMNIST(root, "train", n_time_bins=3, progress=False)
    assert ds._cache is not None and ds[0][1] == 0
    (root / "SIMULATED.json").write_text("[]")
    with pytest.raises(ValueError, match=r"SIMULATED.json: expected a JSON object .*got list"):
        nmnist.NMNIST(root, "train", n_time_bins=3, progress=False)


def test_negative_indices_cached_and_uncached_agree(root):
    cached = nmnist.NMNIST(root, "train", n_time_bins=3, progress=False)
    plain = nmnist.NMNIST(root, "train", n_time_bins=3, cache=False)
    n = len(plain)
    for i in (-1, -4, -n):
        assert cached[i][1] == plain[i][1] == plain[n + i][1]
        torch.testing.assert_close(cached[i][0], plain[n + i][0], rtol=0, atol=0)
        torch.testing.assert_close(plain[i][0], plain[n + i][0], rtol=0, atol=0)
    for ds in (cached, plain):
        for i in (n, -n - 1):
            with pytest.raises(IndexError):
                ds[i]


def test_interrupted_simulation_is_refused_and_a_complete_one_labelled(root):
    marker = root / "SIMULATED.json"
    marker.write_text('{not json')
    with pytest.raises(ValueError, match=r"SIMULATED.json: not valid JSON .*restore it or "
                                         r"simulate them again"):
        nmnist.NMNIST(root, "train", n_time_bins=3, progress=False)
    marker.write_text('{"simulated": true, "complete": false}')
    with pytest.raises(ValueError, match=r"expected a complete simulation.*interrupted.*"
                                         r"run the same `bistable data simulate-nmnist --out "
                                         r".* again to finish it"):
        nmnist.NMNIST(root, "train", n_time_bins=3, progress=False)
    with pytest.raises(ValueError, match="interrupted"):
        nmnist.list_samples(root, "test")
    marker.write_text('{"simulated": true, "complete": true}')
    assert nmnist.NMNIST(root, "train", n_time_bins=3, progress=False).simulated


def test_denoise_does_not_wrap_rows():
    """(33, 4) and (0, 5) are not neighbours, though adjacent in a flattened row-major index."""
    ev = np.array([(33, 4, 1000, 1), (0, 5, 1100, 1)], EVENT_DTYPE)
    assert len(nmnist.denoise(ev, 1000)) == 0
