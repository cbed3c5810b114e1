r"""Resistive memory (RRAM) synapse: a bidirectional soft-bounds device against a fixed reference.

Filamentary RRAM can be both potentiated (SET) and depressed (RESET) gradually, but each step
shrinks as the conductance approaches the bound it is moving towards, and SET and RESET steps
differ in size. The weight is one device read against a reference conductance at the nominal
symmetry point, ``w = 2 w_max (g - 1/2)`` (the calibrated-reference scheme that aihwkit's
``ReRamSBPresetDevice`` assumes).

Soft bounds with up/down asymmetry (aihwkit ``SoftBoundsDevice``, normalised so that a nominal
device takes steps of ``dg`` at ``g = 1/2``)::

    SET:   g += 2 dg_up_i   (g_max_i - g) + c2c dg xi
    RESET: g -= 2 dg_down_i (g - g_min_i) + c2c dg xi
    dg_up_i = dg_i (1 + up_down + up_down_dtod xi'),  dg_down_i = dg_i (1 - up_down - up_down_dtod xi')

clipped to ``[g_min_i, g_max_i]``. Under a balanced alternation of SET and RESET pulses a device
therefore relaxes to its symmetry point ``g* = (dg_up g_max + dg_down g_min) / (dg_up + dg_down)``,
``(1 + up_down) / 2`` for a nominal device: a systematic bias of ``up_down * w_max`` on the weight
that no amount of balanced Hebbian activity removes.

Parameters (HfO2-based RRAM of Gong et al., Nat. Commun. 9:2102, 2018, as fitted in aihwkit; the
weight range [-1, 1] of aihwkit maps to [0, 1] here, halving absolute values):

* ``dg = 0.001`` (``ReRamSBPresetDevice.dw_min = 0.002``: ~1000 steps over the range), spread
  ``dg_dtod = 0.3``; ``up_down = 0.259``, ``up_down_dtod = 0.05`` (``ReRamESPresetDevice``).
* Bounds ``g_min_i = 0 + 0.15 xi``, ``g_max_i = 1 + 0.15 xi`` (``w_max_dtod = 0.3/1.25`` relative,
  0.3 absolute in aihwkit units).
* Cycle-to-cycle noise, additive, ``c2c = 3.75`` nominal steps per pulse (``dw_min_std``).
* Write noise: the read-back of a device carries an offset ``write_noise * dg * xi`` redrawn each
  time it is written, ``write_noise = 56`` (``write_noise_std``; 5.6 % of the range).
* Stuck-at faults: fractions ``stuck_gmin = 0.0175`` stuck at ``g_min_i`` (SA0, high resistance)
  and ``stuck_gmax = 0.0904`` stuck at ``g_max_i`` (SA1), measured on a 4 Mb RRAM by Chen et al.,
  IEEE Trans. Comput. 64:180, 2015. A stuck device ignores pulses and writes; with the
  reference scheme it reads as ``-w_max`` (SA0) or ``+w_max`` (SA1).

No drift: retention loss of RRAM is negligible on the time scales of training; ``age`` only
advances the clock.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .base import SynapseDevice


class RRAMSynapse(SynapseDevice):
    """Soft-bounds RRAM device with asymmetry, variations and stuck-at faults (module docstring).

    Args:
        seed: seed of the device randomness.
        w_max, w_max_factor, w_max_unit: weight range (:mod:`hardware_models.base`; default ``max|w|`` at ``attach``).
        dg, dg_dtod: nominal step at ``g = 1/2`` and its relative device-to-device spread.
        up_down, up_down_dtod: SET/RESET step asymmetry and its device-to-device spread.
        bound_dtod: absolute device-to-device spread of ``g_min`` and ``g_max``.
        c2c: cycle-to-cycle noise per pulse, in nominal steps.
        write_noise: read-back offset redrawn at each write, in nominal steps.
        stuck_gmin, stuck_gmax: fractions of devices stuck at ``g_min_i`` / ``g_max_i``.
    """

    def __init__(self, seed: int = 0, w_max: float | None = None, w_max_factor: float = 1.0,
                 w_max_unit: float | None = None, rounding: str = "stochastic",
                 dg: float = 0.001, dg_dtod: float = 0.3, up_down: float = 0.259, up_down_dtod: float = 0.05,
                 bound_dtod: float = 0.15, c2c: float = 3.75, write_noise: float = 56.0,
                 stuck_gmin: float = 0.0175, stuck_gmax: float = 0.0904):
        super().__init__(seed=seed, w_max=w_max, w_max_factor=w_max_factor, w_max_unit=w_max_unit, rounding=rounding)
        if not 0 < dg < 0.5:
            raise ValueError(f"dg must lie in (0, 0.5), got {dg}")
        if not (0 <= stuck_gmin and 0 <= stuck_gmax and stuck_gmin + stuck_gmax <= 1):
            raise ValueError("stuck fractions must be non-negative and sum to at most 1")
        if not -1 < up_down < 1:
            raise ValueError(f"up_down must lie in (-1, 1), got {up_down}")
        self.dg_step = float(dg)
        self.dg_dtod, self.up_down, self.up_down_dtod = float(dg_dtod), float(up_down), float(up_down_dtod)
        self.bound_dtod, self.c2c, self.write_noise = float(bound_dtod), float(c2c), float(write_noise)
        self.stuck_gmin, self.stuck_gmax = float(stuck_gmin), float(stuck_gmax)

    def _parameters(self, idx: Tensor) -> tuple[Tensor, ...]:
        """``dg_up_i, dg_down_i, g_min_i, g_max_i`` of the devices at flat indices ``idx``."""
        return tuple(p.view(-1)[idx] for p in (self.dg_up_i, self.dg_down_i, self.g_min_i, self.g_max_i))

    def _init_state(self, weight: Tensor) -> None:
        shape = self.shape
        dg_i = self.dg_step * (1.0 + self.dg_dtod * self._randn(shape)).clamp(min=0.0)
        skew = self.up_down + self.up_down_dtod * self._randn(shape)
        self.dg_up_i = dg_i * (1.0 + skew).clamp(min=0.0)
        self.dg_down_i = dg_i * (1.0 - skew).clamp(min=0.0)
        self.g_min_i = self.bound_dtod * self._randn(shape)
        self.g_max_i = torch.maximum(1.0 + self.bound_dtod * self._randn(shape), self.g_min_i + 0.1)
        u = self._rand(shape)
        self.stuck_low = u < self.stuck_gmin
        self.stuck_high = (u >= self.stuck_gmin) & (u < self.stuck_gmin + self.stuck_gmax)
        self.stuck = self.stuck_low | self.stuck_high
        # program-and-verify to the target, within one pulse's cycle-to-cycle noise
        target = 0.5 + weight.to(self.dtype) / self.w_scale
        g = target + self.c2c * self.dg_step * self._randn(shape)
        g = torch.minimum(torch.maximum(g, self.g_min_i), self.g_max_i)
        g = torch.where(self.stuck_low, self.g_min_i, torch.where(self.stuck_high, self.g_max_i, g))
        self.g = torch.stack((g, torch.full_like(g, 0.5)))
        self.offset = torch.where(self.stuck, 0.0, self.write_noise * self.dg_step * self._randn(shape))

    def _pulse(self, n: Tensor) -> None:
        # Only the devices that receive pulses are touched; each gets ``k`` pulses of one sign per
        # update. A soft-bounds step is linear in g, so k SET pulses compose in closed form:
        # g_k = g_max - (g_max - g) r^k + noise, r = 1 - 2 dg_up, with the Gaussian cycle-to-cycle
        # noise of the k pulses summing to variance c2c^2 (1 - r^2k) / (1 - r^2) (RESET alike towards
        # g_min). This is the pulse-by-pulse law exactly, except that the bounds clip once at the
        # end of the train instead of after every pulse.
        flat = torch.where(self.stuck, 0.0, n).view(-1)
        i = flat.nonzero().view(-1)
        if not i.numel():
            return
        count = flat[i]
        k = count.abs()
        dg_up, dg_down, g_min, g_max = self._parameters(i)
        potentiate = count > 0
        a = 2.0 * torch.where(potentiate, dg_up, dg_down)  # fraction of the distance to the bound per pulse
        bound = torch.where(potentiate, g_max, g_min)
        r = 1.0 - a
        rk = r.pow(k)
        gain = torch.where(a > 0, (1.0 - rk * rk) / (1.0 - r * r).clamp(min=1e-30), k)  # sum of r^2j, j < k
        g_plus = self.g[0].view(-1)
        g = bound - (bound - g_plus[i]) * rk + self.c2c * self.dg_step * gain.sqrt() * self._randn(i.shape)
        g_plus[i] = torch.minimum(torch.maximum(g, g_min), g_max)
        self.offset.view(-1)[i] = self.write_noise * self.dg_step * self._randn(i.shape)

    def _sense(self, g: Tensor) -> Tensor:
        return torch.stack((g[0] + self.offset, g[1]))
