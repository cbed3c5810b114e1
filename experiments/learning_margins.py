"""SoftHebb against random weights on a CIFAR-10 subset, per seed: the figures behind ``tests/test_learning.py``.

    python -m experiments.learning_margins --seeds 0 1 2 --out results/learning_margins

Each configuration of the test (first 5,000 training and 2,000 test images, 20 readout epochs) is run
for SoftHebb and for the random-weight baseline at every seed; the table of accuracies and gaps is
printed and written to ``<out>/margins.json``. Finished runs are reused.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from rate_decoder import RunConfig, load_preset, run
from rate_decoder.run import write_json

N_TRAIN, N_TEST, READOUT_EPOCHS = 5000, 2000, 20
#: (name, layers, mode, synapse) of each test; 2-layer networks at half width keep the test short
CASES = [("1 layer", 1, "greedy", None), ("1 layer, linear device, 64 states", 1, "greedy", "linear64:w_max_unit=12"),
         ("2 layers, half width", 2, "greedy", None), ("2 layers, half width, consecutive", 2, "consecutive", None)]


def subset_accuracy(layers: int, rule: str, mode: str, synapse: str | None, seed: int, out: Path) -> float:
    """Test accuracy of one run on the subset (read back if ``out`` already holds it)."""
    if (out / "metrics.json").exists():
        return json.loads((out / "metrics.json").read_text())["test_acc"]
    preset = load_preset("cifar10", layers, width_factor=1.0 if layers == 1 else 0.5)
    config = RunConfig(preset, rule=rule, mode=mode, seed=seed, n_train=N_TRAIN, n_test=N_TEST,
                       readout_epochs=READOUT_EPOCHS, synapse=synapse)
    return run(config, out, resume=(out / "checkpoint.pt").exists(), progress=False)["test_acc"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default="results/learning_margins")
    args = ap.parse_args(argv)
    out, rows = Path(args.out), []
    for name, layers, mode, synapse in CASES:
        for seed in args.seeds:
            learnt = subset_accuracy(layers, "softhebb", mode, synapse, seed, out / f"L{layers}_{mode}_{synapse}_s{seed}")
            random = subset_accuracy(layers, "random", mode, None, seed, out / f"L{layers}_{mode}_random_s{seed}")
            rows.append({"case": name, "seed": seed, "softhebb": learnt, "random": random, "gap": learnt - random})
            print(f"{name:36s} seed {seed}: SoftHebb {100 * learnt:.2f} %, random {100 * random:.2f} %, "
                  f"gap {100 * (learnt - random):+.2f}", flush=True)
    write_json(out / "margins.json", rows)


if __name__ == "__main__":
    main()
