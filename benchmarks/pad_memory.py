"""What survives the pad on psMNIST (issue 6): hybrids and the LRU trained with ``--pad 1000``,
where the digit's information is at the end of the pad, and where the gradient goes.

Per run (one ``bistable train psmnist`` command, in the table):
- test accuracy on the 10 000 test digits (from the run);
- per mixer unit, on 256 test digits, the *spread*: the standard deviation of the unit's output
  across digits, averaged over its units, at the last pixel and at the last step (what of the
  digit is left there for the readout);
- per MRU, the write rate during the pixels and during the last 100 pad steps, and the share of
  units that write at the last step for most digits (they hold a constant: no memory);
- at initialisation (the run's seed, one batch of 64 training digits), the norm of the gradient
  of each unit's parameters and of all parameters;
- per run trained with the pad, the accuracy on a fixed 1 000 test digits with that pad and
  with none and with a pad ten times longer.

Finished runs under ``runs/pad_memory/`` are reused and cut-off ones resumed::

    python benchmarks/pad_memory.py              # train what is missing (25 min a run here)
    python benchmarks/pad_memory.py --no-train   # tabulate the finished runs only
    python benchmarks/pad_memory.py --only A B --name NAME   # train and tabulate A, B alone
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import (  # noqa: E402
    LATE_MIXER,
    evaluations,
    header,
    mean_std,
    run_main,
    run_set_args,
    seed_groups,
    summary,
    train_command,
    trained_run,
    write_results,
)
from bistable.train import load_run, loop  # noqa: E402
from bistable.train.loop import TrainConfig  # noqa: E402
from bistable.train.metrics import evaluate  # noqa: E402
from bistable.units.bmru import MRU  # noqa: E402
from bistable.units.surrogate import exact_heaviside  # noqa: E402

RUNS_DIR = "runs/pad_memory"
BUDGET = ["--params", "38305"]
COMMON = ["--data-dir", "../shared/data/mnist", "--threads", "1", "--quiet"]
# Every run states the LRUs' ring: RING was the pixel tasks' default until commit 940334c made it
# SLOW, where |λ|^1000 > 0.05 for 29 % of the modes instead of 2 %.
RING = {"r_min": 0.9, "r_max": 0.999}
SLOW = {"r_min": 0.99, "r_max": 0.9999}
# real eigenvalues (phase 0): a mode that only decays, so what it holds reads the same after any
# delay, where a rotating one gives the readout a different phase at every pad length
REAL = {**SLOW, "max_phase": 0.0}
DETACHED = {"detach_input": True}


def psmnist(model: str = "hybrid", *, seed: int = 0, pad: int = 1000, ring: dict = RING,
            bmru: dict | None = None, mixer: str | None = None, extra: tuple = (),
            hidden: int | None = None) -> list[str]:
    """The arguments of ``bistable train psmnist`` for one run: ``ring`` the LRUs' (r_min,
    r_max), ``bmru`` the BMRUs' constructor arguments, ``mixer`` the hybrid's mixer; the matched
    budget of 38 305 parameters unless ``hidden`` sets the width."""
    if model == "lru":
        opts = [a for k, v in ring.items() for a in ("--option", f"{k}={v!r}")]
    else:
        unit_kwargs = {"lru": ring, **({"bmru": bmru} if bmru else {})}
        opts = ["--option", f"unit_kwargs={unit_kwargs!r}"]
    if mixer:
        opts = ["--option", f"mixer={mixer!r}", *opts]
    size = ["--hidden", str(hidden)] if hidden else BUDGET
    return ["--model", model, *opts, *extra, *(["--pad", str(pad)] if pad else []),
            "--seed", str(seed), *size, *COMMON]


def seeds(name: str, *numbers: int, suffix: str = "", **run) -> dict[str, list[str]]:
    """``psmnist(seed=n, **run)`` for each seed, named ``name[-seed<n>]<suffix>`` (seed 0 bare)."""
    return {f"{name}{f'-seed{n}' if n else ''}{suffix}": psmnist(seed=n, **run) for n in numbers}


def penalty(weight: int) -> tuple:
    return ("--write-penalty", str(weight))


def from_run(name: str) -> tuple:
    """Start from the weights of the run ``name`` (which must come earlier in :data:`RUNS`)."""
    return ("--init-from", f"{RUNS_DIR}/{name}")


VARIABLE = ("--pad-min", "0")
TWO_EPOCHS = ("--epochs", "2")  # the cosine schedule stretched over both
EVERY_100 = ("--pad-every", "100")
FIVE_EPOCHS = ("--epochs", "5")
BF16 = ("--precision", "bf16")  # bfloat16 autocast


# name -> arguments of `bistable train psmnist`, in run order
RUNS = {
    "hybrid": psmnist(pad=0),
    "hybrid-pad1000": psmnist(),
    "lru-pad1000": psmnist("lru"),
    "hybrid-alternating-pad1000": psmnist(mixer="lru,bmru"),
    "hybrid-alternating": psmnist(mixer="lru,bmru", pad=0),
    "hybrid-detached-pad1000": psmnist(bmru=DETACHED),
    "hybrid-detached": psmnist(bmru=DETACHED, pad=0),
    "hybrid-pad1000-seed1": psmnist(seed=1),
    "hybrid-detached-pad1000-seed1": psmnist(bmru=DETACHED, seed=1),
    "lru-pad1000-seed1": psmnist("lru", seed=1),
    "hybrid-seed1": psmnist(pad=0, seed=1),
    "hybrid-detached-seed1": psmnist(bmru=DETACHED, pad=0, seed=1),
    "hybrid-detached-pad1000-seed2": psmnist(bmru=DETACHED, seed=2),
    "lru-pad1000-seed2": psmnist("lru", seed=2),
    "hybrid-pad1000-seed2": psmnist(seed=2),
    "hybrid-cmru-pad1000": psmnist(mixer="lru+cmru"),
    "lru-pad1000-2epochs": psmnist("lru", extra=TWO_EPOCHS),
    "hybrid-detached-pad1000-2epochs": psmnist(bmru=DETACHED, extra=TWO_EPOCHS),
    "hybrid-pad1000-2epochs": psmnist(extra=TWO_EPOCHS),
    "hybrid-detached-penalty10-pad1000": psmnist(bmru=DETACHED, extra=penalty(10)),
    "hybrid-detached-penalty100-pad1000": psmnist(bmru=DETACHED, extra=penalty(100)),
    "hybrid-detached-penalty100-pad1000-seed1": psmnist(bmru=DETACHED, extra=penalty(100),
                                                        seed=1),
    "hybrid-detached-penalty100-pad1000-seed2": psmnist(bmru=DETACHED, extra=penalty(100),
                                                        seed=2),
    "hybrid-penalty100-pad1000": psmnist(extra=penalty(100)),
    "hybrid-detached-penalty100-pad1000-2epochs": psmnist(
        bmru=DETACHED, extra=(*penalty(100), *TWO_EPOCHS)),
    # no gradient clipping: the BMRU's gradient (100-1000x the rest at init with the pad) no
    # longer scales down every other parameter's step through the global clip
    "hybrid-noclip-pad1000": psmnist(extra=("--grad-clip", "0")),
    # a sharper surrogate (k = 4): the gate's gradient far from its threshold, summed over the
    # held pad steps, shrinks about as 1/k
    "hybrid-k4-pad1000": psmnist(bmru={"sharpness": 4.0}),
    "hybrid-detached-k4-pad1000": psmnist(bmru={"sharpness": 4.0, **DETACHED}),
    # the LRUs' ring nearer 1, as the LRU paper sets it for its longest tasks
    "lru-slow-pad1000": psmnist("lru", ring=SLOW),
    "hybrid-detached-slow-pad1000": psmnist(ring=SLOW, bmru=DETACHED),
    "lru-slow": psmnist("lru", ring=SLOW, pad=0),
    "hybrid-detached-slow": psmnist(ring=SLOW, bmru=DETACHED, pad=0),
    "lru-slow-pad1000-seed1": psmnist("lru", ring=SLOW, seed=1),
    "hybrid-detached-slow-pad1000-seed1": psmnist(ring=SLOW, bmru=DETACHED, seed=1),
    "hybrid-slow-pad1000": psmnist(ring=SLOW),
    "hybrid-slow": psmnist(ring=SLOW, pad=0),
    "lru-slow-seed1": psmnist("lru", ring=SLOW, pad=0, seed=1),
    "hybrid-detached-slow-seed1": psmnist(ring=SLOW, bmru=DETACHED, pad=0, seed=1),
    "hybrid-detached-penalty100-slow-pad1000": psmnist(ring=SLOW, bmru=DETACHED,
                                                       extra=penalty(100)),
    "lru-slow-pad1000-seed2": psmnist("lru", ring=SLOW, seed=2),
    "hybrid-detached-slow-pad1000-seed2": psmnist(ring=SLOW, bmru=DETACHED, seed=2),
    # a variable delay: each training batch's pad drawn from 0 … 1000 (--pad-min 0)
    "lru-slow-randpad1000": psmnist("lru", ring=SLOW, extra=VARIABLE),
    "hybrid-detached-slow-randpad1000": psmnist(ring=SLOW, bmru=DETACHED, extra=VARIABLE),
    "lru-real-randpad1000": psmnist("lru", ring=REAL, extra=VARIABLE),
    "hybrid-detached-real-randpad1000": psmnist(ring=REAL, bmru=DETACHED, extra=VARIABLE),
    "hybrid-slow-randpad1000": psmnist(ring=SLOW, extra=VARIABLE),
    "hybrid-real-randpad1000": psmnist(ring=REAL, extra=VARIABLE),
    "hybrid-slow-randpad1000-seed1": psmnist(ring=SLOW, extra=VARIABLE, seed=1),
    "lru-slow-randpad1000-seed1": psmnist("lru", ring=SLOW, extra=VARIABLE, seed=1),
    "hybrid-slow-randpad1000-2epochs": psmnist(ring=SLOW, extra=(*VARIABLE, *TWO_EPOCHS)),
    "hybrid-slow-randpad1000-seed2": psmnist(ring=SLOW, extra=VARIABLE, seed=2),
    "lru-slow-randpad1000-seed2": psmnist("lru", ring=SLOW, extra=VARIABLE, seed=2),
    "hybrid-slow-randpad1000-seed1-2epochs": psmnist(ring=SLOW, extra=(*VARIABLE, *TWO_EPOCHS),
                                                     seed=1),
    "hybrid-slow-randpad1000-seed2-2epochs": psmnist(ring=SLOW, extra=(*VARIABLE, *TWO_EPOCHS),
                                                     seed=2),
    # a write penalty against the block-1 BMRUs that write at every step (they hold no memory)
    "hybrid-slow-randpad1000-penalty1": psmnist(ring=SLOW, extra=(*VARIABLE, *penalty(1))),
    "hybrid-slow-randpad1000-penalty10": psmnist(ring=SLOW, extra=(*VARIABLE, *penalty(10))),
    "hybrid-slow-randpad1000-penalty10-seed1": psmnist(ring=SLOW, extra=(*VARIABLE, *penalty(10)),
                                                       seed=1),
    "hybrid-slow-randpad1000-penalty10-seed2": psmnist(ring=SLOW, extra=(*VARIABLE, *penalty(10)),
                                                       seed=2),
    "hybrid-slow-randpad1000-penalty100": psmnist(ring=SLOW, extra=(*VARIABLE, *penalty(100))),
    "hybrid-slow-randpad1000-penalty10-2epochs": psmnist(
        ring=SLOW, extra=(*VARIABLE, *penalty(10), *TWO_EPOCHS)),
    "hybrid-slow-randpad1000-penalty10-seed1-2epochs": psmnist(
        ring=SLOW, extra=(*VARIABLE, *penalty(10), *TWO_EPOCHS), seed=1),
    "hybrid-slow-randpad1000-penalty10-seed2-2epochs": psmnist(
        ring=SLOW, extra=(*VARIABLE, *penalty(10), *TWO_EPOCHS), seed=2),
    "hybrid-slow-randpad1000-penalty30": psmnist(ring=SLOW, extra=(*VARIABLE, *penalty(30))),
    "hybrid-slow-pad1000-penalty10": psmnist(ring=SLOW, extra=penalty(10)),
    "hybrid-slow-penalty10": psmnist(ring=SLOW, extra=penalty(10), pad=0),
    # no pad, five epochs: how far the one-epoch gap to psMNIST's 98 % closes with training alone
    "hybrid-slow-5epochs": psmnist(ring=SLOW, extra=FIVE_EPOCHS, pad=0),
    "lru-slow-5epochs": psmnist("lru", ring=SLOW, extra=FIVE_EPOCHS, pad=0),
    # BMRUs only from the second block on: the first block's gates see one pixel (mostly
    # background), and its BMRUs end constant in every run above
    "hybrid-late-slow": psmnist(ring=SLOW, mixer=LATE_MIXER, pad=0),
    **seeds("hybrid-late-slow-randpad1000-penalty10", 0, 1, 2, ring=SLOW, mixer=LATE_MIXER,
            extra=(*VARIABLE, *penalty(10))),
    **seeds("hybrid-late-slow-randpad1000", 0, 1, 2, ring=SLOW, mixer=LATE_MIXER, extra=VARIABLE),
    # the penalty around 10 for the 'late' hybrid
    "hybrid-late-slow-randpad1000-penalty5": psmnist(ring=SLOW, mixer=LATE_MIXER,
                                                     extra=(*VARIABLE, *penalty(5))),
    **seeds("hybrid-late-slow-randpad1000-penalty20", 0, 1, 2, ring=SLOW, mixer=LATE_MIXER,
            extra=(*VARIABLE, *penalty(20))),
    **seeds("hybrid-late-slow-randpad1000-penalty10", 0, 1, 2, suffix="-2epochs", ring=SLOW,
            mixer=LATE_MIXER, extra=(*VARIABLE, *penalty(10), *TWO_EPOCHS)),
    **seeds("hybrid-late-slow-randpad1000", 0, 1, 2, suffix="-2epochs", ring=SLOW, mixer=LATE_MIXER,
            extra=(*VARIABLE, *TWO_EPOCHS)),
    # the fixed pad with BMRUs only from the second block on (the block-0 BMRUs held most of the
    # gradient in 'hybrid-pad1000'); with and without detaching their inputs
    "hybrid-late-slow-pad1000": psmnist(ring=SLOW, mixer=LATE_MIXER),
    "hybrid-late-detached-slow-pad1000": psmnist(ring=SLOW, mixer=LATE_MIXER, bmru=DETACHED),
    # the fixed pad over two epochs: does longer training close the gap, and for which model
    "hybrid-detached-slow-pad1000-2epochs": psmnist(ring=SLOW, bmru=DETACHED, extra=TWO_EPOCHS),
    "lru-slow-pad1000-2epochs": psmnist("lru", ring=SLOW, extra=TWO_EPOCHS),
    "hybrid-late-slow-5epochs": psmnist(ring=SLOW, mixer=LATE_MIXER, extra=FIVE_EPOCHS, pad=0),
    "hybrid-late-slow-seed1": psmnist(ring=SLOW, mixer=LATE_MIXER, pad=0, seed=1),
    "hybrid-slow-seed1": psmnist(ring=SLOW, pad=0, seed=1),
    # the answer asked at every 100th step of the fixed pad (--pad-every): every delay in one
    # sequence, so no answer can lean on where in the pad it is read
    "hybrid-late-slow-pad1000-every100-penalty10": psmnist(
        ring=SLOW, mixer=LATE_MIXER, extra=(*EVERY_100, *penalty(10))),
    **seeds("lru-slow-pad1000-every100", 0, 1, 2, ring=SLOW, model="lru", extra=EVERY_100),
    "hybrid-late-slow-pad1000-every100-penalty30": psmnist(
        ring=SLOW, mixer=LATE_MIXER, extra=(*EVERY_100, *penalty(30))),
    **seeds("hybrid-late-detached-slow-pad1000-every100-penalty10", 0, 1, 2, ring=SLOW,
            mixer=LATE_MIXER, bmru=DETACHED, extra=(*EVERY_100, *penalty(10))),
    # --pad-every on the variable delay: answers along the pad up to each batch's own end
    **seeds("hybrid-late-slow-randpad1000-every100-penalty10", 0, 1, 2, ring=SLOW,
            mixer=LATE_MIXER, extra=(*VARIABLE, *EVERY_100, *penalty(10))),
    # a curriculum: the 'late' hybrid trained without the pad (one epoch), then one epoch on the
    # variable delay with penalty 10 from its weights
    "hybrid-late-slow-randpad1000-penalty10-from-nopad": psmnist(
        ring=SLOW, mixer=LATE_MIXER,
        extra=(*VARIABLE, *penalty(10), *from_run("hybrid-late-slow"))),
    # counters (CMRU, ε = 1) instead of bits in the 'late' hybrid: a held sum of ±1 writes
    "hybrid-late-cmru-slow-randpad1000-penalty10": psmnist(
        ring=SLOW, mixer="lru,lru+cmru", extra=(*VARIABLE, *penalty(10))),
    # a curriculum on the fixed pad: each model's no-pad run, then one epoch with the pad asked
    # along it, from those weights (how much of the no-pad accuracy survives 1 000 silent steps)
    "hybrid-late-detached-slow-pad1000-every100-penalty10-from-nopad": psmnist(
        ring=SLOW, mixer=LATE_MIXER, bmru=DETACHED,
        extra=(*EVERY_100, *penalty(10), *from_run("hybrid-late-slow"))),
    "lru-slow-pad1000-every100-from-nopad": psmnist(
        "lru", ring=SLOW, extra=(*EVERY_100, *from_run("lru-slow"))),
    # wider, so that the held bits can carry more of the digit (the probes: 33 BMRUs held 0.40
    # of it exactly over the variable pad); off the budget, in bf16 autocast for the time
    **seeds("hybrid-late-slow-randpad1000-every100-penalty10", 0, 1, 2, suffix="-h64-bf16",
            ring=SLOW, mixer=LATE_MIXER, hidden=64,
            extra=(*VARIABLE, *EVERY_100, *penalty(10), *BF16)),
    **seeds("lru-slow-randpad1000-every100", 0, 1, 2, suffix="-h64-bf16", model="lru", ring=SLOW,
            hidden=64, extra=(*VARIABLE, *EVERY_100, *BF16)),
    # the same two at width 64 on the fixed pad (the claim)
    "hybrid-late-slow-pad1000-every100-penalty10-h64-bf16": psmnist(
        ring=SLOW, mixer=LATE_MIXER, hidden=64,
        extra=(*EVERY_100, *penalty(10), *BF16)),
    "lru-slow-pad1000-every100-h64-bf16": psmnist(
        "lru", ring=SLOW, hidden=64, extra=(*EVERY_100, *BF16)),
    # the variable delay at width 64 over two epochs (the cosine schedule stretched over both)
    **seeds("hybrid-late-slow-randpad1000-every100-penalty10", 0, 1, 2, suffix="-2epochs-h64-bf16",
            ring=SLOW, mixer=LATE_MIXER, hidden=64,
            extra=(*VARIABLE, *EVERY_100, *penalty(10), *TWO_EPOCHS, *BF16)),
    **seeds("lru-slow-randpad1000-every100", 0, 1, 2, suffix="-2epochs-h64-bf16", model="lru",
            ring=SLOW, hidden=64,
            extra=(*VARIABLE, *EVERY_100, *TWO_EPOCHS, *BF16)),
    # and without the pad, the reference of "≤ 1 point lost to the pad" at width 64
    "hybrid-late-slow-h64-bf16": psmnist(ring=SLOW, mixer=LATE_MIXER, hidden=64, pad=0,
                                         extra=BF16),
    "lru-slow-h64-bf16": psmnist("lru", ring=SLOW, hidden=64, pad=0,
                                 extra=BF16),
    # no pad, five epochs at width 64: how far toward issue 6's 98 % this CPU gets
    **seeds("hybrid-late-slow-5epochs", 0, 1, suffix="-h64-bf16", ring=SLOW, mixer=LATE_MIXER,
            hidden=64, pad=0, extra=(*FIVE_EPOCHS, *BF16)),
    **seeds("lru-slow-5epochs", 0, 1, suffix="-h64-bf16", model="lru", ring=SLOW, hidden=64, pad=0,
            extra=(*FIVE_EPOCHS, *BF16)),
}
SAMPLES, LAST_PAD = 256, 100
LONG_PADS, LONG_SAMPLES = (0, 1000, 10_000), 1000  # around the training pad, first digits
PAD_COLUMNS = " | ".join(f"pad {p:,}".replace(",", " ") for p in LONG_PADS)


@contextlib.contextmanager
def recording(model: torch.nn.Module):
    """Record ``{(block, unit name): (unit, input, output)}`` of every mixer unit's ``forward``
    (forward hooks)."""
    records, handles = {}, []
    for b, block in enumerate(model.blocks):
        for name, unit in zip(block.mixer, block.units):
            def hook(module, args, out, _key=(b, name)):
                records[_key] = (module, args[0], out[0])
            handles.append(unit.register_forward_hook(hook))
    try:
        yield records
    finally:
        for handle in handles:
            handle.remove()


def writes(unit: MRU, inp: torch.Tensor) -> torch.Tensor:
    """The exact write gates ``z = H(|c| − |β|)`` of ``unit`` on its recorded input."""
    c, beta = unit.drive(inp)
    return exact_heaviside(c.abs() - beta.abs())


def spread(y: torch.Tensor) -> float:
    """Standard deviation across the batch, averaged over units: ``y (B, H)``."""
    return y.std(0).mean().item()


def unit_rows(task, model: torch.nn.Module) -> list[dict]:
    """Spread at the last pixel and last step, and the MRUs' writes, per mixer unit of a trained
    ``model``."""
    T = task.seq_len(None)
    pixels = T - task.pad
    x, _ = task.examples("test", torch.arange(SAMPLES), T, torch.Generator().manual_seed(0))
    rows = []
    with torch.no_grad(), recording(model) as records:
        model(x)
        for (block, name), (unit, inp, y) in records.items():
            row = {"block": block, "unit": name, "spread_last_pixel": spread(y[:, pixels - 1]),
                   "spread_end": spread(y[:, -1])}
            if isinstance(unit, MRU):
                z = writes(unit, inp)
                row.update(writes_pixels=z[:, :pixels].mean().item(),
                           writes_pad=z[:, -LAST_PAD:].mean().item(),
                           writing_at_end=(z[:, -1].mean(0) > 0.5).float().mean().item())
            rows.append(row)
    return rows


def beyond_the_pad(task, model: torch.nn.Module) -> dict:
    """Accuracy on the first ``LONG_SAMPLES`` test digits with each pad of ``LONG_PADS``: does
    the run answer without the pad, and does what it holds at its training pad last ten times
    longer?"""
    pixels = task.seq_len(None) - task.pad
    return {pad: evaluate(model, task, "test", pixels + pad, n=LONG_SAMPLES)["accuracy"]
            for pad in LONG_PADS}


def init_gradients(task, config: dict) -> dict:
    """Gradient norm of each unit's parameters (and of all) at the start of the run (the model
    built as ``bistable train`` builds it from ``config``, with the weights of ``--init-from``
    where given) of its training loss (the write penalty left out), one batch of 64."""
    c = TrainConfig(**config)
    model = loop._build_model(c, task)
    if c.init_from:
        loop._load_weights(model, dataclasses.replace(c, init_from=str(ROOT / c.init_from)))
    T = task.seq_len(None)
    x, y = task.examples("train", torch.arange(64), T, torch.Generator().manual_seed(0))
    task.train_loss(model(x)[0], y).backward()
    norms = {"all": torch.cat([p.grad.flatten() for p in model.parameters()]).norm().item()}
    for b, block in enumerate(model.blocks):
        for name, unit in zip(block.mixer, block.units):
            norms[f"{b}:{name}"] = torch.cat([p.grad.flatten() for p in unit.parameters()]
                                             ).norm().item()
    return norms


COLUMNS = ("run", "hidden", "test accuracy", "block:unit", "spread at the last pixel",
           "spread at the end", "write rate, pixels", f"write rate, last {LAST_PAD} pad steps",
           "units writing at the end", "gradient norm at init (unit / all)")
NOTES = (f"psMNIST runs at a matched budget of 38 305 parameters, the task's default steps (one "
         f"epoch; '-2epochs', '-5epochs': two, five, the cosine schedule stretched over them "
         f"all). Spread and writes on the first {SAMPLES} test digits; a unit 'writing at the "
         f"end' writes at the last step for most digits. 'hybrid': an LRU and a BMRU side by side "
         f"in both blocks (`mixer=lru+bmru`, the default); 'detached': the same with "
         f"`detach_input=True` on the BMRUs; 'alternating': an LRU block, then a BMRU block "
         f"(`mixer=lru,bmru`); 'late': an LRU block, then an LRU and a BMRU side by side "
         f"(`mixer=lru,lru+bmru`); 'cmru': an LRU and a CMRU (ε = 1, a counter) side by side "
         f"(`mixer=lru+cmru`); 'penalty λ': `--write-penalty λ` (the loss gets λ · mean(z) of "
         f"the BMRUs; the gradient norms at initialisation are those of the task's loss "
         f"alone); 'slow': the LRUs' ring |λ| ∈ [0.99, 0.9999] (the others: [0.9, 0.999]); "
         f"'k4': the BMRUs' surrogate sharpness 4 (the others: 1); 'randpad': `--pad-min 0`, "
         f"each training batch's pad drawn uniformly from 0 … 1000 (evaluation: 1000); "
         f"'every100': `--pad-every 100`, the training loss averaged over the answers at the "
         f"last pixel and every 100 pad steps after it; 'from-nopad': `--init-from` the "
         f"weights of the same model trained without the pad (its gradient norms at the start "
         f"are taken at those weights); 'h64': width 64, off the budget (the hidden column); "
         f"'bf16': `--precision bf16`, trained under bfloat16 autocast (its test accuracy "
         f"taken so too; the other columns here in float32).")


BEYOND = (f"Around the training pad: the runs trained with `--pad 1000`, evaluated on the first "
          f"{LONG_SAMPLES} test digits without the pad, with the pad they were trained with and "
          f"with a pad ten times longer (chance 0.1; a model that answers one class for every "
          f"digit scores that class's share, about 0.1).")


SEEDS = ("Over seeds: the runs above that differ only in their seed (`-seed<n>`; seed 0 has no "
         "suffix), mean ± std: test accuracy on all 10 000 digits as trained (with the run's "
         "pad, if any), and the three pads of the table above.")


def seed_table(data: list[dict]) -> list[str]:
    """Mean ± std over the seeds of each run that was trained with two seeds or more."""
    rows = []
    for run, ds in seed_groups(data, "run").items():
        if len(ds) < 2:
            continue
        cells = [mean_std([d["eval"][0]["accuracy"] for d in ds])]
        if all("beyond_the_pad" in d for d in ds):
            cells += [mean_std([d["beyond_the_pad"][p] for d in ds], ".3f") for p in LONG_PADS]
        else:
            cells += [""] * len(LONG_PADS)
        rows.append(f"| {run} | {len(ds)} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    return [SEEDS, "", f"| run | seeds | test accuracy | {PAD_COLUMNS} |",
            "|---|---:|---:|" + "---:|" * len(LONG_PADS), *rows, ""]


def table_rows(run: str, metrics: dict, rows: list[dict], grads: dict) -> list[str]:
    """One markdown row per mixer unit of ``run``."""
    lines = []
    for r in rows:
        key = f"{r['block']}:{r['unit']}"
        mru = [f"{r[k]:.3f}" if k in r else "" for k in ("writes_pixels", "writes_pad",
                                                         "writing_at_end")]
        cells = [run, metrics["config"]["hidden"], f"{metrics['eval'][0]['accuracy']:.4f}", key,
                 f"{r['spread_last_pixel']:.4f}", f"{r['spread_end']:.4f}", *mru,
                 f"{grads[key]:.3g} / {grads['all']:.3g}"]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return lines


def main() -> None:
    args = run_set_args(summary(__doc__), RUNS, "pad_memory")
    torch.set_num_threads(1)

    table = ["| " + " | ".join(COLUMNS) + " |", "|---|---:|---:|---|" + "---:|" * 6]
    commands, data, beyond = [], [], []
    for run, argv in RUNS.items():
        if args.only and run not in args.only:
            continue
        out = f"{RUNS_DIR}/{run}"
        metrics = trained_run(out, ["psmnist", *argv], train=not args.no_train)
        if metrics is None:
            continue
        task, model = load_run(ROOT / out)
        rows, grads = unit_rows(task, model), init_gradients(task, metrics["config"])
        table += table_rows(run, metrics, rows, grads)
        commands.append(f"- {run}: `{train_command(['psmnist', *argv], out)}`")
        data.append({"run": run, "command": commands[-1], "eval": metrics["eval"],
                     "units": rows, "init_gradients": grads, **evaluations(metrics)})
        if task.pad:
            data[-1]["beyond_the_pad"] = accuracy = beyond_the_pad(task, model)
            beyond.append(f"| {run} | " + " | ".join(f"{accuracy[p]:.3f}" for p in LONG_PADS)
                          + " |")
    if beyond:  # only runs trained with a pad have this table
        beyond = [BEYOND, "", f"| run | {PAD_COLUMNS} |", "|---|" + "---:|" * len(LONG_PADS),
                  *beyond, ""]
    markdown = "\n".join([header("What survives the pad: psMNIST --pad 1000"), NOTES, "",
                           *table, "", *beyond, *seed_table(data), "Commands:", *commands, ""])
    print(write_results(args.name, markdown, data))


if __name__ == "__main__":
    run_main(main)
