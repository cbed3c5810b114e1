"""Score spiking-learned kernels with the rate network's linear readout, and read spike counts out directly.

    python -m experiments.snn_mnist --out results/snn_mnist          # learns the kernels, counts test spikes
    python -m experiments.snn_readout --kernels results/snn_mnist --out results/snn_readout

1. **Kernels in the rate network.** Each kernel set of ``kernels.npz`` (``spiking``: learnt by the
   Brian2 layer; ``rate``: the rate rule on the same patches from the same initial weights;
   ``initial``: those initial weights, i.e. random) becomes the first layer of the 1-layer MNIST
   network (preset ``mnist``, first layer, its width set to the number of kernels): batch norm ->
   conv -> Triangle(0.7) -> max pool 4/2/1, the 50-epoch readout on all 60k training images, test
   accuracy on all 10k test images.

   *Input scale.* The kernels were learnt by the local rule on raw 5x5 patches standardised with
   MNIST's pixel mean and std (``snn.data``: ``(x / 255 - 0.1307) / 0.3081``, one mean and std for
   all pixels, reflect padding): the spiking layer has no batch norm of its own, and ``u = w . x``
   and the learnt norms (~1) are in those units. The rate network's first block standardises its
   input with its batch norm (``affine=False``), whose running statistics the rate pipeline
   accumulates while that block learns (train mode, momentum 0.1, batch 10). For kernels learnt
   elsewhere there is no such pass, so the statistics must be set before the features are
   extracted. ``--bn dataset`` (default) gives the batch norm exactly the constants the kernels
   were learnt with; ``--bn fit`` fits them instead, in one pass over the training images with the
   block's batch norm in train mode and ``momentum=None`` (a cumulative average over all batches:
   the dataset's statistics, not the last batches' as with momentum 0.1). Both give the same
   network (``tests/test_snn_readout.py`` checks that the fit gives the standardisation constants), and the
   conv sees exactly the patches the spiking layer saw (same test).
2. **Spike-domain inference.** The spiking layer's output counts estimate ``R T softmax(t u)`` at
   every position (``test_counts.npz``: learning off, every position of the first N test images).
   Readouts are trained on the rate network whose activation is the expected share
   ``softmax(t u)`` (so a count divided by ``R T``), pooled as in the preset (max 4/2/1), with the
   spiking kernels, on the 60k training images, and tested on the same N test images on (a) the
   exact rate features and (b) the decoded spike counts ``counts / (R T)``, pooled the same way.
   Two readouts: one trained on the exact shares, and one trained on shares *with spike noise*
   (counts drawn from ``Poisson(R T softmax(t u))`` per position and channel, one draw per training
   image), which is what the spiking layer's counts look like; the latter is also tested on Poisson
   counts drawn for the N test images, to check how well that noise model stands for the real
   spikes. The gap between (a) and (b) is what spike noise costs.

Writes ``snn_readout.json`` and ``snn_readout.md`` under ``--out``; ``--parts kernels`` or
``--parts spike`` runs one part and keeps the other's results already in the JSON.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from rate_decoder import SoftHebbNet, accuracy, configure_cpu, extract_features, load_dataset, train_readout
from rate_decoder.run import atomic_write, write_json
from snn.params import preset as spiking_preset
from snn.readout import PoissonShares, SoftWTA, fit_input_bn, network_with_kernels

KERNEL_SETS = ("spiking", "rate", "initial")


def fit_readout(net: SoftHebbNet, data, epochs: int, seed: int) -> tuple[float, torch.Tensor]:
    """Features of all images, the readout trained on them; returns (test accuracy, test features)."""
    train_f = extract_features(net, data.x_train, desc="train features")
    test_f = extract_features(net, data.x_test, desc="test features")
    history = train_readout(net, train_f, data.y_train, test_f, data.y_test, epochs=epochs, seed=seed)
    return history[-1]["test_acc"], test_f


def set_input_statistics(net: SoftHebbNet, mode: str, images: torch.Tensor) -> tuple[float, float]:
    """``mode`` ``"dataset"``: keep snn.data's constants (set by :func:`snn.readout.network_with_kernels`);
    ``"fit"``: :func:`snn.readout.fit_input_bn` on ``images``. Returns the batch norm's (mean, std) of channel 0."""
    if mode == "fit":
        return fit_input_bn(net, images)
    if mode != "dataset":
        raise ValueError(f"unknown --bn {mode!r}")
    bn = net.blocks[0].bn
    return float(bn.running_mean[0]), float((bn.running_var[0] + bn.eps).sqrt())


def score_kernels(kernels, data, args, report: dict, out: Path) -> None:
    """Part 1: each kernel set in the 1-layer network, the readout's test accuracy on all test images."""
    report["accuracy"], report["input_statistics"] = {}, {}
    for name in KERNEL_SETS:
        torch.manual_seed(args.seed)
        start = time.perf_counter()
        net = network_with_kernels(kernels[name])
        report["input_statistics"][name] = set_input_statistics(net, args.bn, data.x_train)
        acc, _ = fit_readout(net, data, args.readout_epochs, args.seed)
        report["accuracy"][name] = acc
        print(f"{name} kernels: test accuracy {100 * acc:.2f} % ({time.perf_counter() - start:.0f} s)", flush=True)
        write_json(out / "snn_readout.json", report)
    report["spiking_minus_rate_points"] = 100 * (report["accuracy"]["spiking"] - report["accuracy"]["rate"])


def spike_domain(kernels, summary: dict, counts_path: Path, data, args) -> dict:
    """Part 2: readouts on softmax(t u) features (exact / with Poisson spike noise), tested on the same
    test images' exact features, Poisson-drawn counts and the spiking layer's decoded counts."""
    with np.load(counts_path) as f:
        counts, labels, t_count = f["counts"], torch.as_tensor(f["labels"]), float(f["t_count"])
    n = len(counts)
    if not torch.equal(labels, data.y_test[:n]):
        raise ValueError(f"{counts_path}: labels differ from the first {n} MNIST test labels")
    rate_hz = float(spiking_preset(summary.get("preset", "fast")).output_rate)  # Brian2 Hz -> float
    expected = rate_hz * t_count
    t = float(kernels["inverse_temperature"])
    exact_net = network_with_kernels(kernels["spiking"], SoftWTA(t))
    set_input_statistics(exact_net, args.bn, data.x_train)
    block = exact_net.blocks[0]
    decoded = torch.as_tensor(counts, dtype=torch.float32) / expected  # estimates softmax(t u)
    with torch.no_grad():
        spike_f = block._pool(decoded).flatten(1)
    exact_test = extract_features(exact_net, data.x_test[:n], desc="exact test features")
    poisson_test_net = network_with_kernels(kernels["spiking"], activation=PoissonShares(t, expected, args.seed + 2))
    set_input_statistics(poisson_test_net, args.bn, data.x_train)
    poisson_test = extract_features(poisson_test_net, data.x_test[:n], desc="Poisson test features")
    result = {"test_images": n, "expected_spikes_per_position": expected,
              "mean_spikes_per_position": float(counts.sum(1).mean()), "readouts": {}}
    for name, activation in (("trained on exact shares", None),
                             ("trained on Poisson counts", PoissonShares(t, expected, args.seed + 1))):
        torch.manual_seed(args.seed)
        start = time.perf_counter()
        net = network_with_kernels(kernels["spiking"], activation if activation is not None else SoftWTA(t))
        set_input_statistics(net, args.bn, data.x_train)
        acc_all, _ = fit_readout(net, data, args.readout_epochs, args.seed)
        r = {"all_test_images_same_features": acc_all,
             "exact_shares": accuracy(net.head, exact_test, labels),
             "poisson_counts": accuracy(net.head, poisson_test, labels),
             "decoded_spike_counts": accuracy(net.head, spike_f, labels)}
        r["spike_minus_exact_points"] = 100 * (r["decoded_spike_counts"] - r["exact_shares"])
        result["readouts"][name] = r
        print(f"readout {name}: {json.dumps(r)} ({time.perf_counter() - start:.0f} s)", flush=True)
    return result


def markdown(report: dict) -> str:
    lines = []
    if "accuracy" in report:
        acc = report["accuracy"]
        lines += [f"MNIST test accuracy (all {report['n_test']} images, {report['readout_epochs']}-epoch readout, "
                  f"{report['neurons']} 5x5 kernels, 1 layer, input batch norm: {report.get('bn', 'dataset')})", "",
                  "| kernels | test acc % |", "|---|---|"]
        lines += [f"| {name} | {100 * acc[name]:.2f} |" for name in KERNEL_SETS]
        lines += ["", f"spiking - rate: {report['spiking_minus_rate_points']:+.2f} points"]
    if "spike_domain" in report:
        s = report["spike_domain"]
        lines += ["", f"Spike-domain inference ({s['test_images']} test images, readout on softmax(t u) "
                      f"features, spiking kernels, {s['mean_spikes_per_position']:.1f} spikes per position):", "",
                  "| readout | exact shares | Poisson counts | decoded spike counts | spikes - exact (points) |",
                  "|---|---|---|---|---|"]
        for name, r in s.get("readouts", {}).items():
            lines.append(f"| {name} | {100 * r['exact_shares']:.2f} | {100 * r['poisson_counts']:.2f} | "
                         f"{100 * r['decoded_spike_counts']:.2f} | {r['spike_minus_exact_points']:+.2f} |")
        readouts = s.get("readouts", {})
        if {"trained on exact shares", "trained on Poisson counts"} <= set(readouts):
            rate = readouts["trained on exact shares"]["exact_shares"]
            spikes = readouts["trained on Poisson counts"]["decoded_spike_counts"]
            lines += ["", f"Spiking layer read out from its spike counts (readout trained on Poisson counts): "
                          f"{100 * spikes:.2f} %; rate network on the same images (readout trained on exact "
                          f"shares): {100 * rate:.2f} % ({100 * (spikes - rate):+.2f} points)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernels", required=True, help="output directory of experiments.snn_mnist")
    ap.add_argument("--out", required=True)
    ap.add_argument("--readout-epochs", type=int, default=50)
    ap.add_argument("--bn", choices=("dataset", "fit"), default="dataset",
                    help="input batch-norm statistics: snn.data's standardisation constants, or fitted on the "
                         "training images (see the module docstring)")
    ap.add_argument("--parts", nargs="+", choices=("kernels", "spike"), default=["kernels", "spike"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-train", type=int, help="first N training images only (quick look)")
    args = ap.parse_args(argv)
    configure_cpu()
    src, out = Path(args.kernels), Path(args.out)
    if not (src / "kernels.npz").is_file():
        raise SystemExit(f"{src / 'kernels.npz'} not found: run python -m experiments.snn_mnist --out {src} first")
    out.mkdir(parents=True, exist_ok=True)
    kernels = dict(np.load(src / "kernels.npz"))
    summary = json.loads((src / "summary.json").read_text()) if (src / "summary.json").is_file() else {}
    data = load_dataset("mnist").subset(args.n_train, None)
    previous = out / "snn_readout.json"
    report = json.loads(previous.read_text()) if previous.is_file() and set(args.parts) != {"kernels", "spike"} else {}
    report.update({"kernels": str(src), "readout_epochs": args.readout_epochs, "n_train": len(data.x_train),
                   "n_test": len(data.x_test), "neurons": int(kernels["spiking"].shape[0]), "bn": args.bn})
    if "kernels" in args.parts:
        score_kernels(kernels, data, args, report, out)
    counts_path = src / "test_counts.npz"
    if "spike" in args.parts:
        if not counts_path.is_file():
            raise SystemExit(f"{counts_path} not found (written by experiments.snn_mnist)")
        report["spike_domain"] = spike_domain(kernels, summary, counts_path, data, args)
    write_json(out / "snn_readout.json", report)
    text = markdown(report)
    atomic_write(out / "snn_readout.md", lambda tmp: Path(tmp).write_text(text))
    print(text)
    return report


if __name__ == "__main__":
    main()
