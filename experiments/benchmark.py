"""Throughput of the rate network on this machine, against a plain fp32 matrix product measured in the same run.

    python -m experiments.benchmark --preset cifar10 [--batches 60] [--device cpu]

Prints, per greedy stage (forward through the frozen blocks + one plasticity step of the learning
block) and for feature extraction: images/s, MACs per image, achieved GFLOP/s (2 FLOP per MAC) and
the ratio to the matmul rate. The weights are first trained for a few batches so that the softmax
and weight statistics are those of a real run, not of the initialisation.
"""
from __future__ import annotations

import argparse
import time

import torch

from rate_decoder.config import load_preset
from rate_decoder.features import extract_features
from rate_decoder.network import SoftHebbNet, configure_cpu
from rate_decoder.run import cpu_model, write_json


def matmul_gflops(device, n: int = 2048, repeats: int = 10) -> float:
    """Best fp32 GEMM rate over a few square sizes: this machine's practical peak."""
    best = 0.0
    for size in (1024, n, 3072):
        a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
        a @ b
        _sync(device)
        t = time.perf_counter()
        for _ in range(repeats):
            a @ b
        _sync(device)
        best = max(best, 2 * size**3 * repeats / (time.perf_counter() - t) / 1e9)
    return best


def _sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def conv_macs(net: SoftHebbNet) -> list[int]:
    """Forward MACs per image of each block's convolution (stride 1; one per weight and output position)."""
    macs, s = [], net.preset.image_size
    x = torch.zeros(1, net.preset.in_channels, s, s, device=net.head.weight.device)
    with torch.no_grad():
        net.eval()
        for block in net.blocks:
            w = block.conv.weight
            u = block.conv(block.bn(x))
            macs.append(w[0].numel() * w.shape[0] * u.shape[2] * u.shape[3])
            x = block(x)
    return macs


def bench_stage(net, stage, x, batches, device) -> float:
    """Seconds per batch of a greedy step of block ``stage``."""
    net.set_learning_block(stage)
    times = []
    with torch.no_grad():
        for i in range(batches):
            _sync(device)
            t = time.perf_counter()
            net.blocks[stage].learn(net.features(x[i % len(x)], upto=stage))
            _sync(device)
            times.append(time.perf_counter() - t)
    net.set_learning_block(None)
    times = sorted(times[len(times) // 5:])  # drop warm-up batches
    return times[len(times) // 2]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="cifar10")
    ap.add_argument("--batches", type=int, default=60)
    ap.add_argument("--feature-images", type=int, default=2000)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args(argv)
    if args.device == "cpu":
        configure_cpu()
    torch.manual_seed(0)
    preset = load_preset(args.preset)
    net = SoftHebbNet(preset, device=args.device)
    bs, s, c = preset.unsupervised.batch_size, preset.image_size, preset.in_channels
    x = [torch.rand(bs, c, s, s, device=args.device) for _ in range(8)]
    peak = matmul_gflops(args.device)
    macs = conv_macs(net)
    where = torch.cuda.get_device_name() if str(args.device).startswith("cuda") else cpu_model()
    print(f"{where}, torch {torch.__version__}")
    print(f"fp32 matmul: {peak:.1f} GFLOP/s ({torch.get_num_threads()} threads, {args.device})")
    report = {"preset": args.preset, "device": args.device, "processor": where, "threads": torch.get_num_threads(),
              "matmul_gflops": peak, "stages": []}
    total_time_per_image, total_macs = 0.0, 0
    for stage in range(len(net.blocks)):
        with torch.no_grad():  # a few real steps first: realistic weights and batch-norm statistics
            net.set_learning_block(stage)
            for i in range(5):
                net.blocks[stage].learn(net.features(x[i], upto=stage))
        t = bench_stage(net, stage, x, args.batches, args.device)
        stage_macs = sum(macs[:stage + 1]) + macs[stage]  # forward up to the block + its plasticity product
        gflops = 2 * stage_macs * bs / t / 1e9
        total_time_per_image += t / bs
        total_macs += stage_macs
        row = {"stage": stage + 1, "images_per_s": bs / t, "macs_per_image": stage_macs, "gflops": gflops,
               "ratio_to_matmul": gflops / peak}
        report["stages"].append(row)
        print(f"unsupervised layer {stage + 1}: {bs / t:8.1f} img/s  {stage_macs / 1e6:8.1f} MMAC/img  "
              f"{gflops:6.1f} GFLOP/s  {gflops / peak:5.1%} of matmul")
    epoch_gflops = 2 * total_macs / total_time_per_image / 1e9
    report["greedy_epoch"] = {"images_per_s": 1 / total_time_per_image, "macs_per_image": total_macs,
                              "gflops": epoch_gflops, "ratio_to_matmul": epoch_gflops / peak}
    print(f"greedy epoch (all layers): {1 / total_time_per_image:6.1f} img/s of the dataset  "
          f"{total_macs / 1e6:.1f} MMAC/img  {epoch_gflops:.1f} GFLOP/s  {epoch_gflops / peak:.1%} of matmul")
    images = (torch.rand(args.feature_images, c, s, s) * 255).to(torch.uint8)
    extract_features(net, images[:500], device=args.device, progress=False)
    _sync(args.device)
    t = time.perf_counter()
    extract_features(net, images, device=args.device, progress=False)
    _sync(args.device)
    t = time.perf_counter() - t
    fmacs = sum(macs)
    fg = 2 * fmacs * len(images) / t / 1e9
    report["features"] = {"images_per_s": len(images) / t, "macs_per_image": fmacs, "gflops": fg,
                          "ratio_to_matmul": fg / peak}
    print(f"feature extraction: {len(images) / t:8.1f} img/s  {fmacs / 1e6:.1f} MMAC/img  {fg:.1f} GFLOP/s  "
          f"{fg / peak:.1%} of matmul")
    if args.out:
        write_json(args.out, report)


if __name__ == "__main__":
    main()
