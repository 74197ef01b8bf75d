"""``bistable train`` / ``bistable tasks`` as a user runs them: a subprocess per command."""

import argparse
import importlib
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from bistable.cli import build_parser, main
from bistable.data.tasks import TASK_NAMES
from bistable.train import commands, distributed
from bistable.train.checkpoint import claimed, load_checkpoint
from bistable.train.commands import parse_option
from bistable.train.distributed import Context, teardown
from bistable.train.loop import load_run
from bistable.train.metrics import evaluate

TINY = ["--model", "bmru", "--hidden", "8", "--layers", "1", "--seq-len", "12",
        "--batch-size", "8", "--eval-samples", "16", "--threads", "1", "--quiet"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def bistable(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "bistable", *map(str, args)], text=True,
                          capture_output=True, env=ENV, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_version_is_the_package_s(capsys):
    import bistable

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"bistable {bistable.__version__}\n"
    tomllib = pytest.importorskip("tomllib")  # (Python 3.11+) the one the package is built with
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert project["project"]["version"] == bistable.__version__


def test_tasks_lists_every_task(capsys):
    assert main(["tasks"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(TASK_NAMES)


def test_short_run_writes_metrics_json_as_specified(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "copy-first-input", *TINY, "--steps", "6", "--eval-seq-len", "40",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "seq_len" in printed and "40" in printed                # the horizon table
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics) == ["task", "model", "config", "history", "eval"]
    assert metrics["task"] == "copy-first-input" and metrics["model"] == "bmru"
    assert metrics["config"]["steps"] == 6 and metrics["config"]["hidden"] == 8
    assert [e["seq_len"] for e in metrics["eval"]] == [12, 40]
    for e in metrics["eval"]:
        assert list(e) == ["split", "seq_len", "loss", "mse", "accuracy"]
        assert e["split"] == "test" and e["accuracy"] is None and e["mse"] >= 0
    assert {"checkpoint.pt", "learning-curve.png", "horizon-curve.png"} <= set(os.listdir(out))


@pytest.mark.parametrize("args, message", [
    (["copy", "--model", "bmru"], "unknown task 'copy'; choose one of: copy-first-input"),
    (["copy-first-input", "--model", "rnn"], "unknown model 'rnn'; choose one of: bmru, cmru"),
    (["copy-first-input", "--model", "bmru", "--epochs", "2"], "--epochs needs a data-set task"),
    (["copy-first-input", "--model", "bmru", "--hidden", "0"], "--hidden must be >= 1"),
    (["denoising", "--model", "bmru", "--seq-len", "100"], "at least 205, got 100\n"),
    (["denoising", "--model", "bmru", "--gap", "400"],
     "at least 405, got 300 (the default --seq-len; give a longer one)"),
    (["psmnist", "--model", "lru", "--data-dir", "/nonexistent/mnist"], "no train-images"),
    (["copy-first-input", "--model", "bmru", "--pad", "3"], "--pad does not apply"),
    (["psmnist", "--model", "lru", "--pad", "9", "--pad-every", "0"], "--pad-every must be >= 1"),
    (["denoising", "--model", "gru", "--shift", "1"], "--shift does not apply to task denoising"),
    (["copy-first-input", "--model", "bmru", "--batch-size", "-2"], "--batch-size must be >= 1"),
    (["copy-first-input", "--model", "bmru", "--hidden", str(10**19)],
     f"--hidden: expected at most 2147483647, got {10**19}"),
    (["copy-first-input", "--model", "bmru", "--eval-seq-len", "60", str(10**20)],
     f"--eval-seq-len: expected at most 2147483647, got {10**20}"),
    (["copy-first-input", "--model", "bmru", "--seed", str(10**17)],
     "--seed must be in [0, 2**32), got 100000000000000000"),
    (["copy-first-input", "--model", "hybrid", "--option", "unit_kwargs=3"],
     "unit_kwargs: expected a mapping of unit name to options, got int"),
    (["copy-first-input", "--model", "hybrid", "--option", "unit_kwargs={'lru': 3}"],
     "unit_kwargs['lru']: expected a mapping of option to value, got int"),
    (["copy-first-input", "--model", "lru", "--write-penalty", "0.1"],
     "--write-penalty needs a model with memory units (MRU); model 'lru' has none"),
    (["copy-first-input", "--model", "bmru", "--option", "learn_init=0"],
     "learn_init: expected True or False, got 0"),
    (["copy-first-input", "--model", "src", "--option", "detach_recurrent=yes"],
     "detach_recurrent: expected True or False, got 'yes'"),
])
def test_user_errors_are_one_line_exit_2(tmp_path, capsys, args, message):
    assert main(["train", *args, "--out", str(tmp_path / "x"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bistable: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()


def test_weights_that_overflow_are_divergence_exit_1(tmp_path, capsys):
    """At lr 1e30 the first update leaves finite loss and gradients but weights whose norm
    overflows: divergence (exit 1), not an input error in the next forward (exit 2)."""
    assert main(["train", "copy-first-input", *TINY, "--steps", "5", "--lr", "1e30", "--out",
                 str(tmp_path / "x")]) == 1
    assert capsys.readouterr().err == (
        "bistable: error: training diverged at step 0: the update made the weights' norm inf; "
        "no checkpoint was written. Try a lower --lr.\n")


def test_eval_scores_a_run_again_without_touching_it(tmp_path, capsys):
    """``bistable eval`` on a finished run: its own lengths give metrics.json's figures exactly,
    a new length and bf16 are scored too, and nothing in the run's folder changes."""
    out = tmp_path / "run"
    assert main(["train", "copy-first-input", *TINY, "--steps", "6", "--eval-seq-len", "40",
                 "--out", str(out)]) == 0
    before = {f.name: f.read_bytes() for f in out.iterdir()}
    assert main(["eval", str(out), "--threads", "1", "--json", str(tmp_path / "again.json")]) == 0
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["eval"] == json.loads((out / "metrics.json").read_text())["eval"]
    assert again["step"] == 6 and again["precision"] == "fp32"
    assert main(["eval", str(out), "--eval-seq-len", "100", "--precision", "bf16",
                 "--json", str(tmp_path / "long.json")]) == 0
    long = json.loads((tmp_path / "long.json").read_text())
    assert [e["seq_len"] for e in long["eval"]] == [100] and long["precision"] == "bf16"
    assert "step 6, bf16" in capsys.readouterr().out
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before
    assert main(["eval", str(out)]) == 0 and "evaluating T=12" in capsys.readouterr().err
    assert main(["eval", str(out), "--quiet"]) == 0 and capsys.readouterr().err == ""


def fake_simulated_nmnist(root: Path) -> None:
    """Two random recordings per digit 0, 1 and split under ``root``, marked simulated."""
    import numpy as np

    from bistable.data import nmnist

    rng = np.random.default_rng(0)
    for split in ("Train", "Test"):
        for digit in (0, 1):
            folder = root / split / str(digit)
            folder.mkdir(parents=True)
            for k in range(2):
                events = np.zeros(40, dtype=nmnist.EVENT_DTYPE)
                events["x"], events["y"] = rng.integers(0, 34, 40), rng.integers(0, 34, 40)
                events["t"], events["p"] = np.sort(rng.integers(0, 300_000, 40)), 1
                nmnist.write_events(folder / f"{k:05d}.bin", events)
    (root / "SIMULATED.json").write_text('{"simulated": true, "complete": true}')


def test_simulated_n_mnist_stays_labelled_on_resume_and_eval_from_another_folder(
        tmp_path, monkeypatch, capsys):
    """A relative --data-dir is saved as a full path: the run resumes and evaluates from another
    working folder without it, and says every time that its recordings are simulated."""
    fake_simulated_nmnist(tmp_path / "sim")
    args = ["train", "nmnist", "--model", "bmru", "--hidden", "4", "--layers", "1",
            "--batch-size", "2", "--eval-samples", "2", "--seq-len", "5", "--quiet"]
    monkeypatch.chdir(tmp_path)
    assert main([*args, "--steps", "1", "--data-dir", "sim", "--out", "run"]) == 0
    assert "data: SIMULATED N-MNIST" in capsys.readouterr().out
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert main([*args, "--steps", "2", "--resume", "--out", "../run"]) == 0
    assert "data: SIMULATED N-MNIST" in capsys.readouterr().out
    assert main(["eval", "../run"]) == 0
    assert "data: SIMULATED N-MNIST" in capsys.readouterr().out
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())["config"]["data_dir"]
    assert saved == str(tmp_path.resolve() / "sim")


def test_more_eval_samples_than_the_test_set_holds_are_said(tmp_path):
    """All the test examples are scored (eval_batches), and the run says how many there are."""
    fake_simulated_nmnist(tmp_path / "sim")
    args = ["train", "nmnist", "--model", "bmru", "--hidden", "4", "--layers", "1", "--quiet",
            "--batch-size", "2", "--seq-len", "5", "--steps", "1", "--data-dir",
            str(tmp_path / "sim")]
    with pytest.warns(UserWarning, match="^--eval-samples 100: the test set of nmnist holds 4 "
                                         "examples; all 4 are scored$"):
        assert main([*args, "--eval-samples", "100", "--out", str(tmp_path / "a")]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main([*args, "--eval-samples", "4", "--out", str(tmp_path / "b")]) == 0


def test_keep_best_says_which_step_it_tests_and_eval_scores_those_weights(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "copy-first-input", *TINY, "--steps", "6", "--eval-every", "2",
                 "--keep-best", "--out", str(out)]) == 0
    best = json.loads((out / "metrics.json").read_text())["best"]
    assert f"weights of step {best['step']}, the lowest validation loss" in capsys.readouterr().out
    assert main(["eval", str(out), "--json", str(tmp_path / "again.json")]) == 0
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["step"] == best["step"]
    assert again["eval"] == json.loads((out / "metrics.json").read_text())["eval"]


def test_keep_best_by_accuracy_says_so(tmp_path, monkeypatch, capsys):
    """The closing lines name the score that chose the weights: here, the validation accuracy."""
    seen = {}

    def train_(config):
        seen["monitor"] = config.monitor
        return {"eval": [{"split": "test", "seq_len": 784, "loss": 0.3, "mse": None,
                          "accuracy": 0.9}],
                "best": {"step": 6, "val_loss": 0.4, "val_accuracy": 0.875},
                "config": {"data_dir": None}}

    monkeypatch.setattr(commands, "train", train_)
    assert main(["train", "smnist", "--model", "lru", "--keep-best", "--monitor", "accuracy",
                 "--out", str(tmp_path / "run")]) == 0
    assert seen["monitor"] == "accuracy"
    assert "weights of step 6, the highest validation accuracy (87.50 %)" in \
        capsys.readouterr().out


def test_eval_perturbs_an_src_network_and_restores_it(tmp_path):
    """``--perturb σ``: each draw of r, r_s (seeded by its index) scores differently from the
    clean network and the same again when repeated; the clean figures after it are unchanged."""
    out = tmp_path / "run"
    assert main(["train", "copy-first-input", *TINY[2:], "--model", "src", "--steps", "4",
                 "--out", str(out)]) == 0
    runs = []
    for name in ("a", "b"):
        assert main(["eval", str(out), "--perturb", "0.5", "--draws", "2", "--json",
                     str(tmp_path / f"{name}.json")]) == 0
        runs.append(json.loads((tmp_path / f"{name}.json").read_text()))
    clean = json.loads((out / "metrics.json").read_text())["eval"]
    losses = [e["loss"] for e in runs[0]["perturbed"]]
    assert [e["draw"] for e in runs[0]["perturbed"]] == [0, 1]
    assert len(set(losses)) == 2 and clean[0]["loss"] not in losses
    assert runs[0] == runs[1] and runs[1]["eval"] == clean


@pytest.mark.parametrize("args, message", [
    (["{tmp}/nothing"], "no checkpoint (checkpoint.pt) of a `bistable train` run"),
    (["{tmp}/run", "--perturb", "0.1"], "--perturb: only SRC networks (model src)"),
    (["{tmp}/run", "--perturb", "-1"], "--perturb must be a finite relative σ >= 0, got -1.0"),
    (["{tmp}/run", "--perturb", "inf"], "--perturb must be a finite relative σ >= 0, got inf"),
    (["{tmp}/run", "--json", "{tmp}"], "a directory; expected a file name"),
    (["{tmp}/run", "--json", "{tmp}/run/checkpoint.pt"], "inside the run's folder"),
    (["{tmp}/run", "--json", "{tmp}/run/../run/scores.json"], "inside the run's folder"),
    (["{tmp}/run", "--json", "{tmp}/run/sub/scores.json"], "inside the run's folder"),
    (["{tmp}/run", "--json", "{tmp}/run/metrics.json/scores.json"], "inside the run's folder"),
    (["{tmp}/run", "--json", "{tmp}/a_file/x/scores.json"], "a_file is a file, not a folder"),
    (["{tmp}/run", "--eval-seq-len", "0"], "sequence length must be at least 1, got 0"),
    (["{tmp}/run", "--eval-samples", "0"], "--eval-samples must be >= 1, got 0"),
    (["{tmp}/run", "--threads", "0"], "--threads must be >= 1, got 0"),
    (["{tmp}/run", "--eval-seq-len", "50", str(10**20)],
     f"--eval-seq-len: expected at most 2147483647, got {10**20}"),
    (["{tmp}/run", "--eval-samples", str(2**31)], "--eval-samples: expected at most 2147483647"),
])
def test_eval_user_errors_are_one_line_exit_2(tmp_path, capsys, args, message):
    assert main(["train", "copy-first-input", *TINY, "--steps", "2", "--out",
                 str(tmp_path / "run")]) == 0
    capsys.readouterr()
    (tmp_path / "a_file").write_text("")
    assert main(["eval", *(a.format(tmp=tmp_path) for a in args)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bistable: error: ") and message in err and err.count("\n") == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="the error of a machine without CUDA")
def test_device_cuda_without_cuda_is_one_line_for_train_and_eval(tmp_path, capsys):
    run = str(tmp_path / "run")
    assert main(["train", "copy-first-input", *TINY, "--steps", "2", "--device", "cuda",
                 "--out", run]) == 2
    assert main(["train", "copy-first-input", *TINY, "--steps", "2", "--out", run]) == 0
    assert main(["eval", run, "--device", "cuda"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("bistable")]
    assert errors == ["bistable: error: --device cuda: no CUDA device is available"] * 2


def test_a_user_error_in_a_process_has_no_traceback(tmp_path):
    proc = bistable("train", "copy", "--model", "bmru", "--out", tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("bistable: error: unknown task")


def test_sigkill_mid_run_then_resume_equals_an_uninterrupted_run(tmp_path):
    args = ["train", "copy-first-input", *TINY, "--steps", "150", "--checkpoint-every", "5",
            "--eval-seq-len", "30"]
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "bistable", *args, "--out", str(out)],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ckpt = out / "checkpoint.pt"
        if ckpt.is_file() and load_checkpoint(ckpt)["step"] >= 10:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "metrics.json").exists(), "the run finished before it could be killed"
    bistable(*args, "--out", out, "--resume")
    resumed = json.loads((out / "metrics.json").read_text())
    assert resumed["eval"] == whole["eval"]


def test_two_torchrun_ranks_match_one_process(tmp_path, torchrun):
    """DDP over two ranks trains and scores as one process, the --ema average and the logged
    write rate (once rank 0's half of the batch) included."""
    args = ["train", "copy-first-input", *TINY, "--steps", "8", "--eval-seq-len", "30",
            "--ema", "0.9", "--write-penalty", "0.1", "--log-every", "2"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    proc = torchrun("-m", "bistable", *args, "--out", tmp_path / "two")
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = (json.loads(Path(tmp_path / n / "metrics.json").read_text()) for n in ("one", "two"))
    assert len(two["eval"]) == len(one["eval"]) == 2
    for a, b in zip(one["eval"], two["eval"], strict=True):
        assert b["seq_len"] == a["seq_len"]
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4, abs=1e-6)
    for key in ("loss", "write_rate"):
        logged = [[h[key] for h in m["history"] if "loss" in h] for m in (one, two)]
        assert len(logged[0]) == 4 and logged[1] == pytest.approx(logged[0], rel=1e-4), key


def test_two_torchrun_ranks_calibrate_on_the_whole_batch(tmp_path, torchrun):
    """--option init_rate calibrated each replica on rank 0's half of the batch: the run differed
    from one process (test loss 47.5 against 42.8). The ranks' slices are gathered first now."""
    args = ["train", "copy-first-input", *TINY, "--model", "src", "--hidden", "16", "--layers",
            "2", "--seq-len", "20", "--steps", "2", "--option", "init_rate=0.02"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    proc = torchrun("-m", "bistable", *args, "--out", tmp_path / "two")
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = (json.loads(Path(tmp_path / n / "metrics.json").read_text()) for n in ("one", "two"))
    assert two["eval"][0]["loss"] == pytest.approx(one["eval"][0]["loss"], rel=1e-5)
    (where,) = load_checkpoint(tmp_path / "two" / "checkpoint.pt")["provenance"]
    assert where["ranks"] == 2


def test_two_torchrun_ranks_draw_the_dropout_masks_of_one_process(tmp_path, torchrun):
    """Each rank drew its slice's masks from the same random state: rank 1's samples got rank
    0's masks (step-1 loss 4.61 against one process's 18.78)."""
    args = ["train", "copy-first-input", *TINY, "--model", "src", "--hidden", "16", "--layers",
            "2", "--seq-len", "20", "--steps", "2", "--log-every", "1", "--option",
            "dropout=0.5"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    proc = torchrun("-m", "bistable", *args, "--out", tmp_path / "two")
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = (json.loads(Path(tmp_path / n / "metrics.json").read_text()) for n in ("one", "two"))
    losses = [[h["loss"] for h in m["history"] if "loss" in h] for m in (one, two)]
    assert len(losses[0]) == 2 and losses[1] == pytest.approx(losses[0], rel=1e-5)
    assert two["eval"][0]["loss"] == pytest.approx(one["eval"][0]["loss"], rel=1e-5)


def test_a_refused_out_stops_every_rank_with_one_message(tmp_path, torchrun):
    """Rank 0 alone claims --out; the other rank waited in DDP's set-up and died with a gloo
    traceback ("Connection closed by peer") when rank 0 was refused."""
    out = tmp_path / "held"
    out.mkdir()
    with claimed(out, "--out"):
        proc = torchrun("-m", "bistable", "train", "copy-first-input", *TINY, "--steps", "2",
                        "--out", out)
    assert proc.returncode != 0
    assert proc.stderr.count("bistable: error: --out") == 1
    assert "another run is writing there" in proc.stderr
    assert "Connection closed" not in proc.stderr and "[rank1]" not in proc.stderr


def test_a_user_error_under_torchrun_is_said_once(tmp_path, torchrun):
    """Every rank printed it, the two lines at times run together into one."""
    for bad, message in ((["--seed", "-1"], "bistable: error: --seed must be in [0, 2**32)"),
                         (["--steps", "abc"], "bistable: error: argument --steps")):
        proc = torchrun("-m", "bistable", "train", "copy-first-input", *TINY, *bad,
                        "--out", tmp_path / "x", timeout=120)
        assert proc.returncode != 0 and proc.stderr.count(message) == 1, proc.stderr[-2000:]


@pytest.mark.parametrize(("error", "said"), [
    (ValueError("--lr must be finite"), ""),  # rank 0 says it, for every rank
    (OSError(28, "No space left on device", "x"),
     "bistable: [rank 1] error: [Errno 28] No space left on device: 'x'\n")])
def test_rank_1_says_only_the_errors_that_may_be_its_own(monkeypatch, capsys, error, said):
    def fail(args):
        raise error

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr("bistable.cli.RANK0_GRACE_S", 0.0)  # no rank 0 here to wait for
    monkeypatch.setattr(commands, "_train", fail)
    assert main(["train", "copy-first-input", "--model", "bmru", "--out", "x"]) == 2
    assert capsys.readouterr().err == said


def test_two_torchrun_ranks_train_the_lif_peer_with_evaluations(tmp_path, torchrun):
    """snnTorch keeps its membrane as a buffer sized by the last batch: rank 0's evaluations
    reshaped it, and DDP's buffer broadcast then aborted the run (sizes differ)."""
    pytest.importorskip("snntorch")
    proc = torchrun("-m", "bistable", "train", "copy-first-input", *TINY, "--model", "lif",
                    "--steps", "4", "--eval-every", "2", "--out", tmp_path / "two")
    assert proc.returncode == 0, proc.stderr[-3000:]
    history = json.loads((tmp_path / "two" / "metrics.json").read_text())["history"]
    assert [h["step"] for h in history if "eval_loss" in h] == [2]


def test_option_values_are_python_literals_and_a_key_is_required():
    assert parse_option("train_noise=0.2") == ("train_noise", 0.2)
    assert parse_option("compile_loop=True") == ("compile_loop", True)
    assert parse_option("learn_init=false") == ("learn_init", False)  # not the string "false"
    assert parse_option("learn_init=TRUE") == ("learn_init", True)
    assert parse_option("mixer=lru+bmru") == ("mixer", "lru+bmru")
    for text in ("=3", "noequals"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected KEY=VALUE"):
            parse_option(text)


def test_eval_scores_with_the_sample_count_and_precision_it_is_given(tmp_path):
    """``--eval-samples`` and ``--precision`` override the run's own settings."""
    out = tmp_path / "run"
    assert main(["train", "copy-first-input", *TINY, "--steps", "4", "--out", str(out)]) == 0
    clean = json.loads((out / "metrics.json").read_text())["eval"]
    assert main(["eval", str(out), "--eval-samples", "4", "--json", str(tmp_path / "a.json")]) == 0
    task, model = load_run(out)
    assert json.loads((tmp_path / "a.json").read_text())["eval"] == [
        evaluate(model, task, "test", 12, n=4)]
    assert main(["eval", str(out), "--precision", "bf16", "--json", str(tmp_path / "b.json")]) == 0
    bf16 = json.loads((tmp_path / "b.json").read_text())["eval"]
    assert bf16[0]["loss"] != clean[0]["loss"]                      # scored under autocast


def test_eval_perturb_zero_is_the_clean_network_and_the_draws_are_undone(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "copy-first-input", *TINY[2:], "--model", "src", "--steps", "2",
                 "--out", str(out)]) == 0
    assert main(["eval", str(out), "--perturb", "0", "--draws", "1", "--json",
                 str(tmp_path / "zero.json")]) == 0
    zero = json.loads((tmp_path / "zero.json").read_text())
    assert [e["loss"] for e in zero["perturbed"]] == [e["loss"] for e in zero["eval"]]
    task, model = load_run(out)
    before = evaluate(model, task, "test", 12, n=16)
    drawn = commands._perturbed(model, task, [12], 16, "cpu", 0.5, 1)
    assert drawn[0]["loss"] != before["loss"]
    assert evaluate(model, task, "test", 12, n=16) == before        # r, r_s restored


def test_an_interrupt_is_exit_130_in_one_line(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(commands, "_tasks", interrupted)
    assert main(["tasks"]) == 130
    assert capsys.readouterr().err == "bistable: interrupted\n"
    monkeypatch.setattr(commands, "_train", interrupted)  # a run: how to go on
    assert main(["train", "copy-first-input", "--model", "bmru", "--out", "x"]) == 130
    assert capsys.readouterr().err == ("bistable: interrupted; the same command with --resume "
                                       "goes on from the last checkpoint\n")


def test_a_warmup_longer_than_the_run_warns(tmp_path):
    with pytest.warns(UserWarning, match=r"^--warmup 8 is longer than the run's 4 steps: the "
                                         r"learning rate ends at 0\.0005, below --lr 0\.001$"):
        assert main(["train", "copy-first-input", *TINY, "--steps", "4", "--warmup", "8",
                     "--lr", "1e-3", "--out", str(tmp_path / "run")]) == 0


def test_an_unknown_flag_points_to_its_command_s_help(capsys):
    assert main(["train", "copy-first-input", "--model", "bmru", "--out", "x", "--stesp", "5"]) == 2
    assert capsys.readouterr().err == ("bistable: error: unrecognized arguments: --stesp 5 (see "
                                       "`bistable train --help`)\n")
    assert main(["data", "fetch", "mnist", "--bogus"]) == 2
    assert "(see `bistable data fetch --help`)" in capsys.readouterr().err


def test_an_out_that_is_a_file_is_said_so(tmp_path, capsys):
    (tmp_path / "run").write_text("")
    assert main(["train", "copy-first-input", *TINY, "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == (f"bistable: error: --out {tmp_path / 'run'}: expected a "
                                       "directory for the run, got a file\n")


def test_a_missing_command_group_is_left_out_but_a_missing_dependency_is_raised(monkeypatch):
    real = importlib.import_module

    def without(missing, group):
        def import_module(name, *args):
            if name == group:
                raise ModuleNotFoundError(f"No module named {missing!r}", name=missing)
            return real(name, *args)
        return import_module

    monkeypatch.setattr(importlib, "import_module", without("bistable.demo", "bistable.demo"))
    assert "demo" not in build_parser().format_help()
    monkeypatch.setattr(importlib, "import_module", without("tqdm", "bistable.demo"))
    with pytest.raises(ModuleNotFoundError, match="tqdm"):
        build_parser()


def test_teardown_leaves_no_process_group_behind():
    """After a distributed run its process group is gone (a later run in the same process joins
    a fresh one)."""
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        teardown(Context(rank=0, world_size=2))
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


LONE_ERROR = """
import datetime, sys, torch, torch.distributed as dist
from bistable.train import distributed
distributed.PEERS_AFTER_ERROR = datetime.timedelta(seconds=3)
context = distributed.setup("cpu")
if context.rank == 1:
    distributed.teardown(context, ended_well=False)  # raised alone: rank 0 waits in a collective
    print("rank 1 left", flush=True)
    sys.exit(3)
dist.all_reduce(torch.ones(1))
print("rank 0 passed its collective", flush=True)
"""


@pytest.mark.skipif(not distributed._BARRIER_BEFORE_DESTROY,
                    reason="the ranks meet before destroying the group on torch < 2.5 only")
def test_a_rank_that_raised_alone_does_not_wait_for_its_peers_forever(tmp_path, torchrun):
    """On torch < 2.5 the ranks meet before destroying the group (without, the destroy could hang
    in gloo); a rank that raised while its peers wait in a collective would have waited there for
    the group's timeout (30 minutes) before torchrun could stop the run. (Forced on torch 2.13,
    this path hangs at the rank's exit, which waits for the pending barrier: the test runs where
    the path does.)"""
    script = tmp_path / "lone_error.py"
    script.write_text(LONE_ERROR)
    proc = torchrun(script, timeout=120)
    assert proc.returncode != 0
    assert "rank 1 left" in proc.stdout
    assert "rank 0 passed" not in proc.stdout, "the barrier was taken for rank 0's all_reduce"


def test_resume_keeps_the_run_s_steps_and_evaluations_unless_given_again(tmp_path, capsys):
    """``--resume`` without ``--steps`` (or ``--eval-samples``, ``--log-every``) goes on with the
    run's own, not the defaults: a run killed at step 4 of 6 ends as the whole run does."""
    run = ["train", "copy-first-input", *TINY, "--checkpoint-every", "2", "--schedule", "constant",
           "--log-every", "3"]
    whole, part = str(tmp_path / "whole"), str(tmp_path / "part")
    assert main([*run, "--steps", "6", "--out", whole]) == 0
    assert main([*run, "--steps", "4", "--out", part]) == 0
    saved = load_checkpoint(Path(part) / "checkpoint.pt")  # as if killed at step 4 of 6
    saved["config"]["steps"] = 6
    torch.save(saved, Path(part) / "checkpoint.pt")
    (Path(part) / "metrics.json").unlink()
    tiny = [a for a in TINY if a not in ("--eval-samples", "16")]
    assert main(["train", "copy-first-input", *tiny, "--checkpoint-every", "2", "--schedule",
                 "constant", "--out", part, "--resume"]) == 0
    ours, theirs = (json.loads((Path(d) / "metrics.json").read_text()) for d in (part, whole))
    assert ours["config"]["steps"] == 6 and ours["config"]["eval_samples"] == 16
    assert ours["config"]["log_every"] == 3  # (the default 10 came back once)
    assert ours["eval"] == theirs["eval"]


def test_a_second_run_on_the_same_out_is_refused_while_the_first_writes(tmp_path, capsys):
    """Refused before it reads the folder: not told to start from step 0 or to add --resume
    because of what the first run has written so far."""
    import fcntl

    out = tmp_path / "run"
    out.mkdir()
    with open(out / ".lock", "a") as held:  # another process's claim
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        for extra in ([], ["--resume"]):
            args = ["train", "copy-first-input", *TINY, "--steps", "2", "--out", str(out)]
            assert main(args + extra) == 2
            err = capsys.readouterr().err
            assert "another run is writing there" in err and err.count("\n") == 1, err
    assert main(["train", "copy-first-input", *TINY, "--steps", "2", "--out", str(out)]) == 0
    with open(out / ".lock", "a") as held:  # a checkpoint there now: the same refusal
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main(["train", "copy-first-input", *TINY, "--steps", "4", "--out", str(out)]) == 2
        assert "another run is writing there" in capsys.readouterr().err


def test_an_out_that_cannot_be_written_fails_before_the_first_step(tmp_path, capsys):
    out = tmp_path / "run"
    (out / ".lock").mkdir(parents=True)  # a stand-in for a read-only folder (root writes all)
    assert main(["train", "copy-first-input", *TINY, "--steps", "2", "--out", str(out)]) == 2
    assert "--out " + str(out) + ": cannot write there" in capsys.readouterr().err
    assert not (out / "checkpoint.pt").exists()


@pytest.mark.parametrize("resume", [[], ["--resume"]])
def test_an_out_with_a_finished_run_s_results_but_no_checkpoint_is_refused(tmp_path, capsys,
                                                                            resume):
    out = tmp_path / "run"
    assert main(["train", "copy-first-input", *TINY, "--steps", "2", "--out", str(out)]) == 0
    (out / "checkpoint.pt").unlink()
    results = (out / "metrics.json").read_text()
    assert main(["train", "copy-first-input", *TINY, "--steps", "3", "--seed", "1", "--out",
                 str(out), *resume]) == 2
    assert "already holds a run's results (metrics.json" in capsys.readouterr().err
    assert (out / "metrics.json").read_text() == results


@pytest.mark.parametrize("command", ["resume", "eval", "init-from"])
def test_a_checkpoint_of_something_else_is_named_as_such(tmp_path, capsys, command):
    out = tmp_path / "run"
    out.mkdir()
    torch.save({"weights": torch.zeros(2)}, out / "checkpoint.pt")
    args = {"resume": ["train", "copy-first-input", *TINY, "--out", str(out), "--resume"],
            "eval": ["eval", str(out)],
            "init-from": ["train", "copy-first-input", *TINY, "--out", str(tmp_path / "new"),
                          "--init-from", str(out)]}[command]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "not a checkpoint of a `bistable train` run" in err and "weights" in err


@pytest.mark.parametrize("command", ["resume", "eval", "init-from"])
def test_a_checkpoint_of_a_newer_version_or_without_its_state_is_one_line(
        tmp_path, capsys, command):
    out = tmp_path / "run"
    assert main(["train", "copy-first-input", *TINY, "--steps", "2", "--out", str(out)]) == 0
    saved = load_checkpoint(out / "checkpoint.pt")
    args = {"resume": ["train", "copy-first-input", *TINY, "--steps", "4", "--out", str(out),
                       "--resume"],
            "eval": ["eval", str(out)],
            "init-from": ["train", "copy-first-input", *TINY, "--out", str(tmp_path / "new"),
                          "--init-from", str(out)]}[command]
    torch.save({**saved, "config": {**saved["config"], "newer_setting": 1}},
               out / "checkpoint.pt")
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "made with settings this bistable does not know (newer_setting)" in err
    assert err.count("\n") == 1
    if command == "resume":
        torch.save({k: v for k, v in saved.items() if k != "rng"}, out / "checkpoint.pt")
        assert main(args) == 2
        assert "has no rng state to go on from" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["renamed", "reshaped", "not-a-dict", "format", "rng",
                                    "moment"])
@pytest.mark.parametrize("command", ["resume", "eval"])
def test_a_checkpoint_whose_state_does_not_fit_is_one_line(tmp_path, capsys, command, damage):
    """Weights of another version's model (a renamed or reshaped parameter), a later format
    number, a random-number state of another kind, an optimiser moment of another shape: one
    line, exit 2, not a traceback."""
    out = tmp_path / "run"
    assert main(["train", "copy-first-input", *TINY, "--steps", "2", "--out", str(out)]) == 0
    saved = load_checkpoint(out / "checkpoint.pt")
    weights = dict(saved["model"])
    name = next(iter(weights))
    if damage == "renamed":
        weights["x" + name] = weights.pop(name)
    elif damage == "reshaped":
        weights[name] = torch.zeros(3, 1, 7)
    optimizer = saved["optimizer"]
    if damage == "moment":
        first = dict(optimizer["state"][0], exp_avg=torch.zeros(3, 1, 7))
        optimizer = {**optimizer, "state": {**optimizer["state"], 0: first}}
    saved = {**saved, "model": None if damage == "not-a-dict" else weights, "optimizer": optimizer,
             "version": 2 if damage == "format" else saved["version"],
             "rng": {"python": saved["rng"]["python"]} if damage == "rng" else saved["rng"]}
    torch.save(saved, out / "checkpoint.pt")
    args = {"resume": ["train", "copy-first-input", *TINY, "--steps", "4", "--out", str(out),
                       "--resume"], "eval": ["eval", str(out)]}[command]
    capsys.readouterr()
    expected = {"renamed": f"weights do not fit the run's settings (Missing key(s) in "
                           f"state_dict: \"{name}\"", "reshaped": f"size mismatch for {name}",
                "not-a-dict": "weights do not fit", "format": "a checkpoint of format 2",
                "rng": "random-number state is not one bistable saved",
                "moment": "its optimizer state does not fit the run's settings (size mismatch for "
                          "state 'exp_avg'"}[damage]
    code = main(args)
    err = capsys.readouterr().err
    if damage in ("rng", "moment") and command == "eval":  # eval reads neither
        assert code == 0
        return
    assert code == 2 and expected in err and err.count("\n") == 1, err
    assert str(out / "checkpoint.pt") in err


def test_a_checkpoint_path_that_is_a_directory_is_refused_before_training(tmp_path, capsys):
    out = tmp_path / "run"
    (out / "checkpoint.pt").mkdir(parents=True)
    assert main(["train", "copy-first-input", *TINY, "--steps", "2", "--out", str(out),
                 "--resume"]) == 2
    err = capsys.readouterr().err
    assert "checkpoint.pt: expected a checkpoint file, got a directory" in err
    assert not (out / "metrics.json").exists()


def test_an_empty_out_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # where an empty --out would write
    assert main(["train", "copy-first-input", *TINY, "--steps", "2", "--out", ""]) == 2
    assert "--out: expected a directory for the run, got ''" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_sizes_whose_bytes_overflow_are_out_of_memory_in_one_line(tmp_path, capsys):
    """Each below the largest size, together more bytes than int64 counts: torch's own error."""
    big = str(2**31 - 1)
    assert main(["train", "copy-first-input", "--model", "bmru", "--seq-len", big,
                 "--batch-size", big, "--quiet", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bistable: error: out of memory (Storage size calculation overflowed")
    assert err.count("\n") == 1


def test_out_of_memory_points_to_the_command_s_own_sizes(tmp_path, capsys):
    """``models`` has no --hidden: its hint names its own flags (it named train's)."""
    assert main(["models", "--input-size", str(2**62)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bistable: error: out of memory (") and err.count("\n") == 1
    assert err.endswith("give smaller sizes (--input-size, --output-size)\n"), err


def test_system_errors_and_warnings_are_one_line(monkeypatch, capsys):
    """A full disk or a read-only file system (any OSError) is one line, exit 2; a warning
    prints as one line too, without the source line that raised it."""
    shown = []

    def full(args):  # (pytest records warnings itself: the format is checked as Python calls it)
        shown.append(warnings.formatwarning("something to know", UserWarning, "loop.py", 9))
        raise OSError(28, "No space left on device", "runs/x/checkpoint.pt")

    monkeypatch.setattr(commands, "_train", full)
    assert main(["train", "copy-first-input", "--model", "bmru", "--out", "x"]) == 2
    assert capsys.readouterr().err == (
        "bistable: error: [Errno 28] No space left on device: 'runs/x/checkpoint.pt'\n")
    assert shown == ["bistable: warning: something to know\n"]
    assert "loop.py:9" in warnings.formatwarning("x", UserWarning, "loop.py", 9)  # restored


def test_sizes_beyond_the_memory_are_one_line_exit_2(monkeypatch, capsys):
    def allocate(args):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] data. DefaultCPUAllocator: "
                           "can't allocate memory: you tried to allocate 400000000000 bytes.\n"
                           "frame #0: ...")

    monkeypatch.setattr(commands, "_train", allocate)
    assert main(["train", "copy-first-input", "--model", "bmru", "--out", "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bistable: error: out of memory (") and err.count("\n") == 1
    assert err.endswith("give smaller sizes (--hidden, --batch-size, --seq-len, --eval-seq-len)\n")

    def other(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(commands, "_train", other)
    with pytest.raises(RuntimeError, match="a bug"):  # any other RuntimeError is a bug to see whole
        main(["train", "copy-first-input", "--model", "bmru", "--out", "x"])


def test_the_closing_line_names_plots_only_when_they_were_drawn(tmp_path, capsys, monkeypatch):
    import bistable.plot

    args = ["train", "copy-first-input", *TINY, "--steps", "2"]
    assert main([*args, "--out", str(tmp_path / "drawn")]) == 0
    assert capsys.readouterr().out.strip().endswith(f"metrics.json, checkpoint and plots in "
                                                    f"{tmp_path / 'drawn'}")

    def missing():
        raise ImportError("plots need matplotlib")

    monkeypatch.setattr(bistable.plot, "_pyplot", missing)
    with pytest.warns(UserWarning, match="plots skipped"):
        assert main([*args, "--out", str(tmp_path / "bare")]) == 0
    assert capsys.readouterr().out.strip().endswith(
        f"metrics.json, checkpoint in {tmp_path / 'bare'}")


def test_resume_without_a_checkpoint_warns_and_starts_from_step_0(tmp_path):
    """A warning (``bistable: warning: ...`` on the command line), as docs/training.md says."""
    out = tmp_path / "new"
    with pytest.warns(UserWarning, match="^--resume: no checkpoint in .*; starting from step 0$"):
        assert main(["train", "copy-first-input", *TINY, "--steps", "2", "--out", str(out),
                     "--resume"]) == 0
    assert json.loads((out / "metrics.json").read_text())["config"]["steps"] == 2
