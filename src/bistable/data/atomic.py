"""Files written whole or not at all, and what killed writers leave behind.

A file is written to a temporary ``.<name>.<pid>.tmp`` beside it, then renamed over it: a reader
sees the old file or the new one, never a part. A writer killed before the rename leaves its
temporary; :func:`remove_orphans` deletes those whose process no longer runs (a live one may be
another process writing the same file now). The temporaries are per process because data files
can have several writers at once (ranks building one cache); a training run's files have one,
and :func:`bistable.train.checkpoint.atomic_write` also syncs them to disk.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path


def temporary(path: Path) -> Path:
    """This process's temporary file for ``path``."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through its temporary file; an error names ``path``."""
    tmp = temporary(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise OSError(err.errno, err.strerror, str(path)) from None


def atomic_copy(src: Path, dest: Path) -> None:
    """Copy ``src`` to ``dest`` through ``dest``'s temporary file."""
    tmp = temporary(dest)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def remove_orphans(folder: Path, *, recursive: bool = False) -> None:
    """Delete the temporaries ``.<name>.<pid>.tmp`` in ``folder`` (and its subfolders when
    ``recursive``) whose writer no longer runs."""
    for tmp in (folder.rglob if recursive else folder.glob)(".*.tmp"):
        _, _, pid = tmp.name[: -len(".tmp")].rpartition(".")
        if pid.isdigit() and not _alive(int(pid)) and tmp.is_file():
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, as another user
        pass
    return True
