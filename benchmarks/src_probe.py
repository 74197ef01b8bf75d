"""Where does a trained spiking network lose its accuracy? Eval-only probes of finished
``bistable train`` runs on a rate-coded image task → results/src_probe.md:

- the rate code's draws: the test accuracy of each of ``k`` Bernoulli codings of the test images
  (how much the single draw a run is scored with moves its figure), and with the scores ``R[T]``
  of the ``k`` codings summed (as a presentation ``k`` times longer would give);
- the output layer: a linear probe (softmax regression, L-BFGS, ridge ``λ`` chosen on held-out
  training images) on the last hidden layer's integrated output ``Σ_t out[t]``, beside the
  network's own readout;
- the fit: the network's accuracy on training images beside the test images.

    python benchmarks/src_probe.py runs/src/RUN ... [--draws 5] [--train-images 20000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import (  # noqa: E402
    header,
    mean_std,
    positive_int,
    run_main,
    summary,
    write_results,
)
from bistable.nn.spiking import SpikingNetwork  # noqa: E402
from bistable.train.loop import autocast, read_run, run_from  # noqa: E402

RIDGE = (1e-4, 1e-3, 1e-2, 1e-1)  # λ tried on the standardised integrated outputs
HELD_OUT = 0.25  # of the probe's training images, to choose λ
BATCH = 250


def scores(model, task, split: str, index: torch.Tensor, seq_len: int, draws: int,
           generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each of ``draws`` codings of the images at ``index``: ``R[T]`` ``(draws, N, C)`` and
    the last hidden layer's ``Σ_t out[t]`` ``(draws, N, H)``; and the labels."""
    R_all, h_all, y_all = [], [], []
    with torch.no_grad():
        for chunk in index.split(BATCH):
            R_k, h_k = [], []
            for _ in range(draws):
                x, y = task.examples(split, chunk, seq_len, generator)
                R, _, spikes = model.run(x)
                R_k.append(R[:, -1].float())
                h_k.append(spikes[-2].float().sum(1))  # spikes[-1]: the output neurons
            R_all.append(torch.stack(R_k))
            h_all.append(torch.stack(h_k))
            y_all.append(y)
    return torch.cat(R_all, 1), torch.cat(h_all, 1), torch.cat(y_all)


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(1) == y).float().mean())


def fit_probe(h: torch.Tensor, y: torch.Tensor, ridge: float, n_classes: int):
    """Softmax regression ``h W + b`` on standardised ``h``, cross-entropy + ``ridge · |W|²``."""
    mu, sd = h.mean(0), h.std(0) + 1e-3
    z = ((h - mu) / sd).double()
    W = torch.zeros(h.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z @ W + b, y) + ridge * W.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    W, b = W.detach(), b.detach()
    return lambda h_new: ((h_new - mu) / sd).double() @ W + b


def probe_run(run: Path, draws: int, train_images: int) -> dict:
    """The probes of the finished run in ``run``, on the CPU in the run's precision."""
    saved = read_run(run)
    c = saved["config"]
    if saved["step"] < c["steps"]:
        raise ValueError(f"{run}: not finished (step {saved['step']} of {c['steps']})")
    task, model = run_from(saved)
    if not isinstance(model, SpikingNetwork) or len(model.layers) < 2:  # hidden + output
        raise ValueError(f"{run}: expected a spiking network with a hidden layer (model "
                         f"{c['model']!r}, task {c['task']!r})")
    n_train = task.size("train")
    if train_images > n_train:
        raise ValueError(f"--train-images: expected at most {n_train} (the run's training "
                         f"images), got {train_images}")
    test = torch.arange(task.size("test"))
    train = torch.randperm(n_train, generator=torch.Generator().manual_seed(0))[:train_images]
    gen = torch.Generator().manual_seed(1)
    with autocast(c.get("precision") or "fp32", torch.device("cpu")):
        R, h, y_test = scores(model, task, "test", test, c["seq_len"], draws, gen)
        R_tr, h_tr, y_tr = scores(model, task, "train", train, c["seq_len"], 1, gen)
    R_tr, h_tr = R_tr[0], h_tr[0]
    cut = int(len(train) * (1 - HELD_OUT))
    held = {lam: accuracy(fit_probe(h_tr[:cut], y_tr[:cut], lam, R.shape[2])(h_tr[cut:]),
                          y_tr[cut:]) for lam in RIDGE}
    lam = max(RIDGE, key=lambda k: (held[k], k))  # the strongest ridge among the best
    probe = fit_probe(h_tr, y_tr, lam, R.shape[2])
    return {"run": str(run), "task": c["task"], "model": c["model"], "hidden": c["hidden"],
            "layers": c["layers"], "seed": c["seed"], "precision": c.get("precision") or "fp32",
            "draws": draws, "train_images": train_images, "test_images": len(test),
            "accuracy": {"test_each": [accuracy(r, y_test) for r in R],
                         "test_summed": accuracy(R.sum(0), y_test),
                         "train": accuracy(R_tr, y_tr)},
            "probe": {"ridge": lam, "held_out": held, "train": accuracy(probe(h_tr), y_tr),
                      "test_each": [accuracy(probe(x), y_test) for x in h],
                      "test_averaged": accuracy(probe(h.mean(0)), y_test)}}


def table(rows: list[dict]) -> list[str]:
    pct = lambda x: f"{100 * x:.2f}"  # noqa: E731
    lines = ["| run | hidden | test: one draw | test: k draws summed | train images | "
             "probe: λ | probe: train | probe: test, one draw | probe: test, k draws averaged |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        a, p = r["accuracy"], r["probe"]
        lines.append(f"| {Path(r['run']).name} | {r['layers']} × {r['hidden']} | "
                     f"{mean_std([100 * x for x in a['test_each']], '.2f')} | "
                     f"{pct(a['test_summed'])} (k = {r['draws']}) | {pct(a['train'])} | "
                     f"{p['ridge']:g} | {pct(p['train'])} | "
                     f"{mean_std([100 * x for x in p['test_each']], '.2f')} | "
                     f"{pct(p['test_averaged'])} |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=summary(__doc__))
    p.add_argument("runs", nargs="+", type=Path, help="folders of finished spiking-image runs")
    p.add_argument("--draws", type=positive_int, default=5,
                   help="Bernoulli codings of each test image, scored each and summed (5)")
    p.add_argument("--train-images", type=positive_int, default=20000,
                   help="training images for the probe and the training accuracy (20000)")
    p.add_argument("--threads", type=positive_int, default=2, help="CPU threads (2)")
    p.add_argument("--name", default="src_probe", help="results/NAME.md")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for run in args.runs:
        rows.append(probe_run(run, args.draws, args.train_images))
        print(table(rows)[-1], flush=True)
    lines = [header("Where a spiking network loses its accuracy: eval-only probes"), "",
             "Each row is one finished `bistable train` run, its selected weights scored on the "
             "CPU in the run's precision. **test: one draw**: all test images, one Bernoulli "
             "coding each, as the run is scored: mean ± std over the k draws (this script's "
             "draws, not the run's: its recorded figure is one more). **test: k draws summed**: "
             "the scores R[T] of the k codings of each image summed, as a presentation k times "
             "longer would give. **train images**: the network's accuracy on that many training "
             "images (one draw). **probe**: softmax regression on the last hidden layer's "
             "integrated output Σ_t out[t] (standardised), fitted on the same training images "
             f"with the ridge λ of {', '.join(map(str, RIDGE))} that scored best on "
             f"{HELD_OUT:.0%} of them held out; tested on the hidden outputs of each draw of the "
             "test images (mean ± std), and on their average over the k draws. A probe at the "
             "network's level means the output layer and its readout lose nothing that a "
             "linear read of the hidden layer keeps.", "", *table(rows), ""]
    print(f"wrote {write_results(args.name, chr(10).join(lines), rows)}")


if __name__ == "__main__":
    run_main(main)
