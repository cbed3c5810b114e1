"""The numpy runtime backend of the spiking layer (small networks, no compiler needed).

Kept apart from test_snn.py so that the compiled standalone project there is not set up twice.
"""
import numpy as np
import pytest

pytest.importorskip("brian2")

from snn import reference  # noqa: E402
from snn.layer import SpikingSoftHebb  # noqa: E402

K, N_IN = 16, 25


def unit_rows(rng, norm):
    w = rng.standard_normal((K, N_IN))
    return norm * w / np.linalg.norm(w, axis=1, keepdims=True)


def test_runtime_backend_zero_patches_change_nothing():
    layer = SpikingSoftHebb(N_IN, 4, chunk=4, backend="runtime", seed=0, lr=0.1)
    w0 = layer.weights.copy()
    out = layer.present(np.zeros((3, N_IN)), learn=True)
    assert out.counts.shape == (3, 4) and out.counts.sum() > 0  # the population still fires at rate R
    np.testing.assert_array_equal(out.weights, w0)  # x = 0: traces and u stay 0, so dw = 0
    with pytest.raises(ValueError):
        layer.present(np.zeros((2, N_IN + 1)))


def test_runtime_backend_learns_in_the_rate_rule_direction():
    """The numpy runtime target runs the same equations: its first-presentation update agrees in sign."""
    rng = np.random.default_rng(3)
    x = np.tile(rng.uniform(-1, 2, N_IN), (2, 1))
    w0 = unit_rows(rng, 3.0)
    expected = reference.expected_update(x[:1], w0, 1.0, 1e-2, 0.5)
    rt = SpikingSoftHebb(N_IN, K, chunk=2, backend="runtime", weights=w0, lr=1e-2)
    d_rt = rt.present(x).weights - w0
    k = np.argmax(np.abs(expected).sum(1))  # the neuron with the largest expected update
    cos = d_rt[k] @ expected[k] / (np.linalg.norm(d_rt[k]) * np.linalg.norm(expected[k]))
    assert cos > 0.8


def test_plastic_events_program_a_device():
    """With a device attached, the weights a run leaves are the device's read-back of the programmed change."""
    import torch

    import hardware_models

    rng = np.random.default_rng(5)
    x = np.tile(rng.uniform(-1, 2, N_IN), (2, 1))
    w0 = unit_rows(rng, 3.0)
    levels = 8
    device = hardware_models.make_synapse(f"linear{levels}", seed=0)
    layer = SpikingSoftHebb(N_IN, K, chunk=2, backend="runtime", weights=w0, lr=0.5, synapse=device)
    step = 2 * device.w_max / (levels - 1)
    on_grid = lambda w: np.abs((w + device.w_max) / step - np.round((w + device.w_max) / step)).max()  # noqa: E731
    assert on_grid(layer.weights) < 1e-9  # attach quantised the initial weights
    w_attached = layer.weights.copy()
    out = layer.present(x, learn=True)
    assert device.pulses > 0 and not np.array_equal(out.weights, w_attached)  # learning went through the device
    assert on_grid(out.weights) < 1e-9 and np.abs(out.weights).max() <= device.w_max + 1e-12
    np.testing.assert_array_equal(out.weights, device.read().numpy())
    # inference programs nothing
    pulses = device.pulses
    layer.present(x, learn=False)
    assert device.pulses == pulses
    assert torch.equal(device.read(), torch.from_numpy(out.weights))
