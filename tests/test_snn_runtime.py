"""The spiking layers on Brian2's numpy runtime backend (small networks, no compiler needed).

The equations are the compiled backend's (:mod:`snn.network`); these tests check them where a
compiler may be missing, and the parts that do not depend on the backend (inputs, device models).
"""
import doctest

import brian2
import numpy as np
import pytest
from spiking_expectation import event_steps, given_on_off_inputs, z_bound

import hardware_models
import snn.layer
from snn import SpikingRelayLayer, SpikingSoftHebb, decoding, preset, relay

K, N_IN = 8, 25


def unit_rows(rng, norm, k=K):
    w = rng.standard_normal((k, N_IN))
    return norm * w / np.linalg.norm(w, axis=1, keepdims=True)


def test_docstring_example_runs():
    assert doctest.testmod(snn.layer, raise_on_error=True).attempted > 0


def test_zero_patches_change_nothing():
    layer = SpikingSoftHebb(N_IN, 4, chunk=4, backend="runtime", seed=0, lr=0.1)
    w0 = layer.weights.copy()
    out = layer.present(np.zeros((3, N_IN)), learn=True)
    assert out.counts.shape == (3, 4) and out.counts.sum() > 0  # the population still fires at rate R
    np.testing.assert_array_equal(out.weights, w0)  # x = 0: traces and u stay 0, so dw = 0
    with pytest.raises(ValueError):
        layer.present(np.zeros((2, N_IN + 1)))


def test_counts_and_weight_change_are_their_expectations_given_the_inputs():
    """20 presentations on the numpy target: each neuron's total count and each synapse's weight change
    against their exact mean and variance given the recorded input events (``spiking_expectation``;
    the derivation is there). ``lr = 1e-6``: the weights move by less than 1e-4 of their size during
    the run (asserted), so evaluating every spike's update at ``w0`` leaves no visible bias. ``K``
    totals and ``K * 25`` synapses: Bonferroni bound at family-wise 1e-3 (~4.6)."""
    rng = np.random.default_rng(3)
    x = np.clip(rng.standard_normal((20, N_IN)), -2.5, 2.5)
    w0 = unit_rows(rng, 1.5)
    layer = SpikingSoftHebb(N_IN, K, params=preset("fast", wta="ideal"), backend="runtime", weights=w0, seed=4,
                            lr=1e-6)
    out = layer.present(x, learn=True, record_inputs=True)
    assert np.abs(out.weights - w0).max() < 1e-4 * np.abs(w0).max()
    ref = given_on_off_inputs(out, x, layer, w0)
    z_counts = (out.counts.sum(0) - ref["count_mean"].sum(0)) / np.sqrt(ref["count_var"].sum(0))
    z_dw = (out.weights - w0 - ref["dw_mean"]) / np.sqrt(ref["dw_var"])
    bound = z_bound(K + z_dw.size)
    assert np.abs(z_counts).max() < bound, z_counts
    assert np.abs(z_dw).max() < bound, np.abs(z_dw).max()


def test_plastic_events_program_a_device():
    """With a device attached, the weights a run leaves are the device's read-back of the programmed change."""
    import torch

    rng = np.random.default_rng(5)
    x = np.tile(rng.uniform(-1, 2, N_IN), (2, 1))
    w0 = unit_rows(rng, 3.0)
    levels = 8
    device = hardware_models.make_synapse(f"linear{levels}", seed=0)
    layer = SpikingSoftHebb(N_IN, K, chunk=2, backend="runtime", weights=w0, lr=0.5, synapse=device, seed=0)
    step = 2 * device.w_max / (levels - 1)
    on_grid = lambda w: np.abs((w + device.w_max) / step - np.round((w + device.w_max) / step)).max()  # noqa: E731
    assert on_grid(layer.weights) < 1e-9  # attach quantised the initial weights
    w_attached = layer.weights.copy()
    out = layer.present(x, learn=True)
    assert device.pulses > 0 and not np.array_equal(out.weights, w_attached)  # learning went through the device
    assert on_grid(out.weights) < 1e-9 and np.abs(out.weights).max() <= device.w_max + 1e-12
    np.testing.assert_array_equal(out.weights, device.read().numpy())
    pulses = device.pulses
    layer.present(x, learn=False)  # inference programs nothing
    assert device.pulses == pulses
    assert torch.equal(device.read(), torch.from_numpy(out.weights))


@pytest.mark.parametrize("burst", [True, False])
def test_input_events_are_the_bernoulli_sequence(burst):
    """Event-driven inputs (geometric waiting times) give one event per step with probability ``q = r0 |x| dt``.

    After the onset step, an input's events in the ``m`` remaining steps of a presentation are
    Binomial(m, q): mean ``m q``, variance ``m q (1 - q)`` (a Poisson process would give ``m q``),
    fourth central moment ``m q (1 - q) (1 + 3 (m - 2) q (1 - q))``, from which the standard errors of
    the sample mean and variance over ``n`` presentations follow. In the onset step, each input sends
    one graded event with the burst, and a Bernoulli(q) event without it. Presentations are 10 ms
    (the law does not depend on their length) so that 300 of them run quickly. 13 z-scores per case,
    two cases: Bonferroni bound at family-wise 1e-3 (~4.1).
    """
    params = preset("fast", onset_burst=burst, t_present=10 * brian2.ms)
    x = np.array([0.0, 0.3, -1.0, 2.8, -2.8])
    n = 300
    layer = SpikingSoftHebb(len(x), 2, params=params, backend="runtime", seed=int(burst), lr=0.0)
    out = layer.present(np.tile(x, (n, 1)), learn=False, record_inputs=True)
    pres, step, index = event_steps(out.input_i, out.input_t, params)
    later = np.zeros((n, len(x)))
    np.add.at(later, (pres, index), 1)
    m = int(round(float(params.t_present / params.dt))) - 1
    q = float(params.input_rate * params.dt) * np.abs(x)
    mean, var = m * q, m * q * (1 - q)
    m4 = var * (1 + 3 * (m - 2) * q * (1 - q))
    bound = z_bound(2 * 13)
    active = q > 0
    assert np.all(later[:, ~active] == 0)
    z_mean = (later.mean(0) - mean)[active] / np.sqrt(var[active] / n)
    z_var = (later.var(0, ddof=1) - var)[active] / np.sqrt(m4 / n - var ** 2 * (n - 3) / (n * (n - 1)))[active]
    assert np.abs(z_mean).max() < bound and np.abs(z_var).max() < bound, (z_mean, z_var)
    t_step = np.rint(out.input_t / float(params.dt)).astype(np.int64) % (m + 1)
    onset = np.bincount(out.input_i[t_step == 0], minlength=len(x)) / n
    if burst:
        np.testing.assert_array_equal(onset, np.ones(len(x)))
    else:
        assert np.all(np.abs(onset - q) < bound * np.sqrt(q * (1 - q) / n) + 1e-12), (onset, q)


def test_counts_per_presentation_equal_the_recorded_spikes():
    layer = SpikingSoftHebb(N_IN, 4, chunk=3, backend="runtime", seed=0)
    out = layer.present(np.random.default_rng(0).uniform(-1, 1, (3, N_IN)), learn=False, record_spikes=True)
    pres = np.floor(out.spike_t / 0.05 + 1e-9).astype(np.int64)
    from_spikes = np.zeros_like(out.counts)
    np.add.at(from_spikes, (pres, out.spike_i), 1)
    np.testing.assert_array_equal(out.counts, from_spikes)
    assert out.counts.sum() > 0


def test_relay_layer_replays_the_given_spike_trains():
    """:meth:`SpikingRelayLayer.present` on the numpy backend: every relay input fires the spikes of the train
    it relays, at their times (shifted by its presentation's onset), after one onset event."""
    N, K1, H, W = 1, 2, 4, 4
    n_trains = N * H * W * K1
    lengths = 1 + np.arange(n_trains) % 3
    times = np.concatenate([0.002 + 0.004 * np.arange(n) for n in lengths])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    shares = np.random.default_rng(0).uniform(0.05, 0.95, (N, K1, H, W))
    trains = relay.Layer1Trains(times, offsets, shares, t_count=0.049, rate=1000.0)
    pooled, selected = decoding.max_pool(shares)
    mean, std = decoding.fit_standardisation(pooled)
    keys, _ = relay.relay_plan(trains, selected, np.array([[0, 0, 0], [0, 1, 1], [0, 0, 1]]))
    layer = SpikingRelayLayer(K1, 2, mean, std, backend="runtime", seed=0)
    w0 = layer.weights.copy()
    out = layer.present(trains, keys, learn=False, record_inputs=True)
    assert out.counts.shape == (3, 2)
    np.testing.assert_array_equal(out.weights, w0)
    params = layer.params
    pres, step, index = event_steps(out.input_i, out.input_t, params)
    for p in range(len(keys)):
        for i, key in enumerate(keys[p]):
            sent = (step[(pres == p) & (index == i)]) * float(params.dt)
            np.testing.assert_allclose(sent, trains.times[offsets[key]:offsets[key + 1]], atol=1e-9)
    onset = np.rint(out.input_t / float(params.dt)).astype(np.int64) % int(round(float(params.t_present / params.dt)))
    assert np.array_equal(np.bincount(out.input_i[onset == 0], minlength=layer.n_inputs),
                          np.full(layer.n_inputs, len(keys)))
