"""A spiking first layer learns 5x5 kernels from MNIST patches; kernels, a comparison with the rate rule,
and spike-domain counts over test images for a linear readout.

One command::

    python -m experiments.snn_mnist --out results/snn_mnist

Writes under ``--out``: ``kernels.npz`` (spiking, rate-learned and initial weights ``(K, 25)``, plus
``t``, ``lr``, ``q``), ``kernels.png`` (spiking vs rate kernels side by side, matched by the Hungarian
method), ``test_counts.npz`` (``counts`` uint8 ``(N, K, 28, 28)``: output spikes of the spiking layer,
learning off, at every position of each test image; ``labels``), and ``summary.json``.
``experiments.snn_readout`` scores the kernels with the rate network's readout.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from snn import SpikingSoftHebb, data, preset, reference


def plot_kernels(spiking: np.ndarray, rate: np.ndarray, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    perm, cos = reference.match(spiking, rate)
    K = len(spiking)
    fig, axes = plt.subplots(2, K, figsize=(0.8 * K, 2.0))
    for k in range(K):
        for row, w in enumerate((spiking[k], rate[perm[k]])):
            ax = axes[row, k]
            ax.imshow(w.reshape(5, 5), cmap="bwr", vmin=-np.abs(w).max(), vmax=np.abs(w).max())
            ax.set_xticks([]), ax.set_yticks([])
        axes[0, k].set_title(f"{cos[k]:.2f}", fontsize=6)
    axes[0, 0].set_ylabel("spiking", fontsize=7)
    axes[1, 0].set_ylabel("rate", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=150)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--neurons", type=int, default=32)
    ap.add_argument("--patches", type=int, default=100_000)
    ap.add_argument("--test-images", type=int, default=1000)
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--wta", default="circuit", choices=("circuit", "ideal"), help="soft WTA: spiking inhibition or the ideal normaliser")
    ap.add_argument("--inverse-temperature", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lr-power", type=float, default=0.5)
    ap.add_argument("--chunk", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images, _ = data.load_mnist("train")
    x = data.random_patches(images, args.patches, 5, seed=args.seed)
    w0 = np.random.default_rng(args.seed + 1).standard_normal((args.neurons, 25)) * 25 / 5
    hyper = dict(inverse_temperature=args.inverse_temperature, lr=args.lr, lr_power=args.lr_power)
    layer = SpikingSoftHebb(25, args.neurons, params=preset(args.preset, wta=args.wta), chunk=args.chunk, weights=w0, **hyper)
    compile_s = layer.build()
    start = time.perf_counter()
    layer.present(x, learn=True)
    learn_s = time.perf_counter() - start
    rate = reference.rate_learn(x, w0, args.inverse_temperature, args.lr, args.lr_power)
    np.savez(out / "kernels.npz", spiking=layer.weights, rate=rate, initial=w0, **hyper)
    plot_kernels(layer.weights, rate, out / "kernels.png")
    summary = {"neurons": args.neurons, "patches": args.patches, "preset": args.preset, **hyper,
               "compile_s": compile_s, "learn_s": learn_s, "learn_presentations_per_s": args.patches / learn_s,
               "spiking_vs_rate": reference.compare(layer.weights, rate),
               "rate_vs_initial": reference.compare(rate, w0)}
    print(json.dumps(summary))
    # spike-domain counts of the trained layer over test images (learning off): one presentation per position
    test, labels = data.load_mnist("test", args.test_images)
    counts = np.zeros((len(test), args.neurons, 28, 28), dtype=np.uint8)
    start = time.perf_counter()
    group = max(1, args.chunk // 784)  # images per chunk: no padding wasted
    for b in range(0, len(test), group):
        xs = np.concatenate([data.image_patches(img, 5) for img in test[b:b + group]])
        c = layer.present(xs, learn=False).counts.reshape(-1, 28, 28, args.neurons)  # (images, H, W, K)
        counts[b:b + group] = np.minimum(c, 255).transpose(0, 3, 1, 2)
    summary["test_images"] = len(test)
    summary["count_s"] = time.perf_counter() - start
    summary["mean_spikes_per_position"] = float(counts.sum((1,)).mean())
    np.savez_compressed(out / "test_counts.npz", counts=counts, labels=labels,
                        t_count=float(layer.params.t_learn))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
