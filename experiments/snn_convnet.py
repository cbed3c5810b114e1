"""MNIST through a 2-layer convolutional spiking SoftHebb network, end to end: learning, inference from spikes, counts.

    python -m experiments.snn_convnet --part learn --seeds 0 1 --out results/snn_convnet
    python -m experiments.snn_convnet --part infer --seeds 0 1 --sets spiking initial rate --out results/snn_convnet
    python -m experiments.snn_convnet --part score --seeds 0 1 --out results/snn_convnet
    python -m experiments.snn_convnet --part stages --seeds 0 --n-test 100 --out results/snn_convnet
    python -m experiments.snn_convnet --part figures --seeds 0 --out results/snn_convnet

* ``learn`` (per seed): layer 1 (32 neurons, 5x5, ``t`` 1) is the spiking circuit
  (:class:`snn.layer.SpikingSoftHebb`, ``wta="circuit"``) learning from ``--patches1`` random patches of
  the training images, each spike's change applied at once (``--normalisation none``, ``lr`` 1e-3, the
  setting of ``experiments.snn_circuit``) or divided by the homeostatic gain over batches
  (``--normalisation homeostatic``, ``tau`` 100 batches). Its kernels then run as a map
  (:class:`snn.conv.SpikingConvNet`, one layer) on the first ``--l2-images`` training images: the
  pooled spike counts of those whole images, standardised per channel, are layer 2's inputs. Layer 2
  (128 neurons, 3x3x32, ``t`` 0.65) learns from ``--patches2`` 3x3 patches of them (their values relayed
  as ON/OFF events), with the same rule. The rate rule learns from the same patches in the same
  order (layer 2 from its own layer 1's pooled rate maps): the ``rate`` kernel set, the spiking
  layers' rate twins. ``initial``: the layers' random initial kernels scaled to unit norm (the norm the
  rule converges to), standardised the same way. ``--synapse SPEC`` makes both spiking layers learn
  through a device (``hardware_models``: linear-N programmed at every plastic event, PCM once per
  chunk) and reports its programming pulses and their energy per presentation; with PCM the set
  ``spiking_drift1d`` holds the kernels read a day later (the standardisation kept from the end of
  learning).
* ``infer``: each kernel set as the 2-layer map network (circuit, whole images of ``--t-present`` ms,
  race pooling 4/2/1), on the first ``--n-train`` training and ``--n-test`` test images; writes the
  pooled layer-2 spike counts, the event counts and the speed. It saves shards of ``--shard`` images as
  they complete and skips them when run again: a stopped run resumes where it was, with the same draws;
  ``--jobs N`` spreads the shards over N processes (one core each) with the same counts.
* ``stages``: the first ``--n-test`` test images through the spiking kernels, compared with the rate twin
  stage by stage (correlation of the spike shares with the twin's values; layer 2 also against the rate
  computation fed the spiking layer-1 output).
* ``score``: a linear readout (the preset's: dropout 0.5, Adam, 50 epochs) trained on the square roots of
  the pooled spike shares of the ``--n-train`` training images and tested on the ``--n-test`` test images'
  (``--readout-features shares``: the shares themselves; ``--validation N``: tested on the last N training
  images' instead, to choose between them); the rate
  twin of the same network (same kernels, ``softmax(t u)`` and max pooling, batch norms set to the same
  standardisation) on the same images (and, ``--twin-all``, on all 60k/10k images); layer-by-layer comparison of the
  kernel sets (matched cosine) and of the spike shares with the twin's ``softmax(t u)``; energy per image
  (:mod:`snn.energy`).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from brian2 import ms, second

from rate_decoder import SoftHebbNet, configure_cpu, load_dataset, load_preset, rules
from rate_decoder.features import extract_features
from rate_decoder.readout import train_readout
from rate_decoder.run import atomic_write, update_json, write_json
from hardware_models import make_synapse
from snn import SpikingSoftHebb, data, decoding, energy, preset, reference
from snn.conv import LIMIT, MapLayer, SpikingConvNet, simulated_race_pooling
from snn.data import MNIST_MEAN, MNIST_STD
from snn.simulation import cache_dir
from snn.stack import next_layer_input

SETS = ("spiking", "rate", "initial", "spiking_drift1d")
DAY = 86_400.0
KERNEL_SIZES = (5, 3)
TEMPERATURES = (1.0, 0.65)
TAUS = (100.0, 100.0)  # batches; the patch streams here are 2500 and 2000 batches


def params(args):
    """The spiking constants of every run: the ``fast`` preset, the circuit, whole images of ``--t-present``."""
    return preset("fast", wta="circuit", t_present=args.t_present * ms)


def network(args, kernels: list, standardisation=None, layers: int = 2) -> SpikingConvNet:
    maps = [MapLayer(kernels[0], 5, TEMPERATURES[0])]
    if layers == 2:
        mean, std = standardisation
        maps.append(MapLayer(kernels[1], 3, TEMPERATURES[1], mean=mean, std=std))
    return SpikingConvNet(maps, (1, 28, 28), params(args), pool_race=args.pool_race, settle=args.settle * ms,
                          chunk=args.chunk, seed=args.seed_run)


def pooled_shares(args, counts: np.ndarray, layer: int) -> np.ndarray:
    """Pooled spike counts of layer ``layer`` (1 or 2) divided by ``R T`` of its counting window: pooled shares."""
    p = params(args)
    window = p.t_present - p.t_blank - (layer - 1) * args.settle * ms
    return counts / float(p.output_rate * window)


def rate_twin(kernels: list, standardisation, layers: int = 2) -> SoftHebbNet:
    """The rate network of the same architecture: these kernels, softmax(t u), max pooling 4/2/1, batch norms set
    to MNIST's standardisation and to ``standardisation`` of layer 1's pooled shares."""
    net = SoftHebbNet(_twin_preset())
    with torch.no_grad():
        for block, w, k in zip(net.blocks[:layers], kernels, KERNEL_SIZES):
            block.conv.weight.copy_(decoding.weights_to_conv(w, w.shape[1] // k ** 2, k))
        net.blocks[0].bn.running_mean.fill_(MNIST_MEAN)
        net.blocks[0].bn.running_var.fill_(MNIST_STD ** 2 - net.blocks[0].bn.eps)
        if layers == 1:
            return net.eval()
        mean, std = standardisation
        net.blocks[1].bn.running_mean.copy_(torch.as_tensor(mean))
        net.blocks[1].bn.running_var.copy_(torch.as_tensor(std) ** 2 - net.blocks[1].bn.eps)
    return net.eval()


def _twin_preset():
    """The ``mnist`` preset's first two layers at a third of their width (32, 128), with the soft WTA activation."""
    preset_ = load_preset("mnist", layers=2, width_factor=1 / 3)
    return dataclasses.replace(preset_, layers=tuple(dataclasses.replace(layer, activation="softmax")
                                                     for layer in preset_.layers))


def layer_hyper(index: int, args) -> dict:
    spec = _twin_preset().layers[index]
    return dict(inverse_temperature=spec.inverse_temperature, lr=(args.lr1, args.lr2)[index], lr_power=spec.lr_power)


def local_rule(args, index: int) -> dict:
    """The spiking layer's update normalisation: none (each spike's change at once) or the homeostatic gain."""
    if args.normalisation == "none":
        return {}
    return dict(normalisation=rules.HomeostaticGain(TAUS[index]), gain_batch=(args.batch, args.batch2)[index])


def rate_rule(args, index: int) -> dict:
    """The same rule for the rate twin: per patch, or in the spiking layer's batches with its gain."""
    if args.normalisation == "none":
        return dict(normalisation="none", batch=1)
    return dict(normalisation=rules.HomeostaticGain(TAUS[index]), batch=(args.batch, args.batch2)[index])


def device_for(args, seed: int, layer: int) -> dict:
    """The layer's synaptic device (``--synapse``): linear-N programmed at each plastic event, PCM once per chunk
    (its refresh and drift have no per-event law, :mod:`snn.device_events`)."""
    if not args.synapse:
        return {}
    return dict(synapse=make_synapse(args.synapse, seed=1000 * seed + layer),
                device_updates="chunk" if args.synapse.startswith("pcm") else "event")


def learn(out: Path, seed: int, args, images: np.ndarray) -> dict:
    """Both layers of one seed, spiking and rate-rule twins, and the three kernel sets' standardisations."""
    report = {"seed": seed}
    spec = _twin_preset().layers
    rng = np.random.default_rng(seed)
    w1_0 = rng.standard_normal((spec[0].out_channels, 25)) * spec[0].radius / 5
    w2_0 = rng.standard_normal((spec[1].out_channels, spec[0].out_channels * 9)) * spec[1].radius / np.sqrt(
        spec[0].out_channels * 9)
    x1 = np.clip(data.random_patches(images, args.patches1, 5, seed=seed), -LIMIT, LIMIT)
    # random kernels at unit norm, the norm the rule converges to: at the initial norm (25) softmax(t u) is a hard
    # winner-take-all whose log Z the circuit's inhibition needs longer than a presentation to track
    unit = [w / np.linalg.norm(w, axis=1, keepdims=True) for w in (w1_0, w2_0)]
    sets = {"initial": unit}
    devices = [device_for(args, seed, i) for i in range(2)]
    l1 = SpikingSoftHebb(25, len(w1_0), params=preset("fast", wta="circuit"), chunk=2000, weights=w1_0, seed=seed,
                         **local_rule(args, 0), **layer_hyper(0, args), **devices[0])
    compile_s = l1.build()
    start = time.perf_counter()
    out1 = l1.present(x1)
    w1_s = out1.weights
    report["layer1_spikes_per_presentation"] = float(out1.counts.sum(1).mean())
    report["layer1_plastic_events_per_presentation"] = float(out1.counts.sum(1).mean() * 25)
    report["layer1_presentations_per_s"] = args.patches1 / (time.perf_counter() - start)
    report["layer1_compile_s"] = compile_s
    w1_r = reference.rate_learn(x1, w1_0, **layer_hyper(0, args), **rate_rule(args, 0))
    standard, twin_standard, inputs = {}, {}, {}
    l2_images = images[:args.l2_images]
    for name, w1 in (("spiking", w1_s), ("rate", w1_r), ("initial", unit[0])):
        start = time.perf_counter()
        pooled = network(args, [w1], layers=1).present(l2_images).pooled[0]
        report[f"layer1_map_images_per_s_{name}"] = len(l2_images) / (time.perf_counter() - start)
        spike_shares = pooled_shares(args, pooled, 1)
        standard[name] = decoding.fit_standardisation(spike_shares)
        twin_shares = layer1_twin_shares(w1, l2_images)
        twin_standard[name] = decoding.fit_standardisation(twin_shares)
        # each network standardises its own layer 1's pooled output, as a batch norm fitted in it would
        if name != "initial":  # layer 2 learns from the spiking and the rate layer 1
            inputs[name] = (next_layer_input(spike_shares, *standard[name]) if name == "spiking" else
                            next_layer_input(twin_shares, *twin_standard[name]))
    x2 = {name: data.random_patches(inputs[name], args.patches2, 3, seed=seed + 1) for name in ("spiking", "rate")}
    n2 = w2_0.shape[1]
    l2 = SpikingSoftHebb(n2, len(w2_0), params=preset("fast", wta="circuit"), chunk=1000, weights=w2_0, seed=seed + 1,
                         **local_rule(args, 1), **layer_hyper(1, args), **devices[1])
    report["layer2_compile_s"] = l2.build()
    start = time.perf_counter()
    out2 = l2.present(x2["spiking"])
    report["layer2_presentations_per_s"] = args.patches2 / (time.perf_counter() - start)
    report["layer2_spikes_per_presentation"] = float(out2.counts.sum(1).mean())
    report["layer2_plastic_events_per_presentation"] = float(out2.counts.sum(1).mean() * n2)
    w2_r = reference.rate_learn(x2["rate"], w2_0, **layer_hyper(1, args), **rate_rule(args, 1))
    sets.update(spiking=[w1_s, out2.weights], rate=[w1_r, w2_r])
    if args.synapse:
        report["device"] = args.synapse
        report["device_pulses_per_presentation"] = [d["synapse"].pulses / n for d, n in
                                                    zip(devices, (args.patches1, args.patches2))]
        report["device_learning_energy_per_presentation_J"] = [
            energy.learning_energy(0.0, pulses) for pulses in report["device_pulses_per_presentation"]]
        if args.synapse.startswith("pcm"):  # the chip left alone for a day, read with the standardisation it learnt
            for d in devices:
                d["synapse"].age(DAY)
            sets["spiking_drift1d"] = [d["synapse"].read().double().numpy() for d in devices]
            standard["spiking_drift1d"] = standard["spiking"]
            twin_standard["spiking_drift1d"] = twin_standard["spiking"]
    report["matched_cosine_spiking_vs_rate"] = {"layer1": float(reference.match(w1_s, w1_r)[1].mean()),
                                                "layer1_initial": float(reference.match(w1_0, w1_r)[1].mean()),
                                                "layer2": reference.compare(out2.weights, w2_r)["mean_cosine"],
                                                "layer2_initial": reference.compare(w2_0, w2_r)["mean_cosine"]}
    report["pool_race"] = args.pool_race
    save_npz(out / f"kernels_s{seed}.npz", pool_race=args.pool_race,
             **{f"{name}_{i + 1}": w for name, ws in sets.items() for i, w in enumerate(ws)},
             **{f"{name}_mean": s[0] for name, s in standard.items()}, **{f"{name}_std": s[1] for name, s in standard.items()},
             **{f"{name}_twin_mean": s[0] for name, s in twin_standard.items()},
             **{f"{name}_twin_std": s[1] for name, s in twin_standard.items()})
    write_json(out / f"learn_s{seed}.json", report)
    print(json.dumps(report), flush=True)
    return report


def load_set(out: Path, seed: int, name: str, twin: bool = False, pool_race: int | None = None):
    """A kernel set and the standardisation of its layer 1's pooled output, in the spiking network or its twin.

    ``pool_race``: the race the spiking network will pool with; it must be the one layer 2 learnt from
    (the standardisation and layer 2's kernels depend on it), or this stops with a message.
    """
    suffix = "_twin" if twin else ""
    if not (out / f"kernels_s{seed}.npz").exists():
        raise SystemExit(f"no kernels of seed {seed} in {out}: run --part learn --seeds {seed} --out {out} first")
    with np.load(out / f"kernels_s{seed}.npz") as f:
        learnt = int(f["pool_race"]) if "pool_race" in f else 2
        if pool_race is not None and pool_race != learnt:
            raise SystemExit(f"the kernels of seed {seed} in {out} were learnt with --pool-race {learnt}, "
                             f"not {pool_race}: pass the same value (or learn again into another --out)")
        return [f[f"{name}_1"], f[f"{name}_2"]], (f[f"{name}{suffix}_mean"], f[f"{name}{suffix}_std"])


def layer1_twin_shares(w1: np.ndarray, images: np.ndarray) -> np.ndarray:
    """Layer 1 of the rate twin on standardised images: max-pooled softmax(t u), ``(N, K, 14, 14)``."""
    block = rate_twin([w1, np.zeros((1, len(w1) * 9))], None, layers=1).blocks[0]
    with torch.no_grad():
        return block.after_norm(torch.as_tensor(images, dtype=torch.float32)).double().numpy()


def save_npz(path: Path, **arrays) -> None:
    """``np.savez_compressed`` written atomically (a file object, so no ``.npz`` is appended to the temporary name)."""
    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    atomic_write(path, write)


def infer_shard(net: SpikingConvNet, path: Path, x: np.ndarray) -> None:
    """Present standardised images and save their pooled layer-2 counts, the first map of layer 1 and the events."""
    start = time.perf_counter()
    res = net.present(x)
    seconds = time.perf_counter() - start
    names = sorted(res.events)
    save_npz(path, pooled=res.pooled[1].astype(np.int16), map1=res.maps[0][:50].astype(np.int16),
             event_names=np.array(names), events=np.array([res.events[k] for k in names]), seconds=seconds)


def infer(out: Path, seed: int, name: str, args, mnist) -> dict:
    """Spike counts of the first ``--n-train`` training and ``--n-test`` test images, in shards of ``--shard``.

    Each shard is saved as it completes and is skipped when the command is run again, so a long run can be
    stopped and resumed; the test images come first. The shards are then joined into ``counts_s{seed}_{name}.npz``,
    and the speeds and events per image recorded in ``infer_s{seed}_{name}.json`` under ``"{n_train}x{n_test}"``.
    Each shard's draws are seeded from its position, so ``--jobs N`` (N processes, worker k simulating the
    missing ones among shards k, k + N, ... in its own build directory) gives the counts one process would.
    """
    path = out / f"counts_s{seed}_{name}.npz"
    if path.exists() and args.worker is None:
        with np.load(path) as f:
            if len(f["train"]) == args.n_train and len(f["test"]) == args.n_test:
                return {}
    kernels, standard = load_set(out, seed, name, pool_race=args.pool_race)
    shards = out / f"shards_s{seed}_{name}"
    shards.mkdir(exist_ok=True)
    sizes = {"test": args.n_test, "train": args.n_train}
    bounds = lambda split, i: (i * args.shard, min((i + 1) * args.shard, sizes[split]))  # noqa: E731 (shard i's images)
    files = {split: [shards / "{}_{:05d}_{:05d}_t{:g}.npz".format(split, *bounds(split, i), args.t_present)
                     for i in range(-(-n // args.shard))] for split, n in sizes.items()}
    # worker k takes every jobs-th shard of the whole list, so the workers' shares never overlap
    todo = [(split, i) for k, (split, i) in enumerate((split, i) for split in files for i in range(len(files[split])))
            if not files[split][i].exists() and (args.worker is None or k % args.jobs == args.worker)]
    wall = None
    if args.jobs > 1 and args.worker is None and todo:
        start = time.perf_counter()
        run_workers(args, seed, name)
        wall = (sum(bounds(split, i)[1] - bounds(split, i)[0] for split, i in todo), time.perf_counter() - start)
        todo = []
    net, compile_s = None, None  # built at the first missing shard: joining finished shards needs no build
    for split, i in todo:
        if net is None:
            net, start = network(args, kernels, standard), time.perf_counter()
            net.build()
            compile_s = time.perf_counter() - start
        begin, stop = bounds(split, i)
        images = mnist.x_test if split == "test" else mnist.x_train
        net.rng = np.random.default_rng([args.seed_run, split == "train", begin])  # resumed == uninterrupted
        x = (images[begin:stop].double().numpy() / 255.0 - MNIST_MEAN) / MNIST_STD
        infer_shard(net, files[split][i], x)
        print(f"{name} s{seed} {split} {stop}/{sizes[split]}", flush=True)
    if args.worker is not None:
        return {}
    joined, report = {}, {"seed": seed, "set": name, "compile_s": compile_s}
    if wall is not None:  # images simulated by the workers over the wall time, their builds included
        report.update(jobs=args.jobs, images_per_s_all_jobs=wall[0] / wall[1])
    for split, paths in files.items():
        pooled, seconds, events, names = [], 0.0, 0.0, None
        for shard in paths:
            with np.load(shard) as f:
                pooled.append(f["pooled"])
                seconds += float(f["seconds"])
                events = events + f["events"] * len(f["pooled"])
                names = [str(v) for v in f["event_names"]]
                if split == "train" and shard == paths[0]:
                    joined["train_map1"] = f["map1"]
        joined[split] = np.concatenate(pooled)
        report[f"{split}_images_per_s"] = len(joined[split]) / seconds
        if split == "test":
            report["events_per_image"] = dict(zip(names, (events / len(joined[split])).tolist()))
    save_npz(path, **joined)
    report["energy_per_image_J"] = energy.inference_energy(report["events_per_image"])
    # one record per pair of sizes; joining shards simulated earlier keeps the record of the run that simulated them
    key = f"{args.n_train}x{args.n_test}"

    def add(records: dict) -> None:
        if "seed" in records:  # a record written before they were keyed by sizes
            earlier = dict(records)
            records.clear()
            records["sizes not recorded"] = earlier
        if key not in records or wall is not None or compile_s is not None:
            records[key] = report
    records = update_json(out / f"infer_s{seed}_{name}.json", add)
    print(json.dumps(records[key]), flush=True)
    return records[key]


def run_workers(args, seed: int, name: str) -> None:
    """``--jobs`` processes of this command for one kernel set, worker ``k`` simulating the missing ones among
    shards ``k, k + jobs, ...``, each in its own build directory (a standalone project runs in the directory
    it was built in)."""
    argv = [*strip_option(args.argv, "--seeds"), "--seeds", str(seed)]
    argv = [*strip_option(argv, "--sets"), "--sets", name]
    workers = []
    for k in range(args.jobs):
        env = dict(os.environ, SOFTHEBB_SNN_CACHE=str(cache_dir() / f"worker{k}"), OMP_NUM_THREADS="1")
        workers.append(subprocess.Popen([sys.executable, "-m", "experiments.snn_convnet", *argv, "--worker", str(k)],
                                        env=env))
    try:
        failed = [k for k, w in enumerate(workers) if w.wait() != 0]
    finally:  # the parent stopped (Ctrl-C): stop the workers too, their finished shards stay
        for w in workers:
            if w.poll() is None:
                w.terminate()
    if failed:
        raise SystemExit(f"inference worker(s) {failed} of seed {seed}, set {name} failed (their messages are above); "
                         "the shards they finished are kept: run the command again to resume")


def strip_option(argv: list, option: str) -> list:
    """``argv`` without ``option`` and the values that follow it (up to the next ``--``), or ``option=value``."""
    out, skipping = [], False
    for a in argv:
        if a == option:
            skipping = True
        elif skipping and a.startswith("--"):
            skipping = False
        if not skipping and not a.startswith(option + "="):
            out.append(a)
    return out


READOUT_FEATURES = {"sqrt": np.sqrt, "shares": lambda shares: shares}


def readout_accuracy(train_f, y_train, test_f, y_test, seed: int, epochs: int) -> float:
    net = SoftHebbNet(_twin_preset())
    torch.manual_seed(seed)
    history = train_readout(net, torch.as_tensor(train_f, dtype=torch.float32).flatten(1), y_train,
                            torch.as_tensor(test_f, dtype=torch.float32).flatten(1), y_test, epochs=epochs, seed=seed,
                            progress=False)
    return history[-1]["test_acc"]


def score(out: Path, seeds, sets, args, mnist) -> dict:
    """Readout accuracy from the spike counts of ``--n-train`` / ``--n-test`` images, and the rate twin's on the same.

    The readout reads ``--readout-features`` of the pooled shares: ``sqrt`` (the default) is the variance-stabilising
    transform of Poisson counts, whose variance grows with their mean, so that a weak and a strong feature carry
    noise of one size; the twin's shares go through the same function. ``--validation N`` scores a readout trained
    on all but the last N training images' counts on those N instead of the test images (the choice of features
    is made there, never on the test images).

    ``score.json`` keeps one entry per set, seed, pair of sizes and features (``spiking/s0/10000x10000/sqrt``,
    ``.../val2000`` for a validation score, ``.../e10`` for a readout of other than 50 epochs), so figures at
    several sizes sit side by side; an entry already there is not recomputed. The counts must hold the sizes
    asked for: ``--part infer`` with the same sizes joins them from the saved shards.
    """
    path = out / "score.json"
    report = json.loads(path.read_text()) if path.exists() else {"accuracy": {}}
    epochs, features = args.readout_epochs, READOUT_FEATURES[args.readout_features]
    for seed in seeds:
        for name in sets:
            key = f"{name}/s{seed}/{args.n_train}x{args.n_test}/{args.readout_features}"
            key += (f"/val{args.validation}" if args.validation else "") + (f"/e{epochs}" if epochs != 50 else "")
            counts = out / f"counts_s{seed}_{name}.npz"
            if key in report["accuracy"] or not counts.exists():
                continue
            with np.load(counts) as f:
                n_tr, n_te = len(f["train"]), len(f["test"])
                if (n_tr, n_te) != (args.n_train, args.n_test):
                    raise SystemExit(f"{counts} holds the counts of {n_tr} training and {n_te} test images, not the "
                                     f"{args.n_train} and {args.n_test} asked for: run --part infer with "
                                     f"--n-train {args.n_train} --n-test {args.n_test} first (it joins the saved shards)")
                f_train, f_test = pooled_shares(args, f["train"], 2), pooled_shares(args, f["test"], 2)
                map1 = f["train_map1"]
            twin = rate_twin(*load_set(out, seed, name, twin=True))
            tw_train = extract_features(twin, mnist.x_train[:n_tr], progress=False).double().numpy()
            y_train = mnist.y_train[:n_tr]
            if args.validation:  # the last N training images stand in for the test images
                fit = n_tr - args.validation
                f_train, f_test, tw_train, tw_test = f_train[:fit], f_train[fit:], tw_train[:fit], tw_train[fit:]
                y_train, y_test = y_train[:fit], y_train[fit:]
            else:
                tw_test = extract_features(twin, mnist.x_test[:n_te], progress=False).double().numpy()
                y_test = mnist.y_test[:n_te]
            r = {"spikes": readout_accuracy(features(f_train), y_train, features(f_test), y_test, seed, epochs),
                 "twin_same_images": readout_accuracy(features(tw_train), y_train, features(tw_test), y_test, seed,
                                                      epochs)}
            if args.twin_all:
                all_train, all_test = (extract_features(twin, x, progress=False).double().numpy()
                                       for x in (mnist.x_train, mnist.x_test))
                r["twin_all_images"] = readout_accuracy(features(all_train), mnist.y_train, features(all_test),
                                                        mnist.y_test, seed, epochs)
            # layer 2's pooled shares, spikes against the twin (same images): mean and relative rms difference
            twin_test = tw_test.reshape(f_test.shape)
            r["layer2_pooled_share_mean"] = {"spikes": float(f_test.mean()), "twin": float(twin_test.mean())}
            r["layer2_pooled_correlation"] = float(np.corrcoef(f_test.ravel(), twin_test.ravel())[0, 1])
            # layer 1's spike shares at every position against softmax(t u) of the same kernels (first training images)
            p = params(args)
            images = (mnist.x_train[:len(map1)].double().numpy() / 255.0 - MNIST_MEAN) / MNIST_STD
            expected = decoding.expected_shares(load_set(out, seed, name)[0][0], np.clip(images, -LIMIT, LIMIT),
                                                TEMPERATURES[0])
            observed = decoding.shares_from_counts(map1, float(p.output_rate), float((p.t_present - p.t_blank) / second))
            r["layer1_shares_vs_softmax"] = {"correlation": float(np.corrcoef(observed.ravel(), expected.ravel())[0, 1]),
                                             "mean_total_variation": float(0.5 * np.abs(observed - expected).sum(1).mean())}
            print(key, json.dumps(r), flush=True)
            # merged into the file as it is now: another score process may have added entries meanwhile
            report = update_json(path, lambda scores, key=key, r=r: scores.setdefault("accuracy", {}).update({key: r}))
    return report


def stages(out: Path, seed: int, args, mnist) -> dict:
    """Where the spiking network departs from its rate twin, stage by stage, on the first ``--n-test`` test images.

    Each stage's spike shares (counts / ``R T``) are correlated with the twin's value of that stage, and
    layer 2 also with the rate computation fed the *spiking* layer-1 output (standardised as the spiking
    relay does): that separates what layer 2's circuit gets wrong from what it inherits from layer 1.
    Layer 1's pooling is also drawn alone (:func:`snn.conv.simulated_race_pooling` on the twin's shares
    as Poisson rates, and the max of each window's Poisson counts): what each race and an ideal spiking
    max pooling would give with layer 1 exactly at its softmax.
    """
    kernels, standard = load_set(out, seed, "spiking", pool_race=args.pool_race)
    net = network(args, kernels, standard)
    net.rng = np.random.default_rng([args.seed_run, 0, 0])
    x = (mnist.x_test[:args.n_test].double().numpy() / 255.0 - MNIST_MEAN) / MNIST_STD
    res = net.present(x)
    p = params(args)
    rate = float(p.output_rate)
    seconds = [float((p.t_present - p.t_blank - layer * args.settle * ms) / second) for layer in (0, 1)]  # counting
    map1, map2 = (res.maps[i] / (rate * seconds[i]) for i in (0, 1))
    pool1, pool2 = (res.pooled[i] / (rate * seconds[i]) for i in (0, 1))
    twin = rate_twin(*load_set(out, seed, "spiking", twin=True))
    b1, b2 = twin.blocks[0], twin.blocks[1]
    mean, std = (torch.as_tensor(v, dtype=torch.float32)[None, :, None, None] for v in standard)
    with torch.no_grad():
        twin_map1 = b1.activation(b1.conv(b1.bn(mnist.x_test[:args.n_test].float() / 255.0)))
        twin_pool1 = b1._pool(twin_map1)
        twin_map2 = b2.activation(b2.conv(b2.bn(twin_pool1)))
        twin_pool2 = b2._pool(twin_map2)
        given_map2 = b2.activation(b2.conv((torch.as_tensor(pool1, dtype=torch.float32) - mean) / std))
    corr = lambda a, b: float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])  # noqa: E731
    report = {
        "layer 1 map: spikes vs twin": corr(map1, twin_map1),
        "layer 1 pooled: spikes vs twin": corr(pool1, twin_pool1),
        "layer 1 pooled: spikes vs max pooling of the spike map": corr(pool1, decoding.max_pool(map1)[0]),
        "layer 2 map: spikes vs twin": corr(map2, twin_map2),
        "layer 2 map: spikes vs softmax of the spiking layer-1 output": corr(map2, given_map2),
        "layer 2 map: twin vs softmax of the spiking layer-1 output": corr(twin_map2, given_map2),
        "layer 2 pooled: spikes vs twin": corr(pool2, twin_pool2),
        "layer 2 pooled: spikes vs max pooling of the spike map": corr(pool2, decoding.max_pool(map2)[0]),
    }
    # the pooling alone: races drawn on the twin's layer-1 shares as Poisson rates, against its max pooling
    rates, rng = twin_map1.double().numpy() * rate, np.random.default_rng(args.seed_run)
    report["layer 1 pooled: max of each window's Poisson counts vs twin"] = corr(
        decoding.max_pool(rng.poisson(rates * seconds[0]))[0], twin_pool1)
    for race in (1, 2, 4, 8):
        relayed = simulated_race_pooling(rates, seconds[0], race, rng=rng)
        report[f"layer 1 pooled: race of {race} drawn on the twin's shares vs twin"] = corr(relayed, twin_pool1)
    report["mean_shares"] = {"layer 1 pooled": [float(pool1.mean()), float(twin_pool1.mean())],
                             "layer 2 pooled": [float(pool2.mean()), float(twin_pool2.mean())]}
    report.update(seed=seed, n_test=args.n_test, t_present_ms=args.t_present)
    write_json(out / f"stages_s{seed}_t{args.t_present:g}.json", report)
    for key, value in report.items():
        print(f"{key:62s} {value if not isinstance(value, float) else round(value, 3)}")
    return report


def projected_kernels(w1: np.ndarray, w2: np.ndarray) -> np.ndarray:
    """Layer-2 kernels projected to pixels, ``(K2, 9, 9)``: each input (channel c, offset dy, dx) of a layer-2 kernel
    adds its weight times layer-1 kernel c, shifted by the pooling stride times the offset. A linear picture
    (it ignores the soft WTA and the pooling window's extent), as one draws deep receptive fields by weights."""
    k1 = w1.reshape(len(w1), 5, 5)
    w = w2.reshape(len(w2), len(w1), 3, 3)
    out = np.zeros((len(w2), 9, 9))
    for dy in range(3):
        for dx in range(3):
            out[:, 2 * dy:2 * dy + 5, 2 * dx:2 * dx + 5] += np.einsum("kc,cij->kij", w[:, :, dy, dx], k1)
    return out


def figures(out: Path, seed: int, args) -> None:
    """A raster of one test image through both layers, and the layer-2 kernels projected to pixels."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    kernels, standard = load_set(out, seed, "spiking", pool_race=args.pool_race)
    images, labels = data.load_mnist("test", 1)
    net = SpikingConvNet([MapLayer(kernels[0], 5, TEMPERATURES[0]), MapLayer(kernels[1], 3, TEMPERATURES[1],
                                                                                 *standard)],
                         (1, 28, 28), params(args), pool_race=args.pool_race, settle=args.settle * ms, chunk=1,
                         seed=args.seed_run, record=True)
    res = net.present(images)
    panels = [("map_pixels", "input events (784 pixels)"), ("map1_exc", "layer 1 (32 x 28 x 28)"),
              ("map1_pool", "layer 1 pooled (32 x 14 x 14)"), ("map2_exc", "layer 2 (128 x 14 x 14)"),
              ("map2_pool", "layer 2 pooled (128 x 7 x 7): the features")]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 11), sharex=True)
    for ax, (name, title) in zip(axes, panels):
        i, t = res.spikes[name]
        ax.plot(t * 1000, i, ",k", alpha=0.6)
        ax.set_title(f"{title}: {len(i)} events", fontsize=9)
        ax.set_ylabel("index")
    for ax in axes[1:3]:
        ax.axvline(float(params(args).t_blank / ms), color="r", lw=0.8)
    for ax in axes[3:]:
        ax.axvline(float((params(args).t_blank + args.settle * ms) / ms), color="r", lw=0.8)
    axes[-1].set_xlabel("ms (red: the layer starts counting)")
    fig.suptitle(f"one MNIST test image (label {labels[0]}) through the 2-layer spiking network, seed {seed}")
    fig.tight_layout()
    fig.savefig(out / "raster.png", dpi=110)
    proj = projected_kernels(*kernels)
    fig, axes = plt.subplots(8, 16, figsize=(12, 6.5))
    for ax, k in zip(axes.ravel(), proj):
        lim = np.abs(k).max()
        ax.imshow(k, cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.axis("off")
    fig.suptitle(f"layer-2 kernels projected to pixels (9x9), spiking-learnt, seed {seed}")
    fig.savefig(out / "layer2_kernels.png", dpi=110)
    print(f"wrote {out / 'raster.png'} and {out / 'layer2_kernels.png'}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--part", choices=("learn", "infer", "score", "stages", "figures"), required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    ap.add_argument("--patches1", type=int, default=100_000)
    ap.add_argument("--patches2", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=40, help="layer 1's presentations per batch of the gain and the updates")
    ap.add_argument("--batch2", type=int, default=10, help="layer 2's (more batches from fewer patches)")
    ap.add_argument("--normalisation", choices=("none", "homeostatic"), default="none",
                    help="none: each spike's change applied at once; homeostatic: the per-neuron gain over batches")
    ap.add_argument("--synapse", help="learn through a device model (linear16, pcm, ...); pcm adds the set "
                                      "spiking_drift1d, its kernels read after a day")
    ap.add_argument("--lr1", type=float, default=1e-3)
    ap.add_argument("--lr2", type=float, default=1e-3)
    ap.add_argument("--l2-images", type=int, default=200, help="training images whose layer-1 maps layer 2 learns from")
    ap.add_argument("--n-train", type=int, default=800, help="training images of the readout (spike counts)")
    ap.add_argument("--n-test", type=int, default=800, help="test images classified from spikes")
    ap.add_argument("--t-present", type=float, default=80.0, help="ms per whole image")
    ap.add_argument("--settle", type=float, default=40.0, help="ms from layer 1's counting start to layer 2's")
    ap.add_argument("--pool-race", type=int, default=4,
                    help="spikes that lock a pooling unit to the first neuron of its window to fire them (learn "
                         "stores it with the kernels; the other parts must be given the same)")
    ap.add_argument("--chunk", type=int, default=50, help="images per compiled run")
    ap.add_argument("--shard", type=int, default=500, help="images per saved shard of the inference (resumable)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="infer: processes simulating the missing shards side by side (one core each)")
    ap.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # set by --jobs for its processes
    ap.add_argument("--readout-epochs", type=int, default=50)
    ap.add_argument("--twin-all", action="store_true", help="score: also the rate twin on all 60k/10k images")
    ap.add_argument("--readout-features", choices=tuple(READOUT_FEATURES), default="sqrt",
                    help="score: what the readout reads of the pooled shares (sqrt: variance-stabilised counts)")
    ap.add_argument("--validation", type=int, default=0,
                    help="score: train the readout on all but the last N training images and score it on those N")
    ap.add_argument("--seed-run", type=int, default=0, help="seed of the spiking runs' random draws")
    args = ap.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    if args.worker is not None and not 0 <= args.worker < args.jobs:
        ap.error(f"--worker must be in [0, --jobs), got {args.worker} of {args.jobs}")
    for name in ("patches1", "patches2", "l2_images", "n_train", "n_test", "chunk", "shard", "pool_race", "jobs"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    if not 0 <= args.validation < args.n_train:
        ap.error(f"--validation must be in [0, --n-train), got {args.validation} of {args.n_train}")
    if args.normalisation == "homeostatic" and (args.patches1 % args.batch or args.patches2 % args.batch2):
        ap.error("--patches1 and --patches2 must be multiples of --batch and --batch2")
    configure_cpu()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.part == "learn":
        images, _ = data.load_mnist("train")
        for seed in args.seeds:
            learn(out, seed, args, images)
        return
    if args.part == "figures":
        figures(out, args.seeds[0], args)
        return
    mnist = load_dataset("mnist")
    if args.part == "infer":
        for seed in args.seeds:
            for name in args.sets:
                infer(out, seed, name, args, mnist)
    elif args.part == "stages":
        for seed in args.seeds:
            stages(out, seed, args, mnist)
    else:
        score(out, args.seeds, args.sets, args, mnist)


if __name__ == "__main__":
    main()
