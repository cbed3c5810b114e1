"""The data-parallel cost model's arithmetic, against hand counts on the ImageNet preset."""
import json
import math

import pytest

from rate_decoder import cost_model, load_preset


@pytest.fixture(scope="module")
def imagenet():
    return load_preset("imagenet")


def test_geometry_and_counts_by_hand(imagenet):
    geometry = cost_model.layer_geometry(imagenet)
    assert [g["H"] for g in geometry] == [160, 80, 40, 20, 10]  # each max_4_2_1 halves the map
    assert [g["C"] for g in geometry] == [3, 48, 192, 768, 3072]
    # block 1 at 10 images: its convolution and its update, 2 x (2 x 10 x 160^2 x 48 x 3 x 25) FLOPs
    assert cost_model.step_flops(imagenet, 0, 10) == 2 * 2 * 10 * 160 ** 2 * 48 * 3 * 25
    # block 2 adds the frozen block 1's forward pass once
    assert cost_model.step_flops(imagenet, 1, 10) == 2 * 10 * 160 ** 2 * 48 * 75 + 2 * 2 * 10 * 80 ** 2 * 192 * 48 * 9
    # block 5's D (12288 x 3072 x 9) and its batch-norm sums (2 x 3072 + 1), float32
    assert cost_model.all_reduced_bytes(imagenet, 4) == 4 * (12288 * 3072 * 9 + 2 * 3072 + 1)


def test_ring_all_reduce_time():
    link = cost_model.Interconnect(intra_node=400e9, inter_node=50e9, gpus_per_node=8, hop_latency_s=1e-5)
    assert cost_model.ring_all_reduce_seconds(1e9, 1, link) == 0.0
    assert math.isclose(cost_model.ring_all_reduce_seconds(1e9, 2, link), 1e9 / 400e9 + 2e-5)
    assert math.isclose(cost_model.ring_all_reduce_seconds(1e9, 16, link), 2 * 15 / 16 * 1e9 / 50e9 + 30 * 1e-5)


def test_epoch_table(imagenet):
    link = cost_model.Interconnect(hop_latency_s=0.0)
    rows = cost_model.epoch_table(imagenet, [1, 2, 16], 1000, global_batch=10, flops_per_s=1e12, efficiency=0.5,
                                  link=link)
    assert [r["world"] for r in rows] == [1, 2]  # 16 ranks cannot share a batch of 10
    one, two = rows
    flops = sum(cost_model.step_flops(imagenet, b, 10) for b in range(5))
    assert math.isclose(one["epoch_s"], 100 * flops / 0.5e12)
    comm = sum(cost_model.all_reduced_bytes(imagenet, b) for b in range(5)) / cost_model.NVLINK_BYTES_PER_S
    assert math.isclose(two["epoch_s"], 100 * (sum(cost_model.step_flops(imagenet, b, 5) for b in range(5)) / 0.5e12
                                               + comm))
    grown = cost_model.epoch_table(imagenet, [4], 1000, per_rank_batch=10, link=link)[0]
    assert grown["batch"] == 40 and grown["steps"] == 25
    assert cost_model.communication_bound_from([{"world": 2, "comm_share": 0.4}, {"world": 4, "comm_share": 0.6}]) == 4
    with pytest.raises(ValueError, match="exactly one"):
        cost_model.epoch_table(imagenet, [1], 10)


def test_pipeline_floor_is_each_phase_multiply_adds_at_the_matmul_rate():
    from experiments.benchmark import pipeline_floor_s

    # 2 GFLOP/s = 1e9 multiply-adds per second
    floor = pipeline_floor_s(greedy_macs=3e9, feature_macs=2e9, readout_macs=1e9, train=10, test=5,
                             readout_epochs=4, gflops=2.0)
    assert floor == {"unsupervised_s": 30.0, "features_s": 30.0, "readout_s": 40.0, "total_s": 100.0}


def test_benchmark_prints_every_phase_with_its_reference(tmp_path, capsys):
    """The throughput benchmark runs end to end and reports each phase against a baseline of the same run."""
    from experiments import benchmark

    out = tmp_path / "bench.json"
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"timings_s": {"unsupervised_s": 2.0, "features_s": 1.0,
                                                                "readout_s": 3.0, "this_invocation_s": 9.0}}))
    benchmark.main(["--preset", "digits", "--batches", "3", "--feature-images", "60", "--readout-images", "256",
                    "--device", "cpu", "--run", str(run), "--out", str(out)])
    report = json.loads(out.read_text())
    floor = report["pipeline_floor_s"]
    assert floor["total_s"] == pytest.approx(floor["unsupervised_s"] + floor["features_s"] + floor["readout_s"])
    assert report["run"]["timings_s"]["total_s"] == 6.0  # the three phases, not the invocation's wall time
    printed = capsys.readouterr().out
    assert "x its floor" in printed
    assert report["matmul_gflops"] > 0 and len(report["stages"]) == 1
    readout = report["readout"]
    assert readout["s_per_image_epoch"] > readout["floor_s_per_image_epoch"] > 0
    assert "memory floor" in printed
