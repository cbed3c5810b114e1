"""Data loading on this CPU: the DataLoader path against the hand-written code it replaced, and the decoders.

    python -m experiments.loading [--data-dir TREE] [--images 600] [--size 160] [--out loading.json]

Three measurements, each the best of ``--repeats`` runs, printed with the CPU model:

1. Image files (an ImageFolder tree: ``--data-dir``, else a synthetic tree of JPEGs of 300-500 px per
   side, ImageNet's typical size, written to a temporary directory): images/s of batches of 64 resized
   to ``--size``, through :func:`rate_decoder.data.iter_batches` (DataLoader workers) with the PIL
   and torchvision.io decoders, against a thread pool of the same size decoding with PIL
   (the replaced code, kept here as the baseline).
2. In-memory images (CIFAR-10's shape): microseconds per batch of 10 through ``iter_batches`` (the
   DataLoader in this process) against plain indexing.
3. Augmentation: milliseconds per batch of 32 x 3 x ``--size`` x ``--size`` of the resized crop + flip
   through torchvision's functional transforms (:func:`rate_decoder.augment.resized_crop`) against the
   replaced loop of ``F.interpolate`` calls, which gives the same pixels.
"""
from __future__ import annotations

import argparse
import glob
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rate_decoder.augment import resized_crop, resized_crop_params
from rate_decoder.data import ImageFolderImages, iter_batches
from rate_decoder.run import cpu_model, write_json


def synthetic_tree(root: Path, n: int, seed: int = 0) -> list[str]:
    """``n`` smooth random JPEGs of 300-500 px per side under ``root/train/c*``; their paths."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        folder = root / "train" / f"c{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        h, w = (int(v) for v in rng.integers(300, 500, 2))
        coarse = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
        paths.append(str(folder / f"{i}.jpg"))
        Image.fromarray(coarse).resize((w, h), Image.BILINEAR).save(paths[-1], quality=90)
    return paths


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def thread_pool_read(images: ImageFolderImages, batches, threads: int) -> None:
    """The replaced reader: each batch's files decoded by a thread pool, one batch ahead of the caller."""
    with ThreadPoolExecutor(threads) as pool, ThreadPoolExecutor(1) as ahead:
        def read(index):
            out = torch.empty((len(index), *images.shape[1:]), dtype=torch.uint8)
            for k, image in enumerate(pool.map(lambda i: images._decode(images.paths[i]), index)):
                out[k] = image
            return out

        pending = None
        for index in batches:
            future = ahead.submit(read, index)
            if pending is not None:
                pending.result()
            pending = future
        if pending is not None:
            pending.result()


def interpolate_loop(x, top, left, h, w, flip):
    """The replaced crop code: one ``F.interpolate`` per image."""
    H, W = x.shape[-2:]
    out = torch.empty_like(x)
    for b, (i, j, hb, wb, f) in enumerate(zip(top.tolist(), left.tolist(), h.tolist(), w.tolist(), flip.tolist())):
        r = F.interpolate(x[b:b + 1, :, i:i + hb, j:j + wb], size=(H, W), mode="bilinear", align_corners=False)[0]
        out[b] = r.flip(-1) if f else r
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", help="an ImageFolder tree (its train/ files are read); default: synthetic JPEGs")
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    workers = min(8, os.cpu_count() or 1)
    report = {"cpu": cpu_model(), "workers": workers, "size": args.size}
    print(f"CPU: {report['cpu']}; {workers} workers / threads")
    with tempfile.TemporaryDirectory() as tmp:
        if args.data_dir:
            paths = sorted(glob.glob(os.path.join(args.data_dir, "train", "*", "*")))[:args.images]
        else:
            paths = synthetic_tree(Path(tmp), args.images)
        batches = [torch.arange(i, min(i + 64, len(paths))) for i in range(0, len(paths), 64)]
        files = {}
        for decoder in ("pil", "torchvision"):
            images = ImageFolderImages(paths, args.size, decoder)
            files[f"dataloader_{decoder}"] = best_of(args.repeats, lambda: list(iter_batches(images, batches)))
        files["thread_pool_pil"] = best_of(args.repeats, lambda: thread_pool_read(
            ImageFolderImages(paths, args.size, "pil"), batches, workers))
        report["files_images_per_s"] = {k: len(paths) / v for k, v in files.items()}
    for name, rate in report["files_images_per_s"].items():
        print(f"files: {name:24s} {rate:7.0f} images/s")

    memory = torch.randint(0, 256, (50_000, 3, 32, 32), dtype=torch.uint8)
    order = torch.randperm(len(memory))
    small = [order[i:i + 10] for i in range(0, len(order), 10)]
    plain = best_of(args.repeats, lambda: [memory[i] for i in small])
    loader = best_of(args.repeats, lambda: list(iter_batches(memory, small)))
    report["memory_us_per_batch"] = {"indexing": plain / len(small) * 1e6, "dataloader": loader / len(small) * 1e6}
    print(f"in memory, batch of 10: indexing {report['memory_us_per_batch']['indexing']:.1f} us, "
          f"DataLoader {report['memory_us_per_batch']['dataloader']:.1f} us")

    g = torch.Generator().manual_seed(0)
    x = torch.rand(32, 3, args.size, args.size, generator=g)
    params = resized_crop_params(32, args.size, args.size, generator=g)
    assert torch.equal(resized_crop(x, *params), interpolate_loop(x, *params))
    crop = {"torchvision": best_of(5 * args.repeats, lambda: resized_crop(x, *params)),
            "interpolate_loop": best_of(5 * args.repeats, lambda: interpolate_loop(x, *params))}
    report["crop_ms_per_batch"] = {k: v * 1e3 for k, v in crop.items()}
    print(f"resized crop + flip, 32 images: torchvision {crop['torchvision'] * 1e3:.1f} ms, "
          f"F.interpolate loop {crop['interpolate_loop'] * 1e3:.1f} ms (same pixels)")
    if args.out:
        write_json(Path(args.out), report)


if __name__ == "__main__":
    main()
