"""The norm-dependent learning rate against a linear schedule (the paper's Fig. B.3) on its fully connected MNIST net.

    python -m experiments.adaptive_lr --figure radius --seeds 0 1 2 --out results/adaptive_lr
    python -m experiments.adaptive_lr --figure convergence --seeds 0 --out results/adaptive_lr

The network is the reference code's ``2SoftMlpMNIST`` (docs/algorithm.md §8): a
:class:`~rate_decoder.layers.SoftHebbLinear` of 784 -> 2000 neurons (plain ``soft`` rule, t = 12,
eta = 0.045, q = 0.2, positive initial weights of radius R), the forward activation softmax(5 u), and a
linear head 2000 -> 10 trained by Adam (lr 1e-3, batch 32). Pixels in [0, 1], no batch norm. Two
schedules of the Hebbian rate (``--schedules``):

- ``adaptive``: the paper's eta_k = eta |norm(w_k) - 1|^q, constant eta;
- ``linear``: eta_k = eta for every neuron, eta decaying linearly from 0.045 to 0 over the epoch
  (0.045 * 32 / 60000 per step): the reference code's ``v0`` scheduler (``2SoftMlpMNIST_linearDecay``).

Figures (``--figure``), each a table and a plot in ``--out``:

- ``radius`` (Fig. B.3A): one unsupervised epoch (batch 32), then the head on the frozen features for
  10 epochs; test accuracy against the initial radius R = 1.25^(x - 10) for ``--x`` (0..26 in the paper).
- ``convergence`` (Fig. B.3B), in the paper's hybrid mode: every batch of the supervised loader
  (batch 32) first gives the head an Adam step on the features of the weights before the update, then
  the Hebbian update. Every ``--every`` steps: the share of R1 neurons (:func:`experiments.paper_figures.r1_fraction`) and the
  test accuracy of the head as it is; ``--radius`` sets R (default the preset's 35).

Results are kept in ``results.json`` in ``--out``, one entry per (figure, schedule, R, seed): a finished
entry is not run again, so the command can be stopped and rerun.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from experiments.paper_figures import r1_fraction
from rate_decoder import configure_cpu, load_dataset, rules
from rate_decoder.layers import SoftHebbLinear
from rate_decoder.run import cpu_model, write_json

HIDDEN, INVERSE_TEMPERATURE, LR, LR_POWER, FORWARD_T = 2000, 12.0, 0.045, 0.2, 5.0
BATCH, HEAD_LR, HEAD_EPOCHS = 32, 1e-3, 10
SCHEDULES = ("adaptive", "linear")


def mnist_flat(n_train: int | None = None):
    data = load_dataset("mnist")
    x_train = data.x_train[:n_train].flatten(1).float() / 255
    return x_train, data.y_train[:n_train], data.x_test.flatten(1).float() / 255, data.y_test


def hidden_layer(radius: float, schedule: str, seed: int) -> SoftHebbLinear:
    layer = SoftHebbLinear(784, HIDDEN, INVERSE_TEMPERATURE, LR, LR_POWER if schedule == "adaptive" else 0.0,
                           rule="soft", radius=radius)
    layer.reset_parameters(torch.Generator().manual_seed(seed))
    return layer


def features(layer: SoftHebbLinear, x: torch.Tensor) -> torch.Tensor:
    return rules.soft_wta(layer(x), FORWARD_T, dim=-1)


def r1_share(layer: SoftHebbLinear) -> float:
    return r1_fraction(rules.neuron_norms(layer.weight))


def set_rate(layer: SoftHebbLinear, schedule: str, step: int, steps: int) -> None:
    """The linear schedule's eta at ``step`` of ``steps`` (the adaptive one keeps eta)."""
    if schedule == "linear":
        layer.lr = LR * max(0.0, 1.0 - step / steps)


def test_accuracy(layer, head, x_test, y_test) -> float:
    with torch.no_grad():
        return float((head(features(layer, x_test)).argmax(1) == y_test).double().mean())


def radius_point(radius: float, schedule: str, seed: int, data) -> dict:
    """One unsupervised epoch, then the head trained on the frozen features; the test accuracy."""
    x_train, y_train, x_test, y_test = data
    layer = hidden_layer(radius, schedule, seed)
    order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(seed))
    steps = (len(order) + BATCH - 1) // BATCH
    for k in range(steps):
        set_rate(layer, schedule, k, steps)
        layer.hebbian_step(x_train[order[k * BATCH:(k + 1) * BATCH]])
    with torch.no_grad():
        f_train = features(layer, x_train)
    torch.manual_seed(seed)
    head = torch.nn.Linear(HIDDEN, 10)
    optimizer = torch.optim.Adam(head.parameters(), lr=HEAD_LR)
    for _ in range(HEAD_EPOCHS):
        for idx in torch.randperm(len(f_train)).split(BATCH):
            loss = F.cross_entropy(head(f_train[idx]), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return {"test_acc": test_accuracy(layer, head, x_test, y_test), "r1_share": r1_share(layer)}


def convergence_point(radius: float, schedule: str, seed: int, data, every: int) -> dict:
    """Hybrid mode for one epoch: each batch gives the head a step, then the Hebbian layer its update."""
    x_train, y_train, x_test, y_test = data
    layer = hidden_layer(radius, schedule, seed)
    torch.manual_seed(seed)
    head = torch.nn.Linear(HIDDEN, 10)
    optimizer = torch.optim.Adam(head.parameters(), lr=HEAD_LR)
    order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(seed))
    steps = (len(order) + BATCH - 1) // BATCH
    curve = []
    for k in range(steps):
        if k % every == 0:
            curve.append({"step": k, "r1_share": r1_share(layer), "test_acc": test_accuracy(layer, head, x_test, y_test)})
        idx = order[k * BATCH:(k + 1) * BATCH]
        with torch.no_grad():
            f = features(layer, x_train[idx])
        loss = F.cross_entropy(head(f), y_train[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        set_rate(layer, schedule, k, steps)
        layer.hebbian_step(x_train[idx])
    curve.append({"step": steps, "r1_share": r1_share(layer), "test_acc": test_accuracy(layer, head, x_test, y_test)})
    return {"curve": curve, "test_acc": curve[-1]["test_acc"], "r1_share": curve[-1]["r1_share"]}


def plot(figure: str, results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for schedule in SCHEDULES:
        entries = [v for v in results.values() if v["figure"] == figure and v["schedule"] == schedule]
        if figure == "radius":
            radii = sorted({e["radius"] for e in entries})
            mean = [100 * np.mean([e["test_acc"] for e in entries if e["radius"] == r]) for r in radii]
            ax.semilogx(radii, mean, "o-", label=schedule)
            ax.set_xlabel("initial radius R")
            ax.set_ylabel("test accuracy (%)")
        else:
            for e in entries:
                ax.plot([c["step"] for c in e["curve"]], [100 * c["r1_share"] for c in e["curve"]],
                        label=f"{schedule}, R {e['radius']:.3g}, seed {e['seed']}")
            ax.set_xlabel("training step (batch 32)")
            ax.set_ylabel("R1 neurons (%)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--figure", choices=("radius", "convergence"), required=True)
    ap.add_argument("--schedules", nargs="+", choices=SCHEDULES, default=list(SCHEDULES))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--x", type=int, nargs="+", default=list(range(0, 27, 2)),
                    help="radius: R = 1.25^(x - 10) (the paper: 0..26)")
    ap.add_argument("--radius", type=float, default=35.0, help="convergence: the initial radius (the preset's 35)")
    ap.add_argument("--every", type=int, default=50, help="convergence: steps between measurements")
    ap.add_argument("--n-train", type=int, help="quick look: the first N training images (the figures use 60,000)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if args.every < 1:
        ap.error("--every must be >= 1")
    configure_cpu()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    data = mnist_flat(args.n_train)
    if args.radius <= 0:
        ap.error("--radius must be positive")
    radii = [1.25 ** (x - 10) for x in args.x] if args.figure == "radius" else [args.radius]
    for schedule in args.schedules:
        for radius in radii:
            for seed in args.seeds:
                key = f"{args.figure}/{schedule}/R{radius:.4g}/s{seed}/n{len(data[0])}"
                if key in results:
                    continue
                start = time.perf_counter()
                if args.figure == "radius":
                    entry = radius_point(radius, schedule, seed, data)
                else:
                    entry = convergence_point(radius, schedule, seed, data, args.every)
                results[key] = {"figure": args.figure, "schedule": schedule, "radius": radius, "seed": seed,
                                "n_train": len(data[0]), "seconds": time.perf_counter() - start,
                                "cpu": cpu_model(), **entry}
                write_json(path, results)
                print(key, f"test {100 * entry['test_acc']:.2f} %, R1 {100 * entry['r1_share']:.1f} %, "
                           f"{results[key]['seconds']:.0f} s", flush=True)
    plot(args.figure, results, out / f"{args.figure}.png")


if __name__ == "__main__":
    main()
