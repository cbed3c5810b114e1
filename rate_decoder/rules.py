"""The SoftHebb plasticity rule as pure functions (docs/algorithm.md §2 and §8).

Every network of the project -- the rate-coded layers, the spiking network's cross-checks and the
synaptic device backends -- computes its update through these functions, so the rule exists once.

Rules (the post-synaptic factor ``y~`` of the update):

* ``"softhebb"`` -- soft winner-take-all with the soft anti-Hebbian sign: the argmax of ``u`` keeps
  ``+y``, every other neuron gets ``-y`` (docs/algorithm.md §2.3, the rule of all reported results).
* ``"soft"`` -- plain SoftHebb, ``y~ = y`` (no anti-Hebbian term).
* ``"hardwta"`` -- one-hot ``y~`` at the argmax (the hard-WTA baseline, docs/algorithm.md §7).

Update normalisations (the divisor of the raw update ``D``, one object per name in
:data:`NORMALISATIONS`, built by :func:`make_normalisation`):

* ``"global"`` -- :class:`LayerMax`: divide the update by its largest magnitude over the whole layer
  (docs/algorithm.md §2.5). This is what the paper does; it is not local to a synapse.
* ``"fixed"`` -- :class:`FixedGain`: divide by a constant gain, the ``max |D|`` of the first batch,
  frozen. Every later change depends only on the synapse's own activity and its neuron's norm, as
  on a chip with a programmed gain. The only stateful one: its gain is saved with the layer.
* ``"neuron"`` -- :class:`NeuronMax`: divide each neuron's update by its own largest magnitude,
  ``max_i |D_ki|``. Not the paper's rule (docs/algorithm.md §12 warns that it changes the dynamics) and not
  local to a synapse, but local to a neuron, like the norm its learning rate already depends on: it
  measures how much of the paper's accuracy a neuron-level gain keeps once the layer-wide maximum
  is gone.
* ``"none"`` -- :class:`NoNormalisation`: the local variant, no division. A spiking network can
  compute this one; pair it with a small ``lr``, the update is a sum over the batch.

None of the functions changes its arguments in place, with one exception by design: a stateful
normalisation object passed to them advances its own state when asked for a divisor. The state of
the step is then explicit: it is the object, which the layer holds and saves with its weights.
"""
from __future__ import annotations

import inspect
import math
from functools import partial
from typing import Callable, ClassVar, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

RULES = ("softhebb", "soft", "hardwta")


def soft_wta(u: Tensor, inverse_temperature: float, dim: int = 1) -> Tensor:
    r"""Soft winner-take-all over neurons: :math:`y_k = e^{t u_k} / \sum_l e^{t u_l}`.

    At ``t = 1`` the product is skipped (``1 * u`` is ``u`` to the bit): one pass over ``u`` fewer, a
    twentieth of the greedy step of CIFAR-10's first layer (4.9 against 5.2 ms, 2 threads, an AMD EPYC).
    """
    return torch.softmax(u if inverse_temperature == 1 else inverse_temperature * u, dim=dim)


def signed_post(u: Tensor, inverse_temperature: float, rule: str = "softhebb", dim: int = 1) -> Tensor:
    """Signed post-synaptic activity ``y~`` of the chosen rule (see the module docstring).

    The winner is the argmax of the raw ``u`` (first index on ties), as in docs/algorithm.md §2.3. The winner
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
    """``a @ b`` in ``compute_dtype`` (fp32 accumulation), returned in ``a``'s dtype.

    In fp32 a transposed ``a`` is passed as the view it is; in a reduced dtype it is made contiguous
    after the conversion (a copy of half the bytes), because oneDNN's bf16 product on the view sums in
    another order than on the contiguous operand.
    """
    if compute_dtype is None:
        return a @ b
    return (a.to(compute_dtype).contiguous() @ b.to(compute_dtype)).to(a.dtype)


def unfold_patches(x_padded: Tensor, kernel_size: int) -> Tensor:
    """All ``k x k`` patches of a padded batch as rows ``(B*H*W, C*k*k)``, positions in row-major order.

    One strided gather; ``F.unfold`` followed by the transpose to rows took 2.5-8x longer here.
    """
    C, k = x_padded.shape[1], kernel_size
    windows = x_padded.unfold(2, k, 1).unfold(3, k, 1)  # (B, C, H, W, k, k), a view
    return windows.permute(0, 2, 3, 1, 4, 5).reshape(-1, C * k * k)


def channel_minor_patches(x_padded: Tensor, kernel_size: int) -> Tensor:
    """The rows of :func:`unfold_patches` with their columns in ``(ky, kx, c)`` order, ``(B*H*W, k*k*C)``.

    Gathered from a channels-last copy, each patch is ``k*k`` runs of ``C`` contiguous values: on a 2-core
    AMD EPYC 16-20x faster than the ``(c, ky, kx)`` gather for CIFAR-10's layers 2 and 3 (3.3 -> 0.2 ms a
    batch). :func:`to_channel_major` puts a product's columns back in the weights' order.
    """
    k = kernel_size
    nhwc = x_padded.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)  # a view
    windows = nhwc.unfold(1, k, 1).unfold(2, k, 1)  # (B, H, W, C, k, k), a view
    return windows.permute(0, 1, 2, 4, 5, 3).reshape(-1, k * k * x_padded.shape[1])


def to_channel_major(delta: Tensor, channels: int, kernel_size: int) -> Tensor:
    """``(K, k*k*C)`` columns in ``(ky, kx, c)`` order (:func:`channel_minor_patches`) as ``(K, C*k*k)``."""
    k = kernel_size
    return delta.view(-1, k, k, channels).permute(0, 3, 1, 2).reshape(len(delta), -1)


def linear_update(x: Tensor, u: Tensor, post: Tensor, weight: Tensor, compute_dtype=None,
                  reorder: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    r"""Raw update :math:`D = \tilde Y^T X - \mathrm{diag}(\sum_b \tilde y_{bk} u_{bk}) W` (docs/algorithm.md §2.4, §8).

    Shapes: ``x (N, D)``, ``u`` and ``post`` ``(N, K)``, ``weight (K, D)``; returns a fresh ``(K, D)``.
    A convolution is this rule on its patches (``x`` = :func:`unfold_patches`, ``N = B*H*W``): the
    Hebbian term is then one matrix product with inner dimension ``B*H*W``, which on a 2-core CPU ran
    at 1.5-3x the speed of the swapped convolution of docs/algorithm.md §2.4 for the deeper CIFAR layers.
    ``compute_dtype`` (e.g. ``torch.bfloat16``) is the dtype of that product's operands. ``reorder``
    maps the product's columns to the weights' order where ``x``'s columns are in another
    (:func:`channel_minor_patches`); each entry is the same sum, so the result is the same to the bit.
    In fp32 the left operand stays a transposed view: BLAS reads it as such, which on the CIFAR layers
    was faster than making it contiguous first (the copy cost more than it saved), with the same bits.
    """
    delta = _product(post.T, x, compute_dtype)
    if reorder is not None:
        delta = reorder(delta)
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
    patches, reorder = _conv_patches(x_padded, weight)
    return linear_update(patches, rows(u), rows(post), weight.reshape(K, -1), compute_dtype, reorder).view_as(weight)


def _conv_patches(x_padded: Tensor, weight: Tensor) -> tuple[Tensor, Callable[[Tensor], Tensor] | None]:
    """The patches of the update's product and the map of its columns to ``weight``'s order (``None``: the same).

    Channel-minor (:func:`channel_minor_patches`) where the patches outnumber the neurons: the product
    then has fewer entries to put back in order than the gather saves. On a 2-core AMD EPYC this made
    the greedy step of CIFAR-10's layer 2 (2,560 patches, 384 neurons) 10 % faster, and that of layer 3
    (640 patches, 1,536 neurons) 15 % slower, which therefore keeps the channel-major gather.
    """
    C, k = weight.shape[1], weight.shape[-1]
    B, H, W = x_padded.shape[0], x_padded.shape[2] - k + 1, x_padded.shape[3] - k + 1
    if B * H * W < weight.shape[0]:
        return unfold_patches(x_padded, k), None
    return channel_minor_patches(x_padded, k), partial(to_channel_major, channels=C, kernel_size=k)


def conv_forward(x_padded: Tensor, weight: Tensor, compute_dtype=None) -> Tensor:
    """``u = conv2d(x_padded, W)`` (stride 1, no bias), optionally computed in ``compute_dtype``."""
    if compute_dtype is None:
        return F.conv2d(x_padded, weight)
    return F.conv2d(x_padded.to(compute_dtype), weight.to(compute_dtype)).to(weight.dtype)


class Normalisation:
    r"""The divisor of a batch's raw update: :math:`\Delta W_k = \eta_k D_k / \mathrm{divisor}`.

    A subclass sets ``name`` (its key in :data:`NORMALISATIONS`) and ``scope``, what its divisor for a
    neuron may depend on: ``"neuron"`` (that neuron's own changes and state), ``"layer"`` (one value
    shared by the whole layer, from all its changes) or ``"constant"`` (nothing that changes from batch to
    batch after the first); and implements :meth:`divisor`.
    A stateful one (``stateful = True``) keeps what it carries from step to step as tensors in
    :meth:`state_dict`, which a layer saves with its weights under ``"<name>_<key>"``; it may change
    that state in :meth:`calibrate`, which a layer calls before each step, and in :meth:`divisor`.
    The default is stateless: no state, nothing to calibrate.
    """

    name: ClassVar[str]
    scope: ClassVar[str]
    stateful: ClassVar[bool] = False

    def divisor(self, delta: Tensor) -> Tensor | float:
        """What ``delta (K, ...)`` is divided by: a scalar, or a ``(K,)`` tensor for one value per neuron.

        A Python number is a constant gain and is folded into the base rate (:func:`scale_update`).
        """
        raise NotImplementedError

    def calibrate(self, raw_update: Callable[[], Tensor]) -> None:
        """Take what the normalisation needs from the batch before its step; ``raw_update()`` computes ``D``.

        ``raw_update`` is called only if needed, so a normalisation that needs nothing costs nothing.
        """

    def state_dict(self) -> dict[str, Tensor]:
        return {}

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        if set(state) != set(self.state_dict()):
            raise KeyError(f"{type(self).__name__} state has keys {sorted(self.state_dict())}, got {sorted(state)}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class LayerMax(Normalisation):
    """``"global"``: ``max |D| + 1e-30`` over the whole layer (docs/algorithm.md §2.5), the paper's rule."""

    name = "global"
    scope = "layer"

    def divisor(self, delta: Tensor) -> Tensor:
        low, high = torch.aminmax(delta)  # one pass, no |D| temporary (20x faster than vector_norm(inf) here)
        return torch.maximum(high, -low) + 1e-30


class NeuronMax(Normalisation):
    """``"neuron"``: each neuron's own ``max_i |D_ki| + 1e-30``, shape ``(K,)``."""

    name = "neuron"
    scope = "neuron"

    def divisor(self, delta: Tensor) -> Tensor:
        return delta.flatten(1).abs().amax(dim=1) + 1e-30


class NoNormalisation(Normalisation):
    """``"none"``: divisor 1, the raw batch sum (the local rule a spiking network computes)."""

    name = "none"
    scope = "constant"

    def divisor(self, delta: Tensor) -> float:
        return 1.0


class FixedGain(Normalisation):
    """``"fixed"``: a constant gain, ``max |D| + 1e-30`` of the first batch, then frozen.

    The first step therefore moves the weights as far as the paper's (docs/algorithm.md §2.5); later steps
    divide by the same constant, so each synapse's change depends only on its own pre- and
    post-synaptic activity and its neuron's norm, as on a chip with a programmed gain. The layer
    calibrates on the raw update computed at the weights' precision, so the gain does not depend on
    a reduced ``compute_dtype`` of the step. Used alone (no :meth:`calibrate` call), the gain is
    taken from the first update passed to :meth:`divisor`.

    Args:
        gain: the frozen gain; ``0`` (the default) until the first batch sets it.

    State: ``{"divisor": gain}`` (a float64 scalar tensor), so a layer saves it as ``fixed_divisor``.

    Example::

        >>> norm = FixedGain()
        >>> norm.divisor(torch.tensor([[1.0, -4.0], [2.0, 0.5]]))
        4.0
        >>> norm.divisor(torch.tensor([[9.0, 0.0], [0.0, 1.0]]))  # frozen at the first batch's
        4.0
    """

    name = "fixed"
    scope = "constant"
    stateful = True

    def __init__(self, gain: float = 0.0):
        gain = float(gain)
        if not (math.isfinite(gain) and gain >= 0):
            raise ValueError(f"gain must be a finite number >= 0, got {gain}")
        self.gain = gain

    @property
    def calibrated(self) -> bool:
        return self.gain != 0.0

    def calibrate(self, raw_update: Callable[[], Tensor]) -> None:
        if not self.calibrated:
            self.gain = float(LayerMax().divisor(raw_update()))

    def divisor(self, delta: Tensor) -> float:
        self.calibrate(lambda: delta)
        return self.gain

    def state_dict(self) -> dict[str, Tensor]:
        return {"divisor": torch.tensor(self.gain, dtype=torch.float64)}

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        super().load_state_dict(state)
        self.gain = float(state["divisor"])

    def __repr__(self) -> str:
        return f"FixedGain(gain={self.gain!r})"


def _time_constant(tau: float) -> float:
    """A running gain's time constant in batches, checked."""
    tau = float(tau)
    if not (math.isfinite(tau) and tau >= 1):
        raise ValueError(f"tau must be a finite number >= 1 (batches), got {tau}")
    return tau


class ModulatedGain(Normalisation):
    r"""``"modulated"``: one scalar broadcast to the layer, a slow running mean of the layer's mean ``|D|``.

    A neuromodulator-like signal: :math:`m_n = \mathrm{mean}|D^{(n)}|` of batch ``n`` (a population average,
    not a maximum) is low-passed with time constant ``tau`` batches, :math:`g_n = g_{n-1} + (m_n - g_{n-1})
    / \tau`, and the divisor is :math:`c\,g_n` with :math:`c = \max|D^{(1)}| / \mathrm{mean}|D^{(1)}|` fixed at
    the first batch, so the first step equals the paper's. Later steps follow the update's magnitude
    as it shrinks with the neuron norms, as the paper's max does, but through one slow scalar: each
    synapse needs its own activity, its neuron's norm and the broadcast gain.

    State: ``{"gain": g, "ratio": c}`` (float64 scalars; 0 until the first batch).

    Example::

        >>> norm = ModulatedGain(tau=2.0)
        >>> norm.divisor(torch.tensor([[1.0, -3.0]]))  # first batch: max |D| = 3
        3.0
        >>> norm.divisor(torch.tensor([[0.5, -0.5]]))  # g = 2 + (0.5 - 2) / 2 = 1.25, c = 1.5
        1.875
    """

    name = "modulated"
    scope = "layer"
    stateful = True

    def __init__(self, tau: float = 100.0):
        self.tau, self.gain, self.ratio = _time_constant(tau), 0.0, 0.0

    def divisor(self, delta: Tensor) -> float:
        mean = float(delta.abs().mean()) + 1e-30
        if self.ratio == 0.0:
            self.ratio, self.gain = float(LayerMax().divisor(delta)) / mean, mean
        else:
            self.gain += (mean - self.gain) / self.tau
        return self.ratio * self.gain

    def state_dict(self) -> dict[str, Tensor]:
        return {"gain": torch.tensor(self.gain, dtype=torch.float64),
                "ratio": torch.tensor(self.ratio, dtype=torch.float64)}

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        super().load_state_dict(state)
        self.gain, self.ratio = float(state["gain"]), float(state["ratio"])

    def __repr__(self) -> str:
        return f"ModulatedGain(tau={self.tau!r}, gain={self.gain!r}, ratio={self.ratio!r})"


class HomeostaticGain(Normalisation):
    r"""``"homeostatic"``: each neuron divides by a leaky running maximum of its own ``max_i |D_ki|``.

    :math:`g_k \leftarrow \max(\max_i |D_{ki}|,\; g_k e^{-1/\tau})` per batch (``tau`` in batches), shape
    ``(K,)``: local to the neuron (a homeostatic variable it keeps), with memory, unlike
    ``"neuron"``, whose divisor is the current batch's alone.

    State: ``{"gain": g}`` (float64, ``(K,)``; empty until the first batch).
    """

    name = "homeostatic"
    scope = "neuron"
    stateful = True

    def __init__(self, tau: float = 100.0):
        self.tau, self.gain = _time_constant(tau), torch.zeros(0, dtype=torch.float64)

    def magnitude(self, delta: Tensor) -> Tensor:
        """What the running maximum follows: each neuron's ``max_i |D_ki|``, shape ``(K,)``."""
        return delta.detach().flatten(1).abs().amax(dim=1)

    def divisor(self, delta: Tensor) -> Tensor:
        current = self.magnitude(delta).to(torch.float64).cpu() + 1e-30
        if self.gain.shape != current.shape:
            self.gain = current
        else:
            self.gain = torch.maximum(current, self.gain * math.exp(-1.0 / self.tau))
        return self.gain.to(delta.device, delta.dtype)

    def state_dict(self) -> dict[str, Tensor]:
        return {"gain": self.gain.clone()}

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        super().load_state_dict(state)
        self.gain = state["gain"].to(torch.float64).clone()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(tau={self.tau!r})"


class PeakGain(HomeostaticGain):
    r"""``"peak"``: one scalar broadcast to the layer, a leaky running maximum of the layer's ``max |D|``.

    :math:`g \leftarrow \max(\max |D|,\; g e^{-1/\tau})` per batch: a slow peak detector of the layer's
    update magnitude, broadcast to every synapse like a neuromodulator. The paper's divisor is the
    ``tau -> 0`` limit; with memory the divisor can be held by one slowly decaying variable that the
    plastic events push up, instead of a maximum over the whole layer taken before every step.
    The first step equals the paper's. Each synapse needs its own activity, its neuron's norm and
    the broadcast.

    State: ``{"gain": g}`` (a float64 scalar tensor; empty until the first batch).

    Example::

        >>> norm = PeakGain(tau=1.0)
        >>> float(norm.divisor(torch.tensor([[1.0, -4.0], [2.0, 0.5]])))
        4.0
        >>> round(float(norm.divisor(torch.tensor([[1.0, 0.0], [0.0, 0.5]]))), 4)  # max(1, 4 / e)
        1.4715
    """

    name = "peak"
    scope = "layer"

    def magnitude(self, delta: Tensor) -> Tensor:
        low, high = torch.aminmax(delta.detach())
        return torch.maximum(high, -low)


class CalibratedNeuronMax(NeuronMax):
    r"""``"neuron-calibrated"``: each neuron's own ``max_i |D_ki|``, with the rate scaled by a constant ``c``.

    The neuron-local maximum moves every neuron at the full rate in every batch, where the paper's
    layer-wide maximum moves a typical neuron far less. ``c`` is set once, on the first batch, to the
    mean over neurons of :math:`\max_i |D_{ki}| / \max |D|`, so the first step moves the neurons as far
    on average as the paper's; the divisor is then :math:`\max_i |D_{ki}| / c`.

    State: ``{"scale": c}`` (a float64 scalar; 0 until the first batch).
    """

    name = "neuron-calibrated"
    stateful = True

    def __init__(self):
        self.scale = 0.0

    def divisor(self, delta: Tensor) -> Tensor:
        own = super().divisor(delta)
        if self.scale == 0.0:
            self.scale = float((own / LayerMax().divisor(delta)).mean())
        return own / self.scale

    def state_dict(self) -> dict[str, Tensor]:
        return {"scale": torch.tensor(self.scale, dtype=torch.float64)}

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        super().load_state_dict(state)
        self.scale = float(state["scale"])

    def __repr__(self) -> str:
        return f"CalibratedNeuronMax(scale={self.scale!r})"


class RMSGain(HomeostaticGain):
    r"""``"rms"``: each neuron divides by a running root-mean-square of its own ``max_i |D_ki|``.

    :math:`s_k \leftarrow s_k + (m_k^2 - s_k) / \tau` with :math:`m_k = \max_i |D_{ki}|` (``s_k = m_k^2`` at the
    first batch), divisor :math:`\sqrt{s_k}`: the second-moment estimate of RMSprop (Tieleman & Hinton,
    2012, lecture 6.5), kept per neuron on its update's magnitude rather than per synapse on a gradient,
    as a homeostatic running average of the neuron's own plasticity. Unlike the running maximum
    (``"homeostatic"``), a batch larger than the recent ones moves the neuron more than the rate.

    State: ``{"gain": s}`` (float64, ``(K,)``; empty until the first batch).
    """

    name = "rms"

    def divisor(self, delta: Tensor) -> Tensor:
        current = self.magnitude(delta).to(torch.float64).cpu() ** 2
        if self.gain.shape != current.shape:
            self.gain = current
        else:
            self.gain = self.gain + (current - self.gain) / self.tau
        return (self.gain.sqrt() + 1e-30).to(delta.device, delta.dtype)


_NORMALISATION_CLASSES = {cls.name: cls for cls in (LayerMax, FixedGain, NeuronMax, NoNormalisation, ModulatedGain,
                                                     HomeostaticGain, PeakGain, CalibratedNeuronMax, RMSGain)}
#: names of the update normalisations, the keys :func:`make_normalisation` accepts
NORMALISATIONS = tuple(_NORMALISATION_CLASSES)


def make_normalisation(normalisation: str | Normalisation, **params) -> Normalisation:
    """A fresh normalisation object from its name (``params`` go to its constructor); an object is returned as is."""
    if isinstance(normalisation, Normalisation):
        if params:
            raise ValueError(f"parameters {sorted(params)} given with an already built {normalisation!r}")
        return normalisation
    if normalisation not in _NORMALISATION_CLASSES:
        raise ValueError(f"unknown update normalisation {normalisation!r}; choose one of {NORMALISATIONS}")
    return _NORMALISATION_CLASSES[normalisation](**params)


def layer_normalisation(normalisation: str | Normalisation, tau: float) -> Normalisation:
    """The normalisation a layer keeps: a name gets ``tau`` (batches) if its gain is a running one."""
    if isinstance(normalisation, str) and "tau" in inspect.signature(_NORMALISATION_CLASSES.get(
            normalisation, Normalisation)).parameters:
        return make_normalisation(normalisation, tau=tau)
    return make_normalisation(normalisation)


def _step_normalisation(normalisation: str | Normalisation) -> Normalisation:
    """The object the pure step functions use: a name must be stateless (its state would be lost after the call)."""
    norm = make_normalisation(normalisation)
    if norm.stateful and not isinstance(normalisation, Normalisation):
        raise ValueError(f"update normalisation {normalisation!r} keeps state between steps: pass an object "
                         f"(rules.make_normalisation({normalisation!r})) and keep it, as the layers do")
    return norm


def update_divisor(delta: Tensor, normalisation: str | Normalisation = "global") -> Tensor | float:
    """The divisor of ``delta (K, ...)`` under ``normalisation`` (:meth:`Normalisation.divisor`)."""
    return _step_normalisation(normalisation).divisor(delta)


def neuron_norms(weight: Tensor) -> Tensor:
    """L2 norm of each neuron's weight vector (first dimension indexes neurons)."""
    return weight.reshape(weight.shape[0], -1).norm(dim=1)


def norm_learning_rate(weight: Tensor, lr: float, power: float) -> Tensor:
    r"""Per-neuron learning rate :math:`\eta_k = \eta (|\,\|w_k\|_2 - 1| + 10^{-10})^q` (docs/algorithm.md §2.6).

    It falls to ~0 as a neuron's norm converges to 1: the rule's own stopping criterion.
    """
    return lr * ((neuron_norms(weight) - 1.0).abs() + 1e-10) ** power


def scale_update(delta: Tensor, weight: Tensor, lr: float, lr_power: float, divisor: Tensor | float) -> Tensor:
    r"""``dW = eta_k D_k / divisor`` (docs/algorithm.md §2.5-2.7), scaled in place in ``delta``'s own buffer.

    A constant divisor (a Python number: ``"none"``, ``"fixed"``) is folded into the base rate,
    ``eta_k = (lr / divisor) (...)^q``; a per-batch tensor divides the per-neuron rates.
    """
    if isinstance(divisor, Tensor):
        scale = norm_learning_rate(weight, lr, lr_power) / divisor
    else:
        scale = norm_learning_rate(weight, lr / divisor, lr_power)
    return delta.mul_(scale.view((-1,) + (1,) * (delta.dim() - 1)))


def plastic_update(
    x: Tensor,
    u: Tensor,
    weight: Tensor,
    inverse_temperature: float,
    lr: float,
    lr_power: float,
    rule: str = "softhebb",
    normalisation: str | Normalisation = "global",
    compute_dtype=None,
    reduce: Callable[[Tensor], Tensor] | None = None,
    reorder: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """The weight change ``dW`` of neurons ``weight (K, D)`` that saw inputs ``x (N, D)`` and computed ``u (N, K)``.

    The WTA of ``rule``, the raw update of :func:`linear_update`, its normalisation and the
    per-neuron rate: ``W_new = W + eta_k D_k / divisor``. ``normalisation`` is a stateless name or
    a :class:`Normalisation` object (which may advance its state). The update is scaled in place in
    its own fresh buffer, so a step makes ~3 passes over the weights instead of ~7 (it matters for
    the 5.3M-weight CIFAR layer).

    ``reduce`` maps the raw ``D`` before anything nonlinear: in a data-parallel run, the sum over the
    ranks' shards of the batch (:meth:`rate_decoder.distributed.Distributed.all_reduce_sum`). ``D`` is a
    sum over rows, so the summed ``D`` is the whole batch's, and the normalisation and rate then see
    what one process would. ``reorder``: as in :func:`linear_update`.
    """
    norm = _step_normalisation(normalisation)
    post = signed_post(u, inverse_temperature, rule, dim=-1)
    delta = linear_update(x, u, post, weight, compute_dtype, reorder)
    if reduce is not None:
        delta = reduce(delta)
    return scale_update(delta, weight, lr, lr_power, norm.divisor(delta))


def conv_step(
    x_padded: Tensor,
    weight: Tensor,
    inverse_temperature: float,
    lr: float,
    lr_power: float,
    rule: str = "softhebb",
    normalisation: str | Normalisation = "global",
    transform=None,
    compute_dtype=None,
    reduce: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """One full convolutional plasticity step: returns ``(u, dW)`` with ``W_new = W + dW``.

    A convolution is :func:`plastic_update` applied to its patches: every position of every image
    is one input row. ``transform`` optionally maps the raw ``u`` before the WTA and the update (the
    code's ``pre_triangle``, docs/algorithm.md §2.9); ``u`` returned is the transformed one. ``compute_dtype``
    is the dtype of the two large products; the rest stays in the weights' dtype. ``reduce``: as in
    :func:`plastic_update`.
    """
    u = conv_forward(x_padded, weight, compute_dtype)  # oneDNN's convolution beat unfold + GEMM here
    if transform is not None:
        u = transform(u)
    K = weight.shape[0]
    u_rows = u.permute(0, 2, 3, 1).reshape(-1, K)
    patches, reorder = _conv_patches(x_padded, weight)
    dw = plastic_update(patches, u_rows, weight.reshape(K, -1), inverse_temperature, lr, lr_power, rule,
                        normalisation, compute_dtype, reduce, reorder)
    return u, dw.view_as(weight)


def linear_step(
    x: Tensor,
    weight: Tensor,
    inverse_temperature: float,
    lr: float,
    lr_power: float,
    rule: str = "soft",
    normalisation: str | Normalisation = "global",
    reduce: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """One fully connected plasticity step on ``x (B, D)``: returns ``(u, dW)`` (``reduce``: :func:`plastic_update`)."""
    u = x @ weight.T
    return u, plastic_update(x, u, weight, inverse_temperature, lr, lr_power, rule, normalisation, reduce=reduce)
