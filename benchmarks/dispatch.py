"""Host cost of the scan's autograd: eager ``torch.autograd.Function`` against custom operators.

    python benchmarks/dispatch.py [--device cpu|cuda] [--repeats 7] [--threads 1]
                                  [--name dispatch_cpu]

In eager mode ``linear_scan`` (and, on CUDA, ``fused_mru``) call their backends through a plain
``torch.autograd.Function``; under ``torch.compile`` through the custom operators
``bistable::linear_scan`` / ``bistable::fused_mru`` (one graph node each). Both run the same
backend calls, so what differs is Python and dispatch on the host, which bounds small shapes.
Side by side, rounds taking turns, medians:

1. one call, forward + ``sum().backward()``, at B = 2, T = 64, D = 64 (µs per call, CUDA
   synchronised after each round of 200 calls): the scan's autograd with kernels that do
   nothing (the host cost alone), then ``linear_scan`` itself (and ``fused_mru`` on CUDA);
2. one training step (forward, cross-entropy on the last output, backward, AdamW) of small
   models: batch 32, T = 50, one input, ten classes, hidden 64, two layers (ms).

Writes results/<name>.md and .json.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import header, positive_int, run_main, summary, write_results  # noqa: E402
from bistable.models import build_model  # noqa: E402
from bistable.scan import dispatch, linear_scan  # noqa: E402
from bistable.scan.autograd import BACKENDS, Backend, scan_op  # noqa: E402

CALLS = 200  # calls per timed round of the single-call rows
MODELS = ("lru", "bmru", "hybrid")


@contextlib.contextmanager
def operators():
    """Eager calls go through the custom operators, as before the eager autograd path."""
    saved = dispatch.scan
    dispatch.scan = scan_op
    fused = None
    with contextlib.suppress(ImportError):
        from bistable.scan import triton_bmru as fused
        eager_mru = fused._EagerFusedMRU
        fused._EagerFusedMRU = type("Op", (), {"apply": staticmethod(fused.fused_mru_op)})
    try:
        yield
    finally:
        dispatch.scan = saved
        if fused is not None:
            fused._EagerFusedMRU = eager_mru


def _nothing(a, b, h0, reverse):
    return torch.empty_like(b)


def _nothing_back(a, h, h0, grad_h, reverse, need_da):
    return torch.empty_like(a) if need_da else None, torch.empty_like(grad_h), None


def single_calls(device: str) -> dict:
    """What one call of each op costs: ``fn() -> None`` per name. *host only*: a backend whose
    kernels do nothing, so that the row is the autograd path's own cost."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 64, 64, generator=g), torch.randn(2, 64, 64, generator=g)
    a, b = a.to(device).requires_grad_(), b.to(device).requires_grad_()
    BACKENDS["nothing"] = Backend(_nothing, _nothing_back)
    calls = {"scan autograd, host only": lambda: dispatch.scan(
                 a, b, None, False, "nothing").sum().backward(),
             "linear_scan": lambda: linear_scan(a, b).sum().backward()}
    if device == "cuda":
        from bistable.scan.triton_bmru import fused_mru

        c = (a.detach() - 0.5).requires_grad_()
        calls["fused_mru"] = lambda: fused_mru(c, b).sum().backward()
    return calls


def step_calls(device: str) -> dict:
    """One training step of each small model: ``fn() -> None`` per name."""
    calls = {}
    for name in MODELS:
        torch.manual_seed(0)
        model = build_model(name, 1, 10, hidden=64, layers=2).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        x = torch.randn(32, 50, 1, device=device)
        target = torch.randint(0, 10, (32,), device=device)

        def step(model=model, optimizer=optimizer, x=x, target=target):
            y, _ = model(x)
            loss = torch.nn.functional.cross_entropy(y[:, -1], target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        calls[f"{name} training step"] = step
    return calls


def side_by_side(calls: dict, repeats: int, n: int, sync) -> list[dict]:
    """Per call, seconds: medians of ``repeats`` rounds of ``n`` calls, the paths taking turns."""
    rows = []
    for name, fn in calls.items():
        times = {"function": [], "operators": []}
        for path in (None, *["function", "operators"] * repeats):
            with operators() if path == "operators" else contextlib.nullcontext():
                sync()
                start = time.perf_counter()
                for _ in range(n):
                    fn()
                sync()
                if path is not None:  # the first round warms up
                    times[path].append((time.perf_counter() - start) / n)
        eager, ops = (statistics.median(times[k]) for k in ("function", "operators"))
        rows.append({"call": name, "function_s": eager, "operators_s": ops,
                     "speedup": ops / eager, "times": times})
        print(rows[-1]["call"], f"{eager * 1e6:.1f} µs / {ops * 1e6:.1f} µs", flush=True)
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=summary(__doc__))
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--repeats", type=positive_int, default=7)
    p.add_argument("--threads", type=positive_int, default=1)
    p.add_argument("--name", default=None, help="results/NAME.md (default dispatch_<device>)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    rows = (side_by_side(single_calls(args.device), args.repeats, CALLS, sync)
            + side_by_side(step_calls(args.device), args.repeats, 5, sync))
    md = (header("The scan's autograd on the host: autograd.Function against custom operators")
          + f"\nDevice {args.device}, {args.threads} thread(s). *function*: eager mode's "
          "`torch.autograd.Function` (the library's eager path); *operators*: the custom "
          "operators `bistable::linear_scan` / `bistable::fused_mru` called in eager mode (the "
          "path before, and what `torch.compile` calls). Same backend calls behind both. "
          f"Medians of {args.repeats} rounds, the paths taking turns: single calls (forward + "
          f"`sum().backward()`, B = 2, T = 64, D = 64) per call over rounds of {CALLS}, "
          "*host only* with a backend whose kernels do nothing (`torch.empty_like`); "
          "training steps (batch 32, T = 50, hidden 64, two layers, AdamW) over rounds of 5.\n\n"
          "| call | function | operators | operators / function |\n|---|---:|---:|---:|\n")
    for r in rows:
        unit, scale = ("µs", 1e6) if "step" not in r["call"] else ("ms", 1e3)
        md += (f"| {r['call']} | {r['function_s'] * scale:.1f} {unit} | "
               f"{r['operators_s'] * scale:.1f} {unit} | {r['speedup']:.2f}× |\n")
    print(write_results(args.name or f"dispatch_{args.device}", md, rows))


if __name__ == "__main__":
    run_main(main)
