"""Presets, blocks, batch-norm modes, greedy freezing, seeding, and learning on real MNIST."""
import copy
import dataclasses

import pytest
import torch

from rate_decoder import rules
from rate_decoder.config import available_presets, load_preset
from rate_decoder.data import DataError, to_float
from rate_decoder.layers import SoftHebbConv2d
from rate_decoder.network import SoftHebbNet, configure_cpu
from rate_decoder.unsupervised import train_unsupervised

configure_cpu()


def small_preset(layers=2):
    p = load_preset("mnist", width_factor=1 / 12)  # 8-32-128 neurons, same hyperparameters
    return dataclasses.replace(p, layers=p.layers[:layers])


@pytest.mark.parametrize("name,features", [("cifar10", 24576), ("cifar10-1layer", 24576), ("cifar10-2layer", 24576),
                                           ("mnist", 13824), ("digits", 64 * 4 * 4),
                                           ("cifar10-4hard", 1536 * 2 * 2)])
def test_preset_feature_sizes(name, features):
    net = SoftHebbNet(load_preset(name))
    assert net.head.in_features == features


def test_all_presets_load_and_depth_variants():
    for name in available_presets():
        load_preset(name)
    assert load_preset("cifar10", layers=1).name == "cifar10-1layer"
    assert load_preset("cifar10", layers=1).layers[0].pool == "avg_4_2_1"
    assert load_preset("cifar10", layers=2).layers[1].pre_triangle is True
    assert len(load_preset("mnist", layers=2).layers) == 2
    assert load_preset("mnist", layers=2).name == "mnist-first2"
    assert load_preset("cifar10", width_factor=0.5).layers[2].out_channels == 768


def test_unknown_preset_and_bad_preset_file(tmp_path):
    with pytest.raises(ValueError, match="unknown preset 'cifar11'"):
        load_preset("cifar11")
    bad = tmp_path / "bad.toml"
    bad.write_text('dataset = "mnist"\nin_channels = 1\nimage_size = 28\nn_classes = 10\n'
                   '[[layers]]\nout_channels = 4\nkernel_size = 3\ninverse_temperature = 1.0\nlr = 0.1\n'
                   'lr_power = 0.5\nactivation = "triangle"\npool = "max_4_2_1"\ncolour = "red"\n')
    with pytest.raises(ValueError, match="unknown key 'colour'"):
        load_preset(str(bad))
    with pytest.raises(ValueError, match="out of range"):
        load_preset("mnist", layers=4)


def test_network_rejects_wrong_images():
    net = SoftHebbNet(small_preset(1))
    with pytest.raises(ValueError, match=r"expects images of shape \(N, 1, 28, 28\)"):
        net.check_input(torch.zeros(2, 3, 28, 28))
    images = torch.zeros(4, 1, 28, 28)
    images[3, 0, 5, 5] = float("inf")  # the last image: every image is checked, not only the first
    with pytest.raises(DataError, match="image 3 of 4 contains NaN or infinite values"):
        train_unsupervised(net, images, progress=False)


def test_greedy_freezes_earlier_layers_and_switches_batch_norm(mnist):
    torch.manual_seed(0)
    net = SoftHebbNet(small_preset(2))
    snapshots, bn_modes = {}, []
    for i, block in enumerate(net.blocks):
        block.bn.register_forward_hook(
            lambda m, a, o, i=i: bn_modes.append((i, tuple(b.bn.training for b in net.blocks))))
    train_unsupervised(net, mnist.x_train[:200], "greedy", 10, seed=0, progress=False,
                       on_block_done=lambda i: snapshots.setdefault(i, copy.deepcopy(net.blocks[0].state_dict())))
    # block 0 after its own epoch == block 0 at the very end (bit for bit, batch-norm statistics included)
    for key, value in net.blocks[0].state_dict().items():
        assert torch.equal(value, snapshots[0][key]), key
    # while block 0 learns only its BN is in train mode; while block 1 learns, block 0's BN is in eval mode
    assert set(m for i, m in bn_modes[:20]) == {(True, False)}
    assert set(m for i, m in bn_modes[-20:]) == {(False, True)}
    assert not any(b.bn.training for b in net.blocks)


def test_consecutive_trains_all_layers_with_all_bn_in_train_mode(mnist):
    torch.manual_seed(0)
    net = SoftHebbNet(small_preset(2))
    w0 = [b.conv.weight.clone() for b in net.blocks]
    modes = []
    net.blocks[1].bn.register_forward_hook(lambda m, a, o: modes.append((net.blocks[0].bn.training, m.training)))
    train_unsupervised(net, mnist.x_train[:50], "consecutive", 10, seed=0, progress=False)
    assert set(modes) == {(True, True)}
    assert all(not torch.equal(w, b.conv.weight) for w, b in zip(w0, net.blocks))


def test_same_seed_same_weights(mnist):
    def train(seed):
        torch.manual_seed(seed)
        net = SoftHebbNet(small_preset(2))
        train_unsupervised(net, mnist.x_train[:100], "greedy", 10, seed=seed, progress=False)
        return torch.cat([b.conv.weight.flatten() for b in net.blocks])

    a, b, c = train(3), train(3), train(4)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_norms_converge_to_one_on_real_mnist(mnist):
    """Under the norm-dependent learning rate the norms fall from ~25 toward 1 and eta_k falls with them."""
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(1, affine=False)
    layer = SoftHebbConv2d(1, 16, 5, inverse_temperature=1.0, lr=0.08, lr_power=0.5)
    dist0 = (rules.neuron_norms(layer.weight) - 1).abs()
    eta0 = layer.learning_rates()
    record = []
    for i in range(0, 4000, 10):
        layer.hebbian_step(bn(to_float(mnist.x_train[i:i + 10])))
        record.append((rules.neuron_norms(layer.weight) - 1).abs().mean().item())
    dist, eta = (rules.neuron_norms(layer.weight) - 1).abs(), layer.learning_rates()
    assert dist0.mean() > 20  # the start is far from the unit sphere (norm ~25)
    assert dist.mean() < 0.1 * dist0.mean()
    assert (eta < 0.35 * eta0).all()  # eta ~ sqrt(distance): a 10x smaller distance -> eta < 0.32 eta0
    assert record[-1] < record[len(record) // 2] < record[0]


def test_a_smaller_padding_shrinks_the_map_and_learns_from_exactly_those_patches():
    """padding p < (k-1)/2: u is the convolution of the input reflect-padded by p, and the update is the
    linear rule on the patches of that same padded input (a rule that padded to the same size would differ)."""
    torch.manual_seed(0)
    x = torch.randn(4, 3, 9, 9)
    for p in (0, 1):
        layer = SoftHebbConv2d(3, 6, 5, padding=p)
        xp = torch.nn.functional.pad(x, (p,) * 4, mode="reflect") if p else x
        u = layer(x)
        assert u.shape == (4, 6, 9 + 2 * p - 4, 9 + 2 * p - 4)
        torch.testing.assert_close(u, torch.nn.functional.conv2d(xp, layer.weight))
        w = layer.weight.clone()
        patches = rules.unfold_patches(xp, 5)
        rows = u.permute(0, 2, 3, 1).reshape(-1, 6)
        raw = rules.linear_update(patches, rows, rules.signed_post(rows, 1.0, dim=-1), w.reshape(6, -1))
        expected = w.reshape(6, -1) + rules.scale_update(raw, w.reshape(6, -1), layer.lr, layer.lr_power,
                                                         raw.abs().max() + 1e-30)
        layer.hebbian_step(x)
        torch.testing.assert_close(layer.weight.reshape(6, -1), expected)
    with pytest.raises(ValueError, match=r"padding must be an integer in \[0, 2\]"):
        SoftHebbConv2d(3, 6, 5, padding=3)


def test_padding_in_a_preset_is_checked():
    from rate_decoder.config import ConfigError

    spec = load_preset("cifar10-4hard").layers[0]
    assert spec.conv_padding == 1 and load_preset("cifar10").layers[0].conv_padding == 2
    with pytest.raises(ConfigError, match="padding 3 exceeds half the kernel"):
        dataclasses.replace(spec, padding=3)
