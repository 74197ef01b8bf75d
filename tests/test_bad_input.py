"""Bad input across the library API, the CLI and the data readers: one table, each row a call that
must fail with a specific error type (API, readers) or exit code 2 (CLI) and a message (regex)
naming what was expected. CLI rows also require a single ``bistable: error:`` line on stderr and
no traceback."""

import re
import subprocess
import sys

import numpy as np
import pytest
import torch

import bistable as bs
from bistable.cli import main
from bistable.data.idx import read_idx
from bistable.data.nmnist import EVENT_DTYPE, read_events, write_events
from bistable.nn.readout import PopulationReadout
from bistable.nn.spiking import SpikingNetwork

F, H, B, T = 3, 4, 2, 5
UNITS = ("BMRU", "CMRU", "LRU", "BRC", "NBRC", "MinGRU", "GRU", "LSTM", "SRC")
IDX_OK = b"\0\0\x08\x02" + (2).to_bytes(4, "big") + (3).to_bytes(4, "big") + bytes(6)


def _bad_state(unit: str, batch: int):
    """A state with one wrong-shaped part: the last tuple entry for LSTM (h, c) and SRC
    (i, h, h_s), the whole tensor for the others."""
    ok, bad = torch.zeros(batch, H), torch.zeros(batch, H + 1)
    return {"LSTM": (ok, bad), "SRC": (ok, ok, bad)}.get(unit, bad)


_STATE_NAME = {"LSTM": r"state\[1\] \(c\)", "SRC": r"state\[2\] \(h_s\)"}


def _unit_cases(unit: str):
    def call(method, *args):
        return lambda tmp: getattr(getattr(bs, unit)(F, H), method)(*args)

    nan = float("nan")
    state = _STATE_NAME.get(unit, "state")
    rows = [
        ("forward", "rank2", (torch.randn(B, F),), r"x: expected shape \(B, T, 3\).*got \(2, 3\)"),
        ("forward", "features", (torch.randn(B, T, F + 1),),
         r"x: expected shape \(B, T, 3\).*got \(2, 5, 4\)"),
        ("forward", "int", (torch.ones(B, T, F, dtype=torch.int64),),
         r"x: expected a floating dtype.*got torch\.int64"),
        ("forward", "nan", (torch.full((B, T, F), nan),), r"x: expected finite values"),
        ("forward", "state", (torch.randn(B, T, F), _bad_state(unit, B)),
         state + r": expected shape \(2, 4\), got \(2, 5\)"),
        ("step", "rank3", (torch.randn(B, T, F),),
         r"x_t: expected shape \(B, 3\), got \(2, 5, 3\)"),
        ("step", "features", (torch.randn(B, F + 1),),
         r"x_t: expected shape \(B, 3\), got \(2, 4\)"),
        ("step", "int", (torch.ones(B, F, dtype=torch.int32),),
         r"x_t: expected a floating dtype.*got torch\.int32"),
        ("step", "nan", (torch.full((B, F), nan),), r"x_t: expected finite values"),
        ("step", "state", (torch.randn(B, F), _bad_state(unit, B)),
         state + r": expected shape \(2, 4\), got \(2, 5\)"),
    ]
    return [pytest.param(call(method, *args), ValueError, match, id=f"{unit}.{method}-{what}")
            for method, what, args, match in rows]


def _build(unit: str, *args, **kwargs):
    return lambda tmp: getattr(bs, unit)(*args, **kwargs)


def _constructor_cases(unit: str):
    rows = [("hidden_size", (F, 0), r"hidden_size: expected a positive int, got 0"),
            ("input_size", (2.5, H), r"input_size: expected a positive int, got 2\.5"),
            ("bool", (F, True), r"hidden_size: expected a positive int, got True")]
    return [pytest.param(_build(unit, *args), ValueError, match, id=f"{unit}-{what}")
            for what, args, match in rows]


def _scan(*args, **kwargs):
    return lambda tmp: bs.linear_scan(*args, **kwargs)


def _file(data: bytes, reader):
    def call(tmp):
        path = tmp / "input.bin"
        path.write_bytes(data)
        return reader(path)
    return call


def _write(**bad):
    def call(tmp):
        events = np.zeros(2, EVENT_DTYPE)
        for key, value in bad.items():
            events[key][1] = value
        write_events(tmp / "out.bin", events)
    return call


def cli(*argv):
    return list(argv)


OUT = ("--out", "{tmp}/run")
COPY = ("train", "copy-first-input", "--model", "bmru", *OUT)

A, BB = torch.rand(B, T, F), torch.randn(B, T, F)
CASES = [
    *[case for unit in UNITS for case in _unit_cases(unit)],
    pytest.param(_scan(A[0], BB[0]), ValueError, r"a: expected shape \(B, T, D\), got \(5, 3\)",
                 id="scan-rank2"),
    pytest.param(_scan(torch.rand(B, T - 1, F), BB), ValueError,
                 r"a: expected shape \(2, 5, 3\) or \(1, 5, 3\) \(b is \(2, 5, 3\)\), "
                 r"got \(2, 4, 3\)",
                 id="scan-a-shape"),
    pytest.param(_scan(A, BB.long()), ValueError, r"b: expected a floating or complex dtype",
                 id="scan-int"),
    pytest.param(_scan(A, BB, torch.zeros(B, F + 1)), ValueError,
                 r"h0: expected shape \(2, 3\), got \(2, 4\)", id="scan-h0-shape"),
    pytest.param(_scan(A[:, :0], BB[:, :0]), ValueError, r"b: expected at least one time step",
                 id="scan-empty-time"),
    pytest.param(_scan(A, BB, backend="nosuch"), ValueError,
                 r"backend: expected one of .*'reference'.*got 'nosuch'", id="scan-backend"),
    pytest.param(_scan([1.0], BB), ValueError, r"a: expected a torch\.Tensor, got list",
                 id="scan-not-tensor"),
    pytest.param(lambda tmp: bs.build_model("nosuch", 1, 1), ValueError,
                 r"model: expected one of bmru, .*got 'nosuch'", id="build_model-unknown"),
    pytest.param(lambda tmp: bs.build_model("bmru", 1, 1, hidden=0), ValueError,
                 r"hidden: expected a positive int, got 0", id="build_model-hidden0"),
    *[case for unit in UNITS for case in _constructor_cases(unit)],
    pytest.param(_build("LRU", F, H, state_size=0), ValueError,
                 r"state_size: expected a positive int, got 0", id="LRU-state_size0"),
    pytest.param(_build("CMRU", F, H, epsilon=1.5), ValueError,
                 r"epsilon: expected a number in \[0, 1\], got 1\.5", id="CMRU-epsilon"),
    pytest.param(_build("SRC", F, H, rho=0.0), ValueError,
                 r"rho: expected a finite number > 0, got 0\.0", id="SRC-rho0"),
    pytest.param(_build("SRC", F, H, alpha=1.5), ValueError,
                 r"alpha: expected a number in \[0, 1\], got 1\.5", id="SRC-alpha"),
    pytest.param(_build("SRC", F, H, z_dep=-0.1), ValueError,
                 r"z_dep: expected a number in \[0, 1\], got -0\.1", id="SRC-z_dep"),
    pytest.param(_build("SRC", F, H, r=float("nan")), ValueError,
                 r"r: expected a finite number, got nan", id="SRC-r-nan"),
    pytest.param(_build("SRC", F, H, train_noise=-0.1), ValueError,
                 r"train_noise: expected a relative σ >= 0, got -0\.1", id="SRC-train_noise"),
    pytest.param(_build("SRC", F, H, bias=-3.0, learn_bias=True), ValueError,
                 r"bias: expected at most bias_max = -4\.0 when learned .*got -3\.0",
                 id="SRC-learned-bias-above-cap"),
    pytest.param(_build("LIF", F, H, beta=1.5), ValueError,
                 r"beta: expected a decay in \[0, 1\], got 1\.5", id="LIF-beta"),
    pytest.param(lambda tmp: bs.SRC(F, H).perturb_(float("nan")), ValueError,
                 r"sigma: expected a relative σ >= 0, got nan", id="SRC.perturb_-nan"),
    pytest.param(lambda tmp: SpikingNetwork("src", F, H, 1, per_class=0), ValueError,
                 r"per_class: expected a positive int, got 0", id="SpikingNetwork-per_class0"),
    pytest.param(lambda tmp: SpikingNetwork("src", F, H, 1, alpha_ro=1.5), ValueError,
                 r"alpha_ro: expected a leak in \[0, 1\], got 1\.5", id="SpikingNetwork-alpha_ro"),
    pytest.param(lambda tmp: PopulationReadout(10, 10, alpha=-0.5), ValueError,
                 r"alpha: expected a leak in \[0, 1\], got -0\.5", id="PopulationReadout-alpha"),
    # ---- the CLI
    pytest.param(cli("train", "nosuchtask", "--model", "bmru", *OUT), 2,
                 r"unknown task 'nosuchtask'; choose one of: copy-first-input, ", id="cli-task"),
    pytest.param(cli("train", "copy-first-input", "--model", "nosuch", *OUT), 2,
                 r"unknown model 'nosuch'; choose one of: bmru, ", id="cli-model"),
    pytest.param(cli(*COPY, "--steps", "0"), 2, r"--steps must be >= 1, got 0", id="cli-steps0"),
    pytest.param(cli(*COPY, "--batch-size", "-1"), 2, r"--batch-size must be >= 1, got -1",
                 id="cli-batch-negative"),
    pytest.param(cli(*COPY, "--hidden", "0"), 2, r"--hidden must be >= 1, got 0", id="cli-hidden0"),
    pytest.param(cli(*COPY, "--layers", "0"), 2, r"--layers must be >= 1, got 0", id="cli-layers0"),
    pytest.param(cli(*COPY, "--params", "0"), 2, r"--params must be >= 1, got 0", id="cli-params0"),
    *[pytest.param(cli(*COPY, flag, "0"), 2, flag + r" must be >= 1, got 0", id=f"cli{flag}0")
      for flag in ("--eval-every", "--checkpoint-every", "--log-every")],
    pytest.param(cli(*COPY, "--warmup", "-2"), 2, r"--warmup must be >= 0, got -2",
                 id="cli-warmup-negative"),
    pytest.param(cli(*COPY, "--seq-len", "0"), 2, r"sequence length must be at least 1, got 0",
                 id="cli-seq-len0"),
    pytest.param(cli(*COPY, "--epochs", "1"), 2, r"--epochs needs a data-set task.*use --steps",
                 id="cli-epochs-synthetic"),
    pytest.param(cli("train", "smnist", "--model", "bmru", *OUT), 2,
                 r"no train-images-idx3-ubyte.*bistable data fetch mnist", id="cli-smnist-no-data"),
    pytest.param(cli("train", "smnist", "--model", "bmru", "--data-dir", "{tmp}/nonexistent", *OUT),
                 2, r"no train-images-idx3-ubyte.* in \S*nonexistent", id="cli-smnist-bad-dir"),
    pytest.param(cli("train", "smnist", "--model", "lru", "--steps", "1", *OUT), 2,  # no bar first
                 r"no train-images-idx3-ubyte", id="cli-smnist-no-data-fixed-steps"),
    pytest.param(cli("train", "nmnist", "--model", "bmru", *OUT), 2,  # $BISTABLE_DATA_DIR/nmnist
                 r"no N-MNIST folder \S*no-data/nmnist/Train .*bistable data fetch nmnist",
                 id="cli-nmnist-no-dir"),
    pytest.param(cli("train", "nmnist", "--model", "bmru", "--data-dir", "{tmp}/nonexistent", *OUT),
                 2, r"no N-MNIST folder \S*nonexistent/Train", id="cli-nmnist-bad-dir"),
    pytest.param(cli(*COPY, "--pad", "3"), 2, r"--pad does not apply to task copy-first-input",
                 id="cli-pad-synthetic"),
    pytest.param(cli("train", "smnist", "--model", "bmru", "--gap", "3", *OUT), 2,
                 r"--gap does not apply to task smnist", id="cli-gap-smnist"),
    pytest.param(cli(*COPY, "--data-dir", "{tmp}"), 2, r"--data-dir does not apply to task copy",
                 id="cli-data-dir-synthetic"),
    pytest.param(cli("bench", "nosuch"), 2, r"no benchmark 'nosuch' in .*\(have: ",
                 id="cli-bench-unknown"),
    pytest.param(cli("bench", "common"), 2, r"no benchmark 'common' in .*\(have: ",
                 id="cli-bench-helper-module"),
    pytest.param(cli("bench"), 2, r"bench: expected a benchmark name, one of: .*scan",
                 id="cli-bench-no-name"),
    pytest.param(cli("data", "fetch", "nosuch"), 2, r"'nosuch'.*'mnist', 'fashion-mnist', 'nmnist'",
                 id="cli-fetch-unknown"),
    pytest.param(cli(*COPY, "--option", "nosuch=1", "--steps", "1"), 2, r"nosuch",
                 id="cli-option-unknown"),
    pytest.param(cli(*COPY, "--lr", "-1"), 2, r"--lr", id="cli-lr-negative"),
    pytest.param(cli(*COPY, "--min-lr", "nan"), 2, r"--min-lr must be finite",
                 id="cli-min-lr-nan"),
    pytest.param(cli("train", "copy-first-input", "--model", "hybrid", "--option", "nosuch=1",
                     *OUT), 2, r"options: model 'hybrid' takes no option 'nosuch'",
                 id="cli-option-unknown-hybrid"),
    pytest.param(lambda tmp: bs.build_model("src", 1, 10, nosuch=1), ValueError,
                 r"options: model 'src' takes no option 'nosuch'", id="build_model-src-option"),
    pytest.param(lambda tmp: bs.build_model("src", 3, 2, n_classes=5), ValueError,
                 r"options: model 'src' sets 'n_classes' itself \(from input_size, output_size",
                 id="build_model-src-n-classes"),
    pytest.param(lambda tmp: bs.width_for_budget("bmru", 10**5, 1, 1, hidden=5), ValueError,
                 r"hidden: expected none, since width_for_budget finds it; got 5",
                 id="width_for_budget-hidden"),
    pytest.param(cli(*COPY[:-2], "--out", "/dev/null/run"), 2,  # a path under a file
                 r"--out /dev/null/run: cannot create the directory", id="cli-out-uncreatable"),
    # ---- the data readers
    pytest.param(_file(IDX_OK[:-2], read_idx), ValueError,
                 r"input\.bin: 4 data bytes, but dims \(2, 3\) of uint8 need 6",
                 id="idx-truncated"),
    pytest.param(_file(IDX_OK[:7], read_idx), ValueError,
                 r"input\.bin: truncated IDX header \(7 bytes, need 12\)", id="idx-short-header"),
    pytest.param(_file(b"\1\2" + IDX_OK[2:], read_idx), ValueError,
                 r"input\.bin: not an IDX file \(magic 01020802; expected 00 00", id="idx-magic"),
    pytest.param(_file(b"\x1f\x8bgarbage", read_idx), ValueError,
                 r"input\.bin: corrupt gzip data", id="idx-bad-gzip"),
    pytest.param(lambda tmp: read_idx(tmp / "missing"), FileNotFoundError, r"missing",
                 id="idx-no-file"),
    pytest.param(_file(bytes(7), read_events), ValueError,
                 r"input\.bin: truncated N-MNIST file \(7 bytes is not a multiple of 5",
                 id="nmnist-truncated"),
    pytest.param(_file(bytes([0, 0, 0, 0, 1, 34, 5, 0, 0, 1]), read_events), ValueError,
                 r"event 1 has coordinate \(x=34, y=5\) outside the 34x34 sensor \(0\.\.33\)",
                 id="nmnist-x34"),
    pytest.param(_file(bytes([3, 200, 0, 0, 1]), read_events), ValueError,
                 r"event 0 has coordinate \(x=3, y=200\) outside", id="nmnist-y200"),
    pytest.param(_write(x=34), ValueError, r"events: field x must lie in 0\.\.33, got 0\.\.34",
                 id="write-x34"),
    pytest.param(_write(y=-1), ValueError, r"events: field y must lie in 0\.\.33, got -1\.\.0",
                 id="write-y-negative"),
    pytest.param(_write(t=1 << 23), ValueError, r"events: field t must lie in 0\.\.8388607",
                 id="write-t-overflow"),
    pytest.param(_write(p=2), ValueError, r"events: field p must lie in 0\.\.1, got 0\.\.2",
                 id="write-p2"),
    pytest.param(lambda tmp: write_events(tmp / "out.bin", np.zeros((3, 4), np.int64)),
                 ValueError, r"events: expected a structured array with fields x, y, t, p",
                 id="write-plain-array"),
]


def _run_cli(argv, tmp_path, capsys) -> tuple[int, str]:
    try:
        code = main([arg.format(tmp=tmp_path) for arg in argv])
    except SystemExit as exit_:  # argparse's own errors exit instead of returning
        code = exit_.code
    return code, capsys.readouterr().err


def _assert_one_line_error(code, err: str, match: str, expect: int = 2) -> None:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert code == expect, err
    assert len(lines) == 1 and lines[0].startswith("bistable: error: "), err
    assert re.search(match, lines[0]), err


@pytest.mark.parametrize(("call", "expect", "match"), CASES)
def test_bad_input_fails_clearly(call, expect, match, tmp_path, capsys, monkeypatch):
    if isinstance(call, list):  # a CLI row: exit code 2 and one error line
        monkeypatch.setenv("BISTABLE_DATA_DIR", str(tmp_path / "no-data"))
        _assert_one_line_error(*_run_cli(call, tmp_path, capsys), match, expect)
    else:
        with pytest.raises(expect, match=match):
            call(tmp_path)


def test_cli_subprocess_unknown_task_exits_2_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "bistable", "train", "nosuchtask", "--model", "bmru",
         "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    _assert_one_line_error(proc.returncode, proc.stderr, r"unknown task 'nosuchtask'")
    assert not (tmp_path / "run").exists()


def test_cli_permission_error_is_one_line(tmp_path, capsys, monkeypatch):
    """A folder the user cannot write (a shared read-only copy) is the user's to fix: one line
    naming the path, not a traceback."""
    from bistable.data import nmnist_sim

    def refuse(out, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(out))

    monkeypatch.setattr(nmnist_sim, "write_dataset", refuse)
    code, err = _run_cli(["data", "simulate-nmnist", "--out", "{tmp}/ro/sim"], tmp_path, capsys)
    _assert_one_line_error(code, err, r"Permission denied: '\S*ro/sim'")


def test_cli_missing_extra_is_one_line(tmp_path, capsys, monkeypatch):
    """The LIF peer without snntorch: the pip install to run, not a traceback."""
    from bistable.extras import MissingExtra
    from bistable.units import lif

    def missing():
        raise MissingExtra("the LIF peer needs snntorch: pip install 'bistable[peers]'")

    monkeypatch.setattr(lif, "_snntorch", missing)
    code, err = _run_cli(["train", "copy-first-input", "--model", "lif", "--steps", "1", *OUT],
                         tmp_path, capsys)
    _assert_one_line_error(code, err, r"needs snntorch: pip install 'bistable\[peers\]'")


def test_cli_bench_from_an_installed_copy_says_it_needs_the_checkout(tmp_path, capsys,
                                                                       monkeypatch):
    from bistable.train import provenance

    monkeypatch.setattr(provenance, "source_checkout", lambda: None)
    _assert_one_line_error(*_run_cli(["bench", "scan"], tmp_path, capsys),
                           r"benchmarks ship with the source checkout.*installed copy")
