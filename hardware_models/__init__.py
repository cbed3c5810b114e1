"""In-memory synaptic device models for the SoftHebb layers (``layer.attach_synapse(device)``).

``make_synapse(spec, seed=0, **overrides)`` builds one fresh device per layer from a spec string:

* ``"ideal"`` -- exact float weights, the control (bit-identical to no device);
* ``"linear16"`` or ``"linear:levels=16"`` -- ideal device with N equally spaced states;
* ``"pcm"`` -- phase-change memory pair with refresh, drift, programming and read noise;
* ``"rram"`` -- soft-bounds RRAM with up/down asymmetry, variations and stuck-at faults.

Parameters can be overridden in the spec after a colon (``"pcm:read_noise_scale=0,w_max=2"``) or
as keyword arguments; the keyword wins. See :mod:`hardware_models.base` for the weight scale,
the pulse mapping and the clock, and each model's module for its physics and sources.
"""
from __future__ import annotations

import inspect
import re

from .base import ROUNDINGS, SynapseDevice, pulse_train
from .compensation import GlobalDriftCompensation, readout
from .ideal import IdealSynapse, LinearSynapse
from .pcm import PCMSynapse
from .rram import RRAMSynapse

_MODELS = {"ideal": IdealSynapse, "linear": LinearSynapse, "pcm": PCMSynapse, "rram": RRAMSynapse}
#: accepted model names (``linearN`` is shorthand for ``linear:levels=N``)
SYNAPSES = tuple(_MODELS)

__all__ = ["SYNAPSES", "ROUNDINGS", "make_synapse", "SynapseDevice", "IdealSynapse", "LinearSynapse", "PCMSynapse",
           "RRAMSynapse", "GlobalDriftCompensation", "readout", "pulse_train"]


def _value(text: str):
    """Parse one override value: int, float, bool, or left as a string."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip()


def make_synapse(spec: str, seed: int = 0, **overrides) -> SynapseDevice:
    """A fresh device for ``spec`` (``"name"``, ``"linearN"`` or ``"name:key=value,..."``).

    Raises ``ValueError`` for an unknown name, a malformed spec or an unknown parameter.
    """
    name, _, args = spec.strip().partition(":")
    name = name.strip().lower()
    params = {}
    match = re.fullmatch(r"linear(\d+)", name)
    if match:
        name, params["levels"] = "linear", int(match.group(1))
    if name not in _MODELS:
        raise ValueError(f"unknown synapse model {spec!r}; choose one of {SYNAPSES} (or linearN)")
    for item in filter(None, (a.strip() for a in args.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"malformed synapse parameter {item!r} in {spec!r}; expected key=value")
        params[key.strip()] = _value(value)
    params.update(overrides)
    if name == "linear" and "N" in params:
        params["levels"] = params.pop("N")
    cls = _MODELS[name]
    accepted = set(inspect.signature(cls).parameters) - {"seed"}
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for synapse model {name!r}; accepted: {sorted(accepted)}")
    return cls(seed=seed, **params)
