"""Speed of the spiking SoftHebb layer: presentations/s and synaptic events/s with learning on.

One command::

    python -m experiments.snn_benchmark --out results/snn_benchmark

For each (inputs, neurons) in {25, 75} x {16, 96} it compiles a standalone project (compile time
reported apart), then times ``present`` on real patches (MNIST 5x5 for 25 inputs, CIFAR-10 5x5x3 for 75,
standardised per channel) with 50 ms presentations and learning on. Synaptic events are counted from
the rates: every input event (onset burst included) touches K synapses, every output spike n_in.
Writes ``benchmark.json`` and ``benchmark.png`` under ``--out``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from snn import SpikingSoftHebb, data, preset

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)


def patches(n_inputs: int, n: int, seed: int = 0) -> np.ndarray:
    """Real standardised 5x5 patches: MNIST (25 inputs) or CIFAR-10 (75 inputs), clipped to the encoder's range."""
    if n_inputs == 25:
        images, _ = data.load_mnist("train", 5000)
    else:
        with np.load(data.dataset_path("cifar10.npz")) as f:
            x = np.moveaxis(f["x_train"][:5000], -1, 1).astype(np.float64) / 255.0
        images = (x - np.array(CIFAR_MEAN)[:, None, None]) / np.array(CIFAR_STD)[:, None, None]
    return np.clip(data.random_patches(images, n, 5, seed=seed), -2.8, 2.8)


def bench(n_inputs: int, n_neurons: int, n: int, params, threads: int = 1) -> dict:
    x = patches(n_inputs, n)
    layer = SpikingSoftHebb(n_inputs, n_neurons, params=params, chunk=n, lr=1e-3, seed=0, threads=threads)
    compile_s = layer.build()
    start = time.perf_counter()
    out = layer.present(x, learn=True)
    run_s = time.perf_counter() - start
    t_present = float(params.t_present)
    input_events = float(np.abs(x).sum() * float(params.input_rate) * t_present + x.size)
    output_spikes = float(out.counts.sum())
    events = input_events * n_neurons + output_spikes * n_inputs
    return {"wta": params.wta, "inputs": n_inputs, "neurons": n_neurons, "threads": threads, "presentations": n, "compile_s": compile_s, "run_s": run_s,
            "presentations_per_s": n / run_s, "synaptic_events_per_s": events / run_s,
            "input_events_per_presentation": input_events / n, "output_spikes_per_presentation": output_spikes / n}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="results directory")
    ap.add_argument("--presentations", type=int, default=2000)
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="OpenMP threads to compare")
    ap.add_argument("--wta", nargs="+", default=["circuit", "ideal"], help="inhibitions to compare (same run)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for threads in args.threads:
        for n_inputs in (25, 75):
            for n_neurons in (16, 96):
                for wta in args.wta:
                    rows.append(bench(n_inputs, n_neurons, args.presentations, preset(args.preset, wta=wta), threads))
                    print(json.dumps(rows[-1]), flush=True)
    result = {"preset": args.preset, "params": {wta: preset(args.preset, wta=wta).key() for wta in args.wta},
              "results": rows, "goal": ">= 700 presentations/s for the circuit at 96 neurons x 75 inputs, one core"}
    (out / "benchmark.json").write_text(json.dumps(result, indent=2))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.5))
    labels = [f"{r['neurons']}x{r['inputs']}\n{r['wta']}, {r['threads']} thr." for r in rows]
    ax.bar(labels, [r["presentations_per_s"] for r in rows])
    ax.axhline(700, color="k", ls="--", lw=1, label="goal (circuit, 96x75)")
    ax.set_xlabel("neurons x inputs")
    ax.set_ylabel("presentations / s (learning on, 50 ms)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "benchmark.png", dpi=120)
    return result


if __name__ == "__main__":
    main()
