"""The training loop, top to bottom (in the spirit of nanoGPT's ``train.py``).

One step: build the global batch for this step (a pure function of the seed and the step, so a
resumed or distributed run sees exactly the same data), take this rank's slice, (set the CMRUs' ε
and the SRCs' training noise on their schedules,) forward (under autocast with ``--precision
bf16``), loss on the last step ``y[:, -1]`` (or averaged over the task's readout steps,
``--pad-every``; plus ``λ · mean(z)`` of the memory units with a write penalty), backward, clip the
gradient norm, check that loss and gradients are finite, set the learning rate (linear warm-up
then cosine decay to ``min_lr``, or constant), AdamW step, check that the weights' norm is finite.
Every ``eval_every`` steps: evaluate at the training length; every ``checkpoint_every`` steps: write
the checkpoint (model, optimiser, schedule, RNG states, data position, history, the current logging
window) atomically. At the end: evaluate at the training length and at every ``eval_seq_len``,
write ``metrics.json``, the checkpoint and the plots (:mod:`.report`) into ``out``.
With ``keep_best`` (early stopping's checkpoint selection, as Keras' ``restore_best_weights`` or
Lightning's ``ModelCheckpoint(monitor="val_loss")``): the evaluations during training and one at
the end score the validation split (``"val"``, held out of the training data), the checkpoint also
keeps the weights of the lowest validation loss (``monitor="accuracy"``: of the highest validation
accuracy), and the final test evaluations score those.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.torch_version import TorchVersion
from tqdm import tqdm

from ..data.tasks import Task, build_task, epoch_steps
from ..nn.network import parse_mixers
from ..units.base import COMPILE_TESTED_FROM
from ..units.bmru import CMRU, MRU, anneal_epsilon, write_rate
from ..units.src import SRC, ramp_train_noise
from . import distributed
from .checkpoint import (
    CHECKPOINT,
    CHECKPOINT_VERSION,
    claimed,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .metrics import evaluate, write_metrics
from .provenance import reach, stretch
from .report import plots, spiking_figures

# settings a resumed run may change; every other one must match the checkpoint
MAY_CHANGE = ("steps", "epochs", "warmup", "eval_seq_len", "eval_every", "checkpoint_every",
              "log_every", "eval_samples", "device", "threads", "data_dir", "out", "resume",
              "quiet", "compile", "precision")
# settings a resume keeps from the run where they are not given again (None or [] here)
KEPT_ON_RESUME = ("steps", "warmup", "eval_seq_len", "eval_every", "checkpoint_every",
                  "log_every", "eval_samples", "threads", "data_dir", "precision", "monitor")
# what resolve makes of a setting left out (None) that has a fixed default: a run saved before
# the setting existed counts as made with it
FIXED_DEFAULTS = {"log_every": 10, "monitor": "loss"}

PRECISIONS = ("fp32", "bf16")
MONITORS = ("loss", "accuracy")  # what keep_best selects on: the lowest loss, the highest accuracy


class TrainingDiverged(RuntimeError):
    """The loss, the gradients or the weights' norm became NaN or Inf; the last good checkpoint
    is kept."""


@dataclass
class TrainConfig:
    """Everything that defines a run. ``None`` means: the task's default (``Task.defaults``),
    else the global one below."""

    task: str
    model: str
    out: str
    layers: int | None = None
    hidden: int | None = None
    params: int | None = None          # parameter budget: picks ``hidden``
    seq_len: int | None = None
    eval_seq_len: list[int] = field(default_factory=list)
    steps: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    min_lr: float | None = None        # end of the cosine; default lr / 10
    warmup: int | None = None          # default 5 % of the steps, at most 200
    schedule: str = "cosine"           # or "constant" (after warm-up)
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    write_penalty: float = 0.0         # λ: the loss gets λ · mean(z) of the MRUs (SPEC.md §2.2)
    anneal_epsilon: int | None = None  # CMRUs: ε from 1 (counter) to 0 (BMRU) over N steps
    noise_ramp: int | None = None      # SRCs: train_noise from 0 to its value over N steps
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None         # torch CPU threads (None: the task's, else torch's)
    compile: str | None = None         # torch.compile backend of the training steps (None: eager)
    precision: str | None = None       # "fp32" or "bf16" (forward and loss under
                                       # torch.autocast(bfloat16)); None: fp32, or the resumed run's
    data_dir: str | None = None
    pad: int | None = None
    pad_min: int | None = None         # (p)smnist: training pads drawn from pad_min … pad
    pad_every: int | None = None       # (p)smnist: training readouts every N pad steps
    shift: int | None = None           # images, N-MNIST: training examples moved by up to N pixels
    gap: int | None = None
    model_options: dict = field(default_factory=dict)
    eval_samples: int | None = None    # synthetic: examples per eval set; data sets: None = all
    eval_every: int | None = None      # default: 10 evaluations per run
    checkpoint_every: int | None = None  # default: as eval_every
    log_every: int | None = None       # default 10
    resume: bool = False
    init_from: str | None = None       # start from the model weights of the run in this folder
    keep_best: bool = False            # test the weights of the best validation score
    monitor: str | None = None         # keep_best's score: "loss" (lowest, the default) or
                                       # "accuracy" (highest)
    ema: float = 0.0                   # decay of the weights' moving average, which evaluations
                                       # score (0: off, the trained weights themselves)
    quiet: bool = False


def _merged(defaults: dict, given: dict) -> dict:
    """``defaults`` updated by ``given``, nested dicts key by key: an option given for one unit
    (``unit_kwargs={"bmru": {...}}``) keeps the task's defaults for the others."""
    out = dict(defaults)
    for key, value in given.items():
        both = isinstance(value, dict) and isinstance(defaults.get(key), dict)
        out[key] = _merged(defaults[key], value) if both else value
    return out


def _for_mixer(defaults: dict, given: dict) -> dict:
    """The task's default model options less the ``unit_kwargs`` of units that a ``mixer`` the
    user gave does not have (``--option mixer=bmru`` on a task whose defaults tune the LRU)."""
    if "mixer" not in given or not isinstance(defaults.get("unit_kwargs"), dict):
        return defaults
    try:
        units = {name for block in parse_mixers(given["mixer"]) for name in block}
    except ValueError:
        return defaults  # the model names what is wrong with the mixer
    return {**defaults, "unit_kwargs": {name: options for name, options
                                        in defaults["unit_kwargs"].items() if name in units}}


LARGEST = 2**31 - 1  # a size or count beyond it fits no tensor of a run (torch fails at 2**63)


def _check_not_huge(c: TrainConfig) -> None:
    """One line for a size no run could allocate, before torch fails on it at length."""
    for f in dataclasses.fields(c):
        value = getattr(c, f.name)
        values = value if isinstance(value, list) else [value]
        huge = [v for v in values if type(v) is int and v > LARGEST]
        if huge and f.name != "seed":  # (the seed has its own range, checked below)
            raise ValueError(f"--{f.name.replace('_', '-')}: expected at most {LARGEST}, "
                             f"got {huge[0]}")


def resolve(config: TrainConfig, task: Task) -> TrainConfig:
    """Fill every ``None`` from the task's defaults and the rules above; check the values."""
    from ..models import MODEL_NAMES

    if config.model not in MODEL_NAMES:
        raise ValueError(f"unknown model {config.model!r}; choose one of: "
                         f"{', '.join(MODEL_NAMES)}")
    c = dataclasses.replace(config, eval_seq_len=list(config.eval_seq_len),
                            model_options=dict(config.model_options))
    _check_not_huge(c)
    d = task.defaults
    c.layers = c.layers if c.layers is not None else d.get("layers", 2)
    c.batch_size = c.batch_size if c.batch_size is not None else d.get("batch_size", 64)
    c.lr = c.lr if c.lr is not None else d.get("lr", 1e-3)
    c.min_lr = c.min_lr if c.min_lr is not None else c.lr / 10
    for name, default in FIXED_DEFAULTS.items():
        if getattr(c, name) is None:
            setattr(c, name, default)
    if c.data_dir is None and hasattr(task, "data_dir"):  # a data set found through the
        c.data_dir = os.environ.get("BISTABLE_DATA_DIR") or None  # environment: saved too
    if c.data_dir is not None:  # saved as a full path: the run resumes and evaluates from anywhere
        c.data_dir = str(Path(c.data_dir).expanduser().resolve())
    c.seq_len = task.seq_len(c.seq_len)
    c.eval_seq_len = sorted({c.seq_len, *(task.check_seq_len(n) for n in c.eval_seq_len)})
    reserved = {"hidden": "--hidden", "layers": "--layers", "input_size": "the task",
                "output_size": "the task"}
    clash = sorted(reserved.keys() & c.model_options.keys())
    if clash:
        raise ValueError(f"--option {clash[0]}: set by {reserved[clash[0]]}, not as a model "
                         "option")
    defaults = _for_mixer(d.get("model_options", {}).get(c.model, {}), c.model_options)
    c.model_options = _merged(defaults, c.model_options)
    if c.eval_samples is None:
        c.eval_samples = d.get("eval_samples")
    if c.threads is None and c.device == "cpu":
        c.threads = d.get("threads")
    for name in ("layers", "batch_size", "steps", "epochs", "hidden", "params", "eval_samples",
                 "threads", "anneal_epsilon", "noise_ramp", "eval_every", "checkpoint_every",
                 "log_every"):
        value = getattr(c, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if c.warmup is not None and c.warmup < 0:
        raise ValueError(f"--warmup must be >= 0, got {c.warmup}")
    if not 0 <= c.seed < 2**32:  # the batches' generators are seeded by seed · 1 000 003 + step
        raise ValueError(f"--seed must be in [0, 2**32), got {c.seed}")
    for name in ("lr", "min_lr", "weight_decay", "grad_clip", "write_penalty"):
        value = getattr(c, name)
        if not (math.isfinite(value) and value >= (1e-300 if name == "lr" else 0)):
            limit = "> 0" if name == "lr" else ">= 0"
            raise ValueError(f"--{name.replace('_', '-')} must be finite and {limit}, got {value}")
    if not (isinstance(c.ema, (int, float)) and 0 <= c.ema < 1):
        raise ValueError(f"--ema: expected a decay in [0, 1) (0: off), got {c.ema!r}")
    if c.schedule not in ("cosine", "constant"):
        raise ValueError(f"--schedule: expected cosine or constant, got {c.schedule!r}")
    if c.schedule == "cosine" and c.min_lr > c.lr:
        raise ValueError(f"--min-lr: expected at most --lr ({c.lr}) for the cosine decay, "
                         f"got {c.min_lr}")
    if c.monitor not in MONITORS:
        raise ValueError(f"--monitor: expected one of {', '.join(MONITORS)}, got {c.monitor!r}")
    if c.monitor != "loss" and not c.keep_best:
        raise ValueError(f"--monitor {c.monitor}: chooses --keep-best's weights; add --keep-best")
    if c.monitor == "accuracy" and task.kind != "classification":
        raise ValueError(f"--monitor accuracy: {task.name} is a {task.kind} task (no accuracy); "
                         "use --monitor loss")
    if c.precision is not None and c.precision not in PRECISIONS:
        raise ValueError(f"--precision: expected one of {', '.join(PRECISIONS)}, "
                         f"got {c.precision!r}")
    if c.compile is not None:
        backends = torch.compiler.list_backends(exclude_tags=())
        if c.compile not in backends:
            raise ValueError(f"--compile: expected a torch.compile backend "
                             f"({', '.join(backends)}), got {c.compile!r}")
        if TorchVersion(torch.__version__) < COMPILE_TESTED_FROM:
            tested = ".".join(map(str, COMPILE_TESTED_FROM))
            warnings.warn(f"--compile: whole-model torch.compile is tested from torch {tested}, "
                          f"this is {torch.__version__}: dynamo may break the graph (slower, still "
                          "correct where checked) or, on 2.4, stall compiling the SRC's step loop",
                          stacklevel=3)
    if c.steps is not None and c.epochs is not None:
        raise ValueError("give --steps or --epochs, not both")
    if c.hidden is not None and c.params is not None:
        raise ValueError("give --hidden or --params (which picks --hidden), not both")
    if c.epochs is not None:
        if task.size("train") is None:
            raise ValueError(f"--epochs needs a data-set task ({task.name} is synthetic): "
                             "use --steps")
        c.steps = c.epochs * epoch_steps(task, c.batch_size)
    elif c.steps is None:
        c.steps = (d["epochs"] * epoch_steps(task, c.batch_size) if "epochs" in d
                   else d.get("steps", 1000))
    c.warmup = c.warmup if c.warmup is not None else min(200, c.steps // 20)
    c.eval_every = c.eval_every or max(1, c.steps // 10)
    c.checkpoint_every = c.checkpoint_every or c.eval_every
    if c.hidden is None:
        c.hidden = d.get("hidden", 64) if c.params is None else _width(c, task)
    return c


def _width(c: TrainConfig, task: Task) -> int:
    from ..models import width_for_budget

    return width_for_budget(c.model, c.params, task.input_size, task.output_size,
                            layers=c.layers, **c.model_options)


def learning_rate(step: int, c: TrainConfig) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine from ``lr`` to ``min_lr`` at ``steps``
    (or constant ``lr``)."""
    if step < c.warmup:
        return c.lr * (step + 1) / c.warmup
    if c.schedule == "constant" or c.steps <= c.warmup:
        return c.lr
    progress = min(1.0, (step - c.warmup) / (c.steps - c.warmup))
    return c.min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (c.lr - c.min_lr)


def _generator(seed: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + index)


@functools.lru_cache(maxsize=2)
def _epoch_order(seed: int, epoch: int, size: int) -> torch.Tensor:
    return torch.randperm(size, generator=_generator(seed, -1 - epoch))


def train_batch(task: Task, c: TrainConfig, step: int,
                device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch of ``step`` on ``device``: synthetic tasks draw it from a generator
    seeded by ``(seed, step)``; data-set tasks take positions ``step·B … step·B + B − 1`` of the
    endless sequence of epochs, each epoch a permutation seeded by ``(seed, epoch)``."""
    generator = _generator(c.seed, step)
    seq_len = task.train_seq_len(c.seq_len, generator)
    size = task.size("train")
    if size is None:
        return task.batch("train", seq_len, c.batch_size, generator, device)
    position = step * c.batch_size + torch.arange(c.batch_size)
    epoch, offset = position // size, position % size
    index = torch.empty_like(position)
    for e in epoch.unique().tolist():
        where = epoch == e
        index[where] = _epoch_order(c.seed, e, size)[offset[where]]
    return task.examples("train", index, seq_len, generator, device)


def _build_task(c: TrainConfig) -> Task:
    return build_task(c.task, data_dir=c.data_dir, gap=c.gap, pad=c.pad, pad_min=c.pad_min,
                      pad_every=c.pad_every, validation=c.keep_best, shift=c.shift)


def _build_model(c: TrainConfig, task: Task) -> torch.nn.Module:
    from ..models import build_model

    torch.manual_seed(c.seed)
    return build_model(c.model, task.input_size, task.output_size, hidden=c.hidden,
                       layers=c.layers, **c.model_options)


def autocast(precision: str, device: torch.device):
    """``--precision bf16``: mixed precision as PyTorch's AMP has it, the products in bfloat16
    under ``torch.autocast`` while parameters, gradients, optimiser state and checkpoints stay
    float32 (no gradient scaler: bfloat16 has float32's range)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def _check_training_aids(c: TrainConfig, model: torch.nn.Module) -> None:
    """The write penalty needs memory units, the ε schedule cumulative ones, the noise ramp
    SRCs with noise-aware training."""
    for flag, on, kind, name in (("--write-penalty", c.write_penalty > 0, MRU, "memory"),
                                 ("--anneal-epsilon", c.anneal_epsilon, CMRU, "cumulative memory"),
                                 ("--noise-ramp", c.noise_ramp, SRC, "spiking recurrent")):
        if on and not any(isinstance(m, kind) for m in model.modules()):
            raise ValueError(f"{flag} needs a model with {name} units ({kind.__name__}); "
                             f"model {c.model!r} has none")


def _ramp_target(model: torch.nn.Module) -> float:
    """The ``train_noise`` the SRCs of ``model`` were built with: where ``--noise-ramp`` ends."""
    sigmas = {m.train_noise for m in model.modules() if isinstance(m, SRC)}
    if len(sigmas) != 1 or not next(iter(sigmas)) > 0:
        raise ValueError("--noise-ramp needs SRC units built with one train_noise > 0 (e.g. "
                         f"--option train_noise=0.1); this model's: {sorted(sigmas)}")
    return sigmas.pop()


def _load_weights(model: torch.nn.Module, c: TrainConfig) -> None:
    """Fine-tuning: the model weights of the run in ``c.init_from`` (same model, sizes and
    options; the optimiser, schedule and data order start afresh)."""
    path = Path(c.init_from) / CHECKPOINT
    if not path.is_file():
        raise ValueError(f"--init-from: no checkpoint in {c.init_from}")
    saved = read_checkpoint(path)
    try:
        model.load_state_dict(selected(saved)["model"])
    except (RuntimeError, TypeError, ValueError, KeyError) as e:
        # torch's words name the tensors; the settings that differ, which may explain them, follow
        keys = ("task", "model", "hidden", "layers", "model_options")
        differ = [f"{k}: {saved['config'].get(k)!r} there, {getattr(c, k)!r} here" for k in keys
                  if saved["config"].get(k) != getattr(c, k)]
        also = f"; settings that differ: {'; '.join(differ)}" if differ else ""
        raise ValueError(f"--init-from: the weights in {path} do not fit this model "
                         f"({_why(e)}){also}") from None


def load_run(out, data_dir: str | None = None) -> tuple[Task, torch.nn.Module]:
    """The task and the model of the run in ``out``, with the weights :func:`selected`, in
    evaluation mode (training-only noise such as the SRC's ``train_noise`` off); ``data_dir``
    replaces the run's own (a run moved to another machine)."""
    return run_from(read_run(out), data_dir, Path(out) / CHECKPOINT)


def read_run(out) -> dict:
    """The last checkpoint of the run in ``out`` (config, weights, step, ...)."""
    path = Path(out) / CHECKPOINT
    if not path.is_file():
        raise ValueError(f"{out}: no checkpoint ({CHECKPOINT}) of a `bistable train` run")
    return read_checkpoint(path)


def read_checkpoint(path) -> dict:
    """The checkpoint at ``path``, checked to be one that ``bistable train`` wrote."""
    saved = load_checkpoint(path)
    keys = ("config", "model", "step", "history")
    if not (isinstance(saved, dict) and all(k in saved for k in keys)
            and isinstance(saved["config"], dict)):
        found = list(saved)[:6] if isinstance(saved, dict) else type(saved).__name__
        raise ValueError(f"{path}: not a checkpoint of a `bistable train` run (expected a dict "
                         f"with {', '.join(keys)}; got {found})")
    version = saved.get("version", CHECKPOINT_VERSION)
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise ValueError(f"{path}: a checkpoint of format {version!r}, newer than this "
                         f"bistable reads ({CHECKPOINT_VERSION}); a newer version wrote it")
    unknown = sorted(saved["config"].keys() - {f.name for f in dataclasses.fields(TrainConfig)})
    if unknown:
        raise ValueError(f"{path}: made with settings this bistable does not know "
                         f"({', '.join(unknown)}); a newer version wrote it")
    return saved


def run_from(saved: dict, data_dir: str | None = None,
             path=None) -> tuple[Task, torch.nn.Module]:
    """:func:`load_run` from a checkpoint already read (from ``path``, for messages)."""
    c = TrainConfig(**saved["config"])
    c.data_dir = data_dir or c.data_dir
    task = _build_task(c)
    model = _build_model(c, task)
    _load_state(model, selected(saved)["model"], "its weights", path)
    return task, model.eval()


def _load_state(target, state, what: str, path=None) -> None:
    """``target.load_state_dict(state)``, a mismatch said in one line (a checkpoint whose
    weights do not fit the model its settings build: written by another version)."""
    try:
        target.load_state_dict(state)
        if isinstance(target, torch.optim.Optimizer):
            _check_optimizer_shapes(target)
    except (RuntimeError, TypeError, ValueError, KeyError) as e:
        where = f"{path}: " if path else ""
        verb = "do" if what.endswith("weights") else "does"
        raise ValueError(f"{where}{what} {verb} not fit the run's settings ({_why(e)}); another "
                         "version of bistable wrote it") from None


def _why(err: Exception) -> str:
    """``load_state_dict``'s error in one line of at most 300 characters: the tensors that
    differ (missing, unexpected, or of another shape)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if lines and lines[0].startswith("Error(s) in loading state_dict"):
        lines = lines[1:]  # torch's heading; the keys that differ follow
    why = "; ".join(lines) or type(err).__name__
    return why if len(why) <= 300 else why[:297] + "..."


def _check_optimizer_shapes(optimizer: torch.optim.Optimizer) -> None:
    """Raise if a per-parameter state tensor (Adam's moments) is not its parameter's shape:
    ``Optimizer.load_state_dict`` checks only the number of parameters, and a moment of another
    shape would fail at the first step, deep inside the update."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                if torch.is_tensor(value) and value.dim() and value.shape != p.shape:
                    raise ValueError(f"size mismatch for state {key!r}: expected "
                                     f"{tuple(p.shape)}, got {tuple(value.shape)}")


def selected(saved: dict) -> dict:
    """The ``{"step", "model", ...}`` of the weights a run's results score: its best validation
    score's for a ``keep_best`` run, else the moving average's for an ``ema`` run, else the
    checkpoint's last."""
    return saved.get("best") or saved.get("ema") or saved


def _moving_average(model: torch.nn.Module, decay: float) -> AveragedModel | None:
    """``--ema``: an exponential moving average of ``model``'s parameters (PyTorch's
    ``AveragedModel``), ``w̄ ← decay · w̄ + (1 − decay) · w`` after every optimiser step, the first
    step copying ``w``; buffers follow the model's. None when ``decay`` is 0."""
    if not decay:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=False)


def _average_state(averaged: AveragedModel | None, step: int) -> dict | None:
    """What a checkpoint keeps of the moving average (``selected`` reads its ``model``)."""
    if averaged is None:
        return None
    return {"step": step, "model": averaged.module.state_dict(),
            "n_averaged": int(averaged.n_averaged)}


def _better(best: dict | None, step: int, result: dict, monitor: str,
            model: torch.nn.Module) -> dict | None:
    """``best`` (``{"step", "loss", "accuracy", "model"}``), or this step's validation ``result``
    and a copy of the weights (on the CPU) if its ``monitor`` is finite and better: a lower loss,
    a higher accuracy; a tie keeps the earlier."""
    value = result[monitor]
    if not math.isfinite(value):
        return best
    if best is not None and (value >= best[monitor] if monitor == "loss"
                             else value <= best[monitor]):
        return best
    weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    return {"step": step, "loss": result["loss"], "accuracy": result["accuracy"],
            "model": weights}


def differences(saved: dict, c: TrainConfig, ignore=MAY_CHANGE) -> list[str]:
    """``"key: saved -> now"`` for each setting of the resolved ``c`` that differs from a run's
    saved config (a setting added after the run was made counts as its default), but those in
    ``ignore``."""
    now = dataclasses.asdict(c)
    saved = {f.name: f.default for f in dataclasses.fields(TrainConfig)} | FIXED_DEFAULTS | saved
    return [f"{k}: {saved[k]!r} -> {now[k]!r}" for k in now
            if k not in ignore and saved[k] != now[k]]


def planned(config: TrainConfig) -> TrainConfig:
    """``config`` resolved as ``train`` would resolve it (the task's defaults filled), without
    training: what a run made from it has in its saved config."""
    c = resolve(config, _build_task(config))
    c.precision = c.precision or "fp32"  # resolved by train after a resume could keep the run's
    return c


def _check_same_run(saved: dict, config: TrainConfig) -> None:
    """Before the saved settings fill in the left-out ones: a resume continues the same task and
    model (else the first error would be about a setting the other run had, not this one)."""
    if (saved["task"], saved["model"]) != (config.task, config.model):
        raise ValueError(f"--resume: the run in --out trains {saved['model']} on "
                         f"{saved['task']}, not {config.model} on {config.task}; use another "
                         "--out, or that task and model")


def _check_resumable(checkpoint: dict, c: TrainConfig) -> None:
    diff = differences(checkpoint["config"], c)
    if diff:
        raise ValueError("--resume: the run in --out was made with other settings ("
                         + "; ".join(diff) + "); use another --out or the same settings")
    if c.steps < checkpoint["step"]:
        raise ValueError(f"--resume: --steps: expected at least the checkpoint's step "
                         f"{checkpoint['step']}, got {c.steps}")
    if c.steps < checkpoint["config"]["steps"] and c.schedule == "cosine":
        raise ValueError(f"--resume: --steps {c.steps} is below the run's "
                         f"{checkpoint['config']['steps']} (its cosine decay followed that "
                         "length)")


def _window() -> dict:
    """An empty logging window: its steps' losses, gradient norms, write rates and training time
    (``busy``, seconds)."""
    return {"losses": [], "norms": [], "rates": [], "busy": 0.0}


def _diverged(step: int, what: str, ckpt_path: Path) -> TrainingDiverged:
    """The error of a run that diverged at ``step``: ``what`` was not finite."""
    kept = (f"the last good checkpoint, {ckpt_path}, is kept" if ckpt_path.is_file()
            else "no checkpoint was written")
    return TrainingDiverged(f"training diverged at step {step}: {what}; {kept}. Try a lower --lr.")


@torch.no_grad()
def _norm(weights: list[torch.Tensor]) -> torch.Tensor:
    """The global norm of ``weights`` (fp32 scalar on their device), computed in their dtype:
    NaN or Inf if one is, or if their squares overflow (weights that large overflow the forward
    too)."""
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(weights))).float()


def _checkpoint(path: Path, step: int, c, model, optimizer, history, window, best,
                averaged, stretches: list) -> None:
    reach(stretches[-1], step)
    save_checkpoint(path, {
        "version": CHECKPOINT_VERSION, "step": step, "config": dataclasses.asdict(c),
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": {"schedule": c.schedule, "lr": c.lr, "min_lr": c.min_lr,
                      "warmup": c.warmup, "steps": c.steps, "next_lr": learning_rate(step, c)},
        "rng": rng_state(),
        "data": {"seed": c.seed, "step": step, "samples_seen": step * c.batch_size},
        "history": history,
        "window": window,
        "best": best,
        "ema": _average_state(averaged, step),
        "provenance": stretches,
    })


def _evaluate_during(model, task: Task, c: TrainConfig, step: int, history: list,
                     best: dict | None, device) -> dict | None:
    """Score the model at the training length on the validation split (``keep_best``:
    ``eval_samples`` examples, data sets' whole split by default) or on up to 1000 examples of the
    test split (the learning curve), log it in ``history``; return the best so far."""
    split = "val" if c.keep_best else "test"
    n = c.eval_samples if c.keep_best else min(c.eval_samples or 1000, 1000)
    with autocast(c.precision, device):
        result = evaluate(model, task, split, c.seq_len, n=n, device=device)
    history.append({"step": step, "split": split, "eval_loss": result["loss"],
                    "eval_mse": result["mse"], "eval_accuracy": result["accuracy"]})
    return _better(best, step, result, c.monitor, model) if c.keep_best else best


def train(config: TrainConfig) -> dict:
    """Run (or resume) the training described by ``config``; return the ``metrics.json`` dict."""
    ctx = distributed.setup(config.device)
    try:
        with contextlib.ExitStack() as held:  # the claim on --out, released however _train ends
            metrics = _train(config, ctx, held)
    except BaseException:
        distributed.teardown(ctx, ended_well=False)
        raise
    distributed.teardown(ctx)
    return metrics


def _claim(out: Path, ctx: distributed.Context, held: contextlib.ExitStack) -> None:
    """:func:`~bistable.train.checkpoint.claimed` ``out`` for as long as ``held`` lasts, by the
    rank that writes; every rank stops if it cannot."""
    refused = None
    if ctx.is_main:
        try:
            held.enter_context(claimed(out, "--out"))
        except ValueError as err:
            refused = str(err)
    if (refused := ctx.from_main(refused)) is not None:
        raise ValueError(refused)


def as_resumed(config: TrainConfig, saved: dict) -> TrainConfig:
    """``config`` with each setting of :data:`KEPT_ON_RESUME` it leaves unset taken from the run's
    saved config: a resume goes on as the run was made (``--steps 300`` stays 300, the warm-up is
    not recomputed for a new length), changing only what is given again."""
    kept = {name: saved[name] for name in KEPT_ON_RESUME
            if name in saved and getattr(config, name) in (None, [])}
    if config.epochs is not None:  # --epochs sets the steps
        kept.pop("steps", None)
    return dataclasses.replace(config, **kept)


def _train(config: TrainConfig, ctx: distributed.Context, held: contextlib.ExitStack) -> dict:
    if not config.out:
        raise ValueError("--out: expected a directory for the run, got ''")
    ckpt_path = Path(config.out) / CHECKPOINT
    # an existing --out is claimed before its checkpoint is read (a run writing there now is
    # refused, not misread); rank 0 decides, so that every rank makes the same collective calls
    claimed = ctx.from_main(Path(config.out).is_dir())
    if claimed:
        _claim(Path(config.out), ctx, held)
    if ckpt_path.exists() and not ckpt_path.is_file():
        raise ValueError(f"{ckpt_path}: expected a checkpoint file, got a directory or another "
                         "kind of file")
    saved = read_checkpoint(ckpt_path) if config.resume and ckpt_path.is_file() else None
    if saved is not None:
        _check_same_run(saved["config"], config)
        config = as_resumed(config, saved["config"])
    task = _build_task(config)
    examples = task.size("train")  # reads a data set now: a missing file fails before the
    tests = task.size("test")      # progress bar, not at the first evaluation or checkpoint
    c = resolve(config, task)
    if examples is not None and c.batch_size > examples:  # it would hold examples twice
        raise ValueError(f"--batch-size {c.batch_size}: expected at most the {examples} training "
                         f"examples of {task.name}")
    if c.warmup > c.steps and ctx.is_main:
        warnings.warn(f"--warmup {c.warmup} is longer than the run's {c.steps} steps: the "
                      f"learning rate ends at {learning_rate(c.steps - 1, c):.3g}, below --lr "
                      f"{c.lr:g}", stacklevel=2)
    if tests is not None and (c.eval_samples or 0) > tests and ctx.is_main:
        warnings.warn(f"--eval-samples {c.eval_samples}: the test set of {task.name} holds "
                      f"{tests} examples; all {tests} are scored", stacklevel=2)
    if c.threads:
        torch.set_num_threads(c.threads)
    if c.batch_size % ctx.world_size:
        raise ValueError(f"--batch-size {c.batch_size} must be divisible by the "
                         f"{ctx.world_size} ranks")
    out = Path(c.out)
    model = _build_model(c, task).to(ctx.device)
    _check_training_aids(c, model)
    noise = _ramp_target(model) if c.noise_ramp else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
    averaged = _moving_average(model, c.ema)  # copies the weights at its first update
    step, history, best = 0, [], None  # best: keep_best's best validation score (_better)
    window, stretches = _window(), []  # stretches: where each stretch of training ran
    if saved is not None:
        _check_resumable(saved, c)
        missing = [k for k in ("optimizer", "rng") if k not in saved]
        if missing:
            raise ValueError(f"--resume: {ckpt_path} has no {' or '.join(missing)} state to go "
                             "on from; use another --out")
        _load_state(model, saved["model"], "its weights", ckpt_path)
        _load_state(optimizer, saved["optimizer"], "its optimizer state", ckpt_path)
        try:
            set_rng_state(saved["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise ValueError(f"{ckpt_path}: its random-number state is not one bistable "
                             f"saved ({type(e).__name__}: {e})") from None
        step, history, best = saved["step"], saved["history"], saved.get("best")
        window = saved.get("window", window)  # older checkpoints kept none
        stretches = saved.get("provenance", [])  # (those before 2026-12-05: none)
        if averaged is not None:
            _load_state(averaged.module, saved["ema"]["model"], "its moving average", ckpt_path)
            averaged.n_averaged.fill_(saved["ema"]["n_averaged"])
    elif ckpt_path.is_file():
        raise ValueError(f"{out} already holds a run; add --resume to continue it, or use "
                         "another --out")
    elif (out / "metrics.json").is_file():  # a finished run whose checkpoint was deleted
        raise ValueError(f"{out} already holds a run's results (metrics.json, and no checkpoint "
                         "to resume); use another --out")
    elif c.resume and ctx.is_main:
        warnings.warn(f"--resume: no checkpoint in {out}; starting from step 0", stacklevel=2)
    if step == 0 and c.init_from:
        _load_weights(model, c)
    stretches.append(stretch(step, ctx.device, ctx.world_size))
    scored = model if averaged is None else averaged.module  # what evaluations score
    c.precision = c.precision or "fp32"
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: expected a directory for the run, got a file")
    try:  # after every check, on every rank alike: a bad --out fails before the first step
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"--out {out}: cannot create the directory ({e.strerror})") from None
    if not claimed:  # a new --out: claimed once made
        _claim(out, ctx, held)
    # compiled, then wrapped in DDP (as nanoGPT does); evaluation runs the eager model
    net = distributed.wrap(torch.compile(model, backend=c.compile) if c.compile else model, ctx)

    bar = tqdm(total=c.steps, initial=step, disable=c.quiet or not ctx.is_main,
               desc=f"{c.task}/{c.model}", dynamic_ncols=True)
    weights = list(model.parameters())
    while step < c.steps:
        started = time.perf_counter()
        lr = learning_rate(step, c)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, target = (ctx.shard(t) for t in train_batch(task, c, step, ctx.device))
        if c.anneal_epsilon:
            epsilon = anneal_epsilon(model, step, c.anneal_epsilon)
        if c.noise_ramp:
            train_noise = ramp_train_noise(model, step, c.noise_ramp, noise)
        with autocast(c.precision, ctx.device):
            y, _ = net(x)
            loss = task.train_loss(y, target)
        optimizer.zero_grad(set_to_none=True)
        objective, read = loss, []
        if c.write_penalty > 0:
            writes = write_rate(model)
            objective = loss + c.write_penalty * writes
            read.append(ctx.mean(writes.detach()).float())  # the whole batch's, on every rank
        objective.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(
            model.parameters(), c.grad_clip if c.grad_clip > 0 else math.inf)
        optimizer.step()  # a non-finite gradient spoils these weights: the run stops below
        # one host-device sync a step: loss, gradient norm, the new weights' norm (write rate)
        loss, grad_norm, norm, *rate = torch.stack(
            [ctx.mean(loss.detach()).float(), grad_norm.float(), _norm(weights), *read]).tolist()
        window["rates"] += rate
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            raise _diverged(step, f"loss {loss}, gradient norm {grad_norm}", ckpt_path)
        if not math.isfinite(norm):
            raise _diverged(step, f"the update made the weights' norm {norm}", ckpt_path)
        if averaged is not None:
            averaged.update_parameters(model)
        window["busy"] += time.perf_counter() - started
        step += 1
        window["losses"].append(loss)
        window["norms"].append(grad_norm)

        if step % c.log_every == 0 or step == c.steps:
            losses, norms, rates = window["losses"], window["norms"], window["rates"]
            rate = len(losses) * c.batch_size / window["busy"]
            history.append({"step": step, "loss": sum(losses) / len(losses), "lr": lr,
                            "grad_norm": sum(norms) / len(norms), "samples_per_s": rate})
            if rates:
                history[-1]["write_rate"] = sum(rates) / len(rates)
            if c.anneal_epsilon:
                history[-1]["epsilon"] = epsilon
            if c.noise_ramp:
                history[-1]["train_noise"] = train_noise
            bar.set_postfix(loss=f"{history[-1]['loss']:.4g}", samples_s=f"{rate:.0f}")
            window = _window()
        if step % c.eval_every == 0 and step < c.steps and ctx.is_main:
            best = _evaluate_during(scored, task, c, step, history, best, ctx.device)
        if step % c.checkpoint_every == 0 and step < c.steps:
            if ctx.is_main:
                _checkpoint(ckpt_path, step, c, model, optimizer, history, window, best,
                            averaged, stretches)
            ctx.barrier()
        bar.update(1)
    bar.close()

    # metrics.json keeps DESIGN.md's keys; where the figures came from is in the checkpoint
    metrics = {"task": c.task, "model": c.model, "config": dataclasses.asdict(c),
               "history": history, "eval": []}
    if ctx.is_main:
        if c.keep_best and not any(h["step"] == step and "eval_loss" in h for h in history):
            best = _evaluate_during(scored, task, c, step, history, best, ctx.device)  # the last
        _checkpoint(ckpt_path, step, c, model, optimizer, history, window, best, averaged,
                    stretches)
        if best is not None:
            scored.load_state_dict(best["model"])
            metrics["best"] = {"step": best["step"], "val_loss": best["loss"]}
            if c.monitor == "accuracy":
                metrics["best"]["val_accuracy"] = best["accuracy"]
        with autocast(c.precision, ctx.device):
            metrics["eval"] = [evaluate(scored, task, "test", n, n=c.eval_samples,
                                        device=ctx.device, progress=not c.quiet)
                               for n in c.eval_seq_len]
        write_metrics(out / "metrics.json", task=c.task, model=c.model, config=metrics["config"],
                      history=history, evals=metrics["eval"], best=metrics.get("best"))
        title = f"{c.task}, {c.model}"
        plots(out, title, task, c.seq_len, history, metrics["eval"])
        spiking_figures(out, title, task, c.seq_len, scored, ctx.device)
    # no barrier: the other ranks leave now rather than time out (gloo 30 min, NCCL 10) waiting
    # for a long final evaluation; rank 0 needs nothing more from them
    return metrics
