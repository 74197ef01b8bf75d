"""The task registry: long-term-dependency tasks (SPEC.md §8) and spiking image tasks (§6).

A task turns ``(split, seq_len, batch_size, generator, device)`` into a batch ``(x, target)`` on
``device`` with ``x`` of shape ``(B, T, input_size)``; the network's last step ``y[:, -1]`` of shape
``(B, output_size)`` is the prediction. ``task.loss(pred, target)`` is the training loss and
``task.metrics(pred, target)`` gives ``{"loss", "mse", "accuracy"}`` (``None`` where a figure does
not apply). Synthetic tasks draw every batch from the generator they are given; tasks over a data
set (``size(split)`` is not ``None``) also serve examples by index, so a training loop can walk
epochs. Evaluation sets are fixed by :data:`EVAL_SEED` and the sequence length, not by the
training seed, so every model and seed is scored on the same examples. Examples are drawn on the
CPU with the generator and moved to ``device``, except the rate-coded spikes, which are drawn on
``device`` (the CPU draw would feed a GPU at a small fraction of its training speed) from a device
generator seeded by one draw of the CPU one: reproducible per device type, not across them.

Splits: ``"train"``, ``"test"`` and ``"val"``, the validation set that selects a checkpoint
(``bistable train --keep-best``) without looking at the test set. A synthetic task's ``"val"``
is drawn from :data:`VAL_SEED`; a data-set task built with ``validation=True`` holds out
:data:`VAL_FRACTION` of its training file as ``"val"`` (a fixed random subset, seed
:data:`HOLDOUT_SEED`, the same for every run) and trains on the rest.

Tasks (``bistable tasks`` lists them):

- ``copy-first-input``: ``x_t ~ N(0, 1)`` scalars, ``t = 1..T``; target ``x_1``, read at step T.
  MSE; predicting the mean gives 1 (chance).
- ``denoising``: two channels (value ``~ N(0, 1)``, marker ∈ {0, 1}); 5 marked steps drawn
  uniformly without replacement among the first ``T − gap``; the target is the 5 marked values in
  time order, read together (``output_size = 5``) at step T. MSE (chance 1). ``gap`` defaults to
  200; evaluation at another T keeps the gap.
- ``smnist`` / ``psmnist``: the 784 pixels of an MNIST digit in [0, 1], one per step (row-major,
  or through a fixed random permutation of seed :data:`PERMUTATION_SEED`), followed by ``pad``
  zero steps; 10-way cross-entropy at the last step. ``T = 784 + pad``; evaluation at a longer T
  means more zero padding, so the answer comes later. With ``pad_min`` each training batch draws
  its pad uniformly from ``pad_min … pad`` (a variable delay: a memory that fades cannot serve
  every delay with one readout); evaluation keeps the full ``pad``. With ``pad_every = K`` the
  training loss averages the cross-entropy at the last pixel, every ``K`` steps of the pad after
  it and the last step (:meth:`Task.readout_steps`): one sequence asks the answer at every delay.
- ``spiking-mnist`` / ``spiking-fashion-mnist``: Bernoulli rate coding of the image (SPEC §6:
  20 silent steps, then 200 steps where each pixel spikes with probability 0.25 · intensity),
  784 inputs; cross-entropy on the last step (for the population readout of ``src``/``lif``).
- ``nmnist``: N-MNIST recordings (``Train|Test/<digit>/*.bin`` found as MNIST's files are:
  ``--data-dir``, ``$BISTABLE_DATA_DIR/nmnist`` or the cache; simulated ones are made by
  ``bistable data simulate-nmnist``) binned into ``T`` frames ``(2, 34, 34)``,
  flattened to 2312 inputs per step.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .augment import random_shift
from .fetch import dataset_dir

EVAL_SEED = 20260101
"""Seed of every evaluation set (mixed with the sequence length)."""

VAL_SEED = 20260202
"""Seed of the synthetic tasks' validation sets (mixed with the sequence length)."""

HOLDOUT_SEED = 31337
"""Seed of the fixed random subset of a training file held out as the validation set."""

VAL_FRACTION = 0.1
"""Share of a data set's training file held out as ``"val"`` (``validation=True``)."""

SPLITS = ("train", "val", "test")

PERMUTATION_SEED = 92916
"""Seed of psMNIST's fixed pixel permutation (the same for every run)."""

N_MARKED = 5
"""Number of marked values the denoising task asks back."""


@dataclass
class Task:
    """A task's sizes, data, loss and metrics (see the module docstring for the list).

    ``defaults`` holds the training settings a run takes when the command line leaves them out;
    ``validation`` holds out a data set's ``"val"`` split from its training file; ``shift``
    moves each ``"train"`` example of an image data set by up to that many pixels
    (:func:`~bistable.data.augment.random_shift`).
    """

    name: str
    description: str
    input_size: int
    output_size: int
    kind: str  # "regression" or "classification"
    defaults: dict = field(default_factory=dict)
    validation: bool = False
    shift: int = 0  # image and N-MNIST tasks: training examples moved by up to this many pixels

    @property
    def chance(self) -> float:
        """The metric of a guess that ignores the input: MSE 1 (unit-variance targets) or
        accuracy 1 / classes."""
        return 1.0 if self.kind == "regression" else 1.0 / self.output_size

    # --- sequence lengths -------------------------------------------------------------------
    def seq_len(self, requested: int | None) -> int:
        """The training length for a requested ``--seq-len`` (``None``: the task's default)."""
        if requested is not None:
            return self.check_seq_len(requested)
        try:
            return self.check_seq_len(self.defaults["seq_len"])
        except ValueError as err:  # the user gave no length: say which one this was
            raise ValueError(f"{err} (the default --seq-len; give a longer one)") from None

    def min_seq_len(self) -> int:
        return 1

    def train_seq_len(self, seq_len: int, generator: torch.Generator) -> int:
        """The length of one training batch of a run trained at ``seq_len`` (tasks with a
        variable delay draw it with ``generator``)."""
        return seq_len

    def check_seq_len(self, seq_len: int) -> int:
        """``seq_len`` if the task can be posed at that length, else ValueError."""
        if seq_len < self.min_seq_len():
            raise ValueError(f"task {self.name}: sequence length must be at least "
                             f"{self.min_seq_len()}, got {seq_len}")
        return seq_len

    # --- data -------------------------------------------------------------------------------
    def size(self, split: str) -> int | None:
        """Number of examples in ``split`` for data-set tasks; ``None`` for synthetic ones."""
        rows = self._rows(split)
        return self._file_size(_file_split(split)) if rows is None else len(rows)

    def batch(self, split: str, seq_len: int, batch_size: int, generator: torch.Generator,
              device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """A random batch ``(x (B, T, input_size), target)`` drawn with ``generator``, on
        ``device``."""
        index = torch.randint(self.size(split), (batch_size,), generator=generator)
        return self.examples(split, index, seq_len, generator, device)

    def examples(self, split: str, index: torch.Tensor, seq_len: int,
                 generator: torch.Generator, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """The examples at ``index`` of ``split`` (data-set tasks only), on ``device``."""
        rows = self._rows(split)
        return self._examples(_file_split(split), index if rows is None else rows[index],
                              seq_len, generator, device, self.shift if split == "train" else 0)

    def _rows(self, split: str) -> torch.Tensor | None:
        """The rows of its file that ``split`` holds (``None``: all of them)."""
        _file_split(split)  # a known split name
        if split == "val" and not self.validation and self._file_size("train") is not None:
            raise ValueError(f"task {self.name}: no 'val' split; build it with validation=True "
                             "(`bistable train --keep-best`) to hold one out of the training set")
        if split == "test" or not self.validation:
            return None
        size = self._file_size("train")
        return None if size is None else held_out(size)[split == "val"]

    def _file_size(self, file_split: str) -> int | None:
        """Examples in the ``"train"`` or ``"test"`` file (data-set tasks)."""
        return None

    def _examples(self, file_split: str, index: torch.Tensor, seq_len: int,
                  generator: torch.Generator, device="cpu",
                  shift: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """The examples at rows ``index`` of the ``"train"`` or ``"test"`` file, each moved by up
        to ``shift`` pixels (drawn with ``generator``)."""
        raise NotImplementedError(f"task {self.name} has no indexed examples")

    def eval_batches(self, split: str, seq_len: int, n: int, batch_size: int, device="cpu"):
        """The fixed evaluation set: ``n`` examples (all of them for data-set tasks when ``n``
        is ``None`` or larger than the split), in batches of at most ``batch_size``, on
        ``device``. A data-set task's ``n < size`` examples are a fixed random subset, the same
        at every length, since split files may be sorted by class (N-MNIST is)."""
        generator = torch.Generator().manual_seed(
            (VAL_SEED if split == "val" else EVAL_SEED) + seq_len)
        size = self.size(split)
        if size is not None:
            if n is None or n >= size:
                order = torch.arange(size)
            else:
                subset = torch.Generator().manual_seed(EVAL_SEED)
                order = torch.randperm(size, generator=subset)[:n].sort().values
            for index in order.split(batch_size):
                yield self.examples(split, index, seq_len, generator, device)
            return
        for start in range(0, n, batch_size):
            yield self.batch(split, seq_len, min(batch_size, n - start), generator, device)

    # --- loss and metrics -------------------------------------------------------------------
    def readout_steps(self, seq_len: int) -> list[int]:
        """The time steps whose predictions the training loss averages: the last one."""
        return [seq_len - 1]

    def train_loss(self, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The training loss of a network's outputs ``y`` ``(B, T, output_size)``: :meth:`loss`
        averaged over :meth:`readout_steps` (each step's prediction against the one target)."""
        steps = self.readout_steps(y.shape[1])
        pred = y[:, steps].flatten(0, 1)  # (B · n, output_size), row b·n + j: sample b, step j
        return self.loss(pred, target.repeat_interleave(len(steps), dim=0))

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """MSE for regression, cross-entropy for classification (mean over the batch)."""
        if self.kind == "regression":
            return F.mse_loss(pred, target)
        return F.cross_entropy(pred, target)

    def metrics(self, pred: torch.Tensor, target: torch.Tensor) -> dict:
        """``{"loss", "mse", "accuracy"}`` as floats, ``None`` where one does not apply."""
        pred = pred.detach().float()
        loss = float(self.loss(pred, target))
        if self.kind == "regression":
            return {"loss": loss, "mse": loss, "accuracy": None}
        accuracy = float((pred.argmax(-1) == target).float().mean())
        return {"loss": loss, "mse": None, "accuracy": accuracy}

    def data_note(self) -> str | None:
        """A line to print beside results whose data are not the real data set (None: they are)."""
        return None


class CopyFirstInput(Task):
    def batch(self, split, seq_len, batch_size, generator, device="cpu"):
        x = torch.randn(batch_size, seq_len, 1, generator=generator).to(device)
        return x, x[:, 0].clone()


@dataclass
class Denoising(Task):
    gap: int = 200

    def min_seq_len(self) -> int:
        return self.gap + N_MARKED

    def batch(self, split, seq_len, batch_size, generator, device="cpu"):
        values = torch.randn(batch_size, seq_len, generator=generator)
        keys = torch.rand(batch_size, seq_len - self.gap, generator=generator)
        marked = keys.topk(N_MARKED, dim=1).indices.sort(dim=1).values
        marker = torch.zeros(batch_size, seq_len).scatter_(1, marked, 1.0)
        x, target = torch.stack([values, marker], dim=-1), values.gather(1, marked)
        return x.to(device), target.to(device)


@dataclass
class ImageTask(Task):
    """A task over an image data set held in memory as ``uint8 (N, H, W)`` plus labels."""

    SIDE = 28  # MNIST and Fashion-MNIST images are 28 × 28
    dataset: str = "mnist"
    data_dir: str | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    def _file(self, file_split: str):
        if file_split not in self._cache:
            from . import idx

            images, labels = idx.load(self.dataset, file_split, self.data_dir)
            images = torch.as_tensor(images).reshape(len(images), -1)
            self._cache[file_split] = (images, torch.as_tensor(labels, dtype=torch.long))
        return self._cache[file_split]

    def _file_size(self, file_split):
        return len(self._file(file_split)[1])

    def _images(self, file_split: str, index: torch.Tensor, generator: torch.Generator,
                shift: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images uint8 (B, H·W), labels)`` at rows ``index``, each moved by up to ``shift``
        pixels."""
        images, labels = self._file(file_split)
        moved = random_shift(images[index].view(-1, self.SIDE, self.SIDE), shift, generator)
        return moved.reshape(len(index), -1), labels[index]


def permutation() -> torch.Tensor:
    """psMNIST's fixed pixel order: ``randperm(784)`` with seed :data:`PERMUTATION_SEED`."""
    return torch.randperm(784, generator=torch.Generator().manual_seed(PERMUTATION_SEED))


@dataclass
class PixelMNIST(ImageTask):
    """sMNIST / psMNIST: one pixel per step, optionally permuted, then ``pad`` zero steps."""

    permute: bool = False
    pad: int = 0
    pad_min: int | None = None
    pad_every: int | None = None

    def min_seq_len(self) -> int:
        return 784

    def readout_steps(self, seq_len):
        """With ``pad_every = K``: the last pixel, every ``K`` pad steps after it, the last step."""
        if self.pad_every is None:
            return [seq_len - 1]
        return [*range(783, seq_len - 1, self.pad_every), seq_len - 1]

    def train_seq_len(self, seq_len, generator):
        if self.pad_min is None:
            return seq_len
        return 784 + int(torch.randint(self.pad_min, self.pad + 1, (), generator=generator))

    def seq_len(self, requested):
        if requested is not None and requested != 784 + self.pad:
            raise ValueError(f"task {self.name}: the sequence length is 784 + --pad = "
                             f"{784 + self.pad} (use --pad to lengthen it), got {requested}")
        return 784 + self.pad

    def _examples(self, file_split, index, seq_len, generator, device="cpu", shift=0):
        images, labels = self._images(file_split, index, generator, shift)
        pixels = images.float() / 255.0
        if self.permute:
            pixels = pixels[:, permutation()]
        x = F.pad(pixels, (0, seq_len - 784)).unsqueeze(-1)
        return x.to(device), labels.to(device)


@dataclass
class SpikingImages(ImageTask):
    """Rate-coded images (SPEC §6): ``silent`` zero steps, then Bernoulli spikes."""

    silent: int = 20

    def min_seq_len(self) -> int:
        return self.silent + 1

    def _examples(self, file_split, index, seq_len, generator, device="cpu", shift=0):
        from ..nn.encoders import rate_code

        images, labels = self._images(file_split, index, generator, shift)
        intensity = images.to(device).float() / 255.0
        if intensity.device.type != "cpu":
            seed = int(torch.randint(2**62, (), generator=generator))
            generator = torch.Generator(intensity.device).manual_seed(seed)
        spikes = rate_code(intensity, steps=seq_len - self.silent, silent=self.silent,
                           generator=generator)
        return spikes, labels.to(device)


@dataclass
class NMNIST(Task):
    """N-MNIST frames ``(T, 2, 34, 34)`` flattened to ``(T, 2312)``, ``T`` time bins."""

    data_dir: str | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    def _root(self) -> str:
        """Where the recordings are, found as MNIST's are (docs/data.md): ``--data-dir`` (or its
        ``nmnist/`` folder), else ``$BISTABLE_DATA_DIR/nmnist``, else the user's cache."""
        return str(dataset_dir("nmnist", self.data_dir))

    def _dataset(self, file_split: str, seq_len: int):
        if (file_split, seq_len) not in self._cache:
            from . import nmnist

            self._cache[file_split, seq_len] = nmnist.NMNIST(
                self._root(), file_split, n_time_bins=seq_len, progress=False)
        return self._cache[file_split, seq_len]

    def _file_size(self, file_split):
        from . import nmnist

        if file_split not in self._cache:
            self._cache[file_split] = len(nmnist.list_samples(self._root(), file_split)[0])
        return self._cache[file_split]

    def data_note(self):
        marker = Path(self._root()) / "SIMULATED.json"
        if marker.exists():
            return f"data: SIMULATED N-MNIST recordings ({marker}), not the real N-MNIST"
        return None

    def _examples(self, file_split, index, seq_len, generator, device="cpu", shift=0):
        dataset = self._dataset(file_split, seq_len)
        frames, labels = zip(*(dataset[i] for i in index.tolist()), strict=True)
        frames = random_shift(torch.stack(frames), shift, generator)
        return (frames.flatten(2).to(device),
                torch.tensor(labels, dtype=torch.long, device=device))


# The hybrid's LRU gets a fast-forgetting ring (|λ| in [0.5, 0.9]) on the synthetic memory tasks:
# it then senses time and recent input but cannot carry the answer over the sequence, so the
# network has to store it in the BMRU, whose memory does not fade beyond the training length.
# One CPU thread: these widths gain nothing from intra-op threads, which lose much when the
# cores are shared with other processes.
_FAST_LRU = {"hybrid": {"unit_kwargs": {"lru": {"r_min": 0.5, "r_max": 0.9}}}}
_SYNTHETIC = dict(steps=1000, batch_size=64, lr=3e-3, hidden=32, layers=2, eval_samples=256,
                  model_options=_FAST_LRU, threads=1)
# Denoising: a CMRU beside the hybrid's units counts the markers, so the block after it knows
# which of the 5 slots a marked value belongs to and its BMRU can latch it there. The CMRU is
# leaky (ε = 0.7, |s| < 1 / (1 − ε) = 3.3): a plain counter (ε = 1) also counts unmarked steps at
# a steady rate, so at ten times the training length it reads ten times more than training ever
# showed and the network is at chance; the leaky one saturates and holds at T = 3000 and 30 000
# (docs/memory_tasks.md, results/denoising_probe.md). Surrogate sharpness 2 on its CMRUs and
# BMRUs, and 6000 steps: MSE 0.043 ± 0.023 at T = 300 over 6 seeds, where sharpness 1 and 3000
# steps gave 0.074 ± 0.047, one seed rising late in the cosine (results/denoising_sharpness.md).
_DENOISING = {"hybrid": {"mixer": "cmru+lru+bmru",
                         "unit_kwargs": {**_FAST_LRU["hybrid"]["unit_kwargs"],
                                         "cmru": {"epsilon": 0.7, "sharpness": 2.0},
                                         "bmru": {"sharpness": 2.0}}}}
_IMAGES = dict(epochs=1, batch_size=64, lr=1e-3, hidden=128, layers=2, eval_samples=None)
# Pixel MNIST: the LRU ring nearer 1 (|λ| in [0.99, 0.9999] instead of [0.9, 0.999]), as the LRU
# paper sets it for its longest tasks. One epoch of psMNIST at 38 305 parameters: LRU 86.3 ->
# 90.4 %, and with --pad 1000 26.8 -> 75.6 % (docs/memory_tasks.md, results/pad_memory_ring.md).
_SLOW_RING = {"r_min": 0.99, "r_max": 0.9999}
_PIXELS = dict(_IMAGES, model_options={"lru": _SLOW_RING,
                                       "hybrid": {"unit_kwargs": {"lru": _SLOW_RING}}})


def _registry() -> dict[str, tuple[type, str, dict, dict]]:
    """name -> (class, description, constructor arguments, training defaults)."""
    return {
        "copy-first-input": (CopyFirstInput, "recall the first of T Gaussian scalars (MSE)",
                             dict(input_size=1, output_size=1, kind="regression"),
                             dict(_SYNTHETIC, seq_len=50)),
        "denoising": (Denoising, f"recall {N_MARKED} marked values in order, the last one at "
                      "least --gap steps before the end (MSE)",
                      dict(input_size=2, output_size=N_MARKED, kind="regression"),
                      dict(_SYNTHETIC, seq_len=300, hidden=64, steps=6000,
                           model_options=_DENOISING)),
        "smnist": (PixelMNIST, "MNIST pixel by pixel (784 steps + --pad zeros), 10 classes",
                   dict(input_size=1, output_size=10, kind="classification"), _PIXELS),
        "psmnist": (PixelMNIST, "MNIST pixels in a fixed random order (+ --pad zeros), 10 classes",
                    dict(input_size=1, output_size=10, kind="classification", permute=True),
                    _PIXELS),
        "spiking-mnist": (SpikingImages, "rate-coded MNIST spikes (20 silent + 200 steps)",
                          dict(input_size=784, output_size=10, kind="classification"),
                          dict(_IMAGES, seq_len=220)),
        "spiking-fashion-mnist": (SpikingImages, "rate-coded Fashion-MNIST spikes (20 + 200 steps)",
                                  dict(input_size=784, output_size=10, kind="classification",
                                       dataset="fashion-mnist"), dict(_IMAGES, seq_len=220)),
        "nmnist": (NMNIST, "N-MNIST event recordings in T time bins (2312 inputs per step)",
                   dict(input_size=2 * 34 * 34, output_size=10, kind="classification"),
                   dict(_IMAGES, seq_len=100)),
    }


TASK_NAMES = tuple(_registry())


def _file_split(split: str) -> str:
    """The file (``"train"`` or ``"test"``) that ``split`` reads; ValueError for other names."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    return "test" if split == "test" else "train"


@functools.cache
def held_out(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train rows, val rows)`` of a training file of ``size`` examples: a fixed random
    :data:`VAL_FRACTION` of them (seed :data:`HOLDOUT_SEED`, at least one) is held out, each
    part in file order."""
    if size < 2:
        raise ValueError(f"cannot hold out a validation set from {size} training example(s)")
    n_val = max(1, round(VAL_FRACTION * size))
    order = torch.randperm(size, generator=torch.Generator().manual_seed(HOLDOUT_SEED))
    return order[n_val:].sort().values, order[:n_val].sort().values


def describe_tasks() -> list[tuple[str, str]]:
    """``(name, one-line description)`` for every task, for ``bistable tasks``."""
    return [(name, entry[1]) for name, entry in _registry().items()]


def build_task(name: str, *, data_dir: str | None = None, gap: int | None = None,
               pad: int | None = None, pad_min: int | None = None,
               pad_every: int | None = None, validation: bool = False,
               shift: int | None = None) -> Task:
    """The task called ``name``; ``data_dir`` for data-set tasks, ``gap`` for denoising,
    ``pad``, ``pad_min`` (training pads drawn from ``pad_min … pad``) and ``pad_every`` (training
    readouts every so many pad steps) for (p)sMNIST, ``shift`` (training examples moved by up to
    so many pixels) for image and N-MNIST tasks (others reject them); ``validation`` holds out a
    data set's ``"val"`` split. Unknown names raise ValueError listing the tasks."""
    registry = _registry()
    if name not in registry:
        raise ValueError(f"unknown task {name!r}; choose one of: {', '.join(registry)}")
    cls, description, kwargs, defaults = registry[name]
    kwargs = dict(kwargs, name=name, description=description, defaults=dict(defaults),
                  validation=validation)
    for flag, value, owner in (("--gap", gap, Denoising), ("--pad", pad, PixelMNIST),
                               ("--pad-min", pad_min, PixelMNIST),
                               ("--pad-every", pad_every, PixelMNIST)):
        if value is None:
            continue
        if cls is not owner:
            raise ValueError(f"{flag} does not apply to task {name}")
        if value < 0:
            raise ValueError(f"{flag} must be >= 0, got {value}")
        kwargs[flag.lstrip("-").replace("-", "_")] = value
    if pad_every == 0:
        raise ValueError("--pad-every must be >= 1, got 0")
    if pad_min is not None and pad_min > (pad or 0):
        raise ValueError(f"--pad-min must be at most --pad ({pad or 0}), got {pad_min}")
    if shift is not None:
        from .nmnist import SENSOR

        side = SENSOR if cls is NMNIST else ImageTask.SIDE if issubclass(cls, ImageTask) else None
        if side is None:
            raise ValueError(f"--shift does not apply to task {name} (its data are not images)")
        if not 0 <= shift < side:
            raise ValueError(f"--shift must be in 0 … {side - 1} (images of {side} × {side} "
                             f"pixels), got {shift}")
        kwargs["shift"] = shift
    if issubclass(cls, (ImageTask, NMNIST)):
        kwargs["data_dir"] = None if data_dir is None else str(data_dir)
    elif data_dir is not None:
        raise ValueError(f"--data-dir does not apply to task {name} (its data are synthetic)")
    task = cls(**kwargs)
    if isinstance(task, PixelMNIST):
        task.defaults["seq_len"] = 784 + task.pad
    return task


def epoch_steps(task: Task, batch_size: int) -> int:
    """Steps in one pass over the training split (data-set tasks)."""
    return math.ceil(task.size("train") / batch_size)
