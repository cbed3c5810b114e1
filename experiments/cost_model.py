"""What the ImageNet preset's greedy unsupervised epoch costs on 1 to 64 GPUs, data-parallel.

    python -m experiments.cost_model                       # global batch 10 (the rule's), H100s
    python -m experiments.cost_model --per-rank-batch 10   # batch 10 per GPU: the batch grows with N
    python -m experiments.cost_model --efficiency 0.3 --inter-node-gbs 25

Prints per block the FLOPs and all-reduced bytes of one step, then per N the compute and
communication time per step summed over the blocks, the epoch's time and communication's share, and
the N from which communication dominates (:mod:`rate_decoder.cost_model`: the counts, the ring
all-reduce formula and the cited H100 / NVLink / InfiniBand figures).
"""
from __future__ import annotations

import argparse

from rate_decoder import cost_model, load_preset

IMAGENET_TRAIN_IMAGES = 1_281_167


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="imagenet")
    ap.add_argument("--images", type=int, default=IMAGENET_TRAIN_IMAGES, help="images in the unsupervised epoch")
    batch = ap.add_mutually_exclusive_group()
    batch.add_argument("--global-batch", type=int, help="the rule's batch, split across the GPUs (default: the preset's)")
    batch.add_argument("--per-rank-batch", type=int, help="images per GPU per step (the global batch grows with N)")
    ap.add_argument("--tflops", type=float, default=cost_model.H100_FP32_FLOPS / 1e12,
                    help="peak per GPU (default: H100 SXM FP32, 67)")
    ap.add_argument("--efficiency", type=float, default=0.5, help="fraction of the peak the convolutions reach")
    ap.add_argument("--intra-node-gbs", type=float, default=cost_model.NVLINK_BYTES_PER_S / 1e9)
    ap.add_argument("--inter-node-gbs", type=float, default=cost_model.INFINIBAND_BYTES_PER_S / 1e9)
    ap.add_argument("--gpus-per-node", type=int, default=cost_model.GPUS_PER_NODE)
    args = ap.parse_args(argv)
    for name in ("images", "global_batch", "per_rank_batch", "gpus_per_node"):
        value = getattr(args, name)
        if value is not None and value < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    for name in ("tflops", "intra_node_gbs", "inter_node_gbs"):
        if not getattr(args, name) > 0:
            ap.error(f"--{name.replace('_', '-')} must be > 0")
    if not 0 < args.efficiency <= 1:
        ap.error("--efficiency must be in (0, 1]")
    preset = load_preset(args.preset)
    link = cost_model.Interconnect(args.intra_node_gbs * 1e9, args.inter_node_gbs * 1e9, args.gpus_per_node)
    global_batch = args.global_batch if args.per_rank_batch is None and args.global_batch else None
    if args.per_rank_batch is None and global_batch is None:
        global_batch = preset.unsupervised.batch_size
    rows = cost_model.epoch_table(preset, [1, 2, 4, 8, 16, 32, 64], args.images, global_batch, args.per_rank_batch,
                                  args.tflops * 1e12, args.efficiency, link)
    regime = (f"global batch {global_batch} split across the GPUs" if global_batch else
              f"{args.per_rank_batch} images per GPU per step (global batch {args.per_rank_batch} N)")
    print(f"{preset.name}: greedy unsupervised epoch of {args.images:,} images, {regime}; "
          f"{args.tflops:g} TFLOPS x {args.efficiency:g} per GPU, ring all-reduce at {args.intra_node_gbs:g} GB/s "
          f"within {args.gpus_per_node} GPUs, {args.inter_node_gbs:g} GB/s beyond\n")
    first = rows[0]
    print("block | GFLOP per step (global batch) | MB all-reduced per step")
    for b, (flops, nbytes) in enumerate(zip(first["flops_per_step"], first["bytes_per_step"]), 1):
        print(f"{b:5d} | {flops / 1e9:29.1f} | {nbytes / 1e6:23.2f}")
    print("\n    N | batch | compute ms/step | all-reduce ms/step | epoch h | comm share")
    for row in rows:
        print(f"{row['world']:5d} | {row['batch']:5d} | {1e3 * sum(row['compute_s']):15.2f} | "
              f"{1e3 * sum(row['comm_s']):18.2f} | {row['epoch_s'] / 3600:7.2f} | {row['comm_share']:10.1%}")
    bound = cost_model.communication_bound_from(rows)
    print("\ncommunication dominates from N = " + (str(bound) if bound else "- (not within these N)")
          + ("" if global_batch is None else f"; N is at most the global batch ({global_batch})"))


if __name__ == "__main__":
    main()
