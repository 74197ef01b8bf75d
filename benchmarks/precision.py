"""Training steps in float32 and in bfloat16 mixed precision (``bistable train --precision
bf16``), side by side.

    python benchmarks/precision.py [--models lru bmru hybrid mingru src] [--repeats 7]
                                   [--threads 1] [--device cpu|cuda] [--name precision_cpu]

One training step = forward and cross-entropy on the last output (under
``torch.autocast(dtype=torch.bfloat16)`` for bf16, as the training loop runs them), backward and
an AdamW step, at the shapes of ``benchmarks/compile.py`` (psMNIST at 38 305 parameters for the
recurrent models, the issue-9 anchor for the fused-loop ``src``). Per model: the medians of
``--repeats`` steps, fp32 and bf16 taking turns after one warm-up step each, and the relative
difference of the first step's losses; a model that fails is a row saying why. Writes
results/<name>.md and .json.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import header, method, run_main, write_results  # noqa: E402
from benchmarks.compile import measure_models, setup, step_benchmark_args  # noqa: E402
from bistable.models import count_parameters  # noqa: E402

PRECISIONS = ("fp32", "bf16")


def timed_step(model, optimizer, x, target, precision: str, sync) -> tuple[float, float]:
    """Seconds of one training step, and its loss."""
    start = time.perf_counter()
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        y, _ = model(x)
        loss = torch.nn.functional.cross_entropy(y[:, -1], target)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    sync()
    return time.perf_counter() - start, float(loss.detach())


def measure(name: str, device: str, repeats: int) -> dict:
    torch.manual_seed(0)
    model, x, target, shape = setup(name, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0)  # its work, the weights unchanged
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    losses = {p: timed_step(model, optimizer, x, target, p, sync)[1] for p in PRECISIONS}
    times = {p: [] for p in PRECISIONS}
    for _ in range(repeats):
        for p in PRECISIONS:
            times[p].append(timed_step(model, optimizer, x, target, p, sync)[0])
    fp32, bf16 = (statistics.median(times[p]) for p in PRECISIONS)
    return {"model": name, "params": count_parameters(model), "hidden": shape["hidden"],
            "batch": shape["batch"], "T": shape["T"], "fp32_ms": fp32 * 1e3,
            "bf16_ms": bf16 * 1e3, "speedup": fp32 / bf16,
            "loss_rel_diff": abs(losses["bf16"] - losses["fp32"]) / abs(losses["fp32"]),
            "times": times}


def table(rows: list[dict]) -> str:
    lines = ["| model | parameters | hidden | batch × T | fp32 ms/step | bf16 ms/step | "
             "fp32 / bf16 | loss rel. difference |",
             "|---|---:|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | failed: {r['error']} | | | | | | |")
            continue
        lines.append(f"| {r['model']} | {r['params']:,} | {r['hidden']} | {r['batch']} × {r['T']} "
                     f"| {r['fp32_ms']:.0f} | {r['bf16_ms']:.0f} | {r['speedup']:.2f}× "
                     f"| {r['loss_rel_diff']:.1e} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    args = step_benchmark_args(__doc__, "precision_cpu", argv)
    rows = measure_models(args, measure, table)
    text = (header("Training steps in float32 and in bfloat16 mixed precision "
                   "(`bistable train --precision bf16`)") + "\n"
            + method(__doc__)
            .replace("``", "`") + "\n\n" + table(rows) + "\n")
    print(write_results(args.name, text, rows))


if __name__ == "__main__":
    run_main(main)
