"""The summaries the benchmark scripts write into results/: mean ± std over seeds, and the
denoising probe's writes and last outputs; and that a task's defaults are the benchmark recipe the
docs say they are."""

import copy
import dataclasses
import json
import re
import statistics
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import (  # noqa: E402
    brc_gates,
    denoising,
    denoising_probe,
    dispatch,
    memory_tasks,
    spiking_runs,
    src,
)
from benchmarks.common import evaluations, mean_std  # noqa: E402
from benchmarks.denoising import seed_rows  # noqa: E402
from benchmarks.denoising_probe import length_rows  # noqa: E402
from benchmarks.pad_memory import seed_table  # noqa: E402

from bistable.cli import build_parser  # noqa: E402
from bistable.data.tasks import build_task  # noqa: E402
from bistable.nn import Network  # noqa: E402
from bistable.train.checkpoint import claimed, save_checkpoint  # noqa: E402
from bistable.train.commands import train_config  # noqa: E402
from bistable.train.loop import TrainConfig, read_run, resolve, run_from, train  # noqa: E402
from bistable.train.metrics import evaluate  # noqa: E402


def test_the_plain_lif_loop_computes_what_snntorch_computes():
    """The throughput table's `lif (plain loop)` row times the same network as `lif`: spikes,
    readout and every gradient agree (float64, a few steps of real spiking; the gradients to
    1e-8, snnTorch's surrogate computing in float32)."""
    pytest.importorskip("snntorch")
    from benchmarks.src import plain_lif

    from bistable.nn.spiking import SpikingNetwork

    torch.manual_seed(0)
    net = SpikingNetwork("lif", 7, 9, 2, n_classes=3).double()
    plain = plain_lif(copy.deepcopy(net))
    x = (torch.rand(4, 30, 7, dtype=torch.float64) < 0.4).double() * 2
    (R, _, spikes), (R2, _, spikes2) = net.run(x), plain.run(x)
    assert sum(float(s.detach().sum()) for s in spikes) > 0  # they fire: resets exercised
    for a, b in zip(spikes, spikes2, strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0)
    torch.testing.assert_close(R2, R, rtol=0, atol=0)
    R[:, -1].square().sum().backward()
    R2[:, -1].square().sum().backward()
    for (name, p), q in zip(net.named_parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-7, msg=name)


def test_mean_std_is_the_sample_std_or_the_single_value():
    assert mean_std([0.5]) == "0.5000"
    assert mean_std([0.5, 0.7], ".2f") == "0.60 ± 0.14"  # sample std: 0.1414
    assert mean_std([1.0, 2.0, 3.0], ".1f") == "2.0 ± 1.0"


def _run(name, accuracy, pads=None):
    d = {"run": name, "eval": [{"accuracy": accuracy}]}
    if pads:
        d["beyond_the_pad"] = dict(zip((0, 1000, 10_000), pads))
    return d


def test_seed_table_groups_the_seeds_of_one_run_only():
    rows = seed_table([
        _run("hybrid-h64", 0.6, (0.8, 0.6, 0.5)), _run("hybrid-seed1-h64", 0.5, (0.7, 0.5, 0.4)),
        _run("hybrid-seed2-h64", 0.4, (0.6, 0.4, 0.3)), _run("lru-h64", 0.45, (0.8, 0.5, 0.1)),
        _run("nopad", 0.9), _run("nopad-seed1", 0.8),
    ])
    body = [r for r in rows if r.startswith("| ") and not r.startswith("| run")]
    assert body == ["| hybrid-h64 | 3 | 0.5000 ± 0.1000 | 0.700 ± 0.100 | 0.500 ± 0.100 | "
                    "0.400 ± 0.100 |",
                    "| nopad | 2 | 0.8500 ± 0.0707 |  |  |  |"]


@pytest.mark.parametrize("data", [[], [_run("a", 0.5), _run("b-seed1", 0.6)]])
def test_seed_table_is_empty_without_a_run_of_two_seeds(data):
    assert seed_table(data) == []


def _denoising(name, mse_300, mse_3000):
    return {"name": name, "eval": [{"seq_len": 300, "mse": mse_300},
                                   {"seq_len": 3000, "mse": mse_3000}]}


def test_denoising_seed_rows_group_the_seeds_of_one_run_only():
    rows = seed_rows([
        _denoising("hybrid-3000", 0.03, 1.0), _denoising("gru-3000", 1.0, 0.9),
        _denoising("hybrid-3000-seed1", 0.05, 1.2), _denoising("hybrid-650", 0.4, 1.1),
        _denoising("hybrid-3000-seed2", 0.04, 1.1),
    ])
    body = [r for r in rows if r.startswith("| ") and not r.startswith("| run")]
    assert body == ["| hybrid-3000 | 3 | 0.040 ± 0.010 | 1.100 ± 0.100 | 3 | 0 |"]
    assert seed_rows([_denoising("a", 0.1, 0.2), _denoising("b-seed1", 0.1, 0.2)]) == []


def test_denoising_seed_rows_count_the_seeds_that_learn_and_those_at_chance():
    rows = seed_rows([_denoising("gru", 1.0, 1.0), _denoising("gru-seed1", 0.005, 0.2),
                      _denoising("gru-seed2", 0.5, 0.9), _denoising("gru-seed3", 0.2, 0.9)])
    assert rows[4] == "| gru | 4 | 0.426 ± 0.433 | 0.750 ± 0.370 | 1 | 2 |"


def _gated(unit, write: bool):
    """Drive ``unit`` to write at every step (``|c| = 10 > |β| = 0``) or never (``0 < 10``)."""
    H = unit.hidden_size
    with torch.no_grad():
        unit.linear.weight.zero_()
        unit.linear.bias[:H] = 10.0 if write else 0.0
        unit.linear.bias[H:] = 0.0 if write else 10.0


def test_denoising_probe_counts_writes_and_reads_the_last_output(monkeypatch):
    monkeypatch.setattr(denoising_probe, "STEP_BUDGET", 4 * 19)  # 4 sequences of T = 19
    torch.manual_seed(0)
    model = Network(2, 5, hidden=6, layers=2, mixer="cmru+lru+bmru",
                    unit_kwargs={"cmru": {"learn_init": False}, "bmru": {"learn_init": False}})
    for block, write in zip(model.blocks, (True, False)):
        _gated(block.units[0], write)  # block 0's counter counts every step, block 1's never
        _gated(block.units[2], not write)
    task, T = build_task("denoising", gap=7), 19
    rows = {r["unit"]: r for r in length_rows(task, model, T, samples=9, eval_samples=5)}
    assert list(rows) == ["0:cmru", "0:bmru", "1:cmru", "1:bmru"]  # the LRUs are not memory units
    for unit, writes, last in (("0:cmru", 1.0, T), ("0:bmru", 0.0, 0.0), ("1:cmru", 0.0, 0.0),
                               ("1:bmru", 1.0, 1.0)):
        r = rows[unit]
        assert r["sequences"] == 4
        assert (r["writes_marked"], r["writes_unmarked"], r["writes_gap"]) == (writes,) * 3
        assert r["output_mean"] == pytest.approx(last) and r["output_max"] == pytest.approx(last)
    (x, target), = task.eval_batches("test", T, 5, batch_size=5)  # the fixed evaluation set
    with torch.no_grad():
        mse = (model(x)[0][:, -1] - target).square().mean().item()
    assert rows["0:cmru"]["mse"] == pytest.approx(mse)


def test_denoising_probe_gives_a_run_without_memory_units_one_row_per_length():
    task, model = build_task("denoising", gap=7), Network(2, 5, hidden=6, layers=1, mixer="lru")
    rows = length_rows(task, model, 19, samples=3, eval_samples=3)
    assert [(r["seq_len"], r["unit"]) for r in rows] == [(19, "-")] and rows[0]["mse"] > 0


def _resolved(argv, tmp_path):
    """The resolved TrainConfig of ``bistable train`` arguments ``argv``, as the CLI builds it."""
    args = build_parser().parse_args(["train", *argv, "--out", str(tmp_path)])
    config = train_config(args)
    return resolve(config, build_task(config.task))


@pytest.mark.parametrize("threads", [1, 2])
def test_every_spiking_run_is_a_train_command_on_the_threads_asked(tmp_path, threads):
    """``benchmarks/spiking_runs.py --threads N``: each run's arguments parse as ``bistable
    train``'s, with N threads (how a run is trained, not what: reused runs are not refused)."""
    for name in spiking_runs.RUNS:
        args = build_parser().parse_args(
            ["train", *spiking_runs.arguments(name, threads), "--out", str(tmp_path)])
        assert args.threads == threads, name


def test_every_spiking_run_trains_what_its_name_says(tmp_path):
    """benchmarks/spiking_runs.py: a run's name (``fashion-mnist-h1024x2-…-4ep-bf16-…-seed1``)
    agrees with its arguments on the task, model, width, depth, epochs, device, precision and
    seed (unnamed: one layer, CPU, fp32, seed 0)."""
    for name in spiking_runs.RUNS:
        a = build_parser().parse_args(["train", *spiking_runs.arguments(name), "--out",
                                       str(tmp_path)])
        width = re.search(r"-h(\d+)(?:x(\d+))?-", name + "-")
        epochs = re.search(r"-(\d+)ep-", name + "-")
        seed = re.search(r"-seed(\d+)$", name)
        task = "nmnist" if name.startswith("nmnist") else "spiking-" + name.split("-h")[0]
        assert (a.task, a.model) == (task, "lif" if "-lif" in name else "src"), name
        assert (a.hidden, a.layers) == (int(width[1]), int(width[2] or 1)), name
        assert epochs is None or a.epochs == int(epochs[1]), name
        assert (a.device or "cpu") == ("cuda" if "-gpu" in name else "cpu"), name
        assert (a.precision or "fp32") == ("bf16" if "-bf16" in name else "fp32"), name
        assert (a.seed or 0) == (int(seed[1]) if seed else 0), name


def test_the_denoising_defaults_are_the_benchmarks_recipe(tmp_path):
    """docs/training.md: ``bistable train denoising --model hybrid`` trains what the benchmark's
    hybrid-leaky07-sharp2-6000 run trained (results/denoising_sharpness.md)."""
    default = _resolved(["denoising", "--model", "hybrid"], tmp_path)
    recipe = _resolved(["denoising", *denoising.RUNS["hybrid-leaky07-sharp2-6000"]], tmp_path)
    assert dataclasses.asdict(default) == dataclasses.asdict(recipe)


def test_every_denoising_hybrid_trains_the_units_its_name_says(tmp_path):
    """The task's defaults (ε = 0.7, sharpness 2) fill in what a run's ``unit_kwargs`` leave
    out; each hybrid run of benchmarks/denoising.py still trains its name's ε and sharpness."""
    epsilons = {"cmru": 1.0, "leaky05": 0.5, "leaky07": 0.7, "leaky09": 0.9}
    hybrids = [name for name in denoising.RUNS if name.startswith("hybrid-")]
    assert len(hybrids) >= 20
    for name in hybrids:
        units = _resolved(["denoising", *denoising.RUNS[name]], tmp_path).model_options[
            "unit_kwargs"]
        sharpness = 2 if "-sharp2-" in name else 1
        assert units["cmru"] == {"epsilon": epsilons[name.split("-")[1]],
                                 "sharpness": sharpness}, name
        assert units["bmru"] == {"sharpness": sharpness}, name


def test_denoising_probe_scores_a_keep_best_run_with_its_selected_or_last_weights(
        tmp_path, monkeypatch, script_validation):
    """``--last`` probes the weights a ``--keep-best`` run ended with, not the ones it kept."""
    script_validation([1.0, 2.0])  # validation losses at steps 4 and 8: step 4's weights are kept
    out = tmp_path / "runs" / "best"
    train(TrainConfig(task="denoising", gap=7, model="hybrid", hidden=6, layers=1, seq_len=19,
                      steps=8, batch_size=8, eval_samples=8, eval_every=4, checkpoint_every=4,
                      schedule="constant", keep_best=True, quiet=True, out=str(out)))
    written = []
    monkeypatch.setattr(denoising_probe, "ROOT", tmp_path)
    monkeypatch.setattr(denoising_probe, "RUNS_DIR", "runs")
    monkeypatch.setattr(denoising_probe, "write_results",
                        lambda name, text, rows: written.append(rows) or name)
    saved = read_run(out)
    assert saved["best"]["step"] == 4 and saved["step"] == 8
    mse = {}
    for flag, weights in (([], saved["best"]["model"]), (["--last"], saved["model"])):
        denoising_probe.main(["best", "--lengths", "19", *flag])
        task, model = run_from(saved)
        model.load_state_dict(weights)
        mse[tuple(flag)] = evaluate(model, task, "test", 19, n=256)["mse"]
        assert [r["mse"] for r in written[-1]] == pytest.approx([mse[tuple(flag)]] * 2)
    assert written[-1][0]["run"] == "best (last weights)"
    assert mse[()] != mse[("--last",)]


def test_a_tables_json_keeps_the_evaluations_during_training_and_the_kept_step(
        tmp_path, script_validation):
    """The figures the docs quote from a run's course (its evaluations, the step --keep-best kept)
    stay in the table's .json once the runs folder is gone."""
    script_validation([2.0, 1.0, 3.0])  # validation losses at steps 4, 8, 12: step 8's kept
    metrics = train(TrainConfig(task="denoising", gap=7, model="hybrid", hidden=6, layers=1,
                                seq_len=19, steps=12, batch_size=8, eval_samples=8, eval_every=4,
                                checkpoint_every=4, keep_best=True, quiet=True,
                                out=str(tmp_path / "best")))
    kept = evaluations(json.loads(json.dumps(metrics)))
    assert [(e["step"], e["split"], e["eval_loss"]) for e in kept["eval_curve"]] == [
        (4, "val", 2.0), (8, "val", 1.0), (12, "val", 3.0)]
    assert kept["best"]["step"] == 8
    plain = train(TrainConfig(task="denoising", gap=7, model="hybrid", hidden=6, layers=1,
                              seq_len=19, steps=8, batch_size=8, eval_samples=8, eval_every=4,
                              quiet=True, out=str(tmp_path / "plain")))
    assert [(e["step"], e["split"]) for e in evaluations(plain)["eval_curve"]] == [(4, "test")]
    assert "best" not in evaluations(plain)


def test_memory_tasks_resumes_a_cut_off_run_where_it_stopped(tmp_path):
    """A run cut off after its step-4 checkpoint (no metrics.json) is resumed, not refused nor
    restarted: it ends with the weights of the same run trained without a stop."""
    def config(out: str, steps: int) -> TrainConfig:
        return TrainConfig(task="copy-first-input", model="hybrid", hidden=6, layers=1,
                           seq_len=9, steps=steps, batch_size=8, eval_samples=8, eval_every=4,
                           schedule="constant", warmup=0, quiet=True, out=str(tmp_path / out))
    memory_tasks.run(config("whole", 8))
    train(config("cut", 4))
    (tmp_path / "cut" / "metrics.json").unlink()
    metrics = memory_tasks.run(config("cut", 8))
    assert metrics["config"]["steps"] == 8
    whole, cut = read_run(tmp_path / "whole"), read_run(tmp_path / "cut")
    assert cut["step"] == 8
    for name, weight in whole["model"].items():
        assert torch.equal(weight, cut["model"][name]), name


def _driver_run(runs: Path, seed: int, **model_options) -> TrainConfig:
    """The copy50 bmru run that ``memory_tasks.py --params 1000 --steps 2 --max-factor 1`` plans
    for ``seed`` (a run made otherwise is refused as another table's)."""
    return TrainConfig(task="copy-first-input", model="bmru", params=1000, seed=seed, seq_len=50,
                       steps=2, quiet=True, out=str(runs / "copy50" / "bmru" / f"seed{seed}"),
                       model_options=model_options)


def test_memory_tasks_refuses_a_finished_run_made_with_other_settings(tmp_path, monkeypatch):
    """A run in the runs folder made with other steps than the table's command: reused as it
    was, its figures stood beside a command that did not make them."""
    runs = tmp_path / "runs"
    train(_driver_run(runs, seed=0))
    monkeypatch.setattr(sys, "argv", [
        "memory_tasks.py", "--finished", "--models", "bmru", "--params", "1000", "--steps", "3",
        "--max-factor", "1", "--runs", str(runs), "--name", str(tmp_path / "table")])
    with pytest.raises(ValueError, match="seed0: the finished run there was made with other "
                                         "settings than this table's command.*steps: 2 -> 3"):
        memory_tasks.main()


def test_trained_run_reuses_a_run_of_its_command_only(tmp_path):
    """The run drivers' ``trained_run`` (spiking_runs, denoising, pad_memory): the finished run is
    reused for its own command (``--threads`` aside), refused for another."""
    from benchmarks.common import trained_run, trained_where

    out = str(tmp_path / "run")
    argv = ["copy-first-input", "--model", "bmru", "--hidden", "4", "--layers", "1",
            "--seq-len", "8", "--steps", "2", "--batch-size", "4", "--eval-samples", "4",
            "--threads", "1", "--quiet"]
    made = trained_run(out, argv, train=True)
    assert made["config"]["steps"] == 2
    assert trained_where(out).startswith("steps 0–2 at ") and trained_where(out).endswith(" on cpu")
    assert trained_where(str(tmp_path / "none")) == "not recorded"
    assert trained_run(out, [*argv[:-3], "--quiet"], train=False) == made
    with pytest.raises(ValueError, match=r"run: the finished run .*steps: 2 -> 3"):
        trained_run(out, [*argv, "--steps", "3"], train=False)


def test_memory_tasks_minutes_fits_one_step_count_per_row(tmp_path, monkeypatch):
    """``--minutes``: one pilot per row, its steps for every seed (each seed once ran a pilot of
    its own, so pooled seeds could train for different lengths), and a rerun reuses the runs."""
    pilots = []

    def fit(c, minutes):
        pilots.append(c.seed)
        return 2 + len(pilots)  # another count at every pilot

    monkeypatch.setattr(memory_tasks, "fit_steps", fit)
    args = ["memory_tasks.py", "--minutes", "1", "--models", "bmru", "--seeds", "2", "--params",
            "1000", "--max-factor", "1", "--runs", str(tmp_path / "runs"), "--name",
            str(tmp_path / "table")]
    monkeypatch.setattr(sys, "argv", args)
    memory_tasks.main()
    runs = json.loads((tmp_path / "table.json").read_text())["runs"]
    assert pilots == [0] and [r["config"]["steps"] for r in runs] == [3, 3]
    memory_tasks.main()  # finished: reused with their steps, no pilot
    assert pilots == [0]


def test_memory_tasks_finished_tabulates_the_finished_runs_and_trains_none(tmp_path, monkeypatch):
    """``--finished``: a row per model with a finished run, counting its seeds; a model with no
    finished run has no row, and no run is started."""
    runs = tmp_path / "runs"
    train(_driver_run(runs, seed=1))
    monkeypatch.setattr(sys, "argv", [
        "memory_tasks.py", "--finished", "--models", "bmru", "lru", "--seeds", "3",
        "--params", "1000", "--steps", "2", "--max-factor", "1", "--runs", str(runs),
        "--name", str(tmp_path / "table")])
    memory_tasks.main()
    rows = [line for line in (tmp_path / "table.md").read_text().splitlines()
            if line.startswith("| copy50")]
    assert len(rows) == 1 and rows[0].startswith("| copy50 | bmru | 5 | 50 |")  # --params 1000
    assert "| 1 | `bistable train copy-first-input --model bmru" in rows[0]
    assert "--seed 1" in rows[0]
    assert sorted(p.name for p in (runs / "copy50").iterdir()) == ["bmru"]


def test_memory_tasks_reuse_takes_recorded_runs_where_the_runs_folder_lacks_them(tmp_path,
                                                                                  monkeypatch):
    """``--reuse FILE``: a run the results file records (seed 0) joins the finished run on disk
    (seed 1) in one row, with its recorded command first; ``--option`` reaches the new runs'
    commands and the notes."""
    runs = tmp_path / "runs"
    out = str(runs / "copy50" / "bmru" / "seed1")
    train(_driver_run(runs, seed=1, sharpness=2.0))
    disk = json.loads((Path(out) / "metrics.json").read_text())
    seed0 = {**disk["config"], "seed": 0, "out": str(runs / "copy50" / "bmru" / "seed0")}
    old_eval = [{**e, "mse": 0.25} for e in disk["eval"]]
    (tmp_path / "old.json").write_text(json.dumps({"runs": [
        {"experiment": "copy50", "command": "recorded seed-0 command", "config": seed0,
         "eval": old_eval}]}))
    monkeypatch.setattr(sys, "argv", [
        "memory_tasks.py", "--finished", "--models", "bmru", "--seeds", "2", "--params", "1000",
        "--steps", "2", "--max-factor", "1", "--runs", str(runs), "--name", str(tmp_path / "table"),
        "--reuse",
        str(tmp_path / "old.json"), "--option", "sharpness=2.0"])
    memory_tasks.main()
    text = (tmp_path / "table.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| copy50"))
    assert "| 2 | `recorded seed-0 command` |" in row
    want = statistics.mean([0.25, disk["eval"][0]["mse"]])
    assert f"{want:.4f}" in row
    assert "`sharpness=2.0`" in text and "old.json" in text
    recorded = json.loads((tmp_path / "table.json").read_text())["runs"]
    assert recorded[0]["command"] == "recorded seed-0 command"
    assert "--option sharpness=2.0" in recorded[1]["command"]


def test_brc_gates_reads_every_block_of_a_trained_run(tmp_path, monkeypatch):
    """One row per block with the gates' and states' statistics, and the run's MSE recomputed
    from its last weights; a model without BRC units is refused by name."""
    out = str(tmp_path / "run")
    train(TrainConfig(task="denoising", model="nbrc", hidden=5, layers=2, seq_len=30, gap=10,
                      steps=2, batch_size=4, eval_samples=4, eval_every=2, quiet=True, out=out))
    written = []
    monkeypatch.setattr(brc_gates, "write_results",
                        lambda name, text, rows: written.append(rows) or name)
    brc_gates.main([out, "--samples", "8"])
    rows = written[0]
    assert [r["block"] for r in rows] == [0, 1] and rows[0]["model"] == "nbrc"
    for r in rows:
        assert 0 < r["a_mean"] < 2 and 0 <= r["a_bistable"] <= 1 and 0 < r["c_mean"] < 1
        assert 0 <= r["h_abs"] < 1 and r["h_time_std"] > 0 and r["mse"] > 0
    other = str(tmp_path / "lru")
    train(TrainConfig(task="denoising", model="lru", hidden=5, layers=1, seq_len=30, gap=10,
                      steps=1, batch_size=4, eval_samples=4, eval_every=1, quiet=True, out=other))
    with pytest.raises(ValueError, match="expected a brc or nbrc model, got a lru unit"):
        brc_gates.main([other])


def test_dispatch_times_both_paths_and_restores_the_library():
    """benchmarks/dispatch.py: the operators' path is swapped in for its rounds only."""
    from bistable.scan import dispatch as scan_dispatch
    from bistable.scan.autograd import scan, scan_op

    with dispatch.operators():
        assert scan_dispatch.scan is scan_op
    assert scan_dispatch.scan is scan
    rows = dispatch.side_by_side(dispatch.single_calls("cpu"), 2, 3, lambda: None)
    assert [r["call"] for r in rows] == ["scan autograd, host only", "linear_scan"]
    for r in rows:
        assert [len(r["times"][k]) for k in ("function", "operators")] == [2, 2]
        assert r["speedup"] == pytest.approx(r["operators_s"] / r["function_s"])
    assert scan_dispatch.scan is scan


def test_ema_pairs_scores_the_last_weights_and_their_average(tmp_path):
    """benchmarks/ema_pairs.py: both weight sets of one --ema checkpoint, each scored as
    `evaluate` scores it (a regression task: losses, no accuracy); a run without an average is
    refused."""
    from benchmarks.ema_pairs import pair

    base = dict(task="copy-first-input", model="lru", hidden=6, layers=1, seq_len=10, steps=4,
                batch_size=4, eval_samples=8, quiet=True)
    train(TrainConfig(out=str(tmp_path / "ema"), ema=0.5, **base))
    got = pair(tmp_path / "ema")
    saved = read_run(tmp_path / "ema")
    task, model = run_from(saved)
    want = {"ema": evaluate(model, task, "test", 10, n=8)["loss"]}
    model.load_state_dict(saved["model"])
    want["last"] = evaluate(model, task, "test", 10, n=8)["loss"]
    assert got["loss"] == want and want["ema"] != want["last"]
    assert got["accuracy"] == {"ema": None, "last": None}
    assert (got["step"], got["decay"]) == (4, 0.5)
    train(TrainConfig(out=str(tmp_path / "plain"), **base))
    with pytest.raises(ValueError, match="not an --ema run"):
        pair(tmp_path / "plain")
    saved["step"] = 2  # as a checkpoint of a run still training
    save_checkpoint(tmp_path / "ema" / "checkpoint.pt", saved)
    with pytest.raises(ValueError, match="not finished \\(step 2 of 4\\)"):
        pair(tmp_path / "ema")


def _spiking_run(tmp_path, monkeypatch, steps=3):
    """A tiny finished spiking-mnist run on 40 + 30 made-up images (the build of its task
    patched to that data), for the eval-only probes."""
    from bistable.train import loop

    task = build_task("spiking-mnist")
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 40), ("test", 30)):
        task._cache[split] = (torch.randint(0, 256, (n, 784), generator=g, dtype=torch.uint8),
                              torch.arange(n) % 10)
    monkeypatch.setattr(loop, "_build_task", lambda c: task)
    c = TrainConfig(task="spiking-mnist", model="src", out=str(tmp_path / "run"), hidden=6,
                    layers=1, seq_len=24, steps=steps, batch_size=8, eval_samples=None,
                    quiet=True)
    train(c)
    return tmp_path / "run", task


def test_src_probe_scores_each_draw_and_reads_the_last_hidden_layer(tmp_path, monkeypatch):
    """benchmarks/src_probe.py: the k draws' R[T] and Σ_t out[t] of the last hidden layer are
    those of k single codings taken in turn from the same generator."""
    from benchmarks.src_probe import scores

    run, task = _spiking_run(tmp_path, monkeypatch)
    _, model = run_from(read_run(run))
    with torch.no_grad():  # strong weights, so that both layers spike within 4 coded steps
        model.layers[0].weight.copy_(torch.linspace(-1, 3, 784 * 6).view(6, 784))
        model.layers[1].weight.fill_(5.0)
    index = torch.tensor([0, 3, 7, 11, 29])
    R2, h2, y = scores(model, task, "test", index, 24, 2, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    for d in range(2):
        x, y1 = task.examples("test", index, 24, g)
        with torch.no_grad():
            R, _, spikes = model.run(x)
        torch.testing.assert_close(R2[d], R[:, -1])
        torch.testing.assert_close(h2[d], spikes[0].sum(1))
    assert torch.equal(y, y1) and torch.equal(y, index % 10)
    assert not torch.equal(h2[0], h2[1]) and R2.abs().sum() > 0  # two codings, not one twice
    assert h2.shape == (2, 5, 6)  # the hidden layer's 6 neurons, not the 100 output neurons


def test_src_probe_fits_a_separable_code_and_scores_a_finished_run(tmp_path, monkeypatch):
    """The probe's softmax regression separates a linearly separable code; a finished run gets
    every figure in [0, 1] and the ridge chosen on held-out images; an unfinished run, a
    non-spiking one and more training images than the run has are refused."""
    from benchmarks.src_probe import RIDGE, fit_probe, probe_run

    g = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 3
    h = torch.randn(60, 5, generator=g) + 4 * torch.nn.functional.one_hot(y, 5)
    assert torch.equal(fit_probe(h, y, 1e-4, 3)(h).argmax(1), y)

    run, _ = _spiking_run(tmp_path, monkeypatch)
    got = probe_run(run, draws=2, train_images=20)
    a, p = got["accuracy"], got["probe"]
    figures = [*a["test_each"], a["test_summed"], a["train"], *p["held_out"].values(),
               p["train"], *p["test_each"], p["test_averaged"]]
    assert all(0 <= f <= 1 for f in figures) and p["ridge"] in RIDGE
    assert len(a["test_each"]) == len(p["test_each"]) == 2
    assert (got["test_images"], got["train_images"], got["draws"]) == (30, 20, 2)
    with pytest.raises(ValueError, match=r"--train-images: expected at most 40 .* got 41"):
        probe_run(run, draws=1, train_images=41)
    saved = read_run(run)
    saved["step"] = 1
    save_checkpoint(run / "checkpoint.pt", saved)
    with pytest.raises(ValueError, match=r"not finished \(step 1 of 3\)"):
        probe_run(run, draws=1, train_images=4)
    monkeypatch.undo()  # the copy task built as usual
    train(TrainConfig(task="copy-first-input", model="lru", hidden=4, layers=1, seq_len=6,
                      steps=2, batch_size=4, eval_samples=8, quiet=True,
                      out=str(tmp_path / "lru")))
    with pytest.raises(ValueError, match="expected a spiking network with a hidden layer"):
        probe_run(tmp_path / "lru", draws=1, train_images=4)


def test_a_cell_over_fewer_runs_than_its_row_says_how_many():
    """A horizon (or a noise evaluation) that some seeds lack is averaged over the others, and
    the cell says over how many, since the row's seeds column counts every run."""
    run = {"config": {"seq_len": 50, "hidden": 8},
           "eval": [{"seq_len": 50, "mse": 0.5, "accuracy": None},
                    {"seq_len": 500, "mse": 1.0, "accuracy": None}]}
    short = {**run, "eval": run["eval"][:1]}
    row = memory_tasks.table_rows("copy50", "hybrid", [run, short, run], "cmd")[0]
    assert row[5] == mean_std([0.5, 0.5, 0.5]) and row[6] == mean_std([1.0, 1.0]) + " (n = 2)"
    assert row[-2] == 3
    runs = [{"dataset": "mnist", "depth": 1, "kind": "src", "accuracy": a, "firing_rate": 0.1,
             "silent_fraction": 0.0} for a in (0.9, 0.92)]
    runs[0]["accuracy_noise"] = 0.85
    (summary,) = src.summarise(runs)
    assert summary["seeds"] == 2 and summary["accuracy_noise"] == "0.85 (n = 1)"


def test_an_src_accuracy_table_short_of_the_issue_s_protocol_says_what_it_lacks():
    args = {"train_samples": 2000, "test_samples": 1000, "epochs": 1, "reduced": False}
    runs = [{"dataset": "mnist", "depth": d, "kind": "src", "seed": 0} for d in (1, 2, 4)]
    lacks = src.shortfall({"args": args, "runs": runs})
    assert lacks == ["no fashion-mnist runs", "no nmnist-sim runs", "no depth 8",
                     "1 seed(s), not 3", "train samples 2000, not 60000",
                     "test samples 1000, not 10000", "epochs 1, not 20"]
    full = {**args, "train_samples": 60000, "test_samples": 10000, "epochs": 20}
    runs = [{"dataset": n, "depth": d, "kind": "src", "seed": s}
            for n in src.FULL_PROTOCOL["datasets"] for d in (1, 2, 4, 8) for s in range(3)]
    assert src.shortfall({"args": full, "runs": runs}) == []


def _src_accuracy(monkeypatch, argv: list[str]) -> tuple[dict, str]:
    """benchmarks/src.py's accuracy runs on tiny random images (48 to train, 16 to test): the
    sections and the markdown it would write into results/."""
    g = torch.Generator().manual_seed(0)
    data = {split: (torch.rand(n, 28, 28, generator=g), torch.arange(n) % 10)
            for split, n in (("train", 48), ("test", 16))}
    written = {}
    monkeypatch.setattr(src, "load", lambda args, name, split, n: data[split])
    monkeypatch.setattr(src, "write_results",
                        lambda name, md, sections: written.update(md=md, sections=sections))
    src.main(["--skip-throughput", "--kinds", "src", "--depths", "2", "--hidden", "6",
              "--epochs", "3", "--batch", "16", "--noise", "0", "--init-rate", "0.01",
              "--train-noise", "0.2", "--redraw", *argv])
    return written["sections"], written["md"]


def test_a_src_accuracy_run_cut_off_resumes_to_the_figures_of_one_run(tmp_path, monkeypatch):
    """Killed after its first epoch's save and started again, an accuracy run goes on from its
    saved state (weights calibrated once, Adam, the data order, the coding and the train-noise
    draws) to the same figures as a run never stopped, and says it was resumed; a finished one
    started again is only tested again."""
    whole, _ = _src_accuracy(monkeypatch, ["--runs", str(tmp_path / "whole")])

    class Killed(Exception):
        pass

    def save_then_die(path, state):
        save(path, state)
        raise Killed

    save = src.save_checkpoint
    monkeypatch.setattr(src, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        _src_accuracy(monkeypatch, ["--runs", str(tmp_path / "cut")])
    monkeypatch.setattr(src, "save_checkpoint", save)
    cut, md = _src_accuracy(monkeypatch, ["--runs", str(tmp_path / "cut")])
    (a,), (b,) = whole["accuracy"]["runs"], cut["accuracy"]["runs"]
    for key in ("accuracy", *src.CURVES, "firing_rate", "silent_fraction"):
        assert b[key] == a[key], key
    assert len(a["train_accuracy_per_epoch"]) == 3 and "segments" not in a
    assert [s["from_epoch"] for s in b["segments"]] == [0, 1]
    assert "was resumed after a stop: from epoch 0 at" in md
    again, _ = _src_accuracy(monkeypatch, ["--runs", str(tmp_path / "whole")])  # finished:
    (c,) = again["accuracy"]["runs"]  # tested again, not trained
    assert c["accuracy"] == a["accuracy"] and c["train_loss_per_epoch"] == a["train_loss_per_epoch"]
    assert [s["from_epoch"] for s in c["segments"]] == [0, 3]


def test_a_src_accuracy_run_saved_with_other_settings_is_refused(tmp_path, monkeypatch):
    _src_accuracy(monkeypatch, ["--runs", str(tmp_path), "--epochs", "1"])
    with pytest.raises(ValueError, match=r"other settings \(epochs 1 there, 2 now; lr "
                                         r"0.005 there, 0.01 now\)"):
        _src_accuracy(monkeypatch, ["--runs", str(tmp_path), "--epochs", "2", "--lr", "1e-2"])


def test_a_second_process_on_the_same_src_runs_folder_is_refused(tmp_path, monkeypatch):
    """Two processes given one --runs/--name would each rewrite the other's saved epochs."""
    (tmp_path / "src").mkdir()
    with claimed(tmp_path / "src", "--runs"):  # another process's claim on runs/<name>/
        with pytest.raises(ValueError, match=r"--runs .*src: another run is writing there"):
            _src_accuracy(monkeypatch, ["--runs", str(tmp_path)])
    assert not list((tmp_path / "src").glob("*.pt"))  # refused before it trained or saved


def test_per_sample_benchmark_checks_vmap_against_the_loop_and_tabulates(tmp_path, capsys):
    from benchmarks import per_sample

    per_sample.main(["--models", "bmru", "src", "--batch", "3", "--seq-len", "4", "--repeats",
                     "1", "--name", str(tmp_path / "ps")])
    rows = json.loads((tmp_path / "ps.json").read_text())
    assert [r["model"] for r in rows] == ["bmru", "src"]
    assert all(r["max_rel_diff"] < 1e-5 and r["vmap(grad)"] > 0 for r in rows)
    assert "| bmru |" in (tmp_path / "ps.md").read_text()
