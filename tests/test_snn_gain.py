"""The spiking layer with a homeostatic gain (``normalisation=rules.HomeostaticGain``): each neuron's gain is a
state variable that decays with its time constant and rises, at the end of every batch of presentations,
to the largest pending change of the neuron's synapses; the changes are then applied divided by it.

The references are :class:`rate_decoder.rules.HomeostaticGain` itself (its first step, its decay, its
learning on the same patches) and the exact expectation of the spikes given the input events
(``spiking_expectation``), as for the layer without a gain.
"""
import types

import numpy as np
import pytest
import torch
from conftest import require_compiler, require_data
from spiking_expectation import given_on_off_inputs, z_bound

from rate_decoder import rules
from snn import SpikingSoftHebb, data, preset, reference

K, N_IN, CHUNK = 16, 25, 2000
TAU = 100.0  # the gain's time constant, in batches
LEARN = dict(inverse_temperature=1.0, lr=0.03, lr_power=0.5)
BATCH = 20  # presentations per batch in the learning tests: 1000 batches of 20k patches


@pytest.fixture(scope="module")
def patches():
    require_data("mnist.npz")
    images, _ = data.load_mnist("train", 10000)
    return data.random_patches(images, 20000, 5, seed=1)


@pytest.fixture(scope="module")
def init_weights():
    return np.random.default_rng(2).standard_normal((K, N_IN)) * 25 / np.sqrt(N_IN)


def gained(wta="ideal", gain=None, batch=BATCH, **kwargs):
    """A layer with a homeostatic gain (``gain``: its initial state, ``(K,)``; default none yet)."""
    require_compiler()
    norm = rules.HomeostaticGain(TAU)
    if gain is not None:
        norm.load_state_dict({"gain": torch.as_tensor(gain, dtype=torch.float64)})
    return SpikingSoftHebb(N_IN, K, params=preset("fast", wta=wta), chunk=CHUNK, normalisation=norm,
                           gain_batch=batch, **kwargs)


def rate_factor(w, lr, lr_power):
    return lr * (np.abs(np.linalg.norm(w, axis=1) - 1.0) + 1e-10) ** lr_power


@pytest.mark.parametrize("wta", ["ideal", "circuit"])
def test_first_batch_moves_each_neuron_by_its_rate(patches, init_weights, wta):
    """Before any batch the gain is 0, so the first batch sets it to the batch's own largest change and every
    neuron that changed moves its largest synapse by exactly ``lr * (| |w_k| - 1 |)^q``: the rate rule's
    first step (:class:`rules.HomeostaticGain`). A gain applied before it rose, or not at all, gives
    another step; a rate factor read from weights already changed, another size per synapse."""
    layer = gained(wta, seed=3, weights=init_weights, **LEARN)
    out = layer.present(patches[:BATCH])
    moved = np.abs(out.weights - init_weights).max(axis=1)
    changed = moved > 0
    assert changed.any()
    np.testing.assert_allclose(moved[changed], rate_factor(init_weights, **{k: LEARN[k] for k in ("lr", "lr_power")})
                               [changed], rtol=1e-9)
    gain = layer.normaliser.gain.numpy()
    assert (gain[changed] > 1e-20).all() and (gain[~changed] == 1e-30).all()


def test_gain_decays_with_its_time_constant(init_weights):
    """Without input the pending changes are 0, so over two batches the gain only decays: by ``e^{-1/tau}``
    per batch, as the rate rule's does, and not during the silent padding of the compiled run."""
    g0 = np.linspace(1.0, 2.0, K)
    layer = gained(gain=g0, seed=3, weights=init_weights, **LEARN)
    out = layer.present(np.zeros((2 * BATCH, N_IN)))
    np.testing.assert_array_equal(out.weights, init_weights)
    np.testing.assert_allclose(layer.normaliser.gain.numpy(), g0 * np.exp(-2.0 / TAU), rtol=1e-9)


def test_gain_is_local_to_its_neuron(patches, init_weights):
    """A neuron's change depends on its own gain, not on the others': the same spikes (same seed) with the
    gains of the other neurons changed leave its weights as they were, and its own gain changes them."""
    g0 = np.full(K, 1e4)
    base = gained(gain=g0, seed=4, weights=init_weights, **LEARN).present(patches[:BATCH]).weights
    k = int(np.argmax(np.abs(base - init_weights).max(axis=1)))
    others = g0.copy()
    others[np.arange(K) != k] *= 7.0
    w_others = gained(gain=others, seed=4, weights=init_weights, **LEARN).present(patches[:BATCH]).weights
    np.testing.assert_array_equal(w_others[k], base[k])
    own = g0.copy()
    own[k] *= 7.0
    w_own = gained(gain=own, seed=4, weights=init_weights, **LEARN).present(patches[:BATCH]).weights
    assert not np.array_equal(w_own[k], base[k])


@pytest.mark.parametrize("rule", ["softhebb", "soft"])
def test_batch_change_is_the_expected_update_divided_by_the_gain(patches, rule):
    """Over one batch of 1000 patches the weights stay as they are and each spike's change waits; with a
    gain well above the batch's changes, the gain after the batch is its decay alone and the change
    is the layer's raw update (each spike's ``sigma_k (a - u_k w_k) / (R T)``, summed) times
    ``lr * (| |w_k| - 1 |)^q / gain``. Its exact mean and variance given the input events bound every
    synapse's z-score (Bonferroni over 2 x 400 synapses, family-wise 1e-3). The weights being frozen
    within the batch, the reference at ``w0`` is exact."""
    m, lr, g0 = 1000, 1.0, 1e5
    w0 = np.random.default_rng(5).standard_normal((K, N_IN))
    w0 *= 1.5 / np.linalg.norm(w0, axis=1, keepdims=True)
    layer = gained(gain=np.full(K, g0), batch=m, seed=7, weights=w0, inverse_temperature=1.0, lr=lr,
                   lr_power=0.5, rule=rule)
    out = layer.present(patches[:m], record_inputs=True)
    held = g0 * np.exp(-1.0 / TAU)
    np.testing.assert_allclose(layer.normaliser.gain.numpy(), held, rtol=1e-9)
    raw = types.SimpleNamespace(params=layer.params, inverse_temperature=1.0, lr=lr / held, lr_power=0.5, rule=rule)
    ref = given_on_off_inputs(out, patches[:m], raw, w0)
    z = (out.weights - w0 - ref["dw_mean"]) / np.sqrt(ref["dw_var"])
    assert np.abs(ref["dw_mean"]).max() > 0
    assert np.abs(z).max() < z_bound(2 * z.size), np.abs(z).max()


@pytest.mark.parametrize("wta", ["ideal", "circuit"])
def test_learning_matches_the_rate_rule_with_the_gain(patches, init_weights, wta):
    """20k patches in batches of 20 from norms ~25, 16 neurons: the spiking layer learns the kernels that
    :class:`rules.HomeostaticGain` learns on the same batches (matched mean cosine >= 0.98, median norm
    error <= 0.15; measured, seeds 1-2: ideal 0.990-0.991 / 0.045-0.052, circuit 0.995-0.996 / 0.024-0.032,
    and the rate rule on the same patches in reverse order: 0.994 / 0.056). A gain frozen at its first
    batch (``rules.FixedGain``) learns other kernels: the spiking ones lie closer to the homeostatic rule's."""
    x = patches
    rate = reference.rate_learn(x, init_weights, **LEARN, normalisation=rules.HomeostaticGain(TAU), batch=BATCH)
    frozen = reference.rate_learn(x, init_weights, **LEARN, normalisation=rules.FixedGain(), batch=BATCH)
    spiking = gained(wta, seed=1, weights=init_weights, **LEARN).present(x).weights
    vs_rate, vs_frozen = reference.compare(spiking, rate), reference.compare(spiking, frozen)
    assert vs_rate["mean_cosine"] >= 0.98 and vs_rate["median_rel_norm_error"] <= 0.15, vs_rate
    assert vs_rate["median_rel_norm_error"] < vs_frozen["median_rel_norm_error"], (vs_rate, vs_frozen)


def test_a_device_is_programmed_at_each_batch_end(patches, init_weights):
    """The gained changes go through the device's event code (:mod:`snn.device_events`): on a linear 16-state
    device every weight stays on the device's grid, and the batches' changes cost pulses."""
    from hardware_models import make_synapse
    synapse = make_synapse("linear16:w_max_unit=4", seed=0)
    layer = gained("circuit", seed=1, weights=init_weights, synapse=synapse, **LEARN)
    before = layer.weights.copy()
    after = layer.present(patches[:2000]).weights
    assert synapse.pulses > 0 and (after != before).mean() > 0.5
    assert len(np.unique(after)) <= 16


@pytest.mark.parametrize("bad, message", [
    (dict(normalisation="peak"), "spiking layer's update normalisation"),
    (dict(normalisation="global"), "spiking layer's update normalisation"),
    (dict(normalisation="homeostatic", gain_batch=0), "gain_batch"),
    (dict(normalisation="homeostatic", gain_batch=3), "multiple of gain_batch"),
    (dict(normalisation="homeostatic", threads=2), "threads=1"),
])
def test_bad_gain_settings_are_named(bad, message):
    require_compiler()
    with pytest.raises(ValueError, match=message):
        SpikingSoftHebb(N_IN, K, chunk=CHUNK, **bad)
