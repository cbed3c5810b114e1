"""Throughput of the rate network on this machine, against a plain fp32 matrix product measured in the same run.

    python -m experiments.benchmark --preset cifar10 [--batches 60] [--device cpu] [--precision bf16] [--run DIR]

Prints, per greedy stage (forward through the frozen blocks + one plasticity step of the learning
block) and for feature extraction: images/s, MACs per image, achieved GFLOP/s (2 FLOP per MAC) and
the ratio to the matmul rate; for the readout's training on cached features, also its 50-epoch time
and its memory floor (each feature read once per epoch at a large copy's rate, measured in the run).
The weights are first trained for a few batches so that the softmax and weight statistics are those
of a real run, not of the initialisation.

It also prints the whole pipeline's compute floor: its multiply-adds (the greedy epoch on the training
set, the features of the training and test sets, the readout's two products per image and epoch) at
the matmul rate of the same run. With ``--run DIR``, the finished run's phase times (its
``metrics.json``) are set against their floors: the ratio of each phase, and of the whole, to its floor.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from rate_decoder.config import load_preset
from rate_decoder.features import extract_features
from rate_decoder.readout import train_readout
from rate_decoder.network import SoftHebbNet, configure_cpu
from rate_decoder.run import cpu_model, write_json


#: training images of each dataset, for the readout's 50-epoch time and the pipeline's floor
DATASET_TRAIN_IMAGES = {"cifar10": 50_000, "cifar100": 50_000, "mnist": 60_000, "stl10": 5_000, "digits": 1_437}
#: test images of each dataset, for the pipeline's floor
DATASET_TEST_IMAGES = {"cifar10": 10_000, "cifar100": 10_000, "mnist": 10_000, "stl10": 8_000, "digits": 360}


def pipeline_floor_s(greedy_macs: int, feature_macs: int, readout_macs: int, train: int, test: int,
                     readout_epochs: int, gflops: float) -> dict:
    """Seconds each phase of a run would take at ``gflops`` (2 FLOP per multiply-add), and their sum.

    ``greedy_macs``: per training image, every greedy stage (forward through the blocks before it and the
    learning block's convolution and plasticity product); ``feature_macs``: one forward pass per image of
    both sets; ``readout_macs``: per training image and epoch, the logits and the weight gradient.
    """
    phases = {"unsupervised_s": greedy_macs * train, "features_s": feature_macs * (train + test),
              "readout_s": readout_macs * train * readout_epochs}
    floor = {name: 2 * macs / (gflops * 1e9) for name, macs in phases.items()}
    return {**floor, "total_s": sum(floor.values())}


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


def copy_gbytes(device, mib: int = 256, repeats: int = 5) -> float:
    """Memory rate of a large tensor copy (bytes read + written per second, GB/s): the practical ceiling of a
    memory-bound phase such as the readout."""
    a = torch.empty(mib * 2**18, device=device)  # mib MiB of fp32
    b = torch.empty_like(a)
    b.copy_(a)
    _sync(device)
    t = time.perf_counter()
    for _ in range(repeats):
        b.copy_(a)
    _sync(device)
    return 2 * a.numel() * 4 * repeats / (time.perf_counter() - t) / 1e9


def bench_readout(net, images: int, device, kernel: bool = True) -> dict:
    """The readout's training on random fp16 features of the head's width: seconds per image and epoch.

    ``kernel=False``: by tensor operations, with the fused CPU kernel switched off
    (``SOFTHEBB_READOUT_KERNEL=torch``, :mod:`rate_decoder.readout_kernel`).

    Each step of batch 64 needs its features once (fp16), and its two products (logits and the weight
    gradient) have only ``n_classes`` outputs: few multiply-adds per byte, so the phase's floor is set by
    memory, not by the matmul rate. ``floor_s_per_image_epoch`` is the time to read each image's features
    once at a large copy's rate, measured in the same run.
    """
    width, classes = net.head.in_features, net.head.out_features
    g = torch.Generator().manual_seed(0)
    features = torch.randn(images, width, generator=g).half()
    labels = torch.randint(0, classes, (images,), generator=g)
    test = features[:1000], labels[:1000]
    switch = os.environ.get("SOFTHEBB_READOUT_KERNEL")
    os.environ["SOFTHEBB_READOUT_KERNEL"] = "c" if kernel else "torch"
    try:
        train_readout(net, features[:640], labels[:640], *test, epochs=1, device=device, progress=False)  # warm-up
        _sync(device)
        t = time.perf_counter()
        train_readout(net, features, labels, *test, epochs=2, device=device, progress=False)
        _sync(device)
        per_image = (time.perf_counter() - t) / (2 * images)
    finally:
        if switch is None:
            del os.environ["SOFTHEBB_READOUT_KERNEL"]
        else:
            os.environ["SOFTHEBB_READOUT_KERNEL"] = switch
    return {"s_per_image_epoch": per_image, "gflops": 2 * 2 * width * classes / per_image / 1e9,
            "floor_s_per_image_epoch": 2 * width / (copy_gbytes(device) * 1e9)}


def bench_stage(net, stage, x, batches, device) -> float:
    """Seconds per batch of a greedy step of block ``stage``."""
    net.set_learning_block(stage)
    times = []
    with torch.no_grad():
        for i in range(batches):
            _sync(device)
            t = time.perf_counter()
            net.blocks[stage].learn(net.features(x[i % len(x)], upto=stage), output=False)
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
    ap.add_argument("--readout-images", type=int, default=6400, help="random feature rows of the readout's timing")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                    help="dtype of the Hebbian layers' two large products (the matmul reference stays fp32)")
    ap.add_argument("--run", help="a finished run of the same preset (its directory): its phase times against their floors")
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args(argv)
    if args.device == "cpu":
        configure_cpu()
    torch.manual_seed(0)
    preset = load_preset(args.preset)
    net = SoftHebbNet(preset, device=args.device, precision=args.precision)
    bs, s, c = preset.unsupervised.batch_size, preset.image_size, preset.in_channels
    x = [torch.rand(bs, c, s, s, device=args.device) for _ in range(8)]
    peak = matmul_gflops(args.device)
    macs = conv_macs(net)
    where = torch.cuda.get_device_name() if str(args.device).startswith("cuda") else cpu_model()
    print(f"{where}, torch {torch.__version__}, {args.precision} products")
    print(f"fp32 matmul: {peak:.1f} GFLOP/s ({torch.get_num_threads()} threads, {args.device})")
    report = {"preset": args.preset, "device": args.device, "precision": args.precision, "processor": where,
              "threads": torch.get_num_threads(),
              "matmul_gflops": peak, "stages": []}
    total_time_per_image, total_macs = 0.0, 0
    for stage in range(len(net.blocks)):
        with torch.no_grad():  # a few real steps first: realistic weights and batch-norm statistics
            net.set_learning_block(stage)
            for i in range(5):
                net.blocks[stage].learn(net.features(x[i], upto=stage), output=False)
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
    train_images, test_images = DATASET_TRAIN_IMAGES.get(preset.dataset), DATASET_TEST_IMAGES.get(preset.dataset)
    for name, kernel in (("readout", True), ("readout_tensor_ops", False)):
        readout = bench_readout(net, args.readout_images, args.device, kernel=kernel)
        readout["ratio_to_matmul"] = readout["gflops"] / peak
        line = (f"{'readout' if kernel else 'readout, tensor operations'} (batch 64, dropout, Adam): "
                f"{1 / readout['s_per_image_epoch']:8.0f} img/s per epoch  "
                f"{readout['gflops']:.1f} GFLOP/s  {readout['gflops'] / peak:.1%} of matmul  "
                f"{readout['s_per_image_epoch'] / readout['floor_s_per_image_epoch']:.0f}x its memory floor")
        if train_images:
            readout["minutes_50_epochs"] = readout["s_per_image_epoch"] * train_images * 50 / 60
            readout["floor_minutes_50_epochs"] = readout["floor_s_per_image_epoch"] * train_images * 50 / 60
            line += (f"; 50 epochs of {train_images:,} images: {readout['minutes_50_epochs']:.1f} min "
                     f"(floor {readout['floor_minutes_50_epochs']:.2f} min)")
        report[name] = readout
        print(line)
    print(f"readout kernel against tensor operations: "
          f"{report['readout_tensor_ops']['s_per_image_epoch'] / report['readout']['s_per_image_epoch']:.2f}x")
    if train_images:
        readout_macs = 2 * net.head.in_features * net.head.out_features
        floor = pipeline_floor_s(total_macs, fmacs, readout_macs, train_images, test_images,
                                 preset.readout.epochs, peak)
        report["pipeline_floor_s"] = floor
        print(f"pipeline floor at {peak:.1f} GFLOP/s: {floor['total_s'] / 60:.1f} min "
              f"({floor['unsupervised_s'] / 60:.1f} unsupervised, {floor['features_s'] / 60:.1f} features, "
              f"{floor['readout_s'] / 60:.2f} readout)")
        if args.run:
            timings = json.loads((Path(args.run) / "metrics.json").read_text())["timings_s"]
            measured = {name: timings[name] for name in ("unsupervised_s", "features_s", "readout_s")}
            measured["total_s"] = sum(measured.values())
            report["run"] = {"dir": str(args.run), "timings_s": measured}
            print(f"run {args.run}: " + ", ".join(
                f"{name[:-2]} {measured[name] / 60:.1f} min = {measured[name] / floor[name]:.2f}x its floor "
                f"({floor[name] / measured[name]:.0%} of the matmul rate)" for name in measured))
    if args.out:
        write_json(args.out, report)


if __name__ == "__main__":
    main()
