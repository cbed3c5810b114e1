"""Stacking spiking SoftHebb layers by counts: layer 2 learns from what layer 1's output spike counts say.

The count relay mirrors the rate network's block boundary (docs/algorithm.md §3: ... -> activation -> pooling ->
batch norm -> next conv). Layer 1 is presented every position of each image with learning off; its
spike counts in the counting window, divided by ``R T``, estimate ``softmax(t u)`` per position
(:func:`count_maps`, :func:`snn.decoding.shares_from_counts`). These maps are max-pooled as in the
preset and standardised per channel with statistics fitted on the training maps (the next block's
batch norm, :mod:`snn.decoding`); the standardised values drive layer 2's ON/OFF inputs
(:func:`next_layer_input`), one 3x3 patch of the pooled map (all K1 channels) per presentation.

What is relayed is each layer-1 neuron's spike *count* over a presentation window, re-encoded as a
Poisson rate for layer 2: spike times are not passed on one by one, so layer 2 sees layer 1's spike
noise (through the counts) but not its timing. The pooling and the standardisation are not local
operations of a spiking circuit either; they are the rate network's, kept so that both networks
stack the same way. :mod:`snn.relay` relays the spike trains themselves.
"""
from __future__ import annotations

import numpy as np

from . import data
from .layer import SpikingSoftHebb
from .params import MAX_ABS_INPUT

LIMIT = MAX_ABS_INPUT - 1e-6  # the ON/OFF encoder's range


def count_maps(layer: SpikingSoftHebb, images: np.ndarray, kernel_size: int = 5) -> np.ndarray:
    """Output spike counts ``(N, K, H, W)`` of ``layer`` (learning off) at every position of ``images``.

    ``images``: standardised ``(N, C, H, W)``, clipped to the encoder's range. One presentation per
    position, row-major.
    """
    N, C, H, W = images.shape
    if layer.n_inputs != C * kernel_size ** 2:
        raise ValueError(f"layer has {layer.n_inputs} inputs, patches of {C}x{kernel_size}x{kernel_size} have "
                         f"{C * kernel_size ** 2}")
    patches = np.concatenate([data.image_patches(img, kernel_size) for img in images])
    counts = layer.present(np.clip(patches, -LIMIT, LIMIT), learn=False).counts
    return counts.reshape(N, H, W, layer.n_neurons).transpose(0, 3, 1, 2)


def next_layer_input(pooled: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Standardised maps ``(pooled - mean_c) / std_c``, clipped to the ON/OFF encoder's range ``|x| < MAX_ABS_INPUT``.

    Returns ``(N, K, Hp, Wp)``.
    """
    z = (pooled - mean[None, :, None, None]) / std[None, :, None, None]
    return np.clip(z, -LIMIT, LIMIT)


__all__ = ["count_maps", "next_layer_input"]
