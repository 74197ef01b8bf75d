"""The ``bistable train``, ``bistable eval`` and ``bistable tasks`` commands (registered by
``bistable.cli``)."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import math
import os
import sys
from pathlib import Path

import torch

from ..data.tasks import TASK_NAMES, build_task, describe_tasks
from . import distributed
from .checkpoint import CHECKPOINT, atomic_write
from .loop import (
    LARGEST,
    MONITORS,
    PRECISIONS,
    TrainConfig,
    TrainingDiverged,
    autocast,
    read_run,
    run_from,
    selected,
    train,
)
from .metrics import evaluate
from .report import horizon_table, saved_files


def parse_option(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` with VALUE read as a Python literal when it is one (``3``, ``0.5``,
    ``True``; also ``true``/``false`` in any case), else kept as a string (``lru+bmru``)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    if value.lower() in ("true", "false"):
        return key, value.lower() == "true"
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` of parsed ``bistable train`` arguments (flags left out: None)."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    settings = {k: v for k, v in vars(args).items() if k in names and v is not None}
    return TrainConfig(**settings, model_options=dict(args.option or []))


def _train(args) -> int:
    config = train_config(args)
    try:
        metrics = train(config)
    except TrainingDiverged as err:
        print(f"bistable: error: {err}", file=sys.stderr)
        return 1
    if metrics["eval"]:
        print(horizon_table(metrics["eval"]))
        if "best" in metrics:
            best = metrics["best"]
            score = (f"the highest validation accuracy ({100 * best['val_accuracy']:.2f} %)"
                     if "val_accuracy" in best else
                     f"the lowest validation loss ({best['val_loss']:.4g})")
            print(f"weights of step {best['step']}, {score}")
        note = build_task(config.task, data_dir=metrics["config"]["data_dir"]).data_note()
        if note:
            print(note)
        print(saved_files(args.out))
    return 0


def _eval(args) -> int:
    """Score the last checkpoint of the run in ``args.run`` at the lengths asked (default: the
    run's own), in its precision unless told; the run's folder is left as it is."""
    for flag, value in (("--eval-samples", args.eval_samples), ("--threads", args.threads),
                        ("--draws", args.draws)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    for flag, value in (("--eval-samples", args.eval_samples), ("--draws", args.draws),
                        *(("--eval-seq-len", n) for n in args.eval_seq_len or [])):
        if value is not None and value > LARGEST:
            raise ValueError(f"{flag}: expected at most {LARGEST}, got {value}")
    if args.perturb is not None and not (math.isfinite(args.perturb) and args.perturb >= 0):
        raise ValueError(f"--perturb must be a finite relative σ >= 0, got {args.perturb}")
    if args.json:
        _check_json_target(Path(args.json), Path(args.run))
    saved = read_run(args.run)
    task, model = run_from(saved, args.data_dir, Path(args.run) / CHECKPOINT)
    config = saved["config"]
    lengths = sorted({task.check_seq_len(n) for n in args.eval_seq_len or config["eval_seq_len"]})
    if args.perturb is not None and getattr(model, "kind", None) != "src":
        raise ValueError("--perturb: only SRC networks (model src) have r, r_s to perturb")
    device = distributed.check_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    precision = args.precision or config.get("precision") or "fp32"
    n = args.eval_samples or config.get("eval_samples")
    model.to(device)
    with autocast(precision, device):
        evals = [evaluate(model, task, "test", length, n=n, device=device,
                          progress=not args.quiet) for length in lengths]
        perturbed = [] if args.perturb is None else _perturbed(model, task, lengths, n, device,
                                                                args.perturb, args.draws)
    step = selected(saved)["step"]  # that of the weights scored
    print(f"{args.run}: {config['task']} / {config['model']}, step {step}, {precision}")
    print(horizon_table(evals))
    if note := task.data_note():
        print(note)
    for e in perturbed:
        print(f"r, r_s drawn with σ = {args.perturb:g}, draw {e['draw']}: seq_len {e['seq_len']}, "
              f"loss {e['loss']:.4f}" + ("" if e["accuracy"] is None
                                         else f", accuracy {e['accuracy']:.4f}"))
    if args.json:
        text = json.dumps({"run": str(args.run), "step": step, "precision": precision,
                           "eval": evals, "perturbed": perturbed}, indent=1)
        try:
            atomic_write(args.json, lambda file: file.write(text.encode()))
        except OSError as e:
            raise ValueError(f"--json {args.json}: cannot write it ({e.strerror})") from None
    return 0


def _check_json_target(path: Path, run: Path) -> None:
    """Before the evaluation, which may take minutes: ``--json`` names a file that can be
    written (its missing folders are made), outside the run's folder."""
    if path.is_dir():
        raise ValueError(f"--json {path}: a directory; expected a file name")
    if run.resolve() in path.resolve().parents:
        raise ValueError(f"--json {path}: inside the run's folder {run}, which eval leaves as it "
                         "is; expected a file elsewhere")
    existing = next(folder for folder in path.resolve().parents if folder.exists())
    if not existing.is_dir():
        raise ValueError(f"--json {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--json {path}: cannot write in {existing} (permission denied)")


def _perturbed(model, task, lengths, n, device, sigma: float, draws: int) -> list[dict]:
    """The noise-robustness check of an SRC network: each neuron's ``r``, ``r_s`` drawn around
    the layer's nominal values (SPEC.md §6: 2, −7) with relative ``sigma`` (``perturb_``, draw
    ``k`` seeded ``k``), then restored."""
    out = []
    with model.gains_kept():
        for draw in range(draws):
            model.perturb_(sigma, torch.Generator().manual_seed(draw))
            out += [{"sigma": sigma, "draw": draw,
                     **evaluate(model, task, "test", length, n=n, device=device)}
                    for length in lengths]
    return out


def _tasks(args) -> int:
    rows = describe_tasks()
    width = max(len(name) for name, _ in rows)
    for name, text in rows:
        print(f"{name:<{width}}  {text}")
    return 0


def add_parser(subparsers) -> None:
    """Register ``train`` and ``tasks`` on the ``bistable`` command's subparsers."""
    p = subparsers.add_parser(
        "train", help="train a model on a task; writes metrics.json, checkpoint and plots",
        description="Train MODEL on TASK, evaluate at the training length and every "
                    "--eval-seq-len; resumable with --resume. Under torchrun: DDP.",
        epilog="Settings left out take the task's defaults (docs/training.md); metrics.json "
               "records the values used.")
    p.add_argument("task", metavar="TASK", help=f"one of: {', '.join(TASK_NAMES)}")
    p.add_argument("--model", required=True, help="a name from `bistable models`")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the results")
    size = p.add_argument_group("model size")
    size.add_argument("--layers", type=int, metavar="N")
    size.add_argument("--hidden", type=int, metavar="N")
    size.add_argument("--params", type=int, metavar="N",
                      help="parameter budget: picks the --hidden whose count is nearest (it may "
                           "exceed N by a little)")
    size.add_argument("--option", type=parse_option, action="append", metavar="KEY=VALUE",
                      help="model option passed to build_model (repeatable)")
    data = p.add_argument_group("task")
    data.add_argument("--seq-len", type=int, metavar="N")
    data.add_argument("--eval-seq-len", type=int, nargs="+", metavar="N",
                      help="also evaluate at these lengths (horizon generalisation)")
    data.add_argument("--eval-samples", type=int, metavar="N")
    data.add_argument("--data-dir", metavar="DIR", help="data folder (MNIST, N-MNIST tasks)")
    data.add_argument("--pad", type=int, metavar="N", help="(p)smnist: zero steps after the pixels")
    data.add_argument("--pad-min", type=int, metavar="N",
                      help="(p)smnist: draw each training batch's pad from N … --pad (a variable "
                           "delay); evaluation keeps --pad")
    data.add_argument("--pad-every", type=int, metavar="N",
                      help="(p)smnist: the training loss also asks the answer every N steps of "
                           "the pad, from the last pixel to the end (averaged); evaluation reads "
                           "the last step")
    data.add_argument("--gap", type=int, metavar="N", help="denoising: steps after the last mark")
    data.add_argument("--shift", type=int, metavar="N",
                      help="images, N-MNIST: move each training example by a random (dy, dx) of "
                           "up to N pixels each way (augmentation; evaluation data stay put)")
    opt = p.add_argument_group("optimisation")
    length = opt.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, metavar="N")
    length.add_argument("--epochs", type=int, metavar="N")
    opt.add_argument("--batch-size", type=int, metavar="N")
    opt.add_argument("--lr", type=float, metavar="F")
    opt.add_argument("--min-lr", type=float, metavar="F",
                     help="learning rate at the end of the cosine (default: --lr / 10)")
    opt.add_argument("--warmup", type=int, metavar="N")
    opt.add_argument("--schedule", choices=("cosine", "constant"))
    opt.add_argument("--weight-decay", type=float, metavar="F",
                     help="AdamW's decoupled weight decay on every parameter (default 0)")
    opt.add_argument("--grad-clip", type=float, metavar="F",
                     help="clip the gradient's global norm at F (default 1; 0: no clipping)")
    opt.add_argument("--write-penalty", type=float, metavar="F",
                     help="add F · mean write rate of the memory units to the loss")
    opt.add_argument("--anneal-epsilon", type=int, metavar="N",
                     help="CMRUs: ε from 1 (counter) to 0 (BMRU) over the first N steps")
    opt.add_argument("--noise-ramp", type=int, metavar="N",
                     help="SRCs: the redrawn train_noise from 0 to its value over the first N "
                          "steps (a noise curriculum)")
    opt.add_argument("--ema", type=float, metavar="DECAY",
                     help="evaluate (and test) an exponential moving average of the weights, "
                          "updated after every step with this decay, e.g. 0.999 (default 0: off)")
    opt.add_argument("--seed", type=int, metavar="N")
    run = p.add_argument_group("run")
    run.add_argument("--device", choices=("cpu", "cuda"))
    run.add_argument("--threads", type=int, metavar="N", help="torch CPU threads")
    run.add_argument("--compile", nargs="?", const="inductor", metavar="BACKEND",
                     help="train through torch.compile (default backend: inductor; the first "
                          "steps compile, about a minute on a small CPU)")
    run.add_argument("--precision", choices=PRECISIONS,
                     help="bf16: mixed precision, forward and loss under torch.autocast(bfloat16) "
                          "(parameters, optimiser and checkpoints stay float32); default fp32")
    run.add_argument("--resume", action="store_true", help="continue the run in --out")
    run.add_argument("--init-from", metavar="DIR",
                     help="start from the model weights of the run in DIR (fine-tuning: same "
                          "model and sizes; fresh optimiser and schedule)")
    run.add_argument("--keep-best", action="store_true",
                     help="evaluate on a validation split during training (synthetic tasks: "
                          "other examples; data sets: 10 %% of the training set, held out) and "
                          "test the weights of its best score (--monitor) instead of the last")
    run.add_argument("--monitor", choices=MONITORS,
                     help="--keep-best's score: the lowest validation loss (default) or the "
                          "highest validation accuracy (classification tasks)")
    run.add_argument("--checkpoint-every", type=int, metavar="N",
                     help="steps between checkpoints (default: as --eval-every)")
    run.add_argument("--eval-every", type=int, metavar="N",
                     help="steps between evaluations (default: a tenth of the run)")
    run.add_argument("--log-every", type=int, metavar="N",
                     help="steps between history entries (default 10)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)

    e = subparsers.add_parser(
        "eval", help="score a trained run's checkpoint at other lengths, precision or device",
        description="Evaluate the last checkpoint of the run in DIR on its task's test set, at "
                    "--eval-seq-len (default: the run's own lengths); DIR is not written.")
    e.add_argument("run", metavar="DIR", help="the --out folder of a `bistable train` run")
    e.add_argument("--eval-seq-len", type=int, nargs="+", metavar="N")
    e.add_argument("--eval-samples", type=int, metavar="N",
                   help="test examples per length (default: the run's)")
    e.add_argument("--data-dir", metavar="DIR", help="the data folder, if not the run's")
    e.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    e.add_argument("--threads", type=int, metavar="N", help="torch CPU threads")
    e.add_argument("--precision", choices=PRECISIONS, help="default: the run's")
    e.add_argument("--perturb", type=float, metavar="SIGMA",
                   help="SRC networks: also score with every neuron's r, r_s drawn around the "
                        "nominal 2 and -7, σ relative (0.1 = 10 %%)")
    e.add_argument("--draws", type=int, default=3, metavar="N", help="noise draws (default 3)")
    e.add_argument("--json", metavar="FILE", help="also write the figures there")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=_eval)

    t = subparsers.add_parser("tasks", help="list the training tasks")
    t.set_defaults(func=_tasks)
