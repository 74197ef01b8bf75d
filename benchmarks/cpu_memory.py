"""Resident memory of CPU training with batches of varying length (``--pad-min``): glibc's
allocator against the working set, and the setting that keeps the two together, at its price.

    python benchmarks/cpu_memory.py [--steps 30] [--name cpu_memory]

Each setting runs in a fresh process: the width-64 'late' hybrid of the padded psMNIST runs
(``benchmarks/pad_memory.py``: batch 64, bf16 autocast, one thread, AdamW) trains ``--steps`` steps
on random inputs of 784 + pad steps, the pad drawn from 0…1000 at every step (the variable delay)
or always 1000 (one length: the working set of the longest batch); under glibc's default
allocator or with ``MALLOC_MMAP_THRESHOLD_=1048576`` (blocks over 1 MiB mapped and unmapped,
never kept in the heap). Per setting: the peak resident set, the resident set after the last
step, and the median step time; the settings run one after the other. Writes
results/<name>.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.common import (  # noqa: E402
    LATE_MIXER,
    header,
    method,
    positive_int,
    run_main,
    summary,
    write_results,
)
from benchmarks.pad_memory import SLOW  # noqa: E402
from benchmarks.precision import timed_step  # noqa: E402
from bistable.models import build_model  # noqa: E402

SETTINGS = {  # name -> (pads drawn from, extra environment)
    "one length (pad 1000), glibc default": ("fixed", {}),
    "variable pad 0…1000, glibc default": ("variable", {}),
    "variable pad 0…1000, MALLOC_MMAP_THRESHOLD_=1048576": (
        "variable", {"MALLOC_MMAP_THRESHOLD_": "1048576"}),
}


def _resident_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def child(pads: str, steps: int) -> dict:
    """Train ``steps`` steps in this process; the figures of one setting."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    draw = random.Random(0)
    model = build_model("hybrid", 1, 10, hidden=64, layers=2, mixer=LATE_MIXER,
                        unit_kwargs={"lru": SLOW})
    optimizer = torch.optim.AdamW(model.parameters())
    times = []
    for _ in range(steps):
        pad = draw.randint(0, 1000) if pads == "variable" else 1000
        x, target = torch.randn(64, 784 + pad, 1), torch.randint(0, 10, (64,))
        times.append(timed_step(model, optimizer, x, target, "bf16", lambda: None)[0])
    return {"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6,  # KiB
            "end_mb": _resident_mb(), "step_s": statistics.median(times)}


def table(rows: list[dict]) -> str:
    lines = ["| setting | peak resident MB | resident after the last step, MB | median s/step |",
             "|---|---:|---:|---:|"]
    lines += [f"| {r['setting']} | {r['peak_mb']:.0f} | {r['end_mb']:.0f} | {r['step_s']:.2f} |"
              for r in rows]
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=summary(__doc__))
    p.add_argument("--steps", type=positive_int, default=30)
    p.add_argument("--name", default="cpu_memory")
    p.add_argument("--child", choices=("fixed", "variable"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.steps)))
        return
    if not sys.platform.startswith("linux"):
        raise SystemExit("cpu_memory: measures glibc's allocator through /proc: Linux only")
    torch.set_num_threads(1)  # as in every setting's process: the header's machine line says so
    rows = []
    for setting, (pads, env) in SETTINGS.items():
        proc = subprocess.run([sys.executable, __file__, "--child", pads, "--steps",
                               str(args.steps)], env={**os.environ, **env},
                              capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"cpu_memory: setting {setting!r} failed (exit {proc.returncode}):\n"
                             + proc.stderr[-2000:])
        rows.append({"setting": setting, **json.loads(proc.stdout.splitlines()[-1])})
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    text = (header("Resident memory of CPU training with batches of varying length") + "\n"
            + method(__doc__)
            .replace("``", "`") + f" {args.steps} steps per setting.\n\n" + table(rows) + "\n")
    print(write_results(args.name, text, rows))


if __name__ == "__main__":
    run_main(main)
