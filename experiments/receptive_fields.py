"""Receptive fields of trained layers by activation maximisation, as the paper draws them (Fig. 2, B.5, B.8-B.11).

    python -m experiments.receptive_fields --run runs/cifar10_softhebb_greedy_s0 --layer 3 --neurons 72 --out rf.png
    python -m experiments.receptive_fields --run runs/hard runs/soft runs/bp --label "hard WTA" SoftHebb backprop \\
        --layer 1 --neurons 48 --out layer1.png

For layer ``l`` of a run's checkpoint, the input that maximises one channel's raw pre-activation u is
found by projected gradient ascent (the paper's procedure after Illing et al. 2021): blocks 1..l in eval
mode (batch norms at their running statistics) with every convolution's padding and the pooling padding
of blocks 1..l-1 removed, block l's activation and pooling removed, and an input exactly one receptive
field wide, so that u is a single number (:func:`receptive_field`). From zeros plus a point of norm
1e-5, :data:`STEPS` steps of ``x += STEP * grad u`` (the raw gradient), each followed by the projection
x / ||x||_2, then |x| rescaled to span [0, 1]. The neurons are a random subset (``--seed``) sorted by
the mean over input channels of their weights' spatial standard deviation. All neurons of a figure
are optimised at once, as one batch (eval-mode batch norms keep them independent).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rate_decoder.config import parse_pool
from rate_decoder.network import SoftHebbNet
from rate_decoder.run import load_checkpoint

STEPS = 500
STEP = 1e-3


def receptive_field(net: SoftHebbNet, layer: int) -> int:
    """Side in pixels of the input that one unit of layer ``layer``'s u sees (unpadded convolutions and pools)."""
    side = net.blocks[layer - 1].conv.weight.shape[-1]
    for block in reversed(net.blocks[:layer - 1]):
        _, k, s, _ = parse_pool(block_pool_spec(block))
        side = (side - 1) * s + k + block.conv.weight.shape[-1] - 1
    return side


def block_pool_spec(block) -> str:
    pool = block.pool
    kind = "max" if isinstance(pool, nn.MaxPool2d) else "avg"
    return f"{kind}_{pool.kernel_size}_{pool.stride}_{pool.padding}"


def preactivation(net: SoftHebbNet, layer: int, x: torch.Tensor) -> torch.Tensor:
    """u of layer ``layer`` (1-based) without padding anywhere; the preceding blocks' pools unpadded."""
    for i, block in enumerate(net.blocks[:layer]):
        x = F.conv2d(block.bn(x), block.conv.weight)
        if i == layer - 1:
            return x
        x = block.activation(x)
        kind, k, s, _ = parse_pool(block_pool_spec(block))
        x = F.max_pool2d(x, k, s) if kind == "max" else F.avg_pool2d(x, k, s)
    raise ValueError(f"layer {layer} is not a layer of this network ({len(net.blocks)} blocks)")


def chosen_neurons(net: SoftHebbNet, layer: int, n: int, seed: int) -> np.ndarray:
    """``n`` random channels of ``layer``, sorted by the mean over input channels of their weights' spatial std."""
    w = net.blocks[layer - 1].conv.weight.detach()
    picked = np.random.default_rng(seed).choice(w.shape[0], size=min(n, w.shape[0]), replace=False)
    spread = w.flatten(2).std(dim=2).mean(dim=1).numpy()
    return picked[np.argsort(spread[picked])]


def maximise(net: SoftHebbNet, layer: int, channels: np.ndarray, seed: int = 0, steps: int = STEPS) -> torch.Tensor:
    """The inputs ``(len(channels), C, S, S)`` in [0, 1] that maximise each channel's u, S the receptive field."""
    net.eval()
    side = receptive_field(net, layer)
    g = torch.Generator().manual_seed(seed)
    start = torch.randn(len(channels), net.preset.in_channels, side, side, generator=g)
    x = (start / start.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * 1e-5).abs().clamp(0, 1)
    index = torch.as_tensor(channels)
    for p in net.parameters():
        p.requires_grad_(False)
    for _ in range(steps):
        x.requires_grad_(True)
        u = preactivation(net, layer, x)
        objective = u[torch.arange(len(index)), index].sum()  # each image's own channel, a 1 x 1 map
        (grad,) = torch.autograd.grad(objective, x)
        with torch.no_grad():
            x = x + STEP * grad
            x = (x / x.flatten(1).norm(dim=1).clamp_min(1e-30).view(-1, 1, 1, 1)).abs()
            low = x.flatten(1).min(dim=1).values.view(-1, 1, 1, 1)
            x = x - low
            x = (x / x.flatten(1).max(dim=1).values.clamp_min(1e-30).view(-1, 1, 1, 1)).clamp(0, 1)
    return x.detach()


def draw(panels: list[tuple[str, torch.Tensor]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = int(np.ceil(np.sqrt(max(len(images) for _, images in panels))))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), squeeze=False)
    for ax, (label, images) in zip(axes[0], panels):
        n, c, s, _ = images.shape
        rows = int(np.ceil(n / columns))
        grid = np.ones(((s + 1) * rows, (s + 1) * columns, 3))
        for k, image in enumerate(images):
            r, q = divmod(k, columns)
            pixels = image.permute(1, 2, 0).numpy()
            grid[r * (s + 1):r * (s + 1) + s, q * (s + 1):q * (s + 1) + s] = pixels if c == 3 else pixels.repeat(3, 2)
        ax.imshow(grid, interpolation="nearest")
        ax.set_title(label)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", nargs="+", required=True, help="run directories (their checkpoint.pt)")
    ap.add_argument("--label", nargs="+", help="one title per run (default: the directory names)")
    ap.add_argument("--layer", type=int, default=1)
    ap.add_argument("--neurons", type=int, default=72)
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    labels = args.label or [Path(r).name for r in args.run]
    if len(labels) != len(args.run):
        ap.error(f"--label gives {len(labels)} titles for {len(args.run)} runs")
    panels = []
    for run_dir, label in zip(args.run, labels):
        net = load_checkpoint(Path(run_dir) / "checkpoint.pt")[0]
        if not 1 <= args.layer <= len(net.blocks):
            ap.error(f"{run_dir} has {len(net.blocks)} layers; --layer {args.layer} is out of range")
        channels = chosen_neurons(net, args.layer, args.neurons, args.seed)
        panels.append((label, maximise(net, args.layer, channels, args.seed, args.steps)))
        print(f"{label}: layer {args.layer}, {len(channels)} neurons, receptive field "
              f"{receptive_field(net, args.layer)} px", flush=True)
    draw(panels, Path(args.out))


if __name__ == "__main__":
    main()
