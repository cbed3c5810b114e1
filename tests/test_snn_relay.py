"""Stacking by spike relay: layer 2's inputs are layer 1's output spike trains, replayed spike by spike.

Layer 1 (the structure of ``test_snn``'s project, random weights of norm 3 so that its shares spread
over several neurons) is presented every position of 4 MNIST images; layer 2 (8 neurons on 3x3 patches
of the 8 pooled maps) replays its trains. The references are computed from the images, layer 1's
weights and the relayed trains, never from layer 2's outputs.
"""
import numpy as np
import pytest
from conftest import require_compiler, require_data
from scipy.special import softmax
from spiking_expectation import event_steps, given_inputs, z_bound

from snn import SpikingRelayLayer, SpikingSoftHebb, data, decoding, preset, record_layer1, relay

K1, K2, N_IMAGES, PATCHES = 8, 8, 4, 500
T1 = 1.0


@pytest.fixture(scope="module")
def stacked():
    require_data("mnist.npz")
    require_compiler()
    params = preset("fast", wta="ideal")
    images, _ = data.load_mnist("train", N_IMAGES)
    w1 = np.random.default_rng(0).standard_normal((K1, 25))
    w1 *= 3.0 / np.linalg.norm(w1, axis=1, keepdims=True)
    layer1 = SpikingSoftHebb(25, K1, params=params, chunk=2 * 784, weights=w1, inverse_temperature=T1, seed=1)
    trains = record_layer1(layer1, images)
    pooled, selected = decoding.max_pool(trains.shares)
    mean, std = decoding.fit_standardisation(pooled)
    positions = relay.patch_positions(N_IMAGES, *pooled.shape[2:], PATCHES, seed=1)
    keys, _ = relay.relay_plan(trains, selected, positions)
    w0 = np.random.default_rng(2).standard_normal((K2, keys.shape[1]))
    w0 *= 1.5 / np.linalg.norm(w0, axis=1, keepdims=True)
    layer2 = SpikingRelayLayer(K1, K2, mean, std, params=params, chunk=PATCHES, weights=w0, inverse_temperature=0.65,
                               lr=1e-6, lr_power=0.5, seed=3)
    out = layer2.present(trains, keys, learn=True, record_inputs=True)
    return dict(images=images, w1=w1, trains=trains, mean=mean, std=std, positions=positions, keys=keys, w0=w0,
                layer2=layer2, out=out, params=params)


def rate_network_inputs(images, w1, mean, std, positions):
    """Layer 2's inputs as the rate network computes them, in numpy: ``softmax(t W1 . patch)`` at every
    position (clipped pixels, reflect padding), max pooling 4/2/1, standardisation, 3x3 patches."""
    x = np.clip(images, -relay.LIMIT, relay.LIMIT)
    N, _, H, W = x.shape
    u = np.stack([data.image_patches(img, 5) @ w1.T for img in x])  # (N, H*W, K1)
    shares = softmax(T1 * u, axis=2).transpose(0, 2, 1).reshape(N, K1, H, W)
    padded = np.pad(shares, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    Hp, Wp = (H + 2 - 4) // 2 + 1, (W + 2 - 4) // 2 + 1
    pooled = np.array([[padded[:, :, 2 * i:2 * i + 4, 2 * j:2 * j + 4].max(axis=(2, 3)) for j in range(Wp)]
                       for i in range(Hp)]).transpose(2, 3, 0, 1)  # (N, K1, Hp, Wp)
    z = (pooled - mean[:, None, None]) / std[:, None, None]
    patches = np.stack([data.image_patches(zb, 3).reshape(Hp, Wp, -1) for zb in z])
    return pooled, patches[positions[:, 0], positions[:, 1], positions[:, 2]]


def test_relayed_inputs_encode_the_rate_networks_pooled_standardised_shares(stacked):
    """What each relay input carries (the selected train's onset share, standardised) is the rate network's
    layer-2 input at that patch: softmax, max pooling, batch-norm statistics and patch order redone in
    numpy from the images and layer 1's weights."""
    s = stacked
    pooled, expected = rate_network_inputs(s["images"], s["w1"], s["mean"], s["std"], s["positions"])
    mean, std = decoding.fit_standardisation(pooled)
    np.testing.assert_allclose(np.stack([mean, std]), np.stack([s["mean"], s["std"]]), rtol=1e-9)
    onset, counts, decoded, encoded = relay.relay_inputs(s["trains"], s["keys"], s["mean"], s["std"])
    np.testing.assert_allclose(encoded, expected, atol=1e-9)
    channel = np.repeat(np.arange(K1), 9)
    np.testing.assert_allclose(onset, (expected * s["std"][channel] + s["mean"][channel]) / s["std"][channel],
                               atol=1e-9)
    rt = float(s["params"].output_rate * s["params"].t_learn)
    np.testing.assert_allclose(decoded, (counts / rt - s["mean"][channel]) / s["std"][channel], atol=1e-9)


def test_layer_two_receives_layer_ones_spikes(stacked):
    """Every relay input fires one onset event, then exactly the spikes of the layer-1 train it relays, at
    their times from the onset (both on the same clock)."""
    s = stacked
    params, keys, trains = s["params"], s["keys"], s["trains"]
    pres, step, index = event_steps(s["out"].input_i, s["out"].input_t, params)
    key = keys[pres, index]
    sent = np.lexsort((step, key, pres))
    lo, hi = trains.offsets[keys.reshape(-1)], trains.offsets[keys.reshape(-1) + 1]
    n = hi - lo
    want_pres = np.repeat(np.repeat(np.arange(len(keys)), keys.shape[1]), n)
    want_key = np.repeat(keys.reshape(-1), n)
    want_step = np.rint(trains.times[np.concatenate([np.arange(a, b) for a, b in zip(lo, hi)])]
                        / float(params.dt)).astype(np.int64)
    want = np.lexsort((want_step, want_key, want_pres))
    np.testing.assert_array_equal(pres[sent], want_pres[want])
    np.testing.assert_array_equal(key[sent], want_key[want])
    np.testing.assert_array_equal(step[sent], want_step[want])


def test_layer_two_update_is_the_expected_update_given_the_relayed_spikes(stacked):
    """Layer 2's counts and weight change against their exact mean and variance given its inputs
    (``spiking_expectation``): traces ``a = b + s`` with ``s`` starting at the onset value and jumping by
    ``g`` per relayed spike, ``u = beta + v = W a``. ``lr = 1e-6`` keeps the weights within 1e-3 of
    ``w0`` (asserted), so evaluating every update at ``w0`` leaves no visible bias. ``K2`` totals and
    ``K2 * 72`` synapses: Bonferroni bound at family-wise 1e-3 (~4.8)."""
    s = stacked
    layer2, out, w0 = s["layer2"], s["out"], s["w0"]
    assert np.abs(out.weights - w0).max() < 1e-3 * np.abs(w0).max()
    onset = relay.relay_inputs(s["trains"], s["keys"], s["mean"], s["std"])[0]
    ref = given_inputs(event_steps(out.input_i, out.input_t, s["params"]), onset, layer2.g, layer2.b, w0,
                       layer2.inverse_temperature, layer2.lr, layer2.lr_power, 1.0, s["params"])
    z_counts = (out.counts.sum(0) - ref["count_mean"].sum(0)) / np.sqrt(ref["count_var"].sum(0))
    z_dw = (out.weights - w0 - ref["dw_mean"]) / np.sqrt(ref["dw_var"])
    bound = z_bound(K2 + z_dw.size)
    assert np.abs(z_counts).max() < bound, z_counts
    assert np.abs(z_dw).max() < bound, np.abs(z_dw).max()
