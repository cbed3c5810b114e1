"""CIFAR-10 with spikes: the spiking circuit layer (96 neurons, 5x5x3) learns from CIFAR-10 patches with its
homeostatic gain, and the rate network scores its kernels.

    python -m experiments.snn_cifar --part learn --seeds 0 1 --out results/snn_cifar
    python -m experiments.snn_cifar --part score --seeds 0 1 --out results/snn_cifar

* ``learn``: per seed, the first layer of the ``cifar10`` preset as initialised by that seed (norm ~25)
  learns from ``--patches`` random patches of the training images, standardised per channel as the
  layer's batch norm does (statistics fitted on all training images). The spiking layer is the circuit
  (``wta="circuit"``, preset ``fast``) with :class:`rate_decoder.rules.HomeostaticGain` (``tau`` 100
  batches) over batches of ``--batch`` presentations, at the preset's rate (0.08, ``q`` 0.5, ``t`` 1).
  The same rule in the rate network learns from the same patches in the same batches (the rate
  mirror). Writes ``kernels_s{seed}.npz`` (initial, spiking, rate) and ``learn_s{seed}.json``
  (matched cosine and norm error of the spiking kernels to the mirror's, norms, speed).
* ``score``: each kernel set as the first layer of the 1-layer ``cifar10`` network (batch norm fitted on
  the training images), the preset's 50-epoch readout on all 50k training images, test accuracy on
  all 10k test images. Resumable: scores already in ``score.json`` are kept.

The rate network's own layers learn from every position of every image (51M patches in 5000 batches
of 10 images); the spiking layer sees ``--patches`` of them in as many batches, so its kernels and the
mirror's are those of a shorter epoch with the same number of steps.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from rate_decoder import SoftHebbNet, configure_cpu, load_dataset, load_preset, rules
from rate_decoder.data import to_float
from rate_decoder.run import write_json
from snn import SpikingSoftHebb, data, preset, reference
from snn.readout import fit_input_bn, network_with_kernels

SETS = ("spiking", "rate", "initial")
TAU = 100.0


def standardised_images(images: torch.Tensor) -> np.ndarray:
    """The training images as the first block's batch norm standardises them (its statistics fitted on them)."""
    net = SoftHebbNet(load_preset("cifar10", layers=1))
    fit_input_bn(net, images)
    bn = net.blocks[0].bn
    x = to_float(images, None, net.preset.normalize).double()
    mean, std = bn.running_mean.double(), (bn.running_var.double() + bn.eps).sqrt()
    return ((x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)).numpy()


def initial_kernels(seed: int) -> np.ndarray:
    """The ``cifar10`` preset's first layer as a run with this seed initialises it, ``(96, 75)``."""
    torch.manual_seed(seed)
    return SoftHebbNet(load_preset("cifar10", layers=1)).blocks[0].conv.weight.detach().double().flatten(1).numpy()


def learn(out_dir: Path, seed: int, patches: int, batch: int, images: np.ndarray) -> dict:
    spec = load_preset("cifar10", layers=1).layers[0]
    hyper = dict(inverse_temperature=spec.inverse_temperature, lr=spec.lr, lr_power=spec.lr_power)
    x = data.random_patches(images, patches, 5, seed=seed)
    w0 = initial_kernels(seed)
    report = {"seed": seed, "patches": patches, "batch": batch, "tau": TAU, **hyper,
              "max_abs_input": float(np.abs(x).max())}
    start = time.perf_counter()
    rate = reference.rate_learn(x, w0, **hyper, normalisation=rules.HomeostaticGain(TAU), batch=batch)
    report["rate_s"] = time.perf_counter() - start
    layer = SpikingSoftHebb(75, len(w0), params=preset("fast", wta="circuit"), chunk=100 * batch, weights=w0,
                            seed=seed, normalisation=rules.HomeostaticGain(TAU), gain_batch=batch, **hyper)
    report["compile_s"] = layer.build()
    start = time.perf_counter()
    spiking = layer.present(x).weights
    elapsed = time.perf_counter() - start
    norms = {name: np.linalg.norm(w, axis=1) for name, w in (("spiking", spiking), ("rate", rate))}
    report.update(spiking_s=elapsed, presentations_per_s=patches / elapsed,
                  spiking_vs_rate=reference.compare(spiking, rate), rate_vs_initial=reference.compare(rate, w0),
                  norms={k: {"median": float(np.median(v)), "min": float(v.min()), "max": float(v.max())}
                         for k, v in norms.items()})
    np.savez(out_dir / f"kernels_s{seed}.npz", initial=w0, spiking=spiking, rate=rate)
    write_json(out_dir / f"learn_s{seed}.json", report)
    print(json.dumps(report), flush=True)
    return report


def score(out_dir: Path, seeds, sets, epochs: int | None) -> dict:
    from experiments.snn_readout import fit_readout
    path = out_dir / "score.json"
    cifar = load_dataset("cifar10")
    epochs = epochs or load_preset("cifar10", layers=1).readout.epochs
    report = json.loads(path.read_text()) if path.exists() else {"readout_epochs": epochs, "accuracy": {}}
    for seed in seeds:
        with np.load(out_dir / f"kernels_s{seed}.npz") as f:
            kernels = {name: f[name] for name in f.files}
        for name in sets:
            key = f"{name}/s{seed}"
            if key in report["accuracy"]:
                continue
            torch.manual_seed(seed)
            start = time.perf_counter()
            net = network_with_kernels(kernels[name], preset="cifar10", fit_images=cifar.x_train)
            acc, _ = fit_readout(net, cifar, epochs, seed)
            report["accuracy"][key] = acc
            print(f"{key}: {100 * acc:.2f} % ({time.perf_counter() - start:.0f} s)", flush=True)
            write_json(path, report)
    return report


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--part", choices=("learn", "score"), required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--patches", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=40, help="presentations per batch of the gain and the updates")
    ap.add_argument("--sets", nargs="+", choices=SETS, default=["spiking", "rate"], help="kernel sets to score")
    ap.add_argument("--readout-epochs", type=int, help="default: the preset's (50)")
    args = ap.parse_args(argv)
    if args.patches < 1 or args.batch < 1 or args.patches % args.batch:
        ap.error("--patches and --batch must be >= 1, --patches a multiple of --batch")
    configure_cpu()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.part == "learn":
        images = standardised_images(load_dataset("cifar10").x_train)
        for seed in args.seeds:
            learn(out, seed, args.patches, args.batch, images)
    else:
        score(out, args.seeds, args.sets, args.readout_epochs)


if __name__ == "__main__":
    main()
