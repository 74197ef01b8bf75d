"""The SRC's fused C++ loop on torch's threads: the library's build (OpenMP, its batch rows split
over the threads) against the same source built without OpenMP (every row on one thread, as the
loop was built before 2026-12-06), side by side → results/cpu_threads.md.

    python benchmarks/cpu_threads.py [--repeats 7]

Medians of interleaved rounds: the loop alone (forward, and backward with the recurrence
detached, as the recipe trains) at the Fashion-MNIST recipe's hidden layer (batch 64, T = 220,
1 024 neurons, float32) on 1 and 2 threads; and one training step of that recipe's network
(784 → 1 024 → 100 SRC neurons, bf16 autocast, cross-entropy, backward, AdamW) on 2 threads
with each build.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from unittest import mock

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import (  # noqa: E402
    header,
    positive_int,
    run_main,
    side_by_side,
    summary,
    write_results,
)
from bistable.nn.spiking import build_src  # noqa: E402
from bistable.units import src_loop  # noqa: E402
from bistable.units.cpu_extension import load_cpu_extension  # noqa: E402
from bistable.units.src import SRC  # noqa: E402

B, T, H, F = 64, 220, 1024, 784


def builds() -> dict:
    """The loop as the library builds it, and the same source without OpenMP."""
    library = src_loop._cpu_kernel()
    with mock.patch.object(torch.backends.openmp, "is_available", lambda: False):
        serial = load_cpu_extension("bistable_src_loop", src_loop._CPP, ["forward", "backward"])
    if library is None or serial is None:
        raise SystemExit("cpu_threads.py: the fused loop could not be built here (see the warning)")
    return {"OpenMP": library, "serial": serial}


def on_threads(n: int, fn):
    def run():
        torch.set_num_threads(n)
        fn()
    return run


def loop_fns(kernel) -> tuple:
    """The loop's forward and its detached backward at the recipe's hidden layer."""
    g = torch.Generator().manual_seed(0)
    unit = SRC(F, H)
    d = torch.randn(B, T, H, generator=g)
    i0, h0, hs0 = (s.expand(B, H).contiguous() for s in unit.init_state(1))
    r, r_s, b = unit.r.detach(), unit.r_s.detach(), unit.effective_bias().detach()
    # SPEC.md's constants, the gate on h[t-1]
    consts = (unit.alpha, unit.rho, unit.z_hyp, unit.z_dep, False)
    h, i, _ = kernel.forward(d, i0, h0, hs0, r, r_s, b, *consts)
    grad = torch.randn(B, T, H, generator=g)
    grad_hs = torch.zeros(B, H)
    return (lambda: kernel.forward(d, i0, h0, hs0, r, r_s, b, *consts),
            lambda: kernel.backward(grad, None, grad_hs, h, i, h0, r, r_s, *consts, True))


def training_step(kernel):
    """One step of the recipe's network with ``kernel`` as its fused loop."""
    torch.manual_seed(0)
    model = build_src(F, 10, hidden=H, layers=1, compile_loop=True, detach_recurrent=True,
                      train_noise=0.2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(B, T, F, generator=g) < 0.07).float()  # the rate code's density on Fashion
    y = torch.randint(10, (B,), generator=g)

    def step():
        with mock.patch.object(src_loop, "_cpu_kernel", lambda: kernel):
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                R, _ = model(x)
            torch.nn.functional.cross_entropy(R[:, -1].float(), y).backward()
            opt.step()
    return step


def main() -> None:
    p = argparse.ArgumentParser(description=summary(__doc__))
    p.add_argument("--repeats", type=positive_int, default=7)
    p.add_argument("--name", default="cpu_threads", help="results/NAME.md")
    args = p.parse_args()
    threads = os.cpu_count() or 1
    if threads < 2:
        raise SystemExit(f"cpu_threads.py: needs 2 CPUs, this machine has {threads}")
    kernels = builds()
    fns = {}
    for build, kernel in kernels.items():
        forward, backward = loop_fns(kernel)
        for n in (1, 2):
            fns["loop forward", build, n] = on_threads(n, forward)
            fns["loop backward", build, n] = on_threads(n, backward)
    for build, kernel in kernels.items():
        fns["training step", build, 2] = on_threads(2, training_step(kernel))
    times = side_by_side(fns, args.repeats)
    lines = [header("The SRC's fused CPU loop on torch's threads: OpenMP build against serial"),
             "", f"Batch {B}, T = {T}, {H} neurons. **loop**: the C++ kernel alone, float32 "
             "(backward: the recurrence detached, as the recipe trains). **training step**: "
             f"the Fashion-MNIST recipe's network ({F} → {H} → 100 SRC neurons, detached, "
             "training noise 0.2) on random spikes of the rate code's density (7 %), bf16 "
             "autocast, cross-entropy, backward, AdamW. **OpenMP**: the loop as the library "
             "builds it; **serial**: the same source built without -fopenmp, so that "
             "at::parallel_for runs every batch row on one thread (the build before "
             f"2026-12-06). Medians of {args.repeats} interleaved rounds.", "",
             "| what | build | threads | median (ms) | serial build's time / this |",
             "|---|---|---:|---:|---:|"]
    data = []
    for (what, build, n), seconds in times.items():
        base = times[what, "serial", n]
        lines.append(f"| {what} | {build} | {n} | {1e3 * seconds:.1f} | {base / seconds:.2f}× |")
        data.append({"what": what, "build": build, "threads": n, "median_s": seconds})
    print("\n".join(lines))
    print(f"wrote {write_results(args.name, chr(10).join(lines) + chr(10), data)}")


if __name__ == "__main__":
    run_main(main)
