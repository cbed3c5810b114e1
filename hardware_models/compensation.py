"""Global drift compensation: one digital scale factor per layer, estimated from a reference read.

PCM conductances decay as ``(t / t0)^-nu`` with ``nu`` about 0.05, so all weights of a layer
shrink by a nearly common factor (about 30 % after a day). A single scale measured on the chip
recovers most of that loss, because what the network needs is the weights' relative sizes
(aihwkit ``GlobalDriftCompensation``; Joshi et al., Nat. Commun. 11:2473, 2020). The readout
is aihwkit's: the mean absolute output for one-hot probe inputs, i.e. the mean ``|w|`` of the
weights as read (with their read noise): ``alpha = mean|W(t_ref)| / mean|W(t)|``.

Usage, after training::

    comp = GlobalDriftCompensation(device)   # reference read, right after programming
    device.age(86400.0)
    layer.weight.copy_(comp.read())          # alpha(t) * W(t), one fresh read
"""
from __future__ import annotations

import torch
from torch import Tensor


def readout(weight: Tensor) -> Tensor:
    """Mean absolute response to one-hot probes: the mean ``|w|``, floored at 1e-4 as in aihwkit."""
    return weight.abs().mean().clamp(min=1e-4)


class GlobalDriftCompensation:
    """Scale later reads of ``device`` by ``alpha = readout(reference) / readout(now)``.

    The reference is read at construction (or at :meth:`calibrate`); each :meth:`read` costs one
    read of the device, which serves both to estimate ``alpha`` and as the returned weights.
    """

    def __init__(self, device):
        self.device = device
        self.calibrate()

    @torch.no_grad()
    def calibrate(self) -> None:
        """Take the reference readout now (call right after programming)."""
        self.reference = readout(self.device.read())

    @torch.no_grad()
    def factor(self, weight: Tensor) -> Tensor:
        """The compensation factor ``alpha`` for weights read now."""
        return self.reference / readout(weight)

    @torch.no_grad()
    def read(self) -> Tensor:
        """Read the device and return the compensated weights ``alpha * W``."""
        w = self.device.read()
        return self.factor(w) * w
