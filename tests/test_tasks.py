"""The task registry: shapes, targets, fixed evaluation sets, losses and bad arguments."""

import math

import numpy as np
import pytest
import torch

from bistable.data.tasks import (
    N_MARKED,
    TASK_NAMES,
    build_task,
    describe_tasks,
    held_out,
    permutation,
)
from bistable.nn.encoders import rate_code


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_registry_lists_every_task_once_with_a_description():
    names = [name for name, _ in describe_tasks()]
    assert names == list(TASK_NAMES)
    assert {"copy-first-input", "denoising", "smnist", "psmnist", "spiking-mnist",
            "spiking-fashion-mnist", "nmnist"} <= set(names)
    assert all(text and "\n" not in text for _, text in describe_tasks())


def test_unknown_task_names_the_choices():
    with pytest.raises(ValueError, match="unknown task 'copy'.*copy-first-input.*psmnist"):
        build_task("copy")


@pytest.mark.parametrize("kwargs, message", [
    (dict(name="copy-first-input", gap=3), "--gap does not apply"),
    (dict(name="denoising", pad=3), "--pad does not apply"),
    (dict(name="smnist", pad=-1), "--pad must be >= 0"),
    (dict(name="denoising", pad_min=3), "--pad-min does not apply"),
    (dict(name="psmnist", pad=10, pad_min=11), r"--pad-min must be at most --pad \(10\), got 11"),
    (dict(name="psmnist", pad_min=1), r"--pad-min must be at most --pad \(0\), got 1"),
    (dict(name="copy-first-input", pad_every=3), "--pad-every does not apply"),
    (dict(name="psmnist", pad=10, pad_every=0), "--pad-every must be >= 1, got 0"),
    (dict(name="psmnist", pad=10, pad_every=-2), "--pad-every must be >= 0, got -2"),
    (dict(name="denoising", data_dir="/tmp"), "--data-dir does not apply"),
    (dict(name="copy-first-input", shift=1), r"--shift does not apply .* not images"),
    (dict(name="spiking-mnist", shift=-1), r"--shift must be in 0 … 27 .* got -1"),
    (dict(name="psmnist", shift=28), r"--shift must be in 0 … 27 \(images of 28 × 28"),
    (dict(name="nmnist", shift=34), r"--shift must be in 0 … 33 \(images of 34 × 34"),
])
def test_flags_that_do_not_fit_the_task_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_task(kwargs.pop("name"), **kwargs)


@pytest.mark.parametrize("pad, every, seq_len, steps", [
    (0, None, 784, [783]),
    (100, None, 884, [883]),
    (100, 50, 884, [783, 833, 883]),
    (100, 30, 884, [783, 813, 843, 873, 883]),
    (100, 30, 800, [783, 799]),     # a shorter training pad (--pad-min): up to its own end
    (100, 500, 884, [783, 883]),
    (0, 10, 784, [783]),
])
def test_pad_every_reads_the_answer_from_the_last_pixel_to_the_end(pad, every, seq_len, steps):
    assert build_task("psmnist", pad=pad, pad_every=every).readout_steps(seq_len) == steps


def test_train_loss_averages_the_loss_over_the_readout_steps():
    task = build_task("psmnist", pad=100, pad_every=50)
    y = torch.randn(3, 884, 10, dtype=torch.float64)
    target = torch.tensor([4, 0, 9])
    want = sum(task.loss(y[:, t], target) for t in (783, 833, 883)) / 3
    torch.testing.assert_close(task.train_loss(y, target), want)
    torch.testing.assert_close(build_task("psmnist", pad=100).train_loss(y, target),
                               task.loss(y[:, -1], target))


def test_copy_first_input_target_is_the_first_value():
    task = build_task("copy-first-input")
    x, target = task.batch("train", 7, 5, gen())
    assert x.shape == (5, 7, 1) and target.shape == (5, 1)
    assert torch.equal(target, x[:, 0])
    x2, _ = task.batch("train", 7, 5, gen())
    assert torch.equal(x, x2)                                  # the generator decides the batch
    assert task.metrics(torch.zeros(5, 1), target)["accuracy"] is None


def test_denoising_marks_five_values_before_the_gap_and_asks_them_in_order():
    task = build_task("denoising", gap=10)
    x, target = task.batch("train", 30, 64, gen())
    assert x.shape == (64, 30, 2) and target.shape == (64, N_MARKED)
    marker = x[..., 1]
    assert torch.equal(marker.sum(1), torch.full((64,), float(N_MARKED)))
    assert marker[:, 30 - 10:].sum() == 0                      # nothing marked in the gap
    seen = torch.cat([task.batch("train", 30, 64, gen(s))[0][..., 1] for s in range(4)]).sum(0)
    assert (seen[:30 - 10] > 0).all()                          # up to the gap's last step
    for b in range(64):
        assert torch.equal(target[b], x[b, marker[b] == 1, 0])  # time order
    with pytest.raises(ValueError, match="at least 15"):
        task.seq_len(14)


def test_evaluation_set_is_fixed_by_length_not_by_call():
    task = build_task("copy-first-input")
    first = list(task.eval_batches("test", 9, 10, 4))
    again = list(task.eval_batches("test", 9, 10, 4))
    assert [x.shape[0] for x, _ in first] == [4, 4, 2]
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again, strict=True))
    other = next(task.eval_batches("test", 10, 10, 4))[0]  # another length: another seed
    assert other[0, 0, 0] != first[0][0][0, 0, 0]  # one seed would draw the same first value


def test_evaluation_subset_of_a_class_sorted_split_covers_the_classes():
    task = build_task("smnist")
    images = torch.zeros(1000, 784, dtype=torch.uint8)
    labels = torch.arange(1000) // 100                     # sorted by class, as N-MNIST's files
    task._cache.update(test=(images, labels))
    subset = torch.cat([y for _, y in task.eval_batches("test", 784, 50, 16)])
    assert subset.numel() == 50 and len(subset.unique()) >= 8
    again = torch.cat([y for _, y in task.eval_batches("test", 100, 50, 7)])
    assert torch.equal(subset, again)                      # the same examples at every length
    whole = torch.cat([y for _, y in task.eval_batches("test", 784, None, 300)])
    assert torch.equal(whole, labels)


def test_a_validation_split_is_held_out_of_the_training_file():
    task = build_task("smnist", validation=True)
    labels = torch.arange(50)                               # the label names the example
    task._cache.update(train=(torch.zeros(50, 784, dtype=torch.uint8), labels))
    assert (task.size("train"), task.size("val")) == (45, 5)   # VAL_FRACTION = 0.1
    train = task.examples("train", torch.arange(45), 784, gen())[1]
    val = task.examples("val", torch.arange(5), 784, gen())[1]
    assert sorted(torch.cat([train, val]).tolist()) == list(range(50))  # a partition
    assert val.tolist() != [45, 46, 47, 48, 49]             # a random subset, not the tail
    again = build_task("smnist", validation=True)
    again._cache.update(train=task._cache["train"])
    assert torch.equal(again.examples("val", torch.arange(5), 784, gen())[1], val)  # fixed
    plain = build_task("smnist")
    plain._cache.update(train=task._cache["train"])
    assert plain.size("train") == 50
    with pytest.raises(ValueError, match="no 'val' split; build it with validation=True"):
        plain.size("val")
    with pytest.raises(ValueError, match="unknown split 'valid'; expected one of"):
        task.size("valid")


def test_a_synthetic_validation_set_is_fixed_and_not_the_test_set():
    task = build_task("copy-first-input")
    val, again, test = ([x for x, _ in task.eval_batches(split, 9, 4, 4)]
                        for split in ("val", "val", "test"))
    assert torch.equal(val[0], again[0]) and not torch.equal(val[0], test[0])


def fake_mnist(task, n=6):
    images = torch.arange(n * 784, dtype=torch.int64).reshape(n, 784).remainder(256).to(torch.uint8)
    labels = torch.arange(n) % 10
    task._cache.update(train=(images, labels), test=(images, labels))
    return images, labels


def test_psmnist_permutes_pixels_with_a_fixed_order_and_pads_zeros():
    task = build_task("psmnist", pad=5)
    images, labels = fake_mnist(task)
    assert task.seq_len(None) == 789
    with pytest.raises(ValueError, match="784 \\+ --pad = 789"):
        task.seq_len(800)
    x, y = task.examples("train", torch.tensor([2, 0]), 789, gen())
    assert x.shape == (2, 789, 1) and torch.equal(y, labels[[2, 0]])
    assert torch.equal(x[:, :784, 0], images[[2, 0]][:, permutation()].float() / 255)
    assert x[:, 784:].abs().sum() == 0
    # the published runs' order: seed 92916 (a changed seed would make every psMNIST checkpoint
    # and table incomparable); compared with torch's own draw, not literals, which torch may vary
    pinned = torch.randperm(784, generator=torch.Generator().manual_seed(92916))
    assert torch.equal(permutation(), pinned)
    assert not torch.equal(permutation(), torch.arange(784))
    plain = build_task("smnist")
    fake_mnist(plain)
    xs, _ = plain.examples("test", torch.tensor([1]), 784, gen())
    assert torch.equal(xs[0, :, 0], images[1].float() / 255)


def test_classification_loss_and_accuracy():
    task = build_task("smnist")
    pred = torch.tensor([[5.0, 0.0], [0.0, 5.0], [5.0, 0.0]])
    target = torch.tensor([0, 1, 1])
    m = task.metrics(torch.nn.functional.pad(pred, (0, 8)), target)
    assert m["mse"] is None and m["accuracy"] == pytest.approx(2 / 3)
    # cross-entropy of the logits over 10 classes: two right at 5 against nine 0s, one wrong
    right, wrong = math.log(1 + 9 * math.exp(-5)), math.log(math.exp(5) + 9)
    assert m["loss"] == pytest.approx((2 * right + wrong) / 3)


def test_spiking_mnist_rate_codes_the_image():
    task = build_task("spiking-mnist")
    images = torch.zeros(2, 784, dtype=torch.uint8)
    images[:, :392] = 255
    task._cache.update(train=(images, torch.tensor([3, 4])))
    x, y = task.examples("train", torch.tensor([0, 1]), 220, gen())
    assert x.shape == (2, 220, 784) and torch.equal(y, torch.tensor([3, 4]))
    assert x[:, :20].sum() == 0 and x[:, :, 392:].sum() == 0
    assert 0.2 < x[:, 20:, :392].mean() < 0.3                   # 0.25 per step at full intensity


@pytest.mark.gpu
def test_spiking_examples_are_drawn_on_the_device():
    task = build_task("spiking-mnist")
    images = torch.zeros(64, 784, dtype=torch.uint8)
    images[:, :392] = 255
    task._cache.update(train=(images, torch.arange(64)))
    x, y = task.examples("train", torch.arange(64), 220, gen(), "cuda")
    again, _ = task.examples("train", torch.arange(64), 220, gen(), "cuda")
    assert x.is_cuda and y.is_cuda and torch.equal(x, again)
    assert torch.equal(y.cpu(), torch.arange(64))
    assert x[:, :20].sum() == 0 and x[:, :, 392:].sum() == 0
    assert 0.24 < x[:, 20:, :392].mean() < 0.26


def test_nmnist_bins_recordings_into_flat_frames(tmp_path, monkeypatch):
    from bistable.data import nmnist

    rng = np.random.default_rng(0)
    for split, digits in (("Train", (0, 3)), ("Test", (1,))):
        for digit in digits:
            (tmp_path / split / str(digit)).mkdir(parents=True)
            events = np.zeros(50, dtype=[("x", "i2"), ("y", "i2"), ("t", "i8"), ("p", "i2")])
            events["x"], events["y"] = rng.integers(0, 34, 50), rng.integers(0, 34, 50)
            events["t"], events["p"] = np.sort(rng.integers(0, 300_000, 50)), rng.integers(0, 2, 50)
            nmnist.write_events(tmp_path / split / str(digit) / "00001.bin", events)
    task = build_task("nmnist", data_dir=str(tmp_path))
    assert task.size("train") == 2 and task.size("test") == 1
    x, y = task.examples("train", torch.tensor([1, 0]), 10, gen())
    assert x.shape == (2, 10, 2 * 34 * 34) and y.tolist() == [3, 0]
    assert x.sum() == 100                                        # every event counted once
    assert task.data_note() is None
    (tmp_path / "SIMULATED.json").write_text("{}")
    assert "SIMULATED" in task.data_note()
    # found as MNIST is (docs/data.md): a root holding nmnist/, then $BISTABLE_DATA_DIR/nmnist
    # (the task once wanted --data-dir pointing at the recordings themselves)
    root = tmp_path / "root"
    (root / "nmnist").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"no N-MNIST folder \S*root/nmnist/Train"):
        build_task("nmnist", data_dir=str(root)).size("train")
    (tmp_path / "Train").rename(root / "nmnist" / "Train")
    (tmp_path / "Test").rename(root / "nmnist" / "Test")
    assert build_task("nmnist", data_dir=str(root)).size("test") == 1
    monkeypatch.setenv("BISTABLE_DATA_DIR", str(root))
    assert build_task("nmnist").size("train") == 2


def test_a_small_training_file_holds_out_at_least_one_example_each_part_in_file_order():
    train, val = held_out(3)
    assert (len(train), len(val)) == (2, 1)
    assert sorted(torch.cat([train, val]).tolist()) == [0, 1, 2]
    train, val = held_out(50)
    assert torch.equal(train, train.sort().values) and torch.equal(val, val.sort().values)
    with pytest.raises(ValueError, match="cannot hold out a validation set from 1 training"):
        held_out(1)


def test_pad_min_may_equal_pad():
    task = build_task("psmnist", pad=10, pad_min=10)
    assert {task.train_seq_len(794, gen(s)) for s in range(5)} == {794}


def test_spiking_examples_on_the_cpu_are_drawn_with_the_given_generator():
    task = build_task("spiking-mnist")
    images = torch.randint(0, 256, (3, 784), generator=gen(1)).to(torch.uint8)
    task._cache.update(train=(images, torch.arange(3)))
    x, _ = task.examples("train", torch.tensor([2, 0]), 30, gen(5))
    want = rate_code(images[[2, 0]].float() / 255, steps=10, silent=20, generator=gen(5))
    assert torch.equal(x, want)


def test_the_shortest_length_a_task_can_be_posed_at():
    assert build_task("denoising", gap=10).seq_len(15) == 15   # the gap plus the 5 marks
    assert build_task("copy-first-input").seq_len(1) == 1


def test_holding_out_a_validation_set_leaves_the_test_file_whole():
    task = build_task("smnist", validation=True)
    task._cache.update(train=(torch.zeros(50, 784, dtype=torch.uint8), torch.arange(50)),
                       test=(torch.zeros(7, 784, dtype=torch.uint8), torch.arange(7)))
    assert task.size("test") == 7
    assert task.examples("test", torch.arange(7), 784, gen())[1].tolist() == list(range(7))


def moved(image, dy, dx):
    """The plain definition: ``out[y, x] = image[y − dy, x − dx]``, 0 outside the image."""
    height, width = image.shape[-2:]
    out = torch.zeros_like(image)
    for y in range(height):
        for x in range(width):
            if 0 <= y - dy < height and 0 <= x - dx < width:
                out[..., y, x] = image[..., y - dy, x - dx]
    return out


@pytest.mark.parametrize("shape, max_shift", [((7, 5, 6), 2), ((5, 3, 2, 4, 9), 3), ((4, 1, 1), 0)])
def test_random_shift_translates_each_example_by_its_own_draw_with_zero_fill(shape, max_shift):
    from bistable.data.augment import random_shift

    x = torch.rand(shape, dtype=torch.float64, generator=gen(1)) + 0.5  # no zeros of its own
    out = random_shift(x, max_shift, gen(2))
    for b in range(shape[0]):   # exactly one translation within the bound gives each example
        offsets = range(-max_shift, max_shift + 1)
        fits = [(dy, dx) for dy in offsets for dx in offsets
                if torch.equal(out[b], moved(x[b], dy, dx))]
        assert len(fits) == 1
    if max_shift:
        assert not torch.equal(out, x) and (out == 0).any()
    assert torch.equal(out, random_shift(x, max_shift, gen(2)))   # the generator decides


def test_random_shift_draws_every_offset_and_none_at_zero():
    from bistable.data.augment import random_shift

    x = torch.zeros(400, 5, 5)
    x[:, 2, 2] = 1                              # a single pixel: its new place is the offset
    out = random_shift(x, 2, gen(3))
    offsets = {(int(i) // 5 - 2, int(i) % 5 - 2) for i in out.flatten(1).argmax(1)}
    assert offsets == {(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)}
    g = gen(4)
    assert random_shift(x, 0, g) is x and torch.equal(g.get_state(), gen(4).get_state())
    with pytest.raises(ValueError, match=r"expected images \(B, ..., H, W\), got shape \(5, 5\)"):
        random_shift(x[0], 1, g)
    with pytest.raises(ValueError, match=r"0 … 4 \(images of 5 × 5\), got 5"):
        random_shift(x, 5, g)


@pytest.mark.parametrize("name", ["smnist", "psmnist", "spiking-mnist"])
def test_shift_moves_training_examples_only(name):
    shifted, plain = build_task(name, shift=2), build_task(name)
    images, _ = fake_mnist(shifted, n=12)
    fake_mnist(plain, n=12)
    index, seq_len = torch.arange(12), plain.seq_len(None)
    for split in ("test", "train"):
        x, y = shifted.examples(split, index, seq_len, gen())
        x0, y0 = plain.examples(split, index, seq_len, gen())
        assert torch.equal(y, y0)
        assert torch.equal(x, x0) == (split == "test")
    if name == "smnist":  # the pixels of each training example are its image, moved
        grid = images.view(12, 28, 28).float() / 255
        for b in range(12):
            assert any(torch.equal(x[b, :, 0].view(28, 28), moved(grid[b], dy, dx))
                       for dy in range(-2, 3) for dx in range(-2, 3))
    held = build_task(name, shift=2, validation=True)
    fake_mnist(held, n=12)
    val, again = (held.examples("val", torch.tensor([0]), seq_len, gen()) for _ in range(2))
    assert torch.equal(val[0], again[0])        # the validation split is not moved either


def test_shift_moves_nmnist_frames_alike_in_every_bin(tmp_path):
    from bistable.data import nmnist

    events = np.zeros(40, dtype=[("x", "i2"), ("y", "i2"), ("t", "i8"), ("p", "i2")])
    events["x"], events["y"] = 17, 16                   # one pixel, far from the border
    events["t"], events["p"] = np.arange(40) * 7_000, np.arange(40) % 2
    (tmp_path / "Train" / "5").mkdir(parents=True)
    nmnist.write_events(tmp_path / "Train" / "5" / "00001.bin", events)
    task = build_task("nmnist", data_dir=str(tmp_path), shift=3)
    x, _ = task.examples("train", torch.zeros(30, dtype=torch.long), 8, gen())
    frames = x.view(30, 8, 2, 34, 34)
    assert frames.sum() == 30 * 40                      # nothing moved out of the sensor
    where = {tuple(ix[3:].tolist()) for ix in frames.nonzero()}  # (y, x) of the events
    assert len(where) > 1 and all(abs(y - 16) <= 3 and abs(x - 17) <= 3 for y, x in where)
    for b in range(30):                                 # one place per recording, all bins
        assert len({tuple(ix[2:].tolist()) for ix in frames[b].nonzero()}) == 1
