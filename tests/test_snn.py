"""The spiking SoftHebb layer (snn): firing shares, expected update, learning, backends.

Cross-checks call the rate rule in rate_decoder.rules (through snn.reference); nothing re-implements it.
One standalone project (16 neurons x 25 inputs) is compiled once for the module and re-run with new
inputs, weights and plasticity values.
"""
import numpy as np
import pytest

brian2 = pytest.importorskip("brian2")

from rate_decoder import decoding  # noqa: E402
from snn import data, layer as snn_layer, reference  # noqa: E402
from snn.layer import SpikingSoftHebb  # noqa: E402
from snn.params import SpikingParams, preset  # noqa: E402

K, N_IN, CHUNK = 16, 25, 500
needs_compiler = pytest.mark.skipif(not any(__import__("shutil").which(c) for c in ("g++", "c++", "clang++")),
                                    reason="no C++ compiler for the cpp_standalone backend")
needs_mnist = pytest.mark.skipif(not data.mnist_path().is_file(),
                                 reason=f"MNIST not found at {data.mnist_path()} (set SOFTHEBB_DATA)")


@pytest.fixture(scope="module")
def mnist_patches():
    if not data.mnist_path().is_file():
        pytest.skip(f"MNIST not found at {data.mnist_path()} (set SOFTHEBB_DATA)")
    images, _ = data.load_mnist("train", 10000)
    return data.random_patches(images, 20000, 5, seed=0)


@pytest.fixture(scope="module")
def compiled():
    if not any(__import__("shutil").which(c) for c in ("g++", "c++", "clang++")):
        pytest.skip("no C++ compiler for the cpp_standalone backend")
    layer = SpikingSoftHebb(N_IN, K, params=preset("fast"), chunk=CHUNK, seed=0)
    layer.build()
    return layer


def unit_rows(rng, norm):
    w = rng.standard_normal((K, N_IN))
    return norm * w / np.linalg.norm(w, axis=1, keepdims=True)


# --- cheap checks ----------------------------------------------------------------------------------
def test_params_validation():
    with pytest.raises(ValueError):
        SpikingParams(dt=1 * brian2.ms)  # r0 |x| dt >= 1
    with pytest.raises(KeyError):
        preset("fast", not_a_field=1)
    assert preset("accurate").input_rate > preset("fast").input_rate


def test_missing_compiler_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(snn_layer.shutil, "which", lambda name: None)
    with pytest.raises(snn_layer.CompilerNotFoundError, match="C\\+\\+ compiler"):
        SpikingSoftHebb(N_IN, K, backend="cpp_standalone")


# --- firing: shares of spikes vs softmax(t u) ---------------------------------------------------------
@needs_compiler
@pytest.mark.parametrize("t", [0.25, 0.65, 1.0])
def test_firing_shares_match_softmax(compiled, t):
    rng = np.random.default_rng(11)
    x = np.clip(rng.standard_normal(N_IN) * 1.0, -2.5, 2.5)
    w = unit_rows(rng, 1.0)  # trained-regime norm: sigma_u^2 = sum w^2 |x| / (2 r0 tau) ~ 0.02
    u = w @ x
    target = np.exp(t * u) / np.exp(t * u).sum()
    assert target.max() < 0.8  # a non-trivial distribution
    compiled.weights, compiled.inverse_temperature = w, t
    out = compiled.present(np.tile(x, (CHUNK, 1)), learn=False)
    np.testing.assert_array_equal(out.weights, w)  # learning off
    per = out.counts.sum(1)
    # (a) about 1000 counted spikes: TVD within the multinomial sampling distribution for that N
    m = int(np.searchsorted(np.cumsum(per), 1000)) + 1
    counts = out.counts[:m].sum(0)
    n = int(counts.sum())
    tvd = decoding.total_variation(decoding.shares(counts)[0], target)
    mean, sd = decoding.multinomial_tvd(target, n)
    assert tvd <= mean + 3 * sd, (tvd, mean, sd, n)
    # (b) bias: 2 x 10^4 spikes, TVD <= 0.02 (sampling alone gives 0.010 +- 0.002 here, so 0.02 is ~5 sd;
    # with 10^4 spikes sampling alone reaches 0.02 in a few % of runs)
    m = int(np.searchsorted(np.cumsum(per), 20000)) + 1
    counts = out.counts[:m].sum(0)
    tvd_big = decoding.total_variation(decoding.shares(counts)[0], target)
    assert counts.sum() >= 20000 and tvd_big <= 0.02, (tvd_big, decoding.multinomial_tvd(target, counts.sum()))


# --- expectation: mean spiking weight change vs the local rate rule ------------------------------------
@needs_compiler
def test_mean_update_matches_rate_rule(compiled, mnist_patches):
    rng = np.random.default_rng(5)
    w0 = unit_rows(rng, 1.5)  # not 1: eta_k ~ (| |w| - 1 |)^q would vanish
    # Patches whose winner is well defined: the spiking winner is the argmax of the *noisy* u, so where the
    # top two u are within a few sigma_u = sqrt(sum w^2 |x| / (2 r0 tau)) the sign of the update is a coin
    # flip, unlike the rate rule's exact argmax (e.g. the constant MNIST background patch, repeated
    # thousands of times). Keep patches with a margin above 4 sigma_u.
    p = compiled.params
    pool = mnist_patches
    u_all = np.sort(pool @ w0.T, axis=1)
    sigma_u = np.sqrt((np.abs(pool) @ (w0 ** 2).T).max(1) / (2 * float(p.input_rate * p.tau)))
    x = pool[(u_all[:, -1] - u_all[:, -2]) > 4 * sigma_u][:2000]
    assert len(x) >= 1000, len(x)
    lr, t, q = 1e-5, 1.0, 0.5  # tiny: the weights stay ~w0, so the total change is the sum of expectations
    compiled.weights, compiled.inverse_temperature, compiled.lr, compiled.lr_power = w0, t, lr, q
    out = compiled.present(x, learn=True)
    spiking = (out.weights - w0) / len(x)
    rate = reference.expected_update(x, w0, t, lr, q)
    # standard error from spike-count variance: neuron k fires n ~ Poisson(R T y_k) times per patch,
    # each spike moves w_k by c_k (x - u_k w_k), c_k = eta_k / (R T)
    import torch
    from rate_decoder import rules
    xt, wt = torch.as_tensor(x), torch.as_tensor(w0)
    u = (xt @ wt.T).numpy()
    y = rules.soft_wta(torch.as_tensor(u), t).numpy()
    eta = rules.norm_learning_rate(wt, lr, q).numpy()
    rt = float(p.output_rate * p.t_learn)
    step = x[:, None, :] - u[:, :, None] * w0[None]  # (n, K, D)
    se = np.sqrt(((eta[None, :, None] / rt) ** 2 * rt * y[:, :, None] * step ** 2).sum(0)) / len(x)
    # (a) most synapses within 4 standard errors of spike-count noise
    z = (spiking - rate) / se
    assert np.mean(np.abs(z) < 4) > 0.8, np.abs(z).max()
    # (b) per neuron: within 4 SE plus 5 % of the unsigned update |y (x - u w)| (the Jensen bias of
    # exp(t u) under trace noise)
    unsigned = np.linalg.norm(reference.expected_update(x, w0, t, lr, q, rule="soft"), axis=1)
    err = np.linalg.norm(spiking - rate, axis=1)
    assert np.all(err <= 4 * np.linalg.norm(se, axis=1) + 0.05 * unsigned), (err, np.linalg.norm(se, axis=1), unsigned)
    cos = (spiking * rate).sum() / (np.linalg.norm(spiking) * np.linalg.norm(rate))
    assert cos > 0.98, cos
    # the incremental |w|^2 of the output group tracks the true norm
    if compiled.backend == "cpp_standalone":
        np.testing.assert_allclose(np.asarray(compiled._net.outputs.wsq[:]), (out.weights ** 2).sum(1), rtol=1e-9)


# --- learning: spiking vs rate-learned kernels on real MNIST patches -----------------------------------
@pytest.mark.slow
@needs_compiler
@needs_mnist
def test_learning_matches_rate_rule(compiled, mnist_patches):
    x = mnist_patches[:20000]
    w0 = np.random.default_rng(1).standard_normal((K, N_IN)) * 25 / np.sqrt(N_IN)  # norm ~25
    t, lr, q = 1.0, 1e-3, 0.5
    rate = reference.rate_learn(x, w0, t, lr, q)
    compiled.weights, compiled.inverse_temperature, compiled.lr, compiled.lr_power = w0, t, lr, q
    spiking = compiled.present(x, learn=True).weights
    vs_rate = reference.compare(spiking, rate)
    vs_init = reference.compare(rate, w0)
    assert vs_rate["mean_cosine"] >= 0.95, vs_rate
    assert vs_rate["mean_cosine"] >= vs_init["mean_cosine"] + 0.15, (vs_rate, vs_init)
    assert vs_rate["median_rel_norm_error"] <= 0.2, vs_rate
