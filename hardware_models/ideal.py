"""The two control devices: exact float (``ideal``) and an ideal N-state device (``linear``).

``ideal`` separates the cost of the device interface from the cost of the physics: it must
reproduce the float learning path bit for bit. ``linear`` isolates the cost of having finitely
many states: every pulse moves the weight by exactly one level, with no noise, no
nonlinearity and no drift, as the ``N``-state "ideal devices" of device-aware training studies
(e.g. the ``ConstantStepDevice`` of IBM aihwkit with all variations set to zero; Gokmen &
Vlasov, Front. Neurosci. 10:333, 2016, for the required number of states).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .base import SynapseDevice


class IdealSynapse(SynapseDevice):
    """Exact float weights: ``program(dw)`` returns ``w + dw`` computed as ``layer.weight.add_(dw)`` would.

    It keeps its own copy of the weights, adds updates in place with the same ``add_`` and
    returns a copy, so a layer learning through it takes exactly the same float path as a layer
    without a device. ``age`` changes nothing.
    """

    def __init__(self, seed: int = 0):
        super().__init__(seed=seed)

    @torch.no_grad()
    def attach(self, weight: Tensor) -> Tensor:
        self.shape, self.device, self.dtype = weight.shape, weight.device, weight.dtype
        self.w = weight.detach().clone()
        self.w_max, self.clipped = float(self.w.abs().max()) if self.w.numel() else 0.0, 0
        self.time, self.pulses = 0.0, 0
        return self.w.clone()

    @torch.no_grad()
    def program(self, dw: Tensor) -> Tensor:
        self._check(dw, "update")
        self.w.add_(dw)
        return self.w.clone()

    @torch.no_grad()
    def read(self) -> Tensor:
        if self.shape is None:
            raise RuntimeError("device not attached: call attach(weight) first")
        return self.w.clone()

    def conductances(self) -> Tensor:
        raise NotImplementedError("the ideal device has no conductances; read() gives the float weights")


class LinearSynapse(SynapseDevice):
    """Bidirectional device with ``levels`` equally spaced states over ``[-w_max, w_max]``.

    Weight ``w = w_max (2 k / (levels - 1) - 1)`` for the state ``k in {0, ..., levels-1}`` (stored
    as the conductance ``g+ = k / (levels - 1)`` against the reference ``g- = 1/2``). ``attach``
    rounds each weight to the nearest state (program-and-verify); each pulse moves one state, so
    an update ``dw`` moves ``SR(dw / step)`` states with ``step = 2 w_max / (levels - 1)``, clipped at
    the ends. With an even number of levels zero is not a state. No noise, no drift.
    """

    def __init__(self, levels: int = 16, seed: int = 0, w_max: float | None = None, w_max_factor: float = 1.0,
                 w_max_unit: float | None = None, rounding: str = "stochastic"):
        if int(levels) != levels or levels < 2:
            raise ValueError(f"levels must be an integer >= 2, got {levels}")
        super().__init__(seed=seed, w_max=w_max, w_max_factor=w_max_factor, w_max_unit=w_max_unit, rounding=rounding)
        self.levels = int(levels)
        self.dg_step = 1.0 / (self.levels - 1)

    def _init_state(self, weight: Tensor) -> None:
        top = self.levels - 1
        k = ((weight.to(self.dtype) / self.w_max + 1.0) * (top / 2)).round().clamp(0, top)
        self.level = k
        self.g = torch.stack((k / top, torch.full_like(k, 0.5)))

    def _pulse(self, n: Tensor) -> None:
        self.level.add_(n).clamp_(0, self.levels - 1)
        torch.div(self.level, self.levels - 1, out=self.g[0])

    @torch.no_grad()
    def read(self) -> Tensor:
        """The state's weight, computed from the integer level so that it lies exactly on the grid."""
        if self.g is None:
            raise RuntimeError("device not attached: call attach(weight) first")
        return torch.mul(self.level, 2.0 / (self.levels - 1)).sub_(1.0).mul_(self.w_max)

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", levels={self.levels})"
