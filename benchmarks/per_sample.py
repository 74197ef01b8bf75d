"""Per-sample gradients: ``torch.func.vmap(grad(...))`` against a loop of one backward per sample.

    python benchmarks/per_sample.py [--models lru bmru hybrid src] [--batch 32] [--seq-len 100]
                                    [--repeats 7] [--threads 1] [--name per_sample_cpu]

For each model (hidden 64, two layers, one input of Gaussian noise; the SRC: one hidden layer of
64 on 784 Bernoulli inputs of rate 0.05), the gradients of every sample's loss in every
parameter, three ways, interleaved (``benchmarks.common.side_by_side``, medians): one batched
backward of the summed loss (the floor: it gives the sum, not each sample's); ``vmap(grad(loss))``
over the batch (each sample's, the scan and the units' plain paths folded into one batch); a
Python loop of ``B`` backwards of one sample each. The vmapped gradients are checked against the
loop's before timing.

Writes results/<name>.md and .json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.func import functional_call, grad, vmap

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import (  # noqa: E402
    header,
    positive_int,
    run_main,
    side_by_side,
    summary,
    write_results,
)
from bistable.models import build_model  # noqa: E402

MODELS = ("lru", "bmru", "hybrid", "src")


def problem(name: str, batch: int, seq_len: int):
    """The model (evaluation mode: no noise or dropout, so every way sees one function), its
    parameters, inputs and targets."""
    torch.manual_seed(0)
    if name == "src":
        model = build_model("src", 784, 10, hidden=64, layers=1)
        x = (torch.rand(batch, seq_len, 784) < 0.05).float()
    else:
        model = build_model(name, 1, 10, hidden=64, layers=2)
        x = torch.randn(batch, seq_len, 1)
    return model.eval(), dict(model.named_parameters()), x, torch.randint(0, 10, (batch,))


def ways(model, params, x, y) -> dict:
    detached = {k: v.detach() for k, v in params.items()}

    def loss(p, x_n, y_n):  # one sample's cross-entropy on the last output
        out, _ = functional_call(model, p, (x_n[None],))
        return torch.nn.functional.cross_entropy(out[:, -1], y_n[None])

    def batched():
        out, _ = model(x)
        summed = torch.nn.functional.cross_entropy(out[:, -1], y, reduction="sum")
        return torch.autograd.grad(summed, list(params.values()))

    def mapped():
        return vmap(grad(loss), in_dims=(None, 0, 0))(detached, x, y)

    def looped():
        return [torch.autograd.grad(loss(params, x[n], y[n]), list(params.values()))
                for n in range(x.shape[0])]

    return {"batched backward (sum only)": batched, "vmap(grad)": mapped,
            "loop of backwards": looped}


def check(fns: dict, params: dict) -> float:
    """Largest relative difference between the vmapped and the looped per-sample gradients."""
    mapped, looped = fns["vmap(grad)"](), fns["loop of backwards"]()
    worst = 0.0
    for i, name in enumerate(params):
        want = torch.stack([sample[i] for sample in looped])
        scale = float(want.abs().max()) or 1.0
        worst = max(worst, float((mapped[name] - want).abs().max()) / scale)
    return worst


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=summary(__doc__))
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--batch", type=positive_int, default=32)
    p.add_argument("--seq-len", type=positive_int, default=100)
    p.add_argument("--repeats", type=positive_int, default=7)
    p.add_argument("--threads", type=positive_int, default=1)
    p.add_argument("--name", default="per_sample_cpu", help="results/NAME.md")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.models:
        model, params, x, y = problem(name, args.batch, args.seq_len)
        fns = ways(model, params, x, y)
        error = check(fns, params)
        if error > 1e-3:
            raise SystemExit(f"{name}: vmap(grad) differs from the loop by {error:.2e}")
        times = side_by_side(fns, args.repeats)
        rows.append({"model": name, "max_rel_diff": error, **times})
    md = (header("Per-sample gradients: vmap(grad) against a loop of backwards")
          + f"\nBatch {args.batch}, T = {args.seq_len}, {args.threads} thread(s), CPU; medians "
          f"of {args.repeats} interleaved rounds (seconds). Every sample's gradient in every "
          "parameter: `vmap(grad)` and the loop; the batched backward gives only their sum (the "
          "floor). `max rel diff`: vmap's gradients against the loop's, before timing.\n\n"
          "| model | batched backward (sum only) | vmap(grad) | loop of backwards | "
          "loop / vmap | vmap / batched | max rel diff |\n|---|---:|---:|---:|---:|---:|---:|\n")
    for r in rows:
        b, v, loop = (r["batched backward (sum only)"], r["vmap(grad)"], r["loop of backwards"])
        md += (f"| {r['model']} | {b:.3f} | {v:.3f} | {loop:.3f} | {loop / v:.1f}× | "
               f"{v / b:.1f}× | {r['max_rel_diff']:.1e} |\n")
    print(md)
    print(write_results(args.name, md, rows))


if __name__ == "__main__":
    run_main(main)
