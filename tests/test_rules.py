"""The rule against a direct, loop-based evaluation of SPEC.md §2.3-2.7 in float64."""
import math

import numpy as np
import pytest
import torch

from rate_decoder import rules
from rate_decoder.layers import SoftHebbConv2d, SoftHebbLinear


def reference_conv_step(x, w, t, lr, q, rule="softhebb", normalisation="global", pre_triangle=False):
    """Loop over samples, positions, neurons and synapses; numpy float64, nothing vectorised.

    ``pre_triangle`` replaces u by max(u - mean over neurons, 0) before the WTA and the update (SPEC.md §2.9).
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
                winner = int(np.argmax(u))
                e = np.exp(t * (u - u.max()))
                y = e / e.sum()
                for n in range(K):
                    if rule == "softhebb":
                        ys = y[n] if n == winner else -y[n]
                    elif rule == "soft":
                        ys = y[n]
                    else:
                        ys = 1.0 if n == winner else 0.0
                    for c in range(C):
                        for a in range(k):
                            for bb in range(k):
                                D[n, c, a, bb] += ys * (patch[c, a, bb] - u[n] * w[n, c, a, bb])
    if normalisation == "global":
        D = D / (np.abs(D).max() + 1e-30)
    elif normalisation == "neuron":
        for n in range(K):
            D[n] = D[n] / (np.abs(D[n]).max() + 1e-30)
    new = w.copy()
    for n in range(K):
        eta = lr * (abs(math.sqrt(np.sum(w[n] ** 2)) - 1.0) + 1e-10) ** q
        new[n] += eta * D[n]
    return new


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


def test_global_normalisation_puts_largest_update_at_one():
    torch.manual_seed(0)
    layer = SoftHebbConv2d(3, 6, 3, dtype=torch.float64)
    xp = layer.pad(torch.randn(4, 3, 6, 6, dtype=torch.float64))
    u = torch.nn.functional.conv2d(xp, layer.weight)
    d = rules.normalise_update(rules.conv_update(xp, u, rules.signed_post(u, 1.0), layer.weight))
    assert d.abs().max().item() == pytest.approx(1.0, abs=1e-12)


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


def test_bad_hyperparameters():
    with pytest.raises(ValueError, match="rule"):
        SoftHebbConv2d(3, 4, 3, rule="oja")
    with pytest.raises(ValueError, match="odd"):
        SoftHebbConv2d(3, 4, 4)
    with pytest.raises(ValueError, match="inverse_temperature"):
        SoftHebbConv2d(3, 4, 3, inverse_temperature=float("nan"))


def test_feature_dropout_is_inverted_dropout_at_half():
    from rate_decoder.training import feature_dropout

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


def test_fixed_normalisation_is_global_first_then_a_frozen_gain():
    """``"fixed"``: the first step equals the paper's; later steps divide by that first max|D|, frozen."""
    torch.manual_seed(0)
    kw = dict(inverse_temperature=0.7, lr=0.05, lr_power=0.5, radius=1.5, dtype=torch.float64)
    fixed, paper = SoftHebbConv2d(2, 4, 3, normalisation="fixed", **kw), SoftHebbConv2d(2, 4, 3, **kw)
    paper.weight.data.copy_(fixed.weight)
    x1, x2 = torch.randn(3, 2, 5, 4, dtype=torch.float64), 3 * torch.randn(3, 2, 5, 4, dtype=torch.float64)
    w0 = fixed.weight.detach().clone()
    fixed.hebbian_step(x1), paper.hebbian_step(x1)
    torch.testing.assert_close(fixed.weight, paper.weight, rtol=0, atol=1e-12)
    d1 = rules.conv_update(fixed.pad(x1), rules.conv_forward(fixed.pad(x1), w0),
                           rules.signed_post(rules.conv_forward(fixed.pad(x1), w0), 0.7), w0)
    assert fixed.fixed_divisor.item() == pytest.approx(d1.abs().max().item(), rel=1e-12)
    w1 = fixed.weight.detach().clone()
    u = rules.conv_forward(fixed.pad(x2), w1)
    d2 = rules.conv_update(fixed.pad(x2), u, rules.signed_post(u, 0.7), w1)
    fixed.hebbian_step(x2)
    expected = w1 + rules.norm_learning_rate(w1, 0.05, 0.5).view(-1, 1, 1, 1) * d2 / d1.abs().max()
    torch.testing.assert_close(fixed.weight, expected, rtol=0, atol=1e-12)
    # and it is not the global rule any more (x2's max|D| differs from x1's)
    assert abs(d2.abs().max().item() / d1.abs().max().item() - 1) > 0.1
    assert "fixed_divisor" in fixed.state_dict() and "fixed_divisor" not in paper.state_dict()
