"""Augmentation of the unsupervised epoch (ImageNet's RandomResizedCrop + flip, docs/algorithm.md §5, §10 #13).

A two-layer network on scikit-learn's 8x8 digits: each unsupervised run takes well under a second.
"""
import dataclasses
import importlib

import pytest
import torch

from rate_decoder import unsupervised
from rate_decoder.config import ConfigError, RunConfig, load_preset
from rate_decoder.data import load_dataset, to_float
from rate_decoder.network import SoftHebbNet
from rate_decoder.run import load_checkpoint, run
from rate_decoder.unsupervised import train_unsupervised, unsupervised_order

run_module = importlib.import_module("rate_decoder.run")  # `rate_decoder.run` is the function


def two_layer_digits(augment_kind="none", augment_pad=4):
    """The digits preset with a second layer (64 -> 32 channels, 8 -> 4 -> 2 px)."""
    preset = load_preset("digits")
    second = dataclasses.replace(preset.layers[0], out_channels=32)
    return dataclasses.replace(preset, layers=preset.layers + (second,), unsupervised=dataclasses.replace(
        preset.unsupervised, augment=augment_kind, augment_pad=augment_pad))


@pytest.fixture(scope="module")
def images():
    return load_dataset("digits").x_train[:400]


def trained(images, seed=0, mode="greedy", **kw):
    """The weights and batch-norm statistics after one unsupervised epoch (greedy: one per layer)."""
    torch.manual_seed(seed)
    net = SoftHebbNet(two_layer_digits(), rule="softhebb")
    train_unsupervised(net, images, mode, 10, seed=seed, progress=False, **kw)
    return net.state_dict()


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_none_is_bit_identical_to_the_unaugmented_loop(images):
    """The loop before augmentation existed, written out: ``"none"`` (and the default) must give its exact bits."""
    torch.manual_seed(0)
    net = SoftHebbNet(two_layer_digits(), rule="softhebb")
    order = unsupervised_order(len(images), 0)
    with torch.no_grad():
        for stage in range(len(net.blocks)):
            net.set_learning_block(stage)
            for i in range(0, len(order), 10):
                x = to_float(images[torch.from_numpy(order[i:i + 10])], None, "none")
                net.blocks[stage].learn(net.features(x, upto=stage))
            net.set_learning_block(None)
    reference = net.state_dict()
    assert same(trained(images, augmentation="none"), reference)
    assert same(trained(images), reference)


def test_augmented_weights_differ_but_are_reproducible(images):
    a = trained(images, augmentation="resized_crop_flip")
    b = trained(images, augmentation="resized_crop_flip")
    assert same(a, b)
    assert not same(a, trained(images, augmentation="none"))
    assert not same(a, trained(images, seed=1, augmentation="resized_crop_flip"))
    assert not same(a, trained(images, augmentation="crop_flip", augment_pad=2))
    consecutive = trained(images, mode="consecutive", augmentation="resized_crop_flip")
    assert same(consecutive, trained(images, mode="consecutive", augmentation="resized_crop_flip"))
    with pytest.warns(DeprecationWarning, match="'simultaneous' is deprecated"):  # the former name of consecutive
        assert same(consecutive, trained(images, mode="simultaneous", augmentation="resized_crop_flip"))


def test_augmentation_leaves_the_global_generator_alone(images):
    """The draws come from per-batch generators: torch's global stream is the unaugmented run's."""
    states = []
    for kind in ("none", "resized_crop_flip"):
        torch.manual_seed(0)
        net = SoftHebbNet(two_layer_digits(), rule="softhebb")
        train_unsupervised(net, images, seed=0, progress=False, augmentation=kind)
        states.append(torch.get_rng_state())
    assert torch.equal(*states)


def test_every_greedy_layer_sees_the_same_augmented_batches(images, monkeypatch):
    real_augment, seen = unsupervised.augment, []

    def recording_augment(x, *args, **kw):
        y = real_augment(x, *args, **kw)
        seen.append(y.clone())
        return y

    monkeypatch.setattr(unsupervised, "augment", recording_augment)
    trained(images, augmentation="resized_crop_flip")
    n_batches = len(images) // 10
    assert len(seen) == 2 * n_batches
    assert all(torch.equal(seen[k], seen[n_batches + k]) for k in range(n_batches))
    assert not torch.equal(seen[0], to_float(images[torch.from_numpy(unsupervised_order(len(images), 0)[:10])],
                                             None, "none"))


def config(augment_kind="resized_crop_flip", **kw):
    options = dict(rule="softhebb", mode="greedy", seed=0, normalisation="global", readout_epochs=3, n_train=400,
                   n_test=100)
    options.update(kw)
    return RunConfig(two_layer_digits(augment_kind), **options)


def test_resume_after_the_first_layer_reproduces_the_augmented_run(tmp_path, monkeypatch):
    full = run(config(), tmp_path / "full", progress=False)
    real_save = run_module.save_checkpoint

    def interrupting_save(*args, **kw):
        real_save(*args, **kw)
        raise KeyboardInterrupt  # right after the first layer's checkpoint

    monkeypatch.setattr(run_module, "save_checkpoint", interrupting_save)
    with pytest.raises(KeyboardInterrupt):
        run(config(), tmp_path / "cut", progress=False)
    monkeypatch.setattr(run_module, "save_checkpoint", real_save)
    assert load_checkpoint(tmp_path / "cut" / "checkpoint.pt")[2]["blocks_done"] == 1
    torch.manual_seed(12345)  # the resumed process's global generator is in some other state
    resumed = run(config(), tmp_path / "cut", resume=True, progress=False)
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)["net"]
    b = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["net"]
    assert same(a, b)
    assert resumed["history"] == full["history"]
    run(config("none"), tmp_path / "plain", progress=False)
    assert not same(a, torch.load(tmp_path / "plain" / "checkpoint.pt", weights_only=True)["net"])


def test_unknown_kind_fails_before_training(tmp_path, monkeypatch, images):
    def must_not_run(*args, **kw):
        raise AssertionError("training started before the config was checked")

    for name in ("train_unsupervised", "train_readout", "load_dataset"):
        monkeypatch.setattr(run_module, name, must_not_run)
    with pytest.raises(ConfigError, match=r"\[unsupervised\].* unknown augmentation 'rotate'"):
        config("rotate")
    bad_pad = config("crop_flip").to_dict()
    bad_pad["preset"]["unsupervised"]["augment_pad"] = 8
    with pytest.raises(ConfigError, match=r"\[unsupervised\] augment_pad must be an integer in \[0, image_size\)"):
        run(bad_pad, tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad").exists()

    torch.manual_seed(0)
    net = SoftHebbNet(two_layer_digits(), rule="softhebb")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(ValueError, match="unknown unsupervised augmentation 'rotate'"):
        train_unsupervised(net, images, progress=False, augmentation="rotate")
    assert same(net.state_dict(), before)


def test_presets_follow_the_reference():
    """ImageNet's unsupervised epoch is augmented in the reference code; ImageNette's is not (docs/algorithm.md §5)."""
    assert load_preset("imagenet").unsupervised.augment == "resized_crop_flip"
    assert load_preset("imagenette").unsupervised.augment == "none"
    assert load_preset("cifar10").unsupervised.augment == "none"
