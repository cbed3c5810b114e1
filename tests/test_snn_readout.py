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
