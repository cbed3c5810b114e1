"""Data-parallel SoftHebb (rate_decoder.distributed): 2 gloo processes at half the batch == 1 process.

Each case runs in 2 spawned processes (gloo on the CPU, a file rendezvous) and, in this process, as a
single process on the whole batches. The weights after 50 steps must agree within what float32
summation order allows. Measured: the ranks' partial sums round differently and, through the layer's
max|D| and the winners' argmax, that reached 3.5e-4 absolute (4.6e-5 relative) on weights of size ~7
with resized crops, below 1e-4 in the other cases. The tolerance, 1e-3 absolute + 1e-4 relative, is
3x above that and ~4000x below what a wrong data-parallel rule gives: normalising each shard's update
by its own max|D| before the sum moved the same layer's weights by 4.2 in 50 steps, and normalising
each shard by its own batch-norm statistics changes every u.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rate_decoder import SoftHebbNet, load_preset
from rate_decoder.distributed import SINGLE, Distributed, RankDivergence, batch_norm_train, leaving_at_end
from rate_decoder.features import extract_features, extract_features_sharded
from rate_decoder.layers import SoftHebbLinear
from rate_decoder.readout import train_readout
from rate_decoder.run import load_checkpoint
from rate_decoder.unsupervised import train_unsupervised

ROOT = Path(__file__).resolve().parents[1]
WORLD = 2
STEPS = 50
BATCH = 10


def _net(normalisation: str = "global", synapse: str | None = None) -> SoftHebbNet:
    """Two MNIST blocks at 1/8 of the preset's width (12 and 48 channels)."""
    torch.manual_seed(0)
    net = SoftHebbNet(load_preset("mnist", layers=2, width_factor=0.125), normalisation=normalisation)
    if synapse is not None:
        import hardware_models

        for i, block in enumerate(net.blocks):
            block.conv.attach_synapse(hardware_models.make_synapse(synapse, seed=i))
    return net


def _epoch(ctx: Distributed, images: torch.Tensor, mode: str, normalisation: str, synapse: str | None,
           augmentation: str = "none", corrupt_rank: int | None = None) -> dict:
    net = _net(normalisation, synapse)
    if corrupt_rank is not None and ctx.rank == corrupt_rank:  # one rank's weights differ from the start
        with torch.no_grad():
            net.blocks[0].conv.weight[0, 0, 0, 0] += 1e-3
    train_unsupervised(net, images, mode, BATCH, seed=3, progress=False, augmentation=augmentation, ctx=ctx)
    return {k: v.clone() for k, v in net.state_dict().items()}


def _linear(ctx: Distributed, x: torch.Tensor, normalisation: str) -> dict:
    torch.manual_seed(1)
    layer = SoftHebbLinear(x.shape[1], 16, normalisation=normalisation, dtype=torch.float64)
    for k in range(STEPS):
        rows = ctx.shard(np.arange(k * BATCH, (k + 1) * BATCH))
        layer.hebbian_step(x[torch.from_numpy(rows)], reduce=ctx.all_reduce_sum if ctx.active else None)
    return {"weight": layer.weight.detach().clone()}


def _batch_norm(ctx: Distributed, x: torch.Tensor) -> dict:
    bn = torch.nn.BatchNorm2d(x.shape[1])
    rows = torch.from_numpy(ctx.shard(np.arange(len(x))))
    out = batch_norm_train(bn, x[rows], ctx) if ctx.active else bn(x)
    return {"out": out.detach(), "mean": bn.running_mean.clone(), "var": bn.running_var.clone()}


def _readout(ctx: Distributed, features: torch.Tensor, labels: torch.Tensor) -> dict:
    torch.manual_seed(2)
    net = SoftHebbNet(load_preset("digits"))
    history = train_readout(net, features, labels, features[:50], labels[:50], epochs=3, batch_size=64, seed=5,
                            progress=False, ctx=ctx)
    return {**{k: v.detach().clone() for k, v in net.head.state_dict().items()},
            "loss": torch.tensor([h["train_loss"] for h in history], dtype=torch.float64)}


def _features(ctx: Distributed, images: torch.Tensor) -> dict:
    torch.manual_seed(0)
    net = SoftHebbNet(load_preset("mnist", layers=2, width_factor=0.125))
    return {"features": extract_features_sharded(net, images, ctx, progress=False, chunk_bytes=5000)}


CASES = {"epoch": _epoch, "linear": _linear, "batch_norm": _batch_norm, "readout": _readout, "features": _features}


def _worker(rank: int, init: str, out: str, case: str, args: tuple) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=WORLD)
    with leaving_at_end():
        try:
            result = CASES[case](Distributed(rank=rank, world=WORLD, check_every=7), *args)
            torch.save(result, f"{out}.{rank}")
        except RankDivergence as err:
            Path(f"{out}.{rank}.divergence").write_text(str(err))


def _run_ranks(case: str, *args) -> list:
    """``CASES[case](ctx, *args)`` on 2 gloo ranks; each rank's result (a RankDivergence's message as a str)."""
    with tempfile.TemporaryDirectory() as tmp:
        init, out = os.path.join(tmp, "init"), os.path.join(tmp, "out")
        mp.start_processes(_worker, args=(init, out, case, args), nprocs=WORLD, start_method="spawn")
        results = []
        for r in range(WORLD):
            failed = Path(f"{out}.{r}.divergence")
            results.append(failed.read_text() if failed.exists() else torch.load(f"{out}.{r}", weights_only=True))
        return results


@pytest.fixture(scope="module")
def images(mnist):
    return mnist.x_train[:STEPS * BATCH - 3].clone()  # the last batch (7 rows) splits 4 / 3


def _assert_same(single: dict, ranks: list, atol: float = 1e-3, rtol: float = 1e-4) -> None:
    for result in ranks:
        assert result.keys() == single.keys()
        for key, value in single.items():
            if value.is_floating_point():
                torch.testing.assert_close(result[key], value, atol=atol, rtol=rtol, msg=lambda m: f"{key}: {m}")
            else:
                assert torch.equal(result[key], value), key


@pytest.mark.parametrize("mode", ["greedy", "consecutive"])
def test_two_ranks_at_half_batch_learn_what_one_process_learns(images, mode):
    single = _epoch(SINGLE, images, mode, "global", None)
    ranks = _run_ranks("epoch", images, mode, "global", None)
    _assert_same(single, ranks)
    assert torch.equal(ranks[0]["blocks.0.conv.weight"], ranks[1]["blocks.0.conv.weight"])  # bit-identical ranks
    assert not torch.allclose(single["blocks.1.conv.weight"], _net().state_dict()["blocks.1.conv.weight"], atol=1e-2)


@pytest.mark.parametrize("normalisation,synapse,augmentation", [("fixed", None, "none"), ("homeostatic", None, "none"),
                                                                ("global", "pcm", "none"),
                                                                ("global", None, "resized_crop_flip")])
def test_data_parallel_keeps_stateful_gains_devices_and_augmentation(images, normalisation, synapse, augmentation):
    single = _epoch(SINGLE, images, "greedy", normalisation, synapse, augmentation)
    _assert_same(single, _run_ranks("epoch", images, "greedy", normalisation, synapse, augmentation))


def test_linear_layer_data_parallel(mnist):
    """In float64: the fully connected preset's soft WTA (t = 12) on positive weights amplifies rounding
    differences by orders of magnitude in 50 steps (float32, the shards summed in one process against the
    whole batch: 2e-7 after one step, 0.07 after 50), so float32 would leave nothing to test; in float64
    the ranks and the single process differed by 1.6e-8 (tolerance 1e-6)."""
    x = mnist.x_train[:STEPS * BATCH].flatten(1).double() / 255.0
    for normalisation in ("global", "none"):
        _assert_same(_linear(SINGLE, x, normalisation), _run_ranks("linear", x, normalisation), atol=1e-6, rtol=1e-6)


def test_batch_norm_statistics_are_summed_over_the_ranks():
    x = torch.randn(9, 4, 5, 5) * 3 + 1
    single = _batch_norm(SINGLE, x)
    ranks = _run_ranks("batch_norm", x)
    for r, result in enumerate(ranks):
        torch.testing.assert_close(result["mean"], single["mean"])
        torch.testing.assert_close(result["var"], single["var"])
        rows = torch.from_numpy(Distributed(rank=r, world=WORLD).shard(np.arange(9)))
        torch.testing.assert_close(result["out"], single["out"][rows], atol=1e-5, rtol=1e-5)


def test_rank_divergence_is_detected(images):
    ranks = _run_ranks("epoch", images[:100], "greedy", "global", None, "none", 1)
    for message in ranks:
        assert isinstance(message, str) and "weights differ after step 7" in message


def test_shards_cover_each_batch_in_order():
    rows = np.arange(7)
    parts = [Distributed(rank=r, world=3).shard(rows) for r in range(3)]
    assert np.array_equal(np.concatenate(parts), rows) and [len(p) for p in parts] == [3, 2, 2]
    assert np.array_equal(SINGLE.shard(rows), rows)


def test_readout_under_ddp_takes_one_process_steps():
    """Same order, each rank's shard with its part of the whole batch's dropout mask, DDP's averaged gradient."""
    g = torch.Generator().manual_seed(0)
    features = torch.randn(301, 64 * 16, generator=g)  # the digits network's 16 x 64 features; last batch 45 rows
    labels = torch.randint(0, 10, (301,), generator=g)
    single = _readout(SINGLE, features, labels)
    _assert_same(single, _run_ranks("readout", features, labels), atol=1e-5, rtol=1e-5)


def test_sharded_features_are_gathered_on_every_rank(images):
    torch.manual_seed(0)
    net = SoftHebbNet(load_preset("mnist", layers=2, width_factor=0.125))
    single = extract_features(net, images[:101], progress=False)
    for result in _run_ranks("features", images[:101]):
        assert result["features"].dtype == single.dtype
        torch.testing.assert_close(result["features"], single, atol=1e-3, rtol=1e-3)


def _torchrun(out: Path, *extra: str) -> subprocess.Popen:
    """``softhebb train`` (the digits default, 2 processes) under torchrun, from this checkout."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(WORLD),
           "-m", "experiments.cli", "train", "--out", str(out), "--quiet", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _rank_pid(launcher: int, rank: int) -> int | None:
    """The pid of ``rank``'s worker among the launcher's descendants (its ``RANK`` environment variable)."""
    todo = [launcher]
    while todo:
        pid = todo.pop()
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if pid != launcher and f"RANK={rank}".encode() in environ and b"LOCAL_RANK" in b" ".join(environ):
            return pid
        todo.extend(int(c) for c in children)
    return None


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the workers through /proc")
def test_torchrun_kill_one_rank_then_resume(tmp_path):
    """A full 2-process run; the same run with rank 1 killed (-9) once its first checkpoint exists, then
    resumed under torchrun: the launcher fails loudly, the checkpoint left is whole, and the resumed
    run's readout history equals the uninterrupted run's, epoch by epoch."""
    full = _torchrun(tmp_path / "full")
    out, err = full.communicate(timeout=600)
    assert full.returncode == 0, err
    metrics = json.loads((tmp_path / "full" / "metrics.json").read_text())
    assert metrics["processes"] == WORLD and metrics["test_acc"] > 0.9

    cut = _torchrun(tmp_path / "cut")
    checkpoint = tmp_path / "cut" / "checkpoint.pt"
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and cut.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    victim = _rank_pid(cut.pid, 1)
    assert victim is not None and cut.poll() is None, "the run ended before it could be interrupted"
    os.kill(victim, signal.SIGKILL)
    _, err = cut.communicate(timeout=600)
    assert cut.returncode != 0 and "SIGKILL" in err
    _, _, progress, _ = load_checkpoint(checkpoint)  # whole: it loads, weights finite
    assert progress["readout_epoch"] < metrics["history"][-1]["epoch"]
    assert not (tmp_path / "cut" / "metrics.json").exists()

    resumed = _torchrun(tmp_path / "cut", "--resume")
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    again = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert [(h["train_loss"], h["test_acc"]) for h in again["history"]] == \
        [(h["train_loss"], h["test_acc"]) for h in metrics["history"]]
