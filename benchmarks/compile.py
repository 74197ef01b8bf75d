"""Training steps eager and through ``torch.compile`` (``bistable train --compile``), side by side.

    python benchmarks/compile.py [--models lru bmru hybrid mingru src] [--repeats 7]
                                 [--threads 1] [--device cpu|cuda] [--name compile_cpu]

One training step = forward, cross-entropy on the last output, backward and an AdamW step, on
random inputs of a task's shape: psMNIST (batch 64, T = 784, one input, ten classes, the models at
the 38 305-parameter budget of ``benchmarks/pad_memory.py``) for the recurrent models, the
throughput anchor of issue 9 (four hidden layers of 256, batch 32, T = 220, 784 inputs; fused
loop) for ``src``. Per model: the first compiled step (compilation included), then the medians
of ``--repeats`` steps, eager and compiled taking turns; a model that fails is a row saying why.
Writes results/<name>.md and .json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import header, method, positive_int, run_main, summary, write_results  # noqa: E402
from bistable.models import build_model, count_parameters, width_for_budget  # noqa: E402

PSMNIST = {"batch": 64, "T": 784, "F": 1, "classes": 10, "params": 38305}
ANCHOR = {"batch": 32, "T": 220, "F": 784, "classes": 10, "hidden": 256, "layers": 4}


def setup(name: str, device: str):
    """``(model, x, target, shape)`` of one model at its task's shape (``shape["hidden"]``: the
    width)."""
    if name == "src":
        s = ANCHOR
        model = build_model("src", s["F"], s["classes"], hidden=s["hidden"], layers=s["layers"],
                            compile_loop=True)
        x = (torch.rand(s["batch"], s["T"], s["F"]) < 0.05).float()
    else:
        s = PSMNIST
        s = {**s, "hidden": width_for_budget(name, s["params"], s["F"], s["classes"])}
        model = build_model(name, s["F"], s["classes"], hidden=s["hidden"])
        x = torch.randn(s["batch"], s["T"], s["F"])
    target = torch.randint(0, s["classes"], (s["batch"],))
    return model.to(device), x.to(device), target.to(device), s


def timed_step(net, optimizer, x, target, sync) -> float:
    start = time.perf_counter()
    y, _ = net(x)
    loss = torch.nn.functional.cross_entropy(y[:, -1], target)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    sync()
    return time.perf_counter() - start


def measure(name: str, device: str, repeats: int) -> dict:
    torch.manual_seed(0)
    model, x, target, shape = setup(name, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    torch._dynamo.reset()
    compiled = torch.compile(model)
    first = timed_step(compiled, optimizer, x, target, sync)
    timed_step(model, optimizer, x, target, sync)  # warm-up
    times = {"eager": [], "compiled": []}
    for _ in range(repeats):
        for key, net in (("eager", model), ("compiled", compiled)):
            times[key].append(timed_step(net, optimizer, x, target, sync))
    eager, fast = (statistics.median(times[k]) for k in ("eager", "compiled"))
    return {"model": name, "params": count_parameters(model),
            "hidden": shape["hidden"],
            "batch": shape["batch"], "T": shape["T"], "first_compiled_s": first,
            "eager_ms": eager * 1e3, "compiled_ms": fast * 1e3, "speedup": eager / fast,
            "times": times}


def table(rows: list[dict]) -> str:
    lines = ["| model | parameters | hidden | batch × T | eager ms/step | compiled ms/step | "
             "eager / compiled | first compiled step (s) |",
             "|---|---:|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:  # a model that did not compile: the others still run
            lines.append(f"| {r['model']} | failed: {r['error']} | | | | | | |")
            continue
        lines.append(f"| {r['model']} | {r['params']:,} | {r['hidden']} | {r['batch']} × {r['T']} "
                     f"| {r['eager_ms']:.0f} | {r['compiled_ms']:.0f} | {r['speedup']:.2f}× "
                     f"| {r['first_compiled_s']:.0f} |")
    return "\n".join(lines)


def step_benchmark_args(doc: str, name: str, argv=None) -> argparse.Namespace:
    """The arguments of a per-model training-step benchmark (this one, ``precision.py``);
    sets the torch threads."""
    p = argparse.ArgumentParser(description=summary(doc))
    p.add_argument("--models", nargs="+", default=["lru", "bmru", "hybrid", "mingru", "src"],
                   choices=["lru", "bmru", "cmru", "hybrid", "mingru", "brc", "nbrc", "src"])
    p.add_argument("--repeats", type=positive_int, default=7)
    p.add_argument("--threads", type=positive_int, default=1)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--name", default=name)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    return args


def measure_models(args: argparse.Namespace, measure, table) -> list[dict]:
    """``measure(name, device, repeats)`` for each model, printing its row as it comes; a model
    that fails is a row saying why."""
    rows = []
    for name in args.models:
        try:
            rows.append(measure(name, args.device, args.repeats))
        except Exception as err:  # noqa: BLE001 - recorded in the table (a GPU session is short)
            rows.append({"model": name, "error": f"{type(err).__name__}: {str(err)[:200]}"})
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    return rows


def main(argv=None) -> None:
    args = step_benchmark_args(__doc__, "compile_cpu", argv)
    rows = measure_models(args, measure, table)
    text = (header("Training steps eager and compiled (`bistable train --compile`)") + "\n"
            + method(__doc__)
            .replace("``", "`")
            + " Default `torch.compile` (inductor).\n\n" + table(rows) + "\n")
    print(write_results(args.name, text, rows))


if __name__ == "__main__":
    run_main(main)
