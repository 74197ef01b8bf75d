"""Getting the datasets: published mirrors or local copies, md5-verified, atomic, resumable.

``fetch(name, data_dir=None, from_dir=None)`` for ``mnist``, ``fashion-mnist`` and ``nmnist``.
Checksums are the published md5 sums of the file contents, taken after gunzip for gzip data
(so MNIST is checked against the md5 of the raw IDX files, whatever form it was stored in).
Downloads go to ``<file>.part`` (resumed with an HTTP Range request when it exists), are verified,
then moved into place with ``os.replace``; nothing half-written ever carries the final name.

Where data lives: ``data_dir`` if given, else ``$BISTABLE_DATA_DIR/<name>``, else
``~/.cache/bistable/data/<name>``. A ``data_dir`` that holds a ``<name>`` folder (a root such as
``shared/data``) is resolved to that folder. ``fetch`` writes into a ``<name>`` folder of a
``data_dir`` that is neither named ``<name>`` nor holds a verified file of the dataset already,
so that MNIST and Fashion-MNIST (the same file names) fetched into one root stay apart, and a
folder of one is never taken for (and emptied as a corrupt copy of) the other.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import http.client
import json
import os
import shutil
import tempfile
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from urllib.error import HTTPError
from urllib.request import Request, urlopen

from .atomic import atomic_copy, remove_orphans


@dataclass(frozen=True)
class Remote:
    """One published file: local ``name``, md5 of its content (gunzipped for ``.gz``), and its
    ``path`` under a mirror's base URL (``name`` when None)."""

    name: str
    md5: str
    path: str | None = None


@dataclass(frozen=True)
class Spec:
    """A dataset: its files, mirrors, and whether its files are zip archives to extract."""

    files: tuple[Remote, ...]
    mirrors: tuple[str, ...]
    extract: bool = False
    folders: tuple[str, ...] = ()  # what extraction must produce (for N-MNIST: Train, Test)


def _idx_files(md5s: dict[str, str]) -> tuple[Remote, ...]:
    return tuple(Remote(stem + ".gz", md5) for stem, md5 in md5s.items())


# Published md5 sums of the raw IDX files (identical to shared/data/*/MD5SUMS.raw).
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
FASHION_MNIST_MD5 = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}
DATASETS: dict[str, Spec] = {
    "mnist": Spec(_idx_files(MNIST_MD5), ("https://ossci-datasets.s3.amazonaws.com/mnist/",
                                          "https://storage.googleapis.com/cvdf-datasets/mnist/")),
    "fashion-mnist": Spec(_idx_files(FASHION_MNIST_MD5),
                          ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)),
    # N-MNIST (Orchard et al. 2015), the Mendeley Data record 468j46mzdv (as used by Tonic).
    "nmnist": Spec((Remote("train.zip", "20959b8e626244a1b502305a9e6e2031",
                           "39c25547-014b-4137-a934-9d29fa53c7a0/file_downloaded"),
                    Remote("test.zip", "69ca8762b2fe404d9b9bad1103e97832",
                           "05a4d654-7e03-4c15-bdfa-9bb2bcbea494/file_downloaded")),
                   ("https://data.mendeley.com/public-files/datasets/468j46mzdv/files/",),
                   extract=True, folders=("Train", "Test")),
}


_TITLES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "nmnist": "N-MNIST"}


def _whose(md5: str) -> tuple[str, str] | None:
    """The dataset title and file (raw name) whose published md5 is ``md5``, if any."""
    for name, spec in DATASETS.items():
        for remote in spec.files:
            if remote.md5 == md5:
                return _TITLES.get(name, name), remote.name.removesuffix(".gz")
    return None


def wrong_file(got: str, expected: str) -> str:
    """For an md5 mismatch message: ``": this is MNIST's train-images-idx3-ubyte, not
    Fashion-MNIST's"`` when ``got`` is another known file's md5 (a folder of the wrong dataset),
    else ``""``."""
    have, want = _whose(got), _whose(expected)
    if have is None or want is None:
        return ""
    return f": this is {have[0]}'s {have[1]}, not {want[0]}'s" + (
        "" if have[1] == want[1] else f" {want[1]}")


def dataset_dir(name: str, data_dir=None) -> Path:
    """Where dataset ``name`` lives (see the module docstring)."""
    if data_dir is None:
        root = os.environ.get("BISTABLE_DATA_DIR")  # "~" expanded as in a --data-dir
        return (Path(root).expanduser() if root else Path.home() / ".cache" / "bistable"
                / "data") / name
    path = Path(data_dir).expanduser()
    return path / name if path.name != name and (path / name).is_dir() else path


def _fetch_dir(name: str, spec: Spec, data_dir) -> Path:
    """Where ``fetch`` writes dataset ``name`` (see the module docstring)."""
    dest = dataset_dir(name, data_dir)
    if data_dir is None or dest.name == name:
        return dest
    # by content, not by name: a folder of MNIST files does not hold Fashion-MNIST (same names)
    holds = (any((c := _local_copy(dest, r)) is not None and _verified(c, r.md5)
                 for r in spec.files)
             or any((dest / f).is_dir() for f in spec.folders))
    return dest if holds else dest / name


def md5_of(path, *, gunzip: bool | None = None) -> str:
    """md5 of a file's content; of the gunzipped content for gzip data (by its magic ``1f 8b``,
    whatever the name, as the loaders read it; or ``gunzip=True``)."""
    path = Path(path)
    if gunzip is None:
        with open(path, "rb") as f:
            gunzip = f.read(2) == b"\x1f\x8b"
    h = hashlib.md5()
    with (gzip.open if gunzip else open)(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _forms(folder: Path, remote: Remote) -> list[Path]:
    """The files for ``remote`` present in ``folder``: the raw form of a ``.gz`` first (the
    order in which the loaders look), then its own name."""
    names = dict.fromkeys((remote.name.removesuffix(".gz"), remote.name))
    return [folder / n for n in names if (folder / n).is_file()]


def _local_copy(folder: Path, remote: Remote) -> Path | None:
    """The file the loaders would read for ``remote`` in ``folder``, if any."""
    return next(iter(_forms(folder, remote)), None)


def _verified(path: Path, md5: str) -> bool:
    try:
        return md5_of(path) == md5
    except (OSError, EOFError, zlib.error):  # corrupt gzip data
        return False


def download(url: str, dest, md5: str, *, progress: bool = True, timeout: float = 30) -> Path:
    """Download ``url`` to ``dest`` via ``dest.part`` (resumed if present), check md5, rename.

    Raises ``ValueError`` on an md5 mismatch (the partial file is removed) and ``OSError``
    (``URLError``) when the server cannot be reached or the transfer ends early (the partial file
    is kept, for the next call to resume).
    """
    from tqdm import tqdm

    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={start}-"} if start else {}
    try:
        with urlopen(Request(url, headers=headers), timeout=timeout) as r:
            if start and r.status != 206:  # the server ignored the Range header: start over
                start = 0
            total = r.headers.get("Content-Length")
            received = 0
            with open(part, "ab" if start else "wb") as f, tqdm(
                    total=int(total) + start if total else None, initial=start, unit="B",
                    unit_scale=True, desc=dest.name, disable=None if progress else True) as bar:
                while chunk := r.read(1 << 20):
                    f.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            if total and received < int(total):  # the server closed the connection early
                raise OSError(f"{url}: the connection closed after {start + received} of "
                              f"{start + int(total)} bytes; run again to resume")
    except HTTPError as err:
        if err.code != 416:  # 416: nothing left to send, the partial file is complete
            raise
    except http.client.HTTPException as err:  # IncompleteRead, BadStatusLine: not OSErrors
        raise OSError(f"{url}: the transfer broke off ({type(err).__name__}: {err}); run again "
                      "to resume") from None
    try:
        got = md5_of(part, gunzip=dest.name.endswith(".gz"))
    except (OSError, EOFError, zlib.error) as err:  # e.g. an HTML error page served as .gz
        part.unlink()
        raise ValueError(f"{url}: not valid gzip data ({err})") from err
    if got != md5:
        part.unlink()
        raise ValueError(f"{url}: md5 {got} does not match the published {md5}")
    os.replace(part, dest)
    return dest


def _extract(archive: Path, dest: Path) -> None:
    """Extract a zip into ``dest`` through a temporary folder, moving each top entry in place."""
    with tempfile.TemporaryDirectory(dir=dest, prefix=".extract-") as tmp:
        try:
            with zipfile.ZipFile(archive) as z:
                z.extractall(tmp)
        except zipfile.BadZipFile as err:
            raise ValueError(f"{archive}: not a valid zip archive ({err})") from err
        for entry in Path(tmp).iterdir():
            target = dest / entry.name
            if target.exists():
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            os.replace(entry, target)


SIMULATED = "SIMULATED.json"  # the N-MNIST simulator's label of its recordings (nmnist_sim)


def _import_folders(spec: Spec, src: Path, dest: Path) -> bool:
    """Copy already-extracted folders (e.g. N-MNIST Train/, Test/) from ``src``, with the
    simulator's ``SIMULATED.json`` if there is one (simulated recordings stay labelled so); no md5
    exists for them, so only their presence is checked. Returns whether they were there."""
    if not spec.folders or not all((src / f).is_dir() for f in spec.folders):
        return False
    if _interrupted(src):
        raise ValueError(f"--from {src}: an interrupted simulation ({src / SIMULATED} says "
                         "complete: false); finish it first (the same `bistable data "
                         "simulate-nmnist` command again)")
    if _interrupted(dest):  # an unfinished simulation imported before: replaced whole
        for folder in spec.folders:
            shutil.rmtree(dest / folder, ignore_errors=True)
    if (src / SIMULATED).is_file():  # first: folders copied without it would pass for real
        atomic_copy(src / SIMULATED, dest / SIMULATED)
    for folder in spec.folders:
        if not (dest / folder).is_dir():
            with tempfile.TemporaryDirectory(dir=dest, prefix=".import-") as tmp:
                shutil.copytree(src / folder, Path(tmp) / folder)
                os.replace(Path(tmp) / folder, dest / folder)
    return True


def _interrupted(folder: Path) -> bool:
    """Whether ``folder`` holds a simulation whose ``SIMULATED.json`` says it is unfinished."""
    try:
        label = json.loads((folder / SIMULATED).read_text())
    except (OSError, ValueError):
        return False  # none, or unreadable: the loaders name what is wrong with it
    return isinstance(label, dict) and label.get("complete", True) is False


def _offline_message(name: str, spec: Spec, dest: Path, err) -> str:
    files = ", ".join(r.name for r in spec.files)
    return (f"could not download {name} ({err}); put {files} into {dest} "
            f"or run `bistable data fetch {name} --from DIR` on a folder holding them")


def fetch(name: str, data_dir=None, from_dir=None, *, mirrors=None, progress: bool = True,
          timeout: float = 30) -> Path:
    """Make dataset ``name`` present and verified in its data folder; return that folder.

    Files already there and matching their md5 are kept. ``from_dir`` imports local copies
    (``.gz`` or raw; for N-MNIST the zips or extracted ``Train/``, ``Test/`` folders) instead of
    downloading. ``mirrors`` overrides the published base URLs (tried in order).
    Raises ``ValueError`` for an unknown name or a checksum mismatch, ``FileNotFoundError``
    when a file is neither found locally nor downloadable (offline), naming what to put where.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    spec = DATASETS[name]
    dest = _fetch_dir(name, spec, data_dir)
    if from_dir is not None:  # before making the data folder: a typo leaves nothing behind
        src = dataset_dir(name, from_dir)
        if not src.is_dir():
            raise FileNotFoundError(f"--from folder {src} " + (
                "is not a folder" if src.exists() else "does not exist"))
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"data_dir {data_dir}: cannot create the data folder {dest} "
                         f"({e.strerror})") from None
    if (spec.folders and all((dest / f).is_dir() for f in spec.folders)
            and not _interrupted(dest)):
        return dest
    complete = all((forms := _forms(dest, r)) and all(_verified(f, r.md5) for f in forms)
                   for r in spec.files)
    if spec.extract or not complete:
        with _writing(dest):
            _fill(name, spec, dest, None if from_dir is None else src, mirrors, progress,
                  timeout)
    return dest


@contextlib.contextmanager
def _writing(dest: Path):
    """Hold a POSIX ``flock`` on the folder ``dest`` itself while filling it: a second ``fetch``
    of the same folder waits, then finds the files verified, instead of sharing a ``.part``."""
    if not os.access(dest, os.W_OK):
        raise ValueError(f"data folder {dest} is not writable (the dataset there is missing or "
                         "incomplete); give a writable --data-dir")
    fd = os.open(dest, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _fill(name, spec, dest, src, mirrors, progress, timeout) -> None:
    """Import (from ``src``) or download each file of ``spec`` missing from ``dest``, then
    extract the archives."""
    remove_orphans(dest)  # copies a killed call was making
    if src is not None and _import_folders(spec, src, dest):
        return
    for remote in spec.files:
        forms = _forms(dest, remote)
        bad = [f for f in forms if not _verified(f, remote.md5)]
        for f in bad:  # a corrupt or stale copy would shadow the good one in the loaders
            warnings.warn(f"{f}: md5 does not match the published {remote.md5}; removed",
                          stacklevel=3)
            f.unlink()
        if len(bad) < len(forms):
            continue
        if src is not None:
            _import_file(spec, remote, src, dest)
        else:
            _download_any(name, spec, remote, dest, mirrors, progress, timeout)
    if spec.extract:
        for remote in spec.files:
            _extract(dest / remote.name, dest)


def _import_file(spec: Spec, remote: Remote, src: Path, dest: Path) -> None:
    found = _local_copy(src, remote)
    if found is None:
        folders = " and ".join(f"{f}/" for f in spec.folders)
        raise FileNotFoundError(f"{remote.name} (or its raw form) not found in {src}"
                                + (f", nor the extracted {folders}" if folders else ""))
    try:
        got = md5_of(found)
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(f"{found}: not valid gzip data ({err})") from None
    if got != remote.md5:
        raise ValueError(f"{found}: md5 {got} does not match the published {remote.md5}"
                         + wrong_file(got, remote.md5))
    atomic_copy(found, dest / found.name)


def _download_any(name, spec, remote, dest, mirrors, progress, timeout) -> None:
    errors: list[Exception] = []
    for base in mirrors or spec.mirrors:
        try:
            download(base + (remote.path or remote.name), dest / remote.name, remote.md5,
                     progress=progress, timeout=timeout)
            return
        except (OSError, ValueError) as err:  # URLError and timeouts are OSErrors
            errors.append(err)
    bad = [e for e in errors if isinstance(e, ValueError)]
    if bad:
        raise bad[-1]
    raise FileNotFoundError(_offline_message(name, spec, dest, errors[-1]))
