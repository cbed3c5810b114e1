"""Building and running a spiking layer's Brian2 network: backends, the standalone project, seeds, chunks.

:class:`PlasticLayer` holds what a layer keeps between runs (weights, plasticity values, a synaptic
device model, its random generator) and simulates a stream of presentations in chunks, each one run
of the network of :mod:`snn.network`:

* ``"cpp_standalone"``: the network of ``chunk`` presentations is generated and compiled once per
  structure into :attr:`PlasticLayer.build_dir` (a cache keyed by sizes, constants and the model's
  code); each run passes the inputs, weights and plasticity values as ``run_args``, so nothing is
  recompiled. The Brian2 device is global: one project is held at a time, and a layer of the same
  structure re-uses it.
* ``"runtime"``: the numpy target, the network built for each call (small tests, no compiler).

**Seeds.** Every run is seeded with a value drawn from the layer's generator (``seed=``): the
standalone binary seeds its random generators from the run-time variable ``rng_seed`` (C++ inserted
after the run arguments are applied), the runtime backend calls Brian2's ``seed``. The same layer
seed thus repeats every spike on a backend, and successive runs of a compiled project draw
different streams (a seed compiled into the binary would repeat one stream in every chunk).
"""
from __future__ import annotations

import gc
import hashlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from brian2 import defaultclock, device, get_device, prefs, second, set_device
from brian2 import seed as brian_seed

from rate_decoder import rules

from . import device_events
from .network import FLOAT_SYNAPSE, InputModel, WTANetwork, circuit_text
from .params import SpikingParams

BACKENDS = ("cpp_standalone", "runtime")
DEVICE_UPDATES = ("event", "chunk")
RULE_SIGNS = {"softhebb": 1.0, "soft": 0.0}
#: the update normalisations a spiking layer implements: none (the raw rule), or a homeostatic gain held by
#: each neuron (the layer-wide ones would need the whole layer's changes before any is applied)
SPIKING_NORMALISATIONS = (rules.NoNormalisation, rules.HomeostaticGain)


class CompilerNotFoundError(RuntimeError):
    """The C++ standalone backend needs a C++ compiler."""


def cache_dir() -> Path:
    """Root of the standalone build directories (``$SOFTHEBB_SNN_CACHE`` or ``~/.cache/softhebb/snn``)."""
    return Path(os.environ.get("SOFTHEBB_SNN_CACHE", Path.home() / ".cache" / "softhebb" / "snn"))


def check_compiler() -> str:
    """Path of the C++ compiler Brian2 will call; a clear error if there is none."""
    for c in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if c and shutil.which(c):
            return shutil.which(c)
    raise CompilerNotFoundError(
        "the cpp_standalone backend needs a C++ compiler (g++ or clang++) on PATH, none was found; "
        "install one (e.g. `apt-get install g++`) or use backend='runtime' for small networks")


@dataclass
class Presentation:
    """What a layer's ``present`` returns.

    Attributes:
        counts: ``(n, K)`` output spikes of each neuron in each presentation's learning window.
        weights: ``(K, n_in)`` weights after the last presentation.
        spike_i, spike_t: output spikes (neuron, seconds from the call's start); empty unless recorded.
        input_i, input_t: input events, the onset event of each presentation included; empty unless recorded.
        spike_sign: the sign each recorded output spike's update took (+1 Hebbian, -1 anti-Hebbian; 0 where a
            circuit's race stayed undecided and the presentation's changes were dropped).
        inhibitory_t: spikes of the inhibitory neurons (circuit), seconds; empty unless output spikes are recorded.
    """

    counts: np.ndarray
    weights: np.ndarray
    spike_i: np.ndarray
    spike_t: np.ndarray
    input_i: np.ndarray
    input_t: np.ndarray
    spike_sign: np.ndarray
    inhibitory_t: np.ndarray


@dataclass
class _Project:
    """The standalone project the Brian2 device holds (one per process: the device is global)."""

    build_dir: Path | None = None
    net: WTANetwork | None = None


_PROJECT = _Project()


def active_network() -> WTANetwork | None:
    """The network of the standalone project the device holds (its state is that of the last run)."""
    return _PROJECT.net
#: C++ run in the generated main(), after the run arguments are applied: seed every random generator
#: from the run-time value ``rng_seed`` (Brian2's seed() would compile one fixed seed into the binary)
SEED_CODE = ("for (size_t _g = 0; _g < brian::_random_generators.size(); _g++)\n"
             "    brian::_random_generators[_g].seed((unsigned long)({array}[0]) + _g);")


def compile_project(build_dir: Path, threads: int, dt, make_network: Callable, duration,
                    finite_math: bool = False) -> None:
    """Generate and compile a standalone project in ``build_dir`` and make it the one the device holds.

    ``make_network()`` creates the Brian2 objects (an object with ``network``, ``namespace`` and a shared
    ``rng_seed`` variable in ``outputs``, or ``seed_variable``); the project simulates ``duration``. Every
    random generator of the binary is seeded from ``rng_seed`` at run time (:data:`SEED_CODE`).

    ``finite_math``: compile without Brian2's ``-fno-finite-math-only``, for a model whose code holds no
    infinity or NaN. GCC then calls glibc's vector ``exp`` in the per-step loops (3-4x faster for the maps'
    escape drive); with that flag it keeps one scalar call per neuron.
    """
    check_compiler()
    _PROJECT.build_dir = _PROJECT.net = None
    directory = str(build_dir)
    prefs.devices.cpp_standalone.openmp_threads = threads if threads > 1 else 0
    set_device("cpp_standalone", build_on_run=False, directory=directory)
    device.reinit()  # forget the previous project, then free its objects' names for this one
    gc.collect()
    device.activate(build_on_run=False, directory=directory)
    defaultclock.dt = dt
    net = make_network()
    seed_variable = getattr(net, "seed_variable", None) or net.outputs.variables["rng_seed"]
    device.apply_run_args()  # the run arguments are applied here, then the seed is taken from them
    device.insert_code("main", SEED_CODE.format(array=device.get_array_name(seed_variable)))
    net.network.run(duration, namespace=net.namespace)
    flags = prefs.codegen.cpp.extra_compile_args_gcc
    if finite_math:
        prefs.codegen.cpp.extra_compile_args_gcc = [f for f in flags if f != "-fno-finite-math-only"]
    try:
        device.build(directory=directory, compile=True, run=False, with_output=False)
    except Exception as err:  # make / compiler failure: say where
        raise RuntimeError(f"building the Brian2 standalone project in {directory} failed: {err}") from err
    finally:
        prefs.codegen.cpp.extra_compile_args_gcc = flags
    _PROJECT.build_dir, _PROJECT.net = Path(build_dir), net


def holds_project(build_dir: Path) -> bool:
    """Whether the standalone device holds the compiled project of ``build_dir``."""
    return (_PROJECT.build_dir == Path(build_dir) and _PROJECT.net is not None
            and get_device().__class__.__name__ == "CPPStandaloneDevice")


def run_project(args: dict) -> None:
    """Run the project the device holds with these run arguments (Brian2 variable or TimedArray -> values)."""
    directory = _PROJECT.build_dir
    device.run(directory=str(directory), with_output=False, run_args=args)
    for fname in list(device.run_args_arrays):  # per-run input files: do not let them pile up
        for f in Path(directory, "static_arrays").glob(fname + "*"):
            f.unlink(missing_ok=True)


class PlasticLayer:
    """``K`` soft-WTA neurons with one plastic weight set behind an input population (base of the layers).

    Subclasses set :attr:`model` and define ``present``, which cuts its stream into chunks for
    :meth:`_present`. Arguments are those of :class:`snn.layer.SpikingSoftHebb`.
    """

    model: InputModel

    def __init__(self, n_inputs: int, n_neurons: int, params: SpikingParams | None = None,
                 inverse_temperature: float = 1.0, lr: float = 1e-3, lr_power: float = 0.5, rule: str = "softhebb",
                 chunk: int = 1000, backend: str = "cpp_standalone", weights: np.ndarray | None = None,
                 radius: float = 25.0, seed: int | None = None, build_dir: str | os.PathLike | None = None,
                 synapse=None, device_updates: str = "event", threads: int = 1,
                 normalisation: str | rules.Normalisation = "none", gain_batch: int = 1):
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
        if rule not in RULE_SIGNS:
            raise ValueError(f"unknown rule {rule!r} for a spiking layer; choose one of {tuple(RULE_SIGNS)}")
        if device_updates not in DEVICE_UPDATES:
            raise ValueError(f"unknown device_updates {device_updates!r}; choose one of {DEVICE_UPDATES}")
        if int(threads) < 1 or int(chunk) < 1:
            raise ValueError(f"threads and chunk must be >= 1, got {threads}, {chunk}")
        self.n_inputs, self.n_neurons = int(n_inputs), int(n_neurons)
        self.chunk, self.threads = int(chunk), int(threads)
        self.params = params if params is not None else SpikingParams()
        self.inverse_temperature, self.lr, self.lr_power, self.rule = (float(inverse_temperature), float(lr),
                                                                       float(lr_power), rule)
        self.normaliser = rules.make_normalisation(normalisation)
        if type(self.normaliser) not in SPIKING_NORMALISATIONS:
            raise ValueError(f"a spiking layer's update normalisation is one of "
                             f"{tuple(cls.name for cls in SPIKING_NORMALISATIONS)}, got {self.normaliser.name!r}")
        if int(gain_batch) != gain_batch or gain_batch < 1:
            raise ValueError(f"gain_batch must be a whole number >= 1, got {gain_batch}")
        self.gain_batch = int(gain_batch)
        if self.gained and self.threads > 1:
            raise ValueError("a homeostatic gain is raised by a max that every synapse writes onto its neuron, which "
                             "the compiled code does in one serial loop: use threads=1")
        if backend == "cpp_standalone" and self.gained and self.chunk % self.gain_batch:
            raise ValueError(f"chunk ({self.chunk}) must be a multiple of gain_batch ({self.gain_batch}): a batch "
                             "may not straddle two runs")
        self.backend = backend
        self.rng = np.random.default_rng(seed)
        if weights is None:
            weights = self.rng.standard_normal((self.n_neurons, self.n_inputs)) * radius / np.sqrt(self.n_inputs)
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (self.n_neurons, self.n_inputs):
            raise ValueError(f"weights must have shape {(self.n_neurons, self.n_inputs)}, got {w.shape}")
        self.weights = w.copy()
        self._build_dir = Path(build_dir) if build_dir is not None else None
        self.compile_seconds = 0.0
        # the inhibitory potential h of every output neuron and the inhibitory neuron's potential (circuit);
        # carried from run to run, h starting where the rate of K neurons with u = 0 is R
        self.inhibition_state = {"outputs.h": np.full(self.n_neurons, np.log(self.n_neurons)),
                                 "inhibition.v_inh": np.zeros(min(self.params.n_inhibitory, self.n_neurons))}
        if backend == "cpp_standalone":
            check_compiler()
        self.attach_synapse(synapse, device_updates)

    def attach_synapse(self, synapse, device_updates: str = "event") -> None:
        """Hold the weights in a synaptic device model (``hardware_models.make_synapse``; ``None``: exact).

        ``device_updates="event"``: the device is programmed at every plastic event inside the
        simulation (:mod:`snn.device_events`; linear and rram). ``"chunk"``: each plastic event stays
        a float update inside its run, and the device is programmed with the change the run of
        ``chunk`` presentations made (pulse counts by stochastic rounding, so the expected change is
        kept); the next run starts from the weights read back, with the device's noise and bounds.
        """
        self.synapse, self.device_updates = synapse, device_updates
        self.synapse_code = FLOAT_SYNAPSE
        if synapse is not None:
            if device_updates == "event":
                self.synapse_code = device_events.event_code(synapse)
            self.weights = synapse.attach(torch.from_numpy(self.weights.copy())).numpy().astype(np.float64)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.n_inputs}, {self.n_neurons}, inverse_temperature="
                f"{self.inverse_temperature}, lr={self.lr}, lr_power={self.lr_power}, rule={self.rule!r}, "
                f"backend={self.backend!r})")

    # --- what subclasses provide -----------------------------------------------------------------
    def _constants(self) -> dict:
        """Namespace values of the input model."""
        return {}

    def _placeholders(self) -> dict:
        """Values of the model's timed arrays for the standalone build (their sizes are compiled in)."""
        raise NotImplementedError

    def _structure(self) -> str:
        """What else is compiled in (part of the build-cache key)."""
        return ""

    # --- build and run ---------------------------------------------------------------------------
    @property
    def build_dir(self) -> Path:
        """The standalone project's directory: given, or a cache entry keyed by everything compiled in."""
        if self._build_dir is not None:
            return self._build_dir
        text = (f"{type(self).__name__};{self.n_inputs};{self.n_neurons};{self.chunk};{self.threads};"
                f"{self.params.key()};{self._structure()};{self.model.text()};"
                f"{circuit_text(self.model.biased, self.params.wta, self.synapse_code, self.gained)}")
        return cache_dir() / (f"{self.model.prefix}_{self.params.wta}_{self.synapse_code.name}_"
                              + ("gain_" if self.gained else "")
                              + f"{self.n_inputs}x{self.n_neurons}_c{self.chunk}_"
                              + hashlib.sha1(text.encode()).hexdigest()[:10])

    def _network(self, timed: dict) -> WTANetwork:
        return WTANetwork(self.model, self.n_inputs, self.n_neurons, self.params, timed, self._constants(),
                          self.synapse_code, self.gained)

    @property
    def gained(self) -> bool:
        """Whether the changes are divided by a homeostatic gain (a state variable of each neuron)."""
        return isinstance(self.normaliser, rules.HomeostaticGain)

    def _gain_states(self) -> dict:
        """The carried gain of every neuron (0 before the first batch: it then takes that batch's magnitude,
        as the rate rule's does), its time constant in presentations, and the batch in presentations."""
        if not self.gained:
            return {}
        g = self.normaliser.gain.numpy()
        return {"outputs.gain": g if g.shape == (self.n_neurons,) else np.zeros(self.n_neurons),
                "outputs.gain_tau": self.normaliser.tau * self.gain_batch, "outputs.gain_batch": self.gain_batch}

    def build(self) -> float:
        """Generate and compile the standalone project, unless the device holds it already; returns seconds.

        A project is compiled once per structure into :attr:`build_dir`: another layer of the same
        structure, in this process or a later one, re-runs it without compiling.
        """
        if self.backend != "cpp_standalone":
            return 0.0
        if holds_project(self.build_dir):
            return 0.0
        start = time.perf_counter()
        compile_project(self.build_dir, self.threads, self.params.dt, lambda: self._network(
            dict(self._placeholders(), present_gate=np.ones(self.chunk))), self.chunk * self.params.t_present)
        self.compile_seconds = time.perf_counter() - start
        return self.compile_seconds

    def _run(self, timed: dict, states: dict, n_chunk: int) -> WTANetwork:
        """One simulation of ``n_chunk`` presentations with these timed arrays and initial state variables."""
        if self.backend == "cpp_standalone":
            self.build()
            net = _PROJECT.net
            args = {net.timed[name]: value for name, value in timed.items()}
            args.update({net.variable(key): value for key, value in states.items()})
            run_project(args)
            return net
        if get_device().__class__.__name__ != "RuntimeDevice":
            set_device("runtime")
        _PROJECT.build_dir = _PROJECT.net = None  # the standalone device must set its project up again
        prefs.codegen.target = "numpy"
        defaultclock.dt = self.params.dt
        net = self._network(timed)
        for key, value in states.items():
            net.set(key, value)
        brian_seed(int(states["outputs.rng_seed"]))
        net.network.run(n_chunk * self.params.t_present, namespace=net.namespace)
        return net

    def _present(self, n: int, chunk_inputs: Callable, learn: bool, record_spikes: bool,
                 record_inputs: bool) -> Presentation:
        """Run ``n`` presentations chunk by chunk; the weights carry over from call to call.

        ``chunk_inputs(start, m, size) -> (m, timed, states)``: the model's timed arrays (and extra
        initial states) for presentations ``start .. start + m`` padded to ``size``; it may shorten ``m``.
        """
        size = self.chunk if self.backend == "cpp_standalone" else max(n, 1)
        t_present = float(self.params.t_present / second)
        counts = np.zeros((n, self.n_neurons), dtype=np.int64)
        spikes, inputs, inhibitory, signs = ([], []), ([], []), ([], []), []
        per_event = self.synapse is not None and self.device_updates == "event"
        start = 0
        while start < n:
            m, timed, states = chunk_inputs(start, min(size, n - start), size)
            gate = np.zeros(size)
            gate[:m] = 1.0
            states = {"synapses.w": self.weights.T.reshape(-1), "outputs.wsq": (self.weights ** 2).sum(1),
                      "outputs.inv_temp": self.inverse_temperature, "outputs.lr": self.lr if learn else 0.0,
                      "outputs.lr_power": self.lr_power, "outputs.anti": RULE_SIGNS[self.rule],
                      "outputs.record_spikes": float(record_spikes), "inputs.record_inputs": float(record_inputs),
                      "outputs.rng_seed": float(self.rng.integers(2 ** 31)), **states,
                      **self._inhibition_states(record_spikes), **self._gain_states(),
                      **(device_events.run_states(self.synapse) if per_event else {})}
            net = self._run(dict(timed, present_gate=gate), states, size)
            w = net.weights()
            if per_event:  # the device's state is the weights' truth: read them from it
                device_events.read_back(self.synapse, net)
                w = self.synapse.read().numpy().astype(np.float64)
            elif self.synapse is not None and learn:
                w = self.synapse.program(torch.from_numpy(w - self.weights)).numpy().astype(np.float64)
            self.weights = w
            if self.params.wta == "circuit":
                self.inhibition_state = {key: net.get(key) for key in self.inhibition_state}
            if self.gained and learn:
                self.normaliser.load_state_dict({"gain": torch.from_numpy(net.get("outputs.gain"))})
            counts[start:start + m] = net.counts(size)[:m]
            for store, monitor in ((spikes, net.spike_monitor), (inputs, net.input_monitor),
                                   (inhibitory, net.inhibitory_monitor)):
                i, t = net.events(monitor)
                keep = np.floor(t / t_present + 1e-9) < m  # drop the padding presentations' (onset) events
                store[0].append(i[keep])
                store[1].append(t[keep] + start * t_present)
                if monitor is net.spike_monitor:
                    signs.append(self._spike_signs(net, keep, t_present))
            del net
            start += m
        if self.backend == "runtime":
            gc.collect()  # free the names of the runtime objects
        cat = (lambda parts, dtype: np.concatenate(parts) if parts else np.zeros(0, dtype))  # noqa: E731
        return Presentation(counts, self.weights.copy(), cat(spikes[0], np.int64), cat(spikes[1], np.float64),
                            cat(inputs[0], np.int64), cat(inputs[1], np.float64), cat(signs, np.float64),
                            cat(inhibitory[1], np.float64))

    def _spike_signs(self, net: WTANetwork, keep: np.ndarray, t_present: float) -> np.ndarray:
        """The sign each recorded spike's update finally took (``keep``: the spikes returned): set at the spike
        (ideal), or by the race of its presentation (circuit: + for the neuron that claimed, the rule's
        sign for the others, 0 where no neuron claimed and the presentation's updates were dropped)."""
        if net.claim_monitor is None:
            return np.asarray(net.spike_monitor.spk_sign[:], dtype=np.float64)[keep]
        neuron, times = (a[keep] for a in net.events(net.spike_monitor))
        claim_i, claim_t = net.events(net.claim_monitor)
        claim_pres = np.floor(claim_t / t_present + 1e-9).astype(np.int64)
        claimed = set(zip(claim_pres.tolist(), claim_i.tolist()))
        pres = np.floor(times / t_present + 1e-9).astype(np.int64)
        won = np.array([(p, k) in claimed for p, k in zip(pres.tolist(), neuron.tolist())], dtype=bool)
        decided = np.isin(pres, claim_pres)
        return np.where(won, 1.0, np.where(decided, 1.0 - 2.0 * RULE_SIGNS[self.rule], 0.0))

    def _inhibition_states(self, record: bool) -> dict:
        """Run-time values and carried state of the circuit's inhibition (none for the ideal normaliser)."""
        p = self.params
        if p.wta != "circuit":
            return {}
        return {**self.inhibition_state, "outputs.drift": p.inhibition_strength * float(p.output_rate * p.dt),
                "outputs.race_to_claim": p.winner_race, "from_inh.J": p.inhibition_strength,
                "inhibition.record_inhibitory": float(record)}


__all__ = ["PlasticLayer", "active_network", "Presentation", "CompilerNotFoundError", "check_compiler",
           "cache_dir", "BACKENDS", "RULE_SIGNS"]
