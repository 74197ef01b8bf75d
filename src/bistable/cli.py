"""The ``bistable`` command: train, evaluate, list tasks and models, fetch data, benchmark, demo.

Each command group lives beside the code it drives and registers itself through
``add_parser(subparsers)``; a parsed command runs ``args.func(args) -> exit code``.
User errors (``ValueError``), a missing optional extra (:class:`~bistable.extras.MissingExtra`)
and the system's (``OSError``: a missing or unwritable file, a full disk, a read-only file system,
a network failure) print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import warnings

from .extras import MissingExtra

# the flags whose sizes an out-of-memory error of each command points to
SIZE_FLAGS = {"train": "--hidden, --batch-size, --seq-len, --eval-seq-len",
              "eval": "--eval-seq-len, --eval-samples", "models": "--input-size, --output-size"}

# modules that each provide add_parser(subparsers)
COMMAND_MODULES = ("bistable.train.commands", "bistable.data.commands", "bistable.demo")


def _add_models(sub) -> None:
    p = sub.add_parser("models", help="list the model registry with parameter counts")
    p.add_argument("--input-size", type=int, default=1)
    p.add_argument("--output-size", type=int, default=1)

    def run(args) -> int:
        from .models import describe_models

        for flag, value in (("--input-size", args.input_size), ("--output-size", args.output_size)):
            if value < 1:
                raise ValueError(f"{flag} must be >= 1, got {value}")
        rows = describe_models(input_size=args.input_size, output_size=args.output_size)
        width = max(len(name) for name, _, _ in rows)
        for name, params, text in rows:
            count = "-" if params is None else f"{params:,d}"
            print(f"{name:<{width}}  {count:>9}  {text}")
        return 0

    p.set_defaults(func=run)


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="run a benchmark script from benchmarks/ (source checkout)")
    p.add_argument("name", nargs="?", help="scan, units, src, data, memory_tasks, ...")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="arguments passed to the script")

    def run(args) -> int:
        import runpy

        from .train.provenance import source_checkout

        root = source_checkout()
        if root is None:
            raise ValueError("bench: the benchmarks ship with the source checkout, and this "
                             "bistable is an installed copy; run `bistable bench` from a clone "
                             "of the repository (`pip install -e .` there)")
        folder = root / "benchmarks"
        names = sorted(f.stem for f in folder.glob("*.py")
                       if not f.stem.startswith(("_", "common")))  # helpers, not benchmarks
        script = folder / f"{(args.name or '').replace('-', '_')}.py"
        if args.name is None or script.stem not in names:
            if args.name is None:
                raise ValueError(f"bench: expected a benchmark name, one of: {', '.join(names)}")
            raise FileNotFoundError(
                f"no benchmark {args.name!r} in {folder} (have: {', '.join(names) or 'none'}); "
                "benchmarks ship with the source checkout")
        sys.argv = [str(script), *args.rest]
        sys.path.insert(0, str(folder.parent))
        runpy.run_path(str(script), run_name="__main__")
        return 0

    p.set_defaults(func=run)


RANK0_GRACE_S = 30.0  # how long a silent rank gives rank 0 to say an error (see _say)


class _Parser(argparse.ArgumentParser):
    """Usage errors as one ``bistable: error:`` line and exit code 2 (sub-commands included)."""

    def error(self, message):
        _say(f"error: {message} (see `{self.prog} --help`)", every_rank=False)
        raise SystemExit(2)

    def parse_args(self, args=None, namespace=None):
        """As argparse's, but an unknown flag points to its command's help, not the top one."""
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            words = [getattr(parsed, k, None) for k in ("command", "data_command")]
            prog = " ".join([self.prog, *filter(None, words)])
            _say(f"error: unrecognized arguments: {' '.join(extra)} (see `{prog} --help`)",
                 every_rank=False)
            raise SystemExit(2)
        return parsed


def _say(message: str, *, every_rank: bool) -> None:
    """``bistable: <message>`` on stderr. Under torchrun (``RANK`` set) an error that follows
    from the arguments alone is the same on every rank and is said by rank 0 only; one that may
    be a rank's own (a full disk, its memory) by every rank, each naming itself. A rank that
    leaves the message to rank 0 waits up to :data:`RANK0_GRACE_S` before it ends: exiting at
    once, it could lead torchrun to stop rank 0 before rank 0 had said it (the error then lost);
    rank 0's own exit ends the wait, torchrun stopping the job."""
    rank = int(os.environ.get("RANK") or 0)
    if rank == 0 or every_rank:
        print(f"bistable: {f'[rank {rank}] ' if rank else ''}{message}", file=sys.stderr)
    else:
        time.sleep(RANK0_GRACE_S)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(
        prog="bistable",
        description="Memory recurrent units, LRU hybrids and spiking recurrent cells.")
    parser.add_argument("--version", action="version", version=f"bistable {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name and name.startswith(err.name):  # the command group is not installed
                continue
            raise
        module.add_parser(sub)
    _add_models(sub)
    _add_bench(sub)
    return parser


def _out_of_memory(err: RuntimeError) -> bool:
    """Whether ``err`` is an allocation failure (CPU: "can't allocate memory"; CUDA:
    ``torch.OutOfMemoryError``, "out of memory"; a size whose bytes overflow int64)."""
    text = str(err).lower()
    return any(words in text for words in ("can't allocate memory", "out of memory",
                                           "storage size calculation overflowed"))


def _one_line(message, category, filename, lineno, line=None) -> str:
    """A warning as the command prints it: one line, without the source line that raised it."""
    return f"bistable: warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    previous, warnings.formatwarning = warnings.formatwarning, _one_line
    try:
        return _main(argv)
    finally:
        warnings.formatwarning = previous


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help, or a usage error already printed
        return int(done.code or 0)
    try:
        return int(args.func(args) or 0)
    # the arguments' fault, or a missing extra (its message names the pip install)
    except (ValueError, FileNotFoundError, NotADirectoryError, MissingExtra) as err:
        _say(f"error: {err}", every_rank=False)
        return 2
    except OSError as err:
        _say(f"error: {err}", every_rank=True)
        return 2
    except RuntimeError as err:  # sizes beyond the memory: torch's allocator says so, at length
        if not _out_of_memory(err):
            raise
        flags = SIZE_FLAGS.get(args.command)
        _say(f"error: out of memory ({str(err).splitlines()[0]})"
             + (f"; give smaller sizes ({flags})" if flags else ""), every_rank=True)
        return 2
    except KeyboardInterrupt:
        hint = ("; the same command with --resume goes on from the last checkpoint"
                if args.command == "train" else "")
        print(f"bistable: interrupted{hint}", file=sys.stderr)
        return 130
