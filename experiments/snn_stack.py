"""Stacking on MNIST: a second spiking layer learns from the first spiking layer's output spikes.

    python -m experiments.snn_mnist --out results/snn_mnist              # layer 1 (its kernels.npz)
    python -m experiments.snn_stack --layer1 results/snn_mnist --out results/snn_stack

Two relays between the layers (``--relay``):

* ``spikes`` (default, :mod:`snn.relay`): layer 1 (the spiking kernels of ``kernels.npz``, learning
  off) is presented every position of the first ``--images`` training images and its output spike
  trains are recorded; each input of layer 2 (a 3x3 patch of the max-pooled maps, all layer-1
  channels) replays, spike by spike, the train of the window position with the largest onset share
  (max pooling), with the per-channel standardisation of the pooled shares as synaptic gain and bias
  current. Reported: the relayed spike rate against the layer-1 share it carries; layer 2's weights
  against the rate rule's (local variant, batch 1, same initial weights) on the inputs the relay
  encodes (the standardised pooled shares), and on the inputs decoded from the relayed counts.
* ``counts`` (:mod:`snn.stack`): each layer-1 neuron's spike count per presentation, decoded, max
  pooled and standardised, is re-encoded as layer 2's ON/OFF Poisson input; the rate rule learns from
  the same decoded inputs.

Layer 2 (``--neurons`` neurons) learns from ``--patches`` random patches of those maps. Reported:
Hungarian-matched cosine and norm error of the spiking and rate-learned weight sets, and the same
statistic between the rate-learned and the initial weights.

Writes ``stack.json`` and ``layer2_kernels.npz`` under ``--out``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from rate_decoder.run import write_json
from snn import SpikingRelayLayer, SpikingSoftHebb, data, decoding, preset, record_layer1, reference, relay, stack


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layer1", required=True, help="output directory of experiments.snn_mnist")
    ap.add_argument("--out", required=True)
    ap.add_argument("--images", type=int, default=200, help="training images relayed through layer 1")
    ap.add_argument("--neurons", type=int, default=16)
    ap.add_argument("--patches", type=int, default=20_000)
    ap.add_argument("--inverse-temperature", type=float, default=0.65, help="layer 2's t (the preset's)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lr-power", type=float, default=0.5)
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--wta", default="circuit", choices=("circuit", "ideal"), help="soft WTA: spiking inhibition or the ideal normaliser")
    ap.add_argument("--chunk", type=int, default=5000, help="presentations per run (layer 1; layer 2 with --relay counts)")
    ap.add_argument("--relay", choices=("spikes", "counts"), default="spikes")
    ap.add_argument("--relay-chunk", type=int, default=500, help="layer-2 presentations per run with --relay spikes")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.relay == "spikes":
        return main_spikes(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    params = preset(args.preset, wta=args.wta)
    with np.load(Path(args.layer1) / "kernels.npz") as f:
        w1, t1 = f["spiking"], float(f["inverse_temperature"])
    images, _ = data.load_mnist("train", args.images)
    report = {"images": len(images), "layer1_neurons": len(w1), "preset": args.preset}

    start = time.perf_counter()
    layer1 = SpikingSoftHebb(25, len(w1), params=params, chunk=args.chunk, weights=w1, inverse_temperature=t1)
    layer1.build()
    counts = stack.count_maps(layer1, images)
    report["layer1_count_s"] = time.perf_counter() - start
    rate_hz, t_count = float(params.output_rate), float(params.t_learn)
    spike_shares = decoding.shares_from_counts(counts, rate_hz, t_count)
    rate_shares = decoding.expected_shares(w1, np.clip(images, -stack.LIMIT, stack.LIMIT), t1)
    # how well the relayed counts estimate the rate they encode (before pooling)
    resid = spike_shares - rate_shares
    report["relay"] = {"expected_spikes_per_position": rate_hz * t_count,
                       "mean_share_bias": float(resid.mean()),
                       "rms_share_error": float(np.sqrt((resid ** 2).mean())),
                       "poisson_rms_expected": float(np.sqrt((rate_shares / (rate_hz * t_count)).mean()))}
    pooled_spike, pooled_rate = decoding.max_pool(spike_shares)[0], decoding.max_pool(rate_shares)[0]
    mean, std = decoding.fit_standardisation(pooled_spike)
    z_spike = stack.next_layer_input(pooled_spike, mean, std)
    z_rate = stack.next_layer_input(pooled_rate, *decoding.fit_standardisation(pooled_rate))
    report["relay"]["pooled_input_correlation"] = float(np.corrcoef(z_spike.ravel(), z_rate.ravel())[0, 1])
    print(json.dumps(report["relay"]), flush=True)

    x2 = data.random_patches(z_spike, args.patches, 3, seed=args.seed)  # (P, K1*9), (C, k, k) order
    n_in = x2.shape[1]
    rng = np.random.default_rng(args.seed + 1)
    w0 = rng.standard_normal((args.neurons, n_in)) * 25 / np.sqrt(n_in)
    hyper = dict(inverse_temperature=args.inverse_temperature, lr=args.lr, lr_power=args.lr_power)
    layer2 = SpikingSoftHebb(n_in, args.neurons, params=params, chunk=args.chunk, weights=w0, **hyper)
    report["layer2_compile_s"] = layer2.build()
    start = time.perf_counter()
    layer2.present(x2, learn=True)
    report["layer2_learn_s"] = time.perf_counter() - start
    rate = reference.rate_learn(x2, w0, **hyper)
    report.update({"layer2_inputs": n_in, "layer2_neurons": args.neurons, "patches": args.patches, **hyper,
                   "spiking_vs_rate": reference.compare(layer2.weights, rate),
                   "rate_vs_initial": reference.compare(rate, w0),
                   "spiking_vs_initial": reference.compare(layer2.weights, w0)})
    np.savez(out / "layer2_kernels.npz", spiking=layer2.weights, rate=rate, initial=w0, **hyper)
    write_json(out / "stack.json", report)
    print(json.dumps(report, indent=1))
    return report


def main_spikes(args) -> dict:
    """--relay spikes: layer 2 replays layer 1's recorded spike trains (snn.relay)."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    params = preset(args.preset, wta=args.wta)
    with np.load(Path(args.layer1) / "kernels.npz") as f:
        w1, t1 = f["spiking"], float(f["inverse_temperature"])
    images, _ = data.load_mnist("train", args.images)
    report = {"relay": "spikes", "images": len(images), "layer1_neurons": len(w1), "preset": args.preset}

    start = time.perf_counter()
    layer1 = SpikingSoftHebb(25, len(w1), params=params, chunk=args.chunk, weights=w1, inverse_temperature=t1)
    trains = record_layer1(layer1, images)
    report["layer1_record_s"] = time.perf_counter() - start
    pooled, selected = decoding.max_pool(trains.shares)
    mean, std = decoding.fit_standardisation(pooled)
    positions = relay.patch_positions(len(images), *pooled.shape[2:], args.patches, seed=args.seed)
    keys, _ = relay.relay_plan(trains, selected, positions)
    _, counts, decoded, expected = relay.relay_inputs(trains, keys, mean, std)
    # the relayed trains (each distinct one once): rate = R x onset share, within Poisson noise
    uniq = np.unique(keys)
    shares = trains.shares.transpose(0, 2, 3, 1).reshape(-1)[uniq]
    rt = trains.rate * trains.t_count
    resid = np.diff(trains.offsets)[uniq] / rt - shares
    report["relay_check"] = {"distinct_trains": int(len(uniq)), "expected_spikes_per_train": float(rt * shares.mean()),
                             "mean_share_bias": float(resid.mean()),
                             "bias_standard_error": float(np.sqrt((shares / rt).mean() / len(uniq))),
                             "rms_share_error": float(np.sqrt((resid ** 2).mean())),
                             "poisson_rms_expected": float(np.sqrt((shares / rt).mean())),
                             "relayed_spikes_per_presentation": float(counts.sum(1).mean())}
    print(json.dumps(report["relay_check"]), flush=True)

    n_in = keys.shape[1]
    w0 = np.random.default_rng(args.seed + 1).standard_normal((args.neurons, n_in)) * 25 / np.sqrt(n_in)
    hyper = dict(inverse_temperature=args.inverse_temperature, lr=args.lr, lr_power=args.lr_power)
    layer2 = SpikingRelayLayer(len(w1), args.neurons, mean, std, params=params, chunk=args.relay_chunk,
                               weights=w0, **hyper)
    report["layer2_compile_s"] = layer2.build()
    start = time.perf_counter()
    out2 = layer2.present(trains, keys, learn=True)
    report["layer2_learn_s"] = time.perf_counter() - start
    rate = reference.rate_learn(expected, w0, **hyper)
    rate_decoded = reference.rate_learn(decoded, w0, **hyper)
    report.update({"layer2_inputs": n_in, "layer2_neurons": args.neurons, "patches": args.patches, **hyper,
                   "layer2_spikes_per_presentation": float(out2.counts.sum(1).mean()),
                   "spiking_vs_rate": reference.compare(out2.weights, rate),
                   "spiking_vs_rate_on_decoded_counts": reference.compare(out2.weights, rate_decoded),
                   "rate_vs_rate_on_decoded_counts": reference.compare(rate, rate_decoded),
                   "rate_vs_initial": reference.compare(rate, w0),
                   "spiking_vs_initial": reference.compare(out2.weights, w0)})
    np.savez(out / "layer2_kernels.npz", spiking=out2.weights, rate=rate, rate_decoded=rate_decoded, initial=w0,
             **hyper)
    write_json(out / "stack.json", report)
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
