"""SRC vs snnTorch LIF: training throughput and accuracy (SPEC.md §6, issue 9) → results/src.md.

Throughput: one training step (forward, cross-entropy on R[:, -1], backward, Adam) of networks with
``--tp-layers`` hidden layers of ``--tp-hidden`` neurons on rate-coded 784-pixel inputs, T = 220,
batch ``--tp-batch``; SRC (eager loop, and ``compile_loop=True``: the fused loop, a C++ kernel on
CPU) and LIF measured interleaved.

Accuracy: for each dataset, depth, seed and kind, train on the first ``--train-samples`` images for
``--epochs`` epochs, test on the first ``--test-samples`` test images; the SRC networks are also
tested with noise on r, r_s (``--noise`` σ relative). The full protocol of the issue is::

    python benchmarks/src.py --datasets mnist fashion-mnist nmnist-sim --depths 1 2 4 8 \\
        --seeds 0 1 2 --train-samples 60000 --test-samples 10000 --epochs 20 --nmnist-dir DIR

``nmnist-sim`` reads simulated N-MNIST recordings (``bistable.data.nmnist_sim.write_dataset``) from
``--nmnist-dir`` as ``--nmnist-bins`` frames of ``(2, 34, 34)`` event counts, passed through.

An accuracy table short of that protocol is labelled REDUCED, with what it lacks; ``--reduced``
labels one so by hand.

Each accuracy run saves its state after every epoch under ``--runs`` (network, Adam, random
generators, the curves so far; written atomically): the same command started again after a kill
resumes a cut-off run after its last finished epoch, to the same figures as one uninterrupted
run, and a finished one only tests again; a run saved with other settings is refused, and so is
a second process started on the same ``--runs``/``--name`` folder.

``--merge NAME ...`` runs nothing: it pools the accuracy runs of ``results/NAME.json`` files made
with one protocol (seeds, depths, kinds, datasets run apart, e.g. one seed per core) into one table,
mean ± std over seeds, each source's command, commit and date kept.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import (  # noqa: E402
    RESULTS,
    commit,
    header,
    machine,
    mean_std,
    median_time,
    positive_float,
    positive_int,
    run_main,
    summary,
    write_results,
)
from bistable.data import idx, nmnist  # noqa: E402
from bistable.nn.encoders import flatten_frames, rate_code  # noqa: E402
from bistable.nn.spiking import SpikingNetwork  # noqa: E402
from bistable.train.checkpoint import (  # noqa: E402
    claimed,
    load_checkpoint,
    save_checkpoint,
)
from bistable.train.loop import TrainConfig, learning_rate  # noqa: E402
from bistable.units.src import ramp_train_noise  # noqa: E402
from bistable.units.surrogate import heaviside  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def train_step(net, opt, x, y, clip: float | None = None) -> tuple[float, int, float | None]:
    """One Adam step; the batch's loss, its number of correct answers (before the step) and, when
    ``clip`` is given, the gradient's global norm, clipped to ``clip`` before the step (0: not
    clipped). Without ``clip`` (the throughput runs) the norm is not computed."""
    R, _ = net(x)
    loss = F.cross_entropy(R[:, -1], y)
    opt.zero_grad()
    loss.backward()
    norm = None
    if clip is not None:
        norm = float(torch.nn.utils.clip_grad_norm_(net.parameters(), clip or math.inf))
    opt.step()
    return loss.item(), int((R[:, -1].detach().argmax(1) == y).sum()), norm


class PlainLeaky(torch.nn.Module):
    """snnTorch ``Leaky``'s step as plain PyTorch, for the throughput rows only: the reset
    ``H(mem - θ)`` of the incoming membrane (no gradient), ``mem = β mem + input - reset θ``,
    the spike ``H(mem - θ)`` with the arctan surrogate of slope α (``bistable``'s sharpness
    α / 2 is the same function). What a user writing the LIF peer by hand would time, without
    snnTorch's per-step bookkeeping (a second surrogate call for the reset, its clone, β's clamp,
    the graded-spike factor)."""

    def __init__(self, beta: float = 0.95, threshold: float = 1.0, slope: float = 2.0):
        super().__init__()
        self.beta, self.threshold, self.sharpness = beta, threshold, slope / 2

    def forward(self, drive: torch.Tensor, mem: torch.Tensor):
        reset = (mem > self.threshold).to(drive.dtype)
        mem = self.beta * mem + drive - reset * self.threshold
        return heaviside(mem - self.threshold, "atan", self.sharpness), mem


def plain_lif(net: SpikingNetwork) -> SpikingNetwork:
    """``net`` (kind ``lif``, snnTorch's defaults) with every layer's snnTorch ``Leaky`` replaced
    by :class:`PlainLeaky`: the same network, computed without snnTorch."""
    for layer in net.layers:
        leaky = layer.leaky
        layer.leaky = PlainLeaky(float(leaky.beta), float(leaky.threshold), layer.slope)
    return net


def throughput(args) -> list[dict]:
    torch.manual_seed(0)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    images = torch.rand(args.tp_batch, 784) * 0.5
    x = rate_code(images, generator=torch.Generator().manual_seed(0)).to(device)
    y = torch.randint(0, 10, (args.tp_batch,)).to(device)
    setups = {"src": ("src", {}), "src (fused loop)": ("src", {"compile_loop": True}),
              "lif": ("lif", {}), "lif (plain loop)": ("lif", {})}
    steps = {}
    for name, (kind, kw) in setups.items():
        net = SpikingNetwork(kind, 784, args.tp_hidden, args.tp_layers, **kw)
        net = (plain_lif(net) if name == "lif (plain loop)" else net).to(device)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        steps[name] = (lambda net=net, opt=opt: train_step(net, opt, x, y))
        steps[name]()  # warm-up (and compilation)
    times = {name: [] for name in steps}
    for _ in range(args.tp_rounds):  # interleaved, so that load on the machine hits all alike
        for name, fn in steps.items():
            times[name].append(median_time(fn, repeats=1, warmup=0, sync=sync))
    load = os.getloadavg()[0]
    rows = []
    for name, ts in times.items():
        t = statistics.median(ts)
        rows.append({"model": name, "seconds_per_step": t, "samples_per_s": args.tp_batch / t,
                     "load_avg_1min": load})
    lif = next(r for r in rows if r["model"] == "lif")["samples_per_s"]
    for r in rows:
        r["vs_lif"] = r["samples_per_s"] / lif
    return rows


class Recordings:
    """Frames ``(n, T, 2, 34, 34)`` of chosen recordings, binned when indexed: all 60 000 at 100
    bins would take 55 GB as one tensor."""

    def __init__(self, ds: nmnist.NMNIST, keep: torch.Tensor):
        self.ds, self.keep = ds, keep

    def __len__(self) -> int:
        return len(self.keep)

    def __getitem__(self, index) -> torch.Tensor:
        return torch.stack([self.ds[int(i)][0] for i in self.keep[index].reshape(-1)])


def load(args, name: str, split: str, n: int):
    """Images ``(n, 28, 28)`` in [0, 1] or frames ``(n, T, 2, 34, 34)``, and labels ``(n,)``."""
    if name == "nmnist-sim":
        ds = nmnist.NMNIST(args.nmnist_dir, split, n_time_bins=args.nmnist_bins)
        if not ds.simulated:
            raise ValueError(f"--nmnist-dir: {args.nmnist_dir} holds no SIMULATED.json")
        keep = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:n]
        return Recordings(ds, keep), torch.from_numpy(ds.labels[keep.numpy()])
    images, labels = idx.load(name, split, DATA / name)
    return torch.from_numpy(images[:n]).float() / 255, torch.from_numpy(labels[:n])


def encode(data: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Rate-code images, pass event frames through."""
    return flatten_frames(data) if data.dim() == 5 else rate_code(data, generator=gen)


@torch.no_grad()
def evaluate(net, images, labels, batch, seed) -> float:
    gen = torch.Generator().manual_seed(seed)
    correct = 0
    for s in range(0, len(labels), batch):
        R, _ = net(encode(images[s:s + batch], gen))
        correct += int((R[:, -1].argmax(1) == labels[s:s + batch]).sum())
    return 100.0 * correct / len(labels)


def accuracy_run(args, dataset, kind, depth, seed, train, test) -> dict:
    torch.manual_seed(seed)
    kw = {}
    if kind == "src":
        kw = {"compile_loop": args.compile, "learn_bias": args.learn_bias,
              "detach_recurrent": args.detach, "alpha": args.alpha, "rho": args.rho,
              "gate": args.gate, "train_noise": args.train_noise if args.redraw else 0.0}
    elif kind == "lif":
        kw = {"beta": args.beta, "slope": args.slope}
    net = SpikingNetwork(kind, encode(train[0][:1], None).shape[-1], args.hidden, depth,
                         init_rate=args.init_rate, **kw)
    if kind == "src" and args.train_noise and not args.redraw:  # heterogeneous neurons
        net.perturb_(args.train_noise, torch.Generator().manual_seed(1000 + seed))
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(seed)
    path = checkpoint_path(args, dataset, kind, depth, seed)
    wanted = protocol(args, dataset, kind, depth, seed)
    saved = resumed(path, wanted, net, opt, gen)
    curves = saved["curves"] if saved else {key: [] for key in CURVES}
    per_epoch = curves["accuracy_per_epoch"]  # test accuracy after each epoch but the last
    train_loss = curves["train_loss_per_epoch"]  # running means over each epoch, training mode
    train_acc = curves["train_accuracy_per_epoch"]
    grad_norm = curves["grad_norm_per_epoch"]  # median unclipped gradient norm of each epoch
    segments = (saved["segments"] if saved else []) + [
        {"from_epoch": len(train_acc), "commit": commit()}]
    steps_per_epoch = math.ceil(len(train[1]) / args.batch)
    t0 = time.perf_counter() - (saved["seconds"] if saved else 0.0)
    schedule = TrainConfig(dataset, kind, "", steps=args.epochs * steps_per_epoch,
                           lr=args.lr, min_lr=args.lr / 10, warmup=0, schedule=args.schedule)
    for epoch in range(len(train_acc), args.epochs):
        step = epoch * steps_per_epoch
        order = torch.randperm(len(train[1]), generator=gen)
        loss_sum, correct, norms = 0, 0, []
        for s in range(0, len(order), args.batch):
            b = order[s:s + args.batch]
            for group in opt.param_groups:  # bistable train's schedule, without warm-up
                group["lr"] = learning_rate(step, schedule)
            if kind == "src" and args.noise_ramp:
                ramp_train_noise(net, step, math.ceil(args.noise_ramp * schedule.steps),
                                 args.train_noise)
            step += 1
            loss, right, norm = train_step(net, opt, encode(train[0][b], gen), train[1][b],
                                           args.grad_clip)
            loss_sum, correct = loss_sum + loss * len(b), correct + right
            norms.append(norm)
        train_loss.append(round(loss_sum / len(order), 4))
        train_acc.append(round(100.0 * correct / len(order), 2))
        grad_norm.append(round(statistics.median(norms), 4))
        if epoch < args.epochs - 1:  # the learning curve: test accuracy after every epoch
            net.eval()
            per_epoch.append(evaluate(net, *test, args.batch, seed))
            net.train()
            print(f"{dataset} depth {depth} {kind} seed {seed}: epoch {epoch + 1}/{args.epochs}, "
                  f"test accuracy {per_epoch[-1]:.2f} % (training {train_acc[-1]:.2f} %), "
                  f"{time.perf_counter() - t0:.0f} s",
                  file=sys.stderr, flush=True)
        save_checkpoint(path, {"protocol": wanted, "net": net.state_dict(), "opt": opt.state_dict(),
                               "gen": gen.get_state(), "torch_rng": torch.get_rng_state(),
                               "curves": curves, "seconds": time.perf_counter() - t0,
                               "segments": segments})
    net.eval()  # tested with the stored r, r_s (no train_noise)
    row = {"dataset": dataset, "kind": kind, "depth": depth, "seed": seed,
           "train_seconds": time.perf_counter() - t0,
           "accuracy": evaluate(net, *test, args.batch, seed)}
    row["accuracy_per_epoch"] = per_epoch + [row["accuracy"]]
    row["train_loss_per_epoch"], row["train_accuracy_per_epoch"] = train_loss, train_acc
    row["grad_norm_per_epoch"] = grad_norm
    if len(segments) > 1:  # trained in parts: where each began, at which commit
        row["segments"] = segments
    stats = net.spike_stats(encode(test[0][:args.batch], gen))
    row["firing_rate"] = [round(s["firing_rate"], 4) for s in stats]
    row["silent_fraction"] = [round(s["silent_fraction"], 3) for s in stats]
    if kind == "src" and args.noise > 0:
        noisy = copy.deepcopy(net).perturb_(args.noise, torch.Generator().manual_seed(seed))
        row["accuracy_noise"] = evaluate(noisy, *test, args.batch, seed)
    print(row, flush=True)
    return row


# Arguments that say what was run or how fast, not what was trained: runs may differ in them and
# still be pooled by --merge.
NOT_PROTOCOL = {"skip_throughput", "tp_layers", "tp_hidden", "tp_batch", "tp_rounds", "device",
                "threads", "datasets", "depths", "kinds", "seeds", "name", "keep", "merge",
                "runs"}
CURVES = ("accuracy_per_epoch", "train_loss_per_epoch", "train_accuracy_per_epoch",
          "grad_norm_per_epoch")


def protocol(args, dataset: str, kind: str, depth: int, seed: int) -> dict:
    """What one accuracy run trains: the settings a saved run must share to be resumed."""
    return {**{k: v for k, v in vars(args).items() if k not in NOT_PROTOCOL},
            "dataset": dataset, "kind": kind, "depth": depth, "seed": seed}


def differences(a: dict, b: dict, ignore=frozenset()) -> list[str]:
    """The keys, sorted, whose values ``a`` and ``b`` do not share (a key one lacks counts)."""
    return sorted(k for k in (a.keys() | b.keys()) - ignore if a.get(k) != b.get(k))


def runs_folder(args) -> Path:
    """Where this command's accuracy runs save their states: ``<--runs>/<--name>/``."""
    return Path(args.runs) / args.name


def checkpoint_path(args, dataset: str, kind: str, depth: int, seed: int) -> Path:
    return runs_folder(args) / f"{dataset}-{kind}-depth{depth}-seed{seed}.pt"


def resumed(path: Path, wanted: dict, net, opt, gen) -> dict | None:
    """The run saved at ``path`` loaded into ``net``, ``opt``, ``gen`` and torch's generator
    (None: nothing saved); one saved with other settings than ``wanted`` is refused."""
    if not path.exists():
        return None
    saved = load_checkpoint(path)
    if differ := differences(saved["protocol"], wanted):
        raise ValueError(f"--runs: {path} holds a run made with other settings ("
                         + "; ".join(f"{k} {saved['protocol'].get(k)} there, {wanted.get(k)} now"
                                     for k in differ)
                         + "); delete it or give another --runs or --name")
    net.load_state_dict(saved["net"])
    opt.load_state_dict(saved["opt"])
    gen.set_state(saved["gen"])
    torch.set_rng_state(saved["torch_rng"])
    print(f"{path}: resuming after epoch {len(saved['curves']['train_accuracy_per_epoch'])} of "
          f"{wanted['epochs']}", file=sys.stderr, flush=True)
    return saved


def merge(names: list[str], defaults: dict) -> dict:
    """One accuracy section pooling those of ``results/<name>.json`` (one protocol); an option
    missing from an older file had its ``defaults`` value."""
    sections = []
    for name in names:
        path = RESULTS / f"{name}.json"
        if not path.exists():
            raise SystemExit(f"--merge: expected {path}, which does not exist")
        data = json.loads(path.read_text())
        if "accuracy" not in data:
            raise SystemExit(f"--merge: expected accuracy runs in {path}, found only "
                             f"{', '.join(data) or 'nothing'}")
        sections.append(data["accuracy"])
    first = {**defaults, **sections[0]["args"]}
    for name, section in zip(names[1:], sections[1:]):
        args = {**defaults, **section["args"]}
        if differ := differences(first, args, ignore=NOT_PROTOCOL):
            raise SystemExit(f"--merge: {name} was trained with another protocol than {names[0]}: "
                             + "; ".join(f"{k} {args.get(k)} vs {first.get(k)}" for k in differ))
    runs, seen = [], {}
    for name, section in zip(names, sections):
        for run in section["runs"]:
            key = (run["dataset"], run["depth"], run["kind"], run["seed"])
            if key in seen:
                raise SystemExit(f"--merge: {name} and {seen[key]} both hold the run "
                                 f"{'/'.join(map(str, key))} (dataset/depth/kind/seed)")
            seen[key] = name
            runs.append(run)
    runs.sort(key=lambda r: (r["dataset"], r["depth"], r["kind"], r["seed"]))
    return {"args": first, "runs": runs,
            "sources": [{k: s[k] for k in ("command", "commit", "date", "machine") if k in s}
                        for s in sections]}


def curve(run: dict, key: str, fmt: str = ".2f") -> str:
    """A run's per-epoch figures as ``a / b / c`` (— when it has none)."""
    return " / ".join(f"{x:{fmt}}" for x in run.get(key, [])) or "—"


def summarise(rows: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["depth"], r["kind"]), []).append(r)
    out = []
    for (dataset, depth, kind), rs in groups.items():
        def ms(key, rs=rs):  # over fewer runs than the row's seeds: says how many
            vals = [r[key] for r in rs if key in r]
            fewer = f" (n = {len(vals)})" if vals and len(vals) != len(rs) else ""
            return mean_std(vals, ".2f") + fewer if vals else "—"
        out.append({"dataset": dataset, "depth": depth, "kind": kind, "seeds": len(rs),
                    "accuracy": ms("accuracy"), "accuracy_noise": ms("accuracy_noise"),
                    "per_epoch": curve(rs[0], "accuracy_per_epoch"),
                    "train_per_epoch": curve(rs[0], "train_accuracy_per_epoch"),
                    "grad_norm_per_epoch": curve(rs[0], "grad_norm_per_epoch", ".3g"),
                    "firing_rate": rs[0]["firing_rate"],
                    "silent_fraction": rs[0]["silent_fraction"]})
    return out


def table(rows: list[dict], keys: list[str]) -> str:
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        cells = [f"{r[k]:.3g}" if isinstance(r.get(k), float) else str(r.get(k, "—"))
                 for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=summary(__doc__))
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--tp-layers", type=positive_int, default=4)
    p.add_argument("--tp-hidden", type=positive_int, default=256)
    p.add_argument("--tp-batch", type=positive_int, default=32)
    p.add_argument("--tp-rounds", type=positive_int, default=5)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device of the "
                   "throughput runs (cuda: the fused loop is the Triton kernel)")
    p.add_argument("--threads", type=positive_int, help="torch threads (default: torch's "
                   "choice); 1 gives steady timings on a CPU shared with other jobs")
    p.add_argument("--datasets", nargs="*", default=["mnist"],
                   choices=["mnist", "fashion-mnist", "nmnist-sim"])
    p.add_argument("--nmnist-dir", help="root of simulated N-MNIST recordings")
    p.add_argument("--nmnist-bins", type=positive_int, default=100, help="time bins per recording")
    p.add_argument("--depths", type=positive_int, nargs="*", default=[1, 2, 4])
    p.add_argument("--kinds", nargs="*", default=["src", "lif"], choices=["src", "lif"])
    p.add_argument("--seeds", type=int, nargs="*", default=[0])
    p.add_argument("--hidden", type=positive_int, default=128)
    p.add_argument("--train-samples", type=positive_int, default=2000)
    p.add_argument("--test-samples", type=positive_int, default=1000)
    p.add_argument("--epochs", type=positive_int, default=1)
    p.add_argument("--batch", type=positive_int, default=32)
    p.add_argument("--lr", type=positive_float, default=5e-3)
    p.add_argument("--grad-clip", type=float, default=0.0, help="clip the gradient's global "
                   "norm to this before each Adam step (0, the default: not clipped; bistable "
                   "train clips at 1)")
    p.add_argument("--schedule", choices=["constant", "cosine"], default="constant",
                   help="learning rate: constant, or cosine from --lr to --lr/10 over the run")
    p.add_argument("--noise", type=float, default=0.1, help="relative σ of r, r_s (0: skip)")
    p.add_argument("--compile", action="store_true", help="SRC with the fused loop (compile_loop)")
    p.add_argument("--learn-bias", action="store_true", help="SRC with learned b (capped at -4)")
    p.add_argument("--alpha", type=float, default=0.9, help="SRC input leak α (SPEC.md §6: 0.9; "
                   "the LIF peer's membrane β is 0.95)")
    p.add_argument("--rho", type=float, default=3.0, help="SRC input saturation ρ (SPEC.md §6: 3)")
    p.add_argument("--gate", choices=["previous", "current"], default="previous",
                   help="SRC slow gate z_s[t] on h[t-1] (the authors' code; SPEC.md §6 default) "
                   "or on h[t] (the paper's text)")
    p.add_argument("--beta", type=float, default=0.95, help="LIF membrane decay β (snnTorch's "
                   "usual 0.95)")
    p.add_argument("--slope", type=float, default=2.0, help="LIF arctan surrogate slope α "
                   "(snnTorch's default 2)")
    p.add_argument("--detach", action="store_true", help="SRC with detach_recurrent=True "
                   "(gradients through time only via the input integration i)")
    p.add_argument("--train-noise", type=float, default=0.0, help="train SRC networks with every "
                   "neuron's r, r_s drawn with this relative σ (heterogeneous neurons)")
    p.add_argument("--redraw", action="store_true", help="with --train-noise: draw r, r_s "
                   "anew at every step (the SRC's train_noise; tested with the nominal values)")
    p.add_argument("--noise-ramp", type=float, default=0.0, metavar="F", help="with "
                   "--train-noise and --redraw: σ rises linearly from 0 over the first F of the "
                   "run (a noise curriculum; 0: σ from the start)")
    p.add_argument("--init-rate", type=float, help="data-driven initialisation (both kinds): "
                   "every layer's weights scaled at the first batch to fire at this rate")
    p.add_argument("--reduced", action="store_true", help="label the accuracy runs as reduced "
                   "(those short of the full protocol are, with what they lack)")
    p.add_argument("--name", help="results/<name>.md (default: src; required with --merge)")
    p.add_argument("--runs", default="runs/src", help="folder of the accuracy runs' saved "
                   "states (<runs>/<name>/, one file a run, rewritten after every epoch)")
    p.add_argument("--keep", action="store_true",
                   help="keep the section not rerun now from the last results/<name>.json")
    p.add_argument("--merge", nargs="+", metavar="NAME", help="train nothing: pool the accuracy "
                   "runs of results/NAME.json files of one protocol into results/<--name>.md")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device here (torch.cuda.is_available() is False)")
    if args.merge and (args.name is None or args.name in args.merge):
        p.error(f"--merge: expected a --name for the pooled table other than its sources "
                f"{', '.join(args.merge)}, got {args.name}")
    args.name = args.name or "src"
    if args.merge:
        section = merge(args.merge, vars(p.parse_args([])))
        md = header("SRC vs snnTorch LIF: accuracy pooled over runs") + "\n" + accuracy_md(section)
        path = write_results(args.name, md, {"accuracy": section})
        print(md + f"\nwrote {path}")
        return
    if args.grad_clip < 0:
        p.error(f"--grad-clip: expected a norm ≥ 0 (0: not clipped), got {args.grad_clip}")
    if len(set(args.seeds)) != len(args.seeds):  # a seed twice is the same run, not two
        p.error(f"--seeds: expected distinct seeds, got {' '.join(map(str, args.seeds))}")
    if args.noise_ramp and not (0 < args.noise_ramp <= 1 and args.train_noise and args.redraw):
        p.error(f"--noise-ramp: expected a fraction in (0, 1] with --train-noise and --redraw, "
                f"got {args.noise_ramp} (train noise {args.train_noise}, redraw {args.redraw})")
    if args.threads:
        torch.set_num_threads(args.threads)
    with claimed_runs(args):
        measure(args)


def claimed_runs(args):
    """A claim on ``<--runs>/<--name>/`` for the accuracy runs this process trains there, so that
    a second process given the same folder is refused rather than overwriting their saved
    states (no accuracy run: nothing claimed)."""
    if not (args.datasets and args.depths and args.seeds and args.kinds):
        return contextlib.nullcontext()
    folder = runs_folder(args)
    folder.mkdir(parents=True, exist_ok=True)
    return claimed(folder, "--runs")


def measure(args) -> None:
    """The throughput and accuracy sections asked for, written to results/<--name>.md."""
    sections = {}
    if args.keep and (RESULTS / f"{args.name}.json").exists():
        sections = json.loads((RESULTS / f"{args.name}.json").read_text())
    made = {"command": f"`python {' '.join(sys.argv)}`", "commit": commit(),
            "date": datetime.date.today().isoformat(), "machine": machine(), "args": vars(args)}
    if not args.skip_throughput:
        sections["throughput"] = {**made, "rows": throughput(args)}
    runs = []
    for dataset in args.datasets:
        train = load(args, dataset, "train", args.train_samples)
        test = load(args, dataset, "test", args.test_samples)
        for depth in args.depths:
            for seed in args.seeds:
                for kind in args.kinds:
                    runs.append(accuracy_run(args, dataset, kind, depth, seed, train, test))
    if runs:
        sections["accuracy"] = {**made, "runs": runs}
    md = header("SRC vs snnTorch LIF: training throughput and accuracy") + "\n"
    if "throughput" in sections:
        md += throughput_md(sections["throughput"])
    if "accuracy" in sections:
        md += accuracy_md(sections["accuracy"])
    path = write_results(args.name, md, sections)
    print(md + f"\nwrote {path}")


def made_by(section: dict) -> str:
    if "sources" in section:
        return ("Pooled from the runs made by:\n\n" + "".join(
            f"- {s['command']} at commit {s['commit']} on {s['date']}"
            + (f" ({s['machine']})" if "machine" in s else "") + "\n"
            for s in section["sources"]) + "\n")
    return (f"Made by {section['command']} at commit {section['commit']} on {section['date']}."
            "\n\n")


def throughput_md(section: dict) -> str:
    a = section["args"]
    return (f"## Training throughput\n\n{made_by(section)}{a['tp_layers']} hidden layers of "
            f"{a['tp_hidden']}, T = 220 (20 silent + 200 coded), batch {a['tp_batch']}, 784 "
            "inputs, one step = forward + cross-entropy + backward + Adam, "
            f"{a.get('threads') or 'default'} torch thread(s); median of "
            f"{a['tp_rounds']} interleaved rounds on {a.get('device', 'cpu')}; `src`: the eager "
            "Python loop, `src (fused loop)`: `compile_loop=True` (the C++ kernel on CPU, the "
            "Triton kernel on CUDA); `lif`: snnTorch's `Leaky`, the issue's peer; `lif (plain "
            "loop)`: the same equations as a plain PyTorch loop (`PlainLeaky`, what a hand-"
            "written peer costs); `load_avg_1min`: the machine's load average when measured "
            "(other jobs shared its cores).\n\n"
            + table(section["rows"], ["model", "seconds_per_step", "samples_per_s", "vs_lif",
                                      "load_avg_1min"]) + "\n")


FULL_PROTOCOL = {"datasets": ("mnist", "fashion-mnist", "nmnist-sim"), "depths": (1, 2, 4, 8),
                 "seeds": 3, "train_samples": 60000, "test_samples": 10000, "epochs": 20}
"""The issue's protocol (module docstring): what an accuracy table short of it is labelled by."""


def shortfall(section: dict) -> list[str]:
    """What an accuracy section's runs lack of :data:`FULL_PROTOCOL`, in words (none: full)."""
    a, runs, full = section["args"], section["runs"], FULL_PROTOCOL
    short = [f"no {name} runs" for name in full["datasets"]
             if name not in {r["dataset"] for r in runs}]
    short += [f"no depth {d}" for d in full["depths"] if d not in {r["depth"] for r in runs}]
    seeds = len({r["seed"] for r in runs})
    if seeds < full["seeds"]:
        short.append(f"{seeds} seed(s), not {full['seeds']}")
    short += [f"{key.replace('_', ' ')} {a[key]}, not {full[key]}"
              for key in ("train_samples", "test_samples", "epochs") if a[key] < full[key]]
    return short


def accuracy_md(section: dict) -> str:
    a = section["args"]
    short = shortfall(section)
    label = (f" (REDUCED protocol: {'; '.join(short)})" if short else
             " (REDUCED protocol)" if a["reduced"] else "")
    return (f"## Accuracy{label}\n\n{made_by(section)}Hidden {a['hidden']}, "
            f"{a['train_samples']} training and {a['test_samples']} test samples, {a['epochs']} "
            f"epoch(s), batch {a['batch']}, Adam lr {a['lr']}"
            + (f" (cosine to {a['lr'] / 10:g})" if a.get("schedule") == "cosine" else "")
            + (f", gradient norm clipped at {a['grad_clip']:g}" if a.get("grad_clip") else "")
            + "; images: rate coding 0.25 · "
            "intensity, 20 silent + 200 coded steps; nmnist-sim (simulated N-MNIST): "
            f"{a.get('nmnist_bins')} frames passed through; population readout (10 per class), "
            f"cross-entropy on R[:, -1]. SRC input leak α = {a.get('alpha', 0.9)}, saturation "
            f"ρ = {a.get('rho', 3.0)}, slow gate on "
            f"h[{'t' if a.get('gate') == 'current' else 't-1'}], bias "
            f"{'learned (capped at -4)' if a.get('learn_bias') else 'fixed at -6'}; LIF "
            f"membrane decay β = {a.get('beta', 0.95)}, arctan surrogate slope "
            f"{a.get('slope', 2.0):g}"
            + (f"; SRC trained with r, r_s drawn with σ = {a['train_noise']:.0%} "
               + ("again at every step, tested with the nominal values" if a.get("redraw")
                  else "once (heterogeneous neurons)")
               + (f", rising linearly from 0 over the first {a['noise_ramp']:.0%} of the run"
                  if a.get("noise_ramp") else "") if a.get("train_noise") else "")
            + ("; SRC recurrence detached (gradients through time via i only)"
               if a.get("detach") else "; SRC with full BPTT")
            + (f"; every layer's weights calibrated at the first batch to fire at "
               f"{a['init_rate']} spikes per neuron per step (`init_rate`)"
               if a.get("init_rate") else "") + ". "
            "Depth = hidden layers. `accuracy_noise`: every neuron's "
            f"r, r_s drawn with σ = {a['noise']:.0%} of |r|, |r_s| (SRC only). Firing rate "
            "(spikes per neuron per step), silent fraction per layer, `per_epoch` (test "
            "accuracy after each epoch), `train_per_epoch` (running training accuracy over "
            "each epoch, in training mode) and `grad_norm_per_epoch` (median global gradient "
            "norm of each epoch's steps, before clipping), first seed."
            + "".join(f" The {r['dataset']} depth-{r['depth']} {r['kind']} run of seed {r['seed']} "
                      "was resumed after a stop: " + ", ".join(
                          f"from epoch {g['from_epoch']} at {g['commit']}" for g in r["segments"])
                      + "." for r in section["runs"] if "segments" in r)
            + "\n\n"
            + table(summarise(section["runs"]), ["dataset", "depth", "kind", "seeds", "accuracy",
                                                 "accuracy_noise", "per_epoch", "train_per_epoch",
                                                 "grad_norm_per_epoch", "firing_rate",
                                                 "silent_fraction"]))


if __name__ == "__main__":
    run_main(main)
