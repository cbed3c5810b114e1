"""The paper's accuracy table on this machine: one command, runs skipped when already finished.

    python -m experiments.paper_table --set cifar10-depth   # SoftHebb and random weights at depth 1, 2, 3
    python -m experiments.paper_table --set baselines       # hard WTA at depth 1 and 3 (and in the reference
                                                            # code's own geometry, cifar10-4hard), backprop at depth 3
    python -m experiments.paper_table --set mnist           # MNIST, 3 layers
    python -m experiments.paper_table --set local-rule      # the local variant (fixed gain, no per-batch max)

Each configuration is a normal run directory under ``--runs`` (so an interrupted sweep resumes);
the table of finished runs is written to ``<runs>/paper_table.md`` and ``.json``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from rate_decoder.config import RunConfig, load_preset
from rate_decoder.run import CheckpointError, run, write_json

# (dataset preset, layers, rule, normalisation, paper figure or None)
SETS = {
    "cifar10-depth": [("cifar10", 1, "softhebb", "global", 71.1), ("cifar10", 1, "random", "global", 63.93),
                      ("cifar10", 2, "softhebb", "global", 77.7), ("cifar10", 2, "random", "global", None),
                      ("cifar10", 3, "softhebb", "global", 80.31), ("cifar10", 3, "random", "global", None)],
    "baselines": [("cifar10", 1, "hardwta", "global", 62.69), ("cifar10", 3, "hardwta", "global", None),
                  ("cifar10-4hard", 3, "hardwta", "global", None), ("cifar10", 3, "backprop", "global", 83.97)],
    "mnist": [("mnist", 3, "softhebb", "global", 99.35)],
    "local-rule": [("mnist", 1, "softhebb", "global", None), ("mnist", 1, "softhebb", "fixed", None),
                   ("cifar10", 1, "softhebb", "fixed", None), ("mnist", 3, "softhebb", "fixed", None),
                   ("cifar10", 3, "softhebb", "fixed", None)],
}


def run_name(preset: str, layers: int, rule: str, normalisation: str, seed: int) -> str:
    return f"{preset}_L{layers}_{rule}" + ("" if normalisation == "global" else f"_{normalisation}") + f"_s{seed}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--set", choices=sorted(SETS) + ["all"], default="cifar10-depth")
    ap.add_argument("--runs", default="runs", help="directory holding one run directory per configuration")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default=None)
    ap.add_argument("--readout-epochs", type=int, help="override (for a quick look; the paper uses 50)")
    ap.add_argument("--rules", nargs="+", help="only the configurations with these rules (e.g. hardwta)")
    ap.add_argument("--table-only", action="store_true", help="only collect finished runs into the table")
    args = ap.parse_args(argv)
    runs = Path(args.runs)
    configs = [c for name in (SETS if args.set == "all" else [args.set]) for c in SETS[name]
               if args.rules is None or c[2] in args.rules]
    if not args.table_only:
        for preset, layers, rule, normalisation, _ in configs:
            out = runs / run_name(preset, layers, rule, normalisation, args.seed)
            if (out / "metrics.json").exists():
                continue
            config = RunConfig(load_preset(preset, layers), rule=rule, mode="greedy", seed=args.seed,
                               normalisation=normalisation, readout_epochs=args.readout_epochs)
            print(f"== {out.name}", flush=True)
            try:
                run(config, out, resume=(out / "checkpoint.pt").exists(), device=args.device)
            except CheckpointError as err:
                print(f"skipping {out.name}: {err}")
    rows = []
    for name in sorted(SETS):
        for preset, layers, rule, normalisation, paper in SETS[name]:
            out = runs / run_name(preset, layers, rule, normalisation, args.seed)
            if not (out / "metrics.json").exists():
                continue
            m = json.loads((out / "metrics.json").read_text())
            rows.append({"run": out.name, "preset": preset, "layers": layers, "rule": rule,
                         "normalisation": normalisation, "test_acc": round(100 * m["test_acc"], 2),
                         "paper": paper, "wall_min": round(sum(v for k, v in m["timings_s"].items()
                                                                if k != "this_invocation_s") / 60, 1),
                         "readout_epochs": len(m["history"])})
    lines = ["| run | test acc % | paper % | readout epochs | compute min |", "|---|---|---|---|---|"]
    lines += [f"| {r['run']} | {r['test_acc']:.2f} | {r['paper'] if r['paper'] is not None else '-'} | "
              f"{r['readout_epochs']} | {r['wall_min']} |" for r in rows]
    runs.mkdir(parents=True, exist_ok=True)
    (runs / "paper_table.md").write_text("\n".join(lines) + "\n")
    write_json(runs / "paper_table.json", rows)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
