r"""The Brian2 circuit of a spiking SoftHebb layer: inputs, soft winner-take-all outputs, inhibition, plastic synapses.

A spiking layer is one circuit: an input population (:class:`InputModel`: ON/OFF pixels in
:mod:`snn.layer`, relayed spike trains in :mod:`snn.relay`) projects through plastic synapses onto
``K`` excitatory output neurons, whose competition is set by inhibition. Constants are in
:class:`snn.params.SpikingParams`; ``wta`` picks one of two inhibitions.

* **Pre-activation.** Every input holds a trace ``a_i``; each input event adds ``w_ki ev_i`` to
  ``u_k``, which decays with ``tau`` like the traces, so ``u_k = w_k . a`` without a per-step sum over
  synapses. Inputs whose trace has a constant part, ``a_i = b_i + s_i`` (``biased=True``), drive
  ``u_k = beta_k + v_k``: a bias current ``beta_k = w_k . b`` that the plastic synapses keep up to date
  (``beta_k += dw_ki b_i``) and a decaying part ``v_k`` that the events move.

* **Soft WTA by spiking inhibition** (``wta="circuit"``). Neuron ``k`` holds an inhibitory potential
  ``h_k`` beside ``u_k`` and fires with exponential escape noise: in each step with probability
  ``rho_k dt``, :math:`\rho_k = R\,e^{t u_k - h_k}` (the Bernoulli draw saturates at one spike per
  step). ``n_inhibitory`` inhibitory integrate-and-fire neurons share the excitatory ones (neuron
  ``k`` drives number ``k mod n`` through a synapse of weight 1 and delay ``inhibition_delay``); each
  fires once per unit of its potential (threshold 1/2, reset ``-1``: a relay that fires at most once
  per step and keeps a backlog, so ``n`` of them relay up to ``n`` spikes per step; one was too slow
  after a jump of ``log Z``), and each inhibitory spike raises every ``h_k`` by ``J`` through an
  inhibitory synapse. A tonic drive lowers ``h_k`` by
  ``J R`` per second while the neuron may fire. So:

  - *Shares.* All ``h_k`` receive the same inhibitory spikes and drift alike, so at every instant
    :math:`\rho_k / \sum_l \rho_l = e^{t u_k} / \sum_l e^{t u_l} = \mathrm{softmax}(t u)_k`, whatever
    ``h``: the firing shares are the softmax exactly for a steady ``u``, and for the trace-noisy
    ``u`` of a presentation they are its rate-weighted mean (the circuit's bias against the ideal
    mode comes only from the correlation of ``h`` with the noise of ``u``).
  - *Total rate.* The inhibitory neurons together fire as often as the excitatory ones, so
    :math:`E[dh/dt] = J(\rho_{tot} - R)`: integral feedback, whose only fixed point is
    :math:`\rho_{tot} = R`, i.e. :math:`h = \log \sum_l e^{t u_l}` (the log of the ideal mode's
    ``Z``). Around it, ``d(h - h*)/dt = -J R (h - h*)``: a new patch's ``log Z`` is tracked with time
    constant ``1 / (J R)`` (fast when the rate is too high, at most ``J R`` per second when too low);
    each inhibitory spike moves the total rate by a factor ``e^{-J}`` (noise of the total count,
    not of the shares), and the loop's delay (two steps plus ``inhibition_delay``) must stay well
    below ``1 / (J R)``. ``h`` carries over from one presentation to the next.
  - *Winner signal: a race.* Each neuron integrates its own escape drive over the learning window,
    ``race_k = R \int e^{t u_k - h_k} dt`` (its expected spike count so far). The first neuron whose
    race reaches ``winner_race`` claims the winner's place: its claim reaches a winner-gate neuron
    through a synapse, and the gate's spike tells every neuron, through synapses, that the race is
    decided (two steps after the claim). Because every ``h_k`` is the same, the order of the races is
    the order of ``u`` (averaged over the time to claim): the claimant is the argmax of ``u`` unless
    the top two are closer than the trace noise, and the noise of ``h`` cancels. A threshold of
    several expected spikes (10 by default) keeps two neurons from crossing in the same step when
    the rate is transiently high. Until a neuron knows the outcome its plastic changes wait in a
    per-synapse eligibility ``elig``; once decided it applies them with its sign (+ if it claimed,
    the rule's sign otherwise), and later spikes apply theirs at once. A presentation in which no
    race reaches the threshold (a largest share below ``winner_race / (R T)``) drops its changes.

* **Soft WTA by an ideal normaliser** (``wta="ideal"``, the reference the circuit is measured
  against). Output ``k`` fires with probability ``R p_k dt`` per step, :math:`p_k = e^{t u_k} / Z`,
  :math:`Z = \sum_l e^{t u_l}` summed by one non-spiking unit and read back at once (the population
  fires at total rate ``R`` exactly). The winner flag uses a second, sharp normaliser
  :math:`Z_2 = \sum_l p_l^s` (``s`` = ``winner_sharpness``): neuron ``k`` is the winner when
  :math:`p_k^s > Z_2 / 2`, i.e. when it holds the argmax of ``u``, unless others are within
  ``ln(K - 1) / (s t)`` of it (then none is flagged).

* **Plasticity** on each output spike of neuron ``k``, for each synapse ``i``:

  .. math:: \Delta w_{ki} = \frac{\eta\,(|\,\|w_k\| - 1| + 10^{-10})^q}{R\,T_{learn}}\,
            \sigma_k\,(a_i - u_k w_{ki}),\qquad \sigma_k = 1 - 2\,\mathrm{anti}\,(1 - \mathrm{winner}_k)

  Neuron ``k`` fires ``R y_k T_learn`` times on average in the learning window, so the expected
  change per presentation is ``eta_k y~_k (x - u_k w_k)``: the rate rule of :mod:`rate_decoder.rules`
  with ``normalisation="none"`` (the global max-normalisation is not local). ``|w_k|^2`` is kept up to
  date incrementally in the synaptic code; ``eta_k`` and the sign are fixed in the neuron's reset,
  which runs before the synapses' ``on_post``, from the state before this spike's update. With a
  synaptic device attached per event (:mod:`snn.device_events`), ``Delta w`` becomes programming
  pulses inside the same ``on_post`` and the weight is what the device reads back.
* **Homeostatic gain** (``gain=True``; :class:`rate_decoder.rules.HomeostaticGain`). The rate rule's batch
  becomes ``gain_batch`` presentations: each spike's (and, circuit, each flush's) signed change without
  its rate, ``sigma_k (a_i - u_k w_ki) / (R T_learn)``, adds to a per-synapse ``pending`` sum and the
  weights stay as they are. Neuron ``k`` holds a gain with its own equation,
  :math:`dg_k/dt = -\mathrm{gate}\, g_k / (\tau B\, t_{present})` (``tau`` in batches, ``B`` presentations
  per batch: a decay of ``e^{-1/tau}`` per batch). At a batch's last step (event ``batch_end``), in
  pathway order: each synapse raises its neuron's gain to its ``|pending|``
  (:math:`g_k \leftarrow \max(g_k, \max_i |pending_{ki}|)`, a max written by every synapse onto its
  neuron, in the serial loop of the standalone code) and sets the neuron's rate factor from its
  weights; then each applies :math:`\eta\,(|\,\|w_k\| - 1| + 10^{-10})^q\, pending_{ki} / g_k`, the
  rate rule's step with that normalisation.
* **Order within a step.** ``u`` decays, ``h`` drifts, ``e^{t u (- h)}`` and the race (and, ideal,
  ``Z``, ``Z_2``) are computed (``groups``); the outputs and the inhibitory neuron draw their spikes from that
  state; the input events of the step then move ``u``, the excitatory spikes reach the inhibitory
  neuron and its spikes reach ``h`` (``synapses``); the plastic update of a spike reads ``a`` and
  ``u`` after them (``after_resets``).
* **Presentation.** Every ``t_present`` the inputs load the next patch and ``u`` restarts at 0; the
  outputs are silent in the first ``t_blank`` and in the padding presentations of a chunk
  (``gate = 0``), so those change no weight and do not move ``h``.
* **Counting and recording.** Spike counts per presentation come from a cumulative count per neuron
  sampled once per presentation. Output spikes (with their sign), inhibitory spikes and input events
  are recorded only when a run asks (run-time flags gating custom ``recorded`` events), so the same
  compiled project serves both.
* **Randomness.** The shared variable ``rng_seed`` holds the seed of the run (see :mod:`snn.simulation`).

:mod:`snn.simulation` builds and runs these objects.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from brian2 import Equations, EventMonitor, Network, NeuronGroup, StateMonitor, Synapses, TimedArray, linked_var, second

from .params import WTA_MODES, SpikingParams


class _OrderFilter(logging.Filter):
    """Drops Brian2's warning that some synaptic code "may depend on the order of execution" where the
    order does not change the result and the standalone code runs it in one serial loop:

    * ``gain_post``: every synapse writes a max onto its neuron and the changes then divide by it (a gained
      layer refuses OpenMP threads);
    * ``_to_pool`` (:mod:`snn.conv`'s race pooling): the first synapse whose neuron reaches the race's
      count locks its pooling unit; two that reach it in the same step are equally entitled, and the
      serial loop takes the first.
    """

    VARIABLES = ("gain_post", "_to_pool")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("order of execution" in message and any(v in message for v in self.VARIABLES))


logging.getLogger("brian2.codegen.generators.base").addFilter(_OrderFilter())

# --- output population (Brian2 code; values come from the namespace, never pasted in) -----------------
OUTPUT_EQS = """
ex : 1
wsq : 1
lrfac : 1
spk_sign : 1
count : 1
gate : 1
t_on : second
t_spike : second
learning = int(t - t_on > t_blank - 0.5 * dt) : 1
inv_temp : 1 (shared)
lr : 1 (shared)
lr_power : 1 (shared)
anti : 1 (shared)
record_spikes : 1 (shared)
rng_seed : 1 (shared)
"""
#: the inhibition's part of the output population, per ``wta`` mode
WTA_EQS = {
    "ideal": """
Z : 1 (linked)
Z2 : 1 (linked)
p = ex / Z : 1
winner = int(p**sharpness > 0.5 * Z2) : 1
""",
    "circuit": """
h : 1
race : 1
claimed : 1
decided : 1
flushed : 1
drift : 1 (shared)
race_to_claim : 1 (shared)
winner = claimed : 1
"""}
#: ``u`` of plain inputs, and of inputs with a constant part (bias current ``beta`` + decaying ``v``)
PREACTIVATION = {False: "u : 1", True: "u = beta + v : 1\nv : 1\nbeta : 1"}
# ideal: the outputs fire in the learning window only; circuit: from the onset, so that the inhibition
# settles on the new patch during t_blank (those spikes neither count nor learn)
OUTPUT_THRESHOLD = {"ideal": "gate > 0.5 and learning > 0.5 and rand() * Z < rate * dt * ex",
                    "circuit": "gate > 0.5 and rand() < rate * dt * ex"}
#: per step, after the decay of ``u``: the escape drive (and, circuit, the tonic drift of ``h``)
DRIVE = {"ideal": "ex = exp(inv_temp * u)",
         "circuit": "h = h - drift * int(gate > 0.5)\nex = exp(clip(inv_temp * u - h, -700, 700))"}
#: (circuit, plastic layer) each neuron's own expected spike count in the window, for the race for the winner
RACE = "race += rate * dt * ex * learning"
OUTPUT_DRIVE = {"ideal": DRIVE["ideal"], "circuit": DRIVE["circuit"] + "\n" + RACE}
#: (circuit) the race for the winner: the first neuron whose own expected spike count in the window reaches
#: ``race_to_claim`` claims; the winner gate tells every neuron that the race is decided; a neuron
#: flushes its pending updates once decided, or at the last step of a presentation
CLAIM = "gate > 0.5 and learning > 0.5 and decided < 0.5 and claimed < 0.5 and race > race_to_claim"
FLUSH = "gate > 0.5 and flushed < 0.5 and (decided > 0.5 or t - t_on > t_present - 1.5 * dt)"
#: what else restarts at each onset
ONSET = {"ideal": "", "circuit": "\nrace = 0\nclaimed = 0\ndecided = 0\nflushed = 0"}
GATE_EQS = "v_gate : 1"
TO_GATE = "v_gate_post += 1"
FROM_GATE = "decided_post = 1"
OUTPUT_RESET = """
spk_sign = 1 - 2 * anti * (1 - winner)
lrfac = learning * (abs(sqrt(wsq) - 1) + 1e-10)**lr_power
count += learning
t_spike = t
"""
OUTPUT_RECORDED = "record_spikes > 0.5 and learning > 0.5 and t - t_spike < 0.5 * dt"  # the counted spikes
# ideal: one non-spiking unit sums the population and is read back as linked variables
NORMALISER_EQS = """
Zsum : 1
Z2sum : 1
"""
TO_NORMALISER = """
Zsum_post = ex_pre : 1 (summed)
Z2sum_post = (ex_pre / Zsum_post)**sharpness : 1 (summed)
"""
# circuit: inhibitory integrate-and-fire neurons, excitatory -> inhibitory -> excitatory synapses
INHIBITORY_EQS = """
v_inh : 1
record_inhibitory : 1 (shared)
"""
INHIBITORY_THRESHOLD = "v_inh > 0.5"
INHIBITORY_RESET = "v_inh -= 1"
TO_INHIBITORY = "v_inh_post += 1"
INHIBITION_EQS = "J : 1 (shared)"
INHIBITION_ON_PRE = "h_post += J"
SYNAPSE_EQS = "w : 1"
#: the rule's change of a synapse on a spike of its neuron, before its sign; the signed ``dw_rule`` then goes
#: to the synapse's ``apply`` (float or device), which sets ``w``
RULE_RAW = "lr_post * lrfac_post * (a_pre - u_post * w) / (rate * t_learn)"
#: ideal: the sign is known at the spike; circuit: the change waits in ``elig`` until the race is decided
RULE_DW = {"ideal": f"dw_rule = spk_sign_post * {RULE_RAW}",
           "circuit": f"dw_raw = {RULE_RAW}\nelig += dw_raw * (1 - flushed_post)\n"
                      "dw_rule = dw_raw * flushed_post * spk_sign_post"}
#: circuit: the pending change applied with the sign the race gave (dropped when no neuron claimed in time)
FLUSH_DW = "dw_rule = decided_post * (1 - 2 * anti_post * (1 - claimed_post)) * elig\nelig = 0"
# homeostatic gain (rate_decoder.rules.HomeostaticGain): the rate rule's batch is ``gain_batch``
# presentations, during which every change waits in ``elig`` and the weights stay as they are. At the
# batch's last step each neuron's gain rises to the largest pending change of its synapses (and its rate
# factor is taken from its weights), then the changes are applied divided by the gain. The gain decays
# with time constant ``gain_tau`` presentations (not during the silent padding presentations).
GAIN_EQS = """
dgain/dt = -gate * gain / (gain_tau * t_present) : 1
gain_tau : 1 (shared)
gain_batch : 1 (shared)
"""
#: the last step of a batch: of its last presentation, or of the stream's
BATCH_END = ("gate > 0.5 and t - t_on > t_present - 1.5 * dt and (int(t / t_present) % gain_batch == gain_batch - 1 "
             "or present_gate(t + 1.5 * dt) < 0.5)")
#: the rule's change per spike without its rate (``lr * lrfac``), which a gained layer applies at the batch's
#: end: ``D_ki`` of the rate rule per spike, its expectation over a presentation ``y_k (x_i - u_k w_ki)``
GAIN_RAW = "learning_post * (a_pre - u_post * w) / (rate * t_learn)"
#: a gained layer's signed changes add up in ``pending`` instead of changing ``w``
GAIN_HOLD = "pending += dw_rule"
GAIN_UP = """
gain_post = clip(abs(pending) + 1e-30, gain_post, inf)
lrfac_post = (abs(sqrt(wsq_post) - 1) + 1e-10)**lr_power_post
"""
GAIN_APPLY_DW = "dw_rule = lr_post * lrfac_post * pending / gain_post\npending = 0"
FLOAT_APPLY = """
wsq_post += dw_rule * (2 * w + dw_rule)
w += dw_rule
"""
BIAS_ON_POST = "beta_post += (w - w_before) * b_pre"
INPUT_RECORD_EQS = "record_inputs : 1 (shared)"


def decaying(biased: bool) -> str:
    """The variable the input events move and the step decays: ``u`` itself, or ``v`` of ``u = beta + v``."""
    return "v" if biased else "u"


@dataclass(frozen=True)
class SynapseCode:
    """How a plastic event changes a synapse: extra synaptic variables and the code that turns the
    rule's change ``dw_rule`` into the new ``w`` (and keeps ``wsq_post`` up to date). The default is
    float weights; :mod:`snn.device_events` gives the device models' code."""

    name: str = "float"
    equations: str = ""
    apply: str = FLOAT_APPLY
    post_equations: str = ""


FLOAT_SYNAPSE = SynapseCode()


def output_code(biased: bool, wta: str, synapse: SynapseCode = FLOAT_SYNAPSE, gain: bool = False) -> dict[str, str]:
    """The output population's code for plain or biased inputs, a ``wta`` mode, a synapse and, if ``gain``,
    a homeostatic gain (composed from the pieces above)."""
    d = decaying(biased)
    def applied(change: str) -> str:
        return "\n".join([change, "w_before = w" if biased else "", synapse.apply, BIAS_ON_POST if biased else ""])
    def signed(change: str) -> str:  # a signed change: held for the batch's end (gain), else applied
        return "\n".join([change.replace(RULE_RAW, GAIN_RAW), GAIN_HOLD]) if gain else applied(change)
    on_post = {"post": signed(RULE_DW[wta])}
    if wta == "circuit":
        on_post["flush"] = signed(FLUSH_DW)
    if gain:
        on_post.update(gain=GAIN_UP, batch=applied(GAIN_APPLY_DW))
    return {"step": f"{d} = {d} * decay\n{OUTPUT_DRIVE[wta]}",
            "onset": f"{d} = 0\nt_on = t\ngate = present_gate(t + 0.5 * t_present)" + ONSET[wta],
            "on_pre": f"{d}_post += w * ev_pre",
            "on_post": on_post,
            "threshold": OUTPUT_THRESHOLD[wta],
            "events": {**({"flush": FLUSH} if wta == "circuit" else {}), **({"batch_end": BATCH_END} if gain else {})},
            "equations": OUTPUT_EQS + WTA_EQS[wta] + PREACTIVATION[biased] + "\n" + synapse.post_equations
                         + (GAIN_EQS if gain else "")}


def circuit_text(biased: bool, wta: str, synapse: SynapseCode = FLOAT_SYNAPSE, gain: bool = False) -> str:
    """All the code of the output side (part of a layer's build-cache key)."""
    parts = output_code(biased, wta, synapse, gain)
    code = [*(v for part in parts.values() if part
              for v in (part.values() if isinstance(part, dict) else [part]))]
    inhibition = ([NORMALISER_EQS, TO_NORMALISER] if wta == "ideal" else
                  [INHIBITORY_EQS, INHIBITORY_THRESHOLD, INHIBITORY_RESET, TO_INHIBITORY, INHIBITION_EQS,
                   INHIBITION_ON_PRE, CLAIM, GATE_EQS, TO_GATE, FROM_GATE])
    return "\n".join([*code, OUTPUT_RESET, OUTPUT_RECORDED, synapse.equations, *inhibition])


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
        """The inputs' code (part of a layer's build-cache key)."""
        return "\n".join([self.equations, self.threshold, self.reset, self.onset])


class WTANetwork:
    """The Brian2 objects of one layer: one group per population, one ``Synapses`` per projection, the
    count sampler and the event recorders.

    ``timed``: the values of the model's ``TimedArray`` s plus ``present_gate`` (one value per
    presentation of the run; placeholders when the standalone project is built, set again by every
    run); ``constants``: the input model's namespace; ``synapse``: the plastic synapses' code.
    """

    def __init__(self, model: InputModel, n_in: int, n_out: int, params: SpikingParams, timed: dict,
                 constants: dict, synapse: SynapseCode = FLOAT_SYNAPSE, gain: bool = False):
        p, prefix = params, model.prefix
        out = output_code(model.biased, p.wta, synapse, gain)
        self.n_in, self.n_out, self.wta = n_in, n_out, p.wta
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
        events = {"recorded": OUTPUT_RECORDED, **out["events"]}
        if p.wta == "circuit":
            events.update(claim=CLAIM)
        self.outputs = NeuronGroup(n_out, out["equations"], threshold=out["threshold"], reset=OUTPUT_RESET,
                                   events=events, method="exact", name=f"{prefix}_outputs", order=0)
        self.outputs.thresholder["recorded"].when = "after_resets"
        self.outputs.t_spike = -1 * second
        self.outputs.run_regularly(out["onset"], dt=p.t_present, when="start", name=f"{prefix}_outputs_onset")
        # u decays, (circuit) h drifts, ex = exp(t u (- h)) (order 0 of the 'groups' slot, where a state
        # updater would run); (ideal) then Z = sum_l ex_l, then Z2 = sum_l p_l^s, read back as linked variables
        self.outputs.run_regularly(out["step"], when="groups", order=0, name=f"{prefix}_outputs_step")
        if p.wta == "ideal":
            self.inhibition = NeuronGroup(1, NORMALISER_EQS, name=f"{prefix}_inhibition")
            self.to_inh = Synapses(self.outputs, self.inhibition, TO_NORMALISER, name=f"{prefix}_to_inh")
            self.to_inh.connect()
            self.to_inh.summed_updaters["Zsum_post"].order = 1
            self.to_inh.summed_updaters["Z2sum_post"].order = 2
            self.outputs.Z = linked_var(self.inhibition, "Zsum", index=np.zeros(n_out, dtype=int))
            self.outputs.Z2 = linked_var(self.inhibition, "Z2sum", index=np.zeros(n_out, dtype=int))
            inhibitory = [self.inhibition, self.to_inh]
            self.inhibitory_monitor = self.claim_monitor = None
        else:
            n_inh = min(p.n_inhibitory, n_out)
            self.inhibition = NeuronGroup(n_inh, INHIBITORY_EQS, threshold=INHIBITORY_THRESHOLD, reset=INHIBITORY_RESET,
                                          events={"recorded": f"record_inhibitory > 0.5 and {INHIBITORY_THRESHOLD}"},
                                          name=f"{prefix}_inhibition")
            self.to_inh = Synapses(self.outputs, self.inhibition, on_pre=TO_INHIBITORY, delay=p.inhibition_delay,
                                   name=f"{prefix}_to_inh")
            self.to_inh.connect(i=np.arange(n_out), j=np.arange(n_out) % n_inh)  # neuron k -> inhibitory k mod n
            self.from_inh = Synapses(self.inhibition, self.outputs, INHIBITION_EQS, on_pre=INHIBITION_ON_PRE,
                                     name=f"{prefix}_from_inh")
            self.from_inh.connect()
            self.inhibitory_monitor = EventMonitor(self.inhibition, "recorded", name=f"{prefix}_inhibitory_spikes")
            # the race for the winner: claims reach one gate neuron, whose spike tells every neuron it is decided
            self.outputs.run_on_event("claim", "claimed = 1")
            self.outputs.run_on_event("flush", "flushed = 1")  # once per presentation
            self.gate = NeuronGroup(1, GATE_EQS, threshold="v_gate > 0.5", reset="v_gate = 0", name=f"{prefix}_gate")
            self.to_gate = Synapses(self.outputs, self.gate, on_pre=TO_GATE, on_event="claim", name=f"{prefix}_to_gate")
            self.to_gate.connect()
            self.from_gate = Synapses(self.gate, self.outputs, on_pre=FROM_GATE, name=f"{prefix}_from_gate")
            self.from_gate.connect()
            self.claim_monitor = EventMonitor(self.outputs, "claim", name=f"{prefix}_claims")
            inhibitory = [self.inhibition, self.to_inh, self.from_inh, self.inhibitory_monitor, self.gate, self.to_gate,
                          self.from_gate, self.claim_monitor]
        pathway_events = {"post": "spike", "flush": "flush", "gain": "batch_end", "batch": "batch_end"}
        self.synapses = Synapses(self.inputs, self.outputs, SYNAPSE_EQS + "\n" + synapse.equations
                                 + ("\nelig : 1" if p.wta == "circuit" else "") + ("\npending : 1" if gain else ""),
                                 on_pre=out["on_pre"], on_post=out["on_post"],
                                 on_event={"pre": "spike", **{name: pathway_events[name] for name in out["on_post"]}},
                                 name=f"{prefix}_synapses")
        # in one step: a spike's change, the race's flush, then (gain) the batch's gain and its changes
        for order, name in enumerate(out["on_post"]):
            pathway = getattr(self.synapses, name)
            pathway.when, pathway.order = "after_resets", order
        # explicit order: synapse index = i * n_out + k, so w.reshape(n_in, n_out).T is (K, n_in)
        self.synapses.connect(i=np.repeat(np.arange(n_in), n_out), j=np.tile(np.arange(n_out), n_in))
        # the cumulative count of each neuron, sampled before every onset
        self.count_monitor = StateMonitor(self.outputs, "count", record=True, dt=p.t_present, when="start",
                                          order=-1, name=f"{prefix}_counts")
        self.spike_monitor = EventMonitor(self.outputs, "recorded", variables=["spk_sign"], name=f"{prefix}_spikes")
        self.input_monitor = EventMonitor(self.inputs, "recorded", name=f"{prefix}_input_events")
        self.network = Network(self.inputs, self.outputs, *inhibitory, self.synapses, self.count_monitor,
                               self.spike_monitor, self.input_monitor, name=f"{prefix}_network")

    def variable(self, key: str):
        """``"outputs.wsq"`` -> the Brian2 variable view ``self.outputs.wsq``."""
        group, name = key.split(".")
        return getattr(getattr(self, group), name)

    def set(self, key: str, value) -> None:
        """Set the state variable ``"group.name"`` (runtime backend)."""
        group, name = key.split(".")
        setattr(getattr(self, group), name, value)

    def get(self, key: str) -> np.ndarray:
        """The values of the state variable ``"group.name"`` at the end of the last run."""
        return np.asarray(self.variable(key)[:], dtype=np.float64).copy()

    def weights(self) -> np.ndarray:
        """``(K, n_in)`` weights at the end of the last run."""
        return self.get("synapses.w").reshape(self.n_in, self.n_out).T.copy()

    def counts(self, n: int) -> np.ndarray:
        """Spikes ``(n, K)`` of each neuron in each of the first ``n`` presentations of the last run."""
        before = np.asarray(self.count_monitor.count[:]).T  # (presentations, K): cumulative, before each onset
        total = np.asarray(self.outputs.count[:])[None]
        return np.rint(np.diff(np.concatenate([before, total])[:n + 1], axis=0)).astype(np.int64)

    @staticmethod
    def events(monitor) -> tuple[np.ndarray, np.ndarray]:
        """``(index, time in seconds)`` of a recorder's events in the last run (empty without a recorder)."""
        if monitor is None:
            return np.zeros(0, np.int64), np.zeros(0)
        return np.asarray(monitor.i[:], dtype=np.int64), np.asarray(monitor.t[:] / second, dtype=np.float64)


__all__ = ["InputModel", "WTANetwork", "WTA_MODES", "SynapseCode", "FLOAT_SYNAPSE", "output_code", "circuit_text",
           "decaying", "DRIVE", "OUTPUT_THRESHOLD"]
