"""The unsupervised batch against accuracy on CIFAR-10: how far data parallelism can grow the batch.

    python -m experiments.batch_study --layers 1 --batches 10 20 40 80 160 --seeds 0 --out results/batch_study

Each row is one ``softhebb train`` run (:func:`rate_decoder.run.run`) of the preset at ``--layers``
with its unsupervised batch replaced and the Hebbian rates scaled by ``--lr-scaling``
(:func:`rate_decoder.config.with_unsupervised_batch`), the preset's 50-epoch readout, one process.
A finished run is skipped when the command is run again (its ``metrics.json`` is read back), an
interrupted one resumed. Prints and writes ``table.json``: test accuracy and time per run, and the
largest batch within 0.5 point of the preset's batch (seed against seed).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from rate_decoder import load_preset, run
from rate_decoder.config import LR_SCALINGS, RunConfig, with_unsupervised_batch
from rate_decoder.run import write_json


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cifar10")
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--batches", type=int, nargs="+", default=[10, 20, 40, 80, 160])
    ap.add_argument("--lr-scaling", choices=LR_SCALINGS, default="sqrt")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if any(b < 1 for b in args.batches):
        ap.error("--batches must be >= 1")
    out = Path(args.out)
    base = load_preset(args.preset, args.layers)
    rows = []
    for seed in args.seeds:
        for batch in args.batches:
            preset = with_unsupervised_batch(base, batch, args.lr_scaling)
            directory = out / f"{preset.name}_s{seed}"
            if (directory / "metrics.json").exists():
                metrics = json.loads((directory / "metrics.json").read_text())
            else:
                metrics = run(RunConfig(preset, seed=seed), directory, resume=(directory / "checkpoint.pt").exists(),
                              device="cpu", progress=False)
            rows.append({"batch": batch, "seed": seed, "lr_scaling": args.lr_scaling, "layers": args.layers,
                         "lr": [layer.lr for layer in preset.layers], "test_acc": metrics["test_acc"],
                         "minutes": sum(v for k, v in metrics["timings_s"].items() if k != "this_invocation_s") / 60})
            print(json.dumps(rows[-1]), flush=True)
    reference = {r["seed"]: r["test_acc"] for r in rows if r["batch"] == base.unsupervised.batch_size}
    within = [r["batch"] for r in rows if r["seed"] in reference and r["test_acc"] >= reference[r["seed"]] - 0.005]
    largest = max(within) if within else None
    write_json(out / f"table_{args.layers}layer_{args.lr_scaling}.json", {"rows": rows, "largest_within_half_point": largest})
    print(f"largest batch within 0.5 point of batch {base.unsupervised.batch_size}: {largest}")


if __name__ == "__main__":
    main()
