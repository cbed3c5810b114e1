"""ImageFolder trees streamed from disk and the memory-mapped feature cache give what the in-RAM paths give."""
import copy
import dataclasses
import errno
import importlib
import os

import numpy as np
import pytest
import torch
from PIL import Image

from rate_decoder import data as data_module
from rate_decoder import features as features_module
from rate_decoder.config import RunConfig, load_preset
from rate_decoder.data import DataError, ImageFolderImages, balanced_subset_index, iter_batches, load_dataset
from rate_decoder.features import FeatureCacheError, extract_features
from rate_decoder.network import SoftHebbNet
from rate_decoder.readout import accuracy, train_readout
from rate_decoder.run import run
from rate_decoder.unsupervised import train_unsupervised

run_module = importlib.import_module("rate_decoder.run")  # `rate_decoder.run` is the function

SIZE = 24
#: (width, height, PIL mode): up- and down-scaling, non-square, grey and alpha images all become RGB SIZE x SIZE
SHAPES = [(37, 23, "RGB"), (50, 64, "RGB"), (16, 16, "L"), (80, 41, "RGBA"), (29, 90, "RGB"), (24, 24, "RGB")]


def make_tree(root, classes=("cat", "dog"), n_val=3, seed=0):
    """``root/{train,val}/<class>/*.png``: 6 training and ``n_val`` validation images per class."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", len(SHAPES)), ("val", n_val)):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i, (w, h, mode) in enumerate(SHAPES[:n]):
                channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
                pixels = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
                pixels[..., 0] //= 2 + c  # the classes differ a little in colour
                Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode).save(folder / f"{i}.png")
    return root


def torchvision_reference(folder, size=SIZE):
    """The pixels and labels of the former loader: torchvision's ImageFolder, Resize((s, s)), PILToTensor."""
    import torchvision
    from torchvision import transforms

    t = transforms.Compose([transforms.Resize((size, size)), transforms.PILToTensor()])
    ds = torchvision.datasets.ImageFolder(str(folder), transform=t)
    xs, ys = zip(*(ds[i] for i in range(len(ds))))
    return torch.stack(xs), torch.tensor(ys)


def small_preset(augment_kind="none"):
    """The imagenette network cut to 2 layers (3 and 12 neurons) at 24 px: a run takes a second or two."""
    preset = load_preset("imagenette", layers=2, width_factor=1 / 16)
    return dataclasses.replace(preset, image_size=SIZE, readout=dataclasses.replace(
        preset.readout, augment=augment_kind, epochs=3, batch_size=4))


def test_streamed_images_match_torchvision_imagefolder(tmp_path):
    root = make_tree(tmp_path / "tree")
    ref_x, ref_y = torchvision_reference(root / "train")
    ref_val, _ = torchvision_reference(root / "val")
    ds = load_dataset("imagefolder", root, image_size=SIZE, image_memory_budget=0)
    x = ds.x_train
    assert isinstance(x, ImageFolderImages) and isinstance(ds.x_test, ImageFolderImages)
    assert len(x) == 12 and x.shape == (12, 3, SIZE, SIZE) and ds.classes == ["cat", "dog"]
    assert torch.equal(ds.y_train, ref_y)
    assert torch.equal(x[:], ref_x) and torch.equal(ds.x_test[:], ref_val)
    assert x[3:9].dtype == torch.uint8 and torch.equal(x[3:9], ref_x[3:9]) and torch.equal(x[::5], ref_x[::5])
    idx = torch.tensor([11, 0, 5, 5, 2, -1])  # unsorted, repeated and negative, as tensor indexing allows
    assert torch.equal(x[idx], ref_x[idx]) and torch.equal(x.index_select(0, idx[:5]), ref_x[idx[:5]])
    assert torch.equal(x[np.array([7, 1])], ref_x[[7, 1]]) and torch.equal(x[4], ref_x[4])
    with pytest.raises(IndexError, match="out of range"):
        x[torch.tensor([12])]
    order = [torch.tensor([3, 1]), torch.tensor([10]), torch.tensor([0, 2, 4])]
    assert all(torch.equal(a, ref_x[i]) for a, i in zip(iter_batches(x, order), order, strict=True))
    head = ds.subset(5, 2)
    assert isinstance(head.x_train, ImageFolderImages) and len(head.x_train) == 5 and len(head.x_test) == 2
    index = balanced_subset_index(ds.y_train, 5)
    assert torch.equal(head.x_train[:], ref_x[index]) and torch.equal(head.y_train, ref_y[index])
    assert set(head.y_train.tolist()) == {0, 1}

    loaded = load_dataset("imagefolder", root, image_size=SIZE)  # 12 small images: within the default budget
    assert isinstance(loaded.x_train, torch.Tensor) and torch.equal(loaded.x_train, ref_x)
    assert isinstance(loaded.x_test, torch.Tensor) and torch.equal(loaded.x_test, ref_val)


def test_train_and_val_must_hold_the_same_classes(tmp_path):
    root = make_tree(tmp_path / "tree")
    for f in (root / "val" / "dog").iterdir():
        f.unlink()
    (root / "val" / "dog").rmdir()
    with pytest.raises(DataError, match="different class folders.*dog"):
        load_dataset("imagefolder", root, image_size=SIZE)
    (root / "val").rename(root / "validation")
    with pytest.raises(DataError, match="no val/ directory"):
        load_dataset("imagefolder", root, image_size=SIZE)


def test_corrupt_image_file_is_named(tmp_path):
    root = make_tree(tmp_path / "tree")
    (root / "train" / "cat" / "x.png").write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(DataError, match=r"x\.png is corrupt or unreadable"):
        load_dataset("imagefolder", root, image_size=SIZE)  # loaded into memory: fails while loading
    streamed = load_dataset("imagefolder", root, image_size=SIZE, image_memory_budget=0)
    bad = [i for i, p in enumerate(streamed.x_train.paths) if p.endswith("x.png")]
    assert streamed.x_train[:bad[0]].shape[0] == bad[0]  # the readable files still read
    with pytest.raises(DataError, match=r"x\.png"):
        streamed.x_train[torch.tensor([0, bad[0], 1])]
    batches = [torch.tensor([0]), torch.tensor([1, bad[0]])]
    with pytest.raises(DataError, match=r"x\.png is corrupt or unreadable \("):  # the worker's error, as raised there
        list(iter_batches(streamed.x_train, batches, workers=2))
    good = root / "train" / "dog" / "0.png"
    good.write_bytes(good.read_bytes()[:len(good.read_bytes()) // 2])  # truncated PNG
    with pytest.raises(DataError, match=r"dog.0\.png is corrupt"):
        streamed.x_train[streamed.x_train.paths.index(str(good)):]


@pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")
def test_torchvision_decoder_is_within_one_grey_level_of_pil(tmp_path):
    """The opt-in torchvision.io decoder resamples with other rounding, never by more than one level."""
    root = make_tree(tmp_path / "tree")
    pil = load_dataset("imagefolder", root, image_size=SIZE, image_memory_budget=0)
    fast = load_dataset("imagefolder", root, image_size=SIZE, image_memory_budget=0, image_decoder="torchvision")
    a, b = pil.x_train[:].int(), fast.x_train[:].int()
    assert (a - b).abs().max() <= 1 and (a != b).float().mean() < 0.1
    with pytest.raises(ValueError, match="unknown image decoder 'jpeg'"):
        ImageFolderImages(pil.x_train.paths, SIZE, decoder="jpeg")


@pytest.mark.parametrize("workers", [0, 2])
def test_dataloader_batches_equal_indexing(tmp_path, workers):
    """iter_batches through the DataLoader (in process or in workers) gives images[idx] for every idx, in order."""
    root = make_tree(tmp_path / "tree")
    x = load_dataset("imagefolder", root, image_size=SIZE, image_memory_budget=0).x_train
    reference = x[:]
    order = [torch.tensor([3, 1]), slice(4, 9), torch.tensor([10]), torch.tensor([0, 2, 4, 11])]
    got = list(iter_batches(x, order, workers=workers))
    assert all(torch.equal(a, reference[i]) for a, i in zip(got, order, strict=True))
    assert all(torch.equal(a, reference[i]) for a, i in zip(iter_batches(reference, order), order, strict=True))
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    list(iter_batches(x, order, workers=workers))
    assert torch.equal(torch.rand(3), expected)  # the global generator untouched: later draws are the former ones


@pytest.mark.parametrize("rule, augment_kind", [("softhebb", "none"), ("softhebb", "crop_flip"), ("backprop", "none")])
def test_run_on_streamed_images_and_disk_features_equals_the_in_memory_run(tmp_path, monkeypatch, rule, augment_kind):
    root = make_tree(tmp_path / "tree")
    config = RunConfig(small_preset(augment_kind), rule=rule, mode="greedy", seed=0, normalisation="global",
                       data_dir=str(root), readout_epochs=2 if rule == "backprop" else None)
    loaded = []

    def spy(*args, **kw):
        loaded.append(load_dataset(*args, **kw))
        return loaded[-1]

    monkeypatch.setattr(run_module, "load_dataset", spy)
    in_memory = run(config, tmp_path / "ram", progress=False)
    assert isinstance(loaded[-1].x_train, torch.Tensor)
    monkeypatch.setattr(data_module, "IMAGE_MEMORY_BUDGET", 0)
    monkeypatch.setattr(features_module, "feature_memory_budget", lambda: 0)
    streamed = run(config, tmp_path / "disk", progress=False)
    assert isinstance(loaded[-1].x_train, ImageFolderImages)
    assert streamed["n_train"] == 12 and streamed["n_test"] == 6
    assert len(streamed["history"]) == (2 if rule == "backprop" else 3)
    assert streamed["history"] == in_memory["history"]  # the same pixels and feature values: the same run
    files = {p.name for p in (tmp_path / "disk").iterdir()}
    assert files <= {"config.json", "metrics.json", "checkpoint.pt", "kernels.png"}  # no feature file is left


def test_disk_feature_cache_gives_the_ram_cache_and_the_same_readout(tmp_path, monkeypatch):
    root = make_tree(tmp_path / "tree")
    ds = load_dataset("imagefolder", root, image_size=SIZE)
    torch.manual_seed(0)
    net = SoftHebbNet(small_preset())
    train_unsupervised(net, ds.x_train, progress=False)
    cache = tmp_path / "cache"
    cache.mkdir()
    ram = extract_features(net, ds.x_train, progress=False)
    disk = extract_features(net, ds.x_train, progress=False, memory_budget=0, cache_dir=cache)
    with open("/proc/self/maps") as f:  # Linux: the process's mappings
        assert f"{cache}/.features." in f.read()  # memory-mapped from a file there ...
    assert not any(cache.iterdir())  # ... already unlinked
    assert disk.dtype == ram.dtype == torch.float16 and torch.equal(disk, ram)
    test_ram = extract_features(net, ds.x_test, progress=False)
    test_disk = extract_features(net, ds.x_test, progress=False, memory_budget=0, cache_dir=cache)

    head = copy.deepcopy(net.head.state_dict())
    results = []
    for train_f, test_f in ((ram, test_ram), (disk, test_disk)):
        net.head.load_state_dict(head)
        history = train_readout(net, train_f, ds.y_train, test_f, ds.y_test, epochs=4, batch_size=4, progress=False)
        results.append((history, accuracy(net.head, train_f, ds.y_train)))
    assert results[0] == results[1]

    features = net.features  # features beyond fp16's range: both caches fall back to fp32, with equal values
    monkeypatch.setattr(net, "features", lambda x, upto=None: features(x, upto) * 1e6)
    big_ram = extract_features(net, ds.x_test, progress=False)
    big_disk = extract_features(net, ds.x_test, progress=False, memory_budget=0, cache_dir=cache)
    assert big_ram.dtype == big_disk.dtype == torch.float32 and torch.isfinite(big_disk).all()
    assert torch.equal(big_ram, big_disk) and big_disk.abs().max() > torch.finfo(torch.float16).max


def test_feature_cache_without_disk_space_is_a_clear_error(tmp_path, monkeypatch):
    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full, raising=False)  # whichever of the two is used,
    monkeypatch.setattr(os, "ftruncate", full)  # the disk is full
    net = SoftHebbNet(small_preset())
    with pytest.raises(FeatureCacheError, match=r"needs 0\.0 GiB on disk .* GiB free"):
        extract_features(net, torch.zeros(3, 3, SIZE, SIZE, dtype=torch.uint8), progress=False, memory_budget=0,
                         cache_dir=tmp_path)
    assert not any(tmp_path.iterdir())
