"""The benchmark scripts' command lines: ``--help`` prints the usage and starts no work; the
argument types they share refuse counts and rates that cannot be used (exit 2, one line) before
any work starts; bad input found later (a run of another kind, a missing folder) is one line
naming the script, with exit code 2."""

import argparse
import importlib
import re
import runpy
import signal
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import positive_float, positive_int, run_set_args  # noqa: E402

SCRIPTS = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py")
                 if 'if __name__ == "__main__":' in p.read_text())


def _started_work(signum, frame):
    raise TimeoutError("--help did not exit within 30 s: the script started its work")


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_prints_the_usage_and_starts_no_work(script, monkeypatch, capsys):
    module = importlib.import_module(f"benchmarks.{script}")
    monkeypatch.setattr(sys, "argv", [f"{script}.py", "--help"])
    previous = signal.signal(signal.SIGALRM, _started_work)
    signal.alarm(30)
    try:
        with pytest.raises(SystemExit) as exit_:
            module.main()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: {script}.py")


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


@pytest.mark.parametrize("argv, only, name", [
    ([], None, "runs"),
    (["--only", "b", "a", "--name", "runs_ab"], ["b", "a"], "runs_ab"),
])
def test_run_set_args(argv, only, name, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["bench", *argv])
    args = run_set_args("bench", {"a": [], "b": []}, "runs")
    assert (args.only, args.name, args.no_train) == (only, name, False)


@pytest.mark.parametrize("argv, message", [
    (["--only", "a"], r"--only needs a --name of its own: results/runs\.md lists every run"),
    (["--only", "c", "--name", "x"], r"argument --only: invalid choice: 'c'"),
])
def test_run_set_args_refuse(argv, message, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["bench", *argv])
    with pytest.raises(SystemExit) as exit_:
        run_set_args("bench", {"a": [], "b": []}, "runs")
    assert exit_.value.code == 2
    assert re.search(message, capsys.readouterr().err)


@pytest.mark.parametrize("device, message", [
    ("tpu", "argument --device: invalid choice: 'tpu'"),
    *([] if torch.cuda.is_available() else [("cuda", "--device cuda: no CUDA device here")]),
])
def test_src_device_is_checked_before_any_work(device, message, monkeypatch, capsys):
    module = importlib.import_module("benchmarks.src")
    monkeypatch.setattr(sys, "argv", ["src.py", "--device", device])
    with pytest.raises(SystemExit) as exit_:
        module.main()
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_every_script_runs_its_main_through_run_main():
    for script in SCRIPTS:
        text = (ROOT / "benchmarks" / f"{script}.py").read_text()
        assert text.endswith('if __name__ == "__main__":\n    run_main(main)\n'), script


@pytest.fixture(scope="module")
def copy_run(tmp_path_factory):
    """A tiny finished copy-first-input run, trained without --ema."""
    from bistable.train import TrainConfig, train

    out = tmp_path_factory.mktemp("runs") / "copy"
    train(TrainConfig(task="copy-first-input", model="lru", hidden=6, layers=1, seq_len=10,
                      steps=2, batch_size=4, eval_samples=8, quiet=True, out=str(out)))
    return out


@pytest.mark.parametrize("script, argv, message", [
    ("ema_pairs", ["{run}"], "{run}: not an --ema run (its checkpoint holds no moving average)"),
    ("denoising_probe", ["{run}"], "{run}: expected a denoising run, got copy-first-input"),
    ("memory_tasks", ["--data-dir", "{tmp}/nowhere", "--experiments", "psmnist", "--models",
                      "gru", "--steps", "1", "--runs", "{tmp}/runs", "--name", "unused"],
     "mnist: no train-images-idx3-ubyte or train-images-idx3-ubyte.gz in {tmp}/nowhere; run "),
])
def test_bad_input_found_at_work_is_one_line_naming_the_script(script, argv, message, copy_run,
                                                               tmp_path, monkeypatch, capsys):
    def fill(text):
        return text.format(run=copy_run, tmp=tmp_path)

    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(sys, "argv", [f"benchmarks/{script}.py", *map(fill, argv)])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(ROOT / "benchmarks" / f"{script}.py"), run_name="__main__")
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.startswith(f"{script}.py: error: {fill(message)}") and err.count("\n") == 1, err


def test_a_failed_training_command_is_one_line_naming_it(monkeypatch, capsys):
    """The training subprocess says why it failed; the driver adds one line, not a traceback."""
    import subprocess

    from benchmarks.common import run_main

    def failing():
        raise subprocess.CalledProcessError(2, [sys.executable, "-m", "bistable", "train", "x"])

    monkeypatch.setattr(sys, "argv", ["benchmarks/spiking_runs.py"])
    with pytest.raises(SystemExit) as exit_:
        run_main(failing)
    assert exit_.value.code == 2
    assert capsys.readouterr().err == "spiking_runs.py: error: -m bistable train x exited with 2\n"
