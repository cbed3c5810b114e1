"""Data-parallel SoftHebb on ``torch.distributed``: one process per device, launched by ``torchrun``.

SoftHebb's update of a batch is a sum over its rows followed by nonlinear steps (docs/algorithm.md §2.4-2.7)::

    D   = sum_rows  y~^T x  -  (sum_rows y~ u) w        linear in the rows: each rank sums its shard
    dW  = eta(|w|) D / max|D|                           nonlinear: every rank, on the summed D

so a data-parallel step all-reduces (sums) the shards' raw updates ``D`` and then every rank applies
the same normalisation, norm-dependent rate and device programming to the same sum: the weights stay
identical on every rank, and equal to one process's on the whole batch up to summation order. The
batch norm of the learning block is synchronised the same way, through the sums of its statistics.
Summing already-normalised updates would be another rule (each shard's ``max|D|`` differs), so the
normalisation never runs before the sum.

A batch keeps its meaning: ``batch_size`` is the global batch, split across the ranks
(:meth:`Distributed.shard`), so the same preset learns the same rule on 1 or N processes.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import zlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

#: all-reduce and all-gather time out after this long: a dead rank ends the others' wait with an error
TIMEOUT = datetime.timedelta(minutes=10)


class RankDivergence(RuntimeError):
    """The ranks' weights differ: the data-parallel run no longer computes one network."""


@dataclass(frozen=True)
class Distributed:
    """This process's place in a data-parallel run: ``rank`` of ``world`` (``world == 1``: a single process).

    ``check_every``: every that many steps, the ranks compare checksums of their weights
    (:meth:`check_identical`) and stop with :class:`RankDivergence` if they differ.
    """

    rank: int = 0
    world: int = 1
    check_every: int = 100

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def span(self, total: int) -> tuple[int, int]:
        """``(start, stop)`` of this rank's part of ``total`` rows: ``world`` contiguous parts whose sizes
        differ by at most 1, the larger ones first (as ``np.array_split``)."""
        size, extra = divmod(total, self.world)
        start = self.rank * size + min(self.rank, extra)
        return start, start + size + (self.rank < extra)

    def shard(self, rows: np.ndarray) -> np.ndarray:
        """This rank's part of a global batch's rows (:meth:`span`).

        Contiguous parts keep the global order: rank 0 holds the batch's first rows, so the ranks'
        shards, concatenated by rank, are the batch a single process would see.
        """
        start, stop = self.span(len(rows))
        return rows[start:stop]

    def all_reduce_sum(self, tensor: Tensor) -> Tensor:
        """The sum of ``tensor`` over the ranks (in place; also returned). A no-op in a single process."""
        if self.active:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def check_identical(self, tensors, step: int) -> None:
        """Stop with :class:`RankDivergence` unless every rank holds bit-identical ``tensors``.

        Each rank hashes its tensors' bytes (CRC-32) and the ranks all-gather the hashes: one small
        collective, so it can run every few hundred steps.
        """
        if not self.active:
            return
        mine = torch.tensor([tensor_crc(tensors)], dtype=torch.int64)
        everyone = [torch.zeros_like(mine) for _ in range(self.world)]
        dist.all_gather(everyone, mine)
        values = [int(v) for v in everyone]
        if len(set(values)) > 1:
            raise RankDivergence(f"the ranks' weights differ after step {step} (weight checksums by rank: "
                                 f"{', '.join(f'{v:08x}' for v in values)}); the data-parallel run is no longer "
                                 f"one network")

    def broadcast(self, tensor: Tensor, source: int) -> Tensor:
        """``tensor`` of rank ``source`` on every rank (in place). A no-op in a single process."""
        if self.active:
            dist.broadcast(tensor, source)
        return tensor

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


SINGLE = Distributed()


def shard_rows(ctx: Distributed, total: int) -> tuple[int, int]:
    """``(start, total)``: where this rank's shard starts in a batch of ``total`` rows, as the ``rows`` argument
    of :func:`~rate_decoder.augment.augment` and :func:`~rate_decoder.readout.feature_dropout` takes it."""
    return ctx.span(total)[0], total


def tensor_crc(tensors, crc: int = 0) -> int:
    """CRC-32 of the tensors' bytes in turn (on the CPU): equal exactly when every value is bit-identical."""
    for t in tensors:
        crc = zlib.crc32(t.detach().cpu().contiguous().numpy().tobytes(), crc)
    return crc


def backend_for(device: torch.device) -> str:
    """NCCL for CUDA tensors, gloo for the CPU."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def from_environment(device=None, check_every: int = 100) -> Distributed:
    """Join the process group ``torchrun`` describes (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` ...).

    Without those variables, or with ``WORLD_SIZE=1``, this is a single process and nothing is
    initialised. On CUDA each process takes the GPU of its ``LOCAL_RANK``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed(check_every=check_every)
    rank = int(os.environ["RANK"])
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group(backend_for(device), timeout=TIMEOUT)
    return Distributed(rank=rank, world=world, check_every=check_every)


@contextlib.contextmanager
def leaving_at_end():
    """Leave the process group when the block ends: together (:func:`shutdown`) if it finished, at once if it raised."""
    try:
        yield
    except BaseException:
        shutdown(finished=False)
        raise
    shutdown()


def shutdown(finished: bool = True) -> None:
    """Leave the process group (if one was joined).

    ``finished``: every rank reached the end of the run, so they first meet at a barrier and then tear
    down together; a rank that left alone would close its connections while a peer may still be reading
    from them. After an error (``finished=False``) the peers may never arrive, so there is no barrier.
    """
    if dist.is_available() and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()


@torch.no_grad()
def batch_norm_train(bn: torch.nn.BatchNorm2d, x: Tensor, ctx: Distributed) -> Tensor:
    """``bn`` in train mode on the global batch whose shard this rank holds: statistics summed over the ranks.

    One all-reduce of per-channel sums of ``x`` and ``x^2`` and the count, accumulated in float64, so
    that ``E[x^2] - E[x]^2`` loses nothing to cancellation at these magnitudes (a second, centred pass
    would cost a second all-reduce per step, and a step's all-reduces are latency-bound). The output
    and the running statistics (momentum update with the unbiased variance, ``num_batches_tracked``)
    are those of one ``bn(x)`` call on the whole batch, up to summation order.
    """
    c = x.shape[1]
    dims = (0, 2, 3)
    sums = torch.cat([x.sum(dims, dtype=torch.float64), x.square().sum(dims, dtype=torch.float64),
                      x.new_tensor([x.numel() // c], dtype=torch.float64)])
    ctx.all_reduce_sum(sums)
    n = sums[-1]
    mean = sums[:c] / n
    var = (sums[c:2 * c] / n - mean.square()).clamp_(min=0.0)
    bn.num_batches_tracked.add_(1)
    m = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
    bn.running_mean.mul_(1 - m).add_(mean.to(bn.running_mean.dtype), alpha=m)
    bn.running_var.mul_(1 - m).add_((var * (n / max(float(n) - 1, 1.0))).to(bn.running_var.dtype), alpha=m)
    scale = torch.rsqrt(var + bn.eps)
    return (x - mean.to(x.dtype)[:, None, None]) * scale.to(x.dtype)[:, None, None]
