"""``bistable demo``: the quick start's main job, on built-in synthetic data (no download).

Trains the LRU+BMRU hybrid on copy-first-input at T = 50 (a couple of minutes on two CPU cores)
and evaluates it at 1×, 10× and 100× the training length: the BMRU's memory does not fade, so
the MSE stays low far beyond the training horizon (chance is about 1). Run again, it continues an
interrupted demo from its last checkpoint, or shows a finished one's table again.
"""

from __future__ import annotations

from pathlib import Path

from .train.checkpoint import CHECKPOINT
from .train.loop import TrainConfig, read_run, train
from .train.report import horizon_table


def _holds_this_demo(out: str, seed: int) -> bool:
    """Whether ``out`` holds a run to continue (False: none); another run there is an error."""
    if not (Path(out) / CHECKPOINT).is_file():
        return False
    saved = read_run(out)["config"]
    found = (saved["task"], saved["model"], saved["seq_len"], saved["seed"])
    if found != ("copy-first-input", "hybrid", 50, seed):
        raise ValueError(f"--out {out} holds another run ({found[0]}, {found[1]}, T = {found[2]}, "
                         f"seed {found[3]}) than this demo (copy-first-input, hybrid, T = 50, "
                         f"seed {seed}); use another --out")
    return True


def run(args) -> int:
    config = TrainConfig(task="copy-first-input", model="hybrid", seq_len=50,
                         eval_seq_len=[500, 5000], seed=args.seed, out=args.out,
                         resume=_holds_this_demo(args.out, args.seed))
    metrics = train(config)
    print("\ncopy-first-input, hybrid (LRU + BMRU) trained at T = 50; chance MSE ≈ 1")
    print(horizon_table(metrics["eval"]))
    print(f"metrics.json, checkpoint and plots in {args.out}")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("demo", help="train a hybrid on copy-first-input, show its horizon")
    p.add_argument("--out", default="runs/demo", metavar="DIR")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)
