"""Multilayer SoftHebb as Brian2 spiking populations, checked against the rate rule of :mod:`rate_decoder`.

Example::

    import numpy as np
    from snn import SpikingSoftHebb, preset

    layer = SpikingSoftHebb(25, 16, params=preset("fast"), seed=0)   # 16 neurons on 5x5 patches
    out = layer.present(np.zeros((10, 25)), learn=True)              # counts (10, 16), weights (16, 25)

Modules: :mod:`snn.params` (constants and presets), :mod:`snn.network` (the circuit),
:mod:`snn.simulation` (build and run), :mod:`snn.layer` (ON/OFF pixel inputs), :mod:`snn.relay` and
:mod:`snn.stack` (a second layer on the first one's spikes or counts), :mod:`snn.conv` (learnt kernels as
spatial maps over whole images, spiking max pooling, event counts), :mod:`snn.energy` (energy per image
from the counts and published figures), :mod:`snn.decoding` (counts to
the rate network's quantities), :mod:`snn.readout` (the rate network reading out a spiking layer),
:mod:`snn.reference` (the rate rule on the same inputs), :mod:`snn.data` (MNIST patches).
"""
from . import conv, data, decoding, energy, readout, reference, relay, stack
from .layer import SpikingSoftHebb
from .params import PRESETS, SpikingParams, preset
from .relay import Layer1Trains, SpikingRelayLayer, record_layer1
from .simulation import CompilerNotFoundError, PlasticLayer, Presentation, cache_dir, check_compiler

__all__ = [
    "CompilerNotFoundError", "Layer1Trains", "PRESETS", "PlasticLayer", "Presentation", "SpikingParams",
    "SpikingRelayLayer", "SpikingSoftHebb", "cache_dir", "check_compiler", "conv", "data", "decoding", "energy", "preset",
    "readout",
    "record_layer1", "reference", "relay", "stack",
]
