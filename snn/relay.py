r"""A second spiking SoftHebb layer driven by the first layer's output spike trains (relayed spike by spike).

The rate network's block boundary is ``activation -> max pool 4/2/1 -> batch norm -> next conv``
(docs/algorithm.md §3). In spikes:

* **Layer 1** (:class:`snn.layer.SpikingSoftHebb`, learning off) is presented every position of an
  image; its output neuron ``c`` at position ``q`` fires a spike train whose rate is
  ``R softmax(t u(q))_c``. Each train is recorded with its times (:func:`record_layer1`).
* **Pooling.** Right after a presentation's onset burst, ``u`` of layer 1 is exactly ``w . x``, so every
  layer-1 neuron knows its expected share ``p_c(q) = softmax(t w . x(q))_c``. The pooled unit of
  channel ``c`` and pooled cell ``P`` relays the whole spike train of the window position with the
  largest onset share, ``q* = argmax_{q in window(P)} p_c(q)``: the rate network's max pooling of
  ``p`` (:func:`snn.decoding.max_pool`), done once per presentation, after which only that
  position's spikes pass.
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
* **Everything else** (soft WTA, winner flag, plasticity, counting) is :mod:`snn.network`'s output
  population with biased inputs: ``u = beta + v`` and the plastic update
  ``dw = eta_k sigma_k (a_i - u_k w_ki) / (R T)`` per output spike.

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

from dataclasses import dataclass

import numpy as np
from brian2 import second

from . import data, decoding
from .layer import SpikingSoftHebb
from .network import InputModel
from .simulation import PlasticLayer, Presentation
from .params import MAX_ABS_INPUT

# --- relay inputs: a = b + s, s decays and jumps by g per relayed spike ------------------------------
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
# An event in the first step of a presentation (the graded onset), then at the times of the flat table,
# entry k being the input's next spike (absolute time of the run).
RELAY_THRESHOLD = "t - t_on < 0.5 * dt or t > spike_table(k * second) * second - 0.5 * dt"
RELAY_RESET = """
s_last = (a - b) + int(t - t_on >= 0.5 * dt) * g
t_last = t
k = k + int(t - t_on >= 0.5 * dt)
ev = g
"""
RELAY_ONSET = """
s_last = onset_value(t + 0.5 * t_present, i)
t_last = t
t_on = t
ev = s_last
"""
RELAY_INPUTS = InputModel(prefix="relay", equations=RELAY_EQS, threshold=RELAY_THRESHOLD, reset=RELAY_RESET,
                          onset=RELAY_ONSET, biased=True,
                          timed={"spike_table": "index", "onset_value": "presentation"})
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


def record_layer1(layer: SpikingSoftHebb, images: np.ndarray, kernel_size: int = 5) -> Layer1Trains:
    """Present every position of ``images`` (standardised ``(N, C, H, W)``) to ``layer`` (learning off)
    and keep every output spike with its time from its presentation's onset."""
    N, C, H, W = images.shape
    K = layer.n_neurons
    t_present = float(layer.params.t_present / second)
    keys, times = [], []
    per_call = max(1, layer.chunk // (H * W)) if layer.backend == "cpp_standalone" else N
    for b0 in range(0, N, per_call):
        patches = np.concatenate([data.image_patches(img, kernel_size) for img in images[b0:b0 + per_call]])
        out = layer.present(np.clip(patches, -LIMIT, LIMIT), learn=False, record_spikes=True)
        pres = np.floor(out.spike_t / t_present + 1e-9).astype(np.int64)  # presentation within this call
        keys.append((b0 * H * W + pres) * K + out.spike_i)
        times.append(out.spike_t - pres * t_present)
    keys, times = np.concatenate(keys), np.concatenate(times)
    order = np.lexsort((times, keys))
    offsets = np.zeros(N * H * W * K + 1, dtype=np.int64)
    np.add.at(offsets, keys + 1, 1)
    shares = decoding.expected_shares(layer.weights, np.clip(images, -LIMIT, LIMIT), layer.inverse_temperature,
                                      kernel_size)
    return Layer1Trains(times[order], np.cumsum(offsets), shares, float(layer.params.t_learn / second),
                        float(layer.params.output_rate))


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
    pooled cell it comes from. ``selected``: the indices of :func:`snn.decoding.max_pool` of the
    onset shares. Returns ``keys (n, K*k*k)``, ``cells (n, k*k, 2)``."""
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
    """Per presentation and input: onset value ``p(q*) / std_c``, relayed count, the standardised decoded
    value ``(count / (R T) - mean_c) / std_c`` and the value the relay encodes, ``(p(q*) - mean_c) / std_c``."""
    K = len(mean)
    flat_shares = trains.shares.transpose(0, 2, 3, 1).reshape(-1)  # index (b*H*W + q)*K + c = key
    channel = np.repeat(np.arange(K), kernel_size ** 2)[None]
    onset = flat_shares[keys] / std[channel]
    counts = trains.offsets[keys + 1] - trains.offsets[keys]
    decoded = (decoding.shares_from_counts(counts, trains.rate, trains.t_count) - mean[channel]) / std[channel]
    expected = (flat_shares[keys] - mean[channel]) / std[channel]
    return onset, counts, decoded, expected


def spike_table(trains: Layer1Trains, keys: np.ndarray, t_present: float) -> tuple[np.ndarray, np.ndarray]:
    """The flat table of relayed spike times for presentations ``keys (m, n_in)`` run back to back.

    Input ``i``'s spikes are ``table[start[i]:]`` up to the sentinel ``NEVER`` (absolute times, sorted).
    Returns ``(table, start)``.
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
    within = np.arange(per_input.sum()) - np.repeat(np.cumsum(per_input) - per_input, per_input)
    table[np.repeat(start, per_input) + within] = times
    return table, start


class SpikingRelayLayer(PlasticLayer):
    """Layer 2: the soft-WTA population of :mod:`snn.network` driven by relayed layer-1 spike trains.

    Args:
        n_channels: ``K1``, layer 1's neurons; layer 2 has ``K1 * k * k`` relay inputs.
        n_neurons: ``K2``.
        mean, std: ``(K1,)`` standardisation of the pooled layer-1 shares (:func:`snn.decoding.fit_standardisation`),
            i.e. gain ``1 / (std R tau)`` and bias ``-mean / std`` of each channel's relay inputs.
        kernel_size: ``k`` of layer 2's patches of the pooled maps.
        capacity: entries of the spike table of one standalone run (a chunk is cut shorter if its
            spikes do not fit).
        **kwargs: those of :class:`snn.layer.SpikingSoftHebb` (``params``, ``inverse_temperature``, ...).
    """

    model = RELAY_INPUTS

    def __init__(self, n_channels: int, n_neurons: int, mean: np.ndarray, std: np.ndarray, kernel_size: int = 3,
                 capacity: int = 2_000_000, **kwargs):
        self.kernel_size, self.capacity = int(kernel_size), int(capacity)
        super().__init__(n_channels * self.kernel_size ** 2, n_neurons, **kwargs)
        self.mean, self.std = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
        if self.mean.shape != (n_channels,) or self.std.shape != (n_channels,) or np.any(self.std <= 0):
            raise ValueError(f"mean and std must be ({n_channels},), std > 0")
        channel = np.repeat(np.arange(n_channels), self.kernel_size ** 2)
        self.b = -self.mean[channel] / self.std[channel]
        self.g = 1.0 / (self.std[channel] * float(self.params.output_rate * self.params.tau))

    def _structure(self) -> str:
        return f"capacity={self.capacity}"

    def _placeholders(self) -> dict:
        return {"spike_table": np.full(self.capacity, NEVER), "onset_value": np.zeros((self.chunk, self.n_inputs))}

    def present(self, trains: Layer1Trains, keys: np.ndarray, learn: bool = True, record_spikes: bool = False,
                record_inputs: bool = False) -> Presentation:
        """Present layer-2 patches whose inputs replay the layer-1 trains ``keys (n, n_in)`` (:func:`relay_plan`).

        ``record_inputs``: also return the relay inputs' events (each presentation's onset event first).
        """
        if keys.ndim != 2 or keys.shape[1] != self.n_inputs:
            raise ValueError(f"keys must have shape (n, {self.n_inputs}), got {keys.shape}")
        onset_all = relay_inputs(trains, keys, self.mean, self.std, self.kernel_size)[0]
        t_present = float(self.params.t_present / second)
        standalone = self.backend == "cpp_standalone"

        def chunk_inputs(start: int, m: int, size: int):
            table, first = spike_table(trains, keys[start:start + m], t_present)
            while standalone and len(table) > self.capacity and m > 1:
                m = max(1, m // 2)
                table, first = spike_table(trains, keys[start:start + m], t_present)
            if standalone and len(table) > self.capacity:
                raise ValueError(f"one presentation needs {len(table)} table entries > capacity {self.capacity}")
            padded = np.full(self.capacity if standalone else len(table) + 1, NEVER)
            padded[:len(table)] = table
            onset = np.zeros((size, self.n_inputs))
            onset[:m] = onset_all[start:start + m]
            states = {"inputs.k": first.astype(np.float64), "inputs.b": self.b, "inputs.g": self.g,
                      "outputs.beta": self.weights @ self.b}
            return m, {"spike_table": padded, "onset_value": onset}, states

        return self._present(len(keys), chunk_inputs, learn, record_spikes, record_inputs)


__all__ = ["Layer1Trains", "SpikingRelayLayer", "RELAY_INPUTS", "record_layer1", "patch_positions", "relay_plan",
           "relay_inputs", "spike_table", "NEVER"]
