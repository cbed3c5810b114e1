"""Stacking spiking SoftHebb layers: layer 2 learns from what layer 1's output spikes say.

The relay mirrors the rate network's block boundary (SPEC.md §3: ... -> activation -> pooling ->
batch norm -> next conv). Layer 1 is presented every position of each image with learning off; its
spike counts in the counting window, divided by ``R T``, estimate ``softmax(t u)`` per position
(:func:`count_maps`). These maps are max-pooled as in the preset and standardised per channel with
statistics fitted on the training maps (the next block's batch norm); the standardised values drive
layer 2's ON/OFF inputs (:func:`next_layer_input`), one 3x3 patch of the pooled map (all K1
channels) per presentation.

What is relayed is each layer-1 neuron's spike *count* over a presentation window, re-encoded as a
Poisson rate for layer 2: spike times are not passed on one by one, so layer 2 sees layer 1's spike
noise (through the counts) but not its timing. The pooling and the standardisation are not local
operations of a spiking circuit either; they are the rate network's, kept so that both networks
stack the same way.

:mod:`snn.relay` relays the spike trains themselves (spike by spike, pooling by the onset shares,
the standardisation as synaptic gain and bias current); this module is the simpler count relay.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from . import data
from .params import MAX_ABS_INPUT


def count_maps(layer, images: np.ndarray, kernel_size: int = 5) -> np.ndarray:
    """Output spike counts ``(N, K, H, W)`` of ``layer`` (learning off) at every position of ``images``.

    ``images``: standardised ``(N, C, H, W)``. One presentation per position, row-major.
    """
    N, C, H, W = images.shape
    if layer.n_inputs != C * kernel_size ** 2:
        raise ValueError(f"layer has {layer.n_inputs} inputs, patches of {C}x{kernel_size}x{kernel_size} have "
                         f"{C * kernel_size ** 2}")
    patches = np.concatenate([data.image_patches(img, kernel_size) for img in images])
    counts = layer.present(np.clip(patches, -MAX_ABS_INPUT + 1e-6, MAX_ABS_INPUT - 1e-6), learn=False).counts
    return counts.reshape(N, H, W, layer.n_neurons).transpose(0, 3, 1, 2)


def shares_from_counts(counts: np.ndarray, output_rate_hz: float, t_count_s: float) -> np.ndarray:
    """``counts / (R T)``: the spiking estimate of ``softmax(t u)`` (unbiased, Poisson noise)."""
    return np.asarray(counts, dtype=np.float64) / (output_rate_hz * t_count_s)


def pool_maps(maps: np.ndarray, kernel: int = 4, stride: int = 2, padding: int = 1) -> np.ndarray:
    """Max pooling of ``(N, K, H, W)`` maps, as the preset's ``max_4_2_1``."""
    return F.max_pool2d(torch.as_tensor(maps), kernel, stride, padding).numpy()


def fit_standardisation(maps: np.ndarray, eps: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of ``(N, K, H, W)`` maps (what a batch norm's running statistics hold)."""
    mean = maps.mean(axis=(0, 2, 3))
    std = np.sqrt(maps.var(axis=(0, 2, 3)) + eps)
    return mean, std


def next_layer_input(pooled: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Standardised maps, clipped to the ON/OFF encoder's range ``|x| < MAX_ABS_INPUT``."""
    z = (pooled - mean[None, :, None, None]) / std[None, :, None, None]
    return np.clip(z, -MAX_ABS_INPUT + 1e-6, MAX_ABS_INPUT - 1e-6)


__all__ = ["count_maps", "shares_from_counts", "pool_maps", "fit_standardisation", "next_layer_input"]
