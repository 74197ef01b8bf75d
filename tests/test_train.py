"""The training loop in-process: schedule, data order, streaming evaluation, resume, divergence."""

import dataclasses
import json
import math
import warnings

import pytest
import torch
from torch.torch_version import TorchVersion

from bistable.data.tasks import build_task
from bistable.models import MODEL_NAMES, build_model
from bistable.train import loop
from bistable.train.checkpoint import load_checkpoint, save_checkpoint
from bistable.train.loop import TrainConfig, TrainingDiverged, learning_rate, resolve, train
from bistable.train.metrics import evaluate, predict_last
from bistable.train.report import SPIKE_SAMPLES, busiest, horizon_table, spiking_figures
from bistable.units.bmru import CMRU, write_rate
from bistable.units.lru import LRU
from bistable.units.src import SRC
from torch_support import whole_graph


def config(tmp_path, name="run", **kw):
    base = dict(task="copy-first-input", model="bmru", out=str(tmp_path / name), hidden=8,
                layers=1, seq_len=12, steps=12, batch_size=8, eval_samples=16, eval_every=4,
                checkpoint_every=4, quiet=True)
    return TrainConfig(**{**base, **kw})


def test_schedule_warms_up_then_decays_to_min_lr(tmp_path):
    c = resolve(config(tmp_path, steps=100, warmup=10, lr=1.0, min_lr=0.1),
                build_task("copy-first-input"))
    assert learning_rate(0, c) == pytest.approx(0.1)
    assert learning_rate(9, c) == pytest.approx(1.0)
    assert learning_rate(10, c) == pytest.approx(1.0)
    assert learning_rate(28, c) == pytest.approx(0.1 + 0.45 * (1 + math.cos(0.2 * math.pi)))
    assert learning_rate(55, c) == pytest.approx(0.55)  # a cosine's midpoint: a line's too
    assert learning_rate(100, c) == pytest.approx(0.1)
    c.schedule = "constant"
    assert learning_rate(80, c) == 1.0


def test_default_warm_up_and_min_lr(tmp_path):
    """Left out, the warm-up is min(200, steps // 20) and the cosine's floor lr / 10."""
    task = build_task("copy-first-input")
    assert resolve(config(tmp_path, steps=100), task).warmup == 5
    assert resolve(config(tmp_path, steps=100000), task).warmup == 200
    c = resolve(config(tmp_path, lr=0.02), task)
    assert c.min_lr == pytest.approx(0.002)
    c = resolve(config(tmp_path), task)                 # the task's own lr
    assert c.min_lr == pytest.approx(c.lr / 10)
    assert resolve(config(tmp_path, lr=0.02, min_lr=0.0), task).min_lr == 0.0


@pytest.mark.parametrize("kw, message", [
    (dict(epochs=1, steps=None), "--epochs needs a data-set task"),
    (dict(hidden=0), "--hidden must be >= 1"),
    (dict(schedule="linear"), "--schedule"),
    (dict(compile="fastest"), "--compile: expected a torch.compile backend"),
    (dict(ema=1.0), r"--ema: expected a decay in \[0, 1\) \(0: off\), got 1.0"),
    (dict(ema=-0.5), r"--ema: expected a decay in \[0, 1\)"),
    (dict(eval_seq_len=[0]), "at least 1"),
    (dict(precision="fp16"), "--precision: expected one of fp32, bf16, got 'fp16'"),
    (dict(params=5000), "give --hidden or --params"),  # config() gives hidden=8
    (dict(model_options={"hidden": 8}), "--option hidden: set by --hidden, not as a model option"),
    (dict(lr=1e-3, min_lr=1e-2), r"--min-lr: expected at most --lr \(0.001\) for the cosine "
                                 r"decay, got 0.01"),
])
def test_impossible_settings_are_one_line_errors(tmp_path, kw, message):
    with pytest.raises(ValueError, match=message):
        resolve(config(tmp_path, **kw), build_task("copy-first-input"))


@pytest.mark.parametrize("version, warns", [("2.4.1", True), ("2.10.0", True), ("2.11.0", False),
                                            ("2.13.0+cpu", False)])
def test_compile_on_an_untested_torch_warns(tmp_path, monkeypatch, version, warns):
    """Below the torch version whose dynamo traces every model whole (2.11) --compile still runs,
    with a warning; the versions compare as versions (2.4 < 2.11 < 2.13), not as strings."""
    monkeypatch.setattr(torch, "__version__", TorchVersion(version))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resolve(config(tmp_path, compile="aot_eager"), build_task("copy-first-input"))
    messages = [str(w.message) for w in caught if "--compile" in str(w.message)]
    assert messages == ([f"--compile: whole-model torch.compile is tested from torch 2.11, this "
                         f"is {version}: dynamo may break the graph (slower, still correct where "
                         "checked) or, on 2.4, stall compiling the SRC's step loop"]
                        if warns else [])


def test_bf16_precision_trains_under_autocast_and_keeps_float32_weights(tmp_path):
    """The hybrid (complex LRU beside the BMRU) trained with --precision bf16: the same run as in
    float32 to bfloat16's precision, not bitwise (the products ran in bfloat16), weights and
    optimiser state float32."""
    runs = {p: train(config(tmp_path, p, model="hybrid", precision=p)) for p in ("fp32", "bf16")}
    fp32, bf16 = ([h["loss"] for h in runs[p]["history"] if "loss" in h] for p in runs)
    assert fp32 != bf16 and fp32 == pytest.approx(bf16, rel=0.05)
    assert runs["bf16"]["config"]["precision"] == "bf16"
    assert math.isfinite(runs["bf16"]["eval"][0]["loss"])
    saved = load_checkpoint(tmp_path / "bf16" / "checkpoint.pt")
    assert {t.dtype for t in saved["model"].values() if t.is_floating_point()} == {torch.float32}
    moments = [s["exp_avg"].dtype for s in saved["optimizer"]["state"].values()]
    assert moments and set(moments) == {torch.float32}
    # resumed without --precision, the run keeps its own
    longer = train(config(tmp_path, "bf16", model="hybrid", steps=16, resume=True))
    assert longer["config"]["precision"] == "bf16"


def test_model_options_merge_into_the_task_defaults_per_key(tmp_path):
    given = {"unit_kwargs": {"bmru": {"detach_input": True}, "lru": {"r_min": 0.7}}}
    c = resolve(config(tmp_path, model="hybrid", model_options=given),
                build_task("copy-first-input"))
    assert c.model_options == {"unit_kwargs": {"bmru": {"detach_input": True},
                                               "lru": {"r_min": 0.7, "r_max": 0.9}}}
    c = resolve(config(tmp_path, model="hybrid", model_options={"mixer": "lru,bmru"},
                       task="denoising", seq_len=300), build_task("denoising"))
    assert c.model_options["mixer"] == "lru,bmru"  # the defaults of units it has, no others
    assert c.model_options["unit_kwargs"] == {"lru": {"r_min": 0.5, "r_max": 0.9},
                                              "bmru": {"sharpness": 2.0}}
    given = {"unit_kwargs": {"bmru": {"detach_input": True}, "cmru": {"sharpness": 1.0}}}
    c = resolve(config(tmp_path, model="hybrid", model_options=given, task="denoising",
                       seq_len=300), build_task("denoising"))
    assert c.model_options["unit_kwargs"] == {"lru": {"r_min": 0.5, "r_max": 0.9},
                                              "cmru": {"epsilon": 0.7, "sharpness": 1.0},
                                              "bmru": {"sharpness": 2.0, "detach_input": True}}


@pytest.mark.parametrize(("task", "mixer"), [("copy-first-input", "bmru"),
                                             ("copy-first-input", "cmru+bmru"),
                                             ("denoising", "lru+bmru")])
def test_a_mixer_given_trains_without_the_defaults_of_units_it_lacks(tmp_path, task, mixer):
    """The task's default ``unit_kwargs`` (the LRU's ring, the denoising CMRU's ε) apply to the
    units of the mixer the user gave, and refuse no mixer that lacks them."""
    metrics = train(config(tmp_path, task=task, model="hybrid", model_options={"mixer": mixer},
                           seq_len=None if task == "copy-first-input" else 300, steps=2))
    kept = metrics["config"]["model_options"]["unit_kwargs"]
    assert set(kept) <= set(mixer.replace("+", ",").split(","))
    assert ("bmru" in kept) == (task == "denoising")  # denoising tunes its BMRU's sharpness


def test_training_batches_depend_on_seed_and_step_only(tmp_path):
    task = build_task("copy-first-input")
    c = resolve(config(tmp_path), task)
    a, b = loop.train_batch(task, c, 5), loop.train_batch(task, c, 5)
    assert torch.equal(a[0], b[0])
    assert not torch.equal(a[0], loop.train_batch(task, c, 6)[0])


def test_a_batch_larger_than_the_training_set_is_refused(tmp_path, monkeypatch):
    _tiny_images(monkeypatch, size=10)
    kw = dict(task="smnist", seq_len=None, eval_samples=None, steps=1)
    assert train(config(tmp_path, "fits", batch_size=10, **kw))["config"]["batch_size"] == 10
    with pytest.raises(ValueError, match=r"--batch-size 11: expected at most the 10 training "
                                         r"examples of smnist"):
        train(config(tmp_path, "larger", batch_size=11, **kw))


def test_data_set_batches_walk_each_epoch_once(tmp_path):
    task = build_task("smnist")
    images = torch.zeros(10, 784, dtype=torch.uint8)
    images[:, 0] = torch.arange(10, dtype=torch.uint8)        # pixel 0 names the example
    task._cache["train"] = (images, torch.arange(10))
    c = resolve(config(tmp_path, task="smnist", seq_len=None, steps=None, batch_size=4), task)
    assert c.steps == 3                                        # one epoch by default: ceil(10 / 4)
    seen = torch.cat([loop.train_batch(task, c, s)[1] for s in range(5)])
    assert sorted(seen[:10].tolist()) == list(range(10))      # epoch 1, then epoch 2 begins
    assert sorted(seen[10:20].tolist()) == list(range(10))


def test_pad_min_draws_each_training_batch_a_pad_and_evaluation_keeps_the_full_one(tmp_path):
    task = build_task("psmnist", pad=30, pad_min=10)
    task._cache["train"] = (torch.full((8, 784), 255, dtype=torch.uint8), torch.arange(8))
    c = resolve(config(tmp_path, task="psmnist", seq_len=None, steps=None, batch_size=4), task)
    assert c.seq_len == 814
    lengths = [loop.train_batch(task, c, s)[0].shape[1] for s in range(200)]
    assert min(lengths) == 794 and max(lengths) == 814 and len(set(lengths)) == 21
    assert lengths == [loop.train_batch(task, c, s)[0].shape[1] for s in range(200)]
    x = loop.train_batch(task, c, 0)[0]
    assert (x[:, :784] == 1).all() and (x[:, 784:] == 0).all()
    fixed = build_task("psmnist", pad=30)
    fixed._cache["train"] = task._cache["train"]
    assert {loop.train_batch(fixed, c, s)[0].shape[1] for s in range(20)} == {814}
    task._cache["test"] = task._cache["train"]
    result = evaluate(build_model("lru", 1, 10, hidden=4, layers=1), task, "test", c.seq_len, n=8)
    assert result["seq_len"] == 814
    assert {x.shape[1] for x, _ in task.eval_batches("test", c.seq_len, 8, 4)} == {814}


def test_streamed_prediction_equals_one_forward():
    torch.manual_seed(0)
    model = build_model("hybrid", 2, 3, hidden=8, layers=2).double()
    x = torch.randn(3, 37, 2, dtype=torch.float64)
    with torch.no_grad():
        full = model(x)[0][:, -1]
    assert torch.allclose(predict_last(model, x, chunk=5), full, atol=1e-12)


def test_run_writes_metrics_checkpoint_and_plots(tmp_path):
    metrics = train(config(tmp_path, eval_seq_len=[30, 12]))
    out = tmp_path / "run"
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(metrics))
    assert set(on_disk) == {"task", "model", "config", "history", "eval"}
    (stretch,) = load_checkpoint(out / "checkpoint.pt")["provenance"]  # where the figures came from
    assert (stretch["from_step"], stretch["to_step"], stretch["device"], stretch["ranks"]) == \
        (0, 12, "cpu", 1)
    assert stretch["commit"] and "cores, torch" in stretch["machine"]
    assert stretch["started"] <= stretch["ended"]
    assert [(e["split"], e["seq_len"]) for e in on_disk["eval"]] == [("test", 12), ("test", 30)]
    for e in on_disk["eval"]:
        assert set(e) == {"split", "seq_len", "loss", "mse", "accuracy"}
        assert e["accuracy"] is None and e["mse"] == e["loss"] and math.isfinite(e["loss"])
    assert on_disk["history"][-1]["step"] == 12
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 12
    assert (out / "learning-curve.png").stat().st_size > 0
    assert (out / "horizon-curve.png").stat().st_size > 0
    with pytest.raises(ValueError, match="already holds a run"):
        train(config(tmp_path))


@pytest.mark.parametrize("model", ["src", "lif"])
def test_a_spiking_run_also_writes_its_spike_statistics_and_figures(tmp_path, model):
    if model == "lif":
        pytest.importorskip("snntorch")
    pytest.importorskip("matplotlib")
    train(config(tmp_path, model=model, layers=2))
    out = tmp_path / "run"
    stats = json.loads((out / "spikes.json").read_text())
    assert stats["samples"] == SPIKE_SAMPLES
    assert [layer["neurons"] for layer in stats["layers"]] == [8, 8, 10]  # 1 output × 10
    assert all(0 <= layer["silent_fraction"] <= 1 for layer in stats["layers"])
    assert (out / "raster.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "membrane.png").exists() == (model == "src")


def test_spike_statistics_are_the_test_examples_in_evaluation_mode(tmp_path):
    """spikes.json: the network without its training noise, on the test split (here four dark
    training digits and four bright test ones); the network is left in the mode it was in."""
    task = build_task("smnist")
    task._cache["train"] = (torch.zeros(4, 784, dtype=torch.uint8), torch.arange(4))
    task._cache["test"] = (torch.full((4, 784), 255, dtype=torch.uint8), torch.arange(4))
    model = build_model("src", 1, 10, hidden=8, layers=1, train_noise=0.5).train()
    spiking_figures(tmp_path, "t", task, 784, model, torch.device("cpu"))
    assert model.training
    model.eval()
    x, _ = next(task.eval_batches("test", 784, SPIKE_SAMPLES, SPIKE_SAMPLES, torch.device("cpu")))
    want = json.loads(json.dumps({"samples": 4, "layers": model.spike_stats(x)}))
    assert json.loads((tmp_path / "spikes.json").read_text()) == want


def test_horizon_table_prints_each_figure_in_its_column():
    table = horizon_table([
        {"split": "test", "seq_len": 12, "loss": 0.5, "mse": 0.25, "accuracy": None},
        {"split": "val", "seq_len": 400, "loss": 2.25, "mse": None, "accuracy": 0.0}])
    assert [line.split() for line in table.splitlines()] == [
        ["split", "seq_len", "loss", "mse", "accuracy"],
        ["test", "12", "0.5000", "0.2500", "-"],
        ["val", "400", "2.2500", "-", "0.0000"]]                   # a score of 0 is no gap


def test_a_recurrent_run_writes_no_spike_files(tmp_path):
    train(config(tmp_path))
    assert not {"spikes.json", "raster.png", "membrane.png"} & set(
        f.name for f in (tmp_path / "run").iterdir())


def test_load_run_gives_back_the_trained_model(tmp_path):
    metrics = train(config(tmp_path))
    task, model = loop.load_run(tmp_path / "run")
    assert task.name == "copy-first-input" and not model.training
    again = evaluate(model, task, "test", 12, n=16)
    assert not model.training
    assert again["mse"] == pytest.approx(metrics["eval"][0]["mse"], rel=1e-6)


@pytest.mark.parametrize("progress", [True, False])
def test_evaluation_shows_a_progress_bar_over_its_examples(capsys, progress):
    """A long evaluation (T = 50 000 takes minutes) shows a bar counting examples, on request."""
    task = build_task("copy-first-input")
    model = build_model("lru", 1, 1, hidden=4, layers=1)
    quiet = evaluate(model, task, "test", 12, n=20, batch_size=8)
    shown = evaluate(model, task, "test", 12, n=20, batch_size=8, progress=progress)
    assert shown == quiet
    err = capsys.readouterr().err
    assert ("evaluating T=12" in err and "/20 [" in err) == progress  # examples done/total


@pytest.mark.parametrize("kw, message", [
    ({"n": 0}, r"n: expected a positive int, got 0"),
    ({"n": -3}, r"n: expected a positive int, got -3"),
    ({"n": None}, r"n: expected a number of examples \(task copy-first-input draws"),
    ({"n": 4, "batch_size": 0}, r"batch_size: expected a positive int, got 0"),
])
def test_evaluate_refuses_sizes_it_cannot_score(kw, message):
    """torch.cat's "expected a non-empty list of Tensors" and a TypeError came from inside."""
    model = build_model("lru", 1, 1, hidden=4, layers=1)
    with pytest.raises(ValueError, match=message):
        evaluate(model, build_task("copy-first-input"), "test", 12, **kw)


def test_resume_extends_a_finished_run_exactly(tmp_path):
    whole = train(config(tmp_path, "whole", steps=16, schedule="constant"))
    train(config(tmp_path, "parts", steps=8, schedule="constant"))
    ckpt = tmp_path / "parts" / "checkpoint.pt"      # as if made before the setting existed
    saved = load_checkpoint(ckpt)
    del saved["config"]["write_penalty"]
    del saved["window"]
    save_checkpoint(ckpt, saved)
    extended = train(config(tmp_path, "parts", steps=16, schedule="constant", resume=True))
    assert extended["eval"] == whole["eval"]
    stretches = load_checkpoint(ckpt)["provenance"]
    assert [(s["from_step"], s["to_step"]) for s in stretches] == [(0, 8), (8, 16)]
    with pytest.raises(ValueError, match="other settings.*hidden"):
        train(config(tmp_path, "parts", steps=20, hidden=9, resume=True))
    with pytest.raises(ValueError, match="--resume: --steps: expected at least the checkpoint's "
                                         "step 16, got 12"):
        train(config(tmp_path, "parts", steps=12, schedule="constant", resume=True))
    saved = load_checkpoint(ckpt)  # a checkpoint made before provenance was kept: its stretch
    del saved["provenance"]        # since the resume only
    save_checkpoint(ckpt, saved)
    train(config(tmp_path, "parts", steps=20, schedule="constant", resume=True))
    stretches = load_checkpoint(ckpt)["provenance"]
    assert [(s["from_step"], s["to_step"]) for s in stretches] == [(16, 20)]


def test_resume_restores_the_global_random_state(tmp_path):
    """An SRC with ``train_noise`` draws from the global generator at every training step: the
    resumed run ends with the whole run's weights only if the checkpoint's RNG state is restored."""
    kw = dict(model="src", steps=4, schedule="constant", checkpoint_every=2, eval_every=2,
              model_options={"train_noise": 0.2})
    whole = train(config(tmp_path, "whole", **kw))
    train(config(tmp_path, "parts", **{**kw, "steps": 2}))
    resumed = train(config(tmp_path, "parts", resume=True, **kw))
    want = load_checkpoint(tmp_path / "whole" / "checkpoint.pt")["model"]
    got = load_checkpoint(tmp_path / "parts" / "checkpoint.pt")["model"]
    for k, v in want.items():
        torch.testing.assert_close(got[k], v, rtol=0, atol=0)
    assert resumed["eval"] == whole["eval"]


def test_resume_keeps_the_run_s_warm_up_unless_given(tmp_path):
    """A warm-up left out on resuming is the run's own, not the default for the new --steps."""
    whole = train(config(tmp_path, "whole", steps=8, warmup=6, schedule="constant"))
    with pytest.warns(UserWarning, match="--warmup 6 is longer than the run's 4 steps"):
        train(config(tmp_path, "parts", steps=4, warmup=6, schedule="constant"))
    extended = train(config(tmp_path, "parts", steps=8, schedule="constant", resume=True))
    assert extended["config"]["warmup"] == 6
    assert extended["eval"] == whole["eval"]


def test_resume_between_two_log_entries_keeps_the_history_of_a_whole_run(tmp_path, monkeypatch):
    """Stopped at step 6 (checkpoint of step 4, logging window 4 … 6): the resumed history's
    losses, gradient norms and learning rates are the uninterrupted run's."""
    kw = dict(steps=8, log_every=3, checkpoint_every=4, eval_every=4)
    whole = train(config(tmp_path, "whole", **kw))
    schedule = loop.learning_rate

    def stop_at_6(step, c):
        if step == 6:
            raise KeyboardInterrupt
        return schedule(step, c)

    monkeypatch.setattr(loop, "learning_rate", stop_at_6)
    with pytest.raises(KeyboardInterrupt):
        train(config(tmp_path, "parts", **kw))
    monkeypatch.setattr(loop, "learning_rate", schedule)
    assert load_checkpoint(tmp_path / "parts" / "checkpoint.pt")["step"] == 4
    resumed = train(config(tmp_path, "parts", resume=True, **kw))
    for history in (resumed["history"], whole["history"]):
        for entry in history:
            entry.pop("samples_per_s", None)  # the throughput of another process
    assert resumed["history"] == whole["history"]


def test_keep_best_tests_the_weights_of_the_lowest_validation_loss(tmp_path, script_validation):
    script_validation([2.0, 1.0, 3.0])  # at steps 4, 8, 12 (the end)
    metrics = train(config(tmp_path, "best", keep_best=True, schedule="constant"))
    assert [(h["step"], h["split"]) for h in metrics["history"] if "eval_loss" in h] == [
        (4, "val"), (8, "val"), (12, "val")]
    assert metrics["best"] == {"step": 8, "val_loss": 1.0}
    on_disk = json.loads((tmp_path / "best" / "metrics.json").read_text())
    assert on_disk["best"] == metrics["best"]
    saved = load_checkpoint(tmp_path / "best" / "checkpoint.pt")
    assert saved["step"] == 12 and saved["best"]["step"] == 8   # the last state resumes
    eight = train(config(tmp_path, "eight", steps=8, schedule="constant"))
    assert metrics["eval"] == eight["eval"]            # the test set scores step 8's weights
    _, model = loop.load_run(tmp_path / "best")        # and so does load_run
    weights = load_checkpoint(tmp_path / "eight" / "checkpoint.pt")["model"]
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("losses, best", [
    ([2.0, math.nan, 3.0], {"step": 4, "val_loss": 2.0}),      # NaN is never the best
    ([math.nan, 2.0, 3.0], {"step": 8, "val_loss": 2.0}),
    ([2.0, math.inf, 3.0], {"step": 4, "val_loss": 2.0}),
    ([1.0, 1.0, 2.0], {"step": 4, "val_loss": 1.0}),           # a tie keeps the earlier step
])
def test_keep_best_skips_non_finite_losses_and_keeps_the_earlier_of_a_tie(
        tmp_path, script_validation, losses, best):
    script_validation(losses)  # at steps 4, 8, 12 (the end)
    metrics = train(config(tmp_path, "best", keep_best=True, schedule="constant"))
    assert metrics["best"] == best
    assert load_checkpoint(tmp_path / "best" / "checkpoint.pt")["best"]["step"] == best["step"]


def _tiny_images(monkeypatch, size=20):
    """Runs of an image task train on ``size`` random 28 × 28 images (and test on 10)."""
    build, rng = loop._build_task, torch.Generator().manual_seed(0)
    files = {split: (torch.randint(0, 256, (n, 784), generator=rng, dtype=torch.uint8),
                     torch.randint(0, 10, (n,), generator=rng)) for split, n in
             (("train", size), ("test", 10))}

    def build_(c):
        task = build(c)
        task._cache.update(files)
        return task

    monkeypatch.setattr(loop, "_build_task", build_)


def test_keep_best_by_accuracy_tests_the_weights_of_the_highest_validation_accuracy(
        tmp_path, monkeypatch, script_validation):
    """``monitor="accuracy"``: step 8 has the highest validation accuracy (and the highest loss);
    step 12 ties it and the earlier is kept. The test set scores step 8's weights, as a run that
    ended there; a resume with another monitor is refused."""
    _tiny_images(monkeypatch)
    kw = dict(task="smnist", seq_len=None, eval_samples=None, keep_best=True,
              schedule="constant", monitor="accuracy")
    script_validation([1.0, 3.0, 0.5, 1.0, 3.0] + [1.0] * 4,  # then the resumed run's: lower
                      [0.5, 0.75, 0.75, 0.5, 0.75] + [0.5] * 4)
    metrics = train(config(tmp_path, "best", **kw))
    assert metrics["best"] == {"step": 8, "val_loss": 3.0, "val_accuracy": 0.75}
    assert json.loads((tmp_path / "best" / "metrics.json").read_text())["best"] == metrics["best"]
    eight = train(config(tmp_path, "eight", **{**kw, "steps": 8}))  # its best: its last step
    assert eight["best"]["step"] == 8 and metrics["eval"] == eight["eval"]
    with pytest.raises(ValueError, match="other settings \\(monitor: 'accuracy' -> 'loss'\\)"):
        train(config(tmp_path, "best", **{**kw, "monitor": "loss", "resume": True}))
    kw.pop("monitor")  # left out on resuming: the run's own, not the default
    longer = train(config(tmp_path, "best", **{**kw, "steps": 24, "resume": True}))
    assert longer["config"]["monitor"] == "accuracy" and longer["best"]["step"] == 8


def test_keep_best_scores_a_data_set_s_whole_validation_split(tmp_path, monkeypatch):
    """Data sets: ``--keep-best``'s evaluations score all the held-out images (2 of 20 here),
    the learning curve of a run without it up to 1000 test images, the final test all of them."""
    _tiny_images(monkeypatch)
    calls, real = [], loop.evaluate

    def evaluate_(model, task, split, seq_len, *, n, **kw):
        calls.append((split, n))
        return real(model, task, split, seq_len, n=n, **kw)

    monkeypatch.setattr(loop, "evaluate", evaluate_)
    for keep_best in (True, False):
        train(config(tmp_path, f"keep{keep_best}", task="smnist", seq_len=None,
                     eval_samples=None, keep_best=keep_best, steps=8))
    assert calls == [("val", None)] * 2 + [("test", None)] + [("test", 1000), ("test", None)]


@pytest.mark.parametrize("kw, message", [
    (dict(monitor="mse", keep_best=True), "--monitor: expected one of loss, accuracy, got 'mse'"),
    (dict(monitor="accuracy"), "--monitor accuracy: chooses --keep-best's weights; add "
                               "--keep-best"),
    (dict(monitor="accuracy", keep_best=True), "--monitor accuracy: copy-first-input is a "
                                               "regression task \\(no accuracy\\)"),
])
def test_keep_best_monitors_what_the_task_scores(tmp_path, kw, message):
    with pytest.raises(ValueError, match=message):
        resolve(config(tmp_path, **kw), build_task("copy-first-input"))


def test_ema_tests_the_moving_average_of_the_weights_and_resumes_exactly(tmp_path):
    """``--ema 0.75``: training is untouched (the same weights as without it), the checkpoint keeps
    w̄_1 = w_1, w̄_t = 0.75 w̄_{t-1} + 0.25 w_t, the test scores w̄ (as does ``load_run``), and a
    resumed run ends with the same average as a whole one."""
    kw = dict(steps=3, schedule="constant", warmup=1, checkpoint_every=1, eval_every=10)
    weights = []  # w_1, w_2, w_3 of the plain run, one step at a time
    for steps in (1, 2, 3):
        train(config(tmp_path, "plain", resume=steps > 1, **{**kw, "steps": steps}))
        weights.append(load_checkpoint(tmp_path / "plain" / "checkpoint.pt")["model"])
    expected = dict(weights[0])
    for w in weights[1:]:
        expected = {k: 0.75 * expected[k] + 0.25 * w[k] for k in w}

    whole = train(config(tmp_path, "ema", ema=0.75, **kw))
    saved = load_checkpoint(tmp_path / "ema" / "checkpoint.pt")
    for k, w in weights[-1].items():
        torch.testing.assert_close(saved["model"][k], w, rtol=0, atol=0)
        torch.testing.assert_close(saved["ema"]["model"][k], expected[k])
    assert saved["ema"]["step"] == 3 and saved["ema"]["n_averaged"] == 3
    task, model = loop.load_run(tmp_path / "ema")
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, saved["ema"]["model"][k], rtol=0, atol=0)
    assert whole["eval"] == [evaluate(model, task, "test", 12, n=16)]

    train(config(tmp_path, "parts", ema=0.75, **{**kw, "steps": 2}))
    resumed = train(config(tmp_path, "parts", ema=0.75, resume=True, **kw))
    parts = load_checkpoint(tmp_path / "parts" / "checkpoint.pt")["ema"]["model"]
    for k, v in saved["ema"]["model"].items():
        torch.testing.assert_close(parts[k], v, rtol=0, atol=0)
    assert resumed["eval"] == whole["eval"]
    with pytest.raises(ValueError, match="--resume: the run in --out was made with other "
                                         "settings \\(ema: 0.75 -> 0.9\\)"):
        train(config(tmp_path, "parts", ema=0.9, resume=True, **kw))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_ema_trains_every_model(tmp_path, name):
    """The average copies the model's buffers after each step: snnTorch's ``Leaky`` kept its last
    membrane in a buffer whose shape changed at the first forward ("The size of tensor a (0)
    must match the size of tensor b (8)")."""
    if name == "lif":
        pytest.importorskip("snntorch")
    train(config(tmp_path, model=name, ema=0.9, steps=2, eval_every=2, checkpoint_every=2))
    saved = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert saved["ema"]["n_averaged"] == 2


def test_keep_best_resumes_with_its_best_so_far(tmp_path, script_validation):
    script_validation([2.0, 1.0, 3.0, 4.0] * 2)  # steps 4, 8, 12, 16; twice
    whole = train(config(tmp_path, "whole", steps=16, keep_best=True, schedule="constant"))
    train(config(tmp_path, "parts", steps=8, keep_best=True, schedule="constant"))
    extended = train(config(tmp_path, "parts", steps=16, keep_best=True, schedule="constant",
                            resume=True))
    assert extended["best"] == whole["best"] == {"step": 8, "val_loss": 1.0}
    assert extended["eval"] == whole["eval"]


@whole_graph
def test_a_compiled_run_trains_as_the_eager_one(tmp_path):
    """``--compile`` (``aot_eager`` here: traced forward and backward, no code generation) gives
    the eager run's losses and write rates, and a run resumes with or without it."""
    kw = dict(model="hybrid", write_penalty=0.1, schedule="constant", log_every=2)
    eager = train(config(tmp_path, "eager", **kw))
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    train(config(tmp_path, "compiled", steps=6, compile="aot_eager", **kw))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1  # traced, in one piece
    compiled = train(config(tmp_path, "compiled", resume=True, **kw))
    for key in ("loss", "write_rate"):
        got, want = ([h[key] for h in m["history"] if key in h] for m in (compiled, eager))
        assert len(got) == len(want) == 6
        assert got == pytest.approx(want, rel=1e-5)
    assert compiled["eval"][0]["mse"] == pytest.approx(eager["eval"][0]["mse"], rel=1e-5)


def _one_step_by_hand(c: TrainConfig, penalty: float) -> torch.nn.Module:
    """The first training step of ``c`` written out: AdamW on loss + penalty · mean(z)."""
    task = build_task(c.task)
    r = resolve(c, task)
    model = loop._build_model(r, task)
    optimizer = torch.optim.AdamW(model.parameters(), lr=r.lr, weight_decay=r.weight_decay)
    x, target = loop.train_batch(task, r, 0)
    y, _ = model(x)
    (task.loss(y[:, -1], target) + penalty * write_rate(model)).backward()
    optimizer.step()
    return model


def test_write_penalty_adds_lambda_times_the_write_rate_to_the_loss(tmp_path):
    c = config(tmp_path, steps=1, write_penalty=0.5, grad_clip=0.0, log_every=1)
    metrics = train(c)
    assert 0 < metrics["history"][0]["write_rate"] < 1
    trained = loop.load_run(c.out)[1].state_dict()
    for penalty, same in ((0.5, True), (0.0, False)):
        by_hand = _one_step_by_hand(c, penalty).state_dict()
        assert all(torch.equal(by_hand[k], trained[k]) for k in trained) is same


def test_history_records_the_gradient_norm_before_clipping(tmp_path):
    c = config(tmp_path, steps=1, grad_clip=1e-4, log_every=1)
    logged = train(c)["history"][0]["grad_norm"]
    task = build_task(c.task)
    r = resolve(c, task)
    model = loop._build_model(r, task)
    x, target = loop.train_batch(task, r, 0)
    task.loss(model(x)[0][:, -1], target).backward()
    by_hand = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert logged > 100 * c.grad_clip
    assert logged == pytest.approx(float(by_hand), rel=1e-5)


def test_grad_clip_bounds_the_gradient_the_optimizer_steps_with(tmp_path):
    """What AdamW sees has norm at most --grad-clip; with 0 (no clipping) it is the whole norm."""
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    seen = []

    def record(optimizer, args, kwargs):
        norms = [p.grad.norm() for g in optimizer.param_groups for p in g["params"]
                 if p.grad is not None]
        seen.append(float(torch.linalg.vector_norm(torch.stack(norms))))

    handle = register_optimizer_step_pre_hook(record)
    try:
        clipped = train(config(tmp_path, "clipped", steps=3, grad_clip=1e-4, log_every=1))
        clipped_seen, seen[:] = list(seen), []
        free = train(config(tmp_path, "free", steps=3, grad_clip=0.0, log_every=1))
        free_seen = list(seen)
    finally:
        handle.remove()
    assert len(clipped_seen) == len(free_seen) == 3
    assert all(n <= 1e-4 * (1 + 1e-5) for n in clipped_seen)
    logged = [h["grad_norm"] for h in clipped["history"]]
    assert all(n > 100 * 1e-4 for n in logged)                     # so the clip took effect
    assert free_seen == pytest.approx([h["grad_norm"] for h in free["history"]], rel=1e-5)
    assert all(n > 100 * 1e-4 for n in free_seen)


def test_pad_every_trains_on_the_loss_at_every_readout(tmp_path, monkeypatch):
    task = build_task("psmnist", pad=20, pad_every=8)
    images = torch.randint(0, 256, (8, 784), generator=torch.Generator().manual_seed(0))
    task._cache["train"] = task._cache["test"] = (images.to(torch.uint8), torch.arange(8) % 10)
    monkeypatch.setattr(loop, "_build_task", lambda c: task)
    c = config(tmp_path, task="psmnist", model="lru", seq_len=None, steps=1, batch_size=4,
               log_every=1, eval_samples=None, pad=20, pad_every=8)
    logged = train(c)["history"][0]["loss"]
    r = resolve(c, task)
    x, target = loop.train_batch(task, r, 0)
    with torch.no_grad():
        y = loop._build_model(r, task)(x)[0]
    readouts = [task.loss(y[:, t], target) for t in (783, 791, 799, 803)]
    assert logged == pytest.approx(float(sum(readouts) / 4), rel=1e-5)
    assert logged != pytest.approx(float(readouts[-1]), rel=1e-3)


def test_init_from_starts_from_another_run_s_weights(tmp_path):
    first = config(tmp_path, name="first", steps=4)
    train(first)
    trained = loop.load_run(first.out)[1].state_dict()
    # a learning rate too small to move a weight: what the run ends with is what it started from
    for init_from, same in ((first.out, True), (None, False)):
        c = config(tmp_path, name=f"second-{same}", steps=1, lr=1e-30, init_from=init_from)
        train(c)
        started = loop.load_run(c.out)[1].state_dict()
        assert all(torch.equal(started[k], trained[k]) for k in trained) is same


@pytest.mark.parametrize("kw, message", [
    (dict(init_from="/nonexistent/run"), "--init-from: no checkpoint in /nonexistent/run"),
    (dict(hidden=5), r"do not fit this model \(size mismatch for .*torch.Size\(\[5, .*\); "
                     r"settings that differ: hidden: 8 there, 5 here$"),
    (dict(task="denoising", seq_len=20, gap=5),  # 2 inputs and 5 outputs, not 1 and 1
     r"do not fit this model \(size mismatch for .*\); settings that differ: task: "
     r"'copy-first-input' there, 'denoising' here$"),
    (dict(model_options={"r_min": 0.5}, model="lru", layers=1),  # shapes alike: it loads
     None),
])
def test_init_from_a_run_that_does_not_fit_is_a_one_line_error(tmp_path, kw, message):
    """The tensors that do not fit (torch's words), then the settings that differ, which may
    explain them (an option that leaves the shapes alone fits: pad_memory.py's curriculum)."""
    first = config(tmp_path, name="first", steps=1, **({"model": "lru", "layers": 1}
                                                       if message is None else {}))
    train(first)
    second = config(tmp_path, name="second", steps=1, **{"init_from": first.out, **kw})
    if message is None:
        train(second)
        return
    with pytest.raises(ValueError, match=message) as raised:
        train(second)
    assert "\n" not in str(raised.value)


def test_throughput_counts_the_window_s_training_steps_only(tmp_path, monkeypatch):
    clock = iter(range(0, 10**6, 3))  # each training step takes 3 "seconds" on this clock
    monkeypatch.setattr(loop, "time", type("Clock", (), {"perf_counter": lambda: next(clock)}))
    history = train(config(tmp_path, steps=10, log_every=4))["history"]
    rates = [h["samples_per_s"] for h in history if "samples_per_s" in h]
    assert rates == [8 / 3] * 3  # windows of 4, 4 and 2 steps of batch 8; evaluations left out


def test_anneal_epsilon_takes_every_cmru_from_counter_to_bmru(tmp_path):
    metrics = train(config(tmp_path, model="cmru", steps=5, anneal_epsilon=2, log_every=1))
    assert [h["epsilon"] for h in metrics["history"] if "epsilon" in h] == [1, 0.5, 0, 0, 0]
    units = [m for m in loop.load_run(tmp_path / "run")[1].modules() if isinstance(m, CMRU)]
    assert units and all(torch.equal(u.epsilon(), torch.zeros(u.hidden_size)) for u in units)


def test_noise_ramp_takes_every_src_from_clean_to_its_train_noise(tmp_path):
    metrics = train(config(tmp_path, model="src", steps=5, noise_ramp=2, log_every=1,
                           model_options={"train_noise": 0.1}))
    assert [h["train_noise"] for h in metrics["history"] if "train_noise" in h] == \
        pytest.approx([0, 0.05, 0.1, 0.1, 0.1])
    units = [m for m in loop.load_run(tmp_path / "run")[1].modules() if isinstance(m, SRC)]
    assert units and all(u.train_noise == 0.1 and not u.training for u in units)


@pytest.mark.parametrize("kw, message", [
    (dict(model="lru", write_penalty=0.1), "--write-penalty needs a model with memory units"),
    (dict(model="lru", noise_ramp=10), "--noise-ramp needs a model with spiking recurrent"),
    (dict(model="src", noise_ramp=10), r"--noise-ramp needs SRC units built with one "
                                       r"train_noise > 0 .*: \[0.0\]"),
    (dict(model="src", noise_ramp=0, model_options={"train_noise": 0.1}),
     "--noise-ramp must be >= 1"),
    (dict(model="bmru", anneal_epsilon=10), "--anneal-epsilon needs a model with cumulative"),
    (dict(write_penalty=-1.0), "--write-penalty must be finite and >= 0"),
    (dict(model="cmru", anneal_epsilon=0), "--anneal-epsilon must be >= 1"),
])
def test_training_aids_on_the_wrong_model_are_one_line_errors(tmp_path, kw, message):
    with pytest.raises(ValueError, match=message):
        train(config(tmp_path, **kw))


def test_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    build = loop._build_model

    def poisoned(c, task):
        model = build(c, task)
        calls = {"n": 0}

        def nan_after_six(module, args, output):
            calls["n"] += 1
            return (output[0] * math.nan, output[1]) if calls["n"] > 6 else output

        model.register_forward_hook(nan_after_six)
        return model

    monkeypatch.setattr(loop, "_build_model", poisoned)
    with pytest.raises(TrainingDiverged, match="diverged at step 6.*last good checkpoint"):
        train(config(tmp_path, checkpoint_every=4, eval_every=100))
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert state["step"] == 4
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_without_matplotlib_plots_are_skipped_with_a_warning(tmp_path, monkeypatch):
    import bistable.plot

    def missing():
        raise ImportError("plots need matplotlib")

    monkeypatch.setattr(bistable.plot, "_pyplot", missing)
    with pytest.warns(UserWarning, match="plots skipped"):
        train(config(tmp_path, steps=2))
    assert (tmp_path / "run" / "metrics.json").is_file()
    assert not (tmp_path / "run" / "learning-curve.png").exists()


@pytest.mark.parametrize("task", ["smnist", "psmnist"])
def test_pixel_tasks_give_the_lrus_a_ring_near_one(tmp_path, task):
    """784+ steps: |λ| in [0.99, 0.9999] by default, for the LRU and the hybrid's LRUs alike;
    an option given on the command line still wins."""
    def radii(model, **options):
        c = resolve(config(tmp_path, task=task, model=model, seq_len=None, steps=1,
                           model_options=options), build_task(task))
        net = build_model(c.model, 1, 10, hidden=c.hidden, layers=c.layers, **c.model_options)
        return torch.cat([u.eigenvalues().abs() for u in net.modules()
                          if isinstance(u, LRU)])

    for model in ("lru", "hybrid"):
        r = radii(model)
        assert r.min() >= 0.99 - 1e-6 and r.max() <= 0.9999 + 1e-6
    assert radii("lru", r_min=0.5, r_max=0.6).max() <= 0.6 + 1e-6


def test_left_out_settings_are_the_task_s_defaults(tmp_path):
    """Without a flag, a run takes its task's lr, width, steps and evaluation size; ten
    evaluations per run and a checkpoint at each; the task's thread count on the CPU only."""
    bare = dict(task="copy-first-input", model="bmru", out=str(tmp_path / "run"))
    c = resolve(TrainConfig(**bare), build_task("copy-first-input"))
    assert (c.lr, c.hidden, c.layers, c.batch_size) == (3e-3, 32, 2, 64)
    assert c.min_lr == pytest.approx(3e-4)
    assert (c.steps, c.warmup, c.eval_every, c.checkpoint_every) == (1000, 50, 100, 100)
    assert (c.seq_len, c.eval_seq_len, c.eval_samples, c.threads) == (50, [50], 256, 1)
    on_gpu = resolve(TrainConfig(**bare, device="cuda"), build_task("copy-first-input"))
    assert on_gpu.threads is None
    c = resolve(TrainConfig(**{**bare, "task": "denoising"}, eval_every=7), build_task("denoising"))
    assert (c.hidden, c.steps, c.seq_len, c.eval_every, c.checkpoint_every) == (64, 6000, 300, 7, 7)


@pytest.mark.parametrize("kw, message", [
    (dict(lr=0.0), "--lr must be finite and > 0, got 0.0"),
    (dict(epochs=1), "give --steps or --epochs, not both"),     # config() gives steps=12
])
def test_more_impossible_settings(tmp_path, kw, message):
    with pytest.raises(ValueError, match=message):
        resolve(config(tmp_path, **kw), build_task("copy-first-input"))


def test_a_constant_schedule_takes_any_min_lr_and_a_warm_up_as_long_as_the_run(tmp_path):
    task = build_task("copy-first-input")
    c = resolve(config(tmp_path, schedule="constant", lr=1e-3, min_lr=1e-2, warmup=0), task)
    assert learning_rate(0, c) == 1e-3                          # no warm-up: lr from the start
    c = resolve(config(tmp_path, steps=10, warmup=10, lr=1.0), task)
    assert [learning_rate(s, c) for s in (9, 10)] == [1.0, 1.0]  # the end of a warm-up-only run


def test_epochs_count_passes_over_the_training_set(tmp_path):
    task = build_task("smnist")
    task._cache["train"] = (torch.zeros(10, 784, dtype=torch.uint8), torch.arange(10))
    c = resolve(config(tmp_path, task="smnist", seq_len=None, steps=None, epochs=3, batch_size=4),
                task)
    assert c.steps == 9                                        # 3 × ceil(10 / 4)


def test_batches_differ_across_seeds_and_epochs(tmp_path):
    """(seed 1, step 0) is not (seed 0, step 1); each epoch is its own permutation."""
    task = build_task("copy-first-input")
    zero, one = (resolve(config(tmp_path, seed=s), task) for s in (0, 1))
    assert not torch.equal(loop.train_batch(task, one, 0)[0], loop.train_batch(task, zero, 1)[0])
    images = build_task("smnist")
    images._cache["train"] = (torch.zeros(10, 784, dtype=torch.uint8), torch.arange(10))
    c = resolve(config(tmp_path, task="smnist", seq_len=None, steps=None, batch_size=10), images)
    first, second = (loop.train_batch(images, c, s)[1] for s in (0, 1))
    assert sorted(first.tolist()) == sorted(second.tolist()) == list(range(10))
    assert not torch.equal(first, second)


def test_the_seed_picks_the_initial_weights(tmp_path):
    task = build_task("copy-first-input")
    zero, one = (loop._build_model(resolve(config(tmp_path, seed=s), task), task).state_dict()
                 for s in (0, 1))
    again = loop._build_model(resolve(config(tmp_path, seed=0), task), task).state_dict()
    assert all(torch.equal(zero[k], again[k]) for k in zero)
    assert not all(torch.equal(zero[k], one[k]) for k in zero)


def test_a_run_builds_its_task_with_its_task_settings(tmp_path):
    task = loop._build_task(config(tmp_path, task="psmnist", seq_len=None, pad=30, pad_min=10,
                                   pad_every=7, keep_best=True, shift=2))
    assert (task.pad, task.pad_min, task.pad_every, task.validation, task.shift) == \
        (30, 10, 7, True, 2)
    assert loop._build_task(config(tmp_path, task="denoising", gap=50)).gap == 50
    assert loop._build_task(config(tmp_path)).validation is False


def test_run_from_takes_the_data_dir_it_is_given(tmp_path):
    """A run moved to another machine: ``data_dir`` replaces the run's own, else it is kept."""
    c = resolve(config(tmp_path, task="smnist", model="lru", seq_len=None, data_dir="/old"),
                build_task("smnist"))
    saved = {"config": dataclasses.asdict(c),
             "model": loop._build_model(c, build_task("smnist")).state_dict()}
    assert loop.run_from(saved, "/new")[0].data_dir == "/new"
    assert loop.run_from(saved)[0].data_dir == "/old"


def test_selected_weights_are_the_best_before_the_average():
    assert loop.selected({"best": {"step": 1}, "ema": {"step": 2}, "step": 3}) == {"step": 1}
    assert loop.selected({"best": None, "ema": {"step": 2}, "step": 3}) == {"step": 2}
    assert loop.selected({"best": None, "ema": None, "step": 3})["step"] == 3


def test_init_from_a_keep_best_run_starts_from_its_best_weights(tmp_path, script_validation):
    script_validation([1.0, 2.0, 3.0])                  # the best at step 4 of 12
    train(config(tmp_path, "first", keep_best=True, schedule="constant"))
    best = load_checkpoint(tmp_path / "first" / "checkpoint.pt")["best"]
    assert best["step"] == 4
    c = config(tmp_path, "second", steps=1, lr=1e-30, init_from=str(tmp_path / "first"))
    train(c)
    started = loop.load_run(c.out)[1].state_dict()
    assert all(torch.equal(started[k], best["model"][k]) for k in started)


def test_resume_checks_the_seed_and_the_cosine_s_length(tmp_path):
    task = build_task("copy-first-input")
    c = resolve(config(tmp_path, steps=8), task)
    saved = {"config": dataclasses.asdict(c), "step": 4}
    loop._check_resumable(saved, c)
    loop._check_resumable({**saved, "step": 8}, c)             # a finished run, resumed as is
    with pytest.raises(ValueError, match=r"other settings \(seed: 0 -> 1\)"):
        loop._check_resumable(saved, dataclasses.replace(c, seed=1))
    with pytest.raises(ValueError, match="--resume: --steps 6 is below the run's 8"):
        loop._check_resumable(saved, dataclasses.replace(c, steps=6))
    loop._check_resumable({**saved, "config": {**saved["config"], "schedule": "constant"}},
                          dataclasses.replace(c, steps=6, schedule="constant"))


@pytest.mark.parametrize("other", [dict(task="denoising", seq_len=210, gap=5),
                                   dict(model="lru")])
def test_resume_into_another_task_s_or_model_s_run_says_so(tmp_path, other):
    """Not an error about a setting that run had (its eval lengths, its data folder)."""
    train(config(tmp_path, steps=2, eval_seq_len=[20]))
    with pytest.raises(ValueError, match=r"--resume: the run in --out trains bmru on "
                                         r"copy-first-input, not \w+ on [\w-]+; use another"):
        train(config(tmp_path, steps=4, resume=True, **other))


def test_evaluations_during_training_are_at_the_training_length_and_at_most_1000(
        tmp_path, monkeypatch):
    """Every ``eval_every`` steps before the last, at the training length on up to 1000
    examples; at the end every ``eval_seq_len`` on all ``eval_samples``."""
    calls, real = [], loop.evaluate

    def evaluate_(model, task, split, seq_len, n=None, **kw):
        calls.append((split, seq_len, n))
        return real(model, task, split, seq_len, n=n, **kw)

    monkeypatch.setattr(loop, "evaluate", evaluate_)
    train(config(tmp_path, steps=4, eval_every=2, eval_samples=1001, eval_seq_len=[13]))
    assert calls == [("test", 12, 1000), ("test", 12, 1001), ("test", 13, 1001)]


def test_resume_takes_a_warm_up_and_a_precision_it_is_given(tmp_path):
    train(config(tmp_path, steps=2, warmup=2, precision="bf16"))
    with pytest.warns(UserWarning, match="--warmup 5 is longer than the run's 3 steps"):
        resumed = train(config(tmp_path, steps=3, warmup=5, precision="fp32", resume=True))
    assert (resumed["config"]["warmup"], resumed["config"]["precision"]) == (5, "fp32")


def test_init_from_is_not_applied_again_on_resuming(tmp_path):
    train(config(tmp_path, "first", steps=2))
    c = config(tmp_path, "second", steps=3, init_from=str(tmp_path / "first"))
    train(c)
    trained = load_checkpoint(tmp_path / "second" / "checkpoint.pt")["model"]
    train(dataclasses.replace(c, resume=True))                 # nothing left to train
    again = load_checkpoint(tmp_path / "second" / "checkpoint.pt")["model"]
    assert all(torch.equal(again[k], trained[k]) for k in trained)


def test_a_missing_test_file_fails_before_the_first_step(tmp_path, monkeypatch):
    """Only the training file present: the run trained until its first evaluation, then failed
    before its first checkpoint, losing that work. Now it fails at once."""
    task = build_task("smnist", data_dir=str(tmp_path / "empty"))
    task._cache["train"] = (torch.zeros(8, 784, dtype=torch.uint8),
                            torch.zeros(8, dtype=torch.long))
    monkeypatch.setattr(loop, "_build_task", lambda c: task)
    steps = []
    monkeypatch.setattr(loop, "train_batch", lambda *a: steps.append(1))
    with pytest.raises(FileNotFoundError, match="no t10k-images-idx3-ubyte"):
        train(config(tmp_path, task="smnist", model="lru", seq_len=None, steps=20,
                     eval_samples=None))
    assert steps == [] and not (tmp_path / "run" / "checkpoint.pt").exists()


def test_membrane_traces_show_active_neurons_even_when_the_first_example_is_silent():
    spikes = torch.zeros(3, 5, 6)
    spikes[0, :, 4] = 1.0          # the first example: neuron 4 alone, every step
    spikes[1:, :2, 1] = 1.0        # the others: neuron 1 most, then 5
    spikes[2, 0, 5] = 1.0
    assert busiest(spikes) == [4, 1, 5]
    spikes[0] = 0                  # a silent first example: the subset's most active instead
    assert busiest(spikes, 2) == [1, 5]


def test_a_data_dir_found_through_the_environment_is_saved(tmp_path, monkeypatch):
    """``$BISTABLE_DATA_DIR`` is saved as the run's data folder (full path): the run resumes and
    evaluates with the variable unset. Synthetic tasks keep None."""
    monkeypatch.setenv("BISTABLE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    c = resolve(config(tmp_path, task="smnist", model="lru", seq_len=None), build_task("smnist"))
    assert c.data_dir == str((tmp_path / "data").resolve())
    monkeypatch.setenv("BISTABLE_DATA_DIR", "data")  # relative: to where the run started
    c = resolve(config(tmp_path, task="smnist", model="lru", seq_len=None), build_task("smnist"))
    assert c.data_dir == str((tmp_path / "data").resolve())
    assert resolve(config(tmp_path), build_task("copy-first-input")).data_dir is None
    monkeypatch.delenv("BISTABLE_DATA_DIR")
    c = resolve(config(tmp_path, task="smnist", model="lru", seq_len=None), build_task("smnist"))
    assert c.data_dir is None  # the cache, as before
