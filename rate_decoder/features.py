"""Features of the frozen network for the readout, cached once (docs/algorithm.md §6.2).

Without augmentation the features are a deterministic function of the image (every block and batch
norm in eval mode), so they are computed once: fp16 by default (half the memory), fp32 when a value
exceeds fp16's range. A cache larger than :func:`feature_memory_budget` lives in a memory-mapped file
instead of RAM, unlinked as soon as it is created, so it never outlives the process.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .data import Images, iter_batches, to_float
from .distributed import Distributed, tensor_crc
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


def _reserve(fd: int, nbytes: int, directory: Path) -> None:
    """Reserve a file's blocks up front: writing to a mapping on a full disk would kill the process (SIGBUS)."""
    try:
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(fd, 0, nbytes)
        else:
            os.ftruncate(fd, nbytes)
    except OSError as err:
        free = shutil.disk_usage(directory).free
        raise FeatureCacheError(f"the feature cache needs {nbytes / 2**30:.1f} GiB on disk but {directory} has "
                                f"{free / 2**30:.1f} GiB free ({err})") from None


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
        _reserve(fd, nbytes, directory)
        array = np.memmap(name, dtype=np_dtype, mode="r+", shape=(n, n_features))
    finally:
        os.close(fd)
        os.unlink(name)
    return torch.from_numpy(array)


def network_fingerprint(net: SoftHebbNet) -> str:
    """CRC-32 of the blocks' weights and batch-norm statistics: which network a saved feature file belongs to."""
    state = sorted(net.blocks.state_dict().items())
    return f"{tensor_crc([t for _, t in state], zlib.crc32(' '.join(k for k, _ in state).encode())):08x}"


@dataclass(frozen=True)
class FeatureCheckpoint:
    """Where :func:`extract_features` keeps its features on disk, and how often it records its progress.

    ``path`` holds the raw ``(rows, features)`` array, ``path`` + ``.json`` how many rows are done, the
    dtype and the network's :func:`network_fingerprint`. The record is written (atomically, after the
    array is flushed) every ``every_s`` seconds and at the end: an interrupted extraction continues from
    its last record, and a finished one is read back instead of recomputed, as long as the network is
    the same. The owner deletes both files when done (:meth:`remove`).
    """

    path: Path
    fingerprint: str
    every_s: float = 300.0

    @property
    def record(self) -> Path:
        return Path(f"{self.path}.json")

    def for_rank(self, rank: int) -> "FeatureCheckpoint":
        return dataclasses.replace(self, path=Path(f"{self.path}.rank{rank}"))

    def remove(self) -> None:
        for path in (self.path, self.record):
            Path(path).unlink(missing_ok=True)

    def open(self, n: int, n_features: int, dtype: torch.dtype) -> tuple[Tensor, int]:
        """The memory-mapped array and the rows already done (0 for a new file)."""
        if n == 0:  # a rank without images: nothing to map
            return torch.empty(0, n_features, dtype=dtype), 0
        np_dtype = torch.empty((), dtype=dtype).numpy().dtype
        expected = {"rows": n, "features": n_features, "dtype": str(np_dtype), "fingerprint": self.fingerprint}
        done = 0
        try:
            saved = json.loads(self.record.read_text())
            if {k: saved.get(k) for k in expected} == expected and self.path.stat().st_size == n * n_features * \
                    np_dtype.itemsize:
                done = int(saved["rows_done"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        if done == 0:
            self.remove()
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                _reserve(fd, n * n_features * np_dtype.itemsize, self.path.parent)
            finally:
                os.close(fd)
        return torch.from_numpy(np.memmap(self.path, dtype=np_dtype, mode="r+", shape=(n, n_features))), done

    def save(self, out: Tensor, rows_done: int) -> None:
        """Record ``rows_done`` once the array's rows are on disk (fsync writes back the mapping's pages too)."""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        record = {"rows": len(out), "features": out.shape[1], "dtype": str(out.numpy().dtype),
                  "fingerprint": self.fingerprint, "rows_done": rows_done}
        fd, tmp = tempfile.mkstemp(prefix=f".{self.record.name}.", dir=self.record.parent)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(record))
        os.replace(tmp, self.record)


@torch.no_grad()
def extract_features(net: SoftHebbNet, images: Images, batch_size: int | None = None, device=None,
                     dtype=torch.float16, progress: bool = True, desc: str = "features",
                     memory_budget: int | None = None, cache_dir: str | os.PathLike | None = None,
                     rows: range | None = None, checkpoint: FeatureCheckpoint | None = None) -> Tensor:
    """Flattened features (C, H, W order) of all images, every block in eval mode, stored on the CPU.

    ``batch_size`` defaults to 50 on CPU (the activations stay in cache: 200 images/s on the
    CIFAR-10 network here against 120-140 at 500) and 500 on a GPU.

    fp16 halves the cache (CIFAR-10: 2.5 GB instead of 4.9 GB). Values beyond fp16's range would turn
    to inf, so that is checked and the cache falls back to fp32 rather than holding garbage.

    A cache of more than ``memory_budget`` bytes (default :func:`feature_memory_budget`) is a
    memory-mapped file in ``cache_dir`` (default: the temporary directory, which may be RAM-backed:
    a run passes its own directory), see :func:`_feature_buffer`; it indexes like the RAM tensor and
    holds the same values.

    ``rows`` (a ``range`` of step 1): only those images' features, in that order.

    ``checkpoint``: the features live in its file instead, and an interrupted extraction continues
    where its last record says (:class:`FeatureCheckpoint`).
    """
    net.check_input(images)
    rows = range(len(images)) if rows is None else rows
    if batch_size is None:
        batch_size = 500 if torch.device(device or "cpu").type == "cuda" else 50
    was_training = net.training
    net.eval()
    normalize = net.preset.normalize
    n_features = int(np.prod(net.feature_shape))
    if checkpoint is None:
        out, done = _feature_buffer(len(rows), n_features, dtype, memory_budget, cache_dir), 0
    else:
        out, done = checkpoint.open(len(rows), n_features, dtype)
    last_record = time.monotonic()
    starts = range(done, len(rows), batch_size)
    batches = iter_batches(images, (slice(rows.start + i, rows.start + min(i + batch_size, len(rows))) for i in starts),
                           device=device)
    for i, x in zip(tqdm(starts, desc=desc, disable=not progress, mininterval=2.0, unit="batch"), batches):
        f = net.features(to_float(x, device, normalize)).flatten(1)
        if not torch.isfinite(f).all():
            raise FloatingPointError("non-finite features: the network's weights or batch-norm statistics are broken")
        if dtype == torch.float16 and f.abs().max() > torch.finfo(torch.float16).max:
            net.train(was_training)
            batches.close()
            del out  # release the fp16 buffer (or its file) before the fp32 one is allocated
            if checkpoint is not None:
                checkpoint.remove()
            return extract_features(net, images, batch_size, device, torch.float32, progress, desc, memory_budget,
                                    cache_dir, rows, checkpoint)
        out[i:i + batch_size] = f.to("cpu", dtype)
        if checkpoint is not None and time.monotonic() - last_record >= checkpoint.every_s:
            checkpoint.save(out, i + len(f))
            last_record = time.monotonic()
    if checkpoint is not None and done < len(rows):
        checkpoint.save(out, len(rows))
    net.train(was_training)
    return out


def extract_features_sharded(net: SoftHebbNet, images: Images, ctx: Distributed, device=None, progress: bool = True,
                             desc: str = "features", cache_dir: str | os.PathLike | None = None,
                             chunk_bytes: int = 64 * 2**20, checkpoint: FeatureCheckpoint | None = None) -> Tensor:
    """:func:`extract_features` of all ``images`` with each rank computing one contiguous part; every rank gets all.

    The parts are those of :meth:`~rate_decoder.distributed.Distributed.shard` over the image indices
    (the work of ``DistributedSampler`` without padding or shuffling, so no image is computed twice).
    Each part is broadcast from its rank in chunks of ``chunk_bytes`` straight into the full buffer
    (RAM or a memory-mapped file, as :func:`extract_features` chooses), so no rank ever holds a second
    copy. If any rank's part needed fp32, all switch to fp32. A single process calls
    :func:`extract_features`. With ``checkpoint``, each rank keeps its part in its own file
    (:meth:`FeatureCheckpoint.for_rank`).
    """
    if not ctx.active:
        return extract_features(net, images, device=device, progress=progress, desc=desc, cache_dir=cache_dir,
                                checkpoint=checkpoint)
    parts = [range(*Distributed(rank=r, world=ctx.world).span(len(images))) for r in range(ctx.world)]
    mine = extract_features(net, images, device=device, progress=progress, desc=desc, cache_dir=cache_dir,
                            rows=parts[ctx.rank], checkpoint=checkpoint.for_rank(ctx.rank) if checkpoint else None)
    wide = ctx.all_reduce_sum(torch.tensor([int(mine.dtype == torch.float32)]))
    dtype = torch.float32 if int(wide) else torch.float16
    out = _feature_buffer(len(images), mine.shape[1], dtype, None, cache_dir)
    out[parts[ctx.rank].start:parts[ctx.rank].stop] = mine.to(dtype)
    del mine
    step = max(1, chunk_bytes // max(1, out.shape[1] * out.element_size()))
    for source, part in enumerate(parts):
        for i in range(part.start, part.stop, step):  # as bytes: gloo has no 16-bit integer type
            ctx.broadcast(out[i:min(i + step, part.stop)].view(torch.uint8), source)
    return out
