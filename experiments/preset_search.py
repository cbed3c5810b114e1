"""A search for a one-epoch CIFAR-10 SoftHebb network above 81.5 %, with the paper's own levers.

    python -m experiments.preset_search --seeds 0 1 --points l3-w3072 --precision bf16 --runs results/preset_search

Each candidate of :data:`CANDIDATES` is the ``cifar10`` preset (3 layers, 96-384-1536) with some of its
layers' fields changed: width, softmax temperature, learning rate, pooling. Every run is the preset's
protocol: one greedy unsupervised epoch and the 50-epoch linear readout
(:func:`experiments.paper_figures.run_point`: a finished run is read back, an interrupted one resumed).
``--precision bf16`` runs the Hebbian products in bfloat16, which keeps the accuracy within the seed
spread on CIFAR-10 (docs/performance.md) at half the time. Writes ``table.md`` and ``table.json`` under
``<runs>/preset_search_<precision>``: every finished candidate, its changes, the mean and spread over
seeds and the minutes of each run; docs/paper_figures.md keeps the table of what was tried.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from rate_decoder.config import Preset, load_preset
from rate_decoder.run import write_json

from .paper_figures import run_point, table

#: label -> {layer index (0-based): {field: value}}; "preset" is the paper's network itself
CANDIDATES: dict[str, dict[int, dict]] = {
    "preset": {},
    "l3-avg4": {2: {"pool": "avg_4_2_1"}},             # overlapping average pooling before the readout
    "l3-w2048": {2: {"out_channels": 2048}},
    "l3-w3072": {2: {"out_channels": 3072}},           # the layer the readout sees, twice as wide
    "l2-w768": {1: {"out_channels": 768}},
    "l3-t0.35": {2: {"inverse_temperature": 0.35}},
    "l3-t0.18": {2: {"inverse_temperature": 0.18}},
    "l3-lr0.02": {2: {"lr": 0.02}},
}


def candidate(base: Preset, label: str) -> Preset:
    """``base`` with the changes of ``CANDIDATES[label]``, renamed ``<name>-<label>``."""
    if label not in CANDIDATES:
        raise ValueError(f"unknown candidate {label!r}; choose from {', '.join(CANDIDATES)}")
    changes = CANDIDATES[label]
    if any(i >= len(base.layers) for i in changes):
        raise ValueError(f"candidate {label!r} changes a layer that {base.name} does not have")
    layers = tuple(dataclasses.replace(layer, **changes.get(i, {})) for i, layer in enumerate(base.layers))
    return dataclasses.replace(base, name=f"{base.name}-{label}" if changes else base.name, layers=layers)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--points", nargs="+", choices=list(CANDIDATES), help="run these (default: all); the table holds every finished one")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="bf16")
    ap.add_argument("--runs", required=True)
    ap.add_argument("--device", default=None)
    args = ap.parse_args(argv)
    base = load_preset("cifar10")
    out = Path(args.runs) / f"preset_search_{args.precision}"
    rows = []
    for label in CANDIDATES:
        preset = candidate(base, label)
        row = {"label": label, "paper": 80.31 if label == "preset" else None, "changes": CANDIDATES[label],
               "preset": preset.to_dict(), "seeds": {}}
        for seed in args.seeds:
            directory = out / f"{label}_s{seed}"
            if args.points is None or label in args.points or (directory / "metrics.json").exists():
                row["seeds"][seed] = run_point(directory, preset, seed, args.device, precision=args.precision)
                print(json.dumps({"point": label, "seed": seed, **row["seeds"][seed]}), flush=True)
        if row["seeds"]:
            rows.append(row)
    write_json(out / "table.json", rows)
    (out / "table.md").write_text(table(rows))
    print(table(rows))


if __name__ == "__main__":
    main()
