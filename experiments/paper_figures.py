"""The paper's ablations on CIFAR-10, one command per figure: each writes a table and a plot.

    python -m experiments.paper_figures --figure temperature --layers 1 --seeds 0 1 --runs results/paper_figures
    python -m experiments.paper_figures --figure temperature --layers 3 --seeds 0
    python -m experiments.paper_figures --figure activations --seeds 0 1
    python -m experiments.paper_figures --figure width --layers 3 --seeds 0
    python -m experiments.paper_figures --figure first-width --layers 2 --seeds 0

Figures (``--figure``):

- ``temperature`` (Fig. B.1 at 1 layer, B.2 at 3): test accuracy and the share of R1 features against
  the softmax temperature tau = 1/t, every layer at the same tau. An R1 feature is a neuron whose
  weight norm has converged to 1 (|norm - 1| <= :data:`R1_TOLERANCE`; at the end of a run the norms
  are either within 0.05 of 1 or above 2, so the tolerance does not decide the count).
- ``activations`` (Appendix B.3): the 3-layer network with every block's activation replaced: ReLU,
  tanh, RePU (power 0.7), softmax (t = 4) and the preset's RePU of Triangle (the paper's values beside).
- ``width`` (Fig. 4): layer-wise accuracy (depth 1 to ``--layers``) for the width factors 1, 2 and 4:
  layer ``l`` has ``96 f^(l-1)`` neurons (96-96-96, 96-192-384 and the preset's 96-384-1536), every
  other hyperparameter the preset's (the reference code's ``_wf1``/``_wf2`` presets; the paper tuned
  each factor, so its factors 1 and 2 may score higher than these).
- ``first-width`` (Fig. B.4): the first layer's width at 48, 96, 192 and 384 with the factor kept at
  4 (every layer scaled by ``w / 96``), at ``--layers`` depth, hyperparameters untouched (as the paper).

Each configuration is one ``softhebb train`` run (:func:`rate_decoder.run.run`, greedy, the preset's
50-epoch readout) in ``<runs>/<figure>_<preset>_L<layers>/<label>_s<seed>``: a finished run is read back, an interrupted
one resumed, so the command can be stopped and run again. The table gives the mean over seeds and
their spread (max - min), the R1 share, and the minutes of each run with the CPU it ran on.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from rate_decoder.config import Preset, RunConfig, load_preset
from rate_decoder.run import run, write_json

#: a neuron is an R1 feature when its weight norm is within this of 1
R1_TOLERANCE = 0.1
#: inverse temperatures t of the temperature figure (tau = 1/t from 1/16 to 4)
INVERSE_TEMPERATURES = (16.0, 8.0, 4.0, 2.0, 1.0, 0.5, 0.25)
#: width factors of the width figure; first-layer widths of the first-width figure
WIDTH_FACTORS = (1, 2, 4)
FIRST_WIDTHS = (48, 96, 192, 384)
#: the paper's Appendix B.3 accuracies (%), 3 layers
PAPER_ACTIVATIONS = {"relu": 70.68, "tanh": 56.13, "repu": 79.08, "softmax": 54.05, "triangle": 80.31}


def with_layers(preset: Preset, label: str, **changes) -> Preset:
    """``preset`` with ``changes`` applied to every layer, renamed ``<name>-<label>``."""
    return dataclasses.replace(preset, name=f"{preset.name}-{label}",
                               layers=tuple(dataclasses.replace(layer, **changes) for layer in preset.layers))


def with_widths(preset: Preset, label: str, widths) -> Preset:
    """``preset`` with layer ``l`` given ``widths[l]`` neurons, renamed ``<name>-<label>``."""
    return dataclasses.replace(preset, name=f"{preset.name}-{label}",
                               layers=tuple(dataclasses.replace(layer, out_channels=int(w))
                                            for layer, w in zip(preset.layers, widths)))


def configurations(figure: str, layers: int, preset: str = "cifar10") -> list[tuple[str, Preset, float | None]]:
    """``(label, preset, paper's accuracy or None)`` for every point of ``figure``."""
    if figure == "width":
        first = load_preset(preset, 1).layers[0].out_channels
        return [(f"wf{f}_L{depth}", with_widths(load_preset(preset, depth), f"wf{f}",
                                                 [first * f ** i for i in range(depth)]), None)
                for depth in range(1, layers + 1) for f in WIDTH_FACTORS if depth > 1 or f == WIDTH_FACTORS[-1]]
    base = load_preset(preset, layers)
    if figure == "first-width":
        first = base.layers[0].out_channels
        return [(f"w{w}", load_preset(preset, layers, width_factor=w / first), None) for w in FIRST_WIDTHS]
    if figure == "temperature":
        return [(f"t{t:g}", with_layers(base, f"t{t:g}", inverse_temperature=t), None) for t in INVERSE_TEMPERATURES]
    if figure == "activations":
        variants = {"relu": {"activation": "relu"}, "tanh": {"activation": "tanh"},
                    "repu": {"activation": "repu", "activation_power": 0.7},
                    "softmax": {"activation": "softmax", "inverse_temperature": 4.0}}
        points = [(name, with_layers(base, name, **change), PAPER_ACTIVATIONS[name]) for name, change in variants.items()]
        return points + [("triangle", base, PAPER_ACTIVATIONS["triangle"])]
    raise ValueError(f"unknown figure {figure!r}")


def r1_fraction(norms: torch.Tensor) -> float:
    """The share of ``norms`` (neurons' weight norms) within :data:`R1_TOLERANCE` of 1: the R1 features."""
    return float(((norms - 1).abs() <= R1_TOLERANCE).double().mean())


def r1_share(checkpoint: Path) -> float:
    """:func:`r1_fraction` of all Hebbian neurons (every layer) of a run's checkpoint."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["net"]
    return r1_fraction(torch.cat([w.flatten(1).norm(dim=1) for name, w in state.items() if name.endswith("conv.weight")]))


def run_point(directory: Path, preset: Preset, seed: int, device, n_train: int | None = None,
              readout_epochs: int | None = None, precision: str = "fp32") -> dict:
    """One ``softhebb train`` run in ``directory`` (read back when finished, resumed when interrupted):
    test accuracy (%), R1 share, minutes and CPU."""
    if not (directory / "metrics.json").exists():
        config = RunConfig(preset, seed=seed, n_train=n_train, readout_epochs=readout_epochs, precision=precision)
        run(config, directory, resume=(directory / "checkpoint.pt").exists(), device=device, progress=False)
    metrics = json.loads((directory / "metrics.json").read_text())
    return {"test_acc": 100 * metrics["test_acc"], "r1_share": r1_share(directory / "checkpoint.pt"),
            "minutes": sum(v for k, v in metrics["timings_s"].items() if k != "this_invocation_s") / 60,
            "cpu": metrics.get("cpu")}


def table(rows: list[dict]) -> str:
    lines = ["| point | test acc % (mean) | spread | seeds | R1 share % | paper % | minutes per run |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        acc = [s["test_acc"] for s in r["seeds"].values()]
        r1 = np.mean([s["r1_share"] for s in r["seeds"].values()])
        minutes = ", ".join(f"{s['minutes']:.1f}" for s in r["seeds"].values())
        paper = "-" if r["paper"] is None else f"{r['paper']:.2f}"
        lines.append(f"| {r['label']} | {np.mean(acc):.2f} | {max(acc) - min(acc):.2f} | {len(acc)} | "
                     f"{100 * r1:.1f} | {paper} | {minutes} |")
    return "\n".join(lines) + "\n"


def plot(figure: str, rows: list[dict], path: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc = [np.mean([s["test_acc"] for s in r["seeds"].values()]) for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    if figure == "temperature":
        tau = [1 / r["preset"]["layers"][0]["inverse_temperature"] for r in rows]
        r1 = [100 * np.mean([s["r1_share"] for s in r["seeds"].values()]) for r in rows]
        ax.semilogx(tau, acc, "o-", label="test accuracy")
        ax.set_xlabel("softmax temperature tau = 1/t")
        twin = ax.twinx()
        twin.semilogx(tau, r1, "s--", color="tab:orange", label="R1 features")
        twin.set_ylabel("R1 features (%)")
        for axis in (ax, twin):  # the points' own temperatures as ticks, no overlapping minor labels
            axis.set_xticks(tau, [f"{t:g}" for t in tau])
            axis.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    elif figure == "width":
        for f in WIDTH_FACTORS:
            points = [(int(r["label"].split("_L")[1]), a) for r, a in zip(rows, acc)
                      if r["label"].startswith(f"wf{f}_") or (r["label"] == f"wf{WIDTH_FACTORS[-1]}_L1")]
            if points:
                ax.plot(*zip(*sorted(points)), "o-", label=f"width factor {f}")
        ax.set_xticks(sorted({int(r["label"].split("_L")[1]) for r in rows}))
        ax.set_xlabel("hidden layers")
        ax.legend()
    elif figure == "first-width":
        ax.semilogx([r["preset"]["layers"][0]["out_channels"] for r in rows], acc, "o-", base=2)
        ax.set_xlabel("first layer's width (factor 4)")
    else:
        x = np.arange(len(rows))
        ax.bar(x - 0.2, acc, 0.4, label="this code")
        ax.bar(x + 0.2, [r["paper"] or 0 for r in rows], 0.4, label="paper")
        ax.set_xticks(x, [r["label"] for r in rows])
        ax.legend()
    ax.set_ylabel("test accuracy (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--figure", choices=("temperature", "activations", "width", "first-width"), required=True)
    ap.add_argument("--layers", type=int, choices=(1, 2, 3), default=None,
                    help="depth (temperature: 1 or 3; activations: 3; width: the deepest)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--points", nargs="+", help="only these labels (e.g. t1 t4); the table holds every finished one")
    ap.add_argument("--runs", required=True)
    ap.add_argument("--preset", default="cifar10", help="the paper's figures are CIFAR-10's; another preset for a quick look")
    ap.add_argument("--n-train", type=int, help="quick look: the first N training images (the figures use all)")
    ap.add_argument("--readout-epochs", type=int, help="quick look: fewer readout epochs (the figures use 50)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                    help="dtype of the Hebbian products; bf16 points go to their own directory and table")
    args = ap.parse_args(argv)
    layers = args.layers or (3 if args.figure in ("activations", "width") and args.preset == "cifar10" else 1)
    out = Path(args.runs) / f"{args.figure}_{args.preset}_L{layers}{'' if args.precision == 'fp32' else '_bf16'}"
    rows = []
    for label, preset, paper in configurations(args.figure, layers, args.preset):
        row = {"label": label, "paper": paper, "preset": preset.to_dict(), "seeds": {}}
        for seed in args.seeds:
            directory = out / f"{label}_s{seed}"
            if args.points is None or label in args.points or (directory / "metrics.json").exists():
                row["seeds"][seed] = run_point(directory, preset, seed, args.device, args.n_train, args.readout_epochs,
                                               args.precision)
                print(json.dumps({"point": label, "seed": seed, **row["seeds"][seed]}), flush=True)
        if row["seeds"]:
            rows.append(row)
    write_json(out / "table.json", rows)
    (out / "table.md").write_text(table(rows))
    plot(args.figure, rows, out / "figure.png")
    print(table(rows))


if __name__ == "__main__":
    main()
