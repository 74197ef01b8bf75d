"""What every benchmark shares: timing by median, results files that say how they were made, and
the argument types of their command lines."""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bistable.train.provenance import code_commit, machine

RESULTS = Path(__file__).resolve().parent.parent / "results"
LATE_MIXER = "lru,lru+bmru"  # the 'late' hybrid: BMRUs beside the LRU from the second block on

# the commit the code was run at (``+dirty`` with changes; $BISTABLE_COMMIT first: see
# bistable.train.provenance), read once, when the benchmark starts, so that commits made during a
# long run do not relabel its results
commit = functools.cache(code_commit)
commit()


def header(title: str) -> str:
    """Markdown preamble: the command, commit, machine and date behind every figure below it."""
    cmd = " ".join(map(quote, [Path(sys.argv[0]).as_posix()] + sys.argv[1:]))
    return (f"# {title}\n\n- command: `python {cmd}`\n- commit: {commit()}\n"
            f"- machine: {machine()}\n- date: {datetime.date.today().isoformat()}\n")


def summary(doc: str) -> str:
    """A script's one-line description (its ``--help``): the first paragraph of its docstring."""
    return doc.split("\n\n")[0]


def method(doc: str) -> str:
    """What a script's results file says of its method: its docstring from the third paragraph
    up to ``Writes``, on one line."""
    return doc.split("\n\n", 2)[2].split("Writes")[0].strip().replace("\n", " ")


def side_by_side(fns: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each of ``fns``, called in turn ``repeats`` times after one warm-up
    round: interleaved, so that load on a shared machine hits all alike and their ratios hold."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(repeats + 1):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if r:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def median_time(fn, *, repeats: int = 7, warmup: int = 1, sync=None) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` runs after ``warmup`` runs."""
    sync = sync or (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def mean_std(values: list[float], spec: str = ".4f") -> str:
    """``"mean ± std"`` over seeds (sample std), or the value alone for a single seed."""
    if len(values) == 1:
        return format(values[0], spec)
    return f"{statistics.mean(values):{spec}} ± {statistics.stdev(values):{spec}}"


def seed_groups(data: list[dict], key: str) -> dict[str, list[dict]]:
    """``data`` grouped by run name without its ``-seed<n>`` part (``d[key]`` is the name;
    seed 0 has no suffix), in first-seen order."""
    groups: dict[str, list[dict]] = {}
    for d in data:
        groups.setdefault(re.sub(r"-seed\d+", "", d[key]), []).append(d)
    return groups


def evaluations(metrics: dict) -> dict:
    """What a run's ``metrics.json`` says about its course, for a table's .json: the evaluations
    made during training (``eval_curve``: step, split, loss, MSE, accuracy) and, for a
    ``--keep-best`` run, the step whose weights were kept (``best``)."""
    curve = [h for h in metrics["history"] if "split" in h]
    return {"eval_curve": curve, **({"best": metrics["best"]} if "best" in metrics else {})}


def write_results(name: str, markdown: str, data) -> Path:
    """Write ``results/<name>.md`` and ``results/<name>.json`` atomically."""
    RESULTS.mkdir(exist_ok=True)
    for suffix, text in ((".md", markdown), (".json", json.dumps(data, indent=2, default=str))):
        path = RESULTS / (name + suffix)
        tmp = path.with_suffix(suffix + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return RESULTS / (name + ".md")


def positive_int(text: str) -> int:
    """argparse type of a count or a size: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type of a rate or a duration: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {value}")
    return value


def run_set_args(description: str, runs, default_name: str) -> argparse.Namespace:
    """The command line of a script that trains a set of named ``runs`` and tabulates them:
    ``--no-train`` (tabulate the finished runs only), ``--only RUN ...`` (these runs alone) and
    ``--name`` (results/<name>.md; ``--only`` needs one other than the default, which lists every
    run)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--no-train", action="store_true", help="tabulate finished runs only")
    parser.add_argument("--name", default=default_name, help="results/<name>.md and .json")
    parser.add_argument("--only", nargs="+", choices=list(runs), metavar="RUN",
                        help="these runs alone (names in RUNS; with a --name other than the "
                        "default)")
    args = parser.parse_args()
    if args.only and args.name == default_name:
        parser.error(f"--only needs a --name of its own: results/{default_name}.md lists every "
                     "run")
    return args


def run_main(main) -> None:
    """A script's entry point: ``main()``, with bad input (``ValueError``, ``OSError``: a run of
    another kind, a missing folder) or a training command that failed said as one ``<script>:
    error: <message>`` line on stderr and exit code 2, as ``bistable`` says its own."""
    try:
        main()
    except (ValueError, OSError) as err:
        print(f"{Path(sys.argv[0]).name}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except subprocess.CalledProcessError as err:  # a training run that said why above
        print(f"{Path(sys.argv[0]).name}: error: {' '.join(map(str, err.cmd[1:]))} exited "
              f"with {err.returncode}", file=sys.stderr)
        raise SystemExit(2) from None


def quote(arg: str) -> str:
    """``arg`` as typed in a shell."""
    return f'"{arg}"' if " " in arg or "{" in arg else arg


def train_command(argv: list[str], out: str) -> str:
    """The shell line of ``bistable train *argv --out out``, as a results table shows it."""
    return " ".join(["bistable", "train", *map(quote, argv), "--out", out])


# settings that do not change what a finished run's figures mean
HOW_RUN = ("out", "resume", "quiet", "threads", "device", "data_dir", "eval_every",
           "checkpoint_every", "log_every", "compile")


def check_reused(metrics: dict, config, out) -> None:
    """ValueError unless the finished run in ``out`` was made with the settings of ``config`` (a
    ``TrainConfig``; resolved here as ``bistable train`` would), but for :data:`HOW_RUN`: a table
    must not print one command beside another run's figures."""
    from bistable.train.loop import differences, planned

    diff = differences(metrics["config"], planned(config), ignore=HOW_RUN)
    if diff:
        raise ValueError(f"{out}: the finished run there was made with other settings than this "
                         f"table's command ({'; '.join(diff)}); move it away or use its settings")


def trained_where(out) -> str:
    """Where the run in ``out`` (relative to the repo) was trained, by its checkpoint's
    provenance: each stretch's steps, commit and device; "not recorded" for runs made before
    2026-12-05 or without their checkpoint."""
    from bistable.train.checkpoint import CHECKPOINT, load_checkpoint

    path = RESULTS.parent / out / CHECKPOINT
    stretches = load_checkpoint(path).get("provenance") if path.is_file() else None
    if not stretches:
        return "not recorded"
    return "; ".join(f"steps {s['from_step']}–{s['to_step']} at {s['commit']} on {s['device']}"
                     + (f" ({s['ranks']} ranks)" if s.get("ranks", 1) > 1 else "")
                     for s in stretches)


def trained_run(out: str, argv: list[str], train: bool) -> dict | None:
    """The ``metrics.json`` of ``bistable train *argv --out out`` (``out`` relative to the repo),
    training it first unless it is there; None when it is not there and ``train`` is False.
    Finished runs are reused (if made with these settings: :func:`check_reused`) and cut-off ones
    resumed, so a driver can be stopped and started again."""
    from bistable.cli import build_parser
    from bistable.train.commands import train_config

    metrics = RESULTS.parent / out / "metrics.json"
    if not metrics.exists() and train:
        cut_off = (RESULTS.parent / out / "checkpoint.pt").is_file()
        command = [sys.executable, "-m", "bistable", "train", *argv, "--out", out,
                   *(["--resume"] if cut_off else [])]
        subprocess.run(command, cwd=RESULTS.parent, check=True)
    if not metrics.exists():
        return None
    found = json.loads(metrics.read_text())
    config = train_config(build_parser().parse_args(["train", *argv, "--out", out]))
    cwd = os.getcwd()
    try:  # the run's relative paths (--data-dir) as the training subprocess saw them
        os.chdir(RESULTS.parent)
        check_reused(found, config, out)
    finally:
        os.chdir(cwd)
    return found
