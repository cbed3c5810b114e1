"""The multilayer SoftHebb network of a preset (docs/algorithm.md §3-4): hidden blocks plus the linear readout.

A block is ``BatchNorm2d(affine=False) -> conv -> activation -> pooling``. Its batch norm is in
train mode only while that block learns without supervision; at every other time (later layers
learning greedily, features, readout) it uses its running statistics.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from .activations import make_activation
from .config import PRECISIONS, RULES, LayerSpec, Preset, parse_pool
from .data import Images, check_images
from .distributed import SINGLE, Distributed, batch_norm_train
from . import rules
from .layers import SoftHebbConv2d

#: dtype of the Hebbian layers' large products, per ``precision``; weights and updates stay fp32
COMPUTE_DTYPES = {"fp32": None, "bf16": torch.bfloat16}


def configure_cpu() -> None:
    """Flush denormals to zero: early softmax outputs are denormal and slow CPU kernels ~10x (docs/algorithm.md §12.17)."""
    for dtype in (np.float16, np.float32, np.float64):
        np.finfo(dtype)  # cache numpy's float limits first: computed under flush-to-zero they warn
    torch.set_flush_denormal(True)


def make_pool(spec: str) -> nn.Module:
    """``max_4_2_1`` / ``avg_2_2_0`` -> pooling module (type_kernel_stride_padding, docs/algorithm.md §3)."""
    kind, k, s, p = parse_pool(spec)
    if kind == "max":
        return nn.MaxPool2d(k, s, p)
    return nn.AvgPool2d(k, s, p)  # count_include_pad=True, as in the reference code


class Block(nn.Module):
    """``BN(affine=False) -> conv -> activation -> pool``; the conv is Hebbian or, for backprop, ``nn.Conv2d``."""

    def __init__(self, in_channels: int, spec: LayerSpec, rule: str, normalisation: str = "global", device=None,
                 compute_dtype=None):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_channels, affine=False, device=device)
        k = spec.kernel_size
        if rule == "backprop":
            self.conv = nn.Conv2d(in_channels, spec.out_channels, k, padding=spec.conv_padding,
                                  padding_mode="reflect", bias=False, device=device)
            activation = "relu"
        else:
            self.conv = SoftHebbConv2d(
                in_channels, spec.out_channels, k, inverse_temperature=spec.inverse_temperature, lr=spec.lr,
                lr_power=spec.lr_power, rule="softhebb" if rule == "random" else rule,
                normalisation=rules.layer_normalisation(normalisation, spec.gain_tau),
                radius=spec.radius, pre_triangle=spec.pre_triangle, compute_dtype=compute_dtype, device=device,
                padding=spec.conv_padding)
            activation = spec.activation
        self.activation = make_activation(activation, spec.activation_power, spec.inverse_temperature)
        self.pool = make_pool(spec.pool)

    def forward(self, x: Tensor) -> Tensor:
        return self.after_norm(self.bn(x))

    def after_norm(self, x: Tensor) -> Tensor:
        """The block after its batch norm: ``pool(activation(conv(x)))`` of an already normalised ``x``."""
        return self._pool(self.activation(self.conv(x)))

    @torch.no_grad()
    def learn(self, x: Tensor, ctx: Distributed = SINGLE, output: bool = True) -> Tensor | None:
        """One unsupervised step on ``x``; returns the block's output computed with the pre-step weights.

        In a data-parallel run (``ctx.active``) ``x`` is this rank's shard of the batch: the batch norm's
        statistics and the raw update are summed over the ranks (:mod:`rate_decoder.distributed`).
        ``output=False`` returns ``None`` and skips the activation and pooling: a greedy stage discards
        the learning block's output, and in CIFAR-10's first layer its fractional power and pooling
        were 30 % of the step's time (one thread, an AMD EPYC).
        """
        if not ctx.active:
            u = self.conv.hebbian_step(self.bn(x))
        else:
            x = batch_norm_train(self.bn, x, ctx) if self.bn.training else self.bn(x)
            u = self.conv.hebbian_step(x, reduce=ctx.all_reduce_sum)
        return self._pool(self.activation(u)) if output else None

    def _pool(self, a: Tensor) -> Tensor:
        """Pooling through a channels-last copy on CPU, result back in the default layout.

        On this CPU, max pooling a (10, 96, 32, 32) batch took 5.5 ms in NCHW and 0.3 ms in
        channels-last (1.7 ms with the conversion): a tenth of the unsupervised step's time otherwise.
        """
        if a.device.type != "cpu":
            return self.pool(a)
        return self.pool(a.contiguous(memory_format=torch.channels_last)).contiguous()


class SoftHebbNet(nn.Module):
    """The hidden blocks of a preset plus the linear readout (``Flatten -> Dropout -> Linear``).

    Example::

        net = SoftHebbNet(load_preset("digits"))          # 64 neurons on 8x8 digits
        logits = net(torch.rand(4, 1, 8, 8))              # (4, 10)
    """

    def __init__(self, preset: Preset, rule: str = "softhebb", normalisation: str = "global", device=None,
                 precision: str = "fp32"):
        super().__init__()
        if not isinstance(preset, Preset):
            raise TypeError(f"SoftHebbNet takes a Preset (from load_preset), got {type(preset).__name__}")
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
        if rule not in RULES:
            raise ValueError(f"unknown rule {rule!r}; choose one of {RULES}")
        self.preset = preset
        self.rule = rule
        blocks, c = [], preset.in_channels
        for spec in preset.layers:
            blocks.append(Block(c, spec, rule, normalisation, device, COMPUTE_DTYPES[precision]))
            c = spec.out_channels
        self.blocks = nn.ModuleList(blocks)
        self.feature_shape = self._feature_shape()
        n_features = int(torch.tensor(self.feature_shape).prod())
        self.dropout = nn.Dropout(preset.readout.dropout)
        self.head = nn.Linear(n_features, preset.n_classes, device=device)
        self.set_learning_block(None)

    @torch.no_grad()
    def _feature_shape(self) -> tuple[int, ...]:
        s = self.preset.image_size
        x = torch.zeros(2, self.preset.in_channels, s, s, device=self.blocks[0].bn.running_mean.device)
        was = self.training
        self.eval()
        shape = tuple(self.features(x).shape[1:])
        self.train(was)
        return shape

    def set_learning_block(self, index: int | None) -> None:
        """Put block ``index``'s batch norm in train mode (``"all"`` for every block) and the others in eval mode."""
        for i, block in enumerate(self.blocks):
            block.bn.train(index == "all" or i == index)

    def check_input(self, images: Images) -> None:
        """Images of the preset's shape, every float pixel finite (:func:`~rate_decoder.data.check_images`)."""
        check_images(images, self.preset.in_channels, self.preset.image_size, f"network {self.preset.name!r}")

    def features(self, x: Tensor, upto: int | None = None) -> Tensor:
        """Output of the first ``upto`` blocks (all by default), in whatever modes the blocks are in."""
        for block in self.blocks[:upto]:
            x = block(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.dropout(self.features(x).flatten(1)))

    def kernels(self) -> Tensor:
        return self.blocks[0].conv.weight.detach()
