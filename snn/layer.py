r"""A SoftHebb layer as a Brian2 spiking population (one patch per presentation, shared weights).

Model (all equations below; constants in :class:`snn.params.SpikingParams`):

* **Inputs** (``n_in`` pixels of a patch, signed standardised values ``x_i``). Each pixel is an ON/OFF
  pair: ON events at rate ``r0 max(x_i, 0)``, OFF events at ``r0 max(-x_i, 0)``. A pixel's value is
  constant during a presentation, so at most one of the two is active and both are one Brian2 neuron
  whose events carry the sign ``sign(x_i)``: at most one event per step, with probability
  ``q_i = r0 |x_i| dt < 1`` (a Bernoulli sequence). The signed trace ``a_i`` decays with ``tau`` and
  jumps by ``sign(x_i) / (r0 tau)`` per event: ``E[a_i] = x_i``. The sequence is generated event by
  event: after each event the input draws the number of steps to its next one from the geometric
  law of that Bernoulli sequence, ``ceil(log U / log(1 - q_i))``, so an input costs one comparison
  per step and one random number per event.
* **Onset burst** (``onset_burst=True``, default): in the first step of a presentation every pixel
  sends one graded event of size ``x_i`` that sets its trace to ``x_i`` and adds ``w_ki x_i`` to ``u_k``.
  The traces and ``u`` thus start at their stationary means instead of rising as ``1 - e^{-t/tau}``
  (without it, a window starting at ``t_blank = tau`` sees traces at 63-92 % of ``x`` and the decay
  term ``u w`` at 40-85 %: the learned norms come out ~20 % too large). With ``onset_burst=False`` the
  model is pure ON/OFF Poisson and ``t_blank`` should be >= 4 tau.
* **Pre-activation** without a per-step sum over synapses: each input event adds
  ``sign(x_i) w_ki / (r0 tau)`` to ``u_k``, which decays with the same ``tau``, so ``u_k = w_k . a``.
* **Soft WTA**: output ``k`` fires with probability ``R p_k dt`` per step,
  :math:`p_k = e^{t u_k} / Z`, :math:`Z = \sum_l e^{t u_l}` summed in one inhibitory unit and copied back
  (the population fires at total rate ``R``; a neuron's share of the spikes is ``softmax(t u)``).
  ``e^{t u_k}`` is computed once per step, with the decay of ``u``, and shared by everything below.
* **Winner flag**: a second, sharp normaliser :math:`Z_2 = \sum_l p_l^s` (``s = 30``); neuron ``k`` is
  the winner when :math:`p_k^s > Z_2 / 2`, i.e. when it holds the argmax of ``u`` (all three from the
  same step's ``u``, before that step's input events).
* **Plasticity** on each output spike of neuron ``k``, for each synapse ``i``:

  .. math:: \Delta w_{ki} = \frac{\eta\,(|\,\|w_k\| - 1| + 10^{-10})^q}{R\,T_{learn}}\,
            \sigma_k\,(a_i - u_k w_{ki}),\qquad \sigma_k = \pm 1 \text{ (winner / not)}

  Neuron ``k`` fires ``R y_k T_learn`` times on average in the learning window, so the expected
  change per presentation is ``eta_k y~_k (x - u_k w_k)``: the rate rule of
  :mod:`rate_decoder.rules` with ``normalisation="none"`` (the global max-normalisation is not local).
  ``|w_k|^2`` is kept up to date incrementally in the same synaptic code and ``eta_k`` is refreshed in
  the neuron's reset, right after its own update.
* **Presentation**: every ``t_present`` the inputs load the next patch, traces and ``u`` restart (from
  the onset burst); no output spikes during the first ``t_blank``.
* The input trace is evaluated lazily, ``a = a_last exp(-(t - t_last) / tau)`` (no per-step update of
  the inputs); ``Z`` and ``Z2`` reach the outputs as linked variables; the synapses' ``on_post`` runs
  after the resets, where each spiking neuron fixes its sign and ``eta_k`` from the pre-update state.
* Spike counts per presentation come from a cumulative count per neuron sampled once per
  presentation; every spike is recorded only with ``record_spikes=True``.

Per step the compiled code runs one comparison per input, one ``exp`` per output neuron and two
sums over the outputs (``Z``, ``Z2``); per input event ``K`` additions to ``u``; per output spike
``n_in`` weight updates. (The first version drew a random number per input per step, evaluated
``exp(t u)`` three times per neuron per step and monitored every spike; speeds in the README.)

Backends: ``"cpp_standalone"`` (compiled once per structure into a cache directory, re-run with new
inputs, weights and plasticity values through ``run_args``) and ``"runtime"`` (numpy, for small tests).
"""
from __future__ import annotations

import gc
import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from brian2 import (Network, NeuronGroup, SpikeMonitor, StateMonitor, Synapses, TimedArray, defaultclock, device,
                    get_device, linked_var, prefs, second, set_device)

from .params import SpikingParams

# --- model equations (Brian2 strings; values come from the namespace, never pasted in) -------------
# Inputs are event-driven: instead of a Bernoulli draw per step, each input holds the time of its next
# event, drawn after every event from the geometric distribution of the number of steps to the next
# success of a Bernoulli(q = r0 |x| dt) sequence (the same law, one random number per event instead of
# one per step). ``ev`` is the size of the next event as seen by ``u`` (``x`` for the onset burst,
# ``sign(x) / (r0 tau)`` after it) and ``da`` its jump of the trace (0 for the burst: the onset sets it).
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
INPUT_RESET = f"a_last = a + da; t_last = t; ev = sign(x) / (r0 * tau); da = ev; t_next = t + dt * {STEPS_TO_NEXT}"
INPUT_ONSET = ("x = stimulus(t + 0.5 * t_present, i); a_last = burst * x; t_last = t; "
               "inv_log_q = 1 / (log(1 - r0 * abs(x) * dt) - 1e-30); "
               "ev = burst * x + (1 - burst) * sign(x) / (r0 * tau); da = (1 - burst) * ev; "
               f"t_next = t + (1 - burst) * dt * ({STEPS_TO_NEXT} - 1)")

# ``u`` decays by exp(-dt / tau) per step and ``ex = exp(t u)`` is computed in the same code (one
# per step, no separate state updater); ``ex`` is shared by Z, Z2, the threshold and the winner flag.
OUTPUT_EQS = """
u : 1
ex : 1
Z : 1 (linked)
Z2 : 1 (linked)
p = ex / Z : 1
winner = int(p**sharpness > 0.5 * Z2) : 1
wsq : 1
lrfac : 1
spk_sign : 1
count : 1
t_on : second
inv_temp : 1 (shared)
lr : 1 (shared)
lr_power : 1 (shared)
anti : 1 (shared)
"""
OUTPUT_STEP = "u = u * decay; ex = exp(inv_temp * u)"
OUTPUT_THRESHOLD = "(t - t_on > t_blank - 0.5 * dt) and (rand() * Z < rate * dt * ex)"
# The reset runs before the synapses' on_post (moved to 'after_resets'): it fixes the sign and eta_k
# of this spike's update from the pre-update state.
OUTPUT_RESET = """
spk_sign = 1 - 2 * anti * (1 - winner)
lrfac = (abs(sqrt(wsq) - 1) + 1e-10)**lr_power
count += 1
"""
OUTPUT_ONSET = "u = 0; t_on = t"
INHIBITION_EQS = """
Zsum : 1
Z2sum : 1
"""
TO_INHIBITION = """
Zsum_post = ex_pre : 1 (summed)
Z2sum_post = (ex_pre / Zsum_post)**sharpness : 1 (summed)
"""

SYNAPSE_EQS = "w : 1"
SYNAPSE_ON_PRE = "u_post += w * ev_pre"
SYNAPSE_ON_POST = """
dw = lr_post * lrfac_post * spk_sign_post * (a_pre - u_post * w) / (rate * t_learn)
wsq_post += dw * (2 * w + dw)
w += dw
"""
#: changes whenever the equations do (part of the build-cache key)
MODEL_VERSION = hashlib.sha1("\n".join([INPUT_EQS, INPUT_THRESHOLD, INPUT_RESET, INPUT_ONSET, OUTPUT_EQS, OUTPUT_STEP,
                                        OUTPUT_THRESHOLD, OUTPUT_RESET, OUTPUT_ONSET, TO_INHIBITION, SYNAPSE_ON_PRE,
                                        SYNAPSE_ON_POST]).encode()).hexdigest()[:8]

BACKENDS = ("cpp_standalone", "runtime")
RULE_SIGNS = {"softhebb": 1.0, "soft": 0.0}


class CompilerNotFoundError(RuntimeError):
    """The C++ standalone backend needs a C++ compiler."""


def cache_dir() -> Path:
    """Root of the standalone build directories (``$SOFTHEBB_SNN_CACHE`` or ``~/.cache/softhebb/snn``)."""
    return Path(os.environ.get("SOFTHEBB_SNN_CACHE", Path.home() / ".cache" / "softhebb" / "snn"))


def check_compiler() -> str:
    """Path of the C++ compiler Brian2 will call; a clear error if there is none."""
    candidates = [os.environ.get("CXX"), "g++", "c++", "clang++"]
    for c in candidates:
        if c and shutil.which(c):
            return shutil.which(c)
    raise CompilerNotFoundError(
        "the cpp_standalone backend needs a C++ compiler (g++ or clang++) on PATH, none was found; "
        "install one (e.g. `apt-get install g++`) or use backend='runtime' for small networks")


@dataclass
class Presentation:
    """What one call of :meth:`SpikingSoftHebb.present` returns.

    Attributes:
        counts: ``(n_patches, K)`` output spikes of each neuron in each presentation's learning window.
        weights: ``(K, n_in)`` weights after the last presentation.
        spike_i, spike_t: all output spikes (neuron index, time in seconds from the call's start); empty
            unless the layer was made with ``record_spikes=True``.
    """

    counts: np.ndarray
    weights: np.ndarray
    spike_i: np.ndarray
    spike_t: np.ndarray


def norm_factor(weights: np.ndarray, power: float) -> np.ndarray:
    """``(| |w_k| - 1 | + 1e-10)^q`` per neuron (the state ``lrfac`` of the output group)."""
    return (np.abs(np.linalg.norm(weights, axis=1) - 1.0) + 1e-10) ** power


class _Net:
    """The Brian2 objects of one layer for ``n_chunk`` presentations (placeholders for the inputs)."""

    def __init__(self, n_in, n_out, n_chunk, params: SpikingParams, stimulus: np.ndarray,
                 record_spikes: bool = False):
        p = params
        self.namespace = dict(r0=p.input_rate, rate=p.output_rate, tau=p.tau, t_blank=p.t_blank,
                              t_present=p.t_present, t_learn=p.t_learn, sharpness=float(p.winner_sharpness),
                              burst=float(p.onset_burst), decay=float(np.exp(-p.dt / p.tau)))
        self.stimulus = TimedArray(stimulus, dt=p.t_present, name="snn_stimulus")
        self.namespace["stimulus"] = self.stimulus
        self.inputs = NeuronGroup(n_in, INPUT_EQS, threshold=INPUT_THRESHOLD, reset=INPUT_RESET,
                                  method="exact", name="snn_inputs", order=0)
        self.inputs.run_regularly(INPUT_ONSET, dt=p.t_present, when="start", name="snn_inputs_onset")
        self.outputs = NeuronGroup(n_out, OUTPUT_EQS, threshold=OUTPUT_THRESHOLD, reset=OUTPUT_RESET,
                                   method="exact", name="snn_outputs", order=0)
        self.outputs.run_regularly(OUTPUT_ONSET, dt=p.t_present, when="start", name="snn_outputs_onset")
        # u decays and ex = exp(t u) (order 0 in the 'groups' slot, where a state updater would run),
        # then Z = sum_l ex_l, then Z2 = sum_l p_l^s, read back by the outputs as linked variables
        # (probe pitfall 3: the summed updaters must run after the update of u).
        self.outputs.run_regularly(OUTPUT_STEP, when="groups", order=0, name="snn_outputs_step")
        self.inhibition = NeuronGroup(1, INHIBITION_EQS, name="snn_inhibition")
        self.to_inh = Synapses(self.outputs, self.inhibition, TO_INHIBITION, name="snn_to_inh")
        self.to_inh.connect()
        self.to_inh.summed_updaters["Zsum_post"].order = 1
        self.to_inh.summed_updaters["Z2sum_post"].order = 2
        self.outputs.Z = linked_var(self.inhibition, "Zsum", index=np.zeros(n_out, dtype=int))
        self.outputs.Z2 = linked_var(self.inhibition, "Z2sum", index=np.zeros(n_out, dtype=int))
        self.synapses = Synapses(self.inputs, self.outputs, SYNAPSE_EQS, on_pre=SYNAPSE_ON_PRE,
                                 on_post=SYNAPSE_ON_POST, name="snn_synapses")
        self.synapses.post.when = "after_resets"
        # Explicit order: synapse index = i * n_out + k, so w.reshape(n_in, n_out).T is (K, n_in).
        self.synapses.connect(i=np.repeat(np.arange(n_in), n_out), j=np.tile(np.arange(n_out), n_in))
        # Spike counts per presentation: the cumulative count of each neuron, sampled at every onset
        # (before it), instead of a monitor that stores every spike.
        self.count_monitor = StateMonitor(self.outputs, "count", record=True, dt=p.t_present, when="start",
                                          order=-1, name="snn_counts")
        objects = [self.inputs, self.outputs, self.inhibition, self.to_inh, self.synapses, self.count_monitor]
        self.monitor = None
        if record_spikes:
            self.monitor = SpikeMonitor(self.outputs, name="snn_spikes")
            objects.append(self.monitor)
        self.network = Network(*objects, name="snn_network")

    def counts(self, n: int) -> np.ndarray:
        """Spikes ``(n, K)`` of each neuron in each of the first ``n`` presentations of the last run."""
        before = np.asarray(self.count_monitor.count[:]).T  # (presentations, K): cumulative, before each onset
        total = np.asarray(self.outputs.count[:])[None]
        cumulative = np.concatenate([before, total])[:n + 1]
        return np.rint(np.diff(cumulative, axis=0)).astype(np.int64)


_ACTIVE_STANDALONE: list = [None]  # the layer whose project the standalone device currently holds


class SpikingSoftHebb:
    """``K`` SoftHebb neurons with one shared weight set, learning from a stream of patches.

    Args:
        n_inputs: patch size ``C*k*k`` (25 for a 5x5 MNIST patch, 75 for RGB).
        n_neurons: ``K``.
        params: structural constants (:class:`snn.params.SpikingParams`).
        inverse_temperature, lr, lr_power, rule: ``t``, ``eta``, ``q``, ``"softhebb"`` or ``"soft"``;
            run-time values (changeable between calls without recompiling).
        threads: OpenMP threads of the compiled standalone code (Brian2 ``openmp_threads``; 1 = none).
        synapse: a device model (``hardware_models``) holding the weights; see :meth:`attach_synapse`.
        chunk: presentations per compiled run; longer streams are cut into chunks, shorter ones padded
            with zero patches (which change no weight: the traces and ``u`` stay 0).
        backend: ``"cpp_standalone"`` or ``"runtime"``.
        weights: initial ``(K, n_in)`` weights (default normal, norm ``radius`` in expectation).
        record_spikes: also record every output spike (``Presentation.spike_i`` / ``spike_t``); the
            counts per presentation are always returned and cost less (one sample per presentation).

    Example::

        >>> layer = SpikingSoftHebb(25, 4, chunk=4, backend="runtime", seed=0)
        >>> out = layer.present(np.zeros((4, 25)), learn=False)
        >>> out.counts.shape, out.weights.shape
        ((4, 4), (4, 25))
    """

    def __init__(self, n_inputs: int, n_neurons: int, params: SpikingParams | None = None,
                 inverse_temperature: float = 1.0, lr: float = 1e-3, lr_power: float = 0.5,
                 rule: str = "softhebb", chunk: int = 1000, backend: str = "cpp_standalone",
                 weights: np.ndarray | None = None, radius: float = 25.0, seed: int | None = None,
                 build_dir: str | os.PathLike | None = None, synapse=None, threads: int = 1,
                 record_spikes: bool = False):
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
        if rule not in RULE_SIGNS:
            raise ValueError(f"unknown rule {rule!r} for the spiking layer; choose one of {tuple(RULE_SIGNS)}")
        self.n_inputs, self.n_neurons, self.chunk = int(n_inputs), int(n_neurons), int(chunk)
        if int(threads) < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.threads = int(threads)
        self.record_spikes = bool(record_spikes)
        self.params = params if params is not None else SpikingParams()
        self.inverse_temperature, self.lr, self.lr_power, self.rule = float(inverse_temperature), float(lr), float(lr_power), rule
        self.backend = backend
        rng = np.random.default_rng(seed)
        if weights is None:
            weights = rng.standard_normal((self.n_neurons, self.n_inputs)) * radius / np.sqrt(self.n_inputs)
        self.weights = self._check_weights(weights)
        self.build_dir = Path(build_dir) if build_dir is not None else cache_dir() / self._key()
        self.compile_seconds = 0.0
        self._net = None
        if backend == "cpp_standalone":
            check_compiler()
        self.attach_synapse(synapse)

    def attach_synapse(self, synapse) -> None:
        """Hold the weights in a synaptic device model (``hardware_models.make_synapse``; ``None``: exact).

        The device is programmed with the change the plastic events made over each run of ``chunk``
        presentations (pulse counts by stochastic rounding, so the expected change is kept), and
        the next run starts from the weights read back, with the device's noise and bounds. Each
        plastic event of the Brian2 network stays a float update inside its run; a smaller ``chunk``
        programs the device more often (one presentation at ``chunk=1``), at the cost of one
        standalone run per chunk.
        """
        self.synapse = synapse
        if synapse is not None:
            import torch
            self.weights = synapse.attach(torch.from_numpy(self.weights.copy())).numpy().astype(np.float64)

    def _check_weights(self, weights) -> np.ndarray:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (self.n_neurons, self.n_inputs):
            raise ValueError(f"weights must have shape {(self.n_neurons, self.n_inputs)}, got {w.shape}")
        return w.copy()

    def _key(self) -> str:
        text = (f"{self.n_inputs};{self.n_neurons};{self.chunk};{self.threads};{self.record_spikes};"
                f"{self.params.key()};{MODEL_VERSION}")
        return f"layer_{self.n_inputs}x{self.n_neurons}_c{self.chunk}_" + hashlib.sha1(text.encode()).hexdigest()[:10]

    def __repr__(self) -> str:
        return (f"SpikingSoftHebb({self.n_inputs}, {self.n_neurons}, inverse_temperature={self.inverse_temperature}, "
                f"lr={self.lr}, lr_power={self.lr_power}, rule={self.rule!r}, backend={self.backend!r})")

    # --- standalone build --------------------------------------------------------------------------
    def build(self) -> float:
        """Generate and compile the standalone project (once per process and structure); returns seconds."""
        import time
        if self.backend != "cpp_standalone":
            return 0.0
        if (_ACTIVE_STANDALONE[0] is self and self._net is not None
                and get_device().__class__.__name__ == "CPPStandaloneDevice"):
            return 0.0
        check_compiler()
        start = time.perf_counter()
        # Standalone mode needs unique names among all live Brian2 objects: drop the previous project's.
        previous = _ACTIVE_STANDALONE[0]
        if previous is not None:
            previous._net = None
        self._net = None
        _ACTIVE_STANDALONE[0] = None
        gc.collect()
        # OpenMP threads of the generated code (1: none); compiled in, hence part of the cache key
        prefs.devices.cpp_standalone.openmp_threads = self.threads if self.threads > 1 else 0
        set_device("cpp_standalone", build_on_run=False, directory=str(self.build_dir))
        device.reinit()  # forget the previous project (its objects and arrays)
        device.activate(build_on_run=False, directory=str(self.build_dir))
        defaultclock.dt = self.params.dt
        placeholder = np.zeros((self.chunk, self.n_inputs))
        self._net = _Net(self.n_inputs, self.n_neurons, self.chunk, self.params, placeholder, self.record_spikes)
        self._net.network.run(self.chunk * self.params.t_present, namespace=self._net.namespace)
        try:
            device.build(directory=str(self.build_dir), compile=True, run=False, with_output=False)
        except Exception as err:  # make / compiler failure: say where
            raise RuntimeError(f"building the Brian2 standalone project in {self.build_dir} failed: {err}") from err
        _ACTIVE_STANDALONE[0] = self
        self.compile_seconds = time.perf_counter() - start
        return self.compile_seconds

    def _run_values(self, learn: bool) -> dict:
        return dict(inv_temp=self.inverse_temperature, lr=self.lr if learn else 0.0, lr_power=self.lr_power,
                    anti=RULE_SIGNS[self.rule])

    def _run_chunk(self, stim: np.ndarray, learn: bool):
        values = self._run_values(learn)
        w_syn = self.weights.T.reshape(-1)  # synapse order i * K + k
        if self.backend == "cpp_standalone":
            self.build()
            net = self._net
            args = {net.stimulus: stim, net.synapses.w: w_syn,
                    net.outputs.wsq: (self.weights ** 2).sum(1)}
            for name, value in values.items():
                args[getattr(net.outputs, name)] = value
            device.run(directory=str(self.build_dir), with_output=False, run_args=args)
            for fname in list(device.run_args_arrays):  # per-run input files: do not let them pile up
                for f in Path(self.build_dir, "static_arrays").glob(fname + "*"):
                    f.unlink(missing_ok=True)
        else:
            if get_device().__class__.__name__ != "RuntimeDevice":
                set_device("runtime")
            _ACTIVE_STANDALONE[0] = None  # the standalone project must be set up again before its next run
            prefs.codegen.target = "numpy"
            defaultclock.dt = self.params.dt
            net = _Net(self.n_inputs, self.n_neurons, len(stim), self.params, stim, self.record_spikes)
            net.synapses.w = w_syn
            net.outputs.wsq = (self.weights ** 2).sum(1)
            for name, value in values.items():
                setattr(net.outputs, name, value)
            net.network.run(len(stim) * self.params.t_present, namespace=net.namespace)
        w = np.asarray(net.synapses.w[:]).reshape(self.n_inputs, self.n_neurons).T.copy()
        counts = net.counts(len(stim))
        if net.monitor is not None:
            spikes = np.asarray(net.monitor.i[:], dtype=np.int64), np.asarray(net.monitor.t[:] / second)
        else:
            spikes = np.zeros(0, np.int64), np.zeros(0)
        result = w, counts, spikes
        if self.backend == "runtime":
            del net
            gc.collect()  # free the names of the runtime objects
        return result

    def present(self, patches: np.ndarray, learn: bool = True) -> Presentation:
        """Present ``patches`` ``(n, n_in)`` one after the other (learning if ``learn``).

        The weights carry over from call to call (``self.weights``).
        """
        x = np.asarray(patches, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_inputs:
            raise ValueError(f"patches must have shape (n, {self.n_inputs}), got {x.shape}")
        limit = 1.0 / float(self.params.input_rate * self.params.dt)
        if np.abs(x).max(initial=0.0) >= limit:
            raise ValueError(f"|x| must stay below 1/(r0 dt) = {limit:.3f} (Bernoulli input events)")
        t_present = float(self.params.t_present / second)
        step = self.chunk if self.backend == "cpp_standalone" else max(len(x), 1)
        counts = np.zeros((len(x), self.n_neurons), dtype=np.int64)
        all_i, all_t = [], []
        for start in range(0, len(x), step):
            block = x[start:start + step]
            stim = np.zeros((step, self.n_inputs))
            stim[:len(block)] = block
            w, c, (si, st) = self._run_chunk(stim, learn)
            if self.synapse is not None and learn:
                import torch
                w = self.synapse.program(torch.from_numpy(w - self.weights)).numpy().astype(np.float64)
            self.weights = w
            counts[start:start + len(block)] = c[:len(block)]
            keep = np.floor(st / t_present + 1e-9).astype(np.int64) < len(block)
            all_i.append(si[keep])
            all_t.append(st[keep] + start * t_present)
        cat = (lambda a, dt: np.concatenate(a) if a else np.zeros(0, dt))
        return Presentation(counts, self.weights.copy(), cat(all_i, np.int64), cat(all_t, np.float64))


__all__ = ["SpikingSoftHebb", "Presentation", "CompilerNotFoundError", "check_compiler", "cache_dir",
           "norm_factor", "BACKENDS"]
