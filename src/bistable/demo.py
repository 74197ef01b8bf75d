"""``bistable demo``: the quick start's main job, on built-in synthetic data (no download).

Trains the LRU+BMRU hybrid on copy-first-input at T = 50 (a couple of minutes on two CPU cores)
and evaluates it at 1×, 10× and 100× the training length: the BMRU's memory does not fade, so
the MSE stays low far beyond the training horizon (chance is about 1). Run again, it continues an
interrupted demo from its last checkpoint, or shows a finished one's table again.
"""

from __future__ import annotations

from pathlib import Path

from .train.checkpoint import CHECKPOINT
from .train.loop import TrainConfig, differences, planned, read_run, train
from .train.report import horizon_table, saved_files


def _holds_this_demo(config: TrainConfig) -> bool:
    """Whether ``config.out`` holds this demo's run to continue (False: none); another run there
    is an error naming what differs."""
    if not (Path(config.out) / CHECKPOINT).is_file():
        return False
    diff = differences(read_run(config.out)["config"], planned(config))
    if diff:
        raise ValueError(f"--out {config.out} holds another run than this demo ("
                         + "; ".join(diff) + "); use another --out")
    return True


def run(args) -> int:
    config = TrainConfig(task="copy-first-input", model="hybrid", seq_len=50,
                         eval_seq_len=[500, 5000], seed=args.seed, out=args.out)
    config.resume = _holds_this_demo(config)
    metrics = train(config)
    print("\ncopy-first-input, hybrid (LRU + BMRU) trained at T = 50; chance MSE ≈ 1")
    print(horizon_table(metrics["eval"]))
    print(saved_files(args.out))
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("demo", help="train a hybrid on copy-first-input, show its horizon")
    p.add_argument("--out", default="runs/demo", metavar="DIR")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)
