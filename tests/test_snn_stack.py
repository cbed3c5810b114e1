"""Stacking: layer 2 is driven by layer 1's output spikes and learns what the rate rule learns from them.

Layer 1 here holds random weights of norm 3 (its shares are then spread over several neurons); what is
checked is the relay and layer 2's plasticity, not layer 1's learning (tests/test_snn.py covers that).
"""
import numpy as np
import pytest

pytest.importorskip("brian2")

from snn import data, reference, stack  # noqa: E402
from snn.layer import SpikingSoftHebb  # noqa: E402
from snn.params import preset  # noqa: E402

from experiments.snn_stack import exact_shares  # noqa: E402

K1, K2, CHUNK = 8, 8, 1000
pytestmark = [
    pytest.mark.skipif(not any(__import__("shutil").which(c) for c in ("g++", "c++", "clang++")),
                       reason="no C++ compiler for the cpp_standalone backend"),
    pytest.mark.skipif(not data.mnist_path().is_file(), reason="MNIST not found (set SOFTHEBB_DATA)"),
]


@pytest.fixture(scope="module")
def relayed():
    params = preset("fast")
    images, _ = data.load_mnist("train", 6)
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((K1, 25))
    w1 *= 3.0 / np.linalg.norm(w1, axis=1, keepdims=True)
    layer1 = SpikingSoftHebb(25, K1, params=params, chunk=CHUNK, weights=w1)
    counts = stack.count_maps(layer1, images)
    shares = stack.shares_from_counts(counts, float(params.output_rate), float(params.t_learn))
    return shares, exact_shares(w1, images, 1.0), float(params.output_rate * params.t_learn)


def test_relayed_rates_are_layer_ones_softmax_within_poisson_noise(relayed):
    shares, exact, expected_count = relayed
    assert shares.shape == exact.shape == (6, K1, 28, 28)
    resid = shares - exact
    poisson_rms = np.sqrt((exact / expected_count).mean())  # a count n ~ Poisson(R T p): var(n / RT) = p / RT
    n = resid.size
    assert abs(resid.mean()) < 5 * poisson_rms / np.sqrt(n)  # no bias beyond 5 standard errors
    assert abs(np.sqrt((resid ** 2).mean()) / poisson_rms - 1) < 0.15  # and the noise is Poisson's
    assert not np.allclose(shares, exact, atol=1e-3)  # they are spike counts, not the rates themselves


def test_second_layer_learns_from_relayed_spikes_as_the_rate_rule_does(relayed):
    shares, _, _ = relayed
    pooled = stack.pool_maps(shares)
    z = stack.next_layer_input(pooled, *stack.fit_standardisation(pooled))
    x2 = data.random_patches(z, 4000, 3, seed=1)
    rng = np.random.default_rng(2)
    w0 = rng.standard_normal((K2, x2.shape[1])) * 25 / np.sqrt(x2.shape[1])
    hyper = dict(inverse_temperature=0.65, lr=2e-3, lr_power=0.5)
    layer2 = SpikingSoftHebb(x2.shape[1], K2, params=preset("fast"), chunk=CHUNK, weights=w0, **hyper)
    layer2.present(x2, learn=True)
    rate = reference.rate_learn(x2, w0, **hyper)
    spiking_vs_rate, rate_vs_initial = reference.compare(layer2.weights, rate), reference.compare(rate, w0)
    # the thresholds of the learning test; measured: 0.993 (seed 2: 0.996) against 0.706, norm error 0.02
    assert spiking_vs_rate["mean_cosine"] >= 0.95
    assert spiking_vs_rate["mean_cosine"] >= rate_vs_initial["mean_cosine"] + 0.15
    assert spiking_vs_rate["median_rel_norm_error"] <= 0.2
