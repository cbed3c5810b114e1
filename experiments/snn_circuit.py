"""The spiking layer as a circuit: firing against softmax, the local winner signal, and MNIST kernels learnt
by the circuit, the idealised layer, the rate rule and on devices, scored by the rate network's readout.

    python -m experiments.snn_circuit --part firing --out results/snn_circuit
    python -m experiments.snn_circuit --part learn --seeds 0 1 --out results/snn_circuit
    python -m experiments.snn_circuit --part score --seeds 0 1 --out results/snn_circuit

* ``firing``: 16 neurons holding the rate rule's kernels (20k MNIST patches), learning off, 2000
  other patches. For each inhibition strength ``J`` and delay and each inverse temperature: the
  total variation distance (TV) between each neuron's share of the counted spikes and
  ``softmax(t W x)`` (weighted by each presentation's spike total), the rate in the learning window
  against ``R``, the presentation-to-presentation CV of the spike total, and the agreement of each
  spike's plasticity sign with argmax ``W x``; the same for the idealised layer. Writes
  ``firing.json``, ``firing.md`` and ``raster.png`` (one presentation: excitatory and inhibitory spikes,
  and the shares over 300 presentations of that patch against softmax).
* ``learn``: per seed, 32 neurons learn from 100k MNIST patches (initial norm 25): the circuit, the
  idealised layer, the circuit on a linear 16-state device and on a PCM pair (range
  ``w_max_unit=4``; linear programmed at each plastic event, PCM once per chunk of 5000
  presentations: see :mod:`snn.device_events`), and the rate rule on the same patches. Writes
  ``kernels_s{seed}.npz`` and ``learn_s{seed}.json`` (matched cosine to the rate rule, pulses, speed).
* ``gain``: the homeostatic gain (:class:`rate_decoder.rules.HomeostaticGain`, ``tau`` 100 batches of 20
  presentations, ``lr`` 0.03): ``--neurons`` neurons learn ``--patches`` MNIST patches from norms ~25 in
  the ideal layer and the circuit (each seed), against the rate rule with the same gain on the same
  batches, and that rule given the patches in reverse order (how far the order alone moves it). Writes
  ``gain.json``. ``python -m experiments.snn_circuit --part gain --seeds 1 2 --patches 20000 --neurons 16``
* ``score``: each kernel set (and the initial, random kernels) as the first layer of the 1-layer MNIST
  network, 50-epoch readout on all 60k training images, test accuracy on all 10k test images
  (``experiments.snn_readout``'s protocol). Resumable: scores already in ``score.json`` are kept.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from brian2 import ms

from hardware_models import make_synapse
from rate_decoder import configure_cpu, load_dataset, rules
from rate_decoder.run import write_json
from snn import SpikingSoftHebb, data, preset, reference

HYPER = dict(inverse_temperature=1.0, lr=1e-3, lr_power=0.5)
SETS = ("circuit", "ideal", "circuit_linear16", "circuit_pcm", "rate", "initial")
DEVICES = {"circuit_linear16": ("linear16:w_max_unit=4", "event"), "circuit_pcm": ("pcm:w_max_unit=4", "chunk")}


def firing_stats(out, x, w, t, params) -> dict:
    u = x @ w.T
    p = rules.soft_wta(torch.from_numpy(u), t, dim=1).numpy()
    totals = out.counts.sum(1)
    expected = (totals[:, None] * p).sum(0) / totals.sum()
    pres = np.floor(out.spike_t / float(params.t_present) + 1e-9).astype(np.int64)
    is_winner = u.argmax(1)[pres] == out.spike_i
    return {"tv": float(0.5 * np.abs(out.counts.sum(0) / totals.sum() - expected).sum()),
            "rate_over_R": float(totals.mean() / float(params.output_rate * params.t_learn)),
            "cv_total": float(totals.std() / totals.mean()),
            "winner_agreement": float(np.mean((out.spike_sign > 0) == is_winner))}


def firing(out_dir: Path) -> dict:
    images, _ = data.load_mnist("train", 10000)
    learn_x, probe = data.random_patches(images, 20000, 5, seed=1), data.random_patches(images, 2000, 5, seed=0)
    w0 = np.random.default_rng(1).standard_normal((16, 25)) * 5
    w = reference.rate_learn(learn_x, w0, **HYPER)
    rows = []
    configs = [("ideal", None, 0.0)] + [("circuit", J, d) for d in (0.0, 0.5, 1.0) for J in (0.25, 0.5, 1.0)]
    for wta, J, delay in configs:
        for t in (0.25, 0.65, 1.0):
            overrides = dict(wta=wta, inhibition_delay=delay * ms)
            if J is not None:
                overrides["inhibition_strength"] = J
            params = preset("fast", **overrides)
            layer = SpikingSoftHebb(25, 16, params=params, chunk=2000, weights=w, seed=1, inverse_temperature=t)
            out = layer.present(probe, learn=False, record_spikes=True)
            rows.append({"wta": wta, "J": J, "delay_ms": delay, "t": t, **firing_stats(out, probe, w, t, params)})
            print(json.dumps(rows[-1]), flush=True)
    report = {"rows": rows, "kernels": "rate rule, 20k patches, 16 neurons", "probe_patches": len(probe)}
    write_json(out_dir / "firing.json", report)
    lines = ["| wta | J | delay (ms) | t | TV | rate / R | CV of total | winner agreement |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['wta']} | {r['J'] if r['J'] is not None else '-'} | {r['delay_ms']:g} | {r['t']} | "
              f"{r['tv']:.4f} | {r['rate_over_R']:.3f} | {r['cv_total']:.3f} | {r['winner_agreement']:.3f} |"
              for r in rows]
    (out_dir / "firing.md").write_text("\n".join(lines) + "\n")
    raster(w, probe, out_dir / "raster.png")
    return report


def raster(w: np.ndarray, probe: np.ndarray, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    params = preset("fast")
    u = probe @ w.T
    patch = probe[int(np.argmax(u.max(1) - np.median(u, 1)))]  # a patch with a clear winner
    layer = SpikingSoftHebb(25, 16, params=params, chunk=300, weights=w, seed=2, inverse_temperature=1.0)
    out = layer.present(np.tile(patch, (300, 1)), learn=False, record_spikes=True)
    t_present = float(params.t_present)
    first = out.spike_t < t_present
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), gridspec_kw={"width_ratios": [2, 1]})
    ax = axes[0]
    ax.scatter(1e3 * out.spike_t[first], out.spike_i[first], s=6, c="tab:blue", label="excitatory")
    inh = out.inhibitory_t[out.inhibitory_t < t_present]
    ax.scatter(1e3 * inh, np.full(len(inh), 17.5), s=6, c="tab:red", marker="|", label="inhibitory")
    ax.axvline(1e3 * float(params.t_blank), color="gray", lw=0.5)
    ax.set_xlabel("time in the presentation (ms)"), ax.set_ylabel("neuron")
    ax.set_title("one presentation (t = 1, J = 0.5)", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    ax = axes[1]
    share = out.counts.sum(0) / out.counts.sum()
    soft = rules.soft_wta(torch.from_numpy(patch @ w.T)[None], 1.0, dim=1).numpy()[0]
    k = np.arange(16)
    ax.bar(k - 0.2, share, 0.4, label="spike share (300 presentations)")
    ax.bar(k + 0.2, soft, 0.4, label="softmax(t u)")
    ax.set_xlabel("neuron"), ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=150)


def learn(out_dir: Path, seed: int, patches: int, neurons: int) -> dict:
    images, _ = data.load_mnist("train")
    x = data.random_patches(images, patches, 5, seed=seed)
    w0 = np.random.default_rng(seed + 1).standard_normal((neurons, 25)) * 25 / 5
    kernels, report = {"initial": w0}, {"seed": seed, "patches": patches, "neurons": neurons, **HYPER}
    start = time.perf_counter()
    kernels["rate"] = reference.rate_learn(x, w0, **HYPER)
    report["rate_s"] = time.perf_counter() - start
    for name in SETS[:4]:
        wta = "ideal" if name == "ideal" else "circuit"
        synapse, updates = None, "event"
        if name in DEVICES:
            synapse, updates = make_synapse(DEVICES[name][0], seed=seed), DEVICES[name][1]
        layer = SpikingSoftHebb(25, neurons, params=preset("fast", wta=wta), chunk=5000, weights=w0, seed=seed,
                                synapse=synapse, device_updates=updates, **HYPER)
        layer.build()
        start = time.perf_counter()
        kernels[name] = layer.present(x).weights
        elapsed = time.perf_counter() - start
        report[name] = {"seconds": elapsed, "presentations_per_s": patches / elapsed,
                        "vs_rate": reference.compare(kernels[name], kernels["rate"]),
                        "pulses": None if synapse is None else int(synapse.pulses)}
        print(name, json.dumps(report[name]), flush=True)
    report["rate_vs_initial"] = reference.compare(kernels["rate"], w0)
    np.savez(out_dir / f"kernels_s{seed}.npz", **kernels)
    write_json(out_dir / f"learn_s{seed}.json", report)
    return report


def score(out_dir: Path, seeds, epochs: int) -> dict:
    from experiments.snn_readout import fit_readout
    from snn.readout import network_with_kernels
    path = out_dir / "score.json"
    report = json.loads(path.read_text()) if path.exists() else {"readout_epochs": epochs, "accuracy": {}}
    mnist = load_dataset("mnist")
    for seed in seeds:
        with np.load(out_dir / f"kernels_s{seed}.npz") as f:
            kernels = {name: f[name] for name in f.files}
        for name in SETS:
            key = f"{name}/s{seed}"
            if key in report["accuracy"]:
                continue
            torch.manual_seed(seed)
            start = time.perf_counter()
            acc, _ = fit_readout(network_with_kernels(kernels[name]), mnist, epochs, seed)
            report["accuracy"][key] = acc
            print(f"{key}: {100 * acc:.2f} % ({time.perf_counter() - start:.0f} s)", flush=True)
            write_json(path, report)
    return report


def gain_crosscheck(out_dir: Path, seeds, patches: int, neurons: int, batch: int = 20, lr: float = 0.03,
                    tau: float = 100.0) -> dict:
    """The homeostatic gain in both layers against the rate rule with the same gain on the same batches."""
    images, _ = data.load_mnist("train", 10000)
    x = data.random_patches(images, patches, 5, seed=1)
    w0 = np.random.default_rng(2).standard_normal((neurons, 25)) * 25 / 5
    hyper = dict(HYPER, lr=lr)
    rate = reference.rate_learn(x, w0, **hyper, normalisation=rules.HomeostaticGain(tau), batch=batch)
    reverse = reference.rate_learn(x[::-1].copy(), w0, **hyper, normalisation=rules.HomeostaticGain(tau), batch=batch)
    report = {"patches": patches, "neurons": neurons, "batch": batch, "tau": tau, **hyper,
              "rate_reverse_order_vs_rate": reference.compare(reverse, rate), "vs_rate": {}}
    for wta in ("ideal", "circuit"):
        for seed in seeds:
            layer = SpikingSoftHebb(25, neurons, params=preset("fast", wta=wta), chunk=100 * batch, weights=w0,
                                    seed=seed, normalisation=rules.HomeostaticGain(tau), gain_batch=batch, **hyper)
            report["vs_rate"][f"{wta}/s{seed}"] = reference.compare(layer.present(x).weights, rate)
            print(wta, seed, json.dumps(report["vs_rate"][f"{wta}/s{seed}"]), flush=True)
    write_json(out_dir / "gain.json", report)
    return report


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--part", choices=("firing", "learn", "score", "gain"), required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--patches", type=int, default=100_000)
    ap.add_argument("--neurons", type=int, default=32)
    ap.add_argument("--readout-epochs", type=int, default=50)
    args = ap.parse_args(argv)
    configure_cpu()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.part == "firing":
        return firing(out)
    if args.part == "learn":
        return [learn(out, s, args.patches, args.neurons) for s in args.seeds]
    if args.part == "gain":
        return gain_crosscheck(out, args.seeds, args.patches, args.neurons)
    return score(out, args.seeds, args.readout_epochs)


if __name__ == "__main__":
    main()
