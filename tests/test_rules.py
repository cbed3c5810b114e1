"""The rule against a direct, loop-based evaluation of docs/algorithm.md §2.3-2.7 in float64."""
import dataclasses
import math

import numpy as np
import pytest
import torch

from rate_decoder import SoftHebbNet, load_preset, rules
from rate_decoder.layers import SoftHebbConv2d, SoftHebbLinear


def _signed(u, t, rule):
    """y~ of one sample's pre-activations ``u (K,)``, by the definitions of docs/algorithm.md §2.2-2.3."""
    winner = int(np.argmax(u))
    e = np.exp(t * (u - u.max()))
    y = e / e.sum()
    if rule == "softhebb":
        return np.array([y[n] if n == winner else -y[n] for n in range(len(u))])
    if rule == "soft":
        return y
    return np.array([1.0 if n == winner else 0.0 for n in range(len(u))])


def reference_conv_update(x, w, t, rule="softhebb", pre_triangle=False):
    """Raw update D: loop over samples, positions, neurons and synapses; numpy float64, nothing vectorised.

    ``pre_triangle`` replaces u by max(u - mean over neurons, 0) before the WTA and the update (docs/algorithm.md §2.9).
    """
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    B, C, H, W = x.shape
    K, _, k, _ = w.shape
    p = (k - 1) // 2
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), mode="reflect")
    D = np.zeros_like(w)
    for b in range(B):
        for i in range(H):
            for j in range(W):
                patch = xp[b, :, i:i + k, j:j + k]
                u = np.array([np.sum(w[n] * patch) for n in range(K)])
                if pre_triangle:
                    u = np.maximum(u - u.mean(), 0.0)
                ys = _signed(u, t, rule)
                for n in range(K):
                    for c in range(C):
                        for a in range(k):
                            for bb in range(k):
                                D[n, c, a, bb] += ys[n] * (patch[c, a, bb] - u[n] * w[n, c, a, bb])
    return D


def reference_linear_update(x, w, t, rule="soft"):
    """Raw update D of a fully connected layer (docs/algorithm.md §8), one sample, neuron and synapse at a time."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    K, N = w.shape
    D = np.zeros_like(w)
    for b in range(x.shape[0]):
        u = np.array([sum(w[n, i] * x[b, i] for i in range(N)) for n in range(K)])
        ys = _signed(u, t, rule)
        for n in range(K):
            for i in range(N):
                D[n, i] += ys[n] * (x[b, i] - u[n] * w[n, i])
    return D


def reference_apply(w, D, lr, q, normalisation="global", gain=0.0):
    """``(W + eta_k D_k / divisor, gain)``; ``"fixed"`` sets ``gain = max|D| + 1e-30`` if it is 0 and divides by it."""
    w = np.asarray(w, dtype=np.float64)
    D = D.copy()
    if normalisation == "global":
        D = D / (np.abs(D).max() + 1e-30)
    elif normalisation == "neuron":
        for n in range(len(D)):
            D[n] = D[n] / (np.abs(D[n]).max() + 1e-30)
    elif normalisation == "fixed":
        gain = gain or np.abs(D).max() + 1e-30
        D = D / gain
    new = w.copy()
    for n in range(len(w)):
        eta = lr * (abs(math.sqrt(np.sum(w[n] ** 2)) - 1.0) + 1e-10) ** q
        new[n] += eta * D[n]
    return new, gain


def reference_conv_step(x, w, t, lr, q, rule="softhebb", normalisation="global", pre_triangle=False):
    return reference_apply(w, reference_conv_update(x, w, t, rule, pre_triangle), lr, q, normalisation)[0]


@pytest.mark.parametrize("rule", ["softhebb", "soft", "hardwta"])
@pytest.mark.parametrize("normalisation", ["global", "neuron", "none"])
@pytest.mark.parametrize("pre_triangle", [False, True])
def test_hebbian_step_matches_loop_reference(rule, normalisation, pre_triangle):
    torch.manual_seed(1)
    layer = SoftHebbConv2d(2, 4, 3, inverse_temperature=0.7, lr=0.05, lr_power=0.5, rule=rule,
                           normalisation=normalisation, radius=1.5, pre_triangle=pre_triangle, dtype=torch.float64)
    x = torch.randn(3, 2, 5, 4, dtype=torch.float64)
    w0 = layer.weight.detach().clone()
    expected = reference_conv_step(x.numpy(), w0.numpy(), 0.7, 0.05, 0.5, rule, normalisation, pre_triangle)
    u_before = layer(x)  # the forward with the pre-step weights
    u = layer.hebbian_step(x)
    assert u.shape == (3, 4, 5, 4) and u.is_contiguous()
    torch.testing.assert_close(u, u_before, rtol=0, atol=1e-12)
    np.testing.assert_allclose(layer.weight.detach().numpy(), expected, rtol=0, atol=1e-10)
    # the step really moved the weights (the test would pass vacuously otherwise)
    assert (layer.weight.detach() - w0).abs().max() > 1e-3


def test_channel_minor_patches_are_the_patches_with_their_columns_reordered():
    torch.manual_seed(0)
    xp = torch.randn(2, 3, 7, 6)
    minor = rules.channel_minor_patches(xp, 3)
    assert minor.shape == (2 * 5 * 4, 27)
    assert torch.equal(rules.to_channel_major(minor, 3, 3), rules.unfold_patches(xp, 3))  # the same values, moved


@pytest.mark.parametrize("batch, neurons", [(3, 4), (1, 12)])  # more patches than neurons (channel-minor), fewer
def test_conv_update_matches_the_loop_reference_in_either_patch_order(batch, neurons):
    torch.manual_seed(2)
    w = torch.randn(neurons, 2, 3, 3, dtype=torch.float64)
    x = torch.randn(batch, 2, 3, 3, dtype=torch.float64)
    xp = torch.nn.functional.pad(x, (1,) * 4, mode="reflect")
    u = torch.nn.functional.conv2d(xp, w)
    d = rules.conv_update(xp, u, rules.signed_post(u, 0.7), w)
    np.testing.assert_allclose(d.numpy(), reference_conv_update(x.numpy(), w.numpy(), 0.7), rtol=0, atol=1e-10)


def test_global_normalisation_puts_largest_update_at_one():
    torch.manual_seed(0)
    layer = SoftHebbConv2d(3, 6, 3, dtype=torch.float64)
    xp = layer.pad(torch.randn(4, 3, 6, 6, dtype=torch.float64))
    u = torch.nn.functional.conv2d(xp, layer.weight)
    d = rules.conv_update(xp, u, rules.signed_post(u, 1.0), layer.weight)
    assert (d / rules.update_divisor(d)).abs().max().item() == pytest.approx(1.0, abs=1e-12)
    per_neuron = d / rules.update_divisor(d, "neuron").view(-1, 1, 1, 1)
    torch.testing.assert_close(per_neuron.flatten(1).abs().amax(1), torch.ones(6, dtype=torch.float64))
    assert rules.update_divisor(d, "none") == 1.0


def test_anti_hebbian_sign():
    u = torch.tensor([[1.0, 3.0, 2.0], [0.5, 0.5, -1.0]])
    post = rules.signed_post(u, 1.0, "softhebb")
    y = torch.softmax(u, 1)
    assert torch.allclose(post[0], torch.stack([-y[0, 0], y[0, 1], -y[0, 2]]))
    assert torch.allclose(post[1], torch.stack([y[1, 0], -y[1, 1], -y[1, 2]]))  # tie: first index wins


def test_forward_has_no_side_effect():
    layer = SoftHebbConv2d(3, 8, 5)
    w0 = layer.weight.detach().clone()
    layer(torch.randn(2, 3, 8, 8))
    assert torch.equal(layer.weight, w0)


def test_initial_norm_is_radius():
    layer = SoftHebbConv2d(3, 2000, 5, dtype=torch.float64)
    norms = rules.neuron_norms(layer.weight)
    # ||w||^2 ~ 25^2 * chi2(75)/75: the mean of 2000 norms is within a few 0.1 of 25
    assert abs(norms.mean().item() - 25.0) < 0.3


def test_linear_step_matches_formula():
    torch.manual_seed(0)
    layer = SoftHebbLinear(6, 4, inverse_temperature=2.0, lr=0.1, lr_power=0.2, rule="soft", dtype=torch.float64)
    x = torch.rand(5, 6, dtype=torch.float64)
    w = layer.weight.detach().clone()
    u = x @ w.T
    y = torch.softmax(2.0 * u, 1)
    D = y.T @ x - torch.diag((y * u).sum(0)) @ w
    D = D / D.abs().max()
    eta = 0.1 * ((w.norm(dim=1) - 1).abs() + 1e-10) ** 0.2
    layer.hebbian_step(x)
    assert torch.allclose(layer.weight, w + eta[:, None] * D, atol=1e-12, rtol=0)


@pytest.mark.parametrize("bad", [torch.randn(3, 8, 8), torch.randn(1, 2, 8, 8)])
def test_wrong_shape_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="expects"):
        SoftHebbConv2d(3, 4, 3)(bad)


def test_feature_dropout_is_inverted_dropout_at_half():
    from rate_decoder.readout import feature_dropout

    torch.manual_seed(0)
    x = torch.ones(200, 5000)
    y = feature_dropout(x, 0.5)
    kept = (y != 0).float()
    # a fair coin per feature: mean 0.5 +- 5 standard errors of 1e6 draws (5 * 0.0005)
    assert abs(kept.mean().item() - 0.5) < 0.0025
    assert set(torch.unique(y).tolist()) == {0.0, 2.0}
    # neighbouring features are independent (no bit pattern repeats): correlation ~ 0 +- 5/sqrt(N)
    a, b = kept[:, :-1].flatten() - 0.5, kept[:, 1:].flatten() - 0.5
    assert abs((a * b).mean().item() / 0.25) < 5 / (a.numel() ** 0.5)
    assert not torch.equal(feature_dropout(x, 0.5), y)


def test_bf16_products_stay_close_to_fp32():
    """bf16 operands carry 8 significant bits (relative rounding <= 2^-8), accumulation is fp32.

    So each element of the raw update D = sum(y~ P) - (sum y~ u) w is off by at most ~2^-8 times the
    magnitude of the terms it sums, sum(|y~| |P|) + |sum y~ u| |w|, not of D itself: the two terms
    nearly cancel (here D is ~10x smaller than they are), which is why bf16 costs about 7 % of
    max|D| per step on this example. The test checks that bound, with a factor 2 for the u error.
    """
    torch.manual_seed(0)
    x = torch.nn.functional.pad(torch.randn(10, 16, 8, 8), (1,) * 4, mode="reflect")
    w = torch.randn(32, 16, 3, 3) / 12
    u = rules.conv_forward(x, w)
    u16 = rules.conv_forward(x, w, torch.bfloat16)
    assert u16.dtype == torch.float32
    assert ((u16 - u) / rules.conv_forward(x.abs(), w.abs())).abs().max() < 2 * 2**-8
    post = rules.signed_post(u, 0.65)
    d32 = rules.conv_update(x, u, post, w)
    d16 = rules.conv_update(x, u, post, w, torch.bfloat16)
    scale = (rules.conv_update(x.abs(), u.abs(), post.abs(), torch.zeros_like(w))
             + (post * u).sum((0, 2, 3)).abs().view(-1, 1, 1, 1) * w.abs())
    assert ((d16 - d32).abs() / scale).max() < 2 * 2**-8
    assert (d16 - d32).abs().max() > 0  # it really computed in bf16


def first_step_against_the_paper(normalisation: str):
    """A conv layer with ``normalisation`` and one with the paper's, same initial weights, after one step on
    ``x1``, which must be the same for both; returns ``(layer, paper, x1, x2, w0)``."""
    torch.manual_seed(0)
    kw = dict(inverse_temperature=0.7, lr=0.05, lr_power=0.5, radius=1.5, dtype=torch.float64)
    layer, paper = SoftHebbConv2d(2, 4, 3, normalisation=normalisation, **kw), SoftHebbConv2d(2, 4, 3, **kw)
    paper.weight.data.copy_(layer.weight)
    x1, x2 = torch.randn(3, 2, 5, 4, dtype=torch.float64), 3 * torch.randn(3, 2, 5, 4, dtype=torch.float64)
    w0 = layer.weight.detach().clone()
    layer.hebbian_step(x1), paper.hebbian_step(x1)
    torch.testing.assert_close(layer.weight, paper.weight, rtol=0, atol=1e-12)
    return layer, paper, x1, x2, w0


def test_fixed_normalisation_is_global_first_then_a_frozen_gain():
    """``"fixed"``: the first step equals the paper's; later steps divide by that first max|D|, frozen."""
    fixed, paper, x1, x2, w0 = first_step_against_the_paper("fixed")
    d1 = rules.conv_update(fixed.pad(x1), rules.conv_forward(fixed.pad(x1), w0),
                           rules.signed_post(rules.conv_forward(fixed.pad(x1), w0), 0.7), w0)
    assert fixed.normaliser.gain == pytest.approx(d1.abs().max().item(), rel=1e-12)
    w1 = fixed.weight.detach().clone()
    u = rules.conv_forward(fixed.pad(x2), w1)
    d2 = rules.conv_update(fixed.pad(x2), u, rules.signed_post(u, 0.7), w1)
    fixed.hebbian_step(x2)
    expected = w1 + rules.norm_learning_rate(w1, 0.05, 0.5).view(-1, 1, 1, 1) * d2 / d1.abs().max()
    torch.testing.assert_close(fixed.weight, expected, rtol=0, atol=1e-12)
    # and it is not the global rule any more (x2's max|D| differs from x1's)
    assert abs(d2.abs().max().item() / d1.abs().max().item() - 1) > 0.1
    assert "fixed_divisor" in fixed.state_dict() and "fixed_divisor" not in paper.state_dict()


@pytest.mark.parametrize("rule", ["softhebb", "soft", "hardwta"])
@pytest.mark.parametrize("normalisation", ["global", "neuron", "none"])
def test_linear_hebbian_step_matches_loop_reference(rule, normalisation):
    torch.manual_seed(2)
    layer = SoftHebbLinear(7, 5, inverse_temperature=1.3, lr=0.05, lr_power=0.3, rule=rule,
                           normalisation=normalisation, radius=1.5, dtype=torch.float64)
    x = torch.rand(6, 7, dtype=torch.float64)
    w0 = layer.weight.detach().clone()
    expected, _ = reference_apply(w0.numpy(), reference_linear_update(x.numpy(), w0.numpy(), 1.3, rule), 0.05, 0.3,
                                  normalisation)
    torch.testing.assert_close(layer.hebbian_step(x), x @ w0.T, rtol=0, atol=1e-12)
    np.testing.assert_allclose(layer.weight.detach().numpy(), expected, rtol=0, atol=1e-10)
    assert (layer.weight.detach() - w0).abs().max() > 1e-3


@pytest.mark.parametrize("rule", ["softhebb", "soft", "hardwta"])
@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_fixed_normalisation_matches_loop_reference_over_two_steps(rule, kind):
    """The gain of the first batch is carried to the second step, whose own max|D| differs from it."""
    torch.manual_seed(4)
    kw = dict(inverse_temperature=0.7, lr=0.05, lr_power=0.5, rule=rule, normalisation="fixed", radius=1.5,
              dtype=torch.float64)
    if kind == "conv":
        layer = SoftHebbConv2d(2, 4, 3, pre_triangle=rule == "soft", **kw)
        xs = [torch.randn(3, 2, 5, 4, dtype=torch.float64), 3 * torch.randn(3, 2, 5, 4, dtype=torch.float64)]
        update = lambda x, w: reference_conv_update(x, w, 0.7, rule, rule == "soft")  # noqa: E731
    else:
        layer = SoftHebbLinear(6, 4, **kw)
        xs = [torch.rand(5, 6, dtype=torch.float64), 3 * torch.rand(5, 6, dtype=torch.float64)]
        update = lambda x, w: reference_linear_update(x, w, 0.7, rule)  # noqa: E731
    w, gain, maxima = layer.weight.detach().numpy().copy(), 0.0, []
    for x in xs:
        D = update(x.numpy(), w)
        maxima.append(np.abs(D).max())
        w, gain = reference_apply(w, D, 0.05, 0.5, "fixed", gain)
        layer.hebbian_step(x)
        np.testing.assert_allclose(layer.weight.detach().numpy(), w, rtol=0, atol=1e-10)
    assert layer.normaliser.gain == pytest.approx(maxima[0], rel=1e-12)
    assert abs(maxima[1] / maxima[0] - 1) > 0.1  # the second step is not the global rule


def test_fixed_gain_is_saved_as_fixed_divisor_and_restored():
    torch.manual_seed(0)
    layer = SoftHebbConv2d(2, 4, 3, normalisation="fixed")
    assert layer.state_dict()["fixed_divisor"].item() == 0.0  # not calibrated yet
    layer.hebbian_step(torch.randn(3, 2, 6, 6))
    state = layer.state_dict()
    assert state["fixed_divisor"].dtype == torch.float64 and state["fixed_divisor"].item() == layer.normaliser.gain > 0
    copy = SoftHebbConv2d(2, 4, 3, normalisation="fixed")
    copy.load_state_dict(state)
    assert copy.normaliser.gain == layer.normaliser.gain
    x = torch.randn(3, 2, 6, 6)
    layer.hebbian_step(x), copy.hebbian_step(x)
    assert torch.equal(copy.weight, layer.weight)  # the copy continues with the frozen gain, not a new one
    without = {k: v for k, v in state.items() if k != "fixed_divisor"}
    with pytest.raises(RuntimeError, match="fixed_divisor"):
        SoftHebbConv2d(2, 4, 3, normalisation="fixed").load_state_dict(without)
    with pytest.raises(RuntimeError, match="fixed_divisor"):  # a stateless layer has no such key
        SoftHebbConv2d(2, 4, 3).load_state_dict(state)
    assert set(SoftHebbConv2d(2, 4, 3).state_dict()) == {"weight"}


def test_normalisation_registry_and_objects():
    assert rules.NORMALISATIONS == ("global", "fixed", "neuron", "none", "modulated", "homeostatic", "peak",
                                    "neuron-calibrated", "rms")
    for name in rules.NORMALISATIONS:
        norm = rules.make_normalisation(name)
        assert isinstance(norm, rules.Normalisation) and norm.name == name
        assert norm.stateful == (name not in ("global", "neuron", "none"))
        assert (norm.state_dict() != {}) == norm.stateful
    norm = rules.FixedGain()
    assert rules.make_normalisation(norm) is norm
    with pytest.raises(ValueError, match="unknown update normalisation"):
        rules.make_normalisation("l2")
    with pytest.raises(ValueError, match="gain"):
        rules.FixedGain(-1.0)
    # used alone, the gain comes from the first update it divides, then stays
    d1, d2 = torch.tensor([[1.0, -4.0], [2.0, 0.5]]), torch.tensor([[9.0, 0.0], [0.0, 1.0]])
    assert norm.divisor(d1) == 4.0 + 1e-30 and norm.divisor(d2) == 4.0 + 1e-30
    restored = rules.FixedGain()
    restored.load_state_dict(norm.state_dict())
    assert restored.gain == norm.gain
    with pytest.raises(KeyError):
        restored.load_state_dict({"gain": torch.tensor(1.0)})


def test_pure_functions_refuse_a_stateful_name_and_carry_a_stateful_object():
    torch.manual_seed(0)
    x, w = torch.rand(8, 5, dtype=torch.float64), torch.rand(3, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match="keeps state"):
        rules.linear_step(x, w, 1.0, 0.1, 0.5, normalisation="fixed")
    with pytest.raises(ValueError, match="keeps state"):
        rules.update_divisor(w, "fixed")
    norm = rules.FixedGain()
    _, dw1 = rules.linear_step(x, w, 1.0, 0.1, 0.5, normalisation=norm)
    _, paper = rules.linear_step(x, w, 1.0, 0.1, 0.5, normalisation="global")
    torch.testing.assert_close(dw1, paper, rtol=1e-14, atol=0)  # the first step is the paper's
    gain = norm.gain
    _, dw2 = rules.linear_step(2 * x, w, 1.0, 0.1, 0.5, normalisation=norm)
    _, raw = rules.linear_step(2 * x, w, 1.0, 0.1, 0.5, normalisation="none")
    assert norm.gain == gain
    torch.testing.assert_close(dw2, raw / gain, rtol=1e-14, atol=0)


def test_layer_takes_a_normalisation_object():
    norm = rules.FixedGain(2.5)
    layer = SoftHebbLinear(4, 3, normalisation=norm)
    assert layer.normaliser is norm and layer.normalisation == "fixed"
    assert layer.state_dict()["fixed_divisor"].item() == 2.5
    assert "normalisation='fixed'" in repr(layer)


# --------------------------------------------------------------------------- initialisation
def test_linear_positive_init_is_uniform_with_mean_square_norm_radius_squared():
    """U(0, a), a = sqrt(3 R^2 / N): E|w|^2 = N a^2 / 3 = R^2, Var|w|^2 = N (a^4/5 - a^4/9) = 0.8 R^4 / N."""
    N, K, R = 784, 2000, 35.0
    torch.manual_seed(0)
    layer = SoftHebbLinear(N, K, radius=R, dtype=torch.float64)
    w = layer.weight.detach()
    a = math.sqrt(3 * R ** 2 / N)
    assert (w >= 0).all() and w.max() <= a
    sq = (w ** 2).sum(1)
    assert abs(sq.mean().item() - R ** 2) < 5 * R ** 2 * math.sqrt(0.8 / (N * K))
    assert abs(w.mean().item() - a / 2) < 5 * a / math.sqrt(12 * N * K)  # the mean of U(0, a)


def test_linear_normal_init_has_std_radius_over_sqrt_fan_in():
    N, K, R = 300, 500, 35.0
    torch.manual_seed(0)
    w = SoftHebbLinear(N, K, radius=R, init="normal", dtype=torch.float64).weight.detach()
    sigma = R / math.sqrt(N)
    assert abs(w.std().item() / sigma - 1) < 5 / math.sqrt(2 * N * K)  # the std of a sample std
    assert abs(w.mean().item()) < 5 * sigma / math.sqrt(N * K)
    assert (w < 0).any()
    assert "init='normal'" in repr(SoftHebbLinear(3, 2, init="normal"))


def test_init_is_drawn_from_the_generator():
    layer = SoftHebbLinear(10, 4)
    layer.reset_parameters(torch.Generator().manual_seed(5))
    w = layer.weight.detach().clone()
    layer.reset_parameters(torch.Generator().manual_seed(5))
    assert torch.equal(layer.weight, w)


# --------------------------------------------------------------------------- hyperparameter validation
_BAD_COMMON = [
    ("inverse_temperature", 0.0), ("inverse_temperature", -1.0), ("inverse_temperature", float("nan")),
    ("inverse_temperature", float("inf")), ("inverse_temperature", "1"),
    ("lr", 0.0), ("lr", -0.1), ("lr", float("nan")), ("lr", float("inf")), ("lr", True),
    ("lr_power", -0.5), ("lr_power", float("nan")), ("lr_power", float("inf")), ("lr_power", None),
    ("radius", 0.0), ("radius", -3.0), ("radius", float("inf")), ("radius", float("nan")),
]
_BAD_SIZES = [0, -1, 2.0, True, "3", None]


@pytest.mark.parametrize("name, value", _BAD_COMMON + [("in_channels", v) for v in _BAD_SIZES]
                         + [("out_channels", v) for v in _BAD_SIZES]
                         + [("kernel_size", v) for v in (4, 0, -3, 3.0, True)]
                         + [("pre_triangle", v) for v in (1, "yes", None)]
                         + [("compute_dtype", "bf16")])
def test_conv_hyperparameters_are_validated(name, value):
    kw = dict(in_channels=3, out_channels=4, kernel_size=3)
    kw[name] = value
    with pytest.raises(ValueError, match=name):
        SoftHebbConv2d(**kw)


@pytest.mark.parametrize("name, value", _BAD_COMMON + [("in_features", v) for v in _BAD_SIZES]
                         + [("out_features", v) for v in _BAD_SIZES] + [("init", "xavier")])
def test_linear_hyperparameters_are_validated(name, value):
    kw = dict(in_features=5, out_features=3)
    kw[name] = value
    with pytest.raises(ValueError, match=name):
        SoftHebbLinear(**kw)


def test_names_are_validated_and_boundary_values_accepted():
    with pytest.raises(ValueError, match="rule"):
        SoftHebbConv2d(3, 4, 3, rule="oja")
    with pytest.raises(ValueError, match="normalisation"):
        SoftHebbLinear(3, 4, normalisation="l2")
    layer = SoftHebbConv2d(np.int64(3), 4, 1, lr_power=0, inverse_temperature=np.float64(0.5))
    assert (layer.in_channels, layer.kernel_size, layer.lr_power) == (3, 1, 0.0)
    assert type(layer.in_channels) is int and type(layer.inverse_temperature) is float


def test_docstring_examples_run():
    import doctest

    from rate_decoder import layers

    for module in (rules, layers):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted > 0 and result.failed == 0, module.__name__


@pytest.mark.parametrize("normalisation", ["modulated", "homeostatic", "peak", "neuron-calibrated", "rms"])
def test_running_gains_resume_from_a_saved_layer(normalisation):
    """A stateful gain saved with the layer's weights and loaded into a fresh layer continues exactly."""
    torch.manual_seed(3)
    kw = dict(inverse_temperature=0.7, lr=0.05, lr_power=0.5, radius=1.5, dtype=torch.float64)
    layer = SoftHebbConv2d(2, 4, 3, normalisation=normalisation, **kw)
    xs = [torch.randn(3, 2, 5, 4, dtype=torch.float64) * (1 + n) for n in range(3)]
    layer.hebbian_step(xs[0])
    copy = SoftHebbConv2d(2, 4, 3, normalisation=normalisation, **kw)
    copy.load_state_dict(layer.state_dict())
    for x in xs[1:]:
        layer.hebbian_step(x), copy.hebbian_step(x)
    torch.testing.assert_close(copy.weight, layer.weight, rtol=0, atol=0)
    assert all(k.startswith(f"{normalisation}_") for k in set(layer.state_dict()) - {"weight"})


def test_modulated_gain_starts_as_the_paper_then_follows_a_slow_mean():
    """``"modulated"``: the first step equals the paper's; the divisor then moves towards c * mean|D| with
    time constant tau batches (c = max/mean of the first batch), not to the current max|D|."""
    mod, paper, x1, x2, w0 = first_step_against_the_paper("modulated")
    u0 = rules.conv_forward(mod.pad(x1), w0)
    d1 = rules.conv_update(mod.pad(x1), u0, rules.signed_post(u0, 0.7), w0)
    w1 = mod.weight.detach().clone()
    u1 = rules.conv_forward(mod.pad(x2), w1)
    d2 = rules.conv_update(mod.pad(x2), u1, rules.signed_post(u1, 0.7), w1)
    mod.hebbian_step(x2)
    ratio, mean1 = d1.abs().max() / d1.abs().mean(), d1.abs().mean()
    divisor = ratio * (mean1 + (d2.abs().mean() - mean1) / 100.0)
    expected = w1 + rules.norm_learning_rate(w1, 0.05, 0.5).view(-1, 1, 1, 1) * d2 / divisor
    torch.testing.assert_close(mod.weight, expected, rtol=1e-9, atol=1e-12)


def test_homeostatic_gain_is_a_leaky_running_max_per_neuron():
    norm = rules.make_normalisation("homeostatic", tau=10.0)
    first = norm.divisor(torch.tensor([[1.0, -3.0], [0.5, 0.2]], dtype=torch.float64))
    torch.testing.assert_close(first, torch.tensor([3.0, 0.5], dtype=torch.float64))
    second = norm.divisor(torch.tensor([[0.1, 0.1], [2.0, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(second, torch.tensor([3.0 * np.exp(-0.1), 2.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="tau"):
        rules.make_normalisation("homeostatic", tau=0.5)


def test_peak_gain_is_one_leaky_running_max_for_the_layer():
    norm = rules.make_normalisation("peak", tau=10.0)
    first = norm.divisor(torch.tensor([[1.0, -3.0], [0.5, 0.2]], dtype=torch.float64))
    assert first.shape == () and float(first) == 3.0 + 1e-30
    second = norm.divisor(torch.tensor([[0.1, 0.1], [2.0, 0.0]], dtype=torch.float64))
    assert float(second) == pytest.approx(3.0 * np.exp(-0.1), rel=1e-12)
    assert float(norm.divisor(torch.tensor([[0.0, 5.0]], dtype=torch.float64))) == 5.0 + 1e-30


def test_calibrated_neuron_max_scales_the_rate_once():
    """``"neuron-calibrated"``: divisor ``max_i |D_ki| / c``, ``c`` the first batch's mean of ``max_i |D_ki| / max|D|``."""
    norm = rules.make_normalisation("neuron-calibrated")
    d1 = torch.tensor([[1.0, -4.0], [2.0, 0.5]], dtype=torch.float64)  # own maxima 4, 2: c = (1 + 0.5) / 2
    torch.testing.assert_close(norm.divisor(d1), torch.tensor([4.0, 2.0], dtype=torch.float64) / 0.75)
    d2 = torch.tensor([[0.1, 0.2], [8.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(norm.divisor(d2), torch.tensor([0.2, 8.0], dtype=torch.float64) / 0.75)


def test_rms_gain_is_a_running_mean_square_per_neuron():
    norm = rules.make_normalisation("rms", tau=4.0)
    torch.testing.assert_close(norm.divisor(torch.tensor([[1.0, -3.0], [0.5, 0.2]], dtype=torch.float64)),
                               torch.tensor([3.0, 0.5], dtype=torch.float64))
    second = norm.divisor(torch.tensor([[0.0, 1.0], [2.0, 0.0]], dtype=torch.float64))
    expected = torch.tensor([9.0 + (1.0 - 9.0) / 4, 0.25 + (4.0 - 0.25) / 4], dtype=torch.float64).sqrt()
    torch.testing.assert_close(second, expected)


@pytest.mark.parametrize("name", rules.NORMALISATIONS)
def test_an_update_depends_only_on_what_its_normalisation_declares(name):
    """Perturb the other neurons -- their weights (with the soft-WTA outputs held, the competition's signal)
    and their normalisation state -- and compare neuron 0's change. ``scope`` "neuron" or "constant": it
    does not move (bit for bit); "layer": one value divides the whole layer, and the perturbation moves it.
    A "local" rule that read another neuron's state would fail here."""
    torch.manual_seed(0)
    x = torch.randn(6, 5, dtype=torch.float64)
    w = torch.randn(4, 5, dtype=torch.float64) * 3
    post = rules.signed_post(x @ w.T, 1.0, dim=-1)

    def step(weight, norm):
        delta = rules.linear_update(x, x @ weight.T, post, weight)
        return rules.scale_update(delta, weight, 0.1, 0.5, norm.divisor(delta))

    def warmed(weight):  # two batches, so that a running gain holds state from before
        norm = rules.make_normalisation(name)
        step(weight, norm)
        return norm

    base_norm, other_norm = warmed(w), warmed(w)
    other_w = w.clone()
    other_w[1:] *= 10.0  # the other neurons' synapses (their changes now hold the layer's maximum)
    other_norm.load_state_dict({key: value if value.dim() == 0 else torch.cat([value[:1], 5 * value[1:]])
                                for key, value in other_norm.state_dict().items()})  # and their gains
    base, perturbed = step(w, base_norm)[0], step(other_w, other_norm)[0]
    scope = rules.make_normalisation(name).scope
    if scope in ("neuron", "constant"):
        assert torch.equal(base, perturbed), name
    else:
        assert scope == "layer" and not torch.equal(base, perturbed), name


def test_a_layers_running_gain_takes_its_time_constant():
    preset = load_preset("cifar10")
    taus = (100.0, 1000.0, 1000.0)
    preset = dataclasses.replace(preset, layers=tuple(dataclasses.replace(layer, gain_tau=t)
                                                      for layer, t in zip(preset.layers, taus)))
    net = SoftHebbNet(preset, normalisation="homeostatic")
    assert tuple(block.conv.normaliser.tau for block in net.blocks) == taus
    assert isinstance(SoftHebbNet(preset).blocks[0].conv.normaliser, rules.LayerMax)
