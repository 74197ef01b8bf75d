"""Why a trained denoising run does or does not hold at ten times its training length.

    python benchmarks/denoising_probe.py RUN [RUN ...] [--lengths 300 3000] [--samples 256]
                                         [--last] [--name denoising_probe]

For each run of ``benchmarks/denoising.py`` (a folder under runs/denoising) and each length T: the
MSE at T on the run's fixed evaluation set (256 sequences, streamed as ``bistable eval`` does) and,
on ``--samples`` test sequences (fewer beyond T = 3000, to bound the memory), for each memory unit
(CMRU, BMRU) of each block (none in GRU and LSTM runs: "-"), its write rate mean(z) at the marked
steps, at the unmarked steps before the gap and in the gap, and the mean and largest magnitude of
its output α s_T at the last step (what the next block and the readout see). A counter (ε = 1) that
writes at a steady rate on unmarked steps ends ten times larger at T = 3000 than at T = 300, out of
the range the network was trained on; a leaky one (ε < 1) stays below 1 / (1 − ε). A
``--keep-best`` run is probed with the weights it selected, or with its last ones under ``--last``
(the pair compares the selection with the run that kept the last weights, on the same training).
Writes results/<name>.md and .json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import header, method, positive_int, run_main, summary, write_results  # noqa: E402
from benchmarks.denoising import RUNS_DIR  # noqa: E402
from benchmarks.pad_memory import recording, writes  # noqa: E402
from bistable.train.loop import read_run, run_from  # noqa: E402
from bistable.train.metrics import evaluate  # noqa: E402
from bistable.units.bmru import MRU  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EVAL_SAMPLES = 256  # the size of `bistable train`'s evaluation set on the synthetic tasks
STEP_BUDGET = 256 * 3000  # sequences x steps recorded for the unit statistics at one length


@torch.no_grad()
def unit_rows(task, model, seq_len: int, samples: int) -> list[dict]:
    """Per memory unit, on ``samples`` test sequences of ``seq_len``: its writes at marked,
    unmarked and gap steps and its last output (module doc)."""
    x, _ = task.batch("test", seq_len, samples, torch.Generator().manual_seed(0))
    marked = x[..., 1] > 0
    before = ~marked
    before[:, seq_len - task.gap:] = False
    rows = []
    with recording(model) as records:
        model(x)
        for (block, name), (unit, inp, out) in records.items():
            if not isinstance(unit, MRU):
                continue
            z = writes(unit, inp)
            last = out[:, -1].abs()
            rows.append({"unit": f"{block}:{name}", "sequences": samples,
                         "writes_marked": z[marked].mean().item(),
                         "writes_unmarked": z[before].mean().item(),
                         "writes_gap": z[:, seq_len - task.gap:].mean().item(),
                         "output_mean": last.mean().item(), "output_max": last.max().item()})
    return rows


def length_rows(task, model, seq_len: int, samples: int, eval_samples: int = EVAL_SAMPLES):
    """The MSE at ``seq_len`` on the task's fixed evaluation set of ``eval_samples`` sequences
    (streamed, as ``bistable eval`` scores it), with :func:`unit_rows` on at most ``samples``
    sequences (fewer at long lengths: ``STEP_BUDGET`` steps in all); one row per memory unit,
    or one row with unit "-" for a network without any."""
    mse = evaluate(model, task, "test", seq_len, n=eval_samples)["mse"]
    units = unit_rows(task, model, seq_len, max(1, min(samples, STEP_BUDGET // seq_len)))
    return [{"seq_len": seq_len, "mse": mse, **r} for r in units] or [
        {"seq_len": seq_len, "mse": mse, "unit": "-"}]


def table(rows: list[dict]) -> str:
    lines = ["| run | T | MSE | block:unit | sequences | writes marked | writes unmarked "
             "| writes in gap | mean abs(α s_T) | max abs(α s_T) |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        cells = ["-"] * 6 if r["unit"] == "-" else [
            str(r["sequences"]), f"{r['writes_marked']:.3f}", f"{r['writes_unmarked']:.4f}",
            f"{r['writes_gap']:.4f}", f"{r['output_mean']:.2f}", f"{r['output_max']:.1f}"]
        lines.append(" | ".join(["", r["run"], str(r["seq_len"]), f"{r['mse']:.3f}", r["unit"],
                                 *cells, ""]).strip())
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=summary(__doc__))
    p.add_argument("runs", nargs="+", metavar="RUN", help=f"folders under {RUNS_DIR}")
    p.add_argument("--lengths", nargs="+", type=positive_int, default=[300, 3000])
    p.add_argument("--samples", type=positive_int, default=256,
                   help="sequences for the unit statistics (fewer beyond T = 3000)")
    p.add_argument("--last", action="store_true",
                   help="a run's last weights instead of the ones its results score (--keep-best's "
                   "best, --ema's average)")
    p.add_argument("--threads", type=positive_int, default=1)
    p.add_argument("--name", default="denoising_probe")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    loaded = {}
    for run in args.runs:
        if not (ROOT / RUNS_DIR / run / "checkpoint.pt").is_file():
            p.error(f"no run {run!r} in {RUNS_DIR} (train it with benchmarks/denoising.py)")
        saved = read_run(ROOT / RUNS_DIR / run)
        if saved["config"]["task"] != "denoising":
            raise ValueError(f"{run}: expected a denoising run, got {saved['config']['task']}")
        # --last: the checkpoint's own weights, neither --keep-best's best nor --ema's average
        loaded[run] = run_from({k: v for k, v in saved.items() if k not in ("best", "ema")}
                               if args.last else saved)
        shortest = loaded[run][0].min_seq_len()
        if min(args.lengths) < shortest:
            p.error(f"--lengths: expected lengths of at least {shortest} for {run} (its gap and "
                    f"5 marks), got {min(args.lengths)}")
    rows = []
    for run, (task, model) in loaded.items():
        label = f"{run} (last weights)" if args.last else run
        for seq_len in args.lengths:
            rows += [{"run": label, **r} for r in length_rows(task, model, seq_len, args.samples)]
        print(table(rows), flush=True)
    text = (header("Denoising: what the memory units do at the training length and beyond")
            + "\n" + method(__doc__)
            .replace("``", "`") + "\n\n" + table(rows) + "\n")
    print(write_results(args.name, text, rows))


if __name__ == "__main__":
    run_main(main)
