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
* ``"neuron"`` -- divide each neuron's update by its own largest magnitude, ``max_i |D_ki|``. Not
  the paper's rule (SPEC.md §12 warns that it changes the dynamics) and not local to a synapse, but
  local to a neuron, like the norm its learning rate already depends on: it measures how much of
  the paper's accuracy a neuron-level gain keeps once the layer-wide maximum is gone.
* ``"none"`` -- the local variant: no division. A spiking network can compute this one.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

RULES = ("softhebb", "soft", "hardwta")
NORMALISATIONS = ("global", "neuron", "none")


def soft_wta(u: Tensor, inverse_temperature: float, dim: int = 1) -> Tensor:
    r"""Soft winner-take-all over neurons: :math:`y_k = e^{t u_k} / \sum_l e^{t u_l}`."""
    return torch.softmax(inverse_temperature * u, dim=dim)


def signed_post(u: Tensor, inverse_temperature: float, rule: str = "softhebb", dim: int = 1) -> Tensor:
    """Signed post-synaptic activity ``y~`` of the chosen rule (see the module docstring).

    The winner is the argmax of the raw ``u`` (first index on ties), as in SPEC.md §2.3. The winner
    is written with one scatter instead of a one-hot mask: a one-hot of ``K x B*L`` int64 was a third
    of the plasticity step's time in the first CIFAR layer.
    """
    if rule not in RULES:
        raise ValueError(f"unknown plasticity rule {rule!r}; choose one of {RULES}")
    winner = u.argmax(dim=dim, keepdim=True)
    if rule == "hardwta":
        return torch.zeros_like(u).scatter_(dim, winner, 1.0)
    y = soft_wta(u, inverse_temperature, dim=dim)
    if rule == "soft":
        return y
    y_winner = y.gather(dim, winner)
    return y.neg_().scatter_(dim, winner, y_winner)  # y is a fresh tensor: in place is safe


def _product(a: Tensor, b: Tensor, compute_dtype=None) -> Tensor:
    """``a @ b`` in ``compute_dtype`` (fp32 accumulation), returned in ``a``'s dtype."""
    if compute_dtype is None:
        return a @ b
    return (a.to(compute_dtype) @ b.to(compute_dtype)).to(a.dtype)


def unfold_patches(x_padded: Tensor, kernel_size: int) -> Tensor:
    """All ``k x k`` patches of a padded batch as rows ``(B*H*W, C*k*k)``, positions in row-major order.

    One strided gather; ``F.unfold`` followed by the transpose to rows took 2.5-8x longer here.
    """
    C, k = x_padded.shape[1], kernel_size
    windows = x_padded.unfold(2, k, 1).unfold(3, k, 1)  # (B, C, H, W, k, k), a view
    return windows.permute(0, 2, 3, 1, 4, 5).reshape(-1, C * k * k)


def linear_update(x: Tensor, u: Tensor, post: Tensor, weight: Tensor, compute_dtype=None) -> Tensor:
    r"""Raw update :math:`D = \tilde Y^T X - \mathrm{diag}(\sum_b \tilde y_{bk} u_{bk}) W` (SPEC.md §2.4, §8).

    Shapes: ``x (N, D)``, ``u`` and ``post`` ``(N, K)``, ``weight (K, D)``; returns a fresh ``(K, D)``.
    A convolution is this rule on its patches (``x`` = :func:`unfold_patches`, ``N = B*H*W``): the
    Hebbian term is then one matrix product with inner dimension ``B*H*W``, which on a 2-core CPU ran
    at 1.5-3x the speed of the swapped convolution of SPEC.md §2.4 for the deeper CIFAR layers.
    ``compute_dtype`` (e.g. ``torch.bfloat16``) is the dtype of that product's operands.
    """
    delta = _product(post.T.contiguous(), x, compute_dtype)  # a contiguous left operand: ~10 % faster GEMM
    return delta.addcmul_((post * u).sum(0)[:, None], weight, value=-1.0)


def conv_update(x_padded: Tensor, u: Tensor, post: Tensor, weight: Tensor, compute_dtype=None) -> Tensor:
    r"""Raw convolutional SoftHebb update, summed over the batch and all output positions.

    .. math:: D_k = \sum_{b,q} \tilde y_{k,b,q} P_{b,q} - \Big(\sum_{b,q} \tilde y_{k,b,q} u_{k,b,q}\Big) w_k

    Args:
        x_padded: the padded, batch-normalised input the forward convolution saw, ``(B, C, Hp, Wp)``.
        u: pre-activations ``(B, K, H, W)`` (stride 1, so ``H = Hp - k + 1``).
        post: signed post-synaptic activity ``y~``, same shape as ``u``.
        weight: ``(K, C, k, k)``, the weights before the step.
        compute_dtype: dtype of the large product (``None``: the weights' dtype).

    Returns:
        ``D`` with the shape of ``weight`` (no normalisation, no learning rate).
    """
    K = weight.shape[0]
    rows = lambda t: t.permute(0, 2, 3, 1).reshape(-1, K)  # noqa: E731  (B, K, H, W) -> (B*H*W, K)
    patches = unfold_patches(x_padded, weight.shape[-1])
    return linear_update(patches, rows(u), rows(post), weight.reshape(K, -1), compute_dtype).view_as(weight)


def conv_forward(x_padded: Tensor, weight: Tensor, compute_dtype=None) -> Tensor:
    """``u = conv2d(x_padded, W)`` (stride 1, no bias), optionally computed in ``compute_dtype``."""
    if compute_dtype is None:
        return F.conv2d(x_padded, weight)
    return F.conv2d(x_padded.to(compute_dtype), weight.to(compute_dtype)).to(weight.dtype)


def update_divisor(delta: Tensor, normalisation: str = "global") -> Tensor | float:
    """``max |D| + 1e-30`` over the whole layer (``"global"``, SPEC.md §2.5), per neuron (``"neuron"``,
    shape ``(K,)`` for ``delta (K, ...)``) or ``1`` (``"none"``)."""
    if normalisation == "global":
        low, high = torch.aminmax(delta)  # one pass, no |D| temporary (20x faster than vector_norm(inf) here)
        return torch.maximum(high, -low) + 1e-30
    if normalisation == "neuron":
        return delta.flatten(1).abs().amax(dim=1) + 1e-30
    if normalisation == "none":
        return 1.0
    raise ValueError(f"unknown update normalisation {normalisation!r}; choose one of {NORMALISATIONS}")


def normalise_update(delta: Tensor, normalisation: str = "global") -> Tensor:
    """``delta`` divided by :func:`update_divisor`."""
    return delta / update_divisor(delta, normalisation)


def neuron_norms(weight: Tensor) -> Tensor:
    """L2 norm of each neuron's weight vector (first dimension indexes neurons)."""
    return weight.reshape(weight.shape[0], -1).norm(dim=1)


def norm_learning_rate(weight: Tensor, lr: float, power: float) -> Tensor:
    r"""Per-neuron learning rate :math:`\eta_k = \eta (|\,\|w_k\|_2 - 1| + 10^{-10})^q` (SPEC.md §2.6).

    It falls to ~0 as a neuron's norm converges to 1: the rule's own stopping criterion.
    """
    return lr * ((neuron_norms(weight) - 1.0).abs() + 1e-10) ** power


def plastic_update(
    x: Tensor,
    u: Tensor,
    weight: Tensor,
    inverse_temperature: float,
    lr: float,
    lr_power: float,
    rule: str = "softhebb",
    normalisation: str = "global",
    compute_dtype=None,
) -> Tensor:
    """The weight change ``dW`` of neurons ``weight (K, D)`` that saw inputs ``x (N, D)`` and computed ``u (N, K)``.

    The WTA of ``rule``, the raw update of :func:`linear_update`, its normalisation and the
    per-neuron rate: ``W_new = W + eta_k D_k / max|D|``. The update is scaled in place in its own
    fresh buffer, so a step makes ~3 passes over the weights instead of ~7 (it matters for the
    5.3M-weight CIFAR layer).
    """
    post = signed_post(u, inverse_temperature, rule, dim=-1)
    delta = linear_update(x, u, post, weight, compute_dtype)
    scale = norm_learning_rate(weight, lr, lr_power) / update_divisor(delta, normalisation)
    return delta.mul_(scale[:, None])


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

    A convolution is :func:`plastic_update` applied to its patches: every position of every image
    is one input row. ``transform`` optionally maps the raw ``u`` before the WTA and the update (the
    code's ``pre_triangle``, SPEC.md §2.9); ``u`` returned is the transformed one. ``compute_dtype``
    is the dtype of the two large products; the rest stays in the weights' dtype.
    """
    u = conv_forward(x_padded, weight, compute_dtype)  # oneDNN's convolution beat unfold + GEMM here
    if transform is not None:
        u = transform(u)
    K = weight.shape[0]
    u_rows = u.permute(0, 2, 3, 1).reshape(-1, K)
    dw = plastic_update(unfold_patches(x_padded, weight.shape[-1]), u_rows, weight.reshape(K, -1),
                        inverse_temperature, lr, lr_power, rule, normalisation, compute_dtype)
    return u, dw.view_as(weight)


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
    return u, plastic_update(x, u, weight, inverse_temperature, lr, lr_power, rule, normalisation)
