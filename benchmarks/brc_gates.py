"""What the BRC / nBRC units of trained runs do: gate and state statistics per block.

    python benchmarks/brc_gates.py RUN [RUN ...] [--samples 256] [--name brc_gates]

For each run (a ``bistable train`` folder of a brc or nbrc model on a synthetic task) and each
block, on ``--samples`` test sequences at the training length: the mean of ``a_t`` and the share of
``a_t > 1`` (a bistable neuron), the mean of ``c_t`` and the share of ``c_t > 0.99`` (a neuron that
holds), ``|h_t|`` and the spread of each neuron's ``h_t`` over time (std over t, averaged); then the
spread of the last prediction across samples against the target's, and the run's MSE. A unit whose
states sit at ±1 and do not move over time carries nothing about the input (the readout predicts a
constant). Writes results/<name>.md and .json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import header, positive_int, run_main, summary, write_results  # noqa: E402
from benchmarks.pad_memory import recording  # noqa: E402
from bistable.train.loop import load_run, read_run  # noqa: E402
from bistable.units.brc import BRC  # noqa: E402


def run_rows(out: str, samples: int) -> list[dict]:
    config = read_run(out)["config"]
    task, model = load_run(out)
    x, target = task.batch("test", config["seq_len"], samples, torch.Generator().manual_seed(0))
    with torch.no_grad(), recording(model) as records:
        y, _ = model(x)
        pred = y[:, -1]
        mse = task.loss(pred, target).item()
        rows = []
        for (block, name), (unit, inp, h) in records.items():
            if not isinstance(unit, BRC):
                raise ValueError(f"{out}: expected a brc or nbrc model, got a {name} unit")
            a, c = unit.gates(inp, h)
            rows.append({
                "run": out, "model": config["model"], "seed": config["seed"], "block": block,
                "a_mean": a.mean().item(), "a_bistable": (a > 1).float().mean().item(),
                "c_mean": c.mean().item(), "c_holding": (c > 0.99).float().mean().item(),
                "h_abs": h.abs().mean().item(), "h_time_std": h.std(1).mean().item(),
                "pred_spread": pred.std(0).mean().item(),
                "target_spread": target.std(0).mean().item(), "mse": mse})
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=summary(__doc__))
    parser.add_argument("runs", nargs="+", help="run folders (bistable train --out)")
    parser.add_argument("--samples", type=positive_int, default=256)
    parser.add_argument("--threads", type=positive_int, default=1)
    parser.add_argument("--name", default="brc_gates")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = [row for out in args.runs for row in run_rows(out, args.samples)]
    lines = ["| run | block | mean a | a > 1 | mean c | c > 0.99 | mean abs(h) | h's std over t "
             "| prediction spread | target spread | MSE |", "|---|---:|" + "---:|" * 9]
    for r in data:
        lines.append(f"| `{r['run']}` | {r['block']} | {r['a_mean']:.3f} | {r['a_bistable']:.3f} "
                     f"| {r['c_mean']:.3f} | {r['c_holding']:.3f} | {r['h_abs']:.3f} | "
                     f"{r['h_time_std']:.3f} | {r['pred_spread']:.4f} | "
                     f"{r['target_spread']:.3f} | {r['mse']:.4f} |")
    text = (header("BRC / nBRC: gates and states of trained runs")
            + f"\n{args.samples} test sequences at each run's training length, the weights its "
            "results score (the last ones, or --keep-best's best, or --ema's average). Shares "
            "are over samples, steps and neurons; spreads are standard "
            "deviations (of h over time, per neuron and sample; of the last prediction across "
            "samples, per output).\n\n" + "\n".join(lines) + "\n")
    print(write_results(args.name, text, data))


if __name__ == "__main__":
    run_main(main)
