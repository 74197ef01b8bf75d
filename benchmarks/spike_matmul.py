"""The SRC's input product on the CPU: the sparse product against the dense one, by density.

    python benchmarks/spike_matmul.py [--repeats 15] [--threads 1]

``x (N, F) @ Wᵀ`` with ``W`` ``(256, F)`` and ``x`` a fraction ``density`` of ones (Bernoulli),
for the shapes of the SRC throughput benchmark (``N`` = 32 × 220 rows: a batch of 32 coded images;
``F`` = 784 pixels or 256 spikes of the layer below) and smaller inputs (``N`` = 32 × 20, and 32:
one step of a batch). Three cases: the forward alone (inference), forward + backward to ``W`` (a
first layer: the images need no gradient) and to ``W`` and ``x`` (a hidden layer). Columns:
medians (ms) of ``dense_matmul``, ``sparse_matmul`` and ``spike_matmul`` (which chooses; its
estimate of the density included), interleaved rounds after one warm-up round. These tables set
``bistable.units.spike_matmul.MAX_DENSITY`` and ``MIN_ELEMENTS``.
Writes results/spike_matmul_cpu.md and .json.
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
from bistable.units import spike_matmul as sm  # noqa: E402

SHAPES = [(32 * 220, 784), (32 * 220, 256), (32 * 20, 784), (32 * 20, 256), (32, 784),
          (32, 256)]
DENSITIES = [0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5]
CASES = {"forward": (False, False), "backward to W": (False, True),
         "backward to W and x": (True, True)}
PRODUCTS = {"dense": sm.dense_matmul, "sparse": sm.sparse_matmul, "auto": sm.spike_matmul}


def case(product, x, w, grad):
    if not w.requires_grad:
        with torch.no_grad():
            product(x, w)
        return
    out = product(x, w)
    out.backward(grad)


def measure(args) -> list[dict]:
    rows = []
    g = torch.Generator().manual_seed(0)
    for n, f in SHAPES:
        for density in DENSITIES:
            for name, (x_grad, w_grad) in CASES.items():
                x = (torch.rand(n, f, generator=g) < density).float().requires_grad_(x_grad)
                w = torch.randn(256, f, generator=g).requires_grad_(w_grad)
                grad = torch.randn(n, 256, generator=g)
                t = side_by_side({p: (lambda fn=fn: case(fn, x, w, grad))
                                  for p, fn in PRODUCTS.items()}, args.repeats)
                row = {"N": n, "F": f, "density": density, "case": name,
                       **{p + "_ms": v * 1e3 for p, v in t.items()},
                       "sparse_speedup": t["dense"] / t["sparse"],
                       "auto_speedup": t["dense"] / t["auto"]}
                rows.append(row)
                print(row, flush=True)
    return rows


def markdown(args, rows) -> str:
    lines = [header("The SRC's input product on the CPU: sparse against dense"),
             f"\n`x (N, F) @ Wᵀ`, W `(256, F)`, x Bernoulli ones at `density`; float32, "
             f"{args.threads} torch thread(s); milliseconds, medians of {args.repeats} "
             "interleaved rounds. `dense`: `dense_matmul` (`x @ W.t()`); `sparse`: "
             "`sparse_matmul`; `auto`: `spike_matmul`, which estimates the density and takes the "
             f"sparse product on inputs of at least {sm.MIN_ELEMENTS} elements of which at most "
             f"{sm.MAX_DENSITY:.0%} are nonzero. Speed-ups are dense / sparse and dense / auto.\n"]
    for n, f in SHAPES:
        lines += [f"\n## N = {n}, F = {f}\n", "| density | case | dense | sparse | auto | "
                  "dense / sparse | dense / auto |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['density']:.3g} | {r['case']} | {r['dense_ms']:.2f} | "
                  f"{r['sparse_ms']:.2f} | {r['auto_ms']:.2f} | {r['sparse_speedup']:.2f}× | "
                  f"{r['auto_speedup']:.2f}× |"
                  for r in rows if (r["N"], r["F"]) == (n, f)]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=summary(__doc__))
    parser.add_argument("--repeats", type=positive_int, default=15)
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="torch threads (1: steady numbers on a shared machine)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = measure(args)
    suffix = "" if args.threads == 1 else f"_{args.threads}threads"
    path = write_results(f"spike_matmul_cpu{suffix}", markdown(args, rows),
                         {"args": vars(args), "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    run_main(main)
