"""Forward activations of SoftHebb blocks (docs/algorithm.md §3)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from . import rules


def triangle(u: Tensor, power: float = 1.0, dim: int = 1) -> Tensor:
    r"""Triangle: :math:`a_k = \max(u_k - \bar u, 0)^p`, with :math:`\bar u` the mean over channels at each position.

    The mean is detached, as in the reference code; it matters only for backpropagation. Without
    autograd the rectification and the power run in place on the one fresh tensor ``u - mean``.
    """
    a = u - u.mean(dim=dim, keepdim=True).detach()
    if torch.is_grad_enabled() and a.requires_grad:
        a = torch.relu(a)
        return a if power == 1.0 else a.pow(power)
    a.relu_()
    return a if power == 1.0 else a.pow_(power)


def repu(u: Tensor, power: float = 1.0) -> Tensor:
    r"""Rectified power unit :math:`a = \max(u, 0)^p`."""
    a = torch.relu(u)
    if power == 1.0:
        return a
    return a.pow(power) if torch.is_grad_enabled() and a.requires_grad else a.pow_(power)


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


class SoftWTA(nn.Module):
    """``softmax(t u)`` over channels: the soft winner-take-all the layer learns with, which is also what a
    spiking layer emits (the expected share of each neuron's output spikes, :mod:`snn.network`)."""

    def __init__(self, inverse_temperature: float):
        super().__init__()
        self.inverse_temperature = float(inverse_temperature)

    def forward(self, u: Tensor) -> Tensor:
        return rules.soft_wta(u, self.inverse_temperature, dim=1)

    def extra_repr(self) -> str:
        return f"inverse_temperature={self.inverse_temperature}"


def make_activation(name: str, power: float = 1.0, inverse_temperature: float = 1.0) -> nn.Module:
    """Activation module from its preset name: ``triangle``, ``repu``, ``relu``, ``tanh`` (the paper's activation
    comparison, Appendix B.3) or ``softmax`` (the layer's soft WTA at its ``inverse_temperature``: the
    spiking network's activation)."""
    if name == "triangle":
        return Triangle(power)
    if name == "repu":
        return RePU(power)
    if name == "relu":
        return nn.ReLU()
    if name == "tanh":
        return nn.Tanh()
    if name == "softmax":
        return SoftWTA(inverse_temperature)
    raise ValueError(f"unknown activation {name!r}; choose triangle, repu, relu, tanh or softmax")
