"""Neuron norms over the unsupervised epoch, for each update normalisation: how fast each one learns.

    python -m experiments.norm_trajectory --preset cifar10 --layers 1 --out results/norm_trajectory \\
        --normalisations global fixed neuron neuron-calibrated modulated peak rms homeostatic

Each normalisation trains the preset's first layer for its one epoch (greedy, seed ``--seed``, the same
batches for all), and every ``--every`` batches the L2 norms of its neurons are summarised: minimum,
10 %, median, 90 % and maximum, as ``experiments.weight_stats`` does for the end of a run. The
paper's rule drives the norms from the initial 25 towards 1 (its rate vanishes at norm 1); a gain that
lets the steps shrink too much leaves them high. Writes ``trajectory.json`` (resumable: normalisations
already there are kept), ``trajectory.md`` (median [10 %, 90 %] at five points of the epoch) and
``trajectory.png``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from rate_decoder import SoftHebbNet, configure_cpu, load_dataset, load_preset, rules
from rate_decoder.run import write_json
from rate_decoder.unsupervised import learn_step, train_unsupervised

QUANTILES = (0.0, 0.1, 0.5, 0.9, 1.0)


def trajectory(preset, images, normalisation: str, every: int, seed: int) -> dict:
    """Norm quantiles of the first layer every ``every`` batches of its epoch (and before the first)."""
    torch.manual_seed(seed)
    net = SoftHebbNet(preset, normalisation=normalisation)
    conv = net.blocks[0].conv
    batches, rows = [], []

    def record(k):
        batches.append(k)
        rows.append(torch.quantile(rules.neuron_norms(conv.weight.detach()).double(),
                                   torch.tensor(QUANTILES, dtype=torch.float64)).tolist())

    count = [0]

    def step(block, x, output=True):
        if count[0] % every == 0:
            record(count[0])
        count[0] += 1
        return learn_step(block, x, output)

    train_unsupervised(net, images, "greedy", preset.unsupervised.batch_size, seed, progress=False, step=step)
    record(count[0])
    return {"batches": batches, "quantiles": dict(zip(map(str, QUANTILES), np.array(rows).T.tolist()))}


def table(report: dict) -> str:
    lines = ["| normalisation | " + " | ".join(f"{int(100 * f)} % of the epoch" for f in (0, 0.1, 0.25, 0.5, 1.0)) + " |",
             "|---|" + "---|" * 5]
    for name, t in report["normalisations"].items():
        n = t["batches"][-1]
        cells = []
        for f in (0, 0.1, 0.25, 0.5, 1.0):
            i = int(np.argmin(np.abs(np.array(t["batches"]) - f * n)))
            q = {k: v[i] for k, v in t["quantiles"].items()}
            cells.append(f"{q['0.5']:.2f} [{q['0.1']:.2f}, {q['0.9']:.2f}]")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, t in report["normalisations"].items():
        q, b = t["quantiles"], np.array(t["batches"])
        line, = ax.plot(b, q["0.5"], label=name)
        ax.fill_between(b, q["0.1"], q["0.9"], color=line.get_color(), alpha=0.12)
    ax.set_yscale("log")
    ax.set_xlabel("batch of the unsupervised epoch")
    ax.set_ylabel("neuron norm (median, 10-90 % band)")
    ax.set_title(f"{report['preset']}, layer 1, seed {report['seed']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cifar10")
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--normalisations", nargs="+", default=["global", "homeostatic"], choices=rules.NORMALISATIONS)
    ap.add_argument("--every", type=int, default=100, help="batches between two records")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if args.every < 1:
        ap.error("--every must be >= 1")
    configure_cpu()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "trajectory.json"
    report = json.loads(path.read_text()) if path.exists() else {}
    if report and (report["preset"], report["seed"]) != (args.preset, args.seed):
        raise SystemExit(f"{path} holds preset {report['preset']!r}, seed {report['seed']}: use another --out")
    report = report or {"preset": args.preset, "seed": args.seed, "normalisations": {}}
    preset = load_preset(args.preset, args.layers)
    images = load_dataset(preset.dataset).x_train
    for name in args.normalisations:
        if name in report["normalisations"]:
            continue
        start = time.perf_counter()
        report["normalisations"][name] = trajectory(preset, images, name, args.every, args.seed)
        print(f"{name}: {time.perf_counter() - start:.0f} s, final median norm "
              f"{report['normalisations'][name]['quantiles']['0.5'][-1]:.2f}", flush=True)
        write_json(path, report)
    (out / "trajectory.md").write_text(table(report))
    plot(report, out / "trajectory.png")
    return report


if __name__ == "__main__":
    main()
