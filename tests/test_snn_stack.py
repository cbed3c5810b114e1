"""Stacking by counts (:mod:`snn.stack`): layer 1's spike counts at every position, pooled and standardised
as the rate network's block boundary, become layer 2's ON/OFF inputs.

Layer 2 of the count relay is a :class:`snn.SpikingSoftHebb` on those inputs, whose firing law and
expected update ``test_snn`` checks for any inputs; what is stacking's own is checked here: which
count lands where, and the encoding of the pooled maps.
"""
import numpy as np
import pytest
from conftest import require_compiler, require_data

from snn import SpikingSoftHebb, data, decoding, preset, stack
from snn.params import MAX_ABS_INPUT

K1, N_IMAGES = 8, 2


@pytest.fixture(scope="module")
def images():
    require_data("mnist.npz")
    return data.load_mnist("train", N_IMAGES)[0]


def test_count_maps_hold_each_positions_counts(images):
    """``count_maps`` puts the count of the presentation of position ``(y, x)`` of image ``b`` (row-major, the
    order of :func:`snn.data.image_patches`) at ``[b, :, y, x]``: compared with the same layer and seed
    presenting those patches directly."""
    require_compiler()
    w1 = np.random.default_rng(0).standard_normal((K1, 25))
    make = lambda: SpikingSoftHebb(25, K1, params=preset("fast", wta="ideal"), chunk=2 * 784, weights=w1, seed=5)  # noqa: E731
    maps = stack.count_maps(make(), images)
    N, _, H, W = images.shape
    assert maps.shape == (N, K1, H, W)
    patches = np.concatenate([data.image_patches(img, 5) for img in images])
    counts = make().present(np.clip(patches, -stack.LIMIT, stack.LIMIT), learn=False).counts
    for b, y, x in [(0, 0, 0), (0, 3, 17), (1, 27, 5), (1, 14, 27)]:
        np.testing.assert_array_equal(maps[b, :, y, x], counts[(b * H + y) * W + x])
    np.testing.assert_array_equal(maps.sum(1).reshape(-1), counts.sum(1))
    params = preset("fast", wta="ideal")
    np.testing.assert_allclose(decoding.shares_from_counts(maps, float(params.output_rate), float(params.t_learn)),
                               maps / float(params.output_rate * params.t_learn))


def test_next_layer_input_is_the_standardised_pooled_map_in_the_encoders_range():
    rng = np.random.default_rng(1)
    maps = rng.gamma(2.0, 0.05, (4, 3, 28, 28))
    maps[0, 0, 0, 0] = 50.0  # an outlier: standardised far beyond the encoder's range
    pooled, _ = decoding.max_pool(maps)
    mean, std = decoding.fit_standardisation(pooled)
    z = stack.next_layer_input(pooled, mean, std)
    assert z.shape == (4, 3, 14, 14) and np.abs(z).max() < MAX_ABS_INPUT
    inside = np.abs((pooled - mean[:, None, None]) / std[:, None, None]) < stack.LIMIT
    np.testing.assert_allclose(z[inside], ((pooled - mean[:, None, None]) / std[:, None, None])[inside])
    assert z[0, 0, 0, 0] == pytest.approx(stack.LIMIT)
