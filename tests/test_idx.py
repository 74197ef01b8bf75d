"""IDX reader, MNIST loading with md5 verification, and the torch Dataset (bistable.data.idx)."""

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from bistable.data import fetch, idx

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
TYPE_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D,
              np.float64: 0x0E}


def idx_bytes(arr: np.ndarray) -> bytes:
    """An independent IDX writer: magic, big-endian dims, big-endian data."""
    head = bytes([0, 0, TYPE_CODES[arr.dtype.type], arr.ndim])
    head += struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


@pytest.mark.parametrize("dtype,shape", [(np.uint8, (3, 5, 7)), (np.int8, (1,)),
                                         (np.int16, (4, 2)), (np.int32, (6,)),
                                         (np.float32, (2, 3)), (np.float64, (2, 1, 3))])
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path, dtype, shape, gz):
    rng = np.random.default_rng(0)
    arr = (rng.standard_normal(shape) * 100).astype(dtype)
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    data = idx_bytes(arr)
    path.write_bytes(gzip.compress(data) if gz else data)
    got = idx.read_idx(path)
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative and got.flags.writeable
    np.testing.assert_array_equal(got, arr)


def test_gzip_detected_by_content_not_name(tmp_path):
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    (tmp_path / "plain.gz").write_bytes(idx_bytes(arr))
    (tmp_path / "zipped").write_bytes(gzip.compress(idx_bytes(arr)))
    np.testing.assert_array_equal(idx.read_idx(tmp_path / "plain.gz"), arr)
    np.testing.assert_array_equal(idx.read_idx(tmp_path / "zipped"), arr)


@pytest.mark.parametrize("mutate,match", [
    (lambda d: b"\x01" + d[1:], "not an IDX file"),
    (lambda d: d[:2] + b"\x07" + d[3:], "not an IDX file"),
    (lambda d: d[:3] + b"\x00" + d[4:], "not an IDX file"),
    (lambda d: d[:2], "not an IDX file"),
    (lambda d: d[:9], "truncated IDX header"),
    (lambda d: d[:-1], "data bytes"),
    (lambda d: d + b"\x00", "data bytes"),
    (lambda d: gzip.compress(d)[:-10], "corrupt gzip"),
])
def test_malformed_files_are_value_errors_naming_the_file(tmp_path, mutate, match):
    path = tmp_path / "broken-file"
    path.write_bytes(mutate(idx_bytes(np.zeros((2, 3, 4), np.uint8))))
    with pytest.raises(ValueError, match=f"broken-file.*{match}|{match}.*broken-file"):
        idx.read_idx(path)


def make_fake_mnist(folder: Path, n=5, gz=True):
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    for stem, arr in zip(idx.SPLIT_FILES["train"], (images, labels)):
        data = idx_bytes(arr)
        (folder / (stem + ".gz" if gz else stem)).write_bytes(gzip.compress(data) if gz else data)
    return images, labels


def test_load_verifies_md5_of_raw_content(tmp_path):
    make_fake_mnist(tmp_path / "mnist")
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz: md5 .* published"):
        idx.load("mnist", "train", tmp_path / "mnist")


def test_load_names_the_dataset_whose_file_a_wrong_folder_holds(tmp_path, monkeypatch):
    images, _ = make_fake_mnist(tmp_path / "mine")
    mine = hashlib.md5(idx_bytes(images)).hexdigest()
    files = tuple(fetch.Remote(r.name, mine if r.name.startswith("train-images") else r.md5)
                  for r in fetch.DATASETS["mnist"].files)
    monkeypatch.setitem(fetch.DATASETS, "mnist", fetch.Spec(files, ()))  # the files are MNIST's
    published = idx.PUBLISHED_MD5["fashion-mnist"]["train-images-idx3-ubyte"]
    with pytest.raises(ValueError, match=rf"md5 {mine} of the raw content does not match the "
                       rf"published {published}: this is MNIST's train-images-idx3-ubyte, not "
                       rf"Fashion-MNIST's$"):
        idx.load("fashion-mnist", "train", tmp_path / "mine")


def test_the_shared_mnist_copy_is_not_taken_for_fashion_mnist():
    if not (SHARED / "mnist").is_dir():
        pytest.skip("no shared data here")
    with pytest.raises(ValueError, match=r"md5 2646ac.* does not match the published 8181f5.*: "
                                         r"this is MNIST's t10k-images-idx3-ubyte, not "
                                         r"Fashion-MNIST's$"):
        idx.load("fashion-mnist", "test", SHARED / "mnist")


@pytest.mark.parametrize("gz", [False, True])
def test_load_without_verify_and_root_resolution(tmp_path, gz):
    images, labels = make_fake_mnist(tmp_path / "mnist", gz=gz)
    for where in (tmp_path / "mnist", tmp_path):  # the folder itself, or a root holding mnist/
        x, y = idx.load("mnist", "train", where, verify=False)
        assert x.dtype == np.uint8 and y.dtype == np.int64
        np.testing.assert_array_equal(x, images)
        np.testing.assert_array_equal(y, labels)


def test_default_dir_from_environment(tmp_path, monkeypatch):
    images, _ = make_fake_mnist(tmp_path / "fashion-mnist")
    monkeypatch.setenv("BISTABLE_DATA_DIR", str(tmp_path))
    x, _ = idx.load("fashion-mnist", "train", verify=False)
    np.testing.assert_array_equal(x, images)
    monkeypatch.setenv("HOME", str(tmp_path.parent))  # a quoted "~" reaches the variable as is
    monkeypatch.setenv("BISTABLE_DATA_DIR", f"~/{tmp_path.name}")
    x, _ = idx.load("fashion-mnist", "train", verify=False)
    np.testing.assert_array_equal(x, images)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="bistable data fetch mnist"):
        idx.load("mnist", "test", tmp_path)
    with pytest.raises(ValueError, match="name"):
        idx.load("cifar", "train", tmp_path)
    with pytest.raises(ValueError, match="split"):
        idx.load("mnist", "valid", tmp_path)
    folder = tmp_path / "mnist"
    folder.mkdir()
    (folder / "train-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((3, 28, 28), np.uint8)))
    (folder / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(4, np.uint8)))
    with pytest.raises(ValueError, match="pair up"):
        idx.load("mnist", "train", folder, verify=False)


def test_dataset_items_flatten_standardize(tmp_path):
    images, labels = make_fake_mnist(tmp_path / "mnist")
    ds = idx.IdxDataset("mnist", "train", tmp_path, verify=False)
    x, y = ds[2]
    assert len(ds) == 5 and x.shape == (28, 28) and x.dtype == torch.float32
    assert y == labels[2]
    torch.testing.assert_close(x, torch.from_numpy(images[2] / 255.0).float())
    flat = idx.IdxDataset("mnist", "train", tmp_path, flatten=True, verify=False)
    assert flat[2][0].shape == (784, 1)
    torch.testing.assert_close(flat[2][0][:, 0], x.reshape(-1))
    std = idx.IdxDataset("mnist", "train", tmp_path, standardize=True, flatten=True, verify=False)
    mean, sd = idx.MEAN_STD["mnist"]
    torch.testing.assert_close(std[2][0], (flat[2][0] - mean) / sd)
    X, Y = flat.tensors()
    assert X.shape == (5, 784, 1) and Y.dtype == torch.int64
    torch.testing.assert_close(X[2], flat[2][0])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_shared_copy_loads_verified(name):
    if not (SHARED / name).is_dir():
        pytest.skip("no shared data here")
    for split, n in (("train", 60000), ("test", 10000)):
        x, y = idx.load(name, split, SHARED)
        assert x.shape == (n, 28, 28) and y.shape == (n,)
        assert np.bincount(y).min() > n // 20
    md5sums = dict(line.split()[::-1] for line in (SHARED / name / "MD5SUMS.raw").read_text()
                   .splitlines() if line.strip())
    assert md5sums == idx.PUBLISHED_MD5[name]
    raw = gzip.decompress((SHARED / name / "t10k-labels-idx1-ubyte.gz").read_bytes())
    assert hashlib.md5(raw).hexdigest() == md5sums["t10k-labels-idx1-ubyte"]
