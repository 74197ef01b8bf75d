"""Speed of ``linear_scan`` against a plain PyTorch loop and the memory-traffic floor.

    python benchmarks/scan.py [--device cpu|cuda] [--T 256 4096 65536] [--B 8] [--D 256]

CPU: for each T and dtype, forward and forward+backward medians of
- ``linear_scan`` (the chunked CPU backend, analytic backward),
- the best plain loop (``unbind`` over time, autograd through the loop),
- the same-bytes floor: one fused elementwise op reading a, b and writing h (``torch.mul``).
Writes results/scan_cpu.md and .json. ``--device cuda`` runs benchmarks/scan_cuda.py instead.
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
from bistable.scan import linear_scan  # noqa: E402


def plain_loop(a, b):
    """The fastest plain PyTorch recurrence: iterate over unbound time slices."""
    h = torch.zeros_like(b[:, 0])
    out = []
    for a_t, b_t in zip(a.unbind(1), b.unbind(1)):
        h = torch.addcmul(b_t, a_t, h)
        out.append(h)
    return torch.stack(out, 1)


def fwd_bwd(fn, a, b):
    a, b = a.detach().requires_grad_(), b.detach().requires_grad_()
    fn(a, b).float().sum().backward()


def run_cpu(args) -> None:
    rows, data = [], []
    for dtype in (torch.float32, torch.bfloat16):
        for T in args.T:
            g = torch.Generator().manual_seed(0)
            a = (torch.rand(args.B, T, args.D, generator=g) * 0.1 + 0.9).to(dtype)
            b = torch.randn(args.B, T, args.D, generator=g).to(dtype)
            t = side_by_side({
                "scan_fwd": lambda: linear_scan(a, b),
                "loop_fwd": lambda: plain_loop(a, b),
                "floor_fwd": lambda: torch.mul(a, b),
                "scan_fb": lambda: fwd_bwd(linear_scan, a, b),
                "loop_fb": lambda: fwd_bwd(plain_loop, a, b),
            }, 3 if T >= 65536 else args.repeats)
            n = a.numel()
            row = {"dtype": str(dtype).removeprefix("torch."), "T": T, "B": args.B, "D": args.D,
                   **{k: v * 1e3 for k, v in t.items()},
                   "scan_fwd_Gelem_s": n / t["scan_fwd"] / 1e9,
                   "fwd_speedup_vs_loop": t["loop_fwd"] / t["scan_fwd"],
                   "fb_speedup_vs_loop": t["loop_fb"] / t["scan_fb"],
                   "fwd_over_floor": t["scan_fwd"] / t["floor_fwd"]}
            data.append(row)
            rows.append(
                f"| {row['dtype']} | {T} | {row['scan_fwd']:.2f} | {row['loop_fwd']:.1f} | "
                f"{row['floor_fwd']:.2f} | {row['fwd_over_floor']:.2f}× | "
                f"{row['fwd_speedup_vs_loop']:.1f}× | {row['scan_fb']:.2f} | "
                f"{row['loop_fb']:.1f} | "
                f"{row['fb_speedup_vs_loop']:.1f}× | {row['scan_fwd_Gelem_s']:.2f} |")
            print(rows[-1], flush=True)
    md = header("linear_scan on the CPU") + (
        f"\nB={args.B}, D={args.D}; medians of {args.repeats} interleaved rounds (3 at T ≥ 65536) "
        "after one warm-up round, milliseconds. *loop*: the best plain PyTorch loop (`unbind` + "
        "`addcmul`, autograd through the loop); *floor*: `torch.mul(a, b)`, one elementwise op "
        "moving the same bytes as the scan's forward (read a, b, write h). fwd+bwd includes the "
        "backward to a and b.\n\n"
        "| dtype | T | scan fwd | loop fwd | floor fwd | scan/floor | fwd speed-up | scan fwd+bwd |"
        " loop fwd+bwd | fwd+bwd speed-up | scan Gelem/s |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    print(write_results("scan_cpu", md, data))


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    device = argparse.ArgumentParser(add_help=False)
    device.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    picked, rest = device.parse_known_args(argv)
    if picked.device == "cuda":  # every other flag is scan_cuda's (its own --T, --B, --D)
        from benchmarks import scan_cuda

        scan_cuda.main(rest)
        return
    p = argparse.ArgumentParser(description=summary(__doc__), parents=[device])
    p.add_argument("--T", type=positive_int, nargs="+", default=[256, 4096, 65536])
    p.add_argument("--B", type=positive_int, default=8)
    p.add_argument("--D", type=positive_int, default=256)
    p.add_argument("--repeats", type=positive_int, default=7)
    run_cpu(p.parse_args(argv))


if __name__ == "__main__":
    run_main(main)
