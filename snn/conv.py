r"""Whole images through spiking SoftHebb layers laid out as spatial maps, with spiking max pooling.

A layer of ``K`` kernels on an ``H x W`` map is ``K x H x W`` excitatory neurons: at every position the
``K`` channels form one soft winner-take-all population, with its own inhibition (the circuit of
:mod:`snn.network`: escape-noise neurons, inhibitory relays and integral feedback on ``h``; or its ideal
normaliser, one per position), and every position runs in parallel. A whole image is one presentation.

**Learning on patches, inference on maps.** The kernels are learnt by one population that sees one
patch per presentation (:class:`snn.layer.SpikingSoftHebb`): convolution as data augmentation, as the
paper frames it. The map shares them, as a chip's shared weight memory would: one table of
``K x C k k`` values per layer (a group ``map{l}_weights``, set at each run) serves every position.
Brian2's ``Synapses`` cannot share a weight, so the kernel synapses are a C++ function the source
calls as it spikes (:func:`shared_kernel`): the adds that one synapse per connection, holding a copy
of its kernel entry, would make, in the same order (so the spike counts are the same bit for bit),
without streaming a copy per synapse from memory at every event. Learning on the map itself would need
each kernel entry's change summed over all positions before it is applied: a sum no synapse and no
neuron holds locally, so the map does not learn.

**Pre-activation.** Layer 1's inputs are the ON/OFF pixels of :mod:`snn.layer` (one per pixel of the
image, with the onset burst), each connected to every output whose ``k x k`` window holds it; reflect
padding connects the mirrored pixel (a border output may receive one pixel through two synapses, as
the padded convolution counts it twice). So ``u`` at position ``q`` is ``w . x(q)`` for the same input
events: the patch population's ``u`` for the patch at ``q`` (tested exactly right after the onset).

**Spiking max pooling: a race per window.** A pooling unit (channel ``c``, pooled cell ``P``) is
connected to the neurons of channel ``c`` in its window (4x4, stride 2, padding 1 by default). Each
connection counts its neuron's spikes in the counting window; the first neuron to reach ``pool_race``
spikes locks the unit to itself, and from then on the unit relays that neuron's spikes, one for one
(each relayed spike one time step after the neuron's). The relayed statistic is the spike train of the
window's first neuron to fire ``pool_race`` spikes, from its ``pool_race``-th spike on: the window's
most active neuron unless two are within the race's noise (:func:`race_win_probability` gives the
chance that the more active of two wins). It is the max pooling of the rate network on the shares
``p = softmax(t u)``, minus the spikes before the lock. The pooled count is read out as
``count / (R T)``, what a pooled share would be.

**Between layers** (as :mod:`snn.relay`): the next block's batch norm becomes a synaptic gain
``g_c = 1 / (std_c R tau)`` per relayed spike and a bias current ``beta_k = sum_i w_ki b_i`` with
``b_c = -mean_c / std_c``, so that ``u = beta + v`` has the mean of ``w . (p - mean) / std``. Layer 2's
inputs have no onset event (a pooling unit knows nothing before its race), so its ``v`` rises from 0
with ``tau``: layer ``l`` counts from ``t_blank + (l - 1) settle``, and ``settle`` (3 ``tau`` by
default: ``v`` at 95 % of its mean) sets how much longer a presentation is than a patch's.

**Counts** for hardware (:meth:`SpikingConvNet.present` returns them per image): input events, spikes
of every population (excitatory, inhibitory, pooling), synaptic operations (each event times its
source's fan-out) and the device reads among them (the events on kernel synapses, which a chip would
hold in plastic memory; the routing of inhibition and pooling is fixed). :mod:`snn.energy` turns them
into energy.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np
from brian2 import (Function, Network, NeuronGroup, SpikeMonitor, StateMonitor, Synapses, TimedArray, linked_var,
                    ms, second)

from .layer import INPUT_EQS, INPUT_ONSET, INPUT_RESET, INPUT_THRESHOLD
from .network import DRIVE, OUTPUT_THRESHOLD, circuit_text
from .params import MAX_ABS_INPUT, SpikingParams
from .simulation import cache_dir, check_compiler, compile_project, holds_project, run_project, active_network

LIMIT = MAX_ABS_INPUT - 1e-6  # the ON/OFF encoder's range

# --- code of the map populations (Brian2 strings; constants from each group's namespace) -------------
MAP_EQS = """
ex : 1
count : 1
fired : 1
gate : 1
t_on : second
learning = int(t - t_on > t_start - 0.5 * dt) : 1
inv_temp : 1 (shared)
rng_seed : 1 (shared)
"""
MAP_WTA_EQS = {"ideal": "Z : 1 (linked)", "circuit": "h : 1\ndrift : 1 (shared)"}
MAP_RESET = "count += learning\nfired += 1"
POOL_EQS = """
v_pool : 1
locked : 1
count : 1
reads : 1
"""
POOL_RESET = "v_pool -= 1\ncount += 1"  # a backlog, not a reset: a spike arriving as the unit fires is relayed next
#: a spike of a window's neuron reaches its pooling unit: the first neuron to reach ``pool_race`` counted
#: spikes locks the unit, whose spike then follows each of that neuron's spikes
TO_POOL_EQS = "n_seen : 1\nchosen : 1"
TO_POOL = """
n_seen += learning_pre
chosen = int(chosen > 0.5 or (n_seen > pool_race - 0.5 and locked_post < 0.5))
locked_post = int(locked_post > 0.5 or chosen > 0.5)
v_pool_post += chosen * learning_pre
"""
PIXEL_COUNT_EQS = "fired : 1"


def _reflect(i: np.ndarray, n: int) -> np.ndarray:
    i = np.abs(i)
    return np.where(i >= n, 2 * (n - 1) - i, i)


def conv_connections(channels: int, height: int, width: int, kernel_size: int, n_out: int, channels_last: bool = False):
    """The synapses of a ``k x k`` convolution with reflect padding over a ``(C, H, W)`` map of sources.

    Sources are indexed ``(c * H + y) * W + x`` (pixels), or ``(y * W + x) * C + c`` with ``channels_last`` (the
    pooling units of a layer below); targets ``(y * W + x) * n_out + k``. Returns
    ``(source, target, entry)``: ``entry = k * C k k + (c * k + dy) * k + dx``, the flat index of the
    synapse's weight in the ``(n_out, C, k, k)`` kernel table.
    """
    r = (kernel_size - 1) // 2
    y, x, c, dy, dx, k = np.meshgrid(np.arange(height), np.arange(width), np.arange(channels),
                                     np.arange(kernel_size), np.arange(kernel_size), np.arange(n_out), indexing="ij")
    sy, sx = _reflect(y + dy - r, height), _reflect(x + dx - r, width)
    source = (((sy * width + sx) * channels + c) if channels_last else ((c * height + sy) * width + sx)).ravel()
    target = ((y * width + x) * n_out + k).ravel()
    entry = (k * channels * kernel_size ** 2 + (c * kernel_size + dy) * kernel_size + dx).ravel()
    order = np.lexsort((target, source))  # each source's synapses side by side: an event reads one block
    return source[order], target[order], entry[order]


def pool_connections(channels: int, height: int, width: int, pool: tuple[int, int, int]):
    """Window membership of a max pooling ``(kernel, stride, padding)`` over a ``K x H x W`` map indexed
    ``(y * W + x) * K + c``; pooling units indexed ``(py * Wp + px) * K + c``. Returns ``(source, target,
    (Hp, Wp))``; windows hanging over the border hold only the positions inside."""
    kernel, stride, padding = pool
    hp, wp = (height + 2 * padding - kernel) // stride + 1, (width + 2 * padding - kernel) // stride + 1
    py, px, dy, dx, c = np.meshgrid(np.arange(hp), np.arange(wp), np.arange(kernel), np.arange(kernel),
                                    np.arange(channels), indexing="ij")
    y, x = py * stride - padding + dy, px * stride - padding + dx
    inside = (y >= 0) & (y < height) & (x >= 0) & (x < width)
    source = (y * width + x) * channels + c
    target = (py * wp + px) * channels + c
    return source[inside], target[inside], (hp, wp)


def _layer_inputs(net: "SpikingConvNet") -> list:
    """``(C, H, W)`` of each layer's inputs: the image, then each layer's pooled map."""
    shapes, (c, h, w) = [], net.in_shape
    kernel, stride, padding = net.pool
    for layer in net.layers:
        shapes.append((c, h, w))
        c, h, w = layer.channels, (h + 2 * padding - kernel) // stride + 1, (w + 2 * padding - kernel) // stride + 1
    return shapes


#: an event of ``source`` of size ``size`` adds ``size`` times kernel entry ``e`` to the ``K`` channels of each
#: position its fan-out reaches: a run of ``K`` shared weights at ``e * K`` onto the ``K`` neurons at ``q * K``
SHARED_KERNEL_CPP = """
static inline double {name}(const int32_t source, const double size)
{{
    double* __restrict target = brian::_array_{target};
    const double* __restrict table = brian::_array_{table};
    const int32_t begin = _namespace{name}_start[source], end = _namespace{name}_start[source + 1];
    for (int32_t s = begin; s < end; s++)
    {{
        double* __restrict out = target + _namespace{name}_position[s];
        const double* __restrict w = table + _namespace{name}_entry[s];
        for (int k = 0; k < {channels}; k++)
            out[k] += w[k] * size;
    }}
    return (double)((end - begin) * {channels});
}}
"""


def shared_kernel(name: str, target: str, table: str, source: np.ndarray, post: np.ndarray, entry: np.ndarray,
                  sources: int, channels: int) -> Function:
    """The kernel synapses of a map layer with their weights in one shared table (C++ standalone only).

    Brian2's ``Synapses`` hold one weight per synapse: a copy of every kernel at every position (7.2 M for
    the MNIST network's layer 2), streamed from memory at each event. A chip with weight sharing reads
    one table of ``K x C k k`` entries instead; so does this function, called by a source as it spikes
    (in its reset, with the event's size): for each ``(position, entry)`` pair of its fan-out, it adds
    ``size * table[e K : e K + K]`` to the ``K`` neurons at that position, and returns the number of
    synaptic operations (device reads). ``target`` and ``table`` name the Brian2 arrays of the map's
    pre-activation and of the table group's ``w``. Its adds are those that the synapses
    ``(source, post, entry)`` of :func:`conv_connections` would make, in their order, so each target sums
    the same terms in the same order; it runs in the reset slot, after the synapses of the step, and
    nothing reads the pre-activation in between.
    """
    first = post % channels == 0  # one pair per (source, position, entry): the synapses of channel 0
    source, position, entry = source[first], post[first], entry[first]
    start = np.concatenate([[0], np.cumsum(np.bincount(source, minlength=sources))]).astype(np.int32)
    function = Function(None, arg_units=[1, 1], arg_types=["integer", "float"], return_unit=1,
                        return_type="float", stateless=False)
    function.implementations.add_implementation(
        "cpp", SHARED_KERNEL_CPP.format(name=name, target=target, table=table, channels=int(channels)),
        namespace={f"{name}_start": start, f"{name}_position": position.astype(np.int32),
                   f"{name}_entry": (entry * channels).astype(np.int32)}, name=name)
    return function


def race_win_probability(rate_high: float, rate_low: float, race: int, window: float) -> float:
    """Chance that the neuron of Poisson rate ``rate_high`` reaches ``race`` spikes before the one of rate
    ``rate_low`` within ``window`` seconds (the race pooling's choice between two neurons of a window).

    Each neuron's ``race``-th spike comes at a Gamma(``race``, rate) time; the integral is done numerically.
    """
    from scipy import integrate, stats
    high, low = stats.gamma(race, scale=1 / rate_high), stats.gamma(race, scale=1 / rate_low)
    value, _ = integrate.quad(lambda s: high.pdf(s) * low.sf(s), 0, window, limit=200)
    return float(value)


def simulated_race_pooling(rates: np.ndarray, window: float, race: int, pool: tuple[int, int, int] = (4, 2, 1),
                           rng: np.random.Generator | None = None) -> np.ndarray:
    """What race pooling relays, drawn for Poisson neurons of ``rates`` (Hz, ``(N, K, H, W)``) over ``window`` s.

    Per pooled cell, the neuron whose ``race``-th spike comes first (a Gamma(``race``, rate) time) locks
    the unit if that spike falls within the window; the unit then relays its spikes from that one on:
    that spike plus a Poisson count over the rest of the window (the ``race - 1`` before it are not
    relayed). Returns the relayed counts ``(N, K, Hp, Wp)``.
    Without spike times this gives the race's statistic for any rates, e.g. the rate network's shares
    times ``R``, to compare races with each other and with the rate network's max pooling.
    """
    import torch
    import torch.nn.functional as F

    rng = rng if rng is not None else np.random.default_rng()
    kernel, stride, padding = pool
    padded = F.pad(torch.as_tensor(np.asarray(rates, dtype=np.float64)), (padding,) * 4)  # rate 0: never fires
    cells = padded.unfold(2, kernel, stride).unfold(3, kernel, stride)
    cells = cells.reshape(*cells.shape[:4], kernel * kernel).numpy()
    firing = cells > 0
    arrival = np.where(firing, rng.gamma(race, 1.0 / np.where(firing, cells, 1.0)), np.inf)
    winner = arrival.argmin(-1)[..., None]
    first, rate = np.take_along_axis(arrival, winner, -1)[..., 0], np.take_along_axis(cells, winner, -1)[..., 0]
    locked = first <= window
    rest = rng.poisson(rate * np.clip(window - np.where(locked, first, window), 0.0, None))
    return np.where(locked, 1 + rest, 0)


@dataclass(frozen=True)
class MapLayer:
    """One spiking SoftHebb layer of a :class:`SpikingConvNet`.

    Args:
        kernels: ``(K, C k k)`` weights in the ``(C, k, k)`` order of a conv weight (a patch population's).
        kernel_size: ``k``.
        inverse_temperature: ``t`` of ``softmax(t u)``.
        mean, std: ``(C,)`` standardisation of the layer's inputs, the pooled shares of the layer below
            (what the rate network's batch norm holds); layer 1 reads standardised pixels and has none.
    """

    kernels: np.ndarray
    kernel_size: int
    inverse_temperature: float
    mean: np.ndarray | None = None
    std: np.ndarray | None = None

    @property
    def channels(self) -> int:
        return int(self.kernels.shape[0])

    @property
    def in_channels(self) -> int:
        return int(self.kernels.shape[1] // self.kernel_size ** 2)


@dataclass
class MapPresentation:
    """What :meth:`SpikingConvNet.present` returns for ``N`` images.

    Attributes:
        maps: per layer, counted spikes ``(N, K, H, W)`` of the excitatory neurons.
        pooled: per layer, spikes ``(N, K, Hp, Wp)`` of the pooling units (the last one: the readout's features).
        events: per image, ``{name: count}``: ``input_events``, ``excitatory_spikes``, ``inhibitory_spikes``,
            ``pooling_spikes``, ``synaptic_ops``, ``device_reads``, ``neuron_updates`` (neurons times time
            steps; the event-driven pixels and an ideal normaliser's sums left out), mean over the images.
        spikes: recorded events ``{population: (index, seconds)}``: ``map{l}_exc``, ``map{l}_pool``, ``map{l}_inh``
            (circuit) and ``map_pixels`` (input events, onset events included), only if the network records.
        onset_u: per layer, ``u (N, K, H, W)`` in the first step of each presentation, once the onset events
            have arrived (only if the network records): ``w . x`` for layer 1, the bias current for the others.
    """

    maps: list
    pooled: list
    events: dict
    spikes: dict = field(default_factory=dict)
    onset_u: list = field(default_factory=list)


class _MapNetwork:
    """The Brian2 objects of a :class:`SpikingConvNet` (built once per structure)."""

    def __init__(self, net: "SpikingConvNet", placeholders: dict):
        p = net.params
        c, h, w = net.in_shape
        base = dict(rate=p.output_rate, tau=p.tau, t_present=p.t_present, decay=float(np.exp(-p.dt / p.tau)),
                    pool_race=float(net.pool_race))
        self.timed = {name: TimedArray(value, dt=p.t_present if name in ("stimulus", "present_gate") else second,
                                       name=f"map_{name}") for name, value in placeholders.items()}
        gate = {"present_gate": self.timed["present_gate"]}
        inputs = _layer_inputs(net)  # (C, H, W) that each layer reads
        # one event of a source reaches every kernel synapse of its fan-out through its layer's shared table
        self.kernels = [shared_kernel(f"map{n}_kernel", f"map{n}_exc_{'v' if n > 1 else 'u'}", f"map{n}_weights_w",
                                      *conv_connections(*shape, layer.kernel_size, layer.channels, channels_last=n > 1),
                                      sources=int(np.prod(shape)), channels=layer.channels)
                        for n, (layer, shape) in enumerate(zip(net.layers, inputs), 1)]
        self.pixels = NeuronGroup(c * h * w, INPUT_EQS + PIXEL_COUNT_EQS + "\nreads : 1", threshold=INPUT_THRESHOLD,
                                  reset=("reads += int(abs(x) > 0) * map1_kernel(i, ev)\nfired += int(abs(x) > 0)\n"
                                         + INPUT_RESET), method="exact", name="map_pixels",
                                  namespace=dict(base, r0=p.input_rate, burst=float(p.onset_burst),
                                                 stimulus=self.timed["stimulus"], map1_kernel=self.kernels[0]))
        self.pixels.run_regularly(INPUT_ONSET, dt=p.t_present, when="start", name="map_pixels_onset")
        objects, self.layers, source = [self.pixels], [], self.pixels
        for index, (layer, shape) in enumerate(zip(net.layers, inputs)):
            n = index + 1
            biased = index > 0
            d = "v" if biased else "u"
            positions = shape[1] * shape[2]
            size = positions * layer.channels
            space = dict(base, t_start=p.t_blank + index * net.settle, **gate)
            exc = NeuronGroup(size, MAP_EQS + MAP_WTA_EQS[p.wta] + ("\nu = beta + v : 1\nv : 1\nbeta : 1" if biased
                                                                    else "\nu : 1"),
                              threshold=OUTPUT_THRESHOLD[p.wta], reset=MAP_RESET, method="exact",
                              name=f"map{n}_exc", namespace=space)
            exc.run_regularly(f"{d} = 0\nt_on = t\ngate = present_gate(t + 0.5 * t_present)", dt=p.t_present,
                              when="start", name=f"map{n}_onset")
            exc.run_regularly(f"{d} = {d} * decay\n{DRIVE[p.wta]}", when="groups", order=0, name=f"map{n}_step")
            # the shared weight memory: entry (c, dy, dx) of kernel k at (c * k k + dy * k + dx) * K + k, set per run
            weights = NeuronGroup(layer.kernels.size, "w : 1", name=f"map{n}_weights")
            fan_out = {}
            wta = self._inhibition(n, exc, positions, layer.channels, p)
            pool_src, pool_tgt, pooled_hw = pool_connections(layer.channels, shape[1], shape[2], net.pool)
            feeds = n < len(net.layers)  # the pooling units of a layer below relay their spikes to the next kernels
            pool = NeuronGroup(pooled_hw[0] * pooled_hw[1] * layer.channels, POOL_EQS, threshold="v_pool > 0.5",
                               reset=(f"reads += map{n + 1}_kernel(i, 1.0)\n" if feeds else "") + POOL_RESET,
                               method="exact", name=f"map{n}_pool",
                               namespace=dict(base, **({f"map{n + 1}_kernel": self.kernels[n]} if feeds else {})))
            pool.run_regularly("locked = 0\nv_pool = 0", dt=p.t_present, when="start", name=f"map{n}_pool_onset")
            to_pool = Synapses(exc, pool, TO_POOL_EQS, on_pre=TO_POOL, name=f"map{n}_to_pool", namespace=dict(space))
            to_pool.connect(i=pool_src, j=pool_tgt)
            fan_out["to_pool"] = np.bincount(pool_src, minlength=size)
            to_pool.run_regularly("n_seen = 0\nchosen = 0", dt=p.t_present, when="start", name=f"map{n}_race_onset")
            counts = [StateMonitor(group, "count", record=True, dt=p.t_present, when="start", order=-1,
                                   name=f"{group.name}_counts") for group in (exc, pool)]
            recorded = (exc, pool, *((wta["inh"],) if "inh" in wta else ()), *((self.pixels,) if n == 1 else ()))
            spikes = [SpikeMonitor(group, name=f"{group.name}_spikes") for group in recorded] if net.record else []
            if net.record:  # u in the first step of each presentation, once the onset events have arrived
                spikes.append(StateMonitor(exc, "u", record=True, dt=p.t_present, when="after_resets",
                                           name=f"{exc.name}_onset_u"))
            if p.wta == "circuit":
                fan_out.update(to_inh=np.ones(size), from_inh=np.full(len(wta["inh"]), layer.channels))
            self.layers.append(dict(exc=exc, weights=weights, source=source, pool=pool, to_pool=to_pool, counts=counts,
                                    spikes=spikes, fan_out=fan_out,
                                    shape=(layer.channels, shape[1], shape[2]), pooled=(layer.channels, *pooled_hw),
                                    **wta))
            objects += [exc, weights, pool, to_pool, *counts, *spikes, *wta.values()]
            source = pool
        self.seed_variable = self.layers[0]["exc"].variables["rng_seed"]
        self.network = Network(*objects, name="map_network")
        #: neurons updated at every time step (the pixels are event-driven)
        self.neurons = sum(len(group) for group in objects if isinstance(group, NeuronGroup) and group is not self.pixels
                           and not group.name.endswith(("_norm", "_weights")))
        self.namespace = {}

    @staticmethod
    def _inhibition(n: int, exc, positions: int, channels: int, p: SpikingParams) -> dict:
        """Per position: the circuit's inhibitory relays, or an ideal normaliser."""
        if p.wta == "ideal":
            norm = NeuronGroup(positions, "Zsum : 1", name=f"map{n}_norm")
            to_norm = Synapses(exc, norm, "Zsum_post = ex_pre : 1 (summed)", name=f"map{n}_to_norm")
            to_norm.connect(i=np.arange(positions * channels), j=np.repeat(np.arange(positions), channels))
            to_norm.summed_updaters["Zsum_post"].order = 1
            exc.Z = linked_var(norm, "Zsum", index=np.repeat(np.arange(positions), channels))
            return dict(norm=norm, to_norm=to_norm)
        m = min(p.n_inhibitory, channels)
        inh = NeuronGroup(positions * m, "v_inh : 1\nfired : 1", threshold="v_inh > 0.5", reset="v_inh -= 1\nfired += 1",
                          name=f"map{n}_inh")
        to_inh = Synapses(exc, inh, on_pre="v_inh_post += 1", delay=p.inhibition_delay, name=f"map{n}_to_inh")
        k = np.arange(positions * channels)
        to_inh.connect(i=k, j=(k // channels) * m + (k % channels) % m)
        from_inh = Synapses(inh, exc, on_pre="h_post += J", name=f"map{n}_from_inh",
                            namespace=dict(J=float(p.inhibition_strength)))
        j = np.arange(positions * m)
        from_inh.connect(i=np.repeat(j, channels), j=(np.repeat(j // m, channels) * channels
                                                      + np.tile(np.arange(channels), len(j))))
        return dict(inh=inh, to_inh=to_inh, from_inh=from_inh)


class SpikingConvNet:
    """Spiking SoftHebb layers over whole images: ``pixels -> [map layer -> race pooling] x L -> pooled counts``.

    Args:
        layers: the :class:`MapLayer` s, first to last (layer ``l + 1``'s inputs are layer ``l``'s pooled
            channels, so its ``in_channels`` must be layer ``l``'s ``channels``).
        in_shape: ``(C, H, W)`` of the standardised images.
        params: :class:`snn.params.SpikingParams` (``t_present`` is the time of one whole image).
        pool: ``(kernel, stride, padding)`` of every layer's max pooling (the presets' ``max_4_2_1``).
        pool_race: spikes that lock a pooling unit to the first neuron of its window that fires them.
        settle: layer ``l`` counts from ``t_blank + (l - 1) settle`` (default ``3 tau``).
        chunk: images per compiled run.
        seed: seed of the generator that seeds each run.
        record: also record every spike of the excitatory and pooling populations (compiled in).
        threads: OpenMP threads of the compiled code.

    Kernels, standardisations and temperatures are run-time values: the project is compiled once per
    structure (shapes, channels, ``params``, pooling, ``chunk``) and re-run.
    """

    def __init__(self, layers: list[MapLayer], in_shape: tuple[int, int, int], params: SpikingParams | None = None,
                 pool: tuple[int, int, int] = (4, 2, 1), pool_race: int = 4, settle=None, chunk: int = 20,
                 seed: int | None = None, record: bool = False, threads: int = 1):
        self.layers = list(layers)
        self.params = params if params is not None else SpikingParams()
        self.in_shape = tuple(int(v) for v in in_shape)
        self.pool, self.pool_race = tuple(int(v) for v in pool), int(pool_race)
        self.settle = settle if settle is not None else 3 * self.params.tau
        self.chunk, self.record, self.threads = int(chunk), bool(record), int(threads)
        self.rng = np.random.default_rng(seed)
        if not self.layers:
            raise ValueError("a SpikingConvNet needs at least one layer")
        if self.pool_race < 1 or self.chunk < 1:
            raise ValueError(f"pool_race and chunk must be >= 1, got {pool_race}, {chunk}")
        channels = self.in_shape[0]
        for n, layer in enumerate(self.layers, 1):
            if layer.kernels.ndim != 2 or layer.kernels.shape[1] != channels * layer.kernel_size ** 2:
                raise ValueError(f"layer {n}: kernels {layer.kernels.shape} do not take {channels} channels of "
                                 f"{layer.kernel_size}x{layer.kernel_size} patches")
            if n > 1 and (layer.mean is None or layer.std is None or np.shape(layer.mean) != (channels,)
                          or np.shape(layer.std) != (channels,) or np.any(np.asarray(layer.std) <= 0)):
                raise ValueError(f"layer {n} needs the standardisation (mean, std > 0) of its {channels} input channels")
            channels = layer.channels
        start = self.params.t_blank + (len(self.layers) - 1) * self.settle
        if not start < self.params.t_present:
            raise ValueError(f"the last layer counts from {start}, after the presentation's end "
                             f"(t_present {self.params.t_present}): lengthen t_present or shorten settle")
        check_compiler()

    # --- structure -------------------------------------------------------------------------------
    def _placeholders(self) -> dict:
        return {"stimulus": np.zeros((self.chunk, int(np.prod(self.in_shape)))), "present_gate": np.ones(self.chunk)}

    @property
    def build_dir(self):
        shapes = ";".join(f"{layer.channels}x{layer.in_channels}x{layer.kernel_size}" for layer in self.layers)
        text = (f"{self.in_shape};{shapes};{self.pool};{self.pool_race};{float(self.settle / ms)};{self.chunk};"
                f"{self.record};{self.threads};finite-math;{self.params.key()};{MAP_EQS}{MAP_WTA_EQS}{TO_POOL}{POOL_EQS}"
                f"{circuit_text(False, self.params.wta)}")
        return cache_dir() / f"map_{self.params.wta}_{shapes}_c{self.chunk}_{hashlib.sha1(text.encode()).hexdigest()[:10]}"

    def build(self) -> None:
        """Compile the standalone project of this structure, unless the device holds it already."""
        if not holds_project(self.build_dir):
            compile_project(self.build_dir, self.threads, self.params.dt, lambda: _MapNetwork(self, self._placeholders()),
                            self.chunk * self.params.t_present, finite_math=True)

    # --- running ---------------------------------------------------------------------------------
    def present(self, images: np.ndarray) -> MapPresentation:
        """Present standardised ``images (N, C, H, W)``, one per ``t_present``; counts per layer and per image."""
        x = np.asarray(images, dtype=np.float64)
        if x.ndim != 4 or x.shape[1:] != self.in_shape:
            raise ValueError(f"images must have shape (N, {', '.join(map(str, self.in_shape))}), got {x.shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError("images hold non-finite values")
        x = np.clip(x, -LIMIT, LIMIT)
        self.build()
        net: _MapNetwork = active_network()
        maps = [[] for _ in self.layers]
        pooled = [[] for _ in self.layers]
        totals: dict[str, float] = {}
        spikes: dict[str, list] = {}
        onset_u = [[] for _ in self.layers]
        t_present = float(self.params.t_present / second)
        steps = int(round(float(self.params.t_present / self.params.dt)))
        for start in range(0, len(x), self.chunk):
            m = min(self.chunk, len(x) - start)
            stimulus = np.zeros((self.chunk, int(np.prod(self.in_shape))))
            stimulus[:m] = x[start:start + m].reshape(m, -1)
            gate = np.zeros(self.chunk)
            gate[:m] = 1.0
            args = {net.timed["stimulus"]: stimulus, net.timed["present_gate"]: gate,
                    net.layers[0]["exc"].rng_seed: float(self.rng.integers(2 ** 31))}
            for n, (layer, objects) in enumerate(zip(self.layers, net.layers), 1):
                kernels = np.asarray(layer.kernels, dtype=np.float64)
                if n > 1:  # a pooling unit's spikes all carry the block's gain g of their channel: folded into the table
                    g = 1.0 / (np.asarray(layer.std, dtype=np.float64) * float(self.params.output_rate * self.params.tau))
                    kernels = kernels * np.repeat(g, layer.kernel_size ** 2)
                args[objects["weights"].w] = kernels.T.ravel()  # entry e of kernel k at e * K + k
                exc = objects["exc"]
                args[exc.inv_temp] = float(layer.inverse_temperature)
                if self.params.wta == "circuit":
                    args[exc.h] = np.full(len(exc), math.log(layer.channels))
                    args[exc.drift] = self.params.inhibition_strength * float(self.params.output_rate * self.params.dt)
                if n > 1:
                    b = -np.asarray(layer.mean) / np.asarray(layer.std)
                    beta = layer.kernels.reshape(layer.channels, layer.in_channels, -1).sum(2) @ b
                    args[exc.beta] = np.tile(beta, len(exc) // layer.channels)
            run_project(args)
            for n, objects in enumerate(net.layers):
                for store, monitor, shape in ((maps[n], objects["counts"][0], objects["shape"]),
                                              (pooled[n], objects["counts"][1], objects["pooled"])):
                    store.append(_counts(monitor, m, shape))
            for name, value in self._events(net).items():
                totals[name] = totals.get(name, 0.0) + value
            totals["neuron_updates"] = totals.get("neuron_updates", 0.0) + m * net.neurons * steps
            if self.record:
                for n, objects in enumerate(net.layers):
                    *monitors, onset = objects["spikes"]
                    c, h, w = objects["shape"]
                    onset_u[n].append(np.asarray(onset.u[:]).T[:m].reshape(m, h, w, c).transpose(0, 3, 1, 2))
                    for monitor in monitors:
                        t = np.asarray(monitor.t[:] / second)
                        keep = t < m * t_present
                        spikes.setdefault(monitor.source.name, []).append(
                            (np.asarray(monitor.i[:])[keep], t[keep] + start * t_present))
        spikes = {k: tuple(np.concatenate(parts) for parts in zip(*v)) for k, v in spikes.items()}
        return MapPresentation([np.concatenate(v) for v in maps], [np.concatenate(v) for v in pooled],
                               {k: float(v) / len(x) for k, v in totals.items()}, spikes,
                               [np.concatenate(v) for v in onset_u] if self.record else [])

    def _events(self, net: _MapNetwork) -> dict:
        """Events of the last run, totals: spikes per population, synaptic operations, device reads."""
        def fired(group) -> np.ndarray:
            return np.asarray(group.fired[:], dtype=np.float64) if "fired" in group.variables else \
                np.asarray(group.count[:], dtype=np.float64)


        pixel_events = fired(net.pixels)
        out = {"input_events": float(pixel_events.sum()), "excitatory_spikes": 0.0, "inhibitory_spikes": 0.0,
               "pooling_spikes": 0.0, "synaptic_ops": 0.0, "device_reads": 0.0}
        for objects in net.layers:
            fan_out = objects["fan_out"]  # each event of a source reaches all its synapses
            reads = float(np.sum(objects["source"].reads[:]))  # counted by the shared kernel as it adds
            out["device_reads"] += reads
            exc = fired(objects["exc"])
            pool = fired(objects["pool"])
            out["excitatory_spikes"] += exc.sum()
            out["pooling_spikes"] += pool.sum()
            routing = float(exc @ fan_out["to_pool"])
            if "inh" in objects:
                inh = fired(objects["inh"])
                out["inhibitory_spikes"] += inh.sum()
                routing += float(exc @ fan_out["to_inh"] + inh @ fan_out["from_inh"])
            out["synaptic_ops"] += reads + routing
        return out


def _counts(monitor, m: int, shape: tuple[int, int, int]) -> np.ndarray:
    """``(m, K, H, W)`` spikes per presentation from a cumulative count sampled before each onset."""
    before = np.asarray(monitor.count[:]).T  # (presentations, neurons)
    total = np.asarray(monitor.source.count[:])[None]
    per = np.rint(np.diff(np.concatenate([before, total])[:m + 1], axis=0)).astype(np.int64)
    k, h, w = shape
    return per.reshape(m, h, w, k).transpose(0, 3, 1, 2)


__all__ = ["SpikingConvNet", "MapLayer", "MapPresentation", "conv_connections", "pool_connections",
           "race_win_probability"]
