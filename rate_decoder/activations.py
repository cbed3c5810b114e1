"""Forward activations of SoftHebb blocks (SPEC.md §3)."""
from __future__ import annotations

import torch
from torch import Tensor, nn


def triangle(u: Tensor, power: float = 1.0, dim: int = 1) -> Tensor:
    r"""Triangle: :math:`a_k = \max(u_k - \bar u, 0)^p`, with :math:`\bar u` the mean over channels at each position.

    The mean is detached, as in the reference code; it matters only for backpropagation.
    """
    a = torch.relu(u - u.mean(dim=dim, keepdim=True).detach())
    return a if power == 1.0 else a.pow(power)


def repu(u: Tensor, power: float = 1.0) -> Tensor:
    r"""Rectified power unit :math:`a = \max(u, 0)^p`."""
    a = torch.relu(u)
    return a if power == 1.0 else a.pow(power)


class Triangle(nn.Module):
    def __init__(self, power: float = 1.0):
        super().__init__()
        self.power = float(power)

    def forward(self, u: Tensor) -> Tensor:
        return triangle(u, self.power)

    def extra_repr(self) -> str:
        return f"power={self.power}"


class RePU(nn.Module):
    def __init__(self, power: float = 1.0):
        super().__init__()
        self.power = float(power)

    def forward(self, u: Tensor) -> Tensor:
        return repu(u, self.power)

    def extra_repr(self) -> str:
        return f"power={self.power}"


def make_activation(name: str, power: float = 1.0) -> nn.Module:
    """Activation module from its preset name: ``triangle``, ``repu`` or ``relu``."""
    if name == "triangle":
        return Triangle(power)
    if name == "repu":
        return RePU(power)
    if name == "relu":
        return nn.ReLU()
    raise ValueError(f"unknown activation {name!r}; choose triangle, repu or relu")
