r"""Synaptic devices programmed at every plastic event, inside the Brian2 simulation.

With a device attached this way, each output spike's change of a synapse, ``dw_rule`` (the rule of
:mod:`snn.network`), becomes a signed whole number of programming pulses in the synapse's own
``on_post`` code, and the weight the circuit uses from then on is the device's read-back. So the
device's resolution, bounds and nonlinearity act at every event, as on a chip that programs its
synapses when they are plastic. The laws are those of :mod:`hardware_models` (same parameters, same
pulse mapping), written again as Brian2 code; ``tests/test_snn_devices.py`` checks each one against
its :mod:`hardware_models` twin on the same pulses.

* **Pulse mapping** (``hardware_models.base``, ``rounding="stochastic"``): ``n = sign(dw) *
  floor(|dw| / dw_step + U)``, ``U`` uniform, so ``E[n] dw_step = dw`` even for updates far below
  one step; ``|n|`` is capped at the pulses that span the range.
* **linear** (``hardware_models.ideal.LinearSynapse``): ``levels`` states over ``[-w_max, w_max]``;
  each pulse moves one state, clipped at the ends; the weight is always on the grid.
* **rram** (``hardware_models.rram.RRAMSynapse``): soft bounds with per-device step, asymmetry and
  bounds, cycle-to-cycle noise and stuck devices; ``k`` pulses of one sign compose in closed form,
  ``g <- bound - (bound - g) r^k + c2c dg sqrt(sum_j r^2j) xi``, ``r = 1 - 2 dg_up`` (SET, towards
  ``g_max``) or ``1 - 2 dg_down`` (RESET, towards ``g_min``); a written device draws a new write-noise
  offset; the weight reads ``w_scale (g + offset - 1/2)``.

The phase-change pair (``pcm``) has no per-event code: its refresh reads, RESETs and re-writes pairs
with program-and-verify noise, and its reads carry drift and 1/f noise that depend on the time since
each write, which do not reduce to a law of one synapse's pulses. It is programmed once per chunk
(``device_updates="chunk"``).

The device object stays the owner of the state: the state is handed to each run and read back after
it, so ``device.read()`` and ``device.pulses`` are current between runs.
"""
from __future__ import annotations

import numpy as np
import torch

from hardware_models.ideal import LinearSynapse
from hardware_models.rram import RRAMSynapse

from .network import SynapseCode

#: ``dw_rule`` -> signed pulse count, stochastically rounded and capped (``hardware_models.base``)
PULSES = "pulses = clip(sign(dw_rule) * floor(abs(dw_rule) / dw_step + rand()), -max_pulses, max_pulses)"
PULSE_EQS = """
dw_step : 1 (shared)
max_pulses : 1 (shared)
"""
#: the norm kept by the neuron and the pulse counter, after ``w`` changed from ``w_old``
BOOKKEEPING = """
wsq_post += w * w - w_old * w_old
pulse_count_post += abs(pulses)
"""

LINEAR_CODE = SynapseCode(
    name="linear",
    equations=PULSE_EQS + """
level : 1
levels_top : 1 (shared)
w_range : 1 (shared)
""",
    apply="\n".join(["w_old = w", PULSES, """
level = clip(level + pulses, 0, levels_top)
w = w_range * (2 * level / levels_top - 1)
""", BOOKKEEPING]),
    post_equations="pulse_count : 1")

RRAM_CODE = SynapseCode(
    name="rram",
    equations=PULSE_EQS + """
g_dev : 1
offset : 1
dg_up : 1
dg_down : 1
g_min : 1
g_max : 1
movable : 1
dg_nominal : 1 (shared)
w_scale : 1 (shared)
c2c : 1 (shared)
write_noise : 1 (shared)
""",
    apply="\n".join(["w_old = w", PULSES, """
n_applied = pulses * movable
k = abs(n_applied)
up = int(n_applied > 0)
down = int(n_applied < 0)
written = int(k > 0)
step_frac = 2 * (up * dg_up + down * dg_down)
bound = up * g_max + down * g_min
r = 1 - step_frac
rk = r ** k
gain = int(step_frac > 0) * (1 - rk * rk) / clip(1 - r * r, 1e-30, 1e30) + int(step_frac <= 0) * k
g_dev = clip(written * (bound - (bound - g_dev) * rk + c2c * dg_nominal * sqrt(gain) * randn()) + (1 - written) * g_dev, g_min, g_max)
offset = written * write_noise * dg_nominal * randn() + (1 - written) * offset
w = w_scale * (g_dev + offset - 0.5)
""", BOOKKEEPING]),
    post_equations="pulse_count : 1")

EVENT_CODE = {LinearSynapse: LINEAR_CODE, RRAMSynapse: RRAM_CODE}


def event_code(device) -> SynapseCode:
    """The per-event Brian2 code of ``device``; a clear error for a device without one."""
    code = EVENT_CODE.get(type(device))
    if code is None:
        raise ValueError(f"{type(device).__name__} has no per-event model in the spiking layer (linear and rram "
                         "have); program it once per chunk with device_updates='chunk'")
    if device.rounding != "stochastic":
        raise ValueError("per-event programming uses stochastic rounding (a remainder accumulator per synapse is "
                         "not modelled); use rounding='stochastic' or device_updates='chunk'")
    return code


def _flat(t) -> np.ndarray:
    """``(K, n_in)`` device array -> synapse order (index ``i * K + k``)."""
    return np.asarray(torch.as_tensor(t, dtype=torch.float64).cpu().numpy()).T.reshape(-1).copy()


def _unflat(values: np.ndarray, shape) -> torch.Tensor:
    k, n_in = shape
    return torch.from_numpy(np.asarray(values).reshape(n_in, k).T.copy())


def run_states(device) -> dict:
    """The device's state and parameters as initial values of a run (``"synapses.name"`` -> values)."""
    states = {"synapses.dw_step": device.dw_step, "synapses.max_pulses": float(device.max_pulses),
              "outputs.pulse_count": 0.0}
    if isinstance(device, LinearSynapse):
        states.update({"synapses.level": _flat(device.level), "synapses.levels_top": float(device.levels - 1),
                       "synapses.w_range": device.w_max})
    else:
        states.update({"synapses.g_dev": _flat(device.g[0]), "synapses.offset": _flat(device.offset),
                       "synapses.dg_up": _flat(device.dg_up_i), "synapses.dg_down": _flat(device.dg_down_i),
                       "synapses.g_min": _flat(device.g_min_i), "synapses.g_max": _flat(device.g_max_i),
                       "synapses.movable": _flat((~device.stuck).double()), "synapses.dg_nominal": device.dg_step,
                       "synapses.w_scale": device.w_scale, "synapses.c2c": device.c2c,
                       "synapses.write_noise": device.write_noise})
    return states


def read_back(device, net) -> None:
    """Store the state a run left in the device object (its ``read()`` then gives the run's last weights)."""
    dtype = device.dtype
    if isinstance(device, LinearSynapse):
        device.level = _unflat(net.get("synapses.level"), device.shape).to(dtype)
        device.g[0] = device.level / (device.levels - 1)
    else:
        device.g[0] = _unflat(net.get("synapses.g_dev"), device.shape).to(dtype)
        device.offset = _unflat(net.get("synapses.offset"), device.shape).to(dtype)
    device.pulses += int(round(net.get("outputs.pulse_count").sum()))


__all__ = ["EVENT_CODE", "LINEAR_CODE", "RRAM_CODE", "event_code", "run_states", "read_back"]
