"""Data-parallel scaling on this CPU: N processes x 1 thread against 1 process x N threads, same cores.

    python -m experiments.scaling --preset cifar10 --images 1000 [--processes 2] [--out scaling.json]

Both run the greedy unsupervised epoch of the preset (every block in turn, the preset's global batch)
on the same images -- CIFAR-10's first training images when ``$SOFTHEBB_DATA`` holds them, else
random ones of the preset's shape -- and print images/s of the epoch and the ratio (the fastest of
``--repeats`` interleaved runs of each), overall and per block. The processes
are gloo ranks (:mod:`rate_decoder.distributed`), each taking its shard of every batch; the weights
of both runs are compared at the end (they agree up to summation order). For the ranks it also
prints, per block, the time rank 0 spends in all-reduce calls a step (wall-clock, waiting for the
other rank included, and the process's CPU time in them) and the bytes it sums: on a few cores the
all-reduce over gloo's loopback TCP costs CPU time the ranks' products then lack.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rate_decoder import SoftHebbNet, load_preset
from rate_decoder.data import data_dir, load_npz
from rate_decoder.distributed import Distributed, shutdown
from rate_decoder.network import configure_cpu
from rate_decoder.run import cpu_model, write_json
from rate_decoder.unsupervised import train_unsupervised


def images_for(preset, n: int) -> torch.Tensor:
    directory = data_dir()
    if preset.dataset == "cifar10" and directory is not None and (directory / "cifar10.npz").is_file():
        return load_npz(directory / "cifar10.npz").x_train[:n].clone()
    g = torch.Generator().manual_seed(0)
    s = preset.image_size
    return torch.randint(0, 256, (n, preset.in_channels, s, s), dtype=torch.uint8, generator=g)


@dataclass(frozen=True)
class _TimedDistributed(Distributed):
    """A :class:`Distributed` that adds each all-reduce's wall-clock and CPU seconds and bytes to ``spent``."""

    spent: dict = field(default_factory=lambda: {"wall": 0.0, "cpu": 0.0, "bytes": 0, "calls": 0})

    def all_reduce_sum(self, tensor):
        wall, cpu = time.perf_counter(), time.process_time()
        super().all_reduce_sum(tensor)
        self.spent["wall"] += time.perf_counter() - wall
        self.spent["cpu"] += time.process_time() - cpu
        self.spent["bytes"] += tensor.numel() * tensor.element_size()
        self.spent["calls"] += 1
        return tensor


def _worker(rank: int, world: int, threads: int, init: str, out: str, preset_name: str, n: int) -> None:
    torch.set_num_threads(threads)
    configure_cpu()
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    ctx = _TimedDistributed(rank=rank, world=world)
    preset = load_preset(preset_name)
    images = images_for(preset, n)
    torch.manual_seed(0)
    net = SoftHebbNet(preset)
    ctx.barrier()
    start = time.perf_counter()
    ends, reduced = [], []

    def block_done(block: int) -> None:
        ends.append(time.perf_counter())
        reduced.append(dict(ctx.spent))

    train_unsupervised(net, images, "greedy", preset.unsupervised.batch_size, seed=0, progress=False, ctx=ctx,
                       on_block_done=block_done)
    seconds = time.perf_counter() - start
    blocks = [b - a for a, b in zip([start] + ends[:-1], ends)]
    zero = dict.fromkeys(ctx.spent, 0)
    all_reduce = [{k: b[k] - a[k] for k in b} for a, b in zip([zero] + reduced[:-1], reduced)]
    if rank == 0:
        torch.save({"seconds": seconds, "blocks": blocks, "all_reduce": all_reduce,
                    "weights": [b.conv.weight.detach().clone() for b in net.blocks]}, out)
    shutdown()


def measure(preset: str, n: int, world: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result")
        mp.start_processes(_worker, args=(world, threads, os.path.join(tmp, "init"), out, preset, n), nprocs=world,
                           start_method="spawn")
        return torch.load(out, weights_only=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cifar10")
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="runs of each configuration; the fastest counts")
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args(argv)
    if args.images < 1 or args.processes < 2 or args.repeats < 1:
        ap.error("--images and --repeats must be >= 1, --processes >= 2")
    n, p = args.images, args.processes
    print(f"{cpu_model()}, torch {torch.__version__}; greedy unsupervised epoch of {args.preset} on {n} images")
    runs = {"threads": [], "ranks": []}
    for _ in range(args.repeats):  # interleaved, so that a drift of the machine's speed touches both alike
        runs["threads"].append(measure(args.preset, n, 1, p))
        runs["ranks"].append(measure(args.preset, n, p, 1))
    threads, ranks = (min(runs[k], key=lambda r: r["seconds"]) for k in ("threads", "ranks"))
    diff = max(float((a - b).abs().max()) for a, b in zip(threads["weights"], ranks["weights"]))
    relative = [float((a - b).norm() / a.norm()) for a, b in zip(threads["weights"], ranks["weights"])]
    report = {"cpu": cpu_model(), "preset": args.preset, "images": n, "processes": p, "repeats": args.repeats,
              "seconds": {k: [r["seconds"] for r in v] for k, v in runs.items()},
              "one_process_images_per_s": n / threads["seconds"], "ranks_images_per_s": n / ranks["seconds"],
              "ratio": threads["seconds"] / ranks["seconds"], "max_weight_difference": diff,
              "relative_weight_difference": relative}
    print(f"1 process x {p} threads: {report['one_process_images_per_s']:7.1f} img/s ({threads['seconds']:.1f} s)")
    print(f"{p} processes x 1 thread: {report['ranks_images_per_s']:7.1f} img/s ({ranks['seconds']:.1f} s)")
    report["block_ratios"] = [a / b for a, b in zip(threads["blocks"], ranks["blocks"])]
    print("per block: " + ", ".join(f"{i + 1}: {a:.1f} s / {b:.1f} s = {a / b:.3f}" for i, (a, b)
                                    in enumerate(zip(threads["blocks"], ranks["blocks"]))))
    steps = -(-n // load_preset(args.preset).unsupervised.batch_size)
    report["all_reduce_per_step"] = [{"wall_ms": 1e3 * r["wall"] / steps, "cpu_ms": 1e3 * r["cpu"] / steps,
                                      "megabytes": r["bytes"] / steps / 1e6, "step_ms": 1e3 * b / steps}
                                     for r, b in zip(ranks["all_reduce"], ranks["blocks"])]
    print("all-reduce a step, rank 0: " + "; ".join(
        f"{i + 1}: {r['wall_ms']:.1f} ms wall ({r['cpu_ms']:.1f} ms CPU), {r['megabytes']:.3g} MB, of {r['step_ms']:.1f} ms"
        for i, r in enumerate(report["all_reduce_per_step"])))
    print(f"ratio (processes / threads): {report['ratio']:.3f}; weights' relative difference by block "
          f"{', '.join(f'{r:.2%}' for r in relative)}, largest element {diff:.2e}\n"
          f"(the rule's argmax and max|D| carry rounding differences forward: see docs/distributed.md)")
    if args.out:
        write_json(args.out, report)


if __name__ == "__main__":
    main()
