r"""The Brian2 circuit of a spiking SoftHebb layer: inputs, soft winner-take-all outputs, inhibition, plastic synapses.

A spiking layer is one circuit: an input population (:class:`InputModel`: ON/OFF pixels in
:mod:`snn.layer`, relayed spike trains in :mod:`snn.relay`) projects through plastic synapses onto
``K`` output neurons, which project onto one inhibitory unit that sums their activity and feeds the
two normalisers back. Constants are in :class:`snn.params.SpikingParams`.

* **Pre-activation.** Every input holds a trace ``a_i``; each input event adds ``w_ki ev_i`` to
  ``u_k``, which decays with ``tau`` like the traces, so ``u_k = w_k . a`` without a per-step sum over
  synapses. Inputs whose trace has a constant part, ``a_i = b_i + s_i`` (``biased=True``), drive
  ``u_k = beta_k + v_k``: a bias current ``beta_k = w_k . b`` that the plastic synapses keep up to date
  (``beta_k += dw_ki b_i``) and a decaying part ``v_k`` that the events move.
* **Soft WTA.** Output ``k`` fires with probability ``R p_k dt`` per step,
  :math:`p_k = e^{t u_k} / Z`, :math:`Z = \sum_l e^{t u_l}` summed by the inhibitory unit and read
  back (the population fires at total rate ``R``; a neuron's share of the spikes is ``softmax(t u)``).
  ``e^{t u_k}`` is computed once per step, with the decay of ``u``, and shared by everything below.
* **Winner flag.** A second, sharp normaliser :math:`Z_2 = \sum_l p_l^s` (``s`` =
  ``winner_sharpness``); neuron ``k`` is the winner when :math:`p_k^s > Z_2 / 2`, i.e. when it holds
  the argmax of ``u``, unless others are within ``ln(K - 1) / (s t)`` of it (then none is flagged).
* **Plasticity** on each output spike of neuron ``k``, for each synapse ``i``:

  .. math:: \Delta w_{ki} = \frac{\eta\,(|\,\|w_k\| - 1| + 10^{-10})^q}{R\,T_{learn}}\,
            \sigma_k\,(a_i - u_k w_{ki}),\qquad \sigma_k = 1 - 2\,\mathrm{anti}\,(1 - \mathrm{winner}_k)

  Neuron ``k`` fires ``R y_k T_learn`` times on average in the learning window, so the expected
  change per presentation is ``eta_k y~_k (x - u_k w_k)``: the rate rule of :mod:`rate_decoder.rules`
  with ``normalisation="none"`` (the global max-normalisation is not local). ``|w_k|^2`` is kept up to
  date incrementally in the synaptic code; ``eta_k`` and the sign are fixed in the neuron's reset,
  which runs before the synapses' ``on_post``, from the state before this spike's update.
* **Order within a step.** ``u`` decays and ``e^{t u}``, ``Z``, ``Z_2`` are computed (``groups``), the
  outputs draw their spikes from that state, the input events of the step then move ``u``
  (``synapses``) and the plastic update of a spike reads ``a`` and ``u`` after them (``after_resets``).
* **Presentation.** Every ``t_present`` the inputs load the next patch and ``u`` restarts at 0; the
  outputs are silent in the first ``t_blank`` and in the padding presentations of a chunk
  (``gate = 0``), so those change no weight.
* **Counting and recording.** Spike counts per presentation come from a cumulative count per neuron
  sampled once per presentation. Output spikes and input events are recorded only when a run asks
  (a run-time flag gating a custom ``recorded`` event), so the same compiled project serves both.
* **Randomness.** The shared variable ``rng_seed`` holds the seed of the run (see :mod:`snn.simulation`).

:mod:`snn.simulation` builds and runs these objects.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from brian2 import Equations, EventMonitor, Network, NeuronGroup, StateMonitor, Synapses, TimedArray, linked_var, second

from .params import SpikingParams

# --- output population (Brian2 code; values come from the namespace, never pasted in) -----------------
OUTPUT_EQS = """
ex : 1
Z : 1 (linked)
Z2 : 1 (linked)
p = ex / Z : 1
winner = int(p**sharpness > 0.5 * Z2) : 1
wsq : 1
lrfac : 1
spk_sign : 1
count : 1
gate : 1
t_on : second
t_spike : second
inv_temp : 1 (shared)
lr : 1 (shared)
lr_power : 1 (shared)
anti : 1 (shared)
record_spikes : 1 (shared)
rng_seed : 1 (shared)
"""
#: ``u`` of plain inputs, and of inputs with a constant part (bias current ``beta`` + decaying ``v``)
PREACTIVATION = {False: "u : 1", True: "u = beta + v : 1\nv : 1\nbeta : 1"}
OUTPUT_THRESHOLD = "gate > 0.5 and t - t_on > t_blank - 0.5 * dt and rand() * Z < rate * dt * ex"
OUTPUT_RESET = """
spk_sign = 1 - 2 * anti * (1 - winner)
lrfac = (abs(sqrt(wsq) - 1) + 1e-10)**lr_power
count += 1
t_spike = t
"""
OUTPUT_RECORDED = "record_spikes > 0.5 and t - t_spike < 0.5 * dt"
INHIBITION_EQS = """
Zsum : 1
Z2sum : 1
"""
TO_INHIBITION = """
Zsum_post = ex_pre : 1 (summed)
Z2sum_post = (ex_pre / Zsum_post)**sharpness : 1 (summed)
"""
SYNAPSE_EQS = "w : 1"
SYNAPSE_ON_POST = """
dw = lr_post * lrfac_post * spk_sign_post * (a_pre - u_post * w) / (rate * t_learn)
wsq_post += dw * (2 * w + dw)
w += dw
"""
BIAS_ON_POST = "beta_post += dw * b_pre"
INPUT_RECORD_EQS = "record_inputs : 1 (shared)"


def decaying(biased: bool) -> str:
    """The variable the input events move and the step decays: ``u`` itself, or ``v`` of ``u = beta + v``."""
    return "v" if biased else "u"


def output_code(biased: bool) -> dict[str, str]:
    """The output population's code for plain or biased inputs (composed from the pieces above)."""
    d = decaying(biased)
    return {"step": f"{d} = {d} * decay\nex = exp(inv_temp * u)",
            "onset": f"{d} = 0\nt_on = t\ngate = present_gate(t + 0.5 * t_present)",
            "on_pre": f"{d}_post += w * ev_pre",
            "on_post": SYNAPSE_ON_POST + (BIAS_ON_POST if biased else "")}


@dataclass(frozen=True)
class InputModel:
    """The input population of a layer: the Brian2 code of its neurons.

    Its equations must define the trace ``a`` and the event size ``ev`` (and ``b``, the constant part of
    the trace, when ``biased``); ``onset`` runs at the start of every presentation. ``timed`` names
    the ``TimedArray`` s the code reads, each indexed by ``"presentation"`` or by ``"index"`` (a
    table read at ``k * second``).
    """

    prefix: str
    equations: str
    threshold: str
    reset: str
    onset: str
    biased: bool = False
    timed: dict = field(default_factory=dict)

    def text(self) -> str:
        """All the code of a layer with these inputs (part of its build-cache key)."""
        out = output_code(self.biased)
        return "\n".join([self.equations, self.threshold, self.reset, self.onset, OUTPUT_EQS,
                          PREACTIVATION[self.biased], *out.values(), OUTPUT_THRESHOLD, OUTPUT_RESET, OUTPUT_RECORDED,
                          TO_INHIBITION])


class WTANetwork:
    """The Brian2 objects of one layer: one group per population, one ``Synapses`` per projection, the
    count sampler and the two event recorders.

    ``timed``: the values of the model's ``TimedArray`` s plus ``present_gate`` (one value per
    presentation of the run; placeholders when the standalone project is built, set again by every
    run); ``constants``: the input model's namespace.
    """

    def __init__(self, model: InputModel, n_in: int, n_out: int, params: SpikingParams, timed: dict,
                 constants: dict):
        p, prefix, out = params, model.prefix, output_code(model.biased)
        self.n_in, self.n_out = n_in, n_out
        self.namespace = dict(rate=p.output_rate, tau=p.tau, t_blank=p.t_blank, t_present=p.t_present,
                              t_learn=p.t_learn, sharpness=float(p.winner_sharpness),
                              decay=float(np.exp(-p.dt / p.tau)), **constants)
        kinds = dict(model.timed, present_gate="presentation")
        self.timed = {name: TimedArray(np.asarray(value), dt=p.t_present if kinds[name] == "presentation" else second,
                                       name=f"{prefix}_{name}") for name, value in timed.items()}
        self.namespace.update(self.timed)
        self.inputs = NeuronGroup(n_in, Equations(model.equations) + Equations(INPUT_RECORD_EQS),
                                  threshold=model.threshold, reset=model.reset, method="exact",
                                  events={"recorded": f"record_inputs > 0.5 and ({model.threshold})"},
                                  name=f"{prefix}_inputs", order=0)
        self.inputs.run_regularly(model.onset, dt=p.t_present, when="start", name=f"{prefix}_inputs_onset")
        self.outputs = NeuronGroup(n_out, Equations(OUTPUT_EQS) + Equations(PREACTIVATION[model.biased]),
                                   threshold=OUTPUT_THRESHOLD, reset=OUTPUT_RESET, events={"recorded": OUTPUT_RECORDED},
                                   method="exact", name=f"{prefix}_outputs", order=0)
        self.outputs.thresholder["recorded"].when = "after_resets"
        self.outputs.t_spike = -1 * second
        self.outputs.run_regularly(out["onset"], dt=p.t_present, when="start", name=f"{prefix}_outputs_onset")
        # u decays and ex = exp(t u) (order 0 of the 'groups' slot, where a state updater would run),
        # then Z = sum_l ex_l, then Z2 = sum_l p_l^s, read back as linked variables
        self.outputs.run_regularly(out["step"], when="groups", order=0, name=f"{prefix}_outputs_step")
        self.inhibition = NeuronGroup(1, INHIBITION_EQS, name=f"{prefix}_inhibition")
        self.to_inh = Synapses(self.outputs, self.inhibition, TO_INHIBITION, name=f"{prefix}_to_inh")
        self.to_inh.connect()
        self.to_inh.summed_updaters["Zsum_post"].order = 1
        self.to_inh.summed_updaters["Z2sum_post"].order = 2
        self.outputs.Z = linked_var(self.inhibition, "Zsum", index=np.zeros(n_out, dtype=int))
        self.outputs.Z2 = linked_var(self.inhibition, "Z2sum", index=np.zeros(n_out, dtype=int))
        self.synapses = Synapses(self.inputs, self.outputs, SYNAPSE_EQS, on_pre=out["on_pre"], on_post=out["on_post"],
                                 name=f"{prefix}_synapses")
        self.synapses.post.when = "after_resets"
        # explicit order: synapse index = i * n_out + k, so w.reshape(n_in, n_out).T is (K, n_in)
        self.synapses.connect(i=np.repeat(np.arange(n_in), n_out), j=np.tile(np.arange(n_out), n_in))
        # the cumulative count of each neuron, sampled before every onset
        self.count_monitor = StateMonitor(self.outputs, "count", record=True, dt=p.t_present, when="start",
                                          order=-1, name=f"{prefix}_counts")
        self.spike_monitor = EventMonitor(self.outputs, "recorded", name=f"{prefix}_spikes")
        self.input_monitor = EventMonitor(self.inputs, "recorded", name=f"{prefix}_input_events")
        self.network = Network(self.inputs, self.outputs, self.inhibition, self.to_inh, self.synapses,
                               self.count_monitor, self.spike_monitor, self.input_monitor, name=f"{prefix}_network")

    def variable(self, key: str):
        """``"outputs.wsq"`` -> the Brian2 variable view ``self.outputs.wsq``."""
        group, name = key.split(".")
        return getattr(getattr(self, group), name)

    def set(self, key: str, value) -> None:
        """Set the state variable ``"group.name"`` (runtime backend)."""
        group, name = key.split(".")
        setattr(getattr(self, group), name, value)

    def weights(self) -> np.ndarray:
        """``(K, n_in)`` weights at the end of the last run."""
        return np.asarray(self.synapses.w[:]).reshape(self.n_in, self.n_out).T.copy()

    def counts(self, n: int) -> np.ndarray:
        """Spikes ``(n, K)`` of each neuron in each of the first ``n`` presentations of the last run."""
        before = np.asarray(self.count_monitor.count[:]).T  # (presentations, K): cumulative, before each onset
        total = np.asarray(self.outputs.count[:])[None]
        return np.rint(np.diff(np.concatenate([before, total])[:n + 1], axis=0)).astype(np.int64)

    @staticmethod
    def events(monitor) -> tuple[np.ndarray, np.ndarray]:
        """``(index, time in seconds)`` of a recorder's events in the last run."""
        return np.asarray(monitor.i[:], dtype=np.int64), np.asarray(monitor.t[:] / second, dtype=np.float64)


__all__ = ["InputModel", "WTANetwork", "output_code", "decaying"]
