"""Spike-train decoders and the spiking <-> SoftHebbConv2d parameter conversion (rate_decoder.decoding)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rate_decoder import decoding
from rate_decoder.layers import SoftHebbConv2d


def test_spike_counts_windows_and_offset():
    idx = np.array([0, 1, 1, 2, 0, 2, 2])
    t = np.array([0.001, 0.004, 0.012, 0.019, 0.021, 0.025, 0.049])
    c = decoding.spike_counts(idx, t, 3, window=0.02, n_windows=2)
    np.testing.assert_array_equal(c, [[1, 2, 1], [1, 0, 1]])  # 0.049 is past the last window
    c = decoding.spike_counts(idx, t, 3, window=0.02, n_windows=3, offset=0.01)
    np.testing.assert_array_equal(c, [[0, 1, 1], [0, 0, 0], [0, 0, 0]])
    with pytest.raises(ValueError):
        decoding.spike_counts(idx, t[:-1], 3, 0.02, 2)
    with pytest.raises(ValueError):
        decoding.spike_counts(idx, t, 3, 0.02, 2, offset=0.03)


def test_rates_and_poisson_error_are_calibrated():
    rng = np.random.default_rng(0)
    lam, T = 40.0, 0.5
    counts = rng.poisson(lam * T, size=20000)
    r, se = decoding.rates(counts, T)
    assert abs(r.mean() - lam) < 4 * r.std() / np.sqrt(len(r))
    # the Poisson standard error matches the spread of the estimates
    assert np.mean(se) == pytest.approx(r.std(), rel=0.05)
    with pytest.raises(ValueError):
        decoding.rates(counts, 0.0)


def test_shares_and_multinomial_error_are_calibrated():
    rng = np.random.default_rng(1)
    p = np.array([0.5, 0.3, 0.15, 0.05])
    counts = rng.multinomial(400, p, size=5000)
    s, se = decoding.shares(counts)
    assert np.allclose(s.sum(1), 1.0)
    assert np.all(np.abs(s.mean(0) - p) < 4 * s.std(0) / np.sqrt(len(s)))
    # the multinomial standard error matches the spread of the estimated shares
    np.testing.assert_allclose(se.mean(0), s.std(0), rtol=0.05)
    s0, se0 = decoding.shares(np.zeros((1, 4)))
    assert np.all(s0 == 0) and np.all(np.isinf(se0))


def test_multinomial_tvd_expectation():
    p = np.full(16, 1 / 16)
    m1, s1 = decoding.multinomial_tvd(p, 1000)
    m4, _ = decoding.multinomial_tvd(p, 4000)
    # TVD ~ 1/sqrt(N): four times the spikes halves it; and the uniform case has a closed-form estimate
    assert m4 == pytest.approx(m1 / 2, rel=0.05)
    approx = 0.5 * 16 * np.sqrt(2 * (1 / 16) * (15 / 16) / (np.pi * 1000))
    assert m1 == pytest.approx(approx, rel=0.05) and s1 > 0
    assert decoding.total_variation([1, 0], [0, 1]) == 1.0


def test_preactivation_from_counts_recovers_differences():
    t = 0.5
    u = np.array([1.0, -2.0, 0.5, 3.0])
    p = np.exp(t * u) / np.exp(t * u).sum()
    counts = np.round(p * 1e6)
    u_hat = decoding.preactivation_from_counts(counts, t, pseudocount=0.0)
    np.testing.assert_allclose(u_hat, u - u.mean(), atol=1e-3)


def test_conversion_round_trip_and_patch_order():
    torch.manual_seed(0)
    layer = SoftHebbConv2d(3, 6, 5, inverse_temperature=0.7, lr=0.02, lr_power=0.75, normalisation="none")
    p = decoding.from_conv2d(layer)
    assert p["weights"].shape == (6, 75)
    assert (p["inverse_temperature"], p["lr"], p["lr_power"], p["rule"]) == (0.7, 0.02, 0.75, "softhebb")
    back = decoding.to_conv2d(p["weights"], 3, 5, p["inverse_temperature"], p["lr"], p["lr_power"], p["rule"])
    assert torch.equal(back.weight, layer.weight)
    assert (back.inverse_temperature, back.lr, back.lr_power, back.normalisation) == (0.7, 0.02, 0.75, "none")
    # the flattened weights act on patches flattened in (C, k, k) order: same u as the convolution
    x = torch.randn(1, 3, 9, 9)
    u = layer(x)[0]  # (K, 9, 9)
    xp = F.pad(x, (2, 2, 2, 2), mode="reflect")[0].numpy()
    patch = xp[:, 3:8, 1:6].reshape(-1)  # output position (3, 1)
    np.testing.assert_allclose(p["weights"] @ patch, u[:, 3, 1].numpy(), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError):
        decoding.to_conv2d(p["weights"], 1, 5)


def test_spiking_object_conversion():
    class Stub:  # what snn.layer.SpikingSoftHebb exposes
        weights = np.arange(2 * 25, dtype=float).reshape(2, 25)
        inverse_temperature, lr, lr_power, rule = 1.0, 1e-3, 0.5, "softhebb"

    conv = decoding.spiking_to_conv2d(Stub(), 1, 5)
    assert conv.weight.shape == (2, 1, 5, 5)
    np.testing.assert_array_equal(decoding.from_conv2d(conv)["weights"], Stub.weights)
