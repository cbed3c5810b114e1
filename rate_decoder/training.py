"""Training loops: the unsupervised epoch (greedy / simultaneous), features, readout, backprop baseline.

Protocol (SPEC.md §6): one unsupervised epoch at batch 10; then a linear readout with dropout on the
flattened features, Adam(1e-3), batch 64, the learning rate halved after epochs
floor({0.2, 0.35, 0.5, 0.6, 0.7, 0.8, 0.9} * E), and the last epoch's test accuracy reported.
Without augmentation the features are a deterministic function of the image, so they are computed
once and cached (fp16 by default: half the memory, see :func:`extract_features`); a cache larger than
:func:`feature_memory_budget` lives in a memory-mapped file instead of RAM.

Images are uint8 tensors or :class:`~rate_decoder.data.ImageFolderImages` (files decoded per batch).
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from .data import Images, iter_batches, to_float
from .network import SoftHebbNet

MODES = ("greedy", "simultaneous")


class FeatureCacheError(OSError):
    """The on-disk feature cache cannot be created (typically: not enough free disk space)."""


def configure_cpu() -> None:
    """Flush denormals to zero: early softmax outputs are denormal and slow CPU kernels ~10x (SPEC.md §12.17)."""
    for dtype in (np.float16, np.float32, np.float64):
        np.finfo(dtype)  # cache numpy's float limits first: computed under flush-to-zero they warn
    torch.set_flush_denormal(True)


def check_images(x: Tensor, net: SoftHebbNet) -> None:
    """Clear errors for images of the wrong shape or with non-finite values."""
    net.check_input(x)
    if x.dtype != torch.uint8 and not torch.isfinite(x).all():
        raise ValueError("images contain NaN or infinite values")


def unsupervised_order(n: int, seed: int) -> np.ndarray:
    """The shuffled presentation order; in greedy mode every layer sees this same order (SPEC.md §5)."""
    return np.random.default_rng(seed).permutation(n)


def unsupervised_augment_generator(seed: int, batch_index: int) -> torch.Generator:
    """The generator of batch ``batch_index``'s augmentation draws: a function of the run seed and the index only.

    Seeding per batch (not one generator per epoch) makes the draws independent of which layer is
    learning and of where a run was resumed: a run resumed at layer ``l`` redraws exactly the crops
    the uninterrupted run gave layer ``l``. Its own generator leaves torch's global one untouched.
    """
    state = np.random.SeedSequence((seed, batch_index)).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def train_unsupervised(net: SoftHebbNet, images: Images, mode: str = "greedy", batch_size: int = 10, seed: int = 0,
                       device=None, start_block: int = 0, on_block_done: Callable[[int], None] | None = None,
                       progress: bool = True, augmentation: str = "none", augment_pad: int = 4) -> None:
    """One unsupervised epoch per block (greedy) or one epoch for all blocks at once (simultaneous).

    Greedy: block ``l`` learns while blocks ``< l`` are frozen and in eval mode; only blocks up to
    ``l`` are computed. Simultaneous: every block learns from each batch, each from the output its
    predecessor computed with its pre-step weights (SPEC.md §2.7, the reference code's "consecutive").
    ``on_block_done(l)`` is called after block ``l`` (greedy) or after the epoch (simultaneous, with
    the last index), e.g. to write a checkpoint.

    ``augmentation`` (a kind of :func:`augment`, ``augment_pad`` its padding) transforms each float
    batch before the first block: the reference code's ``ImageNet_1160`` unsupervised epoch uses
    RandomResizedCrop + flip (SPEC.md §5, §10 #13), here of the stored ``Resize((S, S))`` copy as
    for the readout (see :func:`augment`). Batch ``k``'s draws come from
    :func:`unsupervised_augment_generator` ``(seed, k)``, so in greedy mode every layer sees the same
    augmented images, as in the reference: its ``make_data_loaders`` re-seeds torch
    (``seed_init_fn``) at every loader construction, once per layer, and the loader's workers take
    their seeds, hence their crops, from it (SPEC.md §5: the same batch order for every layer).
    ``"none"`` adds nothing to the loop.
    """
    if mode not in MODES:
        raise ValueError(f"unknown training mode {mode!r}; choose one of {MODES}")
    if augmentation not in AUGMENTATIONS:
        raise ValueError(f"unknown unsupervised augmentation {augmentation!r}; choose one of {AUGMENTATIONS}")
    check_images(images[:1], net)
    normalize = net.preset.get("normalize", "none")
    order = unsupervised_order(len(images), seed)
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if start_block >= len(net.blocks):
        return
    stages = range(start_block, len(net.blocks)) if mode == "greedy" else [None]
    for stage in stages:
        net.set_learning_block("all" if stage is None else stage)
        label = "unsupervised (all layers)" if stage is None else f"unsupervised layer {stage + 1}/{len(net.blocks)}"
        with torch.no_grad():
            batch_images = iter_batches(images, (torch.from_numpy(idx) for idx in batches))
            for k, x in enumerate(tqdm(batch_images, desc=label, disable=not progress, mininterval=2.0, unit="batch",
                                       total=len(batches))):
                x = to_float(x, device, normalize)
                if augmentation != "none":
                    x = augment(x, augmentation, augment_pad, generator=unsupervised_augment_generator(seed, k))
                if stage is None:
                    for block in net.blocks:
                        x = block.learn(x)
                else:
                    x = net.features(x, upto=stage)
                    net.blocks[stage].learn(x)
        net.set_learning_block(None)
        if on_block_done is not None:
            on_block_done(len(net.blocks) - 1 if stage is None else stage)


def feature_memory_budget() -> int:
    """Bytes of features :func:`extract_features` keeps in RAM: half the physical memory, at most 8 GiB.

    CIFAR-10's 2.5 GB fp16 cache stays in RAM on any machine with more than 5 GB; the ``imagenet``
    preset's (1.28M images x 307,200 features, 786 GB) goes to disk.
    """
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows) or no such name
        return 8 * 2**30
    return min(8 * 2**30, ram // 2)


def _feature_buffer(n: int, n_features: int, dtype: torch.dtype, memory_budget: int | None,
                    cache_dir: str | os.PathLike | None) -> Tensor:
    """An ``(n, n_features)`` CPU tensor: in RAM within ``memory_budget`` bytes, else a memory-mapped file.

    The file is unlinked as soon as it is mapped. Nothing but this process ever reads it, so no
    half-written cache can be mistaken for a finished one, and its disk space is returned when the
    tensor is freed or the process ends, even if it is killed (else hundreds of GB left per crash).
    Its blocks are reserved up front: writing to a mapping on a full disk would kill the process
    with SIGBUS instead of raising.
    """
    np_dtype = torch.empty((), dtype=dtype).numpy().dtype
    nbytes = n * n_features * np_dtype.itemsize
    if nbytes <= (feature_memory_budget() if memory_budget is None else memory_budget):
        return torch.empty(n, n_features, dtype=dtype)
    directory = Path(cache_dir) if cache_dir is not None else Path(tempfile.gettempdir())
    fd, name = tempfile.mkstemp(prefix=".features.", suffix=".tmp", dir=directory)
    try:
        try:
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(fd, 0, nbytes)
            else:
                os.ftruncate(fd, nbytes)
        except OSError as err:
            free = shutil.disk_usage(directory).free
            raise FeatureCacheError(f"the feature cache needs {nbytes / 2**30:.1f} GiB on disk (more than the "
                                    f"memory budget) but {directory} has {free / 2**30:.1f} GiB free ({err})") from None
        array = np.memmap(name, dtype=np_dtype, mode="r+", shape=(n, n_features))
    finally:
        os.close(fd)
        os.unlink(name)
    return torch.from_numpy(array)


@torch.no_grad()
def extract_features(net: SoftHebbNet, images: Images, batch_size: int | None = None, device=None,
                     dtype=torch.float16, progress: bool = True, desc: str = "features",
                     memory_budget: int | None = None, cache_dir: str | os.PathLike | None = None) -> Tensor:
    """Flattened features (C, H, W order) of all images, every block in eval mode, stored on the CPU.

    ``batch_size`` defaults to 50 on CPU (the activations stay in cache: 200 images/s on the
    CIFAR-10 network here against 120-140 at 500) and 500 on a GPU.

    fp16 halves the cache (CIFAR-10: 2.5 GB instead of 4.9 GB). Values beyond fp16's range would turn
    to inf, so that is checked and the cache falls back to fp32 rather than holding garbage.

    A cache of more than ``memory_budget`` bytes (default :func:`feature_memory_budget`) is a
    memory-mapped file in ``cache_dir`` (default: the temporary directory, which may be RAM-backed:
    a run passes its own directory), see :func:`_feature_buffer`; it indexes like the RAM tensor and
    holds the same values.
    """
    check_images(images[:1], net)
    if batch_size is None:
        batch_size = 500 if torch.device(device or "cpu").type == "cuda" else 50
    was_training = net.training
    net.eval()
    normalize = net.preset.get("normalize", "none")
    n_features = int(np.prod(net.feature_shape))
    out = _feature_buffer(len(images), n_features, dtype, memory_budget, cache_dir)
    starts = range(0, len(images), batch_size)
    batches = iter_batches(images, (slice(i, i + batch_size) for i in starts))
    for i, x in zip(tqdm(starts, desc=desc, disable=not progress, mininterval=2.0, unit="batch"), batches):
        f = net.features(to_float(x, device, normalize)).flatten(1)
        if not torch.isfinite(f).all():
            raise FloatingPointError("non-finite features: the network's weights or batch-norm statistics are broken")
        if dtype == torch.float16 and f.abs().max() > torch.finfo(torch.float16).max:
            net.train(was_training)
            batches.close()
            del out  # release the fp16 buffer (or its file) before the fp32 one is allocated
            return extract_features(net, images, batch_size, device, torch.float32, progress, desc, memory_budget,
                                    cache_dir)
        out[i:i + batch_size] = f.to("cpu", dtype)
    net.train(was_training)
    return out


AUGMENTATIONS = ("none", "crop_flip", "resized_crop_flip")
#: torchvision's ``RandomResizedCrop`` defaults, which the reference code keeps for ImageNet / ImageNette (SPEC.md §5)
RESIZED_CROP_SCALE = (0.08, 1.0)
RESIZED_CROP_RATIO = (3 / 4, 4 / 3)
#: attempts per image before torchvision's fallback box, as in ``RandomResizedCrop.get_params``
_RESIZED_CROP_TRIES = 10


def augment(x: Tensor, kind: str, pad: int = 4, scale: tuple[float, float] = RESIZED_CROP_SCALE,
            ratio: tuple[float, float] = RESIZED_CROP_RATIO, generator: torch.Generator | None = None) -> Tensor:
    """Augmentation of a float batch ``(B, C, H, W)`` (readout, or ImageNet's unsupervised epoch); same shape out.

    ``"crop_flip"`` (STL-10's ``RandomCrop(96, pad 4, reflect)`` + flip, SPEC.md §5): each image is
    reflect-padded by ``pad``, cropped back to its size at a uniformly drawn offset, and flipped
    horizontally with probability 1/2.

    ``"resized_crop_flip"`` (ImageNet / ImageNette's ``RandomResizedCrop(160)`` + flip, SPEC.md §5,
    which names no scale or ratio, so torchvision's defaults ``scale`` (0.08, 1) and ``ratio`` (3/4, 4/3)):
    each image's box is drawn as :func:`resized_crop_params` says and resized back to ``H x W`` (the
    preset's image size) bilinearly, then flipped with probability 1/2; ``pad`` is unused. One
    difference from the reference code: it crops the image file as decoded (imagenette2-160: 160 px
    on the short side; ImageNet: full size), this crops the stored ``Resize((S, S))`` copy. The area
    fraction is the same, but the aspect ratio is drawn relative to the squeezed square image, and a
    small box has the resolution of the S-px copy, not of the file.

    Draws come from ``generator`` (a CPU one), else torch's global generator (on the CPU, whatever
    ``x``'s device), so a seeded epoch is reproducible. ``"none"`` returns ``x``.
    """
    if kind == "none":
        return x
    if kind == "resized_crop_flip":
        return resized_crop(x, *resized_crop_params(x.shape[0], x.shape[-2], x.shape[-1], scale, ratio, generator))
    if kind != "crop_flip":
        raise ValueError(f"unknown augmentation {kind!r}; choose one of {AUGMENTATIONS}")
    B, _, H, W = x.shape
    padded = F.pad(x, (pad,) * 4, mode="reflect")
    offsets = torch.randint(0, 2 * pad + 1, (B, 2), generator=generator).tolist()
    flips = (torch.rand(B, generator=generator) < 0.5).view(B, 1, 1, 1).to(x.device)
    crops = torch.stack([padded[b, :, i:i + H, j:j + W] for b, (i, j) in enumerate(offsets)])
    return torch.where(flips, crops.flip(-1), crops)


def resized_crop_params(batch: int, height: int, width: int, scale: tuple[float, float] = RESIZED_CROP_SCALE,
                        ratio: tuple[float, float] = RESIZED_CROP_RATIO,
                        generator: torch.Generator | None = None) -> tuple[Tensor, ...]:
    """Per-image boxes ``(top, left, h, w)`` and flips of ``RandomResizedCrop`` + ``RandomHorizontalFlip``.

    torchvision's ``get_params``, batched: up to 10 tries of an area fraction ~ U(scale) and a
    log-uniform aspect ratio w/h in ``ratio``, ``w = round(sqrt(area * ratio))``, ``h = round(sqrt(area /
    ratio))``; the first try that fits is placed at a uniform offset; if none fits, the centred box
    torchvision falls back to (the whole image when its own aspect ratio lies in ``ratio``). The
    distribution is torchvision's; the sequence of draws is not (all tries of the batch are drawn at
    once), so the same seed gives other boxes than torchvision would.

    Draws come from ``generator`` (a CPU one; default: torch's global generator). Returns int64 CPU
    tensors ``top, left, h, w`` and a bool tensor ``flip``, each of length ``batch``.
    """
    if not (0 < scale[0] <= scale[1] <= 1):
        raise ValueError(f"resized-crop scale must satisfy 0 < low <= high <= 1, got {scale}")
    if not (0 < ratio[0] <= ratio[1]):
        raise ValueError(f"resized-crop ratio must satisfy 0 < low <= high, got {ratio}")
    area = height * width
    shape = (batch, _RESIZED_CROP_TRIES)
    target = area * torch.empty(shape, dtype=torch.float64).uniform_(scale[0], scale[1], generator=generator)
    aspect = torch.empty(shape, dtype=torch.float64).uniform_(math.log(ratio[0]), math.log(ratio[1]),
                                                             generator=generator).exp_()
    w = (target * aspect).sqrt_().round_().long()  # round half to even, as Python's round()
    h = (target / aspect).sqrt_().round_().long()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.int().argmax(1, keepdim=True)  # index of the first try that fits (0 if none does)
    w, h, found = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0], fits.any(1)
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fallback_h, fallback_w = round(width / ratio[0]), width
    elif in_ratio > ratio[1]:
        fallback_h, fallback_w = height, round(height * ratio[1])
    else:
        fallback_h, fallback_w = height, width
    h = torch.where(found, h, fallback_h)
    w = torch.where(found, w, fallback_w)
    offsets = torch.rand(2, batch, dtype=torch.float64, generator=generator)
    top = torch.where(found, (offsets[0] * (height - h + 1)).long().clamp_(max=height - h), (height - h) // 2)
    left = torch.where(found, (offsets[1] * (width - w + 1)).long().clamp_(max=width - w), (width - w) // 2)
    flip = torch.rand(batch, generator=generator) < 0.5
    return top, left, h, w, flip


def resized_crop(x: Tensor, top: Tensor, left: Tensor, h: Tensor, w: Tensor, flip: Tensor) -> Tensor:
    """Each image's box ``x[b, :, top:top+h, left:left+w]`` resized bilinearly to ``x``'s ``H x W``, maybe flipped.

    Per image ``F.interpolate(box, (H, W), mode="bilinear", align_corners=False)``: torchvision's tensor
    ``resized_crop``. Its antialias never acts here, since a box is never larger than the image, so
    every resize is an upsampling, where PIL's bilinear filter (the reference code's) is the same
    interpolation up to PIL's rounding to uint8. Only pixels inside the box are read. Measured on a
    32 x 3 x 160 x 160 batch on one CPU thread: this loop 7 ms; one batched ``grid_sample`` 9-13 ms
    (and not bit-equal to ``F.interpolate``); a batched separable gather + lerp 22 ms.
    """
    H, W = x.shape[-2:]
    out = torch.empty_like(x)
    for b, (i, j, hb, wb, f) in enumerate(zip(top.tolist(), left.tolist(), h.tolist(), w.tolist(), flip.tolist())):
        resized = F.interpolate(x[b:b + 1, :, i:i + hb, j:j + wb], size=(H, W), mode="bilinear", align_corners=False)
        out[b] = resized[0].flip(-1) if f else resized[0]
    return out


_BIT_MASKS = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)


def feature_dropout(x: Tensor, p: float) -> Tensor:
    """Inverted dropout on a batch of features, as ``F.dropout`` in train mode, but cheaper on CPU.

    For ``p = 0.5`` the keep-mask is the bits of random 64-bit words: one random draw per 64
    features instead of one per feature. ``F.dropout`` spent ~29 ms per 64 x 24,576 batch here (its
    Bernoulli sampler), which made the 50-epoch CIFAR readout take 16 minutes; this takes ~1.3 ms.
    """
    if p == 0.0:
        return x
    if p != 0.5 or x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    n = x.numel()
    words = torch.randint(-2**63, 2**63 - 1, ((n + 63) // 64,), dtype=torch.int64)
    keep = words.view(torch.uint8)[:, None].bitwise_and(_BIT_MASKS).view(-1)[:n].view(x.shape).bool()
    return x.mul(2.0).mul_(keep)


def halving_epochs(epochs: int) -> set[int]:
    """Epochs after which the readout's learning rate is halved (the reference code's CustomStepLR)."""
    if epochs < 20:
        return set()
    if epochs < 50:
        return {math.floor(0.5 * epochs), math.floor(0.75 * epochs)}
    return {math.floor(f * epochs) for f in (0.2, 0.35, 0.5, 0.6, 0.7, 0.8, 0.9)}


@torch.no_grad()
def accuracy(logits_fn: Callable[[Tensor], Tensor], features: Tensor | Images, labels: Tensor, device=None,
             batch_size: int = 1000, prepare: Callable[[Tensor], Tensor] | None = None) -> float:
    """Fraction of ``labels`` that ``logits_fn`` gets right, batch by batch.

    ``prepare`` turns a batch of ``features`` into ``logits_fn``'s input (default: fp32 on ``device``);
    for images it converts one batch at a time, so the whole set never exists as floats.
    """
    correct = 0
    for i in range(0, len(features), batch_size):
        batch = features[i:i + batch_size]
        logits = logits_fn(batch.to(device, torch.float32) if prepare is None else prepare(batch))
        correct += (logits.argmax(1).cpu() == labels[i:i + batch_size]).sum().item()
    return correct / max(1, len(features))


def train_readout(net: SoftHebbNet, train_features: Tensor | Images, train_labels: Tensor, test_features: Tensor,
                  test_labels: Tensor, epochs: int = 50, batch_size: int = 64, lr: float = 1e-3, seed: int = 0,
                  device=None, start_epoch: int = 0, optimizer_state: dict | None = None,
                  on_epoch: Callable[[int, dict, dict], None] | None = None, progress: bool = True,
                  feature_fn: Callable[[Tensor], Tensor] | None = None) -> list[dict]:
    """Train ``net.head`` on cached features (dropout applied to them); returns per-epoch metrics.

    With ``feature_fn``, ``train_features`` holds the training *images* instead and each batch's
    features are ``feature_fn(images[idx])``, recomputed every time (readout augmentation).

    Shuffling and dropout are re-seeded from ``(seed, epoch)`` at every epoch, so a run resumed at
    ``start_epoch`` with the saved ``optimizer_state`` reproduces the uninterrupted one.
    ``on_epoch(epoch, metrics, optimizer_state)`` runs after each epoch (checkpointing).
    """
    if len(train_features) != len(train_labels) or len(test_features) != len(test_labels):
        raise ValueError("features and labels differ in length")
    head, p_drop = net.head, net.dropout.p
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    halvings = halving_epochs(epochs)
    history = []
    for epoch in tqdm(range(start_epoch, epochs), desc="readout", disable=not progress, unit="epoch",
                      initial=start_epoch, total=epochs):
        torch.manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(len(train_features))
        head.train()
        total_loss, correct = 0.0, 0
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            f = train_features.index_select(0, idx)  # 3x faster than [idx] here
            f = f.to(device, torch.float32) if feature_fn is None else feature_fn(f)
            y = train_labels[idx].to(device)
            logits = head(feature_dropout(f, p_drop))
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(idx)
            correct += (logits.argmax(1) == y).sum().item()
        if epoch + 1 in halvings:
            for group in optimizer.param_groups:
                group["lr"] *= 0.5
        head.eval()
        metrics = {"epoch": epoch + 1, "train_loss": total_loss / len(order), "train_acc": correct / len(order),
                   "test_acc": accuracy(head, test_features, test_labels, device),
                   "lr": optimizer.param_groups[0]["lr"]}
        history.append(metrics)
        if on_epoch is not None:
            on_epoch(epoch + 1, metrics, optimizer.state_dict())
    return history


def train_backprop(net: SoftHebbNet, x_train: Images, y_train: Tensor, x_test: Images, y_test: Tensor,
                   epochs: int = 50, batch_size: int = 64, lr: float = 1e-3, seed: int = 0, device=None,
                   on_epoch: Callable[[int, dict, dict], None] | None = None, progress: bool = True) -> list[dict]:
    """The backprop baseline: the same blocks (ReLU, ``nn.Conv2d``) and head trained end to end."""
    normalize = net.preset.get("normalize", "none")
    optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=lr)
    halvings = halving_epochs(epochs)
    history = []
    for epoch in range(epochs):
        torch.manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(len(x_train))
        net.train()
        for i in tqdm(range(0, len(order), batch_size), desc=f"backprop epoch {epoch + 1}/{epochs}",
                      disable=not progress, mininterval=2.0, unit="batch"):
            idx = order[i:i + batch_size]
            loss = F.cross_entropy(net(to_float(x_train[idx], device, normalize)), y_train[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if epoch + 1 in halvings:
            for group in optimizer.param_groups:
                group["lr"] *= 0.5
        net.eval()
        # converted on the CPU then moved, batch by batch: the same values the whole-set CPU conversion gave
        test_acc = accuracy(net, x_test, y_test, device, batch_size=500,
                            prepare=lambda x: to_float(x, None, normalize).to(device))
        metrics = {"epoch": epoch + 1, "test_acc": test_acc}
        history.append(metrics)
        if on_epoch is not None:
            on_epoch(epoch + 1, metrics, optimizer.state_dict())
    return history
