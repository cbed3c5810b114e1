r"""Phase-change memory (PCM) synapse: a one-sided differential pair with refresh.

A PCM cell can be potentiated gradually (partial crystallisation by SET pulses) but depressed
only abruptly (RESET melts and re-amorphises the whole cell). A signed, bidirectionally
learnable weight therefore uses a pair, ``w = w_max (g+ - g-)``: a potentiating update sends SET
pulses to ``g+``, a depressing one SET pulses to ``g-`` (Burr et al., IEEE Trans. Electron Devices
62:3498, 2015; Nandakumar et al., Front. Neurosci. 14:406, 2020). Both halves climb, saturate
and would freeze the weight, so a pair is *refreshed* when both halves are well into their range:
it is read, both cells are RESET and the difference is re-programmed onto one of them.

Parameters, all in conductances normalised to the nominal ``G_max`` (25 uS in the sources):

* SET increment (aihwkit ``PCMPresetDevice``, an ``ExpStepDevice`` fitted to the Ge2Sb2Te5
  mushroom cells of Nandakumar et al. 2020; aihwkit's weight range [0, 2] rescaled to [0, 1]):
  mean ``dg = dg_min_i (1 - A exp(-2 gamma g / g_max_i))`` with ``dg_min = 0.005``,
  ``A = -27.235``, ``gamma = 2.5``: about 0.14 per pulse from the reset state, 0.0059 near
  saturation (strongly saturating); cycle-to-cycle noise, Gaussian with
  ``std = c2c (|dg| + c2c_add + c2c_slope g)``, ``c2c = 0.6``, ``c2c_add = 0.021``,
  ``c2c_slope = 0.108``; device-to-device spread 20 % on ``dg_min`` and 10 % on ``g_max``.
  The nominal step of the pulse mapping is the mean increment averaged over ``[0, 1]``
  (0.032, about 31 pulses from reset to saturation).
* RESET (same preset): to ``g_reset_i = 0.005 + 0.01 xi`` per device (clipped at 0).
* Programming noise of a program-and-verify write (``attach`` and refresh; aihwkit
  ``PCMLikeNoiseModel``, Nandakumar et al., ICECS 2019, measured on 1M devices):
  ``sigma = (0.26348 + 1.9650 x - 1.1731 x^2) uS`` at ``x = g_target``, i.e. 1 % to 4.2 % of
  ``G_max``.
* Drift (same model): ``g(t) = g_prog (t / t0)^{-nu}``, ``t0 = 20 s``, with ``nu`` drawn at every
  programming event from ``N(mu(g), sigma(g))`` folded at 0, ``mu = clip(-0.0155 ln g + 0.0244,
  0.049, 0.1)``, ``sigma = clip(-0.0125 ln g - 0.0059, 0.008, 0.045)``: ``nu = 0.049 +- 0.008`` above
  ``g = 0.33``, larger and more spread for low conductances.
* Read noise (same model, 1/f): relative ``sigma = Q_s sqrt(ln((t + t_read) / (2 t_read)))`` with
  ``Q_s = min(0.0088 / g^0.65, 0.2)``, ``t_read = 250 ns``, ``t`` the time since programming plus
  ``t0`` (5.8 % at ``g = 0.5`` and ``t = t0``). aihwkit draws it once per inference time; here it is
  drawn afresh at every read, which treats successive reads as independent (pessimistic for
  closely spaced reads).
* Refresh (aihwkit ``OneSidedUnitCell``): after each update, pairs with the larger half above
  ``0.75 g_max_i`` and the smaller above ``0.25 g_max_i`` are read, RESET and re-written.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import SynapseDevice, pulse_train

_G_MAX_US = 25.0  # the G_max (uS) the PCMLikeNoiseModel polynomial was fitted for


class PCMSynapse(SynapseDevice):
    """Phase-change memory pair ``w = w_max (g+ - g-)`` (see the module docstring for the physics).

    Args:
        seed: seed of the device randomness.
        w_max, w_max_factor, w_max_unit: weight range (:mod:`hardware_models.base`; default ``max|w|`` at ``attach``).
        dg_min, A, gamma: SET increment ``dg_min (1 - A exp(-2 gamma g / g_max_i))``.
        c2c, c2c_add, c2c_slope: cycle-to-cycle noise of one SET pulse.
        dg_min_dtod, g_max_dtod: relative device-to-device spread of ``dg_min`` and ``g_max``.
        reset, reset_dtod, reset_std: RESET level, its device-to-device and cycle-to-cycle spread.
        prog_coeff: programming-noise polynomial (uS, in ``g / G_max``) of program-and-verify writes.
        prog_noise_scale, read_noise_scale, drift_scale: multipliers of the three noise sources.
        t0, t_read: drift reference time and 1/f read-noise time constant (s).
        refresh_upper, refresh_lower: refresh thresholds (fractions of ``g_max_i``).
    """

    differential = True

    def __init__(self, seed: int = 0, w_max: float | None = None, w_max_factor: float = 1.0,
                 w_max_unit: float | None = None, rounding: str = "stochastic",
                 dg_min: float = 0.005, A: float = -27.235, gamma: float = 2.5,
                 c2c: float = 0.6, c2c_add: float = 0.021, c2c_slope: float = 0.108,
                 dg_min_dtod: float = 0.2, g_max_dtod: float = 0.1,
                 reset: float = 0.005, reset_dtod: float = 0.01, reset_std: float = 0.005,
                 prog_coeff: tuple = (0.26348, 1.9650, -1.1731), prog_noise_scale: float = 1.0,
                 read_noise_scale: float = 1.0, drift_scale: float = 1.0, t0: float = 20.0,
                 t_read: float = 250e-9, refresh_upper: float = 0.75, refresh_lower: float = 0.25):
        super().__init__(seed=seed, w_max=w_max, w_max_factor=w_max_factor, w_max_unit=w_max_unit, rounding=rounding,
                         t0=t0)
        if not dg_min > 0:
            raise ValueError(f"dg_min must be positive, got {dg_min}")
        if not 0 <= refresh_lower < refresh_upper <= 1:
            raise ValueError("need 0 <= refresh_lower < refresh_upper <= 1")
        self.dg_min, self.A, self.gamma = float(dg_min), float(A), float(gamma)
        self.c2c, self.c2c_add, self.c2c_slope = float(c2c), float(c2c_add), float(c2c_slope)
        self.dg_min_dtod, self.g_max_dtod = float(dg_min_dtod), float(g_max_dtod)
        self.reset, self.reset_dtod, self.reset_std = float(reset), float(reset_dtod), float(reset_std)
        self.prog_coeff = tuple(float(c) for c in prog_coeff)
        self.prog_noise_scale, self.read_noise_scale = float(prog_noise_scale), float(read_noise_scale)
        self.drift_scale, self.t_read = float(drift_scale), float(t_read)
        self.refresh_upper, self.refresh_lower = float(refresh_upper), float(refresh_lower)
        # mean increment over g in [0, 1] (nominal device): the weight change of one pulse
        two_gamma = 2.0 * self.gamma
        mean_y = 1.0 - self.A * (1.0 - math.exp(-two_gamma)) / two_gamma if two_gamma else 1.0 - self.A
        self.dg_step = self.dg_min * mean_y
        self.refreshes = 0

    # ------------------------------------------------------------------ physics
    def set_increment(self, g: Tensor, dg_min: Tensor, g_max: Tensor) -> Tensor:
        """Mean conductance increment of one SET pulse at conductance ``g`` (the saturating nonlinearity)."""
        return dg_min * (1.0 - self.A * torch.exp(-2.0 * self.gamma * g / g_max)).clamp(min=0.0)

    def set_noise_std(self, g: Tensor, mean_step: Tensor) -> Tensor:
        """Cycle-to-cycle standard deviation of one SET pulse."""
        return self.c2c * (mean_step.abs() + self.c2c_add + self.c2c_slope * g.abs())

    def programming_noise_std(self, g_target: Tensor) -> Tensor:
        """Standard deviation of a program-and-verify write to ``g_target`` (PCMLikeNoiseModel polynomial)."""
        sigma = torch.zeros_like(g_target)
        for i, c in enumerate(self.prog_coeff):
            sigma = sigma + c * g_target ** i
        return self.prog_noise_scale * sigma / _G_MAX_US

    def drift_exponents(self, g: Tensor) -> Tensor:
        """Draw drift exponents ``nu`` for conductances just programmed to ``g`` (PCMLikeNoiseModel)."""
        log_g = torch.log(g.clamp(min=1e-7))
        mu = (-0.0155 * log_g + 0.0244).clamp(0.049, 0.1)
        sigma = (-0.0125 * log_g - 0.0059).clamp(0.008, 0.045)
        return self.drift_scale * (mu + sigma * self._randn(g.shape)).abs()

    def read_noise_std(self, g_prog: Tensor, age: Tensor) -> Tensor:
        """Relative 1/f read-noise standard deviation of a device programmed to ``g_prog`` ``age`` seconds ago."""
        q_s = (0.0088 / (g_prog.abs() ** 0.65).clamp(min=1e-3)).clamp(max=0.2)
        t = age + self.t0
        return self.read_noise_scale * q_s * torch.sqrt(torch.log((t + self.t_read) / (2 * self.t_read)))

    # ------------------------------------------------------------------ device state
    # Programming touches only the devices that receive pulses (a few per cent per step at
    # SoftHebb's update sizes), so every step below works on flat indices into ``g`` (shape
    # ``(2 * N,)`` flattened: ``g+`` of weight ``p`` at ``p``, ``g-`` at ``N + p``), never on the
    # whole tensor. The relative read-noise spread of every device is cached for the current clock
    # time and patched where devices are re-programmed.
    def _init_state(self, weight: Tensor) -> None:
        pair = (2, *self.shape)
        self.dg_min_i = self.dg_min * (1.0 + self.dg_min_dtod * self._randn(pair)).clamp(min=0.0)
        self.g_max_i = (1.0 + self.g_max_dtod * self._randn(pair)).clamp(min=0.1)
        self.g_reset_i = torch.minimum((self.reset + self.reset_dtod * self._randn(pair)).clamp(min=0.0),
                                       self.g_max_i)
        self.g = self.g_reset_i.clone()
        self.nu = torch.zeros(pair, device=self.device, dtype=self.dtype)
        self.t_prog = torch.zeros(pair, device=self.device, dtype=self.dtype)
        self.refreshes = 0
        self._sigma, self._sigma_time = None, None
        self._rewrite(weight.to(self.dtype).flatten() / self.w_scale,
                      torch.arange(self.shape.numel(), device=self.device))

    def _flat(self, name: str) -> Tensor:
        return getattr(self, name).view(-1)

    def _drifted_at(self, i: Tensor) -> Tensor:
        """Drifted (noise-free) conductances of the devices at flat indices ``i``."""
        g = self._flat("g")[i]
        if self.time == 0:
            return g
        age = self.time - self._flat("t_prog")[i]
        return g * ((age + self.t0) / self.t0).pow(-self._flat("nu")[i])

    def _programmed(self, i: Tensor, g: Tensor) -> None:
        """Record that the devices at flat indices ``i`` were just programmed to ``g``."""
        self._flat("g")[i] = g
        self._flat("nu")[i] = self.drift_exponents(g)
        self._flat("t_prog")[i] = self.time
        if self._sigma is not None and self._sigma_time == self.time:
            self._sigma.view(-1)[i] = self.read_noise_std(g, torch.zeros_like(g))

    def _rewrite(self, target: Tensor, pairs: Tensor) -> None:
        """RESET both halves of the pairs at indices ``pairs``, then program-and-verify the signed half.

        ``target`` (one value per pair) is the normalised weight ``g+ - g-``; the verify loop targets
        the pair difference, so the written half goes to ``|target|`` above the other half's RESET level.
        """
        i = torch.cat((pairs, pairs + self.shape.numel()))
        reset = (self._flat("g_reset_i")[i] + self.reset_std * self._randn(i.shape)).clamp(min=0.0)
        g_max = self._flat("g_max_i")[i]
        reset = torch.minimum(reset, g_max)
        reset_plus, reset_minus = reset.chunk(2)
        goal = torch.cat((reset_minus + target, reset_plus - target))
        written = goal + self.programming_noise_std(goal) * self._randn(goal.shape)
        written = torch.minimum(written.clamp(min=0.0), g_max)
        written_half = torch.cat((target > 0, target < 0))
        self._programmed(i, torch.where(written_half, written, reset))

    def _pulse(self, n: Tensor) -> None:
        # route: potentiation -> SET pulses on g+, depression -> SET pulses on g-
        flat = n.flatten()
        i = flat.nonzero().flatten()
        if not i.numel():
            return
        count = flat[i]
        i = torch.where(count > 0, i, i + flat.numel())  # the half that receives the SET pulses
        count = count.abs()
        dg_min_i, g_max_i = self._flat("dg_min_i")[i], self._flat("g_max_i")[i]

        def one_set(g: Tensor, j: Tensor) -> Tensor:
            mean = self.set_increment(g, dg_min_i[j], g_max_i[j])
            g = g + mean + self.set_noise_std(g, mean) * self._randn(g.shape)
            return torch.minimum(g.clamp(min=0.0), g_max_i[j])

        # the drifted conductance is the starting point of the new pulses
        self._programmed(i, pulse_train(self._drifted_at(i), count, one_set))
        self._refresh(i % self.shape.numel())

    @torch.no_grad()
    def refresh(self) -> int:
        """Refresh every pair past the thresholds (an array-wide refresh cycle); returns how many.

        Programming checks only the pairs it touched, the only ones whose conductances moved; this
        is for thresholds changed since.
        """
        before = self.refreshes
        self._refresh(torch.arange(self.shape.numel(), device=self.device))
        return self.refreshes - before

    def _refresh(self, pairs: Tensor) -> None:
        """Refresh the saturating pairs among ``pairs``: read (with noise), RESET both, re-write the difference."""
        size = self.shape.numel()
        g, g_max = self._flat("g"), self._flat("g_max_i")
        rel_plus, rel_minus = g[pairs] / g_max[pairs], g[pairs + size] / g_max[pairs + size]
        due = pairs[(torch.maximum(rel_plus, rel_minus) > self.refresh_upper)
                    & (torch.minimum(rel_plus, rel_minus) > self.refresh_lower)]
        if due.numel():
            i = torch.cat((due, due + size))
            g_now = self._sense_at(self._drifted_at(i), i)
            plus, minus = g_now.chunk(2)
            self._rewrite(plus - minus, due)
            self.refreshes += int(due.numel())

    @property
    def noisy_reads(self) -> bool:
        return self.read_noise_scale > 0

    def _sense_at(self, g: Tensor, i: Tensor) -> Tensor:
        """What a read senses of the devices at flat indices ``i`` whose drifted conductances are ``g``."""
        if self.read_noise_scale == 0:
            return g
        sigma = self.read_noise_std(self._flat("g")[i], self.time - self._flat("t_prog")[i])
        return self._noisy(g, sigma)

    def _sense(self, g: Tensor) -> Tensor:
        if self.read_noise_scale == 0:
            return g
        if self._sigma is None or self._sigma_time != self.time:
            self._sigma, self._sigma_time = self.read_noise_std(self.g, self.time - self.t_prog), self.time
        return self._noisy(g, self._sigma)

    def _noisy(self, g: Tensor, sigma: Tensor) -> Tensor:
        # conductances are never negative: g + g sigma xi, clamped, in place on the noise
        return self._randn(g.shape).mul_(sigma).mul_(g).add_(g).clamp_(min=0.0)
