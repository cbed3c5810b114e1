"""The linear readout on the frozen network's features (docs/algorithm.md §6.2).

Dropout on the flattened features, Adam(1e-3), batch 64, the learning rate halved after epochs
floor({0.2, 0.35, 0.5, 0.6, 0.7, 0.8, 0.9} * E) (the reference code's CustomStepLR), and the last
epoch's test accuracy reported.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from .data import Images
from .network import SoftHebbNet

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
