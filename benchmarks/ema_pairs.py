"""The last weights against their moving average (``bistable train --ema``), side by side: each
run's checkpoint holds both, from one training, so the pair differs only in which weights are
tested → results/ema_pairs.md.

    python benchmarks/ema_pairs.py runs/src/RUN ...            # finished --ema runs
    python benchmarks/ema_pairs.py runs/src/RUN ... --name NAME
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import header, run_main, summary, train_command, write_results  # noqa: E402
from bistable.train import evaluate  # noqa: E402
from bistable.train.loop import autocast, read_run, run_from  # noqa: E402


def pair(run: Path) -> dict:
    """Test accuracy and loss (the run's test set and precision, on the CPU) of the last weights
    and of the average in ``run``'s checkpoint."""
    saved = read_run(run)
    if saved["step"] < saved["config"]["steps"]:  # its checkpoint holds weights of mid-training
        raise ValueError(f"{run}: not finished (step {saved['step']} of "
                         f"{saved['config']['steps']}); the pair scores a finished run")
    if not saved.get("ema"):
        raise ValueError(f"{run}: not an --ema run (its checkpoint holds no moving average)")
    if saved.get("best"):
        raise ValueError(f"{run}: a --keep-best run; its best weights are neither of the pair")
    c = saved["config"]
    task, model = run_from(saved)  # the weights scored: the average
    scores = {}
    with autocast(c.get("precision") or "fp32", torch.device("cpu")):
        for weights in ("ema", "last"):
            if weights == "last":
                model.load_state_dict(saved["model"])
            scores[weights] = evaluate(model, task, "test", c["seq_len"], n=c["eval_samples"])
    return {"run": str(run), "step": saved["step"], "decay": c["ema"], "seed": c["seed"],
            "task": c["task"], "model": c["model"], "hidden": c["hidden"],
            "accuracy": {k: v["accuracy"] for k, v in scores.items()},
            "loss": {k: v["loss"] for k, v in scores.items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=summary(__doc__))
    p.add_argument("runs", nargs="+", type=Path, help="folders of finished --ema runs")
    p.add_argument("--name", default="ema_pairs", help="results/NAME.md")
    args = p.parse_args()
    torch.set_num_threads(1)
    pairs = [pair(run) for run in args.runs]
    lines = [header("The last weights against their moving average (--ema)"), "",
             "Each row is one `bistable train --ema D` run: its checkpoint keeps the last weights "
             "and their exponential moving average (decay D), trained together; both are tested "
             "here on the run's test set (all of it for a data set), in the run's precision, on "
             "this machine. Δ = average − last.", "",
             "| run | task | model | hidden | seed | decay | steps | last: accuracy (%) | "
             "average: accuracy (%) | Δ (points) | last: loss | average: loss |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in pairs:
        acc, loss = r["accuracy"], r["loss"]
        delta = (f"{100 * (acc['ema'] - acc['last']):+.2f}"
                 if acc["ema"] is not None and acc["last"] is not None else "—")
        lines.append(f"| {Path(r['run']).name} | {r['task']} | {r['model']} | {r['hidden']} | "
                     f"{r['seed']} | {r['decay']} | {r['step']} | {_pct(acc['last'])} | "
                     f"{_pct(acc['ema'])} | {delta} | {loss['last']:.4f} | {loss['ema']:.4f} |")
    lines += ["", "Commands: " + "; ".join(_command(r["run"]) for r in pairs), ""]
    print(f"wrote {write_results(args.name, chr(10).join(lines), pairs)}")


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}"


def _command(run: str) -> str:
    """The run's ``bistable train`` command where ``benchmarks/spiking_runs.py`` defines it, else
    where its settings are."""
    from benchmarks.spiking_runs import RUNS, arguments

    name = Path(run).name
    if name in RUNS:
        return f"`{train_command(arguments(name), run)}`"
    return f"{run}: settings in its metrics.json"


if __name__ == "__main__":
    run_main(main)
