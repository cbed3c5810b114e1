"""Features of the frozen network for the readout, cached once (docs/algorithm.md §6.2).

Without augmentation the features are a deterministic function of the image (every block and batch
norm in eval mode), so they are computed once: fp16 by default (half the memory), fp32 when a value
exceeds fp16's range. A cache larger than :func:`feature_memory_budget` lives in a memory-mapped file
instead of RAM, unlinked as soon as it is created, so it never outlives the process.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .data import Images, iter_batches, to_float
from .network import SoftHebbNet


class FeatureCacheError(OSError):
    """The on-disk feature cache cannot be created (typically: not enough free disk space)."""


def feature_memory_budget() -> int:
    """Bytes of features :func:`extract_features` keeps in RAM: half the physical memory, at most 8 GiB.

    CIFAR-10's 2.5 GB fp16 cache stays in RAM on any machine with more than 5 GB; the ``imagenet``
    preset's (1.28M images x 307,200 features, 786 GB) goes to disk.
    """
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows) or no such name
        return 8 * 2**30
    return min(8 * 2**30, ram // 2)


def _feature_buffer(n: int, n_features: int, dtype: torch.dtype, memory_budget: int | None,
                    cache_dir: str | os.PathLike | None) -> Tensor:
    """An ``(n, n_features)`` CPU tensor: in RAM within ``memory_budget`` bytes, else a memory-mapped file.

    The file is unlinked as soon as it is mapped. Nothing but this process ever reads it, so no
    half-written cache can be mistaken for a finished one, and its disk space is returned when the
    tensor is freed or the process ends, even if it is killed (else hundreds of GB left per crash).
    Its blocks are reserved up front: writing to a mapping on a full disk would kill the process
    with SIGBUS instead of raising.
    """
    np_dtype = torch.empty((), dtype=dtype).numpy().dtype
    nbytes = n * n_features * np_dtype.itemsize
    if nbytes <= (feature_memory_budget() if memory_budget is None else memory_budget):
        return torch.empty(n, n_features, dtype=dtype)
    directory = Path(cache_dir) if cache_dir is not None else Path(tempfile.gettempdir())
    fd, name = tempfile.mkstemp(prefix=".features.", suffix=".tmp", dir=directory)
    try:
        try:
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(fd, 0, nbytes)
            else:
                os.ftruncate(fd, nbytes)
        except OSError as err:
            free = shutil.disk_usage(directory).free
            raise FeatureCacheError(f"the feature cache needs {nbytes / 2**30:.1f} GiB on disk (more than the "
                                    f"memory budget) but {directory} has {free / 2**30:.1f} GiB free ({err})") from None
        array = np.memmap(name, dtype=np_dtype, mode="r+", shape=(n, n_features))
    finally:
        os.close(fd)
        os.unlink(name)
    return torch.from_numpy(array)


@torch.no_grad()
def extract_features(net: SoftHebbNet, images: Images, batch_size: int | None = None, device=None,
                     dtype=torch.float16, progress: bool = True, desc: str = "features",
                     memory_budget: int | None = None, cache_dir: str | os.PathLike | None = None) -> Tensor:
    """Flattened features (C, H, W order) of all images, every block in eval mode, stored on the CPU.

    ``batch_size`` defaults to 50 on CPU (the activations stay in cache: 200 images/s on the
    CIFAR-10 network here against 120-140 at 500) and 500 on a GPU.

    fp16 halves the cache (CIFAR-10: 2.5 GB instead of 4.9 GB). Values beyond fp16's range would turn
    to inf, so that is checked and the cache falls back to fp32 rather than holding garbage.

    A cache of more than ``memory_budget`` bytes (default :func:`feature_memory_budget`) is a
    memory-mapped file in ``cache_dir`` (default: the temporary directory, which may be RAM-backed:
    a run passes its own directory), see :func:`_feature_buffer`; it indexes like the RAM tensor and
    holds the same values.
    """
    net.check_input(images)
    if batch_size is None:
        batch_size = 500 if torch.device(device or "cpu").type == "cuda" else 50
    was_training = net.training
    net.eval()
    normalize = net.preset.normalize
    n_features = int(np.prod(net.feature_shape))
    out = _feature_buffer(len(images), n_features, dtype, memory_budget, cache_dir)
    starts = range(0, len(images), batch_size)
    batches = iter_batches(images, (slice(i, i + batch_size) for i in starts))
    for i, x in zip(tqdm(starts, desc=desc, disable=not progress, mininterval=2.0, unit="batch"), batches):
        f = net.features(to_float(x, device, normalize)).flatten(1)
        if not torch.isfinite(f).all():
            raise FloatingPointError("non-finite features: the network's weights or batch-norm statistics are broken")
        if dtype == torch.float16 and f.abs().max() > torch.finfo(torch.float16).max:
            net.train(was_training)
            batches.close()
            del out  # release the fp16 buffer (or its file) before the fp32 one is allocated
            return extract_features(net, images, batch_size, device, torch.float32, progress, desc, memory_budget,
                                    cache_dir)
        out[i:i + batch_size] = f.to("cpu", dtype)
    net.train(was_training)
    return out
