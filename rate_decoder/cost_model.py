"""What a data-parallel unsupervised epoch costs on N GPUs: compute, all-reduced bytes and their time per step.

The data-parallel step (:mod:`rate_decoder.distributed`) of the learning block, per rank with ``b``
of the global batch's ``B`` images:

* compute: the frozen blocks before it (greedy), its convolution ``u = W * x`` and the update's
  ``y~^T X`` product, the two of the same size, ``2 b H W K C k^2`` multiply-adds x 2 FLOPs each;
* communication: three all-reduces on the critical path, the batch norm's per-channel sums (``C + 1``
  and ``C`` values) and the raw update ``D`` (``K C k^2`` values), float32. Nothing overlaps: the
  statistics are needed before the convolution and ``D`` before the step.

A ring all-reduce of ``S`` bytes over ``N`` ranks moves ``2 (N - 1) / N x S`` bytes through each
rank's link and takes ``2 (N - 1)`` latency hops (Thakur, Rabenseifner & Gropp, IJHPCA 19(1) 2005;
NCCL's ring algorithm). Elementwise work (batch norm, softmax, pooling) and the checksum are left out:
the model is a lower bound on the step, exact in the terms it counts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .config import Preset, parse_pool

#: NVIDIA H100 SXM5 datasheet: FP32 67 TFLOPS (no tensor cores), NVLink 4 900 GB/s per GPU in both
#: directions together (450 GB/s each way); DGX H100: one ConnectX-7 400 Gb/s (50 GB/s) link per GPU
#: between nodes
H100_FP32_FLOPS = 67e12
NVLINK_BYTES_PER_S = 450e9
INFINIBAND_BYTES_PER_S = 50e9
GPUS_PER_NODE = 8


@dataclass(frozen=True)
class Interconnect:
    """Link bandwidth per rank and per direction within a node and between nodes, and latency per ring hop."""

    intra_node: float = NVLINK_BYTES_PER_S
    inter_node: float = INFINIBAND_BYTES_PER_S
    gpus_per_node: int = GPUS_PER_NODE
    hop_latency_s: float = 5e-6

    def bandwidth(self, world: int) -> float:
        """A ring's bandwidth: its slowest link, the inter-node one as soon as the ranks span two nodes."""
        return self.intra_node if world <= self.gpus_per_node else self.inter_node


def ring_all_reduce_seconds(nbytes: float, world: int, link: Interconnect) -> float:
    """``2 (N - 1) / N x S / bandwidth + 2 (N - 1) x latency``; 0 for one rank."""
    if world <= 1:
        return 0.0
    return 2 * (world - 1) / world * nbytes / link.bandwidth(world) + 2 * (world - 1) * link.hop_latency_s


def layer_geometry(preset: Preset) -> list[dict]:
    """Per block: input channels ``C``, the convolution's output size ``H x W`` (square), kernels ``K``, kernel size ``k``."""
    size, channels, out = preset.image_size, preset.in_channels, []
    for spec in preset.layers:
        size = size + 2 * spec.conv_padding - spec.kernel_size + 1
        out.append({"C": channels, "H": size, "K": spec.out_channels, "k": spec.kernel_size})
        _, k, s, p = parse_pool(spec.pool)
        size = (size + 2 * p - k) // s + 1
        channels = spec.out_channels
    return out


def conv_flops(layer: dict, images: float) -> float:
    """FLOPs of one stride-1 convolution of a block over ``images`` images (2 per multiply-add)."""
    return 2.0 * images * layer["H"] ** 2 * layer["K"] * layer["C"] * layer["k"] ** 2


def step_flops(preset: Preset, block: int, images: float) -> float:
    """One greedy step of ``block`` on ``images`` images: frozen blocks' forward, its forward, its update."""
    geometry = layer_geometry(preset)
    frozen = sum(conv_flops(g, images) for g in geometry[:block])
    return frozen + 2 * conv_flops(geometry[block], images)


def all_reduced_bytes(preset: Preset, block: int) -> int:
    """float32 bytes all-reduced per step of ``block``: its batch-norm sums (``2 C + 1``) and its ``D``."""
    g = layer_geometry(preset)[block]
    return 4 * (2 * g["C"] + 1 + g["K"] * g["C"] * g["k"] ** 2)


def epoch_table(preset: Preset, worlds, images: int, global_batch=None, per_rank_batch=None,
                flops_per_s: float = H100_FP32_FLOPS, efficiency: float = 0.5,
                link: Interconnect = Interconnect()) -> list[dict]:
    """The greedy unsupervised epoch (every block in turn, ``images`` images) on each number of ranks.

    Exactly one of ``global_batch`` (the rule's batch ``B``, split across ranks: ``N <= B``) and
    ``per_rank_batch`` (``B = b N``: the batch, and so the rule, grows with ``N``) is given. Per row:
    compute and communication seconds per step of each block, and the epoch's total.
    """
    if (global_batch is None) == (per_rank_batch is None):
        raise ValueError("give exactly one of global_batch and per_rank_batch")
    if not 0 < efficiency <= 1:
        raise ValueError(f"efficiency must be in (0, 1], got {efficiency}")
    rows = []
    for world in worlds:
        batch = global_batch if global_batch is not None else per_rank_batch * world
        if world > batch:
            continue  # a rank without an image in every batch computes nothing
        steps = math.ceil(images / batch)
        compute = [step_flops(preset, b, batch / world) / (flops_per_s * efficiency) for b in range(len(preset.layers))]
        comm = [ring_all_reduce_seconds(all_reduced_bytes(preset, b), world, link) for b in range(len(preset.layers))]
        rows.append({"world": world, "batch": batch, "steps": steps,
                     "flops_per_step": [step_flops(preset, b, batch) for b in range(len(preset.layers))],
                     "bytes_per_step": [all_reduced_bytes(preset, b) for b in range(len(preset.layers))],
                     "compute_s": compute, "comm_s": comm,
                     "epoch_s": steps * sum(c + m for c, m in zip(compute, comm)),
                     "comm_share": sum(comm) / (sum(compute) + sum(comm))})
    return rows


def communication_bound_from(rows: list[dict]) -> int | None:
    """The smallest number of ranks at which communication takes more of the epoch than compute."""
    return next((row["world"] for row in rows if row["comm_share"] > 0.5), None)
