"""SoftHebb layers: parameters and state around the pure rule in :mod:`rate_decoder.rules`."""
from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import rules
from .activations import triangle

#: initialisations of :class:`SoftHebbLinear` (a convolution is always drawn normal, see its docstring)
INITS = ("positive", "normal")


def _check_input(x: Tensor, dims: int, channels: int, name: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} expects a torch.Tensor, got {type(x).__name__}")
    if x.dim() != dims:
        raise ValueError(f"{name} expects a {dims}-D input, got shape {tuple(x.shape)}")
    if x.shape[1] != channels:
        raise ValueError(f"{name} expects {channels} input channels/features, got shape {tuple(x.shape)}")


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _real(name: str, value, minimum: float, strict: bool) -> float:
    """``value`` as a finite float ``> minimum`` (``strict``) or ``>= minimum``, else a ValueError naming it."""
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
    if not (ok and (value > minimum if strict else value >= minimum)):
        bound = f"> {minimum}" if strict else f">= {minimum}"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)


def _reduced(delta: Tensor, reduce) -> Tensor:
    return delta if reduce is None else reduce(delta)


def _bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


class _Plastic(nn.Module):
    """Shared state of the Hebbian layers: weights, hyperparameters, update normalisation and synapse backend.

    The update normalisation is a :class:`rules.Normalisation` object (``self.normaliser``; its name
    is ``self.normalisation``). Its state, if any (``"fixed"``: the frozen gain), is saved in the
    layer's ``state_dict`` under ``"<name>_<key>"`` (``fixed_divisor``) and restored by
    ``load_state_dict``.

    The synapse backend receives every weight change. ``None`` is exact float arithmetic; a device
    model (``hardware_models``) must provide ``attach(weight) -> weight`` (initialise device state
    from float weights, return what reads back) and ``program(dw) -> weight`` (apply an update through
    the device physics, return the weights as read back).
    """

    def _setup(self, inverse_temperature, lr, lr_power, rule, normalisation, radius, synapse):
        if rule not in rules.RULES:
            raise ValueError(f"unknown plasticity rule {rule!r}; choose one of {rules.RULES}")
        self.inverse_temperature = _real("inverse_temperature", inverse_temperature, 0.0, strict=True)
        self.lr = _real("lr", lr, 0.0, strict=True)
        self.lr_power = _real("lr_power", lr_power, 0.0, strict=False)
        self.radius = _real("radius", radius, 0.0, strict=True)
        self.rule = rule
        self.normaliser = rules.make_normalisation(normalisation)
        self.normalisation = self.normaliser.name
        self.synapse = synapse

    def _normaliser_keys(self, prefix: str) -> dict[str, str]:
        return {key: f"{prefix}{self.normalisation}_{key}" for key in self.normaliser.state_dict()}

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        state = self.normaliser.state_dict()
        for key, name in self._normaliser_keys(prefix).items():
            destination[name] = state[key]

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        keys = self._normaliser_keys(prefix)
        if keys:
            absent = [name for name in keys.values() if name not in state_dict]
            missing_keys.extend(absent)
            if not absent:  # taken out here, so that the parameters' loader does not report them as unexpected
                self.normaliser.load_state_dict({key: state_dict.pop(name) for key, name in keys.items()})
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def _initial_weights(self, generator: torch.Generator | None) -> Tensor:
        """Normal with std ``radius / sqrt(fan_in)``, so that ``E|w_k|^2 = radius^2`` (docs/algorithm.md §2.8)."""
        w = torch.randn(self.weight.shape, generator=generator, dtype=self.weight.dtype, device="cpu")
        return w * (self.radius / math.sqrt(self.weight[0].numel()))

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Draw the initial weights (on the CPU, so a seed gives the same weights on every device)."""
        with torch.no_grad():
            self.weight.copy_(self._initial_weights(generator).to(self.weight.device))
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

    @torch.no_grad()
    def hebbian_step(self, x: Tensor, reduce=None) -> Tensor:
        """Apply one unsupervised update from the batch ``x``; returns ``u`` computed with the pre-step weights.

        ``reduce``: applied to the raw update before its normalisation (:func:`rules.plastic_update`), the
        sum over the ranks in a data-parallel run.
        """
        u, dw = self.compute_update(x, reduce)
        self.apply_update(dw)
        return u

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
        in_channels, out_channels: positive integers.
        kernel_size: a positive odd integer (square kernels, same-size reflect padding).
        inverse_temperature: ``t > 0`` of the soft WTA ``softmax(t u)``.
        lr, lr_power: base learning rate ``eta > 0`` and exponent ``q >= 0`` of
            ``eta (| |w_k| - 1 | + 1e-10)^q``.
        rule: ``"softhebb"`` (soft anti-Hebbian), ``"soft"`` or ``"hardwta"``.
        normalisation: a name in :data:`rules.NORMALISATIONS` -- ``"global"`` (paper), ``"fixed"``
            (local: a constant gain calibrated on the first batch), ``"neuron"`` (each neuron's own
            ``max |D_k|``) or ``"none"`` (local, raw batch sum: pair it with a small ``lr``) -- or a
            :class:`rules.Normalisation` object, which the layer then holds.
        radius: initial expected weight norm ``> 0`` (25 in the paper).
        pre_triangle: apply Triangle(1) to ``u`` before the WTA and the output (docs/algorithm.md §2.9).
        synapse: device backend for the weight changes (``None``: exact float).
        compute_dtype: dtype of the two large products (``torch.bfloat16`` halves their time on CPUs
            with AVX512-BF16); weights, softmax and updates stay in ``dtype``. ``None``: ``dtype``.
        padding: reflect padding in pixels, at most ``(k - 1) / 2``; ``None`` (default) keeps the map's size.

    The weights are drawn normal with std ``radius / sqrt(C k^2)`` (docs/algorithm.md §2.8): every block
    batch-normalises its input, so the patches are centred and signed weights fit them.

    Shape: input ``(B, in_channels, H, W)``, output ``(B, out_channels, H', W')``, ``H' = H + 2 padding - k + 1``
    (``H`` with the default padding).

    Example::

        >>> layer = SoftHebbConv2d(3, 8, 5, inverse_temperature=1.0, lr=0.08, lr_power=0.5)
        >>> u = layer.hebbian_step(torch.randn(10, 3, 16, 16))
        >>> u.shape
        torch.Size([10, 8, 16, 16])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, inverse_temperature: float = 1.0,
                 lr: float = 0.08, lr_power: float = 0.5, rule: str = "softhebb",
                 normalisation: str | rules.Normalisation = "global", radius: float = 25.0,
                 pre_triangle: bool = False, synapse=None, compute_dtype=None, device=None, dtype=None,
                 padding: int | None = None):
        super().__init__()
        self.in_channels = _positive_int("in_channels", in_channels)
        self.out_channels = _positive_int("out_channels", out_channels)
        self.kernel_size = _positive_int("kernel_size", kernel_size)
        if self.kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd for same-size reflect padding, got {kernel_size}")
        if compute_dtype is not None and not isinstance(compute_dtype, torch.dtype):
            raise ValueError(f"compute_dtype must be None or a torch.dtype, got {compute_dtype!r}")
        same = (self.kernel_size - 1) // 2
        if padding is not None and (isinstance(padding, bool) or not isinstance(padding, int)
                                    or not 0 <= padding <= same):
            raise ValueError(f"padding must be an integer in [0, {same}] for kernel_size {kernel_size}, got {padding!r}")
        self.padding = same if padding is None else padding
        self.pre_triangle = _bool("pre_triangle", pre_triangle)
        self.compute_dtype = compute_dtype
        self._setup(inverse_temperature, lr, lr_power, rule, normalisation, radius, synapse)
        k = self.kernel_size
        self.weight = nn.Parameter(torch.empty(self.out_channels, self.in_channels, k, k, device=device, dtype=dtype),
                                   requires_grad=False)
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
    def compute_update(self, x: Tensor, reduce=None) -> tuple[Tensor, Tensor]:
        """``(u, dW)`` for the batch ``x`` without applying it (``reduce``: :meth:`hebbian_step`)."""
        xp, w = self.pad(x), self.weight.detach()

        def raw_update():  # D at the weights' precision, for a normalisation that calibrates on it
            u = rules.conv_forward(xp, w)
            u = triangle(u, 1.0) if self.pre_triangle else u
            return _reduced(rules.conv_update(xp, u, rules.signed_post(u, self.inverse_temperature, self.rule), w),
                            reduce)

        self.normaliser.calibrate(raw_update)
        return rules.conv_step(xp, w, self.inverse_temperature, self.lr, self.lr_power, self.rule, self.normaliser,
                               self._transform(), self.compute_dtype, reduce)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, " + self._extra()
        s += ", pre_triangle=True" if self.pre_triangle else ""
        return s + (f", padding={self.padding}" if self.padding != (self.kernel_size - 1) // 2 else "")


class SoftHebbLinear(_Plastic):
    r"""Fully connected SoftHebb layer (docs/algorithm.md §8): ``u = W x``, no bias.

    The update on a batch ``X (B, D)`` is :math:`D = \tilde Y^T X - \mathrm{diag}(\sum_b \tilde y u) W`,
    normalised and scaled exactly as in :class:`SoftHebbConv2d`. The default rule is plain ``"soft"``,
    as in the fully connected preset of the reference code (``2SoftMlpMNIST``).

    Args:
        in_features, out_features: positive integers.
        inverse_temperature, lr, lr_power, rule, normalisation, radius, synapse: as in
            :class:`SoftHebbConv2d`.
        init: initial weights, both with :math:`E\|w_k\|^2 = R^2` (``R = radius``, ``N = in_features``):

            * ``"positive"`` (default) -- uniform :math:`U(0, a)`, :math:`a = \sqrt{3 R^2 / N}`. The
              reference code draws positive weights for every layer without a batch norm in front
              of it, as in its fully connected preset ``2SoftMlpMNIST`` (docs/algorithm.md §8), whose inputs
              (pixels in ``[0, 1]``) are not centred.
            * ``"normal"`` -- :math:`N(0, R^2 / N)`, the reference's choice for a layer behind a
              batch norm (docs/algorithm.md §2.8), whose inputs are centred.

    Shape: input ``(B, in_features)``, output ``(B, out_features)``.

    Example::

        >>> layer = SoftHebbLinear(784, 20)
        >>> u = layer.hebbian_step(torch.rand(32, 784))
        >>> u.shape, bool((layer.weight >= 0).all())
        (torch.Size([32, 20]), True)
    """

    def __init__(self, in_features: int, out_features: int, inverse_temperature: float = 12.0, lr: float = 0.045,
                 lr_power: float = 0.2, rule: str = "soft", normalisation: str | rules.Normalisation = "global",
                 radius: float = 35.0, synapse=None, device=None, dtype=None, init: str = "positive"):
        super().__init__()
        self.in_features = _positive_int("in_features", in_features)
        self.out_features = _positive_int("out_features", out_features)
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; choose one of {INITS}")
        self.init = init
        self._setup(inverse_temperature, lr, lr_power, rule, normalisation, radius, synapse)
        self.weight = nn.Parameter(torch.empty(self.out_features, self.in_features, device=device, dtype=dtype),
                                   requires_grad=False)
        self.reset_parameters()

    def _initial_weights(self, generator: torch.Generator | None) -> Tensor:
        if self.init == "normal":
            return super()._initial_weights(generator)
        w = torch.rand(self.weight.shape, generator=generator, dtype=self.weight.dtype, device="cpu")
        return w * math.sqrt(3.0 * self.radius ** 2 / self.in_features)

    def forward(self, x: Tensor) -> Tensor:
        _check_input(x, 2, self.in_features, "SoftHebbLinear")
        return x @ self.weight.T

    @torch.no_grad()
    def compute_update(self, x: Tensor, reduce=None) -> tuple[Tensor, Tensor]:
        """``(u, dW)`` for the batch ``x`` without applying it (``reduce``: :meth:`hebbian_step`)."""
        _check_input(x, 2, self.in_features, "SoftHebbLinear")
        w = self.weight.detach()

        def raw_update():  # D of the batch, for a normalisation that calibrates on it
            u = x @ w.T
            return _reduced(rules.linear_update(x, u, rules.signed_post(u, self.inverse_temperature, self.rule,
                                                                        dim=-1), w), reduce)

        self.normaliser.calibrate(raw_update)
        return rules.linear_step(x, w, self.inverse_temperature, self.lr, self.lr_power, self.rule, self.normaliser,
                                 reduce)

    def extra_repr(self) -> str:
        s = f"{self.in_features}, {self.out_features}, " + self._extra()
        return s + (f", init={self.init!r}" if self.init != "positive" else "")
