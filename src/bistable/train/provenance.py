"""Where a run's figures came from: the code's commit, the machine and the dates of each stretch
of training (a run resumed on another machine or at another commit has several), kept in the
checkpoint as ``"provenance"`` (``metrics.json`` keeps DESIGN.md's keys).
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path

import torch

from .. import __version__

CODE_FOLDERS = ("src/", "benchmarks/")  # the code a run runs: a change elsewhere (results/ that
                                        # an earlier benchmark wrote, docs/) does not make it dirty


PACKAGE = Path(__file__).resolve().parents[1]  # the folder bistable is imported from


def source_checkout(package: Path = PACKAGE) -> Path | None:
    """The root of the source checkout this package runs from (``<root>/src/bistable`` beside
    bistable's own ``<root>/pyproject.toml``, as in a clone or an editable install), or None
    when it runs installed: an installed copy must not take the folders around it for its own."""
    root = package.parents[1]
    try:
        ours = 'name = "bistable"' in (root / "pyproject.toml").read_text()
    except OSError:
        return None
    return root if package.name == "bistable" and package.parent.name == "src" and ours else None


def code_commit(root: Path | None = None) -> str:
    """The commit of the source checkout at ``root`` (default: the one this package runs from),
    ``+dirty`` when a file under :data:`CODE_FOLDERS` has changes or is untracked;
    ``$BISTABLE_COMMIT`` where set (a copy of the tree whose .git is stale); the package version
    outside a checkout."""
    if os.environ.get("BISTABLE_COMMIT"):
        return os.environ["BISTABLE_COMMIT"]
    root = source_checkout() if root is None else root
    if root is None or not (root / ".git").exists():
        return f"bistable {__version__}"
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, text=True,
                             capture_output=True, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"],
                                cwd=root, text=True, capture_output=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return f"bistable {__version__}"
    dirty = [line for line in status if line[3:].startswith(CODE_FOLDERS)]
    return rev + ("+dirty" if dirty else "")


def machine() -> str:
    """CPU model and core count, torch and this process's intra-op threads, and the GPU name when
    CUDA is up."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads in this process)")
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name()}"
    return text


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def stretch(step: int, device: torch.device, ranks: int = 1) -> dict:
    """The record of a stretch of training starting at ``step`` on ``ranks`` processes (its end
    filled by :func:`reach`)."""
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {"commit": code_commit(), "machine": machine(), "device": where, "ranks": ranks,
            "from_step": step, "to_step": step, "started": now(), "ended": None}


def reach(record: dict, step: int) -> None:
    """``record`` brought up to ``step``, now."""
    record["to_step"], record["ended"] = step, now()
