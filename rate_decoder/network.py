"""Presets (data files) and the multilayer network built from them (SPEC.md §3-4).

A block is ``BatchNorm2d(affine=False) -> conv -> activation -> pooling``. Its batch norm is in
train mode only while that block learns without supervision; at every other time (later layers
learning greedily, features, readout) it uses its running statistics.
"""
from __future__ import annotations

import copy
import tomllib
from importlib import resources
from pathlib import Path

import torch
from torch import Tensor, nn

from .activations import make_activation
from .layers import SoftHebbConv2d

RULE_CHOICES = ("softhebb", "soft", "hardwta", "random", "backprop")
#: dtype of the Hebbian layers' large products; weights and updates stay fp32
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}

_LAYER_KEYS = {
    "out_channels": int, "kernel_size": int, "inverse_temperature": float, "lr": float, "lr_power": float,
    "activation": str, "activation_power": float, "pool": str, "pre_triangle": bool, "radius": float,
}
_REQUIRED_LAYER_KEYS = ("out_channels", "kernel_size", "inverse_temperature", "lr", "lr_power", "activation", "pool")
_TOP_KEYS = {"description": str, "dataset": str, "in_channels": int, "image_size": int, "n_classes": int,
             "normalize": str, "depth_presets": dict, "unsupervised": dict, "readout": dict, "layers": list}


def available_presets() -> list[str]:
    """Names of the presets shipped with the package."""
    files = resources.files("rate_decoder") / "presets"
    return sorted(p.name[:-5] for p in files.iterdir() if p.name.endswith(".toml"))


def _validate(preset: dict, source: str) -> dict:
    for key, value in preset.items():
        if key not in _TOP_KEYS:
            raise ValueError(f"{source}: unknown preset key {key!r}")
        if not isinstance(value, _TOP_KEYS[key]):
            raise ValueError(f"{source}: {key!r} must be {_TOP_KEYS[key].__name__}, got {value!r}")
    for key in ("dataset", "in_channels", "image_size", "n_classes", "layers"):
        if key not in preset:
            raise ValueError(f"{source}: preset lacks {key!r}")
    if not preset["layers"]:
        raise ValueError(f"{source}: preset has no layers")
    for i, layer in enumerate(preset["layers"]):
        for key in _REQUIRED_LAYER_KEYS:
            if key not in layer:
                raise ValueError(f"{source}: layer {i + 1} lacks {key!r}")
        for key, value in layer.items():
            if key not in _LAYER_KEYS:
                raise ValueError(f"{source}: layer {i + 1} has unknown key {key!r}")
            kind = _LAYER_KEYS[key]
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                layer[key] = value = float(value)
            if not isinstance(value, kind):
                raise ValueError(f"{source}: layer {i + 1} {key!r} must be {kind.__name__}, got {value!r}")
        parse_pool(layer["pool"])
    preset.setdefault("normalize", "none")
    preset.setdefault("unsupervised", {}).setdefault("batch_size", 10)
    preset["unsupervised"].setdefault("epochs", 1)
    r = preset.setdefault("readout", {})
    for key, default in (("dropout", 0.5), ("batch_size", 64), ("epochs", 50), ("lr", 1e-3), ("augment", "none"),
                         ("augment_pad", 4)):
        r.setdefault(key, default)
    return preset


def load_preset(name_or_path: str, layers: int | None = None, width_factor: float = 1.0) -> dict:
    """Load a preset by name (see :func:`available_presets`) or from a ``.toml`` path.

    ``layers`` picks the depth: the preset's ``depth_presets`` table names the paper's own preset
    for a shallower network (they differ, SPEC.md §4.1); otherwise the first ``layers`` layers are kept.
    ``width_factor`` scales every layer's number of neurons.
    """
    path = Path(name_or_path)
    if path.suffix == ".toml":
        if not path.is_file():
            raise FileNotFoundError(f"preset file {path} does not exist")
        text, source = path.read_text(), str(path)
    else:
        names = available_presets()
        if name_or_path not in names:
            raise ValueError(f"unknown preset {name_or_path!r}; available: {', '.join(names)}")
        text = (resources.files("rate_decoder") / "presets" / f"{name_or_path}.toml").read_text()
        source = name_or_path
    try:
        preset = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{source}: not valid TOML ({err})") from None
    preset = _validate(preset, source)
    preset["name"] = path.stem if path.suffix == ".toml" else name_or_path
    if layers is not None:
        depth_presets = preset.pop("depth_presets", {})
        n = len(preset["layers"])
        if not 1 <= layers <= n and str(layers) not in depth_presets:
            raise ValueError(f"preset {preset['name']!r} has {n} layers; --layers {layers} is out of range")
        if str(layers) in depth_presets:
            return load_preset(depth_presets[str(layers)], None, width_factor)
        preset["layers"] = preset["layers"][:layers]
        if layers < n:
            preset["name"] += f"-first{layers}"
    preset.pop("depth_presets", None)
    if width_factor != 1.0:
        if not width_factor > 0:
            raise ValueError(f"width_factor must be positive, got {width_factor}")
        for layer in preset["layers"]:
            layer["out_channels"] = max(1, round(layer["out_channels"] * width_factor))
        preset["width_factor"] = width_factor
    return preset


def parse_pool(spec: str) -> nn.Module:
    """``max_4_2_1`` / ``avg_2_2_0`` -> pooling module (type_kernel_stride_padding, SPEC.md §3)."""
    try:
        kind, k, s, p = spec.split("_")
        k, s, p = int(k), int(s), int(p)
    except ValueError:
        raise ValueError(f"pooling {spec!r} is not of the form max|avg_kernel_stride_padding") from None
    if kind == "max":
        return nn.MaxPool2d(k, s, p)
    if kind == "avg":
        return nn.AvgPool2d(k, s, p)  # count_include_pad=True, as in the reference code
    raise ValueError(f"unknown pooling type {kind!r} in {spec!r}")


class Block(nn.Module):
    """``BN(affine=False) -> conv -> activation -> pool``; the conv is Hebbian or, for backprop, ``nn.Conv2d``."""

    def __init__(self, in_channels: int, spec: dict, rule: str, normalisation: str = "global", device=None,
                 compute_dtype=None):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_channels, affine=False, device=device)
        k = spec["kernel_size"]
        if rule == "backprop":
            self.conv = nn.Conv2d(in_channels, spec["out_channels"], k, padding=(k - 1) // 2,
                                  padding_mode="reflect", bias=False, device=device)
            activation = "relu"
        else:
            self.conv = SoftHebbConv2d(
                in_channels, spec["out_channels"], k, inverse_temperature=spec["inverse_temperature"],
                lr=spec["lr"], lr_power=spec["lr_power"], rule="softhebb" if rule == "random" else rule,
                normalisation=normalisation, radius=spec.get("radius", 25.0),
                pre_triangle=spec.get("pre_triangle", False), compute_dtype=compute_dtype, device=device)
            activation = spec["activation"]
        self.activation = make_activation(activation, spec.get("activation_power", 1.0))
        self.pool = parse_pool(spec["pool"])

    def forward(self, x: Tensor) -> Tensor:
        return self._pool(self.activation(self.conv(self.bn(x))))

    @torch.no_grad()
    def learn(self, x: Tensor) -> Tensor:
        """One unsupervised step on ``x``; returns the block's output computed with the pre-step weights."""
        return self._pool(self.activation(self.conv.hebbian_step(self.bn(x))))

    def _pool(self, a: Tensor) -> Tensor:
        """Pooling through a channels-last copy on CPU, result back in the default layout.

        On this CPU, max pooling a (10, 96, 32, 32) batch took 5.5 ms in NCHW and 0.3 ms in
        channels-last (1.7 ms with the conversion): a tenth of the unsupervised step's time otherwise.
        """
        if a.device.type != "cpu":
            return self.pool(a)
        return self.pool(a.contiguous(memory_format=torch.channels_last)).contiguous()


class SoftHebbNet(nn.Module):
    """The hidden blocks of a preset plus the linear readout (``Flatten -> Dropout -> Linear``)."""

    def __init__(self, preset: dict, rule: str = "softhebb", normalisation: str = "global", device=None,
                 precision: str = "fp32"):
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; choose one of {tuple(PRECISIONS)}")
        if rule not in RULE_CHOICES:
            raise ValueError(f"unknown rule {rule!r}; choose one of {RULE_CHOICES}")
        self.preset = copy.deepcopy(preset)
        self.rule = rule
        blocks, c = [], preset["in_channels"]
        for spec in preset["layers"]:
            blocks.append(Block(c, spec, rule, normalisation, device, PRECISIONS[precision]))
            c = spec["out_channels"]
        self.blocks = nn.ModuleList(blocks)
        self.feature_shape = self._feature_shape()
        n_features = int(torch.tensor(self.feature_shape).prod())
        self.dropout = nn.Dropout(preset["readout"]["dropout"])
        self.head = nn.Linear(n_features, preset["n_classes"], device=device)
        self.set_learning_block(None)

    @torch.no_grad()
    def _feature_shape(self) -> tuple[int, ...]:
        s = self.preset["image_size"]
        x = torch.zeros(2, self.preset["in_channels"], s, s, device=self.blocks[0].bn.running_mean.device)
        was = self.training
        self.eval()
        shape = tuple(self.features(x).shape[1:])
        self.train(was)
        return shape

    def set_learning_block(self, index: int | None) -> None:
        """Put block ``index``'s batch norm in train mode (``"all"`` for every block) and the others in eval mode."""
        for i, block in enumerate(self.blocks):
            block.bn.train(index == "all" or i == index)

    def check_input(self, x: Tensor) -> None:
        p = self.preset
        expected = (p["in_channels"], p["image_size"], p["image_size"])
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"network {p['name']!r} expects images of shape (N, {', '.join(map(str, expected))}), "
                             f"got {tuple(x.shape)}")

    def features(self, x: Tensor, upto: int | None = None) -> Tensor:
        """Output of the first ``upto`` blocks (all by default), in whatever modes the blocks are in."""
        for block in self.blocks[:upto]:
            x = block(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.dropout(self.features(x).flatten(1)))

    def kernels(self) -> Tensor:
        return self.blocks[0].conv.weight.detach()
