r"""From spike counts to the rate network's quantities, and spiking weights in the rate network's layout.

A spiking layer's output neuron ``k`` fires at rate ``R p_k`` with ``p = softmax(t u)``, so its count
in a window of length ``T`` divided by ``R T`` estimates ``p_k`` (:func:`shares_from_counts`), the
activation of the rate network's soft WTA (:func:`expected_shares`, computed with
:mod:`rate_decoder.rules`). Stacking applies the rate network's block boundary to those maps: max
pooling (:func:`max_pool`) and a per-channel standardisation whose statistics are fitted on training
maps (:func:`fit_standardisation`, what the next block's batch norm holds).

A spiking layer holds ``K`` flattened weight vectors ``(K, C*k*k)`` in the ``(C, k, k)`` order of a
convolution weight (the order of :func:`snn.data.image_patches`); :func:`weights_to_conv` reshapes
them for a convolution.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from rate_decoder import rules


def shares_from_counts(counts: np.ndarray, output_rate_hz: float, t_count_s: float) -> np.ndarray:
    """``counts / (R T)``: the spiking estimate of ``softmax(t u)`` (unbiased up to trace noise, Poisson spread)."""
    return np.asarray(counts, dtype=np.float64) / (output_rate_hz * t_count_s)


def weights_to_conv(weights: np.ndarray, in_channels: int, kernel_size: int) -> torch.Tensor:
    """``(K, C*k*k)`` -> ``(K, C, k, k)`` float64 tensor (row-major ``(C, k, k)`` flattening)."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 2 or w.shape[1] != in_channels * kernel_size ** 2:
        raise ValueError(f"weights {w.shape} do not have C*k*k = {in_channels * kernel_size ** 2} inputs")
    return torch.from_numpy(w.reshape(len(w), in_channels, kernel_size, kernel_size).copy())


def expected_shares(weights: np.ndarray, images: np.ndarray, inverse_temperature: float,
                    kernel_size: int = 5) -> np.ndarray:
    """``softmax(t u)`` maps ``(N, K, H, W)`` of a ``k x k`` layer on standardised images ``(N, C, H, W)``.

    ``u = conv(pad(x), W)`` with reflect padding by ``(k - 1) / 2``, as the rate network's conv layer:
    the expected share of each output neuron's spikes at every position.
    """
    x = torch.as_tensor(np.asarray(images, dtype=np.float64))
    p = (kernel_size - 1) // 2
    w = weights_to_conv(weights, x.shape[1], kernel_size)
    u = rules.conv_forward(F.pad(x, (p, p, p, p), mode="reflect"), w)
    return rules.soft_wta(u, inverse_temperature, dim=1).numpy()


def max_pool(maps: np.ndarray, kernel: int = 4, stride: int = 2, padding: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Max pooling of ``(N, K, H, W)`` maps as the presets' ``max_4_2_1``: the pooled maps and, per pooled
    cell, the flat position ``y * W + x`` of the maximum it took."""
    pooled, index = F.max_pool2d(torch.as_tensor(maps), kernel, stride, padding, return_indices=True)
    return pooled.numpy(), index.numpy()


def fit_standardisation(maps: np.ndarray, eps: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std ``(K,)`` of ``(N, K, H, W)`` maps (what a batch norm's running statistics hold)."""
    return maps.mean(axis=(0, 2, 3)), np.sqrt(maps.var(axis=(0, 2, 3)) + eps)


__all__ = ["shares_from_counts", "weights_to_conv", "expected_shares", "max_pool", "fit_standardisation"]
