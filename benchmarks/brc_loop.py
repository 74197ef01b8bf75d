"""The BRC / nBRC time loop on the CPU: eager (autograd records every step) against the fused C++
loop (``compile_loop=True``, :mod:`bistable.units.brc_loop`).

    python benchmarks/brc_loop.py [--B 64] [--T 300] [--repeats 7] [--threads 1]

Per model, medians of ``--repeats`` timings, eager and fused taking turns: the unit alone
(forward+backward, loss on every output and the last state; and a forward without gradients) at
width ``--H`` (input size too), and one training step of the whole network (forward, MSE on the
last output, backward, AdamW) at the denoising benchmark's budget (167 557 parameters: hidden 74
for the BRC, 70 for the nBRC; two inputs, five outputs). Writes results/brc_loop_cpu.md and .json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import (  # noqa: E402
    header,
    positive_int,
    run_main,
    side_by_side,
    summary,
    write_results,
)
from bistable.models import build_model, width_for_budget  # noqa: E402
from bistable.units.brc import BRC, NBRC  # noqa: E402

BUDGET = 167557  # the denoising grid's (results/memory_tasks_denoising.md)


def unit_fns(cls, args, compile_loop: bool):
    torch.manual_seed(0)
    unit = cls(args.H, args.H, compile_loop=compile_loop)
    x = torch.randn(args.B, args.T, args.H, generator=torch.Generator().manual_seed(0))

    def train():
        unit.zero_grad(set_to_none=True)
        y, h = unit(x)
        (y.sum() + h.sum()).backward()

    def infer():
        with torch.no_grad():
            unit(x)

    return train, infer


def network_step(name: str, args, compile_loop: bool):
    hidden = width_for_budget(name, BUDGET, 2, 5)
    torch.manual_seed(0)
    model = build_model(name, 2, 5, hidden=hidden, layers=2, compile_loop=compile_loop)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    x, target = torch.randn(args.B, args.T, 2, generator=g), torch.randn(args.B, 5, generator=g)

    def step():
        opt.zero_grad(set_to_none=True)
        y, _ = model(x)
        torch.nn.functional.mse_loss(y[:, -1], target).backward()
        opt.step()

    return step, hidden


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=summary(__doc__))
    parser.add_argument("--B", type=positive_int, default=64)
    parser.add_argument("--T", type=positive_int, default=300)
    parser.add_argument("--H", type=positive_int, default=74, help="the unit's width (and input)")
    parser.add_argument("--repeats", type=positive_int, default=7)
    parser.add_argument("--threads", type=positive_int, default=1)
    parser.add_argument("--name", default="brc_loop_cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows, data = [], []
    for name, cls in (("brc", BRC), ("nbrc", NBRC)):
        (e_train, e_infer), (f_train, f_infer) = (unit_fns(cls, args, c) for c in (False, True))
        e_step, hidden = network_step(name, args, False)
        f_step, _ = network_step(name, args, True)
        cases = {"unit forward+backward": (e_train, f_train, args.H),
                 "unit forward, no gradients": (e_infer, f_infer, args.H),
                 "network training step": (e_step, f_step, hidden)}
        for case, (eager, fused, width) in cases.items():
            t = side_by_side({"eager": eager, "fused": fused}, args.repeats)
            row = {"model": name, "case": case, "B": args.B, "T": args.T, "H": width,
                   "eager_ms": t["eager"] * 1e3, "fused_ms": t["fused"] * 1e3,
                   "speedup": t["eager"] / t["fused"]}
            data.append(row)
            rows.append(f"| {name} | {case} | {args.B} × {args.T} | {width} | "
                        f"{row['eager_ms']:.0f} | {row['fused_ms']:.0f} | "
                        f"**{row['speedup']:.1f}×** |")
            print(rows[-1], flush=True)
    text = (header("BRC / nBRC: the eager loop and the fused C++ loop (`compile_loop=True`)")
            + f"\nMedians of {args.repeats} timings, eager and fused taking turns, "
            f"{args.threads} thread(s). The unit alone at width H (input size H; loss on every "
            "output and the last state), and one training step of the whole network at the "
            f"denoising grid's budget ({BUDGET:,} parameters, two blocks; MSE on the last "
            "output, AdamW): the rest of that step (encoder, norms, MLPs) is the same dense "
            "work on both sides.\n\n"
            "| model | case | batch × T | H | eager ms | fused ms | eager / fused |\n"
            "|---|---|---|---:|---:|---:|---:|\n" + "\n".join(rows) + "\n")
    print(write_results(args.name, text, data))


if __name__ == "__main__":
    run_main(main)
