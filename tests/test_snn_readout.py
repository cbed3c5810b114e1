"""The bridge that scores spiking-learned kernels in the rate network sees what the spiking layer saw."""
import numpy as np
import torch

from experiments.snn_readout import network_with_kernels
from rate_decoder.data import to_float
from snn.data import MNIST_MEAN, MNIST_STD, image_patches  # numpy only, no Brian2 needed


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
    net = network_with_kernels(np.random.default_rng(1).standard_normal((8, 25)), softmax_t=0.5)
    with torch.no_grad():
        a = net.blocks[0].activation(torch.randn(2, 8, 4, 4))
    torch.testing.assert_close(a.sum(1), torch.ones(2, 4, 4))


def test_fitted_input_statistics_are_the_standardisation_the_kernels_were_learnt_with(mnist):
    """--bn fit (a cumulative pass in train mode) gives snn.data's constants: both choices score the same network."""
    from experiments.snn_readout import fit_input_bn

    net = network_with_kernels(np.random.default_rng(2).standard_normal((4, 25)))
    net.blocks[0].bn.running_mean.fill_(5.0)  # anything: the fit starts from scratch
    mean, std = fit_input_bn(net, mnist.x_train)
    assert abs(mean - MNIST_MEAN) < 5e-4 and abs(std - MNIST_STD) < 5e-4, (mean, std)
    bn = net.blocks[0].bn
    assert not bn.training and bn.momentum == 0.1  # restored


def test_poisson_shares_have_the_spike_count_mean_and_variance():
    from experiments.snn_readout import PoissonShares

    expected = 49.0
    act = PoissonShares(1.0, expected, seed=0)
    u = torch.randn(1, 8, 1, 1).expand(4000, 8, 1, 1).contiguous()
    p = torch.softmax(u[:1], dim=1)[0, :, 0, 0]
    draws = act(u)[:, :, 0, 0]
    assert torch.allclose(torch.round(draws * expected), draws * expected, atol=1e-4)  # whole counts / (R T)
    se = (p / expected / len(draws)).sqrt()
    assert torch.all((draws.mean(0) - p).abs() < 4 * se)
    torch.testing.assert_close(draws.var(0), p / expected, rtol=0.15, atol=1e-4)
    assert torch.equal(PoissonShares(1.0, expected, seed=0)(u)[:, :, 0, 0], draws)  # seeded
