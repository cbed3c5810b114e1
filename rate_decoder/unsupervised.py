"""The unsupervised epoch (SPEC.md §6.1): greedy (one epoch per block) or consecutive (all blocks at once).

The loop takes a per-block step, :func:`learn_step` (the Hebbian update) by default, so another use of
the same epoch -- the same batches, augmentation draws and batch-norm modes, with some other work
per block -- is one argument away.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .augment import AUGMENTATIONS, augment
from .config import MODES, canonical_mode
from .data import Images, iter_batches, to_float
from .network import Block, SoftHebbNet

#: ``step(block, x) -> y``: the work of one block on one float batch, returning the block's output
BlockStep = Callable[[Block, Tensor], Tensor]


def learn_step(block: Block, x: Tensor) -> Tensor:
    """One Hebbian update of ``block`` on ``x``; the block's output with its pre-step weights (SPEC.md §2.7)."""
    return block.learn(x)


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
                       progress: bool = True, augmentation: str = "none", augment_pad: int = 4,
                       step: BlockStep = learn_step) -> None:
    """One unsupervised epoch per block (greedy) or one epoch for all blocks at once (consecutive).

    Greedy: block ``l`` steps while blocks ``< l`` are frozen and in eval mode; only blocks up to
    ``l`` are computed. Consecutive: every block steps on each batch, each on the output its
    predecessor's step returned (for :func:`learn_step`: computed with the pre-step weights, SPEC.md
    §2.7), all batch norms in train mode. ``mode="simultaneous"``, the former name of consecutive,
    is accepted with a ``DeprecationWarning``. ``on_block_done(l)`` is called after block ``l``
    (greedy) or after the epoch (consecutive, with the last index), e.g. to write a checkpoint.

    ``augmentation`` (a kind of :func:`~rate_decoder.augment.augment`, ``augment_pad`` its padding)
    transforms each float batch before the first block: the reference code's ``ImageNet_1160``
    unsupervised epoch uses RandomResizedCrop + flip (SPEC.md §5, §10 #13), here of the stored
    ``Resize((S, S))`` copy as for the readout. Batch ``k``'s draws come from
    :func:`unsupervised_augment_generator` ``(seed, k)``, so in greedy mode every layer sees the same
    augmented images, as in the reference: its ``make_data_loaders`` re-seeds torch
    (``seed_init_fn``) at every loader construction, once per layer, and the loader's workers take
    their seeds, hence their crops, from it (SPEC.md §5: the same batch order for every layer).
    ``"none"`` adds nothing to the loop.
    """
    mode = canonical_mode(mode, stacklevel=2)
    if mode not in MODES:
        raise ValueError(f"unknown training mode {mode!r}; choose one of {MODES}")
    if augmentation not in AUGMENTATIONS:
        raise ValueError(f"unknown unsupervised augmentation {augmentation!r}; choose one of {AUGMENTATIONS}")
    net.check_input(images)
    normalize = net.preset.normalize
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
                        x = step(block, x)
                else:
                    step(net.blocks[stage], net.features(x, upto=stage))
        net.set_learning_block(None)
        if on_block_done is not None:
            on_block_done(len(net.blocks) - 1 if stage is None else stage)
