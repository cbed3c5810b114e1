"""The linear readout on the frozen network's features (docs/algorithm.md §6.2).

Dropout on the flattened features, Adam(1e-3), batch 64, the learning rate halved after epochs
floor({0.2, 0.35, 0.5, 0.6, 0.7, 0.8, 0.9} * E) (the reference code's CustomStepLR), and the last
epoch's test accuracy reported.
"""
from __future__ import annotations

import contextlib
import itertools
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from .data import Images, iter_batches
from .distributed import SINGLE, Distributed, shard_rows
from .network import SoftHebbNet
from .readout_kernel import gathered_matmul, usable

#: row b: the 8 dropout scales (0 or 1 / (1 - 0.5) = 2) that the bits of the byte b give, lowest bit first
_BYTE_SCALES = ((torch.arange(256)[:, None] >> torch.arange(8)) & 1).float() * 2.0


def feature_dropout(x: Tensor, p: float, rows: tuple[int, int] | None = None) -> Tensor:
    """Inverted dropout on a batch of features, as ``F.dropout`` in train mode, but cheaper on CPU.

    For ``p = 0.5`` the keep-mask is the bits of random 64-bit words: one random draw per 64
    features instead of one per feature. ``F.dropout`` spent ~29 ms per 64 x 24,576 batch on a Xeon (its
    Bernoulli sampler), which made the 50-epoch CIFAR readout take 16 minutes; this takes ~1.3 ms. Each
    byte is turned into its 8 scales (0 or 2) by one lookup in a 256-row table, which on an AMD EPYC
    took a third of the time of masking each bit and multiplying by the boolean mask.

    ``rows = (start, total)``: ``x`` is rows ``start:`` of a batch of ``total``, and gets the mask those
    rows would get in the whole batch (a data-parallel rank's shard; the mask of the whole batch is drawn).
    """
    if p == 0.0:
        return x
    start, total = rows if rows is not None else (0, len(x))
    shape = (total,) + tuple(x.shape[1:])
    if p != 0.5 or x.device.type != "cpu":
        if rows is None:
            return F.dropout(x, p, training=True)
        keep = torch.rand(shape, device=x.device)[start:start + len(x)] >= p
        return x.mul(keep).div_(1.0 - p)
    n = math.prod(shape)
    scale = _BYTE_SCALES.index_select(0, dropout_bits(n).int()).view(-1)[:n].view(shape)
    return x * scale[start:start + len(x)]


def dropout_bits(n: int) -> Tensor:
    """The keep-bits of ``n`` features at ``p = 0.5``, as bytes (bit ``j`` of the stream, lowest first, keeps
    feature ``j``): random 64-bit words from torch's generator, shared by :func:`feature_dropout` and the kernel."""
    return torch.randint(-2**63, 2**63 - 1, ((n + 63) // 64,), dtype=torch.int64).view(torch.uint8)


class CachedFeatureHead(torch.nn.Module):
    """The head on rows of a cached feature matrix, by the fused CPU kernel (:mod:`~rate_decoder.readout_kernel`).

    ``forward(idx, rows)`` gives the logits of ``head(feature_dropout(features[idx].float(), p, rows))``,
    with the same dropout mask drawn from the same generator, without a batch of floats in memory.
    A module, so that :class:`~torch.nn.parallel.DistributedDataParallel` can wrap it (its parameters are
    the head's). The kernel runs on ``threads`` threads (default: torch's number).
    """

    def __init__(self, head: torch.nn.Linear, features: Tensor, p: float, threads: int | None = None):
        super().__init__()
        if p not in (0.0, 0.5):
            raise ValueError(f"the fused readout takes dropout 0 or 0.5, not {p}")
        self.head, self.features, self.p = head, features, p
        self.threads = threads or torch.get_num_threads()

    def forward(self, idx: Tensor, rows: tuple[int, int]) -> Tensor:
        start, total = rows
        bits = dropout_bits(total * self.features.shape[1]) if self.p else None
        return gathered_matmul(self.head.weight, self.features, idx, bits, start, self.threads) + self.head.bias

    @torch.no_grad()
    def accuracy(self, features: Tensor, labels: Tensor, batch_size: int = 1000) -> float:
        """:func:`accuracy` of the head on every row of ``features`` (no dropout)."""
        correct = 0
        for i in range(0, len(features), batch_size):
            logits = gathered_matmul(self.head.weight, features[i:i + batch_size], threads=self.threads) + self.head.bias
            correct += (logits.argmax(1) == labels[i:i + batch_size]).sum().item()
        return correct / max(1, len(features))


@contextlib.contextmanager
def _torch_threads(n: int):
    """torch on ``n`` threads inside the block. The fused readout runs its kernel on threads of its own (as
    many as torch had); torch's threads, idle between its small operations, would spin on the same cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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
    starts = range(0, len(features), batch_size)
    for i, batch in zip(starts, iter_batches(features, [slice(i, i + batch_size) for i in starts], device=device)):
        logits = logits_fn(batch.to(device, torch.float32) if prepare is None else prepare(batch))
        correct += (logits.argmax(1).cpu() == labels[i:i + batch_size]).sum().item()
    return correct / max(1, len(features))


def train_readout(net: SoftHebbNet, train_features: Tensor | Images, train_labels: Tensor, test_features: Tensor,
                  test_labels: Tensor, epochs: int = 50, batch_size: int = 64, lr: float = 1e-3, seed: int = 0,
                  device=None, start_epoch: int = 0, optimizer_state: dict | None = None,
                  on_epoch: Callable[[int, dict, dict], None] | None = None, progress: bool = True,
                  feature_fn: Callable[..., Tensor] | None = None, ctx: Distributed = SINGLE) -> list[dict]:
    """Train ``net.head`` on cached features (dropout applied to them); returns per-epoch metrics.

    With ``feature_fn``, ``train_features`` holds the training *images* instead and each batch's
    features are ``feature_fn(images[idx], rows)``, recomputed every time (readout augmentation;
    ``rows``: as in :func:`~rate_decoder.augment.augment`, ``None`` in a single process).

    Shuffling and dropout are re-seeded from ``(seed, epoch)`` at every epoch, so a run resumed at
    ``start_epoch`` with the saved ``optimizer_state`` reproduces the uninterrupted one.
    ``on_epoch(epoch, metrics, optimizer_state)`` runs after each epoch (checkpointing).

    Data-parallel (``ctx.active``): the head is wrapped in ``DistributedDataParallel``; every rank
    draws the same order, takes its shard of each batch with that shard's dropout mask, and scales its
    summed loss so that DDP's gradient average is the whole batch's mean: every rank then takes the
    step one process would, up to summation order. Every rank holds all the features.

    Cached fp16 or fp32 features on the CPU go through the fused kernel (:class:`CachedFeatureHead`,
    :mod:`~rate_decoder.readout_kernel`) and Adam's fused step: the same shuffles and dropout masks, the
    sums in other orders than torch's. ``SOFTHEBB_READOUT_KERNEL=torch`` turns both off.
    """
    if len(train_features) != len(train_labels) or len(test_features) != len(test_labels):
        raise ValueError("features and labels differ in length")
    head, p_drop = net.head, net.dropout.p
    fused = (feature_fn is None and p_drop in (0.0, 0.5) and usable(train_features, head.out_features, device)
             and usable(test_features, head.out_features, device))
    inner = CachedFeatureHead(head, train_features, p_drop, torch.get_num_threads()) if fused else head
    model = DistributedDataParallel(inner) if ctx.active else inner
    optimizer = torch.optim.Adam(head.parameters(), lr=lr, fused=True if fused else None)  # one kernel for the step
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    halvings = halving_epochs(epochs)
    history = []
    with _torch_threads(1 if fused else torch.get_num_threads()):
        for epoch in tqdm(range(start_epoch, epochs), desc="readout", disable=not progress, unit="epoch",
                          initial=start_epoch, total=epochs):
            torch.manual_seed(seed * 100_003 + epoch)
            order = torch.randperm(len(train_features))
            head.train()
            sums = torch.zeros(2, dtype=torch.float64)  # summed loss, correct
            starts = range(0, len(order), batch_size)
            shares = [torch.from_numpy(ctx.shard(order[i:i + batch_size].numpy())) for i in starts]
            batches = itertools.repeat(None) if fused else iter_batches(train_features, shares, device=device)
            for i, idx, f in zip(starts, shares, batches):
                rows = shard_rows(ctx, len(order[i:i + batch_size]))
                if fused:
                    logits = model(idx, rows)
                else:
                    if feature_fn is None:
                        f = f.to(device, torch.float32)
                    else:
                        f = feature_fn(f, rows if ctx.active else None)
                    logits = model(feature_dropout(f, p_drop, rows if ctx.active else None))
                y = train_labels[idx].to(device)
                if ctx.active:  # DDP averages the ranks' gradients: sum / (global batch / world) per rank
                    loss = F.cross_entropy(logits, y, reduction="sum") * (ctx.world / rows[1])
                else:
                    loss = F.cross_entropy(logits, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                sums += torch.tensor([loss.item() * rows[1] / ctx.world, (logits.argmax(1) == y).sum().item()],
                                     dtype=torch.float64)
            total_loss, correct = ctx.all_reduce_sum(sums).tolist()
            if epoch + 1 in halvings:
                for group in optimizer.param_groups:
                    group["lr"] *= 0.5
            head.eval()
            metrics = {"epoch": epoch + 1, "train_loss": total_loss / len(order), "train_acc": correct / len(order),
                       "test_acc": (inner.accuracy(test_features, test_labels) if fused
                                    else accuracy(head, test_features, test_labels, device)),
                       "lr": optimizer.param_groups[0]["lr"]}
            history.append(metrics)
            if on_epoch is not None:
                on_epoch(epoch + 1, metrics, optimizer.state_dict())
    return history
