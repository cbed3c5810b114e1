"""The rate network reading out a spiking layer: its kernels in the 1-layer MNIST network, and the
activations that stand for its spike counts.

* :func:`network_with_kernels` puts a spiking layer's ``(K, C*25)`` weights into the first block of the
  ``mnist`` (or another) preset (batch norm -> conv -> activation -> max pool 4/2/1) with the batch norm set
  to the standardisation the spiking layer saw (:mod:`snn.data`), so the conv computes the spiking layer's
  ``u = w . x`` at every position; :func:`fit_input_bn` fits those statistics instead, in one pass.
* :class:`SoftWTA` is the expected share of each neuron's output spikes, ``softmax(t u)``;
  :class:`PoissonShares` draws spike counts for it, ``Poisson(R T p) / (R T)``: a model of the
  spiking layer's decoded counts.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from rate_decoder import SoftHebbNet, load_preset
from rate_decoder.activations import SoftWTA
from rate_decoder.data import to_float

from .data import MNIST_MEAN, MNIST_STD
from .decoding import weights_to_conv


class PoissonShares(SoftWTA):
    """Spike counts drawn for ``softmax(t u)``: ``Poisson(R T p) / (R T)`` per position and channel.

    Mean ``p``, variance ``p / (R T)``; the draws come from the module's own generator, so a fixed
    seed gives the same features.
    """

    def __init__(self, inverse_temperature: float, expected_spikes: float, seed: int = 0):
        super().__init__(inverse_temperature)
        self.expected_spikes = float(expected_spikes)
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        rate = super().forward(u) * self.expected_spikes
        return torch.poisson(rate.double(), generator=self.generator).to(u.dtype) / self.expected_spikes

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, expected_spikes={self.expected_spikes}"


def network_with_kernels(weights: np.ndarray, activation: nn.Module | None = None, preset: str = "mnist",
                         fit_images: torch.Tensor | None = None) -> SoftHebbNet:
    """The 1-layer network of ``preset`` (eval mode) with ``weights (K, C*25)`` as its 5x5 kernels.

    The input batch norm is set to MNIST's standardisation (``preset="mnist"``), or fitted on
    ``fit_images`` (uint8, :func:`fit_input_bn`), which another preset needs: a batch norm left at
    mean 0 and variance 1 would not be the standardisation the kernels were learnt with.
    ``activation``: replaces the preset's activation (e.g. :class:`SoftWTA`).
    """
    K = weights.shape[0]
    net = SoftHebbNet(load_preset(preset, layers=1, width_factor=K / 96))
    block = net.blocks[0]
    C = net.preset.in_channels
    if block.conv.weight.shape != (K, C, 5, 5) or weights.shape != (K, C * 25):
        raise ValueError(f"kernels {weights.shape} do not fit the {preset} preset's 5x5 first layer of {C} channels")
    with torch.no_grad():
        block.conv.weight.copy_(weights_to_conv(weights, C, 5))
    if fit_images is not None:
        fit_input_bn(net, fit_images)
    elif preset == "mnist":
        with torch.no_grad():
            block.bn.running_mean.fill_(MNIST_MEAN)
            block.bn.running_var.fill_(MNIST_STD ** 2 - block.bn.eps)  # (x - mean) / sqrt(var + eps) = standardised
    else:
        raise ValueError(f"the {preset} preset's input standardisation is fitted: pass fit_images (its training images)")
    if activation is not None:
        block.activation = activation
    net.eval()
    return net


def fit_input_bn(net: SoftHebbNet, images: torch.Tensor, batch_size: int = 500) -> tuple[float, float]:
    """Fit the first block's batch-norm running statistics on ``images`` (uint8), as a learning pass would.

    The batch norm runs in train mode over all images with ``momentum=None``, i.e. the running
    statistics are the cumulative average of the batch statistics (the dataset's mean and unbiased
    variance per channel); its momentum and eval mode are restored. Returns ``(mean, std)`` of channel 0.
    """
    bn = net.blocks[0].bn
    momentum = bn.momentum
    bn.reset_running_stats()
    bn.momentum = None
    bn.train()
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            bn(to_float(images[i:i + batch_size], None, net.preset.normalize))
    bn.momentum = momentum
    bn.eval()
    return float(bn.running_mean[0]), float(bn.running_var[0].sqrt())


__all__ = ["SoftWTA", "PoissonShares", "network_with_kernels", "fit_input_bn"]
