"""ImageNet-style readout augmentation, the run's up-front config check, and class-balanced ImageFolder subsets."""
import dataclasses
import importlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from rate_decoder.augment import RESIZED_CROP_RATIO, RESIZED_CROP_SCALE, augment, resized_crop_params
from rate_decoder.config import ConfigError, RunConfig, load_preset
from rate_decoder.data import ImageFolderImages, balanced_subset_index, load_dataset
from rate_decoder.run import run

run_module = importlib.import_module("rate_decoder.run")  # `rate_decoder.run` is the function


def coordinate_image(batch, height, width, seed=0):
    """Channel 0 holds each pixel's row, channel 1 its column, channel 2 random content."""
    rows = torch.arange(height, dtype=torch.float32).view(1, height, 1).expand(batch, height, width)
    cols = torch.arange(width, dtype=torch.float32).view(1, 1, width).expand(batch, height, width)
    noise = torch.rand(batch, height, width, generator=torch.Generator().manual_seed(seed))
    return torch.stack([rows, cols, noise], dim=1).contiguous()


def read_box(out, height, width):
    """The box and flip an output was made from, read off its coordinate channels."""
    top, bottom = out[0].min().item(), out[0].max().item()
    first_col, last_col = out[1, :, 0].mean().item(), out[1, :, -1].mean().item()
    left, right = min(first_col, last_col), max(first_col, last_col)
    box = [round(v) for v in (top, left, bottom - top + 1, right - left + 1)]
    assert [top, left, bottom, right] == pytest.approx([box[0], box[1], box[0] + box[2] - 1, box[1] + box[3] - 1],
                                                       abs=1e-4), "the corners of the output are pixel centres"
    return (*box, last_col < first_col)


@pytest.mark.parametrize("height, width", [(40, 40), (24, 36)])
def test_resized_crop_flip_is_a_resized_box_within_the_scale_and_ratio_bounds(height, width):
    x = coordinate_image(256, height, width)
    torch.manual_seed(0)
    y = augment(x, "resized_crop_flip")
    assert y.shape == x.shape and y.dtype == x.dtype
    area, (s_lo, s_hi), (r_lo, r_hi) = height * width, RESIZED_CROP_SCALE, RESIZED_CROP_RATIO
    fractions, flips, tops = [], 0, set()
    for b in range(len(x)):
        top, left, h, w, flipped = read_box(y[b], height, width)
        assert 0 <= top and top + h <= height and 0 <= left and left + w <= width
        # torchvision rounds w = sqrt(A s r) and h = sqrt(A s / r) to integers: some (s, r) in the bounds gives (w, h)
        whole_image_fallback = (h, w) == (height, width)
        assert whole_image_fallback or (
            (w + 0.5) * (h + 0.5) >= s_lo * area and (w - 0.5) * (h - 0.5) <= s_hi * area
            and (w + 0.5) / (h - 0.5) >= r_lo and (w - 0.5) / (h + 0.5) <= r_hi), (b, top, left, h, w)
        box = x[b:b + 1, :, top:top + h, left:left + w]
        expected = F.interpolate(box, size=(height, width), mode="bilinear", align_corners=False)[0]
        expected = expected.flip(-1) if flipped else expected
        torch.testing.assert_close(y[b], expected, rtol=0, atol=1e-5)  # content too, not only the coordinates
        fractions.append(h * w / area)
        flips += flipped
        tops.add(top)
    assert min(fractions) < 0.2 and max(fractions) > 0.8  # the whole scale range is used, not one box size
    assert 128 - 4 * 8 <= flips <= 128 + 4 * 8  # a fair coin: 4 standard deviations
    assert len(tops) > 5  # the offsets vary


@pytest.mark.parametrize("height, width", [(160, 160), (24, 36)])
def test_boxes_follow_torchvisions_random_resized_crop_distribution(height, width):
    from torchvision.transforms import RandomResizedCrop

    n = 4000
    torch.manual_seed(0)
    top, left, h, w, _ = resized_crop_params(n, height, width)
    ours = np.stack([(h * w).numpy() / (height * width), np.log(w.numpy() / h.numpy()),
                     (top.numpy() + h.numpy() / 2) / height, (left.numpy() + w.numpy() / 2) / width])
    image = torch.zeros(1, height, width)
    reference = np.array([RandomResizedCrop.get_params(image, list(RESIZED_CROP_SCALE), list(RESIZED_CROP_RATIO))
                          for _ in range(n)], dtype=np.float64).T  # rows i, j, h, w
    i, j, rh, rw = reference
    theirs = np.stack([rh * rw / (height * width), np.log(rw / rh), (i + rh / 2) / height, (j + rw / 2) / width])
    # area fraction, log aspect ratio, box centre: equal means and spreads within ~4 standard errors
    assert ours.mean(1) == pytest.approx(theirs.mean(1), abs=0.02)
    assert ours.std(1) == pytest.approx(theirs.std(1), abs=0.02)


def test_resized_crop_flip_is_reproducible_under_a_seed():
    x = torch.rand(16, 3, 32, 32)
    torch.manual_seed(7)
    a = augment(x, "resized_crop_flip")
    torch.manual_seed(7)
    b = augment(x, "resized_crop_flip")
    c = augment(x, "resized_crop_flip")
    assert torch.equal(a, b) and not torch.equal(b, c)
    assert not torch.equal(a, x)


def test_impossible_boxes_fall_back_to_torchvisions_centred_crop():
    x = coordinate_image(8, 10, 40)  # aspect ratio 4 with a scale that fits no ratio-bounded box
    torch.manual_seed(0)
    y = augment(x, "resized_crop_flip", scale=(1.0, 1.0))
    for b in range(len(y)):
        top, left, h, w, _ = read_box(y[b], 10, 40)
        assert (top, left, h, w) == (0, (40 - round(10 * 4 / 3)) // 2, 10, round(10 * 4 / 3))
    with pytest.raises(ValueError, match="scale"):
        augment(x, "resized_crop_flip", scale=(0.5, 0.2))


def test_bad_config_fails_before_any_training(tmp_path, monkeypatch):
    def must_not_run(*args, **kw):
        raise AssertionError("training started before the config was checked")

    for name in ("train_unsupervised", "train_readout", "train_backprop", "load_dataset"):
        monkeypatch.setattr(run_module, name, must_not_run)
    good = RunConfig(load_preset("digits")).to_dict()
    bad_readout = dict(good, preset=dict(good["preset"], readout=dict(good["preset"]["readout"], augment="rotate")))
    bad_cases = [
        (bad_readout, r"\[readout\] unknown augmentation 'rotate'"),
        (dict(good, rule="oja"), "rule 'oja'"),
        (dict(good, mode="layerwise"), "training mode 'layerwise'"),
        (dict(good, normalisation="l2"), "normalisation 'l2'"),
        (dict(good, n_train=0), "n_train must be a positive integer"),
    ]
    for config, message in bad_cases:
        with pytest.raises(ConfigError, match=message):
            run(config, tmp_path / "bad", progress=False)  # plain data is checked into a RunConfig first
        assert not (tmp_path / "bad").exists()  # not even a run directory is made
    several = dict(bad_readout, rule="oja")
    with pytest.raises(ConfigError, match="augmentation 'rotate'.*rule 'oja'"):  # every problem at once
        RunConfig.from_dict(several)

    def unknown_synapse(layer_index):
        raise ValueError("unknown synapse model 'memristor9'")

    with pytest.raises(ValueError, match="memristor9"):
        run(good, tmp_path / "bad", progress=False, synapse_factory=unknown_synapse)
    with pytest.raises(ConfigError, match="backprop"):
        run(dict(good, rule="backprop"), tmp_path / "bad", progress=False, synapse_factory=lambda i: None)
    with pytest.raises(ConfigError, match="backprop"):
        RunConfig(load_preset("digits"), rule="backprop", synapse="pcm")
    assert not (tmp_path / "bad").exists()


def make_class_tree(root, n_classes=4, per_class=5, size=12):
    """``root/{train,val}/class<k>/*.png``, all images of class ``k`` a flat grey level ``20 k``."""
    for split in ("train", "val"):
        for k in range(n_classes):
            folder = root / split / f"class{k}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(np.full((size, size, 3), 20 * k, np.uint8)).save(folder / f"{i}.png")
    return root


@pytest.mark.parametrize("budget", [None, 0], ids=["in_memory", "streamed"])
def test_imagefolder_subset_is_class_balanced(tmp_path, budget):
    root = make_class_tree(tmp_path / "tree")
    ds = load_dataset("imagefolder", root, image_size=12, image_memory_budget=budget)
    assert isinstance(ds.x_train, ImageFolderImages) == (budget == 0)
    sub = ds.subset(8, 6)
    assert torch.bincount(sub.y_train, minlength=4).tolist() == [2, 2, 2, 2]
    assert sorted(torch.bincount(sub.y_test, minlength=4).tolist()) == [1, 1, 2, 2]
    for x, y in ((sub.x_train, sub.y_train), (sub.x_test, sub.y_test)):
        assert torch.equal(x[:][:, 0, 0, 0], (20 * y).to(torch.uint8))  # each image still carries its label
    assert torch.equal(ds.subset(8, 6).y_train, sub.y_train)  # a fixed draw: runs and `softhebb eval` agree
    few = ds.subset(3, None).y_train
    assert len(set(few.tolist())) == 3  # fewer images than classes: still one class each
    assert len(ds.subset(None, None).x_train) == 20


def test_balanced_index_and_npz_subsets():
    labels = torch.arange(6).repeat_interleave(50)  # class-sorted
    index = balanced_subset_index(labels, 60)
    assert torch.bincount(labels[index]).tolist() == [10] * 6
    assert torch.equal(index, index.sort().values) and len(index.unique()) == 60
    assert not torch.equal(index % 50, torch.arange(10).repeat(6))  # not each class's first files
    digits = load_dataset("digits")  # not class-sorted: the first N images, as before
    sub = digits.subset(7, 5)
    assert torch.equal(sub.x_train, digits.x_train[:7]) and torch.equal(sub.y_test, digits.y_test[:5])


def test_imagenet_presets_validate_and_a_resized_crop_readout_runs(tmp_path):
    for name in ("imagenette", "imagenet", "stl10", "cifar10"):
        RunConfig(load_preset(name), rule="softhebb", mode="greedy", seed=0)
    root = make_class_tree(tmp_path / "tree", per_class=4, size=20)
    preset = load_preset("imagenette", layers=2, width_factor=1 / 16)
    preset = dataclasses.replace(preset, image_size=12, readout=dataclasses.replace(preset.readout, epochs=2,
                                                                                    batch_size=4))
    assert preset.readout.augment == "resized_crop_flip"
    config = RunConfig(preset, rule="softhebb", mode="greedy", seed=0, data_dir=str(root), n_train=8, n_test=4)
    first = run(config, tmp_path / "a", progress=False)
    again = run(config, tmp_path / "b", progress=False)
    assert first["n_train"] == 8 and first["n_test"] == 4 and len(first["history"]) == 2
    assert first["history"] == again["history"]  # augmented epochs are seeded: the same run twice
