"""Gradient norms per layer in deep SRC and LIF stacks (issue 9) → results/src_gradients.md.

For each network (SRC with full BPTT, SRC with ``detach_recurrent=True``, the snnTorch LIF peer),
``--depth`` hidden layers of ``--hidden``, train on the first ``--train-samples`` MNIST images
(rate-coded, batch ``--batch``, Adam ``--lr``) for ``--steps`` steps and record, per layer, the
norm of the weight gradient ``‖∂L/∂W_l‖`` (median over the last ``--window`` steps before each
checkpoint step), the running training loss, and the test accuracy at the end.

``growth`` is the geometric-mean factor by which the gradient norm grows from one layer to the
one before it (output → input); 1 is balanced, ≫ 1 explodes toward the input.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import (  # noqa: E402
    header,
    positive_float,
    positive_int,
    run_main,
    summary,
    write_results,
)
from benchmarks.src import load  # noqa: E402
from bistable.nn.encoders import rate_code  # noqa: E402
from bistable.nn.spiking import SpikingNetwork  # noqa: E402

SETUPS = {"src (full BPTT)": ("src", {"compile_loop": True}),
          "src (detached recurrence)": ("src", {"compile_loop": True, "detach_recurrent": True}),
          "lif": ("lif", {})}


def growth(norms: list[float]) -> float:
    """Geometric-mean ratio ``‖g_l‖ / ‖g_{l+1}‖`` over the layers with a non-zero gradient."""
    ratios = [a / b for a, b in zip(norms, norms[1:]) if a > 0 and b > 0]
    return math.exp(statistics.fmean(math.log(r) for r in ratios)) if ratios else float("nan")


def weight(layer) -> torch.Tensor:
    """A layer's input weights ``W`` (SRC: ``weight``; LIF: its ``nn.Linear``)."""
    return layer.linear.weight if hasattr(layer, "linear") else layer.weight


def run(name, kind, kw, args, data) -> dict:
    (x, y), (xt, yt) = data
    torch.manual_seed(args.seed)
    net = SpikingNetwork(kind, 784, args.hidden, args.depth, **kw)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    marks = sorted({0, *args.at, args.steps - 1})
    history, recent, loss_avg, rows = [], [], None, []
    for step in range(args.steps):
        b = torch.randint(0, len(y), (args.batch,), generator=gen)
        R, _ = net(rate_code(x[b], generator=gen))
        loss = F.cross_entropy(R[:, -1], y[b])
        opt.zero_grad()
        loss.backward()
        recent.append([float(weight(layer).grad.norm()) for layer in net.layers])
        recent = recent[-args.window:]
        opt.step()
        loss_avg = loss.item() if loss_avg is None else 0.9 * loss_avg + 0.1 * loss.item()
        if step in marks:
            norms = [statistics.median(col) for col in zip(*recent)]
            history.append({"step": step, "loss": loss_avg, "grad_norms": norms,
                            "growth": growth(norms)})
            print(name, history[-1], flush=True)
    with torch.no_grad():
        correct = sum(int((net(rate_code(xt[s:s + 100], generator=gen))[0][:, -1].argmax(1)
                           == yt[s:s + 100]).sum()) for s in range(0, len(yt), 100))
    for h in history:
        rows.append({"network": name, "step": h["step"], "train_loss": h["loss"],
                     "growth": h["growth"],
                     "grad_norm_per_layer": " ".join(f"{v:.1e}" for v in h["grad_norms"])})
    rows[-1]["test_accuracy"] = 100.0 * correct / len(yt)
    return {"name": name, "history": history, "rows": rows}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=summary(__doc__))
    p.add_argument("--depth", type=positive_int, default=8)
    p.add_argument("--hidden", type=positive_int, default=128)
    p.add_argument("--steps", type=positive_int, default=300)
    p.add_argument("--at", type=positive_int, nargs="*", default=[100], help="more steps to report")
    p.add_argument("--window", type=positive_int, default=10)
    p.add_argument("--batch", type=positive_int, default=32)
    p.add_argument("--lr", type=positive_float, default=1e-3)
    p.add_argument("--train-samples", type=positive_int, default=10000)
    p.add_argument("--test-samples", type=positive_int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--networks", nargs="*", default=list(SETUPS), choices=list(SETUPS))
    p.add_argument("--threads", type=positive_int, default=1)
    p.add_argument("--name", default="src_gradients")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = []
    for split, n in (("train", args.train_samples), ("test", args.test_samples)):
        images, labels = load(args, "mnist", split, n)
        data.append((images, labels.long()))
    runs = [run(name, *SETUPS[name], args, data) for name in args.networks]
    keys = ["network", "step", "train_loss", "growth", "grad_norm_per_layer", "test_accuracy"]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in (row for run_ in runs for row in run_["rows"]):
        cells = [f"{r[k]:.3g}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    md = (header("Gradient norms per layer in deep spiking networks") + "\n"
          f"{args.depth} hidden layers of {args.hidden} (then the 100 output neurons), MNIST "
          f"(first {args.train_samples} training images, rate-coded, 20 silent + 200 coded "
          f"steps), batch {args.batch}, Adam lr {args.lr}, seed {args.seed}, {args.steps} steps. "
          "`grad_norm_per_layer`: ‖∂L/∂W‖ from the first layer (input side) to the output layer, "
          f"median over the last {args.window} steps up to `step`; `growth`: geometric-mean "
          "ratio of consecutive layers' norms (output → input; > 1 grows toward the input); "
          "`train_loss`: running mean (0.9); `test_accuracy` on the first "
          f"{args.test_samples} test images after the last step.\n\n" + "\n".join(lines) + "\n")
    path = write_results(args.name, md, {"args": vars(args), "runs": runs})
    print(md + f"\nwrote {path}")


if __name__ == "__main__":
    run_main(main)
