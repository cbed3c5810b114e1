"""The rate network reading out spiking kernels (:mod:`snn.readout`) sees what the spiking layer saw."""
import numpy as np
import torch
from scipy.special import softmax
from scipy.stats import norm

from rate_decoder.data import to_float
from snn.data import MNIST_MEAN, MNIST_STD, image_patches
from snn.readout import PoissonShares, SoftWTA, fit_input_bn, network_with_kernels


def test_rate_network_preactivation_equals_the_spiking_layers_patch_products():
    rng = np.random.default_rng(0)
    weights = rng.standard_normal((8, 25))
    images = rng.integers(0, 256, (3, 1, 28, 28), dtype=np.uint8)
    net = network_with_kernels(weights)
    block = net.blocks[0]
    with torch.no_grad():
        u = block.conv(block.bn(to_float(torch.from_numpy(images))))  # (3, 8, 28, 28)
    standardised = (images / 255.0 - MNIST_MEAN) / MNIST_STD  # snn.data's standardisation
    for b in range(3):
        expected = image_patches(standardised[b], 5) @ weights.T  # (784, 8), row-major positions
        np.testing.assert_allclose(u[b].reshape(8, -1).T.numpy(), expected, rtol=1e-4, atol=1e-4)


def test_softmax_activation_gives_shares():
    net = network_with_kernels(np.random.default_rng(1).standard_normal((8, 25)), SoftWTA(0.5))
    u = torch.randn(2, 8, 4, 4)
    with torch.no_grad():
        a = net.blocks[0].activation(u)
    np.testing.assert_allclose(a.numpy(), softmax(0.5 * u.numpy(), axis=1), rtol=1e-5)


def test_fitted_input_statistics_are_the_standardisation_the_kernels_were_learnt_with(mnist):
    """--bn fit (a cumulative pass in train mode) gives snn.data's constants: both choices score the same
    network. The constants are MNIST's pixel mean and std to 4 digits, hence the 5e-4 tolerance."""
    net = network_with_kernels(np.random.default_rng(2).standard_normal((4, 25)))
    net.blocks[0].bn.running_mean.fill_(5.0)  # anything: the fit starts from scratch
    mean, std = fit_input_bn(net, mnist.x_train)
    assert abs(mean - MNIST_MEAN) < 5e-4 and abs(std - MNIST_STD) < 5e-4, (mean, std)
    bn = net.blocks[0].bn
    assert not bn.training and bn.momentum == 0.1  # restored


def test_poisson_shares_have_the_spike_count_mean_and_variance():
    """4000 draws per channel: the mean within ``z`` standard errors ``sqrt(p / (R T) / n)``, the variance
    ``p / (R T)`` within ``z`` standard errors of a sample variance; ``z`` is the Bonferroni bound of 16
    comparisons at family-wise 1e-3 (~4.0)."""
    z = norm.isf(1e-3 / (2 * 16))
    expected = 49.0
    act = PoissonShares(1.0, expected, seed=0)
    u = torch.randn(1, 8, 1, 1, generator=torch.Generator().manual_seed(0)).expand(4000, 8, 1, 1).contiguous()
    p = torch.softmax(u[:1], dim=1)[0, :, 0, 0].double()
    draws = act(u)[:, :, 0, 0].double()
    n = len(draws)
    assert torch.allclose(torch.round(draws * expected), draws * expected, atol=1e-4)  # whole counts / (R T)
    var = p / expected
    assert torch.all((draws.mean(0) - p).abs() < z * (var / n).sqrt())
    # a Poisson(lam) count / RT has fourth central moment (lam + 3 lam^2) / RT^4
    lam = p * expected
    m4 = (lam + 3 * lam ** 2) / expected ** 4
    assert torch.all((draws.var(0) - var).abs() < z * (m4 / n - var ** 2 * (n - 3) / (n * (n - 1))).sqrt())
    assert torch.equal(PoissonShares(1.0, expected, seed=0)(u)[:, :, 0, 0].double(), draws)  # seeded
