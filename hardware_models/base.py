r"""Common machinery of the synaptic device models: weight scale, pulse mapping, clock and drift.

Protocol (see :class:`rate_decoder.layers._Plastic`): a layer calls ``attach(weight)`` once, which
programs the device state from the float weights and returns them as read back, then
``program(dw)`` for every plasticity step, which applies the float update through the device
physics and returns the weights as read back. The layer copies what comes back into
``layer.weight``, so the next update is computed from the *read* weights (with read noise and
drift), while the device keeps its own persistent state -- read noise never accumulates.

Weight scale. Each weight is held as a pair of normalised conductances ``g = (g+, g-)`` in
``[0, 1]`` (1 = the nominal ``G_max`` of the technology) and read as
``w = w_scale * (g+ - g-)``. For a one-sided pair (PCM) both halves are programmed and
``w_scale = w_max``; for a bidirectional device against a fixed reference ``g- = 1/2`` (linear,
RRAM) ``w_scale = 2 w_max``. Either way the representable range is ``[-w_max, w_max]``.
``w_max`` is chosen per layer at ``attach``, in one of three ways:

* ``w_max_factor * max|w|`` of the weights handed over (the default, ``w_max_factor = 1``: the
  initial weights just fill the range, nothing is clipped). This is the mapping of IBM aihwkit
  (``weight_scaling_omega = 1``). But SoftHebb shrinks the neuron norms from ``radius`` (25)
  towards 1, so the learnt weights use only part of such a range: few of the device's states,
  and the smallest conductances, where PCM's relative read noise is largest. (Measured after the
  paper's one epoch, CIFAR-10 layer 1: neuron norms 1.0-9.6, median 4.8; ``max|w|`` 2.9 against
  11.8 initially.)
* ``w_max_unit / sqrt(fan_in)``: a range sized in units of the rms weight ``1 / sqrt(fan_in)`` of
  a neuron of norm 1 (SoftHebb's fixed point, docs/algorithm.md §2.6), so one value fits every layer
  whatever its fan-in (e.g. the CIFAR-10 layer-1 figures above are ``max|w| sqrt(fan_in)`` = 25.5
  learnt, 102.5 initially). Initial weights beyond it saturate at ``+-w_max`` when programmed, as
  an over-range write saturates a real device; the neurons start from a smaller norm and the
  norm-dependent learning rate brings them down as before.
* ``w_max``: an absolute value.

Pulse mapping. A float update ``dw`` becomes a signed integer number of identical programming
pulses per device, ``n = sign(dw) * SR(|dw| / dw_step)``, where ``dw_step = w_scale * dg_step``
is the weight change of one pulse at the device's nominal step ``dg_step`` (model specific) and
``SR`` is stochastic rounding: ``floor(x) + Bernoulli(x - floor(x))``, so ``E[n] dw_step = dw``
even for updates far below one step (most Hebbian updates are). This is the stochastic
variant of the pulse accumulation of Nandakumar et al. (Front. Neurosci. 14:406, 2020), and the
default (``rounding="stochastic"``): it needs no memory beside the device. Its price is noise:
each update adds a zero-mean error of variance ``p (1 - p) dw_step^2`` (``p`` the fractional
part), which the learning dynamics integrate into a random walk around their fixed point.
``rounding="accumulate"`` is the deterministic original: each synapse keeps the remainder
``chi`` of its updates in a digital accumulator and fires ``n = trunc(dw / dw_step + chi)``
pulses, carrying ``chi <- dw / dw_step + chi - n`` (``|chi| < 1``), so the device tracks the
summed float updates to within one nominal step, with no accumulated rounding noise.
``n > 0`` potentiates the weight, ``n < 0`` depresses it; how the pulses are routed to the
pair (``g+`` or ``g-``, SET or RESET) is the model's. ``|n|`` is capped at the number of nominal
steps that span the whole range, beyond which every device is saturated anyway.

Time. Every device has a clock (seconds). ``age(seconds)`` advances it; drifting devices record
for each conductance the time it was last programmed and read
``g(t) = g_prog ((t - t_prog + t0) / t0)^{-nu}``, i.e. the programmed value is the one read at
``t0`` after programming (``t0 = 20 s`` as in aihwkit's PCM model). Programming a device first
makes its drifted conductance the new starting point. Training steps take no time unless the
caller ages the device between them.

Randomness. A ``torch.Generator`` seeded at construction (re-seeded with the same seed at each
``attach``, on the weight's device) drives all device randomness, so a given seed reproduces a
run exactly on a given device type.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


#: how an update becomes a whole number of pulses (module docstring)
ROUNDINGS = ("stochastic", "accumulate")


class SynapseDevice:
    """Base class of the device models: state, weight scale, pulse counting, clock, drift.

    Subclasses provide ``_init_state(weight)`` (program ``self.g`` from float weights),
    ``_pulse(n)`` (apply signed pulse counts) and, where reads are noisy, ``_sense(g)`` (the
    conductances a read senses, given the drifted ones).

    Attributes after ``attach``:
        g: programmed conductances, shape ``(2, *weight.shape)`` (``g[0] = g+``, ``g[1] = g-``).
        nu: drift exponents with the shape of ``g``, or ``None`` for a drift-free device.
        t_prog: clock time at which each conductance was last programmed (drifting devices).
        w_max, w_scale, dw_step: the weight range, conductance-to-weight factor, weight per pulse.
        clipped: how many of the weights handed to ``attach`` lay outside ``[-w_max, w_max]``.
        pulses: total number of programming pulses applied since ``attach``.
    """

    #: nominal conductance change of one pulse (normalised units); set by the subclass
    dg_step: float = 1.0
    #: ``True`` for one-sided pairs (both halves programmed), ``False`` for a fixed reference ``g- = 1/2``
    differential: bool = False
    #: ``True`` where two reads of unchanged conductances differ (read noise); ``False`` where reads repeat
    noisy_reads: bool = False

    def __init__(self, seed: int = 0, w_max: float | None = None, w_max_factor: float = 1.0,
                 w_max_unit: float | None = None, rounding: str = "stochastic", t0: float = 20.0):
        if rounding not in ROUNDINGS:
            raise ValueError(f"unknown rounding {rounding!r}; choose one of {ROUNDINGS}")
        self.rounding = rounding
        self.remainder: Tensor | None = None
        for name, value in (("w_max", w_max), ("w_max_unit", w_max_unit)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, got {value}")
        if w_max is not None and w_max_unit is not None:
            raise ValueError("give the device range as w_max or as w_max_unit, not both")
        if not (math.isfinite(w_max_factor) and w_max_factor > 0):
            raise ValueError(f"w_max_factor must be a positive finite number, got {w_max_factor}")
        if not t0 > 0:
            raise ValueError(f"t0 must be positive, got {t0}")
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.w_max_fixed = None if w_max is None else float(w_max)
        self.w_max_factor = float(w_max_factor)
        self.w_max_unit = None if w_max_unit is None else float(w_max_unit)
        self.t0 = float(t0)
        self.shape: torch.Size | None = None
        self.g: Tensor | None = None
        self.nu: Tensor | None = None
        self.t_prog: Tensor | None = None
        self.time = 0.0
        self.pulses = 0

    # ------------------------------------------------------------------ protocol
    @torch.no_grad()
    def attach(self, weight: Tensor) -> Tensor:
        """Program the device state from float weights; return the weights as read back."""
        if not weight.is_floating_point():
            raise TypeError(f"weights must be floating point, got {weight.dtype}")
        if not torch.isfinite(weight).all():
            raise ValueError("cannot attach non-finite weights")
        self.shape, self.device, self.dtype = weight.shape, weight.device, weight.dtype
        self.generator = torch.Generator(device=weight.device).manual_seed(self.seed)
        self.w_max = self.range_for(weight)
        self.clipped = int((weight.abs() > self.w_max).sum())  # weights saturated by the first write
        if not self.w_max > 0:
            raise ValueError("all-zero weights: give w_max explicitly to set the device range")
        self.w_scale = self.w_max if self.differential else 2.0 * self.w_max
        self.dw_step = self.w_scale * self.dg_step
        self.max_pulses = math.ceil(1.0 / self.dg_step)
        self.time, self.pulses = 0.0, 0
        self.remainder = torch.zeros_like(weight, dtype=self.dtype) if self.rounding == "accumulate" else None
        self._init_state(weight.detach())
        return self.read()

    def range_for(self, weight: Tensor) -> float:
        """``w_max`` for these weights: absolute, per unit-norm rms, or relative to ``max|w|`` (module docstring)."""
        if self.w_max_fixed is not None:
            return self.w_max_fixed
        if self.w_max_unit is not None:
            fan_in = math.prod(weight.shape[1:]) if weight.dim() > 1 else weight.numel()
            return self.w_max_unit / math.sqrt(max(1, fan_in))
        return self.w_max_factor * (float(weight.abs().max()) if weight.numel() else 0.0)

    @torch.no_grad()
    def program(self, dw: Tensor) -> Tensor:
        """Apply the float update ``dw`` as programming pulses; return the weights as read back."""
        self._check(dw, "update")
        return self._apply(self.pulse_counts(dw))  # whole numbers within +-max_pulses already

    @torch.no_grad()
    def apply_pulses(self, n: Tensor) -> Tensor:
        """Apply signed integer pulse counts ``n`` (positive: potentiate the weight); return the read weights."""
        self._check(n, "pulse count")
        return self._apply(n.to(self.dtype).round().clamp(-self.max_pulses, self.max_pulses))

    def _apply(self, n: Tensor) -> Tensor:
        self.pulses += int(n.abs().sum())
        self._pulse(n)
        return self.read()

    @torch.no_grad()
    def read(self) -> Tensor:
        """Weights as read now: drifted conductances plus fresh read noise, times ``w_scale``."""
        g = self._sense(self.conductances())
        return torch.sub(g[0], g[1]).mul_(self.w_scale)

    def age(self, seconds: float) -> None:
        """Let ``seconds`` of wall-clock time pass (drift acts on the next read)."""
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"seconds must be a non-negative finite number, got {seconds}")
        self.time += float(seconds)

    # ------------------------------------------------------------------ shared by the models
    @torch.no_grad()
    def pulse_counts(self, dw: Tensor) -> Tensor:
        """Signed pulse counts for the update ``dw``: stochastically rounded or accumulated (module docstring).

        With ``rounding="accumulate"`` this also carries the new remainder into ``self.remainder``, so
        it is meant to be called once per update, by :meth:`program`.
        """
        x = dw.to(self.dtype) / self.dw_step
        if self.rounding == "accumulate":
            x = x + self.remainder
            n = x.trunc().clamp(-self.max_pulses, self.max_pulses)
            self.remainder = (x - n).clamp(-1.0, 1.0)  # what a saturated count could not carry is dropped
            return n
        # in place where possible: these are whole-tensor passes at every plasticity step
        sign = torch.sign(x)
        n = torch.floor(x.abs_())
        x.sub_(n)  # the fractional part, fired with its probability
        n.add_(self._rand(x.shape).lt_(x))
        return n.clamp_(max=self.max_pulses).mul_(sign)

    @torch.no_grad()
    def conductances(self) -> Tensor:
        """Programmed conductances drifted to the current time (no read noise), shape ``(2, *shape)``."""
        if self.g is None:
            raise RuntimeError("device not attached: call attach(weight) first")
        if self.nu is None or self.time == 0:
            return self.g
        age = self.time - self.t_prog
        return self.g * ((age + self.t0) / self.t0).pow(-self.nu)

    def _sense(self, g: Tensor) -> Tensor:
        return g

    def _randn(self, shape) -> Tensor:
        return torch.randn(shape, generator=self.generator, device=self.device, dtype=self.dtype)

    def _rand(self, shape) -> Tensor:
        return torch.rand(shape, generator=self.generator, device=self.device, dtype=self.dtype)

    def _check(self, t: Tensor, what: str) -> None:
        if self.shape is None:
            raise RuntimeError("device not attached: call attach(weight) first")
        if t.shape != self.shape:
            raise ValueError(f"{what} of shape {tuple(t.shape)} for a device of shape {tuple(self.shape)}")

    def _init_state(self, weight: Tensor) -> None:
        raise NotImplementedError

    def _pulse(self, n: Tensor) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        scale = f", w_max={self.w_max:.4g}" if self.shape is not None else ""
        return f"{type(self).__name__}(seed={self.seed}{scale})"


def pulse_train(g: Tensor, counts: Tensor, step) -> Tensor:
    """Apply ``counts[i]`` successive pulses to ``g[i]`` (flat tensors), one pulse per pass.

    ``step(g_sub, idx)`` returns the conductances after one pulse for the devices at flat indices
    ``idx``. Only devices with pulses left are touched in each pass, so the cost follows the total
    number of pulses, not ``max(counts) * numel``. Returns the new flat conductances.
    """
    g = g.clone()
    idx = counts.nonzero().flatten()
    left = counts[idx]
    while idx.numel():
        g[idx] = step(g[idx], idx)
        left = left - 1
        keep = left > 0
        idx, left = idx[keep], left[keep]
    return g
