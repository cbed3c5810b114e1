"""Parameters of the spiking SoftHebb layer: one immutable record and named presets.

Structural constants (rates, time constants, time step, presentation timing) are compiled into the
C++ standalone binary; the plasticity hyperparameters (``t``, ``lr``, ``q``, rule) are run-time
values that :class:`snn.layer.SpikingSoftHebb` passes with ``run_args`` and can change without
recompiling.

Encoding and time constants (the equations are in :mod:`snn.layer` and :mod:`snn.network`):

* input pixel ``x`` -> ON events at rate ``r0 * max(x, 0)`` or OFF events at ``r0 * max(-x, 0)``; the
  pixel's signed trace decays with ``tau`` and jumps by ``+-1 / (r0 tau)``, so its mean is ``x``;
* the trace noise gives ``u`` a standard deviation ``sigma_u^2 = sum_i w_i^2 |x_i| / (2 r0 tau)``; the
  Jensen bias of ``exp(t u)`` grows with ``t * sigma_u``, so ``r0 * tau`` (20 in ``"fast"``, 60 in
  ``"accurate"``) is what keeps the firing shares close to ``softmax(t u)``;
* output neuron ``k``'s share of the spikes is ``p_k = e^{t u_k} / Z`` and the population fires at
  about ``rate`` (exactly, ``wta="ideal"``; through spiking inhibition, ``wta="circuit"``); spikes count
  and learn after a blanking time ``t_blank`` (1 ms: the onset burst has started the traces at their
  means; without the burst use ``t_blank >= 4 tau``; the circuit fires during it, so that its
  inhibition settles on the new patch).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
from brian2 import kHz, ms

WTA_MODES = ("circuit", "ideal")
#: fields passed to every run rather than compiled in
RUN_TIME = ("inhibition_strength", "winner_race")

# Largest standardised MNIST pixel, (1 - 0.1307) / 0.3081: the Bernoulli inputs need r0 * |x| * dt < 1.
MAX_ABS_INPUT = 2.83


@dataclass(frozen=True)
class SpikingParams:
    """Structural (compiled-in) constants of a spiking SoftHebb layer, Brian2 quantities.

    Args:
        input_rate: ``r0``, input events per second per unit of ``|x|``.
        output_rate: ``R``, total output rate of the population (``sum_k R p_k = R``).
        tau: time constant of the input traces and of ``u``.
        dt: simulation time step.
        t_present: duration of one presentation (one patch).
        t_blank: nothing counts or learns in the first ``t_blank`` of a presentation (the ideal layer does not
            fire then; the circuit does, and its inhibition settles).
        winner_sharpness: exponent ``s`` of the second normaliser ``p_k^s / sum_l p_l^s`` that flags the
            winner (the argmax of ``u``) for the soft anti-Hebbian sign.
        onset_burst: start each presentation with one graded event per pixel that sets the traces and
            ``u`` to their means (see :mod:`snn.layer`).
        wta: ``"circuit"`` (inhibition by a spiking inhibitory neuron, local winner signal) or ``"ideal"``
            (the normaliser ``Z`` summed and read back at once; the reference); :mod:`snn.network`.
        inhibition_delay: delay of the excitatory -> inhibitory synapses (circuit; the inhibition a spike
            causes acts ``2 dt + inhibition_delay`` after it).
        n_inhibitory: inhibitory neurons (at most ``K``); excitatory neuron ``k`` drives number ``k mod n``.
            Each fires at most once per step, so together they relay up to ``n`` spikes per step.
        inhibition_strength: ``J``, the rise of every ``h_k`` per inhibitory spike, in units of the escape
            exponent ``t u - h`` (circuit; run-time value).
        winner_race: the winner is the first neuron whose own expected spike count in the learning window
            (the integral of its escape rate) reaches this value (circuit; run-time value).
    """

    input_rate: object = field(default_factory=lambda: 1 * kHz)
    output_rate: object = field(default_factory=lambda: 1 * kHz)
    tau: object = field(default_factory=lambda: 20 * ms)
    dt: object = field(default_factory=lambda: 0.25 * ms)
    t_present: object = field(default_factory=lambda: 50 * ms)
    t_blank: object = field(default_factory=lambda: 1 * ms)
    winner_sharpness: float = 30.0
    onset_burst: bool = True
    wta: str = "circuit"
    inhibition_delay: object = field(default_factory=lambda: 0 * ms)
    n_inhibitory: int = 16
    inhibition_strength: float = 0.5
    winner_race: float = 10.0

    def __post_init__(self):
        if self.wta not in WTA_MODES:
            raise ValueError(f"unknown wta {self.wta!r}; choose one of {WTA_MODES}")
        if not (np.isfinite(self.inhibition_strength) and self.inhibition_strength > 0):
            raise ValueError(f"inhibition_strength must be a positive number, got {self.inhibition_strength}")
        if int(self.n_inhibitory) != self.n_inhibitory or self.n_inhibitory < 1:
            raise ValueError(f"n_inhibitory must be a whole number >= 1, got {self.n_inhibitory}")
        if not (np.isfinite(self.winner_race) and self.winner_race > 0):
            raise ValueError(f"winner_race must be a positive number, got {self.winner_race}")
        delay_steps = float(self.inhibition_delay / self.dt)
        if delay_steps < 0 or abs(delay_steps - round(delay_steps)) > 1e-6:
            raise ValueError(f"inhibition_delay must be a non-negative whole number of time steps, got "
                             f"{self.inhibition_delay}")
        if not (0 * ms <= self.t_blank < self.t_present):
            raise ValueError(f"need 0 <= t_blank < t_present, got {self.t_blank}, {self.t_present}")
        if float(self.input_rate * MAX_ABS_INPUT * self.dt) >= 1.0:
            raise ValueError(f"input_rate * {MAX_ABS_INPUT} * dt = {float(self.input_rate * MAX_ABS_INPUT * self.dt):.3f}"
                             " must stay below 1 (Bernoulli inputs)")
        if float(self.output_rate * self.dt) >= 1.0:
            raise ValueError("output_rate * dt must stay below 1 (Bernoulli outputs)")
        steps = float(self.t_present / self.dt)
        if abs(steps - round(steps)) > 1e-6:
            raise ValueError("t_present must be a whole number of time steps")

    @property
    def t_learn(self):
        """Length of the counting / learning window of each presentation."""
        return self.t_present - self.t_blank

    def replace(self, **changes) -> "SpikingParams":
        """A copy with some fields changed (names checked)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise KeyError(f"unknown SpikingParams fields {sorted(unknown)}")
        return dataclasses.replace(self, **changes)

    def key(self) -> str:
        """A stable text key of the compiled-in values (for the build cache; run-time values left out)."""
        def text(value):
            return value if isinstance(value, str) else f"{float(value):.9g}"
        return ";".join(f"{f.name}={text(getattr(self, f.name))}" for f in dataclasses.fields(self)
                        if f.name not in RUN_TIME)


PRESETS = {
    # r0 tau = 20, 200 steps per patch: the speed setting (benchmark, long MNIST runs).
    "fast": SpikingParams(),
    # r0 tau = 60, 500 steps per patch: smaller trace noise, used to cross-check learning.
    "accurate": SpikingParams(input_rate=3 * kHz, output_rate=3 * kHz, dt=0.1 * ms),
}


def preset(name: str, **overrides) -> SpikingParams:
    """A named preset with optional overrides (field names checked)."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name].replace(**overrides)


__all__ = ["SpikingParams", "PRESETS", "preset", "MAX_ABS_INPUT", "WTA_MODES"]
