"""Per-layer statistics of a run's learnt weights (or of a preset's initial ones): what sizes a device range.

    python -m experiments.weight_stats runs/cifar10_L1_softhebb_s0        # the checkpoint's weights
    python -m experiments.weight_stats --initial cifar10 --layers 1        # the initial weights, seed 0

For each Hebbian layer: the neurons' L2 norms (median, min, max), ``max|w|``, and quantiles of
``|w| sqrt(fan_in)``, the unit of ``hardware_models``' ``w_max_unit`` (the rms weight of a norm-1 neuron).
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from rate_decoder.config import load_preset
from rate_decoder.network import SoftHebbNet

QUANTILES = (0.5, 0.9, 0.99, 0.999)


def layer_stats(weight: torch.Tensor) -> dict:
    w = weight.detach().flatten(1).double()
    norms = w.norm(dim=1)
    units = w.abs().flatten() * math.sqrt(w.shape[1])
    sample = units[torch.randperm(units.numel(), generator=torch.Generator().manual_seed(0))[:1_000_000]]
    return {"fan_in": w.shape[1], "norm_median": float(norms.median()), "norm_min": float(norms.min()),
            "norm_max": float(norms.max()), "max_abs_w": float(w.abs().max()), "units_max": float(units.max()),
            "units_quantiles": [float(q) for q in torch.quantile(sample, torch.tensor(QUANTILES, dtype=w.dtype))]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", nargs="?", help="a run directory holding checkpoint.pt")
    ap.add_argument("--initial", metavar="PRESET", help="the initial weights of PRESET instead of a run's")
    ap.add_argument("--layers", type=int)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if (args.run is None) == (args.initial is None):
        ap.error("give a run directory or --initial PRESET")
    if args.initial:
        torch.manual_seed(args.seed)
        weights = [b.conv.weight for b in SoftHebbNet(load_preset(args.initial, args.layers)).blocks]
    else:
        path = Path(args.run) / "checkpoint.pt"
        if not path.is_file():
            ap.error(f"{path} does not exist")
        state = torch.load(path, map_location="cpu", weights_only=False)["net"]
        weights = [v for k, v in state.items() if k.startswith("blocks.") and k.endswith(".conv.weight")]
    for i, w in enumerate(weights, 1):
        s = layer_stats(w)
        q = " / ".join(f"{v:.1f}" for v in s["units_quantiles"])
        print(f"layer {i}: fan-in {s['fan_in']}, neuron norms median {s['norm_median']:.2f} "
              f"[{s['norm_min']:.2f}, {s['norm_max']:.2f}], max|w| {s['max_abs_w']:.3f}, |w| sqrt(fan_in) "
              f"quantiles {'/'.join(str(x) for x in QUANTILES)}: {q}, max {s['units_max']:.1f}")


if __name__ == "__main__":
    main()
