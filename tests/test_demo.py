"""``bistable demo``, the quick start's main job: its wiring, at a few steps (the full run is the
README's first command)."""

import functools
import json

import pytest

from bistable import demo
from bistable.cli import main
from bistable.train.loop import TrainConfig, train


def test_demo_trains_the_hybrid_and_prints_its_horizon(tmp_path, monkeypatch, capsys):
    short = functools.partial(TrainConfig, steps=4, batch_size=8, eval_samples=16, quiet=True)
    monkeypatch.setattr(demo, "TrainConfig", short)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    printed, err = capsys.readouterr()
    assert "--resume" not in err
    assert "hybrid (LRU + BMRU) trained at T = 50" in printed
    assert [line.split()[1] for line in printed.splitlines() if line.startswith("test")] == [
        "50", "500", "5000"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["task"], metrics["model"], metrics["config"]["seq_len"]) == (
        "copy-first-input", "hybrid", 50)
    assert main(["demo", "--out", str(out)]) == 0  # again: the finished demo's table, no training
    assert capsys.readouterr().out == printed
    assert json.loads((out / "metrics.json").read_text())["history"] == metrics["history"]


def test_demo_over_another_run_says_so_in_its_own_words(tmp_path, monkeypatch, capsys):
    short = functools.partial(TrainConfig, steps=2, batch_size=8, eval_samples=8, quiet=True)
    monkeypatch.setattr(demo, "TrainConfig", short)
    out = str(tmp_path / "demo")
    assert main(["demo", "--out", out]) == 0
    capsys.readouterr()
    assert main(["demo", "--out", out, "--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert "holds another run than this demo (seed: 0 -> 1)" in err
    assert "--resume" not in err


def test_demo_trains_with_its_seed_into_an_empty_folder(tmp_path, monkeypatch, capsys):
    short = functools.partial(TrainConfig, steps=2, batch_size=8, eval_samples=8, quiet=True)
    monkeypatch.setattr(demo, "TrainConfig", short)
    out = tmp_path / "demo"
    out.mkdir()                                             # made beforehand: nothing to continue
    assert main(["demo", "--out", str(out), "--seed", "3"]) == 0
    assert json.loads((out / "metrics.json").read_text())["config"]["seed"] == 3


def test_demo_over_another_model_s_run_says_so(tmp_path, monkeypatch, capsys):
    out = tmp_path / "demo"
    train(TrainConfig(task="copy-first-input", model="bmru", seq_len=50, hidden=8, layers=1,
                      steps=2, batch_size=8, eval_samples=8, out=str(out), quiet=True))
    capsys.readouterr()
    assert main(["demo", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "holds another run than this demo (model: 'bmru' -> 'hybrid'" in err
    assert "--resume" not in err


def test_demo_over_the_same_model_at_another_width_says_so(tmp_path, capsys):
    """A hybrid copy-first-input run of other sizes is not this demo either: the message names
    the sizes, not a --resume the user never typed."""
    out = tmp_path / "demo"
    train(TrainConfig(task="copy-first-input", model="hybrid", seq_len=50, hidden=8,
                      steps=2, batch_size=8, eval_samples=8, out=str(out), quiet=True))
    capsys.readouterr()
    assert main(["demo", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "holds another run than this demo (hidden: 8 -> " in err and "--resume" not in err


def test_demo_without_matplotlib_names_no_plots(tmp_path, monkeypatch, capsys):
    import bistable.plot
    from bistable.extras import MissingExtra

    def missing():
        raise MissingExtra("plots need matplotlib")

    short = functools.partial(TrainConfig, steps=2, batch_size=8, eval_samples=16, quiet=True)
    monkeypatch.setattr(demo, "TrainConfig", short)
    monkeypatch.setattr(bistable.plot, "_pyplot", missing)
    with pytest.warns(UserWarning, match="plots skipped"):
        assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    assert capsys.readouterr().out.strip().endswith(f"metrics.json, checkpoint in "
                                                    f"{tmp_path / 'demo'}")
    assert not list((tmp_path / "demo").glob("*.png"))
