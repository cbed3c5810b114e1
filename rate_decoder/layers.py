"""SoftHebb layers: parameters and state around the pure rule in :mod:`rate_decoder.rules`."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import rules
from .activations import triangle

#: update normalisations of the layers: the rule's own (``rules.NORMALISATIONS``) plus ``"fixed"``
NORMALISATIONS = ("global", "fixed", "neuron", "none")


def _check_input(x: Tensor, dims: int, channels: int, name: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} expects a torch.Tensor, got {type(x).__name__}")
    if x.dim() != dims:
        raise ValueError(f"{name} expects a {dims}-D input, got shape {tuple(x.shape)}")
    if x.shape[1] != channels:
        raise ValueError(f"{name} expects {channels} input channels/features, got shape {tuple(x.shape)}")


class _Plastic(nn.Module):
    """Shared state of the Hebbian layers: weights, hyperparameters and the synapse backend.

    The synapse backend receives every weight change. ``None`` is exact float arithmetic; a device
    model (``hardware_models``) must provide ``attach(weight) -> weight`` (initialise device state
    from float weights, return what reads back) and ``program(dw) -> weight`` (apply an update through
    the device physics, return the weights as read back).
    """

    def _setup(self, inverse_temperature, lr, lr_power, rule, normalisation, radius, synapse):
        if rule not in rules.RULES:
            raise ValueError(f"unknown plasticity rule {rule!r}; choose one of {rules.RULES}")
        if normalisation not in NORMALISATIONS:
            raise ValueError(f"unknown update normalisation {normalisation!r}; choose one of {NORMALISATIONS}")
        for name, value in (("inverse_temperature", inverse_temperature), ("lr", lr), ("radius", radius)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, got {value}")
        self.inverse_temperature = float(inverse_temperature)
        self.lr = float(lr)
        self.lr_power = float(lr_power)
        self.rule = rule
        self.normalisation = normalisation
        self.radius = float(radius)
        self.synapse = synapse
        if normalisation == "fixed":  # 0 until the first batch calibrates it; saved with the weights
            self.register_buffer("fixed_divisor", torch.zeros((), dtype=torch.float64))

    def _rule_args(self, raw_update) -> tuple[float, str]:
        """``(lr, normalisation)`` to hand to the pure rule for the next step.

        ``"fixed"`` is the local variant that still learns at the paper's pace: the update is
        divided by a constant gain instead of the batch's ``max |D|``. The constant is ``max |D|`` of
        the first batch (so the first step equals the paper's), computed once by ``raw_update()``
        and frozen; after that every synapse's change depends only on its own pre- and
        post-synaptic activity and its neuron's norm, as on a chip with a programmed gain.
        ``"none"`` leaves the raw sum over the batch: the caller picks a small ``lr``.
        """
        if self.normalisation != "fixed":
            return self.lr, self.normalisation
        if self.fixed_divisor.item() == 0.0:
            self.fixed_divisor.fill_(float(rules.update_divisor(raw_update(), "global")))
        return self.lr / self.fixed_divisor.item(), "none"

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Normal initialisation with std ``radius / sqrt(fan_in)``, so that ``E|w_k|^2 = radius^2`` (SPEC.md §2.8)."""
        fan_in = self.weight[0].numel()
        with torch.no_grad():
            w = torch.randn(self.weight.shape, generator=generator, dtype=self.weight.dtype, device="cpu")
            self.weight.copy_(w.to(self.weight.device) * (self.radius / math.sqrt(fan_in)))
        self.attach_synapse(self.synapse)

    def attach_synapse(self, synapse) -> None:
        """Hand the current weights to a synapse backend (``None``: exact float) and read them back."""
        self.synapse = synapse
        if synapse is not None:
            with torch.no_grad():
                self.weight.copy_(synapse.attach(self.weight.detach().clone()))

    @torch.no_grad()
    def apply_update(self, dw: Tensor) -> None:
        """Add ``dw`` to the weights, through the synapse backend if there is one."""
        if self.synapse is None:
            self.weight.add_(dw)
        else:
            self.weight.copy_(self.synapse.program(dw))

    def learning_rates(self) -> Tensor:
        """Current per-neuron learning rates ``eta_k``."""
        return rules.norm_learning_rate(self.weight.detach(), self.lr, self.lr_power)

    def _extra(self) -> str:
        s = (f"inverse_temperature={self.inverse_temperature}, lr={self.lr}, lr_power={self.lr_power}, "
             f"rule={self.rule!r}")
        if self.normalisation != "global":
            s += f", normalisation={self.normalisation!r}"
        if self.synapse is not None:
            s += f", synapse={type(self.synapse).__name__}"
        return s


class SoftHebbConv2d(_Plastic):
    r"""Convolution learnt by SoftHebb: reflect padding to the same size, stride 1, no bias.

    ``forward(x)`` returns the pre-activation ``u`` and changes nothing; ``hebbian_step(x)`` returns
    ``u`` and applies exactly one unsupervised update from the batch ``x`` (already batch-normalised):

    .. math:: W \leftarrow W + \eta_k \, D / \max|D|, \quad
              D_k = \sum_{b,q} \tilde y_{k,b,q} (P_{b,q} - u_{k,b,q} w_k)

    Args:
        in_channels, out_channels, kernel_size: geometry (odd square kernels).
        inverse_temperature: ``t`` of the soft WTA ``softmax(t u)``.
        lr, lr_power: base learning rate ``eta`` and exponent ``q`` of ``eta (| |w_k| - 1 | + 1e-10)^q``.
        rule: ``"softhebb"`` (soft anti-Hebbian), ``"soft"`` or ``"hardwta"``.
        normalisation: ``"global"`` (paper), ``"fixed"`` (local: a constant gain calibrated on the
            first batch), ``"neuron"`` (each neuron's own ``max |D_k|``, :mod:`rate_decoder.rules`) or
            ``"none"`` (local, raw batch sum: pair it with a small ``lr``).
        radius: initial expected weight norm (25 in the paper).
        pre_triangle: apply Triangle(1) to ``u`` before the WTA and the output (SPEC.md §2.9).
        synapse: device backend for the weight changes (``None``: exact float).
        compute_dtype: dtype of the two large products (``torch.bfloat16`` halves their time on CPUs
            with AVX512-BF16); weights, softmax and updates stay in ``dtype``. ``None``: ``dtype``.

    Shape: input ``(B, in_channels, H, W)``, output ``(B, out_channels, H, W)``.

    Example::

        >>> layer = SoftHebbConv2d(3, 8, 5, inverse_temperature=1.0, lr=0.08, lr_power=0.5)
        >>> u = layer.hebbian_step(torch.randn(10, 3, 16, 16))
        >>> u.shape
        torch.Size([10, 8, 16, 16])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, inverse_temperature: float = 1.0,
                 lr: float = 0.08, lr_power: float = 0.5, rule: str = "softhebb", normalisation: str = "global",
                 radius: float = 25.0, pre_triangle: bool = False, synapse=None, compute_dtype=None,
                 device=None, dtype=None):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd for same-size reflect padding, got {kernel_size}")
        self.in_channels, self.out_channels, self.kernel_size = int(in_channels), int(out_channels), int(kernel_size)
        self.padding = (kernel_size - 1) // 2
        self.pre_triangle = bool(pre_triangle)
        self.compute_dtype = compute_dtype
        self._setup(inverse_temperature, lr, lr_power, rule, normalisation, radius, synapse)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size,
                                               device=device, dtype=dtype), requires_grad=False)
        self.reset_parameters()

    def pad(self, x: Tensor) -> Tensor:
        _check_input(x, 4, self.in_channels, "SoftHebbConv2d")
        if x.shape[-1] <= self.padding or x.shape[-2] <= self.padding:
            raise ValueError(f"input {tuple(x.shape)} too small for reflect padding {self.padding}")
        return F.pad(x, (self.padding,) * 4, mode="reflect") if self.padding else x

    def _transform(self):
        return (lambda u: triangle(u, 1.0)) if self.pre_triangle else None

    def forward(self, x: Tensor) -> Tensor:
        u = rules.conv_forward(self.pad(x), self.weight, self.compute_dtype)
        return triangle(u, 1.0) if self.pre_triangle else u

    @torch.no_grad()
    def compute_update(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(u, dW)`` for the batch ``x`` without applying it (for simultaneous training)."""
        xp, w = self.pad(x), self.weight.detach()

        def raw_update():
            u = rules.conv_forward(xp, w)
            u = triangle(u, 1.0) if self.pre_triangle else u
            return rules.conv_update(xp, u, rules.signed_post(u, self.inverse_temperature, self.rule), w)

        lr, normalisation = self._rule_args(raw_update)
        return rules.conv_step(xp, w, self.inverse_temperature, lr, self.lr_power, self.rule, normalisation,
                               self._transform(), self.compute_dtype)

    @torch.no_grad()
    def hebbian_step(self, x: Tensor) -> Tensor:
        u, dw = self.compute_update(x)
        self.apply_update(dw)
        return u

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, " + self._extra()
        return s + (", pre_triangle=True" if self.pre_triangle else "")


class SoftHebbLinear(_Plastic):
    r"""Fully connected SoftHebb layer (SPEC.md §8): ``u = W x``, no bias.

    The update on a batch ``X (B, D)`` is :math:`D = \tilde Y^T X - \mathrm{diag}(\sum_b \tilde y u) W`,
    normalised and scaled exactly as in :class:`SoftHebbConv2d`. The default rule is plain ``"soft"``,
    as in the fully connected preset of the reference code.
    """

    def __init__(self, in_features: int, out_features: int, inverse_temperature: float = 12.0, lr: float = 0.045,
                 lr_power: float = 0.2, rule: str = "soft", normalisation: str = "global", radius: float = 35.0,
                 synapse=None, device=None, dtype=None):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self._setup(inverse_temperature, lr, lr_power, rule, normalisation, radius, synapse)
        self.weight = nn.Parameter(torch.empty(out_features, in_features, device=device, dtype=dtype),
                                   requires_grad=False)
        self.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        _check_input(x, 2, self.in_features, "SoftHebbLinear")
        return x @ self.weight.T

    @torch.no_grad()
    def compute_update(self, x: Tensor) -> tuple[Tensor, Tensor]:
        _check_input(x, 2, self.in_features, "SoftHebbLinear")
        w = self.weight.detach()

        def raw_update():
            u = x @ w.T
            return rules.linear_update(x, u, rules.signed_post(u, self.inverse_temperature, self.rule, dim=-1), w)

        lr, normalisation = self._rule_args(raw_update)
        return rules.linear_step(x, w, self.inverse_temperature, lr, self.lr_power, self.rule, normalisation)

    @torch.no_grad()
    def hebbian_step(self, x: Tensor) -> Tensor:
        u, dw = self.compute_update(x)
        self.apply_update(dw)
        return u

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, " + self._extra()
