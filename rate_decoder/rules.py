"""The SoftHebb plasticity rule as pure functions (SPEC.md §2 and §8).

Every network of the project -- the rate-coded layers, the spiking network's cross-checks and the
synaptic device backends -- computes its update through these functions, so the rule exists once.
None of them changes its arguments in place.

Rules (the post-synaptic factor ``y~`` of the update):

* ``"softhebb"`` -- soft winner-take-all with the soft anti-Hebbian sign: the argmax of ``u`` keeps
  ``+y``, every other neuron gets ``-y`` (SPEC.md §2.3, the rule of all reported results).
* ``"soft"`` -- plain SoftHebb, ``y~ = y`` (no anti-Hebbian term).
* ``"hardwta"`` -- one-hot ``y~`` at the argmax (the hard-WTA baseline, SPEC.md §7).

Update normalisations:

* ``"global"`` -- divide the update by its largest magnitude over the whole layer (SPEC.md §2.5).
  This is what the paper does; it is not local to a synapse.
* ``"none"`` -- the local variant: no division. A spiking network can compute this one.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

RULES = ("softhebb", "soft", "hardwta")
NORMALISATIONS = ("global", "none")


def soft_wta(u: Tensor, inverse_temperature: float, dim: int = 1) -> Tensor:
    r"""Soft winner-take-all over neurons: :math:`y_k = e^{t u_k} / \sum_l e^{t u_l}`."""
    return torch.softmax(inverse_temperature * u, dim=dim)


def signed_post(u: Tensor, inverse_temperature: float, rule: str = "softhebb", dim: int = 1) -> Tensor:
    """Signed post-synaptic activity ``y~`` of the chosen rule (see the module docstring).

    The winner is the argmax of the raw ``u`` (first index on ties), as in SPEC.md §2.3.
    """
    if rule not in RULES:
        raise ValueError(f"unknown plasticity rule {rule!r}; choose one of {RULES}")
    winner = F.one_hot(u.argmax(dim=dim), u.shape[dim]).movedim(-1, dim).to(u.dtype)
    if rule == "hardwta":
        return winner
    y = soft_wta(u, inverse_temperature, dim=dim)
    if rule == "soft":
        return y
    return y * (2.0 * winner - 1.0)


def conv_update(x_padded: Tensor, u: Tensor, post: Tensor, weight: Tensor, compute_dtype=None) -> Tensor:
    r"""Raw convolutional SoftHebb update, summed over the batch and all output positions.

    .. math:: D_k = \sum_{b,q} \tilde y_{k,b,q} P_{b,q} - \Big(\sum_{b,q} \tilde y_{k,b,q} u_{k,b,q}\Big) w_k

    Args:
        x_padded: the padded, batch-normalised input the forward convolution saw, ``(B, C, Hp, Wp)``.
        u: pre-activations ``(B, K, H, W)`` (stride 1, so ``H = Hp - k + 1``).
        post: signed post-synaptic activity ``y~``, same shape as ``u``.
        weight: ``(K, C, k, k)``, the weights before the step.
        compute_dtype: dtype of the large product (e.g. ``torch.bfloat16``: ~2x faster on CPUs with
            AVX512-BF16, fp32 accumulation); ``None`` computes in the weights' dtype.

    Returns:
        ``D`` with the shape of ``weight`` (no normalisation, no learning rate).

    The Hebbian term is one matrix product of the unfolded patches with ``y~`` (SPEC.md §2.4 gives
    the equivalent swapped convolution); on a 2-core CPU the single product with inner dimension
    ``B*L`` ran at 1.5-3x the speed of the swapped convolution for the deeper CIFAR layers.
    """
    K, C, kh, kw = weight.shape
    patches = F.unfold(x_padded, (kh, kw)).transpose(1, 2).reshape(-1, C * kh * kw)  # (B*L, C*k*k)
    post_flat = post.transpose(0, 1).reshape(K, -1)
    if compute_dtype is not None:
        patches, post_flat = patches.to(compute_dtype), post_flat.to(compute_dtype)
    hebb = (post_flat @ patches).to(weight.dtype)  # one product, inner dimension B*L
    decay = (post * u).sum(dim=(0, 2, 3))  # (K,)
    return hebb.reshape(weight.shape) - decay.view(K, 1, 1, 1) * weight


def conv_forward(x_padded: Tensor, weight: Tensor, compute_dtype=None) -> Tensor:
    """``u = conv2d(x_padded, W)`` (stride 1, no bias), optionally computed in ``compute_dtype``."""
    if compute_dtype is None:
        return F.conv2d(x_padded, weight)
    return F.conv2d(x_padded.to(compute_dtype), weight.to(compute_dtype)).to(weight.dtype)


def linear_update(x: Tensor, u: Tensor, post: Tensor, weight: Tensor) -> Tensor:
    r"""Raw fully connected update :math:`D = \tilde Y^T X - \mathrm{diag}(\sum_b \tilde y_{bk} u_{bk}) W` (SPEC.md §8).

    Shapes: ``x (B, D)``, ``u`` and ``post`` ``(B, K)``, ``weight (K, D)``.
    """
    return post.T @ x - (post * u).sum(0)[:, None] * weight


def normalise_update(delta: Tensor, normalisation: str = "global") -> Tensor:
    """Divide by the layer-wide ``max |D| + 1e-30`` (``"global"``) or leave as is (``"none"``)."""
    if normalisation == "global":
        return delta / (delta.abs().max() + 1e-30)
    if normalisation == "none":
        return delta
    raise ValueError(f"unknown update normalisation {normalisation!r}; choose one of {NORMALISATIONS}")


def neuron_norms(weight: Tensor) -> Tensor:
    """L2 norm of each neuron's weight vector (first dimension indexes neurons)."""
    return weight.reshape(weight.shape[0], -1).norm(dim=1)


def norm_learning_rate(weight: Tensor, lr: float, power: float) -> Tensor:
    r"""Per-neuron learning rate :math:`\eta_k = \eta (|\,\|w_k\|_2 - 1| + 10^{-10})^q` (SPEC.md §2.6).

    It falls to ~0 as a neuron's norm converges to 1: the rule's own stopping criterion.
    """
    return lr * ((neuron_norms(weight) - 1.0).abs() + 1e-10) ** power


def scaled_step(weight: Tensor, delta: Tensor, lr: float, power: float) -> Tensor:
    """The weight change ``eta_k * D_k`` to add to ``weight`` (the learning rate from the pre-step weights)."""
    eta = norm_learning_rate(weight, lr, power)
    return eta.view(-1, *([1] * (weight.dim() - 1))) * delta


def conv_step(
    x_padded: Tensor,
    weight: Tensor,
    inverse_temperature: float,
    lr: float,
    lr_power: float,
    rule: str = "softhebb",
    normalisation: str = "global",
    transform=None,
    compute_dtype=None,
) -> tuple[Tensor, Tensor]:
    """One full convolutional plasticity step: returns ``(u, dW)`` with ``W_new = W + dW``.

    ``transform`` optionally maps the raw ``u`` before the WTA and the update (the code's
    ``pre_triangle``, SPEC.md §2.9); ``u`` returned is the transformed one. ``compute_dtype`` is the
    dtype of the two large products (forward convolution and Hebbian term); the rest stays in the
    weights' dtype.
    """
    u = conv_forward(x_padded, weight, compute_dtype)
    if transform is not None:
        u = transform(u)
    post = signed_post(u, inverse_temperature, rule)
    delta = normalise_update(conv_update(x_padded, u, post, weight, compute_dtype), normalisation)
    return u, scaled_step(weight, delta, lr, lr_power)


def linear_step(
    x: Tensor,
    weight: Tensor,
    inverse_temperature: float,
    lr: float,
    lr_power: float,
    rule: str = "soft",
    normalisation: str = "global",
) -> tuple[Tensor, Tensor]:
    """One fully connected plasticity step on ``x (B, D)``: returns ``(u, dW)``."""
    u = x @ weight.T
    post = signed_post(u, inverse_temperature, rule, dim=1)
    delta = normalise_update(linear_update(x, u, post, weight), normalisation)
    return u, scaled_step(weight, delta, lr, lr_power)
