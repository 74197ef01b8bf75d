"""What the units of a trained psMNIST run hold: linear probes on their outputs.

    python benchmarks/memory_probe.py RUN [RUN ...] [--train 10000] [--test 2000]
                                      [--name memory_probe]

For each run of ``benchmarks/pad_memory.py`` (a folder under runs/pad_memory) and each mixer unit
(block, lru or bmru), a multinomial logistic regression (L-BFGS, L2 1e-4) is fitted on the
unit's outputs ``y`` (B, H) at the last pixel of the first ``--train`` training digits, and at
the end of the run's pad when it has one, then scored on the first ``--test`` test digits: how
much of the digit each unit carries, and how much of it survives the pad. 'all': every unit of
the last block together. Writes results/<name>.md and .json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import header, method, positive_int, run_main, summary, write_results  # noqa: E402
from benchmarks.pad_memory import RUNS_DIR, recording  # noqa: E402
from bistable.train.loop import load_run  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BATCH = 250


@torch.no_grad()
def features(task, model, split: str, n: int) -> tuple[dict, torch.Tensor]:
    """``{(block, unit, where): (n, H)}`` of the units' outputs at the last pixel ('pixel') and
    the last step ('end'), and the labels."""
    T = task.seq_len(None)
    where = {"pixel": T - task.pad - 1, **({"end": T - 1} if task.pad else {})}
    out, labels = {}, []
    for start in range(0, n, BATCH):
        index = torch.arange(start, min(start + BATCH, n))
        x, y = task.examples(split, index, T, torch.Generator().manual_seed(0))
        labels.append(y)
        with recording(model) as records:
            model(x)
        for (block, unit), (_, _, h) in records.items():
            for name, t in where.items():
                out.setdefault((block, unit, name), []).append(h[:, t])
    return {k: torch.cat(v) for k, v in out.items()}, torch.cat(labels)


def probe(train_x, train_y, test_x, test_y, classes: int = 10) -> float:
    """Test accuracy of a multinomial logistic regression fitted on standardised features."""
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    a, b = (train_x - mean) / std, (test_x - mean) / std
    w = torch.zeros(a.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, bias], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(a @ w + bias, train_y) + 1e-4 * w.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return float(((b @ w + bias).argmax(1) == test_y).float().mean())


def run_rows(run: str, n_train: int, n_test: int) -> list[dict]:
    task, model = load_run(ROOT / RUNS_DIR / run)
    train, test = features(task, model, "train", n_train), features(task, model, "test", n_test)
    (tr, ytr), (te, yte) = train, test
    last = max(block for block, _, _ in tr)
    rows = []
    for where in ("pixel", "end"):
        keys = [k for k in tr if k[2] == where]
        if not keys:
            continue
        for key in keys:
            rows.append({"run": run, "pad": task.pad, "where": where, "unit": f"{key[0]}:{key[1]}",
                         "width": tr[key].shape[1],
                         "accuracy": probe(tr[key], ytr, te[key], yte)})
        both = [k for k in keys if k[0] == last]
        if len(both) > 1:
            rows.append({"run": run, "pad": task.pad, "where": where, "unit": f"{last}:all",
                         "width": sum(tr[k].shape[1] for k in both),
                         "accuracy": probe(torch.cat([tr[k] for k in both], 1), ytr,
                                           torch.cat([te[k] for k in both], 1), yte)})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| run | pad | read at | block:unit | width | probe accuracy |",
             "|---|---:|---|---|---:|---:|"]
    lines += [f"| {r['run']} | {r['pad']} | {'last pixel' if r['where'] == 'pixel' else 'end'} "
              f"| {r['unit']} | {r['width']} | {r['accuracy']:.3f} |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=summary(__doc__))
    p.add_argument("runs", nargs="+", metavar="RUN", help=f"folders under {RUNS_DIR}")
    p.add_argument("--train", type=positive_int, default=10_000)
    p.add_argument("--test", type=positive_int, default=2_000)
    p.add_argument("--threads", type=positive_int, default=1)
    p.add_argument("--name", default="memory_probe")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    for run in args.runs:
        if not (ROOT / RUNS_DIR / run / "checkpoint.pt").is_file():
            p.error(f"no run {run!r} in {RUNS_DIR} (train it with benchmarks/pad_memory.py)")
    rows = []
    for run in args.runs:
        rows += run_rows(run, args.train, args.test)
        print(table(rows), flush=True)
    text = (header("What the units hold: linear probes on a trained run's units") + "\n"
            + method(__doc__)
            .replace("``", "`") + "\n\n" + table(rows) + "\n")
    print(write_results(args.name, text, rows))


if __name__ == "__main__":
    run_main(main)
