"""The ``softhebb`` command line: train, eval, presets.

Examples::

    softhebb train                                   # offline default: digits, one layer, < 1 min
    softhebb train --preset cifar10 --out runs/c10   # the paper's 3-layer CIFAR-10 network
    softhebb train --preset cifar10 --layers 1 --rule random
    softhebb train --preset cifar10 --out runs/c10 --resume
    softhebb eval runs/c10
    torchrun --nproc-per-node 2 --no-python softhebb train --preset cifar10   # data-parallel, 2 processes

Every option and the preset are checked into one :class:`~rate_decoder.config.RunConfig` before any
work; a problem is one line ``softhebb: error: ...`` on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from rate_decoder import distributed
from rate_decoder.config import (ACTIVATIONS, DEPRECATED_MODES, LR_SCALINGS, MODES, PRECISIONS, RULES, RunConfig,
                                 available_presets, load_preset, with_unsupervised_batch)
from rate_decoder.data import IMAGE_DECODERS, DataError
from rate_decoder.features import FeatureCacheError
from rate_decoder.rules import NORMALISATIONS
from rate_decoder.run import CheckpointError, evaluate, run


def build_config(args) -> RunConfig:
    """The run's config from the preset and the command line; a deprecated ``--mode`` gets a note on stderr."""
    mode = args.mode
    if mode in DEPRECATED_MODES:
        mode = DEPRECATED_MODES[mode]
        print(f"softhebb: note: --mode {args.mode} is deprecated; it is the reference code's {mode!r} mode, "
              f"now called that: use --mode {mode}", file=sys.stderr)
    preset = load_preset(args.preset, args.layers, args.width_factor)
    if args.gain_tau is not None:
        taus = args.gain_tau if len(args.gain_tau) > 1 else args.gain_tau * len(preset.layers)
        if len(taus) != len(preset.layers):
            raise ValueError(f"--gain-tau takes one value or one per layer ({len(preset.layers)}), got {len(taus)}")
        preset = dataclasses.replace(preset, layers=tuple(dataclasses.replace(layer, gain_tau=tau)
                                                          for layer, tau in zip(preset.layers, taus)))
    if args.activation is not None:
        preset = dataclasses.replace(preset, name=f"{preset.name}-{args.activation}",
                                     layers=tuple(dataclasses.replace(layer, activation=args.activation)
                                                  for layer in preset.layers))
    if args.unsupervised_batch is not None:
        preset = with_unsupervised_batch(preset, args.unsupervised_batch, args.lr_scaling)
    return RunConfig(preset, rule=args.rule, mode=mode,
                     seed=args.seed, normalisation=args.normalisation, precision=args.precision, n_train=args.n_train,
                     n_test=args.n_test, readout_epochs=args.readout_epochs, data_dir=args.data_dir,
                     download=args.download, synapse=args.synapse,
                     image_decoder=args.image_decoder)


def cmd_train(args) -> int:
    if not 0 <= args.checkpoint_minutes < float("inf"):
        raise ValueError(f"--checkpoint-minutes must be a number >= 0, got {args.checkpoint_minutes}")
    config = build_config(args)
    name = f"{config.preset.name}_{config.rule}_{config.mode}_s{config.seed}"
    out = Path(args.out) if args.out else Path("runs") / (name + (f"_{config.synapse}" if config.synapse else ""))
    main_rank = int(os.environ.get("RANK", "0")) == 0  # under torchrun, rank 0 speaks for the run
    if main_rank:
        print(f"run directory: {out}", file=sys.stderr)
    with distributed.leaving_at_end():
        metrics = run(config, out, resume=args.resume, device=args.device, progress=not args.quiet,
                      checkpoint_every_s=60 * args.checkpoint_minutes)
    if not main_rank:
        return 0
    t = metrics["timings_s"]
    print(json.dumps({"preset": config.preset.name, "rule": config.rule, "mode": config.mode, "seed": config.seed,
                      "test_acc": round(metrics["test_acc"], 4), "wall_s": round(t["this_invocation_s"], 1),
                      "peak_memory_gib": round(metrics["peak_memory_gib"], 2), "out": str(out)}))
    return 0


def cmd_eval(args) -> int:
    acc = evaluate(args.run_dir, device=args.device, data_dir=args.data_dir, n_test=args.n_test,
                   progress=not args.quiet)
    print(json.dumps({"run": str(args.run_dir), "test_acc": round(acc, 4)}))
    return 0


def cmd_presets(args) -> int:
    for name in available_presets():
        p = load_preset(name)
        widths = "-".join(str(layer.out_channels) for layer in p.layers)
        print(f"{name:16s} {p.dataset:11s} {len(p.layers)} layers ({widths})  {p.description}")
    return 0


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="softhebb",
                                 description="Multilayer SoftHebb: Hebbian deep learning without feedback")
    sub = ap.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="unsupervised SoftHebb training + linear readout")
    t.add_argument("--preset", default="digits", help="preset name (softhebb presets) or a .toml file")
    t.add_argument("--layers", type=int, help="depth (uses the paper's own shallower preset where there is one)")
    t.add_argument("--width-factor", type=float, default=1.0, help="scale every layer's number of neurons")
    t.add_argument("--mode", choices=(*MODES, *DEPRECATED_MODES), default="greedy", metavar="{" + ",".join(MODES) + "}",
                   help="greedy: one epoch per layer (paper); consecutive: all layers learn from each batch "
                        "(the reference code's 'consecutive'; formerly 'simultaneous', still accepted)")
    t.add_argument("--rule", choices=RULES, default="softhebb",
                   help="softhebb (paper), soft (no anti-Hebbian), hardwta, random (initial weights, batch norms fitted), backprop")
    t.add_argument("--normalisation", choices=NORMALISATIONS, default="global",
                   help="global: max-normalisation of each update (paper); fixed: a constant gain calibrated on the "
                        "first batch (the local variant a chip or a spiking network can compute); neuron: each neuron's own "
                        "max|D_k| (neuron-local); none: raw batch sum; modulated: one slow broadcast gain (running "
                        "mean |D|); homeostatic: each neuron's leaky running max of its own |D_k|; peak: one broadcast "
                        "leaky running max of the layer's max|D|")
    t.add_argument("--gain-tau", type=float, nargs="+", metavar="TAU",
                   help="time constant in batches of a running gain (homeostatic, modulated, peak): one value, or "
                        "one per layer (default: the preset's, 100)")
    t.add_argument("--unsupervised-batch", type=int, metavar="B",
                   help="the unsupervised epoch's (global) batch, the Hebbian rates scaled by --lr-scaling")
    t.add_argument("--lr-scaling", choices=LR_SCALINGS, default="sqrt",
                   help="rates x sqrt(B/B0) (default: the square-root rule of normalised steps), x B/B0 (an epoch "
                        "moves the weights as far), or unchanged")
    t.add_argument("--activation", choices=ACTIVATIONS,
                   help="every block's activation (default: the preset's); softmax is the spiking network's")
    t.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="dtype of the Hebbian layers' convolutions and plasticity products (bf16: ~2x faster "
                        "on CPUs with AVX512-BF16; weights and updates stay fp32)")
    t.add_argument("--synapse", help="synaptic device model the Hebbian layers learn through (hardware_models)")
    t.add_argument("--image-decoder", choices=IMAGE_DECODERS, default="pil",
                   help="image folders' decoder: pil (torchvision ImageFolder's pixels) or torchvision (torchvision.io, "
                        "faster, within one grey level)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    t.add_argument("--out", help="run directory (default runs/<preset>_<rule>_<mode>_s<seed>)")
    t.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    t.add_argument("--checkpoint-minutes", type=float, default=5.0,
                   help="checkpoint inside the unsupervised epoch this often (default 5)")
    t.add_argument("--data-dir", help="dataset directory (default: $SOFTHEBB_DATA)")
    t.add_argument("--download", action="store_true", help="fetch the dataset with torchvision into --data-dir")
    t.add_argument("--n-train", type=int,
                   help="use only N training images (the first N; a class-balanced draw for ImageFolder trees)")
    t.add_argument("--n-test", type=int, help="use only N test images (as --n-train)")
    t.add_argument("--readout-epochs", type=int, help="override the preset's readout epochs")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="test accuracy of a run directory's checkpoint")
    e.add_argument("run_dir")
    e.add_argument("--device", default=None)
    e.add_argument("--data-dir")
    e.add_argument("--n-test", type=int)
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(func=cmd_eval)

    p = sub.add_parser("presets", help="list the shipped presets")
    p.set_defaults(func=cmd_presets)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (DataError, CheckpointError, FeatureCacheError, OSError, ValueError) as err:
        print("softhebb: error: " + " ".join(str(err).split()), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
