"""Energy per image from a spiking network's event counts and published per-operation energies.

An estimate, not a measurement: the event counts come from the simulation (:mod:`snn.conv` for
inference, :class:`snn.layer.SpikingSoftHebb` for learning), the energies per operation from the
sources below, each at its own operating point. The figures are multiplied, never fitted.

Sources (what each figure is, and how far to trust it):

* **Intel Loihi**, M. Davies et al., "Loihi: a neuromorphic manycore processor with on-chip learning",
  IEEE Micro 38(1):82-99, 2018, Table 2 (pre-silicon SPICE/SDF simulation at 0.75 V): 23.6 pJ per
  synaptic spike operation (the table's minimum), 120 pJ per synaptic update (learning), 52 pJ per
  neuron update of an inactive neuron (81 pJ when active), 1.7 pJ per spike within a tile.
* **IBM TrueNorth**, P. A. Merolla et al., "A million spiking-neuron integrated circuit with a scalable
  communication network and interface", Science 345(6197):668-673, 2014: 26 pJ per synaptic event,
  measured on silicon as total chip power over synaptic event rate at one operating point (20 Hz,
  128 active synapses per neuron, 0.775 V), so neuron updates, routing and leakage are inside it.
* **RRAM programming**, S. Yu et al., "An electronic synapse device based on metal oxide resistive
  switching memory for neuromorphic computation", IEEE Trans. Electron Devices 58(8):2729-2737, 2011
  (abstract): below 1 pJ per operation, at most 6 pJ measured. We use 1 pJ per pulse and give 6 pJ as
  the high end.
* **PCM programming**, S. Yu, "Neuro-inspired computing with emerging nonvolatile memory", Proc. IEEE
  106(2):260-285, 2018, Sec. III: typical programming energies of 10-100 pJ per pulse for PCM
  (0.1-10 pJ for RRAM); we use 10 and 100 pJ as the two ends.
* **Analog reads** of a crossbar cell, ``E = V^2 G t``: a 0.1 V read of G = 10-100 uS (the operating
  point of M. Prezioso et al., Nature 521:61-64, 2015) for an assumed 100 ns (our assumption, not a
  published figure) gives 10-100 fJ per cell and read; we use 100 fJ. It leaves out the converters and
  periphery; chip-level figures that include them are about 100-200 fJ per multiply-accumulate
  (M. Le Gallo et al., Nat. Electron. 6:680-693, 2023).
"""
from __future__ import annotations

from dataclasses import dataclass

PJ = 1e-12


@dataclass(frozen=True)
class EnergyFigures:
    """Energy per operation, joules (defaults: the sources of the module docstring)."""

    synaptic_op: float = 23.6 * PJ      # Loihi, per synaptic spike op
    synaptic_update: float = 120 * PJ   # Loihi, per synaptic update (learning)
    neuron_update: float = 52 * PJ      # Loihi, per neuron and time step (inactive)
    spike: float = 1.7 * PJ             # Loihi, per spike within a tile
    truenorth_event: float = 26 * PJ    # TrueNorth, per synaptic event, all-in
    device_read: float = 100e-15        # analog crossbar cell read, high end, array only
    pcm_pulse: tuple = (10 * PJ, 100 * PJ)
    rram_pulse: tuple = (1 * PJ, 6 * PJ)


def inference_energy(events: dict, figures: EnergyFigures = EnergyFigures()) -> dict:
    """Joules per image from :attr:`snn.conv.MapPresentation.events` (per image, ``neuron_updates`` included).

    ``digital``: a Loihi-like chip, every synaptic operation, neuron update and spike; ``truenorth``:
    the all-in energy per synaptic event; ``in_memory``: the kernel synapses read as analog devices
    (``device_reads``), everything else (inhibition, pooling routing, neurons, spikes) digital.
    """
    spikes = events["excitatory_spikes"] + events["inhibitory_spikes"] + events["pooling_spikes"] + events["input_events"]
    neurons = events["neuron_updates"] * figures.neuron_update + spikes * figures.spike
    routing = events["synaptic_ops"] - events["device_reads"]
    return {"digital": events["synaptic_ops"] * figures.synaptic_op + neurons,
            "truenorth": events["synaptic_ops"] * figures.truenorth_event,
            "in_memory": events["device_reads"] * figures.device_read + routing * figures.synaptic_op + neurons}


def learning_energy(plastic_events: float, pulses: float, figures: EnergyFigures = EnergyFigures()) -> dict:
    """Joules of the weight changes of one learning presentation: ``plastic_events`` synapse updates (digital,
    Loihi's synaptic update) or ``pulses`` device programming pulses (PCM, RRAM; low and high end)."""
    return {"digital": plastic_events * figures.synaptic_update,
            "pcm": tuple(pulses * e for e in figures.pcm_pulse),
            "rram": tuple(pulses * e for e in figures.rram_pulse)}


__all__ = ["EnergyFigures", "inference_energy", "learning_energy", "PJ"]
