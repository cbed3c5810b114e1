"""snn.decoding (spike counts to the rate network's quantities) against numpy, and snn.data's data directory."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import softmax

from snn import data, decoding


def test_expected_shares_are_the_softmax_of_each_patch_product():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 3 * 25))
    images = rng.standard_normal((2, 3, 9, 9))
    shares = decoding.expected_shares(w, images, 0.7)
    assert shares.shape == (2, 6, 9, 9)
    for b in range(2):
        u = data.image_patches(images[b], 5) @ w.T  # (81, 6), row-major positions, (C, k, k) order
        np.testing.assert_allclose(shares[b].reshape(6, -1).T, softmax(0.7 * u, axis=1), rtol=1e-10)


def test_weights_to_conv_act_on_patches_in_c_k_k_order():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 3 * 25))
    x = rng.standard_normal((1, 3, 9, 9))
    conv = decoding.weights_to_conv(w, 3, 5)
    u = F.conv2d(F.pad(torch.from_numpy(x), (2, 2, 2, 2), mode="reflect"), conv)[0]
    np.testing.assert_allclose(u.reshape(4, -1).T.numpy(), data.image_patches(x[0], 5) @ w.T, rtol=1e-10)
    with pytest.raises(ValueError):
        decoding.weights_to_conv(w, 1, 5)


def test_max_pool_and_its_indices():
    rng = np.random.default_rng(2)
    maps = rng.standard_normal((2, 3, 8, 8))
    pooled, index = decoding.max_pool(maps)
    assert pooled.shape == index.shape == (2, 3, 4, 4)
    padded = np.pad(maps, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    for i in range(4):
        for j in range(4):
            window = padded[:, :, 2 * i:2 * i + 4, 2 * j:2 * j + 4]
            np.testing.assert_array_equal(pooled[:, :, i, j], window.max((2, 3)))
    flat = maps.reshape(2, 3, -1)
    np.testing.assert_array_equal(np.take_along_axis(flat, index.reshape(2, 3, -1), 2).reshape(pooled.shape), pooled)


def test_standardisation_statistics_and_shares_from_counts():
    maps = np.random.default_rng(3).gamma(2.0, 1.0, (5, 4, 6, 6))
    mean, std = decoding.fit_standardisation(maps)
    per_channel = maps.transpose(1, 0, 2, 3).reshape(4, -1)
    np.testing.assert_allclose(mean, per_channel.mean(1))
    np.testing.assert_allclose(std, np.sqrt(per_channel.var(1) + 1e-5))
    np.testing.assert_allclose(decoding.shares_from_counts(np.array([49, 0, 98]), 1000.0, 0.049), [1.0, 0.0, 2.0])


def test_data_directory_is_softhebb_data_and_named_when_missing(monkeypatch, tmp_path):
    monkeypatch.delenv("SOFTHEBB_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="SOFTHEBB_DATA"):
        data.load_mnist("train", 1)
    monkeypatch.setenv("SOFTHEBB_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="mnist.npz not found .*SOFTHEBB_DATA"):
        data.load_mnist("train", 1)
