"""IDX files (MNIST, Fashion-MNIST): a checked reader, md5-verified loading, a torch Dataset.

IDX layout (LeCun et al.): magic ``00 00 <type> <ndim>``, then ``ndim`` big-endian uint32 sizes,
then the data, big-endian, C order. Files may be gzipped (detected by content, not by name).
"""

from __future__ import annotations

import gzip
import hashlib
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from .fetch import FASHION_MNIST_MD5, MNIST_MD5, dataset_dir, wrong_file

IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
SPLIT_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
PUBLISHED_MD5 = {"mnist": MNIST_MD5, "fashion-mnist": FASHION_MNIST_MD5}
# Mean and standard deviation of the training images scaled to [0, 1] (for ``standardize``).
MEAN_STD = {"mnist": (0.1307, 0.3081), "fashion-mnist": (0.2860, 0.3530)}


def read_bytes(path) -> bytes:
    """The content of ``path``, gunzipped when it starts with the gzip magic ``1f 8b``."""
    data = Path(path).read_bytes()
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(f"{path}: corrupt gzip data ({err})") from err


def parse_idx(data: bytes, name="<bytes>") -> np.ndarray:
    """Decode IDX bytes into a native-endian array; ``ValueError`` naming ``name`` if malformed."""
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in IDX_TYPES or data[3] == 0:
        raise ValueError(f"{name}: not an IDX file (magic {data[:4].hex() or 'missing'}; expected "
                         f"00 00, a type in {sorted(hex(k) for k in IDX_TYPES)}, ndim >= 1)")
    ndim, dtype = data[3], np.dtype(IDX_TYPES[data[2]])
    start = 4 + 4 * ndim
    if len(data) < start:
        raise ValueError(f"{name}: truncated IDX header ({len(data)} bytes, need {start})")
    dims = struct.unpack(f">{ndim}I", data[4:start])
    need = math.prod(dims) * dtype.itemsize
    if len(data) - start != need:
        raise ValueError(f"{name}: {len(data) - start} data bytes, but dims {dims} of "
                         f"{dtype.name} need {need}")
    return np.frombuffer(data, dtype, offset=start).astype(dtype.newbyteorder("=")).reshape(dims)


def read_idx(path) -> np.ndarray:
    """Read an IDX file (raw or gzip); magic, dims and size are checked (``ValueError``)."""
    return parse_idx(read_bytes(path), path)


def _find(folder: Path, stem: str, name: str) -> Path:
    for cand in (folder / stem, folder / (stem + ".gz")):
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"{name}: no {stem} or {stem}.gz in {folder}; run "
                            f"`bistable data fetch {name}` (or `--from DIR` with local copies)")


def load(name: str = "mnist", split: str = "train", data_dir=None,
         verify: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 ``(N, 28, 28)`` and labels int64 ``(N,)`` of MNIST or Fashion-MNIST.

    ``data_dir``: the folder with the IDX files (raw or ``.gz``) or a root holding ``<name>/``;
    default ``$BISTABLE_DATA_DIR/<name>`` else ``~/.cache/bistable/data/<name>``.
    ``verify`` checks the md5 of the raw (gunzipped) content against the published sums.
    """
    if name not in PUBLISHED_MD5:
        raise ValueError(f"name: expected one of {sorted(PUBLISHED_MD5)}, got {name!r}")
    if split not in SPLIT_FILES:
        raise ValueError(f"split: expected one of {sorted(SPLIT_FILES)}, got {split!r}")
    folder = dataset_dir(name, data_dir)
    arrays = []
    for stem in SPLIT_FILES[split]:
        path = _find(folder, stem, name)
        data, expected = read_bytes(path), PUBLISHED_MD5[name][stem]
        if verify and (got := hashlib.md5(data).hexdigest()) != expected:
            raise ValueError(f"{path}: md5 {got} of the raw content does not match the "
                             f"published {expected}" + wrong_file(got, expected))
        arrays.append(parse_idx(data, path))
    images, labels = arrays
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"{folder}: images {images.shape} and labels {labels.shape} do not "
                         f"pair up as (N, H, W) and (N,)")
    return images, labels.astype(np.int64)


class IdxDataset(torch.utils.data.Dataset):
    """MNIST / Fashion-MNIST as float tensors.

    Items ``(x, label)``: ``x`` float32 ``(28, 28)`` scaled to [0, 1], or ``(784, 1)`` with
    ``flatten=True`` (one pixel per time step, row-major: the sMNIST sequence);
    ``standardize=True`` maps pixels to ``(x - mean) / std`` of the training set (``MEAN_STD``).
    ``tensors()`` returns the whole split at once for fast batching.
    """

    def __init__(self, name: str = "mnist", split: str = "train", data_dir=None, *,
                 flatten: bool = False, standardize: bool = False, verify: bool = True):
        images, labels = load(name, split, data_dir, verify)
        self.name, self.flatten, self.standardize = name, flatten, standardize
        self.images = torch.from_numpy(images)
        self.labels = torch.from_numpy(labels)

    def __len__(self) -> int:
        return self.labels.shape[0]

    def _convert(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255.0
        if self.standardize:
            mean, std = MEAN_STD[self.name]
            x = (x - mean) / std
        return x.reshape(*x.shape[:-2], -1, 1) if self.flatten else x

    def __getitem__(self, i):
        return self._convert(self.images[i]), int(self.labels[i])

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All images ``(N, 28, 28)`` or ``(N, 784, 1)`` float32 and labels ``(N,)`` int64."""
        return self._convert(self.images), self.labels
