"""The backprop baseline (docs/algorithm.md §7): the same blocks, with ReLU and ``nn.Conv2d``, trained end to end.

Same optimiser, batch size and learning-rate halvings as the readout (:mod:`rate_decoder.readout`).
Each epoch's order and dropout draws come from ``(seed, epoch)`` alone, so a run resumed at an epoch
boundary from the network and optimiser state saved there reproduces the uninterrupted run.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from .data import Images, to_float
from .network import SoftHebbNet
from .readout import accuracy, halving_epochs


def train_backprop(net: SoftHebbNet, x_train: Images, y_train: Tensor, x_test: Images, y_test: Tensor,
                   epochs: int = 50, batch_size: int = 64, lr: float = 1e-3, seed: int = 0, device=None,
                   start_epoch: int = 0, optimizer_state: dict | None = None,
                   on_epoch: Callable[[int, dict, dict], None] | None = None, progress: bool = True) -> list[dict]:
    """The backprop baseline: the same blocks (ReLU, ``nn.Conv2d``) and head trained end to end.

    ``start_epoch`` with the ``optimizer_state`` that ``on_epoch(epoch, metrics, optimizer_state)``
    received after that epoch (its learning rate included) continues the run; returns the metrics of
    the epochs run here.
    """
    normalize = net.preset.normalize
    optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=lr)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    halvings = halving_epochs(epochs)
    history = []
    for epoch in range(start_epoch, epochs):
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
