"""Stacking by spike relay: layer 2's inputs are layer 1's output spike trains, replayed spike by spike.

Layer 1 holds random weights of norm 3 (its shares spread over several neurons); 6 MNIST images, 8 + 8
neurons, 3000 layer-2 presentations: two standalone projects, ~30-45 s on one core.
"""
import numpy as np
import pytest

pytest.importorskip("brian2")

from snn import data, reference, relay  # noqa: E402
from snn.layer import SpikingSoftHebb  # noqa: E402
from snn.params import preset  # noqa: E402

K1, K2, N_IMAGES, PATCHES = 8, 8, 6, 3000
pytestmark = [
    pytest.mark.skipif(not any(__import__("shutil").which(c) for c in ("g++", "c++", "clang++")),
                       reason="no C++ compiler for the cpp_standalone backend"),
    pytest.mark.skipif(not data.mnist_path().is_file(), reason="MNIST not found (set SOFTHEBB_DATA)"),
]
HYPER = dict(inverse_temperature=0.65, lr=2e-3, lr_power=0.5)


@pytest.fixture(scope="module")
def stacked():
    params = preset("fast")
    images, _ = data.load_mnist("train", N_IMAGES)
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((K1, 25))
    w1 *= 3.0 / np.linalg.norm(w1, axis=1, keepdims=True)
    layer1 = SpikingSoftHebb(25, K1, params=params, chunk=2 * 784, weights=w1, record_spikes=True)
    trains = relay.record_layer1(layer1, images)
    pooled, selected = relay.pool_select(trains.shares)
    mean, std = relay.fit_standardisation(pooled)
    positions = relay.patch_positions(N_IMAGES, *pooled.shape[2:], PATCHES, seed=1)
    keys, cells = relay.relay_plan(trains, selected, positions)
    w0 = np.random.default_rng(2).standard_normal((K2, keys.shape[1])) * 25 / np.sqrt(keys.shape[1])
    layer2 = relay.SpikingRelayLayer(K1, K2, mean, std, params=params, chunk=1000, weights=w0, record_inputs=True,
                                     **HYPER)
    out = layer2.present_relay(trains, keys, learn=True)
    return dict(trains=trains, pooled=pooled, mean=mean, std=std, positions=positions, keys=keys, cells=cells,
                w0=w0, out=out, params=params)


def test_relay_plan_is_the_rate_networks_max_pooling(stacked):
    """The relayed train of input (c, cell) is the one at the window position with the largest onset share."""
    s = stacked
    _, _, _, expected = relay.relay_inputs(s["trains"], s["keys"], s["mean"], s["std"])
    p, pos, cells = s["pooled"], s["positions"], s["cells"]
    ref = p[pos[:, 0][:, None, None], np.arange(K1)[None, :, None], cells[:, None, :, 0], cells[:, None, :, 1]]
    ref = (ref - s["mean"][None, :, None]) / s["std"][None, :, None]
    np.testing.assert_allclose(expected, ref.reshape(len(pos), -1), atol=1e-12)


def test_layer_two_receives_layer_ones_spikes(stacked):
    """Every relay input fires exactly the spikes of the layer-1 neuron it relays, so its rate is that
    neuron's rate: counts / (R T) estimate the onset share within Poisson noise."""
    s = stacked
    _, counts, _, _ = relay.relay_inputs(s["trains"], s["keys"], s["mean"], s["std"])
    np.testing.assert_array_equal(s["out"].input_counts, counts)
    assert counts.sum() > 1e5
    uniq, first = np.unique(s["keys"], return_index=True)  # each relayed train once (patches overlap)
    shares = s["trains"].shares.transpose(0, 2, 3, 1).reshape(-1)[uniq]
    rt = float(s["params"].output_rate * s["params"].t_learn)
    resid = counts.reshape(-1)[first] / rt - shares
    poisson_rms = np.sqrt((shares / rt).mean())
    assert abs(resid.mean()) < 5 * poisson_rms / np.sqrt(resid.size)
    assert abs(np.sqrt((resid ** 2).mean()) / poisson_rms - 1) < 0.15


def test_layer_two_learns_what_the_rate_rule_learns_from_the_relayed_inputs(stacked):
    s = stacked
    _, _, _, expected = relay.relay_inputs(s["trains"], s["keys"], s["mean"], s["std"])
    spiking, w0 = s["out"].weights, s["w0"]
    rate = reference.rate_learn(expected, w0, **HYPER)
    _, cos = reference.match(spiking, rate)
    _, cos_initial = reference.match(rate, w0)
    # Measured over 4 runs (the spike noise differs each run): 7 of 8 neurons at 0.93-0.999; in 3 runs the
    # 8th settled elsewhere than the rate rule's (cos ~ 0: competitive learning picks its attractor by
    # noise, and the rate rule on the relayed *counts* matched it in 2 of 3 of those runs). Rate vs
    # initial weights: median 0.8.
    assert np.median(cos) >= 0.95, cos
    assert np.sum(cos >= 0.9) >= 6, cos
    assert np.median(cos_initial) < 0.9  # the rate rule moved the weights: the match above means something
    assert reference.compare(spiking, rate)["median_rel_norm_error"] <= 0.2
    assert reference.compare(spiking, w0)["mean_cosine"] < 0.85  # it moved away from the initial weights
    assert s["out"].counts.sum(1).mean() == pytest.approx(float(s["params"].output_rate * s["params"].t_learn), rel=0.05)
