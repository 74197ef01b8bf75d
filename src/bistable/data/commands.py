"""``bistable data``: fetch datasets and simulate N-MNIST recordings."""

from __future__ import annotations

import argparse


def _at_least(minimum: int, what: str):
    """An argparse type: an integer >= ``minimum``, refused as "expected {what}"."""
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if n < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {n}")
        return n
    return parse


def _fetch(args) -> int:
    from .fetch import fetch

    folder = fetch(args.name, args.data_dir, from_dir=args.from_dir)
    print(f"{args.name}: ready in {folder}")
    return 0


def _simulate(args) -> int:
    from .nmnist_sim import write_dataset

    summary = write_dataset(args.out, args.data_dir, n_train=args.n_train, n_test=args.n_test,
                            seed=args.seed)
    for split in ("train", "test"):
        s = summary[split]
        print(f"{split}: {s['samples']} simulated recordings, {s['events_mean']:.0f} events "
              f"per sample on average")
    print(f"written to {args.out} (labelled simulated: SIMULATED.json)")
    return 0


def add_parser(subparsers) -> None:
    """Register ``data fetch`` and ``data simulate-nmnist`` on the top-level subparsers."""
    data = subparsers.add_parser("data", help="fetch datasets, simulate N-MNIST")
    sub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")

    p = sub.add_parser("fetch", help="download (or import) a dataset with md5 verification")
    p.add_argument("name", choices=["mnist", "fashion-mnist", "nmnist"])
    p.add_argument("--data-dir", help="destination (default $BISTABLE_DATA_DIR/NAME or "
                                      "~/.cache/bistable/data/NAME)")
    p.add_argument("--from", dest="from_dir", metavar="DIR",
                   help="import local copies from DIR instead of downloading")
    p.set_defaults(func=_fetch)

    p = sub.add_parser("simulate-nmnist",
                       help="render MNIST digits as N-MNIST-format event recordings")
    p.add_argument("--out", required=True, help="output root (gets Train/ and Test/)")
    p.add_argument("--data-dir", help="MNIST folder (default as for `data fetch mnist`)")
    digits = _at_least(1, "a positive number of digits")
    p.add_argument("--n-train", type=digits, metavar="N", help="first N training digits (all)")
    p.add_argument("--n-test", type=digits, metavar="N", help="first N test digits (all)")
    p.add_argument("--seed", type=_at_least(0, "an integer >= 0"), default=0)
    p.set_defaults(func=_simulate)
