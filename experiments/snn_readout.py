"""Score spiking-learned kernels with the rate network's linear readout, and read spike counts out directly.

    python -m experiments.snn_mnist --out results/snn_mnist          # learns the kernels, counts test spikes
    python -m experiments.snn_readout --kernels results/snn_mnist --out results/snn_readout

1. **Kernels in the rate network.** Each kernel set of ``kernels.npz`` (``spiking``: learnt by the
   Brian2 layer; ``rate``: the rate rule on the same patches from the same initial weights;
   ``initial``: those initial weights, i.e. random) becomes the first layer of the 1-layer MNIST
   network (preset ``mnist``, first layer, its width set to the number of kernels): batch norm ->
   conv -> Triangle(0.7) -> max pool, the 50-epoch readout on all 60k training images, test accuracy
   on all 10k test images. The kernels were learnt on patches standardised with MNIST's pixel mean
   and std (``snn.data``), so the block's batch norm is given exactly those statistics instead of
   being fitted: the network sees the inputs the kernels were learnt on.
2. **Spike-domain inference.** The spiking layer's output counts estimate ``R T softmax(t u)`` at
   every position (``test_counts.npz``: learning off, every position of the first N test images).
   A readout is trained on the rate network whose activation is that expectation,
   ``softmax(t u)`` (then the preset's pooling), with the spiking kernels, on the 60k training
   images; it is then tested on the same N test images twice: on the exact rate features, and on the
   decoded counts ``counts / (R T)`` pooled the same way. The gap is what spike noise costs.

Writes ``snn_readout.json`` and ``snn_readout.md`` under ``--out``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rate_decoder import decoding
from rate_decoder.data import load_dataset
from rate_decoder.network import SoftHebbNet, load_preset
from rate_decoder.run import atomic_write, write_json
from rate_decoder.training import accuracy, configure_cpu, extract_features, train_readout
from snn.data import MNIST_MEAN, MNIST_STD

KERNEL_SETS = ("spiking", "rate", "initial")


class SoftWTA(nn.Module):
    """``softmax(t u)`` over channels: the expected share of a spiking WTA population's output spikes."""

    def __init__(self, inverse_temperature: float):
        super().__init__()
        self.inverse_temperature = float(inverse_temperature)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.inverse_temperature * u, dim=1)


def network_with_kernels(weights: np.ndarray, softmax_t: float | None = None) -> SoftHebbNet:
    """The 1-layer MNIST network with ``weights (K, 25)`` as its kernels and MNIST's standardisation."""
    K = weights.shape[0]
    net = SoftHebbNet(load_preset("mnist", layers=1, width_factor=K / 96))
    block = net.blocks[0]
    if block.conv.weight.shape != (K, 1, 5, 5):
        raise ValueError(f"kernels {weights.shape} do not fit the mnist preset's 5x5 first layer")
    with torch.no_grad():
        block.conv.weight.copy_(decoding.weights_to_conv(weights, 1, 5))
        block.bn.running_mean.fill_(MNIST_MEAN)
        block.bn.running_var.fill_(MNIST_STD ** 2 - block.bn.eps)  # (x - mean) / sqrt(var + eps) = standardised
    if softmax_t is not None:
        block.activation = SoftWTA(softmax_t)
    net.eval()
    return net


def fit_readout(net: SoftHebbNet, data, epochs: int, seed: int) -> tuple[float, torch.Tensor]:
    """Features of all images, the readout trained on them; returns (test accuracy, test features)."""
    train_f = extract_features(net, data.x_train, desc="train features")
    test_f = extract_features(net, data.x_test, desc="test features")
    history = train_readout(net, train_f, data.y_train, test_f, data.y_test, epochs=epochs, seed=seed)
    return history[-1]["test_acc"], test_f


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernels", required=True, help="output directory of experiments.snn_mnist")
    ap.add_argument("--out", required=True)
    ap.add_argument("--readout-epochs", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-train", type=int, help="first N training images only (quick look)")
    args = ap.parse_args(argv)
    configure_cpu()
    src, out = Path(args.kernels), Path(args.out)
    if not (src / "kernels.npz").is_file():
        raise SystemExit(f"{src / 'kernels.npz'} not found: run python -m experiments.snn_mnist --out {src} first")
    out.mkdir(parents=True, exist_ok=True)
    kernels = np.load(src / "kernels.npz")
    summary = json.loads((src / "summary.json").read_text()) if (src / "summary.json").is_file() else {}
    data = load_dataset("mnist").subset(args.n_train, None)
    report = {"kernels": str(src), "readout_epochs": args.readout_epochs, "n_train": len(data.x_train),
              "n_test": len(data.x_test), "neurons": int(kernels["spiking"].shape[0]), "accuracy": {}}
    for name in KERNEL_SETS:
        torch.manual_seed(args.seed)
        start = time.perf_counter()
        acc, _ = fit_readout(network_with_kernels(kernels[name]), data, args.readout_epochs, args.seed)
        report["accuracy"][name] = acc
        print(f"{name} kernels: test accuracy {100 * acc:.2f} % ({time.perf_counter() - start:.0f} s)", flush=True)
        write_json(out / "snn_readout.json", report)
    report["spiking_minus_rate_points"] = 100 * (report["accuracy"]["spiking"] - report["accuracy"]["rate"])

    counts_path = src / "test_counts.npz"
    if counts_path.is_file():
        from snn.params import preset as spiking_preset

        with np.load(counts_path) as f:
            counts, labels, t_count = f["counts"], torch.as_tensor(f["labels"]), float(f["t_count"])
        n = len(counts)
        if not torch.equal(labels, data.y_test[:n]):
            raise ValueError(f"{counts_path}: labels differ from the first {n} MNIST test labels")
        rate_hz = float(spiking_preset(summary.get("preset", "fast")).output_rate)  # Brian2 Hz -> float
        t = float(kernels["inverse_temperature"])
        torch.manual_seed(args.seed)
        net = network_with_kernels(kernels["spiking"], softmax_t=t)
        acc_all, test_f = fit_readout(net, data, args.readout_epochs, args.seed)
        block = net.blocks[0]
        decoded = torch.as_tensor(counts, dtype=torch.float32) / (rate_hz * t_count)  # estimates softmax(t u)
        with torch.no_grad():
            spike_f = block._pool(decoded).flatten(1)
        acc_rate = accuracy(net.head, test_f[:n], labels)
        acc_spike = accuracy(net.head, spike_f, labels)
        report["spike_domain"] = {
            "test_images": n, "expected_spikes_per_position": rate_hz * t_count,
            "mean_spikes_per_position": float(counts.sum(1).mean()),
            "readout_on_softmax_features_all_test": acc_all,
            "rate_features_same_images": acc_rate, "decoded_spike_counts": acc_spike,
            "spike_minus_rate_points": 100 * (acc_spike - acc_rate)}
        print(json.dumps(report["spike_domain"]), flush=True)
    write_json(out / "snn_readout.json", report)
    acc = report["accuracy"]
    lines = [f"MNIST test accuracy (all {report['n_test']} images, {args.readout_epochs}-epoch readout, "
             f"{report['neurons']} 5x5 kernels, 1 layer)", "",
             "| kernels | test acc % |", "|---|---|"]
    lines += [f"| {name} | {100 * acc[name]:.2f} |" for name in KERNEL_SETS]
    lines += ["", f"spiking - rate: {report['spiking_minus_rate_points']:+.2f} points"]
    if "spike_domain" in report:
        s = report["spike_domain"]
        lines += ["", f"Spike-domain inference ({s['test_images']} test images, softmax-activation readout):", "",
                  "| features | test acc % |", "|---|---|",
                  f"| exact rates softmax(t u) | {100 * s['rate_features_same_images']:.2f} |",
                  f"| decoded spike counts | {100 * s['decoded_spike_counts']:.2f} |"]
    atomic_write(out / "snn_readout.md", lambda tmp: Path(tmp).write_text("\n".join(lines) + "\n"))
    print("\n".join(lines))
    return report


if __name__ == "__main__":
    main()
