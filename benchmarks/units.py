"""Memory recurrent units on the CPU: the parallel forward against stepping, and training memory.

    python benchmarks/units.py [--B 8] [--T 4096] [--H 256] [--mem-T 65536] [--threads 1]

Speed: for BMRU, CMRU (ε = 1) and the leaky CMRU (ε = 0.5), medians of forward+backward (loss on
every output and the last state) through ``forward`` (one scan) and through ``step`` called T times
(autograd through the loop), and the same for a forward without gradients (streaming inference).
Memory: the tensors autograd saves for backward during a training forward (unique storages, via
``torch.autograd.graph.saved_tensors_hooks``), as a multiple of the input tensor's bytes, at
``--mem-T`` for ``forward`` and at ``--T`` for the step loop (the ratio does not depend on T).
Writes results/units_cpu.md and .json.
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
from bistable.units.bmru import BMRU, CMRU  # noqa: E402

UNITS = {
    "BMRU": lambda F, H: BMRU(F, H),
    "CMRU ε=1": lambda F, H: CMRU(F, H, epsilon=1.0),
    "CMRU ε=0.5": lambda F, H: CMRU(F, H, epsilon=0.5),
}


def by_forward(unit, x):
    return unit(x)


def by_steps(unit, x):
    state, ys = None, []
    for x_t in x.unbind(1):
        y_t, state = unit.step(x_t, state)
        ys.append(y_t)
    return torch.stack(ys, 1), state


def train_step(run, unit, x):
    unit.zero_grad(set_to_none=True)
    y, state = run(unit, x)
    (y.sum() + state.sum()).backward()


def inference(run, unit, x):
    with torch.no_grad():
        run(unit, x)


def saved_bytes(run, unit, x) -> tuple[int, int]:
    """Bytes of the unique storages autograd saves in a training forward: (all, parameters)."""
    storages: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y, state = run(unit, x)
    params = {p.untyped_storage().data_ptr() for p in unit.parameters()}
    del y, state
    return sum(storages.values()), sum(n for p, n in storages.items() if p in params)


def measure_speed(args, rows, data):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.B, args.T, args.H, generator=g).requires_grad_()
    for name, make in UNITS.items():
        torch.manual_seed(0)
        unit = make(args.H, args.H)
        t = side_by_side({
            "forward_fb": lambda: train_step(by_forward, unit, x),
            "step_fb": lambda: train_step(by_steps, unit, x),
            "forward_inf": lambda: inference(by_forward, unit, x),
            "step_inf": lambda: inference(by_steps, unit, x),
        }, args.repeats)
        row = {"unit": name, "B": args.B, "T": args.T, "H": args.H, "F": args.H,
               **{k + "_ms": v * 1e3 for k, v in t.items()},
               "fb_speedup": t["step_fb"] / t["forward_fb"],
               "inf_speedup": t["step_inf"] / t["forward_inf"]}
        data.append(row)
        rows.append(f"| {name} | {row['forward_fb_ms']:.0f} | {row['step_fb_ms']:.0f} | "
                    f"**{row['fb_speedup']:.1f}×** | {row['forward_inf_ms']:.0f} | "
                    f"{row['step_inf_ms']:.0f} | {row['inf_speedup']:.1f}× |")
        print(rows[-1], flush=True)


def measure_memory(args, rows, data):
    cases = [("forward", by_forward, args.mem_T), ("step loop", by_steps, args.T)]
    for name in ("BMRU", "CMRU ε=0.5"):
        for how, run, T in cases:
            torch.manual_seed(0)
            unit = UNITS[name](args.H, args.H)
            x = torch.randn(args.B, T, args.H).requires_grad_()
            total, params = saved_bytes(run, unit, x)
            row = {"unit": name, "path": how, "B": args.B, "T": T, "H": args.H, "F": args.H,
                   "input_MiB": x.nbytes / 2**20, "saved_MiB": total / 2**20,
                   "saved_params_MiB": params / 2**20, "ratio": total / x.nbytes,
                   "ratio_without_params": (total - params) / x.nbytes}
            data.append(row)
            rows.append(f"| {name} | `{how}` | {T} | {row['input_MiB']:.0f} | "
                        f"{row['saved_MiB']:.0f} | **{row['ratio']:.2f}×** | "
                        f"{row['ratio_without_params']:.2f}× |")
            print(rows[-1], flush=True)
            del x, unit


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=summary(__doc__))
    parser.add_argument("--B", type=positive_int, default=8)
    parser.add_argument("--T", type=positive_int, default=4096)
    parser.add_argument("--H", type=positive_int, default=256, help="hidden size (input size too)")
    parser.add_argument("--mem-T", type=positive_int, default=65536)
    parser.add_argument("--repeats", type=positive_int, default=5)
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="torch threads (1: steady numbers on a shared machine)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    speed_rows, mem_rows, speed, memory = [], [], [], []
    measure_speed(args, speed_rows, speed)
    measure_memory(args, mem_rows, memory)
    md = header("Memory recurrent units on the CPU") + (
        f"\n## Speed: `forward` (one scan) against `step` called T times\n\n"
        f"B={args.B}, T={args.T}, H=F={args.H}, float32. Milliseconds, medians of "
        f"{args.repeats} interleaved rounds after one warm-up round. *train*: forward and "
        "backward of `y.sum() + state.sum()` (to the input and every parameter); *inference*: "
        "forward under `torch.no_grad()`. Target (issue 4): train speed-up ≥ 3×.\n\n"
        "| unit | forward train | step train | train speed-up | forward inference | "
        "step inference | inference speed-up |\n|---|---|---|---|---|---|---|\n"
        + "\n".join(speed_rows)
        + "\n\n## Training memory: tensors saved for backward\n\n"
        "Unique storages saved by autograd during one training forward (parameters included; "
        "the input itself is saved by the Linear and counts once), as a multiple of the input "
        "tensor (B, T, F) in float32. Target (issue 4): ≤ 4× at T=65536, B=8, H=256. The step "
        "loop's ratio, measured at the speed table's T, does not depend on T.\n\n"
        "| unit | path | T | input MiB | saved MiB | saved / input | without parameters |\n"
        "|---|---|---|---|---|---|---|\n" + "\n".join(mem_rows) + "\n")
    print(write_results("units_cpu", md, {"speed": speed, "memory": memory, "args": vars(args)}))


if __name__ == "__main__":
    run_main(main)
