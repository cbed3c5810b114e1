r"""A second spiking SoftHebb layer driven by the first layer's output spike trains (relayed spike by spike).

The rate network's block boundary is ``activation -> max pool 4/2/1 -> batch norm -> next conv``
(SPEC.md §3). In spikes:

* **Layer 1** (:class:`snn.layer.SpikingSoftHebb`, learning off) is presented every position of an
  image; its output neuron ``c`` at position ``q`` fires a spike train whose rate is
  ``R softmax(t u(q))_c``. Each train is recorded with its times.
* **Pooling.** Right after a presentation's onset burst, ``u`` of layer 1 is exactly ``w . x``, so every
  layer-1 neuron knows its expected share ``p_c(q) = softmax(t w . x(q))_c``. The pooled unit of
  channel ``c`` and pooled cell ``P`` relays the whole spike train of the window position with the
  largest onset share, ``q* = argmax_{q in window(P)} p_c(q)``: the rate network's max pooling of
  ``p`` (:func:`pool_select`), done once per presentation, after which only that position's spikes
  pass.
* **Standardisation as synaptic gain and bias.** Layer 2's input ``(c, P)`` has the trace
  ``a = b_c + s``, where ``s`` decays with ``tau`` and jumps by ``g_c = 1 / (std_c R tau)`` per relayed
  spike and ``b_c = -mean_c / std_c`` is a constant: with the relayed rate ``R p``, ``E[a] = (p -
  mean_c) / std_c``, the batch-normalised pooled share (``mean_c``, ``std_c``: per-channel statistics
  of the pooled shares on training images, what the next block's batch norm holds). The constant
  part of ``u_k = sum_i w_ki a_i`` is a bias current ``beta_k = sum_i w_ki b_i``, kept up to date by the
  plastic synapses (``beta_k += dw_ki b_i``), and the rest, ``v_k``, jumps by ``w_ki g_c`` per relayed
  spike and decays with ``tau``: ``u_k = beta_k + v_k``.
* **Onset.** As layer 1's inputs have an onset burst, the relayed trace starts each presentation at
  its stationary mean: one graded onset event of size ``p_c(q*) / std_c`` per relay input (the
  selected layer-1 neuron's onset share, which it knows exactly), then only spikes.
* **Everything else** (soft WTA, winner flag, plasticity, counting) is :mod:`snn.layer`'s, with
  ``u = beta + v`` and the plastic update ``dw = eta_k sigma_k (a_i - u_k w_ki) / (R T)`` per output
  spike.

Layer 2 presents one 3x3 patch of the pooled maps (all ``K1`` channels, ``(C, k, k)`` order, reflect
padding at the border as the rate network's conv) per presentation; its relay inputs replay the
recorded spike times of the selected layer-1 trains, aligned to the presentation's onset (the same
clock step as in layer 1). The spike times reach the compiled binary as one flat table
(``TimedArray`` indexed by spike number; each relay input walks its own block of it), so a run needs
no recompilation.

What is not spiking: the choice ``q*`` is computed from the onset shares in numpy (the same numbers
the layer-1 neurons hold), and the replay is offline (layer 1 runs first, layer 2 reads its spikes).
"""
from __future__ import annotations

import gc
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from brian2 import (Network, NeuronGroup, SpikeMonitor, StateMonitor, Synapses, TimedArray, defaultclock, device,
                    get_device, linked_var, prefs, second, set_device)

from . import data
from . import layer as layer1
from .layer import SpikingSoftHebb
from .params import MAX_ABS_INPUT

# --- relay inputs -----------------------------------------------------------------------------------
RELAY_EQS = """
a = b + s_last * exp(-(t - t_last) / tau) : 1
s_last : 1
t_last : second
t_on : second
ev : 1
k : 1
b : 1
g : 1
"""
# Next spike: entry k of the flat table (absolute time of the run); the graded onset event in the first step.
RELAY_THRESHOLD = "t - t_on < 0.5 * dt or t > spike_table(k * second) * second - 0.5 * dt"
RELAY_RESET = """
s_last = (a - b) + int(t - t_on >= 0.5 * dt) * g
t_last = t
k = k + int(t - t_on >= 0.5 * dt)
ev = g
"""
RELAY_ONSET = "s_last = onset_value(t + 0.5 * t_present, i); t_last = t; t_on = t; ev = s_last"

RELAY_OUTPUT_EQS = layer1.OUTPUT_EQS.replace("u : 1\n", "v : 1\nbeta : 1\nu = beta + v : 1\n").replace(
    "count : 1\n", "count : 1\ngate : 1\n")
RELAY_OUTPUT_STEP = "v = v * decay; ex = exp(inv_temp * (beta + v)); gate = present_gate(t)"
RELAY_OUTPUT_THRESHOLD = "(t - t_on > t_blank - 0.5 * dt) and (rand() * Z < rate * dt * ex * gate)"
RELAY_OUTPUT_ONSET = "v = 0; t_on = t"
RELAY_SYNAPSE_ON_PRE = "v_post += w * ev_pre"
RELAY_SYNAPSE_ON_POST = """
dw = lr_post * lrfac_post * spk_sign_post * (a_pre - u_post * w) / (rate * t_learn)
wsq_post += dw * (2 * w + dw)
beta_post += dw * b_pre
w += dw
"""
MODEL_VERSION = hashlib.sha1("\n".join([RELAY_EQS, RELAY_THRESHOLD, RELAY_RESET, RELAY_ONSET, RELAY_OUTPUT_EQS,
                                        RELAY_OUTPUT_STEP, RELAY_OUTPUT_THRESHOLD, RELAY_SYNAPSE_ON_PRE,
                                        RELAY_SYNAPSE_ON_POST, layer1.MODEL_VERSION]).encode()).hexdigest()[:8]
NEVER = 1e9  # seconds: the sentinel closing each input's block of the spike table
LIMIT = MAX_ABS_INPUT - 1e-6  # layer 1's inputs are clipped to the ON/OFF encoder's range


# --- layer 1 spike trains, pooling, standardisation (numpy / torch) ---------------------------------
@dataclass
class Layer1Trains:
    """Recorded output spikes of layer 1 at every position of ``N`` images.

    ``offsets[((b * H + y) * W + x) * K + c]`` .. ``offsets[... + 1]`` index ``times`` (seconds from
    the presentation's onset, sorted) of neuron ``c`` at position ``(y, x)`` of image ``b``;
    ``shares`` ``(N, K, H, W)``: the onset shares ``softmax(t w . x)`` (what each neuron knows at onset).
    """

    times: np.ndarray
    offsets: np.ndarray
    shares: np.ndarray
    t_count: float
    rate: float

    def counts(self) -> np.ndarray:
        """Spike counts ``(N, K, H, W)``."""
        N, K, H, W = self.shares.shape
        return np.diff(self.offsets).reshape(N, H, W, K).transpose(0, 3, 1, 2)


def onset_shares(weights: np.ndarray, images: np.ndarray, inverse_temperature: float,
                 kernel_size: int = 5) -> np.ndarray:
    """``softmax(t u)`` maps ``(N, K, H, W)`` of a ``k x k`` layer (reflect padding) on standardised images."""
    k, p = kernel_size, (kernel_size - 1) // 2
    w = torch.as_tensor(weights.reshape(len(weights), images.shape[1], k, k))
    x = F.pad(torch.as_tensor(np.clip(images, -LIMIT, LIMIT)), (p, p, p, p), mode="reflect")
    return torch.softmax(inverse_temperature * F.conv2d(x, w), dim=1).numpy()


def record_layer1(layer: SpikingSoftHebb, images: np.ndarray, kernel_size: int = 5) -> Layer1Trains:
    """Present every position of ``images`` (standardised ``(N, C, H, W)``) to ``layer`` (learning off,
    ``record_spikes=True``) and keep every output spike with its time from its presentation's onset."""
    if not layer.record_spikes:
        raise ValueError("layer 1 must be made with record_spikes=True")
    N, C, H, W = images.shape
    K = layer.n_neurons
    t_present = float(layer.params.t_present / second)
    keys, times = [], []
    per_call = max(1, layer.chunk // (H * W)) if layer.backend == "cpp_standalone" else 1
    for b0 in range(0, N, per_call):
        patches = np.concatenate([data.image_patches(img, kernel_size) for img in images[b0:b0 + per_call]])
        out = layer.present(np.clip(patches, -LIMIT, LIMIT), learn=False)
        pres = np.floor(out.spike_t / t_present + 1e-9).astype(np.int64)  # presentation within this call
        keys.append((b0 * H * W + pres) * K + out.spike_i)
        times.append(out.spike_t - pres * t_present)
    keys, times = np.concatenate(keys), np.concatenate(times)
    order = np.lexsort((times, keys))
    offsets = np.zeros(N * H * W * K + 1, dtype=np.int64)
    np.add.at(offsets, keys + 1, 1)
    shares = onset_shares(layer.weights, images, layer.inverse_temperature, kernel_size)
    return Layer1Trains(times[order], np.cumsum(offsets), shares, float(layer.params.t_learn / second),
                        float(layer.params.output_rate))


def pool_select(shares: np.ndarray, kernel: int = 4, stride: int = 2, padding: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Max pooling of the onset shares: the pooled maps ``(N, K, Hp, Wp)`` and, per pooled cell, the flat
    position ``y * W + x`` of the selected (largest-share) layer-1 position."""
    pooled, idx = F.max_pool2d(torch.as_tensor(shares), kernel, stride, padding, return_indices=True)
    return pooled.numpy(), idx.numpy()


def fit_standardisation(pooled: np.ndarray, eps: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std ``(K,)`` of pooled maps (the next block's batch-norm statistics)."""
    return pooled.mean(axis=(0, 2, 3)), np.sqrt(pooled.var(axis=(0, 2, 3)) + eps)


def patch_positions(n_images: int, hp: int, wp: int, n: int, seed: int = 0) -> np.ndarray:
    """``n`` random (image, row, col) positions of the pooled maps, ``(n, 3)``."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, n_images, n), rng.integers(0, hp, n), rng.integers(0, wp, n)], axis=1)


def _reflect(i: np.ndarray, n: int) -> np.ndarray:
    i = np.abs(i)
    return np.where(i >= n, 2 * (n - 1) - i, i)


def relay_plan(trains: Layer1Trains, selected: np.ndarray, positions: np.ndarray, kernel_size: int = 3):
    """For each layer-2 presentation (``positions`` rows: image, pooled row, pooled col) and each input
    ``(c, dy, dx)``: the key of the relayed layer-1 train (``(image, selected position, c)``) and the
    pooled cell it comes from. Returns ``keys (n, K*k*k)``, ``cells (n, k*k, 2)``."""
    N, K, Hp, Wp = selected.shape
    H, W = trains.shares.shape[2:]
    r = (kernel_size - 1) // 2
    dy, dx = np.meshgrid(np.arange(-r, r + 1), np.arange(-r, r + 1), indexing="ij")
    cy = _reflect(positions[:, 1, None] + dy.ravel()[None], Hp)  # (n, k*k)
    cx = _reflect(positions[:, 2, None] + dx.ravel()[None], Wp)
    b = positions[:, 0]
    sel = selected[b[:, None, None], np.arange(K)[None, :, None], cy[:, None, :], cx[:, None, :]]  # (n, K, k*k)
    keys = (b[:, None, None] * (H * W) + sel) * K + np.arange(K)[None, :, None]
    return keys.reshape(len(positions), -1), np.stack([cy, cx], axis=-1)


def relay_inputs(trains: Layer1Trains, keys: np.ndarray, mean: np.ndarray, std: np.ndarray, kernel_size: int = 3):
    """Per presentation and input: onset value ``p(q*) / std_c``, relayed count, and the standardised
    decoded value ``(count / (R T) - mean_c) / std_c`` (what the rate rule is given)."""
    K = len(mean)
    kk = kernel_size ** 2
    flat_shares = trains.shares.transpose(0, 2, 3, 1).reshape(-1)  # index (b*H*W + q)*K + c = key
    channel = np.repeat(np.arange(K), kk)[None]
    onset = flat_shares[keys] / std[channel]
    counts = trains.offsets[keys + 1] - trains.offsets[keys]
    decoded = (counts / (trains.rate * trains.t_count) - mean[channel]) / std[channel]
    expected = (flat_shares[keys] - mean[channel]) / std[channel]
    return onset, counts, decoded, expected


def spike_table(trains: Layer1Trains, keys: np.ndarray, t_present: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The flat table of relayed spike times for presentations ``keys (m, n_in)`` run back to back.

    Input ``i``'s spikes are ``table[start[i]:end[i]]`` (absolute times, sorted), followed by the
    sentinel ``NEVER``. Returns ``(table, start, end)``.
    """
    m, n_in = keys.shape
    k_in = keys.T.reshape(-1)  # input-major: (i, presentation)
    lo, hi = trains.offsets[k_in], trains.offsets[k_in + 1]
    lengths = hi - lo
    pres = np.tile(np.arange(m), n_in)
    idx = np.repeat(lo - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths) + np.arange(lengths.sum())
    times = trains.times[idx] + np.repeat(pres * t_present, lengths)
    per_input = lengths.reshape(n_in, m).sum(1)
    start = np.concatenate([[0], np.cumsum(per_input + 1)[:-1]])
    table = np.full(int((per_input + 1).sum()), NEVER)
    dest = np.repeat(start, per_input) + (np.arange(per_input.sum()) - np.repeat(np.cumsum(per_input) - per_input,
                                                                              per_input))
    table[dest] = times
    return table, start, start + per_input


# --- the Brian2 network ---------------------------------------------------------------------------
class _RelayNet:
    """Relay inputs -> layer-2 outputs for ``n_chunk`` presentations, a spike table of ``capacity`` entries."""

    def __init__(self, n_in, n_out, n_chunk, capacity, params, record_spikes=False, record_inputs=False,
                 table=None, onset=None, gate=None):
        p = params
        self.namespace = dict(rate=p.output_rate, tau=p.tau, t_blank=p.t_blank, t_present=p.t_present,
                              t_learn=p.t_learn, sharpness=float(p.winner_sharpness),
                              decay=float(np.exp(-p.dt / p.tau)))
        # placeholders for the standalone build (set per run with run_args); the runtime backend's values
        table = np.full(capacity, NEVER) if table is None else table
        onset = np.zeros((n_chunk, n_in)) if onset is None else onset
        gate = np.ones(n_chunk) if gate is None else gate
        self.spike_table = TimedArray(table, dt=1 * second, name="relay_spike_table")
        self.onset_value = TimedArray(onset, dt=p.t_present, name="relay_onset_value")
        self.present_gate = TimedArray(gate, dt=p.t_present, name="relay_present_gate")
        self.namespace.update(spike_table=self.spike_table, onset_value=self.onset_value,
                              present_gate=self.present_gate)
        self.inputs = NeuronGroup(n_in, RELAY_EQS, threshold=RELAY_THRESHOLD, reset=RELAY_RESET, method="exact",
                                  name="relay_inputs", order=0)
        self.inputs.run_regularly(RELAY_ONSET, dt=p.t_present, when="start", name="relay_inputs_onset")
        self.outputs = NeuronGroup(n_out, RELAY_OUTPUT_EQS, threshold=RELAY_OUTPUT_THRESHOLD,
                                   reset=layer1.OUTPUT_RESET, method="exact", name="relay_outputs", order=0)
        self.outputs.run_regularly(RELAY_OUTPUT_ONSET, dt=p.t_present, when="start", name="relay_outputs_onset")
        self.outputs.run_regularly(RELAY_OUTPUT_STEP, when="groups", order=0, name="relay_outputs_step")
        self.inhibition = NeuronGroup(1, layer1.INHIBITION_EQS, name="relay_inhibition")
        self.to_inh = Synapses(self.outputs, self.inhibition, layer1.TO_INHIBITION, name="relay_to_inh")
        self.to_inh.connect()
        self.to_inh.summed_updaters["Zsum_post"].order = 1
        self.to_inh.summed_updaters["Z2sum_post"].order = 2
        self.outputs.Z = linked_var(self.inhibition, "Zsum", index=np.zeros(n_out, dtype=int))
        self.outputs.Z2 = linked_var(self.inhibition, "Z2sum", index=np.zeros(n_out, dtype=int))
        self.synapses = Synapses(self.inputs, self.outputs, layer1.SYNAPSE_EQS, on_pre=RELAY_SYNAPSE_ON_PRE,
                                 on_post=RELAY_SYNAPSE_ON_POST, name="relay_synapses")
        self.synapses.post.when = "after_resets"
        self.synapses.connect(i=np.repeat(np.arange(n_in), n_out), j=np.tile(np.arange(n_out), n_in))
        self.count_monitor = StateMonitor(self.outputs, "count", record=True, dt=p.t_present, when="start",
                                          order=-1, name="relay_counts")
        objects = [self.inputs, self.outputs, self.inhibition, self.to_inh, self.synapses, self.count_monitor]
        self.monitor = self.input_monitor = None
        if record_spikes:
            self.monitor = SpikeMonitor(self.outputs, name="relay_spikes")
            objects.append(self.monitor)
        if record_inputs:
            self.input_monitor = SpikeMonitor(self.inputs, name="relay_input_spikes")
            objects.append(self.input_monitor)
        self.network = Network(*objects, name="relay_network")

    counts = layer1._Net.counts


@dataclass
class RelayPresentation:
    """What :meth:`SpikingRelayLayer.present` returns: ``counts (n, K2)``, ``weights``, and with
    ``record_inputs`` the relay inputs' spike counts ``(n, n_in)`` (the onset event excluded)."""

    counts: np.ndarray
    weights: np.ndarray
    input_counts: np.ndarray | None = None


class SpikingRelayLayer(SpikingSoftHebb):
    """Layer 2: :class:`snn.layer.SpikingSoftHebb`'s output population, driven by relayed layer-1 spike trains.

    ``mean``, ``std`` ``(K1,)``: the standardisation of the pooled layer-1 shares (gain ``1 / (std R tau)``
    and bias ``-mean / std`` of each channel's relay inputs); ``capacity``: entries of the spike table
    of one run (a chunk is cut shorter if its spikes do not fit).
    """

    def __init__(self, n_channels: int, n_neurons: int, mean: np.ndarray, std: np.ndarray, kernel_size: int = 3,
                 capacity: int = 2_000_000, record_inputs: bool = False, **kwargs):
        super().__init__(n_channels * kernel_size ** 2, n_neurons, **kwargs)
        self.kernel_size, self.capacity, self.record_inputs = int(kernel_size), int(capacity), bool(record_inputs)
        self.mean, self.std = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
        if self.mean.shape != (n_channels,) or self.std.shape != (n_channels,) or np.any(self.std <= 0):
            raise ValueError(f"mean and std must be ({n_channels},), std > 0")
        channel = np.repeat(np.arange(n_channels), self.kernel_size ** 2)
        self.b = -self.mean[channel] / self.std[channel]
        self.g = 1.0 / (self.std[channel] * float(self.params.output_rate * self.params.tau))
        if self.backend == "cpp_standalone" and kwargs.get("build_dir") is None:
            self.build_dir = layer1.cache_dir() / self._key()

    def _key(self) -> str:
        text = f"relay;{super()._key()};{getattr(self, 'capacity', 0)};{getattr(self, 'record_inputs', False)};{MODEL_VERSION}"
        return f"relay_{self.n_inputs}x{self.n_neurons}_c{self.chunk}_" + hashlib.sha1(text.encode()).hexdigest()[:10]

    def _make_net(self, n_chunk, capacity, **values):
        return _RelayNet(self.n_inputs, self.n_neurons, n_chunk, capacity, self.params, self.record_spikes,
                         self.record_inputs, **values)

    def build(self) -> float:
        import time
        if self.backend != "cpp_standalone":
            return 0.0
        if (layer1._ACTIVE_STANDALONE[0] is self and self._net is not None
                and get_device().__class__.__name__ == "CPPStandaloneDevice"):
            return 0.0
        layer1.check_compiler()
        start = time.perf_counter()
        previous = layer1._ACTIVE_STANDALONE[0]
        if previous is not None:
            previous._net = None
        self._net = None
        layer1._ACTIVE_STANDALONE[0] = None
        gc.collect()
        prefs.devices.cpp_standalone.openmp_threads = self.threads if self.threads > 1 else 0
        set_device("cpp_standalone", build_on_run=False, directory=str(self.build_dir))
        device.reinit()
        device.activate(build_on_run=False, directory=str(self.build_dir))
        defaultclock.dt = self.params.dt
        self._net = self._make_net(self.chunk, self.capacity)
        self._net.network.run(self.chunk * self.params.t_present, namespace=self._net.namespace)
        try:
            device.build(directory=str(self.build_dir), compile=True, run=False, with_output=False)
        except Exception as err:
            raise RuntimeError(f"building the Brian2 standalone project in {self.build_dir} failed: {err}") from err
        layer1._ACTIVE_STANDALONE[0] = self
        self.compile_seconds = time.perf_counter() - start
        return self.compile_seconds

    def _run_relay(self, table, start, end, onset, gate, learn):
        values = self._run_values(learn)
        w = self.weights
        init = {"w": w.T.reshape(-1), "wsq": (w ** 2).sum(1), "beta": w @ self.b}
        if self.backend == "cpp_standalone":
            self.build()
            net = self._net
            padded = np.full(self.capacity, NEVER)
            padded[:len(table)] = table
            args = {net.spike_table: padded, net.onset_value: onset, net.present_gate: gate,
                    net.synapses.w: init["w"], net.outputs.wsq: init["wsq"], net.outputs.beta: init["beta"],
                    net.inputs.k: start.astype(np.float64), net.inputs.b: self.b, net.inputs.g: self.g}
            for name, value in values.items():
                args[getattr(net.outputs, name)] = value
            device.run(directory=str(self.build_dir), with_output=False, run_args=args)
            for fname in list(device.run_args_arrays):
                for f in Path(self.build_dir, "static_arrays").glob(fname + "*"):
                    f.unlink(missing_ok=True)
        else:
            if get_device().__class__.__name__ != "RuntimeDevice":
                set_device("runtime")
            layer1._ACTIVE_STANDALONE[0] = None
            prefs.codegen.target = "numpy"
            defaultclock.dt = self.params.dt
            net = self._make_net(len(onset), len(table), table=np.append(table, NEVER), onset=onset, gate=gate)
            net.synapses.w = init["w"]
            net.outputs.wsq = init["wsq"]
            net.outputs.beta = init["beta"]
            net.inputs.k = start.astype(np.float64)
            net.inputs.b = self.b
            net.inputs.g = self.g
            for name, value in values.items():
                setattr(net.outputs, name, value)
            net.network.run(len(onset) * self.params.t_present, namespace=net.namespace)
        w_new = np.asarray(net.synapses.w[:]).reshape(self.n_inputs, self.n_neurons).T.copy()
        counts = net.counts(len(onset))
        in_counts = None
        if net.input_monitor is not None:
            t_present = float(self.params.t_present / second)
            ti = np.asarray(net.input_monitor.t[:] / second)
            ii = np.asarray(net.input_monitor.i[:])
            pres = np.floor(ti / t_present + 1e-9).astype(np.int64)
            not_onset = (ti - pres * t_present) > 0.5 * float(self.params.dt / second)
            in_counts = np.zeros((len(onset), self.n_inputs), dtype=np.int64)
            np.add.at(in_counts, (pres[not_onset], ii[not_onset]), 1)
        if self.backend == "runtime":
            del net
            gc.collect()
        return w_new, counts, in_counts

    def present_relay(self, trains: Layer1Trains, keys: np.ndarray, learn: bool = True) -> RelayPresentation:
        """Present layer-2 patches whose inputs replay the layer-1 trains ``keys (n, n_in)`` (:func:`relay_plan`)."""
        if keys.ndim != 2 or keys.shape[1] != self.n_inputs:
            raise ValueError(f"keys must have shape (n, {self.n_inputs}), got {keys.shape}")
        onset_all, _, _, _ = relay_inputs(trains, keys, self.mean, self.std, self.kernel_size)
        t_present = float(self.params.t_present / second)
        n = len(keys)
        step = self.chunk if self.backend == "cpp_standalone" else max(n, 1)
        counts = np.zeros((n, self.n_neurons), dtype=np.int64)
        in_counts = np.zeros((n, self.n_inputs), dtype=np.int64) if self.record_inputs else None
        start_p = 0
        while start_p < n:
            m = min(step, n - start_p)
            table, s, e = spike_table(trains, keys[start_p:start_p + m], t_present)
            while self.backend == "cpp_standalone" and len(table) > self.capacity and m > 1:
                m = max(1, m // 2)
                table, s, e = spike_table(trains, keys[start_p:start_p + m], t_present)
            if self.backend == "cpp_standalone" and len(table) > self.capacity:
                raise ValueError(f"one presentation needs {len(table)} table entries > capacity {self.capacity}")
            onset = np.zeros((step, self.n_inputs))
            onset[:m] = onset_all[start_p:start_p + m]
            gate = np.zeros(step)
            gate[:m] = 1.0
            w, c, ic = self._run_relay(table, s, e, onset, gate, learn)
            if self.synapse is not None and learn:
                w = self.synapse.program(torch.from_numpy(w - self.weights)).numpy().astype(np.float64)
            self.weights = w
            counts[start_p:start_p + m] = c[:m]
            if in_counts is not None:
                in_counts[start_p:start_p + m] = ic[:m]
            start_p += m
        return RelayPresentation(counts, self.weights.copy(), in_counts)


__all__ = ["Layer1Trains", "SpikingRelayLayer", "RelayPresentation", "record_layer1", "onset_shares", "pool_select",
           "fit_standardisation", "patch_positions", "relay_plan", "relay_inputs", "spike_table"]
