r"""A SoftHebb layer as a Brian2 spiking population driven by ON/OFF pixel inputs (one patch per presentation).

The output population, its plasticity and the build/run machinery are :mod:`snn.network`'s; this
module defines the inputs (constants in :class:`snn.params.SpikingParams`):

* **ON/OFF events.** Each of the ``n_in`` pixels of a patch has a signed standardised value ``x_i``: ON
  events at rate ``r0 max(x_i, 0)``, OFF events at ``r0 max(-x_i, 0)``. A pixel's value is constant
  during a presentation, so at most one of the two is active and both are one Brian2 neuron whose
  events carry the sign ``sign(x_i)``: at most one event per step, with probability
  ``q_i = r0 |x_i| dt < 1`` (a Bernoulli sequence). The signed trace ``a_i`` decays with ``tau`` and
  jumps by ``sign(x_i) / (r0 tau)`` per event: ``E[a_i] = x_i``, ``Var[a_i] = |x_i| (1 - q_i) / (2 r0 tau)``.
* **Event-driven draws.** After each event the input draws the number of steps to its next one from
  the geometric law of that Bernoulli sequence, ``ceil(log U / log(1 - q_i))``: one comparison per
  step and one random number per event.
* **Onset burst** (``onset_burst=True``, default): in the first step of a presentation every pixel
  sends one graded event of size ``x_i`` that sets its trace to ``x_i`` and adds ``w_ki x_i`` to
  ``u_k``, so the traces and ``u`` start at their stationary means instead of rising as
  ``1 - e^{-t/tau}`` (a window starting at ``t_blank = tau`` would otherwise see traces at 63-92 % of
  ``x``). With ``onset_burst=False`` the inputs are pure ON/OFF and ``t_blank`` should be >= 4 tau.
* The trace is evaluated lazily, ``a = a_last exp(-(t - t_last) / tau)``: no per-step update of the inputs.

Per step the compiled code runs one comparison per input and one ``exp`` per output neuron (and, with
``wta="ideal"``, two sums over the outputs, ``Z`` and ``Z2``); per input event ``K`` additions to ``u``;
per output spike ``n_in`` weight updates (and, circuit, one inhibitory spike, which moves ``K``
inhibitory potentials). ``python -m experiments.snn_benchmark`` measures the resulting speed.
"""
from __future__ import annotations

import numpy as np

from .network import InputModel
from .simulation import PlasticLayer, Presentation

# ``ev``: the size of the next event as seen by ``u`` (``x`` for the onset burst, ``sign(x) / (r0 tau)``
# after it); ``da``: its jump of the trace (0 for the burst: the onset sets the trace).
INPUT_EQS = """
a = a_last * exp(-(t - t_last) / tau) : 1
a_last : 1
t_last : second
t_next : second
ev : 1
da : 1
x : 1
inv_log_q : 1
"""
INPUT_THRESHOLD = "t > t_next - 0.5 * dt"
# Steps to the next event, at least 1: ceil(log(U) / log(1 - q)), with 1 / log(1 - q) computed once per
# presentation; capped at 1e9 steps (q = 0: never) so that it stays an int32 (Brian2's numpy target
# casts ceil to int32).
STEPS_TO_NEXT = "ceil(clip(log(rand()) * inv_log_q, 1e-9, 1e9))"
INPUT_RESET = f"""
a_last = a + da
t_last = t
ev = sign(x) / (r0 * tau)
da = ev
t_next = t + dt * {STEPS_TO_NEXT}
"""
INPUT_ONSET = f"""
x = stimulus(t + 0.5 * t_present, i)
a_last = burst * x
t_last = t
inv_log_q = 1 / (log(1 - r0 * abs(x) * dt) - 1e-30)
ev = burst * x + (1 - burst) * sign(x) / (r0 * tau)
da = (1 - burst) * ev
t_next = t + (1 - burst) * dt * ({STEPS_TO_NEXT} - 1)
"""
ON_OFF_INPUTS = InputModel(prefix="snn", equations=INPUT_EQS, threshold=INPUT_THRESHOLD, reset=INPUT_RESET,
                           onset=INPUT_ONSET, timed={"stimulus": "presentation"})


class SpikingSoftHebb(PlasticLayer):
    """``K`` SoftHebb neurons with one shared weight set, learning from a stream of patches.

    Args:
        n_inputs: patch size ``C*k*k`` (25 for a 5x5 MNIST patch, 75 for RGB).
        n_neurons: ``K``.
        params: structural constants (:class:`snn.params.SpikingParams`).
        inverse_temperature, lr, lr_power, rule: ``t``, ``eta``, ``q``, ``"softhebb"`` or ``"soft"``;
            run-time values (changeable between calls without recompiling).
        chunk: presentations per compiled run; longer streams are cut into chunks, shorter ones padded
            with silent presentations.
        backend: ``"cpp_standalone"`` or ``"runtime"``.
        weights: initial ``(K, n_in)`` weights (default normal, norm ``radius`` in expectation).
        seed: seed of the layer's generator (initial weights and the seed of every run); ``None``: fresh.
        build_dir: standalone project directory (default: under :func:`snn.network.cache_dir`).
        synapse: a device model (``hardware_models``) holding the weights; see :meth:`attach_synapse`.
        threads: OpenMP threads of the compiled standalone code (Brian2 ``openmp_threads``; 1 = none).
        normalisation: ``"none"`` (the raw rule) or a :class:`rate_decoder.rules.HomeostaticGain` (or its name),
            a gain per neuron held as a state variable; the object keeps the gain between calls.
        gain_batch: presentations per batch of the gain (the weights change at each batch's end); ``chunk``
            must be a multiple of it.

    Example::

        >>> layer = SpikingSoftHebb(25, 4, chunk=4, backend="runtime", seed=0)
        >>> out = layer.present(np.zeros((4, 25)), learn=False)
        >>> out.counts.shape, out.weights.shape
        ((4, 4), (4, 25))
    """

    model = ON_OFF_INPUTS

    def _constants(self) -> dict:
        return dict(r0=self.params.input_rate, burst=float(self.params.onset_burst))

    def _placeholders(self) -> dict:
        return {"stimulus": np.zeros((self.chunk, self.n_inputs))}

    def present(self, patches: np.ndarray, learn: bool = True, record_spikes: bool = False,
                record_inputs: bool = False) -> Presentation:
        """Present ``patches`` ``(n, n_in)`` one after the other, learning if ``learn``.

        ``record_spikes`` / ``record_inputs``: also return every output spike / input event with its
        time (run-time choices: the compiled project is the same).
        """
        x = np.asarray(patches, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_inputs:
            raise ValueError(f"patches must have shape (n, {self.n_inputs}), got {x.shape}")
        limit = 1.0 / float(self.params.input_rate * self.params.dt)
        if np.abs(x).max(initial=0.0) >= limit:
            raise ValueError(f"|x| must stay below 1/(r0 dt) = {limit:.3f} (Bernoulli input events)")

        def chunk_inputs(start: int, m: int, size: int):
            stimulus = np.zeros((size, self.n_inputs))
            stimulus[:m] = x[start:start + m]
            return m, {"stimulus": stimulus}, {}

        return self._present(len(x), chunk_inputs, learn, record_spikes, record_inputs)


__all__ = ["SpikingSoftHebb", "ON_OFF_INPUTS"]
