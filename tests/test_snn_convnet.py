"""experiments.snn_convnet's inference: shards resumed or simulated by parallel workers give one process's counts."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import require_compiler, require_data
from experiments import snn_convnet


@pytest.fixture
def kernels_dir(tmp_path):
    """A seed-0 kernel file of small random kernels (4 and 8 channels), as ``--part learn`` writes it."""
    rng = np.random.default_rng(0)
    w1, w2 = rng.standard_normal((4, 25)), rng.standard_normal((8, 36))
    w1 /= np.linalg.norm(w1, axis=1, keepdims=True)
    w2 /= np.linalg.norm(w2, axis=1, keepdims=True)
    mean, std = np.full(4, 0.05), np.full(4, 0.04)
    snn_convnet.save_npz(tmp_path / "kernels_s0.npz", pool_race=4, spiking_1=w1, spiking_2=w2, spiking_mean=mean,
                         spiking_std=std, spiking_twin_mean=mean, spiking_twin_std=std)
    return tmp_path


def infer_args(out, *extra):
    return ["--part", "infer", "--out", str(out), "--seeds", "0", "--sets", "spiking", "--n-train", "2",
            "--n-test", "4", "--shard", "2", "--chunk", "2", *extra]


def test_parallel_workers_and_a_resumed_run_give_the_counts_of_one_process(kernels_dir, tmp_path_factory,
                                                                              monkeypatch):
    """Each shard's draws are seeded from its position: 2 worker processes (each its own build) and a run that
    finds one shard already done write the same counts as one uninterrupted process. A worker that drew its
    seeds in another order, overlapped another's shards or skipped one would differ or fail to join."""
    require_compiler()
    require_data("mnist.npz")
    monkeypatch.setenv("SOFTHEBB_SNN_CACHE", str(tmp_path_factory.getbasetemp() / "snn_convnet_cache"))
    one, two = tmp_path_factory.mktemp("one"), tmp_path_factory.mktemp("two")
    for out in (one, two):
        (out / "kernels_s0.npz").write_bytes((kernels_dir / "kernels_s0.npz").read_bytes())
    snn_convnet.main(infer_args(one))
    # the second directory already holds one test shard (as a stopped run would), then two workers do the rest
    (two / "shards_s0_spiking").mkdir()
    done = "test_00002_00004_t80.npz"
    (two / "shards_s0_spiking" / done).write_bytes((one / "shards_s0_spiking" / done).read_bytes())
    snn_convnet.main(infer_args(two, "--jobs", "2"))
    with np.load(one / "counts_s0_spiking.npz") as a, np.load(two / "counts_s0_spiking.npz") as b:
        assert a["test"].shape == (4, 8, 7, 7) and a["train"].shape == (2, 8, 7, 7)
        assert a["test"].sum() > 0
        for key in ("test", "train", "train_map1"):
            np.testing.assert_array_equal(a[key], b[key])
    # joining the finished shards for fewer images adds their record and keeps the one of the run that simulated them
    before = json.loads((two / "infer_s0_spiking.json").read_text())
    assert before["2x4"]["jobs"] == 2
    snn_convnet.main(infer_args(two, "--n-test", "2"))
    after = json.loads((two / "infer_s0_spiking.json").read_text())
    assert after["2x4"] == before["2x4"] and set(after) == {"2x4", "2x2"}
    assert "jobs" not in after["2x2"] and after["2x2"]["events_per_image"]["input_events"] > 0


def test_strip_option_removes_an_option_and_its_values():
    argv = ["--part", "infer", "--seeds", "0", "1", "--sets", "spiking", "--seeds=3", "--jobs", "2"]
    assert snn_convnet.strip_option(argv, "--seeds") == ["--part", "infer", "--sets", "spiking", "--jobs", "2"]


def test_a_worker_outside_the_jobs_is_named(kernels_dir, capsys):
    with pytest.raises(SystemExit):
        snn_convnet.main(infer_args(kernels_dir, "--jobs", "2", "--worker", "2"))
    assert "--worker must be in [0, --jobs)" in capsys.readouterr().err


def test_score_names_counts_of_other_sizes(kernels_dir):
    """Counts joined for other sizes are not scored as if they were the ones asked for."""
    require_data("mnist.npz")
    snn_convnet.save_npz(kernels_dir / "counts_s0_spiking.npz", train=np.zeros((2, 8, 7, 7)),
                         test=np.zeros((4, 8, 7, 7)), train_map1=np.zeros((2, 4, 24, 24)))
    score = ["--part", "score", "--out", str(kernels_dir), "--seeds", "0", "--sets", "spiking"]
    with pytest.raises(SystemExit, match="holds the counts of 2 training and 4 test images, not the 3 and 4"):
        snn_convnet.main(score + ["--n-train", "3", "--n-test", "4"])


def test_a_validation_split_larger_than_the_readout_set_is_named(kernels_dir, capsys):
    with pytest.raises(SystemExit):
        snn_convnet.main(["--part", "score", "--out", str(kernels_dir), "--n-train", "2", "--validation", "2"])
    assert "--validation must be in [0, --n-train), got 2 of 2" in capsys.readouterr().err
