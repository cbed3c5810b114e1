"""SoftHebb learning on synaptic device models, and inference after drift: one command.

    python -m experiments.device_sweep --preset mnist --layers 1 --out results/devices_mnist_L1
    python -m experiments.device_sweep --preset mnist --layers 1 --n-train 10000 --n-test 2000 \
        --readout-epochs 10 --synapses ideal linear16 pcm --out results/devices_quick
    python -m experiments.device_sweep --preset cifar10 --layers 1 --synapses "linear64:w_max_unit=24" ...

For every synapse model the Hebbian layers learn through the device (``layer.attach_synapse``), the
readout is trained at programming time (on the features of the last read, or with
``--readout-reads fresh`` on those of a fresh read of the devices for every batch, so that it learns
to ignore their read noise), and the test accuracy is measured on the weights read
back after 1 s, 1 h, 1 day and 1 year of drift, with and without global drift compensation
(``hardware_models.GlobalDriftCompensation``). Writes ``devices.json``, ``devices.md``, the drift
figure ``devices_drift.png`` and, when linear devices were swept, ``devices_states.png`` (accuracy
against the number of states, one line per range and rounding). ``devices.json`` is rewritten after
every model; a rerun with the same ``--out`` skips the models already measured with the same readout, so
an interrupted sweep resumes, and keeps every other row, so sweeps into one directory add up.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import hardware_models
from rate_decoder.config import load_preset
from rate_decoder.data import check_dataset, load_dataset, to_float
from rate_decoder.features import extract_features
from rate_decoder.network import SoftHebbNet, configure_cpu
from rate_decoder.readout import accuracy, train_readout
from rate_decoder.run import atomic_write, write_json
from rate_decoder.unsupervised import train_unsupervised

DEFAULT_SYNAPSES = ["ideal", "linear8", "linear16", "linear32", "linear64", "linear256", "pcm", "rram"]
DRIFT_TIMES = {"1 s": 1.0, "1 h": 3600.0, "1 day": 86400.0, "1 year": 3.156e7}


def evaluate_synapse(spec, preset, data, args) -> dict:
    torch.manual_seed(args.seed)
    net = SoftHebbNet(preset)
    devices = [hardware_models.make_synapse(spec, seed=args.seed * 1000 + i) for i in range(len(net.blocks))]
    for block, dev in zip(net.blocks, devices):
        block.conv.attach_synapse(dev)
    t = time.perf_counter()
    unsup = preset.unsupervised
    train_unsupervised(net, data.unsupervised_images(unsup.split), "greedy", unsup.batch_size, args.seed,
                       progress=False, augmentation=unsup.augment, augment_pad=unsup.augment_pad)
    # a device whose reads neither drift nor carry noise returns the same weights at every later read
    static_reads = all(not d.noisy_reads and d.nu is None for d in devices)
    fresh_reads = args.readout_reads == "fresh" and any(d.noisy_reads for d in devices)
    test_f = extract_features(net, data.x_test, progress=False)  # the weights of the last read during learning
    net.eval()
    if fresh_reads:  # noise-aware readout: each training batch sees the features of a new read of the devices
        normalize = preset.normalize
        train_f = data.x_train

        def feature_fn(images, rows=None):
            with torch.no_grad():
                for block, dev in zip(net.blocks, devices):
                    block.conv.weight.copy_(dev.read())
                return net.features(to_float(images, None, normalize)).flatten(1)
    else:
        train_f, feature_fn = extract_features(net, data.x_train, progress=False), None
    readout = preset.readout
    history = train_readout(net, train_f, data.y_train, test_f, data.y_test, args.readout_epochs or readout.epochs,
                            readout.batch_size, readout.lr, progress=False, feature_fn=feature_fn)
    row = {"synapse": spec, "readout_epochs": args.readout_epochs, "static_reads": static_reads,
           "readout_reads": "fresh" if fresh_reads else "one",
           "test_acc": history[-1]["test_acc"], "pulses": sum(int(d.pulses) for d in devices),
           "clipped_at_attach": sum(int(d.clipped) for d in devices), "train_s": time.perf_counter() - t, "drift": {}}
    if static_reads:  # every later read returns the same weights, so the same accuracy
        row["drift"] = {label: {"raw": row["test_acc"], "compensated": row["test_acc"]} for label in DRIFT_TIMES}
        print(json.dumps(row), flush=True)
        return row
    compensations = [hardware_models.GlobalDriftCompensation(d) for d in devices]
    for c in compensations:
        c.calibrate()
    elapsed = 0.0
    for label, seconds in DRIFT_TIMES.items():
        for dev in devices:
            dev.age(seconds - elapsed)
        elapsed = seconds
        accs = {}
        for compensated in (False, True):
            for block, dev, comp in zip(net.blocks, devices, compensations):
                block.conv.weight.copy_(comp.read() if compensated else dev.read())
            test_f = extract_features(net, data.x_test, progress=False)
            accs["compensated" if compensated else "raw"] = accuracy(net.head, test_f, data.y_test)
        row["drift"][label] = accs
    print(json.dumps(row), flush=True)
    return row


def previous_rows(path: Path, meta: dict) -> list[dict]:
    """The rows of an earlier sweep into the same directory, which must be the same experiment.

    A sweep never drops a row it finds: rerunning with other ``--synapses`` or readout settings adds to the
    file. Another preset, seed or data size in the same directory is refused rather than mixed or overwritten.
    Files written before the seed was recorded count as seed 0.
    """
    if not path.exists():
        return []
    try:
        previous = json.loads(path.read_text())
        found = {k: previous.get(k, 0 if k == "seed" else None) for k in meta}
        rows = list(previous["rows"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise SystemExit(f"{path} is not a device sweep's results file ({e}); move it or choose another --out")
    if found != meta:
        raise SystemExit(f"{path} holds another experiment ({found}, this one is {meta}); choose another --out")
    return rows


def _same_readout(row: dict, args) -> bool:
    """A row answers this run if its readout had the same epochs and, where reads vary, the same read mode."""
    return (row.get("readout_epochs") == args.readout_epochs
            and (row.get("static_reads") or row.get("readout_reads", "one") == args.readout_reads))


def _measurement(row: dict) -> tuple:
    """What a row measured: the model and its readout (two rows with the same key repeat one measurement)."""
    return row["synapse"], row.get("readout_epochs"), row.get("readout_reads", "one")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="mnist")
    ap.add_argument("--layers", type=int)
    ap.add_argument("--synapses", nargs="+", default=DEFAULT_SYNAPSES)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-train", type=int)
    ap.add_argument("--n-test", type=int)
    ap.add_argument("--readout-epochs", type=int)
    ap.add_argument("--readout-reads", choices=["one", "fresh"], default="one",
                    help="train the readout on the features of the last read of the devices (one) or of a fresh "
                         "read for every batch (fresh: noise-aware, for devices with read noise)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--merge", nargs="+", default=[], metavar="DIR",
                    help="take in the rows of sweeps of the same experiment written to other directories "
                         "(one process per core, merged afterwards); rows already in --out win")
    args = ap.parse_args(argv)
    missing = [d for d in args.merge if not (Path(d) / "devices.json").is_file()]
    if missing:  # checked before the data load, so a mistyped directory fails at once instead of merging nothing
        raise SystemExit(f"--merge: no devices.json in {', '.join(missing)}")
    configure_cpu()
    preset = load_preset(args.preset, args.layers)
    data = load_dataset(preset.dataset, image_size=preset.image_size,
                        unlabeled=preset.unsupervised.split == "unlabeled").subset(args.n_train, args.n_test)
    check_dataset(data, preset)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"preset": preset.name, "seed": args.seed, "n_train": len(data.x_train), "n_test": len(data.x_test)}
    kept = previous_rows(out / "devices.json", meta)
    for other in args.merge:
        measured = {_measurement(r) for r in kept}
        kept += [r for r in previous_rows(Path(other) / "devices.json", meta) if _measurement(r) not in measured]
    rows = []
    for spec in args.synapses:
        match = next((r for r in kept if r["synapse"] == spec and _same_readout(r, args)), None)
        if match is not None:
            print(f"{spec}: already in {out / 'devices.json'}", flush=True)
            kept.remove(match)
            rows.append(match)
        else:
            rows.append(evaluate_synapse(spec, preset, data, args))
        # rows measured earlier with other models or readouts stay in the file, after this run's
        write_json(out / "devices.json", {**meta, "rows": rows + kept})
    rows += kept
    header = ("| synapse | readout epochs | readout reads | test acc % | " + " | ".join(f"{k} raw / comp." for k in DRIFT_TIMES)
              + " | pulses | clipped at attach |")
    lines = [header, "|" + "---|" * (6 + len(DRIFT_TIMES))]
    for r in rows:
        drift = " | ".join(f"{100 * r['drift'][k]['raw']:.2f} / {100 * r['drift'][k]['compensated']:.2f}"
                           for k in DRIFT_TIMES)
        lines.append(f"| {r['synapse']} | {r.get('readout_epochs') or 'preset'} | {r.get('readout_reads', 'one')} | {100 * r['test_acc']:.2f} | {drift} | "
                     f"{r['pulses']:.3g} | {r.get('clipped_at_attach', 0)} |")
    atomic_write(out / "devices.md", lambda tmp: Path(tmp).write_text("\n".join(lines) + "\n"))
    print("\n".join(lines))
    write_figures(out, preset.name, [r for r in rows if _same_readout(r, args)])  # rows of this run's readout


def _save(fig, ax, path: Path, title: str, xlabel: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))


def write_figures(out: Path, name: str, rows: list[dict]) -> None:
    """``devices_drift.png`` (when some device's reads change): accuracy against time after programming,
    raw (solid) and drift-compensated (dashed), for those devices, with the float row as reference.
    ``devices_states.png`` (when linear devices were swept): accuracy against the number of states, one
    line per range and rounding, with the float row and its 1-point band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ideal = next((r for r in rows if r["synapse"] == "ideal"), None)
    drifting = [r for r in rows if not r.get("static_reads")]
    if drifting:
        _drift_figure(out, name, drifting, ideal, plt)
    _states_figure(out, name, rows, ideal, plt)


def _drift_figure(out: Path, name: str, rows: list[dict], ideal: dict | None, plt) -> None:
    times = list(DRIFT_TIMES.values())
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if ideal is not None:
        ax.axhline(100 * ideal["test_acc"], color="k", ls=":", lw=1, label="ideal (float)")
    for r in rows:
        line, = ax.plot([times[0] / 100] + times, [100 * r["test_acc"]] + [100 * r["drift"][k]["raw"] for k in DRIFT_TIMES],
                        "o-", label=f"{r['synapse']}, raw")
        ax.plot(times, [100 * r["drift"][k]["compensated"] for k in DRIFT_TIMES], "s--", color=line.get_color(),
                label=f"{r['synapse']}, compensated")
    ax.set_xscale("log")
    ax.set_xticks([times[0] / 100] + times, ["prog."] + list(DRIFT_TIMES))
    _save(fig, ax, out / "devices_drift.png", f"{name}: accuracy after drift", "time after programming")
    plt.close(fig)


def _states_figure(out: Path, name: str, rows: list[dict], ideal: dict | None, plt) -> None:
    lines_by_options: dict[str, list] = {}
    for r in rows:
        model, _, options = r["synapse"].partition(":")
        if model.startswith("linear"):
            levels = hardware_models.make_synapse(r["synapse"]).levels
            lines_by_options.setdefault(options, []).append((levels, 100 * r["test_acc"]))
    if not lines_by_options:
        return
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for options, points in sorted(lines_by_options.items()):
        points.sort()
        ax.plot([n for n, _ in points], [a for _, a in points], "o-", label="linear N states" + (f" ({options})" if options else ""))
    if ideal is not None:
        ax.axhline(100 * ideal["test_acc"], color="k", ls="--", lw=1, label="ideal (float)")
        ax.axhspan(100 * ideal["test_acc"] - 1, 100 * ideal["test_acc"], color="k", alpha=0.08, label="within 1 point")
    ax.set_xscale("log", base=2)
    levels = sorted({n for points in lines_by_options.values() for n, _ in points})
    ax.set_xticks(levels, [str(n) for n in levels])
    _save(fig, ax, out / "devices_states.png", f"{name}: accuracy against device resolution", "states per device")
    plt.close(fig)


if __name__ == "__main__":
    main()
