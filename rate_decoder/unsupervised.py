"""The unsupervised epoch (docs/algorithm.md §6.1): greedy (one epoch per block) or consecutive (all blocks at once).

The loop takes a per-block step, :func:`learn_step` (the Hebbian update) by default, so another use of
the same epoch -- the same batches, augmentation draws and batch-norm modes, with some other work
per block -- is one argument away.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .augment import AUGMENTATIONS, augment
from .config import MODES, canonical_mode
from .data import Images, iter_batches, to_float
from .distributed import SINGLE, Distributed, shard_rows
from .network import Block, SoftHebbNet

#: ``step(block, x, output) -> y``: the work of one block on one float batch, returning the block's
#: output, or ``None`` when ``output`` is false (a greedy stage, which discards it)
BlockStep = Callable[[Block, Tensor, bool], Tensor | None]


def learn_step(block: Block, x: Tensor, output: bool = True) -> Tensor | None:
    """One Hebbian update of ``block`` on ``x``; the block's output with its pre-step weights (docs/algorithm.md §2.7)."""
    return block.learn(x, output=output)


def unsupervised_order(n: int, seed: int) -> np.ndarray:
    """The shuffled presentation order; in greedy mode every layer sees this same order (docs/algorithm.md §5)."""
    return np.random.default_rng(seed).permutation(n)


def unsupervised_augment_generator(seed: int, batch_index: int) -> torch.Generator:
    """The generator of batch ``batch_index``'s augmentation draws: a function of the run seed and the index only.

    Seeding per batch (not one generator per epoch) makes the draws independent of which layer is
    learning and of where a run was resumed: a run resumed at layer ``l`` redraws exactly the crops
    the uninterrupted run gave layer ``l``. Its own generator leaves torch's global one untouched.
    """
    state = np.random.SeedSequence((seed, batch_index)).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def _epoch_plan(net: SoftHebbNet, images: Images, mode: str, batch_size: int, seed: int, start_block: int,
                augmentation: str) -> tuple[list[np.ndarray], list]:
    """The checked arguments' batches (index arrays in presentation order) and stages still to run.

    A stage is a block index (greedy: one epoch per block, from ``start_block``) or ``None`` (consecutive:
    one epoch for all blocks, none left once a block is done).
    """
    mode = canonical_mode(mode, stacklevel=3)
    if mode not in MODES:
        raise ValueError(f"unknown training mode {mode!r}; choose one of {MODES}")
    if augmentation not in AUGMENTATIONS:
        raise ValueError(f"unknown unsupervised augmentation {augmentation!r}; choose one of {AUGMENTATIONS}")
    net.check_input(images)
    order = unsupervised_order(len(images), seed)
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if mode == "greedy":
        return batches, list(range(start_block, len(net.blocks)))
    return batches, [None] if start_block == 0 else []


def train_unsupervised(net: SoftHebbNet, images: Images, mode: str = "greedy", batch_size: int = 10, seed: int = 0,
                       device=None, start_block: int = 0, on_block_done: Callable[[int], None] | None = None,
                       progress: bool = True, augmentation: str = "none", augment_pad: int = 4,
                       step: BlockStep = learn_step, ctx: Distributed = SINGLE, start_batch: int = 0,
                       on_batch_done: Callable[[int, int], None] | None = None) -> None:
    """One unsupervised epoch per block (greedy) or one epoch for all blocks at once (consecutive).

    Greedy: block ``l`` steps while blocks ``< l`` are frozen and in eval mode; only blocks up to
    ``l`` are computed. Consecutive: every block steps on each batch, each on the output its
    predecessor's step returned (for :func:`learn_step`: computed with the pre-step weights, docs/algorithm.md
    §2.7), all batch norms in train mode. ``mode="simultaneous"``, the former name of consecutive,
    is accepted with a ``DeprecationWarning``. ``on_block_done(l)`` is called after block ``l``
    (greedy) or after the epoch (consecutive, with the last index), e.g. to write a checkpoint.

    ``augmentation`` (a kind of :func:`~rate_decoder.augment.augment`, ``augment_pad`` its padding)
    transforms each float batch before the first block: the reference code's ``ImageNet_1160``
    unsupervised epoch uses RandomResizedCrop + flip (docs/algorithm.md §5, §10 #13), here of the stored
    ``Resize((S, S))`` copy as for the readout. Batch ``k``'s draws come from
    :func:`unsupervised_augment_generator` ``(seed, k)``, so in greedy mode every layer sees the same
    augmented images, as in the reference: its ``make_data_loaders`` re-seeds torch
    (``seed_init_fn``) at every loader construction, once per layer, and the loader's workers take
    their seeds, hence their crops, from it (docs/algorithm.md §5: the same batch order for every layer).
    ``"none"`` adds nothing to the loop.

    ``on_batch_done(stage, k)`` is called after the ``k``-th batch (1-based) of a stage (greedy: the block's
    index; consecutive: the last block's), e.g. to checkpoint inside a long block; ``start_batch``
    skips the first batches of the first stage run, continuing a block checkpointed there. Every draw
    depends on (seed, batch) only, so the continued run equals the uninterrupted one bit for bit.

    Data-parallel (``ctx.active``, :mod:`rate_decoder.distributed`): ``batch_size`` is the global batch;
    each rank takes its shard of every batch (:meth:`~rate_decoder.distributed.Distributed.shard`, with
    that shard's augmentation draws), the learning block sums its batch-norm statistics and raw update
    over the ranks, and every ``ctx.check_every`` steps the ranks compare their weights' checksums
    (:class:`~rate_decoder.distributed.RankDivergence` if they differ). Only the Hebbian step runs so.
    """
    batches, stages = _epoch_plan(net, images, mode, batch_size, seed, start_block, augmentation)
    if not 0 <= start_batch < max(1, len(batches)):
        raise ValueError(f"start_batch {start_batch} is not a batch of this epoch ({len(batches)} batches)")
    if ctx.active:
        if step is not learn_step:
            raise ValueError("a data-parallel unsupervised epoch runs the Hebbian step (learn_step) only")
        step = partial(_learn_shard, ctx=ctx)
    normalize = net.preset.normalize
    for stage in stages:
        net.set_learning_block("all" if stage is None else stage)
        label = "unsupervised (all layers)" if stage is None else f"unsupervised layer {stage + 1}/{len(net.blocks)}"
        learning = net.blocks if stage is None else [net.blocks[stage]]
        first = start_batch if stage == stages[0] else 0
        with torch.no_grad():
            batch_images = iter_batches(images, (torch.from_numpy(ctx.shard(idx)) for idx in batches[first:]), device=device)
            for k, x in enumerate(tqdm(batch_images, desc=label, disable=not progress, mininterval=2.0, unit="batch",
                                       total=len(batches), initial=first), start=first):
                x = to_float(x, device, normalize)
                if augmentation != "none":
                    x = augment(x, augmentation, augment_pad, generator=unsupervised_augment_generator(seed, k),
                                rows=shard_rows(ctx, len(batches[k])))
                if stage is None:
                    for block in net.blocks:
                        x = step(block, x)
                else:
                    step(net.blocks[stage], net.features(x, upto=stage), False)
                if ctx.active and ((k + 1) % ctx.check_every == 0 or k + 1 == len(batches)):
                    ctx.check_identical([block.conv.weight for block in learning], k + 1)
                if on_batch_done is not None and k + 1 < len(batches):
                    on_batch_done(len(net.blocks) - 1 if stage is None else stage, k + 1)
        net.set_learning_block(None)
        if on_block_done is not None:
            on_block_done(len(net.blocks) - 1 if stage is None else stage)


def _learn_shard(block: Block, x: Tensor, output: bool = True, *, ctx: Distributed) -> Tensor | None:
    return block.learn(x, ctx, output)



def forward_step(block: Block, x: Tensor, output: bool = True) -> Tensor | None:
    """The block's forward pass and nothing else: in train mode its batch norm updates its running statistics."""
    if output:
        return block(x)
    block.bn(x)
    return None


@torch.no_grad()
def _normalise_batches(bn: torch.nn.BatchNorm2d, x: Tensor, sizes: list[int]) -> Tensor:
    """``bn`` in train mode called on consecutive slices of ``x`` of the given sizes, computed at once.

    Each slice is normalised by its own mean and biased variance, and the running statistics take the
    momentum update of each slice in turn (unbiased variance), as ``len(sizes)`` train-mode calls would.
    """
    out = torch.empty_like(x)
    m = bn.momentum
    for start, size in zip(np.cumsum([0] + sizes[:-1]).tolist(), sizes):
        batch = x[start:start + size]
        mean = batch.mean((0, 2, 3))
        var = batch.var((0, 2, 3), unbiased=False)
        n = batch.numel() // batch.shape[1]
        bn.running_mean.mul_(1 - m).add_(mean, alpha=m)
        bn.running_var.mul_(1 - m).add_(var * (n / max(n - 1, 1)), alpha=m)
        bn.num_batches_tracked.add_(1)
        out[start:start + size] = (batch - mean[:, None, None]) * torch.rsqrt(var[:, None, None] + bn.eps)
    return out


@torch.no_grad()
def fit_batch_norms(net: SoftHebbNet, images: Images, mode: str = "greedy", batch_size: int = 10, seed: int = 0,
                    device=None, start_block: int = 0, on_block_done: Callable[[int], None] | None = None,
                    progress: bool = True, augmentation: str = "none", augment_pad: int = 4,
                    batches_per_chunk: int = 50) -> None:
    """The random-weight baseline's unsupervised pass: the batch norms fitted, the weights never changed.

    The baseline is the same network as SoftHebb's with the Hebbian update removed, so its batch
    norms see the same epoch: the same batches in the same order, the same augmentation draws and the
    same train/eval modes as :func:`train_unsupervised` (greedy: block ``l``'s batch norm in train
    mode behind the frozen blocks before it; consecutive: all of them), with momentum updates from
    each batch of ``batch_size``. The result equals ``train_unsupervised(..., step=forward_step)``
    up to float rounding (tested), but ``batches_per_chunk`` batches go through the network at once:
    the per-batch forward passes of small batches, not the statistics, are what such a pass costs.
    """
    batches, stages = _epoch_plan(net, images, mode, batch_size, seed, start_block, augmentation)
    normalize = net.preset.normalize
    chunks = [range(k, min(k + batches_per_chunk, len(batches))) for k in range(0, len(batches), batches_per_chunk)]
    for stage in stages:
        net.set_learning_block("all" if stage is None else stage)
        label = "batch norms (all layers)" if stage is None else f"batch norm {stage + 1}/{len(net.blocks)}"
        indices = (torch.from_numpy(np.concatenate([batches[k] for k in chunk])) for chunk in chunks)
        for chunk, x in zip(tqdm(chunks, desc=label, disable=not progress, mininterval=2.0, unit="chunk"),
                            iter_batches(images, indices, device=device)):
            x = to_float(x, device, normalize)
            sizes = [len(batches[k]) for k in chunk]
            if augmentation != "none":
                x = torch.cat([augment(part, augmentation, augment_pad, generator=unsupervised_augment_generator(seed, k))
                               for part, k in zip(x.split(sizes), chunk)])
            if stage is None:
                for block in net.blocks:
                    x = block.after_norm(_normalise_batches(block.bn, x, sizes))
            else:
                _normalise_batches(net.blocks[stage].bn, net.features(x, upto=stage), sizes)
        net.set_learning_block(None)
        if on_block_done is not None:
            on_block_done(len(net.blocks) - 1 if stage is None else stage)
