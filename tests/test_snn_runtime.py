"""The numpy runtime backend of the spiking layer (small networks, no compiler needed).

Kept apart from test_snn.py so that the compiled standalone project there is not set up twice.
"""
import numpy as np
import pytest

pytest.importorskip("brian2")

from snn import reference  # noqa: E402
from snn.layer import SpikingSoftHebb  # noqa: E402

K, N_IN = 16, 25


def unit_rows(rng, norm):
    w = rng.standard_normal((K, N_IN))
    return norm * w / np.linalg.norm(w, axis=1, keepdims=True)


def test_runtime_backend_zero_patches_change_nothing():
    layer = SpikingSoftHebb(N_IN, 4, chunk=4, backend="runtime", seed=0, lr=0.1)
    w0 = layer.weights.copy()
    out = layer.present(np.zeros((3, N_IN)), learn=True)
    assert out.counts.shape == (3, 4) and out.counts.sum() > 0  # the population still fires at rate R
    np.testing.assert_array_equal(out.weights, w0)  # x = 0: traces and u stay 0, so dw = 0
    with pytest.raises(ValueError):
        layer.present(np.zeros((2, N_IN + 1)))


def test_runtime_backend_learns_in_the_rate_rule_direction():
    """The numpy runtime target runs the same equations: its first-presentation update agrees in sign."""
    rng = np.random.default_rng(3)
    x = np.tile(rng.uniform(-1, 2, N_IN), (2, 1))
    w0 = unit_rows(rng, 3.0)
    expected = reference.expected_update(x[:1], w0, 1.0, 1e-2, 0.5)
    rt = SpikingSoftHebb(N_IN, K, chunk=2, backend="runtime", weights=w0, lr=1e-2)
    d_rt = rt.present(x).weights - w0
    k = np.argmax(np.abs(expected).sum(1))  # the neuron with the largest expected update
    cos = d_rt[k] @ expected[k] / (np.linalg.norm(d_rt[k]) * np.linalg.norm(expected[k]))
    assert cos > 0.8


def test_plastic_events_program_a_device():
    """With a device attached, the weights a run leaves are the device's read-back of the programmed change."""
    import torch

    import hardware_models

    rng = np.random.default_rng(5)
    x = np.tile(rng.uniform(-1, 2, N_IN), (2, 1))
    w0 = unit_rows(rng, 3.0)
    levels = 8
    device = hardware_models.make_synapse(f"linear{levels}", seed=0)
    layer = SpikingSoftHebb(N_IN, K, chunk=2, backend="runtime", weights=w0, lr=0.5, synapse=device)
    step = 2 * device.w_max / (levels - 1)
    on_grid = lambda w: np.abs((w + device.w_max) / step - np.round((w + device.w_max) / step)).max()  # noqa: E731
    assert on_grid(layer.weights) < 1e-9  # attach quantised the initial weights
    w_attached = layer.weights.copy()
    out = layer.present(x, learn=True)
    assert device.pulses > 0 and not np.array_equal(out.weights, w_attached)  # learning went through the device
    assert on_grid(out.weights) < 1e-9 and np.abs(out.weights).max() <= device.w_max + 1e-12
    np.testing.assert_array_equal(out.weights, device.read().numpy())
    # inference programs nothing
    pulses = device.pulses
    layer.present(x, learn=False)
    assert device.pulses == pulses
    assert torch.equal(device.read(), torch.from_numpy(out.weights))


@pytest.mark.parametrize("burst", [True, False])
def test_input_events_are_the_bernoulli_sequence(burst):
    """Event-driven inputs (geometric waiting times) give one event per step with probability r0 |x| dt.

    Checked on the event counts per presentation: their mean (r0 |x| dt per step) and their variance,
    which is the Bernoulli sequence's ``n q (1 - q)`` (a Poisson process would give ``n q``); and the
    first step of a presentation: one graded onset event per input with the burst, a Bernoulli draw
    without it.
    """
    from brian2 import SpikeMonitor, defaultclock, prefs, second

    from snn.layer import _Net
    from snn.params import preset

    params = preset("fast", onset_burst=burst)
    prefs.codegen.target = "numpy"
    defaultclock.dt = params.dt
    x = np.array([0.0, 0.3, -1.0, 2.8, -2.8])
    n = 100
    net = _Net(len(x), 2, n, params, np.tile(x, (n, 1)))
    monitor = SpikeMonitor(net.inputs)
    net.network.add(monitor)
    for name, value in dict(inv_temp=1.0, lr=0.0, lr_power=0.5, anti=1.0).items():
        setattr(net.outputs, name, value)
    net.network.run(n * params.t_present, namespace=net.namespace)
    steps_per = int(round(float(params.t_present / params.dt)))
    step = np.rint(np.asarray(monitor.t[:] / second) / float(params.dt)).astype(np.int64)
    idx, pres, first = np.asarray(monitor.i[:]), step // steps_per, step % steps_per == 0
    q = float(params.input_rate * params.dt) * np.abs(x)
    later = np.zeros((n, len(x)))
    np.add.at(later, (pres[~first], idx[~first]), 1)
    m = steps_per - 1  # steps after the first
    mean, var = m * q, m * q * (1 - q)
    sem = np.sqrt(var / n)
    np.testing.assert_array_less(np.abs(later.mean(0) - mean), 4 * sem + 1e-12)
    np.testing.assert_allclose(later.var(0)[1:], var[1:], rtol=0.4)  # sd of a sample variance ~ 15 % here
    assert later.var(0)[3] < 0.5 * mean[3]  # q = 0.7: far from Poisson
    onset = np.bincount(idx[first], minlength=len(x)) / n
    if burst:
        np.testing.assert_array_equal(onset, np.ones(len(x)))
    else:
        np.testing.assert_array_less(np.abs(onset - q), 4 * np.sqrt(q * (1 - q) / n) + 1e-12)


def test_counts_per_presentation_equal_the_recorded_spikes():
    layer = SpikingSoftHebb(N_IN, 4, chunk=3, backend="runtime", seed=0, record_spikes=True)
    out = layer.present(np.random.default_rng(0).uniform(-1, 1, (3, N_IN)), learn=False)
    pres = np.floor(out.spike_t / 0.05 + 1e-9).astype(np.int64)
    from_spikes = np.zeros_like(out.counts)
    np.add.at(from_spikes, (pres, out.spike_i), 1)
    np.testing.assert_array_equal(out.counts, from_spikes)
    assert out.counts.sum() > 50  # about R T = 49 spikes per presentation


def test_relay_layer_replays_the_given_spike_trains_runtime():
    """snn.relay on the numpy backend: every relay input fires the spikes of the train it relays."""
    from snn import relay

    N, K, H, W = 1, 2, 4, 4
    n_trains = N * H * W * K
    lengths = 1 + np.arange(n_trains) % 3
    times = np.concatenate([0.002 + 0.004 * np.arange(n) for n in lengths])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    shares = np.random.default_rng(0).uniform(0.05, 0.95, (N, K, H, W))
    trains = relay.Layer1Trains(times, offsets, shares, t_count=0.049, rate=1000.0)
    np.testing.assert_array_equal(trains.counts().transpose(0, 2, 3, 1).reshape(-1), lengths)
    pooled, selected = relay.pool_select(shares)
    mean, std = relay.fit_standardisation(pooled)
    keys, _ = relay.relay_plan(trains, selected, np.array([[0, 0, 0], [0, 1, 1], [0, 0, 1]]))
    _, counts, _, _ = relay.relay_inputs(trains, keys, mean, std)
    layer = relay.SpikingRelayLayer(K, 2, mean, std, backend="runtime", record_inputs=True, seed=0)
    w0 = layer.weights.copy()
    out = layer.present_relay(trains, keys, learn=False)
    np.testing.assert_array_equal(out.input_counts, counts)
    assert counts.sum() > 0 and out.counts.shape == (3, 2)
    np.testing.assert_array_equal(out.weights, w0)
