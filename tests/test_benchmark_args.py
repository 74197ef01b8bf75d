"""The argument types the benchmark scripts share: counts and rates that cannot be used are
refused by argparse (exit 2, one line) before any work starts."""

import argparse
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import positive_float, positive_int  # noqa: E402


def _parser():
    p = argparse.ArgumentParser(prog="bench")
    p.add_argument("--n", type=positive_int)
    p.add_argument("--rate", type=positive_float)
    return p


def test_good_values_pass():
    args = _parser().parse_args(["--n", "3", "--rate", "2.5e-3"])
    assert (args.n, args.rate) == (3, 2.5e-3)


@pytest.mark.parametrize("argv, message", [
    (["--n", "0"], r"argument --n: expected an integer >= 1, got 0"),
    (["--n", "-4"], r"argument --n: expected an integer >= 1, got -4"),
    (["--n", "2.5"], r"argument --n: expected an integer >= 1, got '2\.5'"),
    (["--rate", "0"], r"argument --rate: expected a finite number > 0, got 0\.0"),
    (["--rate", "nan"], r"argument --rate: expected a finite number > 0, got nan"),
    (["--rate", "fast"], r"argument --rate: expected a number > 0, got 'fast'"),
])
def test_bad_values_are_one_line_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        _parser().parse_args(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert re.search(message, err), err
