"""Long-term memory benchmark (issue 6): every model at a matched parameter budget, several seeds,
on copy-first-input (train T = 50 and 200, evaluated at 1×, 10×, 100×, 1000× T), denoising
(gap 200) and psMNIST (with and without ``--pad 1000``, and with a pad of 0 … 1000 steps).
Writes results/memory_tasks.md/.json.

Each cell is one ``bistable train`` run (its command is in the table); finished runs are kept
under ``--runs`` and reused, cut-off ones resumed from their last checkpoint, so the driver can be
stopped and started again. The full protocol::

    python benchmarks/memory_tasks.py --full

is days of CPU time (hours on a GPU with ``--device cuda``); ``--models``, ``--seeds``,
``--experiments`` and ``--steps`` (or ``--minutes``) select a reduced version, which the results
file labels as such. ``--finished`` tabulates the runs that have finished without training any:
each row then counts its own seeds. ``--reuse FILE`` takes the runs a results file (.json) records
as finished where ``--runs`` lacks them (runs trained on another machine, whose folder is gone), and
``--option KEY=VALUE`` passes a model option to every model (e.g. ``compile_loop=True``: the BRCs'
fused loop).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    LATE_MIXER,
    check_reused,
    evaluations,
    header,
    mean_std,
    positive_float,
    positive_int,
    quote,
    run_main,
    summary,
    write_results,
)
from bistable.models import MODEL_NAMES, build_model, count_parameters  # noqa: E402
from bistable.train import TrainConfig, train  # noqa: E402
from bistable.train.commands import parse_option  # noqa: E402

RECURRENT = ["bmru", "cmru", "lru", "hybrid", "brc", "nbrc", "mingru", "gru", "lstm"]
# experiment name -> (task, seq_len, horizon factors, extra settings)
EXPERIMENTS = {
    "copy50": ("copy-first-input", 50, (1, 10, 100, 1000), {}),
    "copy200": ("copy-first-input", 200, (1, 10, 100, 1000), {}),
    "denoising": ("denoising", 300, (1, 10), {"gap": 200}),
    "psmnist": ("psmnist", None, (1,), {}),
    "psmnist-pad1000": ("psmnist", None, (1,), {"pad": 1000}),
    # each training batch's pad drawn from 0 … 1000; evaluated at 1784 and 17 840 steps
    "psmnist-varpad1000": ("psmnist", 1784, (1, 10), {"pad": 1000, "pad_min": 0}),
}
# named variants: model -> (registry name, model options merged into the task's defaults,
# training settings)
DETACHED = {"unit_kwargs": {"bmru": {"detach_input": True}}}
LATE = {"mixer": LATE_MIXER}
VARIANTS = {
    "hybrid-alternating": ("hybrid", {"mixer": "lru,bmru"}, {}),
    "hybrid-detached": ("hybrid", DETACHED, {}),
    "hybrid-detached-penalty": ("hybrid", DETACHED, {"write_penalty": 100.0}),
    "hybrid-penalty10": ("hybrid", {}, {"write_penalty": 10.0}),
    # BMRUs from the second block on (an LRU block first)
    "hybrid-late": ("hybrid", LATE, {}),
    "hybrid-late-penalty10": ("hybrid", LATE, {"write_penalty": 10.0}),
}
FACTORS = (1, 10, 100, 1000)
DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mnist"


def budget() -> int:
    """The matched budget: the default hybrid of the synthetic tasks (hidden 32, 2 layers)."""
    model = build_model("hybrid", 1, 1, hidden=32, layers=2)
    return count_parameters(model)


def command(c: TrainConfig) -> str:
    """The ``bistable train`` command line equivalent to ``c``."""
    parts = ["bistable train", c.task, "--model", c.model, "--params", str(c.params),
             "--seed", str(c.seed), "--out", c.out]
    for key, value in c.model_options.items():
        parts += ["--option", quote(f"{key}={value}")]
    for flag, value in (("--seq-len", c.seq_len), ("--steps", c.steps), ("--gap", c.gap),
                        ("--pad", c.pad), ("--pad-min", c.pad_min), ("--data-dir", c.data_dir),
                        ("--device", c.device), ("--threads", c.threads),
                        ("--write-penalty", c.write_penalty or None)):
        if value is not None and not (flag == "--device" and value == "cpu"):
            parts += [flag, str(value)]
    if c.eval_seq_len:
        parts += ["--eval-seq-len", *map(str, c.eval_seq_len)]
    return " ".join(parts)


def fit_steps(c: TrainConfig, minutes: float) -> int:
    """Training steps of ``c`` that fit in ``minutes``, from the median throughput of a 60-step
    pilot run (its first 20 steps, with compilation, left out)."""
    pilot = dataclasses.replace(c, steps=60, warmup=0, out=c.out + "-pilot", log_every=10,
                                eval_every=60, eval_samples=256, eval_seq_len=[])
    metrics = run(pilot)
    rate = statistics.median(h["samples_per_s"] for h in metrics["history"] if h["step"] > 20)
    return max(1, int(minutes * 60 * rate / metrics["config"]["batch_size"]))


def run(c: TrainConfig) -> dict:
    """Train (reuse the finished run in ``c.out``, or resume the one cut off there from its
    checkpoint) and return its metrics."""
    path = Path(c.out) / "metrics.json"
    if path.is_file():
        metrics = json.loads(path.read_text())
        check_reused(metrics, c, c.out)
        return metrics
    print(command(c), flush=True)
    return train(dataclasses.replace(c, resume=(Path(c.out) / "checkpoint.pt").is_file()))


def main() -> None:
    parser = argparse.ArgumentParser(description=summary(__doc__))
    parser.add_argument("--full", action="store_true", help="every model, experiment, 3 seeds")
    parser.add_argument("--models", nargs="+", default=["hybrid", "bmru", "lru", "gru", "lstm"],
                        choices=[*MODEL_NAMES, *VARIANTS])
    parser.add_argument("--experiments", nargs="+", default=["copy50"], choices=list(EXPERIMENTS))
    parser.add_argument("--seeds", type=positive_int, default=1)
    parser.add_argument("--finished", action="store_true", help="tabulate the finished runs "
                        "among those selected, train none (a row per model with one or more)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--steps", type=positive_int, help="training steps (default: the task's)")
    length.add_argument("--minutes", type=positive_float, help="training steps that fit in this "
                        "many minutes per run, measured by a 60-step pilot run")
    parser.add_argument("--max-factor", type=positive_int, default=100,
                        help="largest horizon factor evaluated (full: 1000)")
    parser.add_argument("--params", type=positive_int, help="the matched parameter budget "
                        "(default: the synthetic tasks' hybrid, hidden 32)")
    parser.add_argument("--data-dir", default=str(DATA.resolve()), help="MNIST folder (psMNIST)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=positive_int)
    parser.add_argument("--runs", default="runs/memory_tasks", help="folder of the runs")
    parser.add_argument("--reuse", type=Path, help="a results .json whose recorded runs count as "
                        "finished where --runs lacks them")
    parser.add_argument("--option", type=parse_option, action="append", metavar="KEY=VALUE",
                        help="model option for every model (repeatable)")
    parser.add_argument("--name", default="memory_tasks", help="results/<name>.md and .json")
    args = parser.parse_args()
    if args.full:
        args.models, args.experiments, args.seeds = RECURRENT, list(EXPERIMENTS), 3
        args.max_factor = 1000
    # the full protocol at fewer steps than the tasks' own is not the full protocol
    reduced = not args.full or args.steps is not None or args.minutes is not None
    params = args.params or budget()
    recorded = ({r["config"]["out"]: r for r in json.loads(args.reuse.read_text())["runs"]}
                if args.reuse else {})

    rows, data, fitted = [], [], {}  # fitted: --minutes' steps per (experiment, model)
    for name in args.experiments:
        task, seq_len, factors, extra = EXPERIMENTS[name]
        for model in args.models:
            results, commands = [], []
            registered, options, settings = VARIANTS.get(model, (model, {}, {}))
            for seed in range(args.seeds):
                c = TrainConfig(task=task, model=registered,
                                model_options={**options, **dict(args.option or [])},
                                params=params, seed=seed,
                                seq_len=seq_len, steps=args.steps, device=args.device,
                                threads=args.threads, quiet=True,
                                out=f"{args.runs}/{name}/{model}/seed{seed}",
                                data_dir=args.data_dir if task == "psmnist" else None,
                                eval_seq_len=[seq_len * f for f in factors
                                              if seq_len and 1 < f <= args.max_factor],
                                **extra, **settings)
                finished = (Path(c.out) / "metrics.json").is_file()
                if not finished and c.out in recorded:
                    metrics = recorded[c.out]  # as that file records it, its command included
                    results.append(metrics)
                    commands.append(metrics["command"])
                    data.append(metrics)
                    continue
                if args.finished and not finished:
                    continue
                if args.minutes:  # one step count for every seed of a row: a finished seed's,
                    if finished:  # else one pilot's
                        c.steps = json.loads((Path(c.out) / "metrics.json").read_text())[
                            "config"]["steps"]
                    else:
                        c.steps = fitted.get((name, model)) or fit_steps(c, args.minutes)
                    fitted.setdefault((name, model), c.steps)
                metrics = run(c)
                results.append(metrics)
                commands.append(command(c))
                data.append({"experiment": name, "command": commands[-1],
                             "config": metrics["config"], "eval": metrics["eval"],
                             **evaluations(metrics)})
            if results:
                rows += table_rows(name, model, results, commands[0])
    title = "Long-term memory tasks" + (" (REDUCED run: see the settings)" if reduced else "")
    markdown = header(title) + notes(args, params, reduced) + table(rows)
    print(write_results(args.name, markdown, {"reduced": reduced, "params": params,
                                              "runs": data}))


def table_rows(name: str, model: str, results: list[dict], first: str) -> list[tuple]:
    """One row per model: mean ± std over the seeds of MSE (or accuracy) at each horizon;
    ``first`` is the command of its first seed."""
    by_len: dict[int, list[float]] = {}
    for metrics in results:
        for e in metrics["eval"]:
            value = e["mse"] if e["mse"] is not None else e["accuracy"]
            by_len.setdefault(e["seq_len"], []).append(value)
    c = results[0]["config"]
    cells = []
    for factor in FACTORS:  # a cell over fewer runs than the row's seeds says how many
        values = by_len.get(c["seq_len"] * factor)
        fewer = f" (n = {len(values)})" if values and len(values) != len(results) else ""
        cells.append(mean_std(values) + fewer if values else "")
    metric = "MSE" if results[0]["eval"][0]["mse"] is not None else "accuracy"
    return [(name, model, c["hidden"], c["seq_len"], metric, *cells, len(results), f"`{first}`")]


def notes(args, params: int, reduced: bool) -> str:
    lines = [f"\nMean ± std over seeds (a single value: one seed). "
             f"Models at a matched budget of about {params:,} parameters (`--params {params}`: "
             "the width is chosen per model, within 10 %). Evaluation: 256 fixed sequences per "
             "length for the synthetic tasks, the 10 000 test digits for psMNIST. Chance MSE ≈ 1."]
    if args.finished:
        lines.append(f"\nThe finished runs among seeds 0 … {args.seeds - 1}: each row's seeds "
                     "column says how many.")
    if args.reuse:
        lines.append(f"\nRuns missing from `{args.runs}` are taken from `{args.reuse}` as it "
                     "records them (trained earlier, possibly on another machine: that file's "
                     "header says which); each run's own command is in the .json file.")
    if args.option:
        lines.append(f"\nModel options of the runs under `{args.runs}`: "
                     + ", ".join(f"`{k}={v!r}`" for k, v in args.option) + ".")
    if reduced:
        steps = (f"the steps that fit in {args.minutes:g} minutes per run on {args.device} "
                 "(each row's command gives them)" if args.minutes
                 else args.steps or "task default")
        lines.append(f"\n**Reduced run**: models {', '.join(args.models)}; "
                     f"experiments {', '.join(args.experiments)}; {args.seeds} seed(s); "
                     f"horizons up to {args.max_factor}× the training length; steps: "
                     f"{steps}. The full protocol is `--full`.")
    return "\n".join(lines) + "\n\n"


def table(rows: list[tuple]) -> str:
    lines = ["| experiment | model | hidden | train T | metric | "
             + " | ".join(f"at {f}× T" for f in FACTORS) + " | seeds | command (first seed) |",
             "|---|---|---:|---:|---|" + "---:|" * len(FACTORS) + "---:|---|"]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return "\n".join(lines) + "\n\nEvery run's command and metrics: the .json file of this name.\n"


if __name__ == "__main__":
    run_main(main)
