"""The device experiments on the bundled digits: the sweep (its table, the noise-aware readout, resuming) and the weight statistics."""
import json

import pytest

from experiments import device_sweep


def test_sweep_writes_rows_and_resumes_without_recomputing(tmp_path, monkeypatch):
    out = tmp_path / "sweep"
    args = ["--preset", "digits", "--readout-epochs", "2", "--out", str(out), "--readout-reads", "fresh",
            "--synapses", "ideal", "pcm:w_max_unit=8", "rram"]
    device_sweep.main(args)
    rows = json.loads((out / "devices.json").read_text())["rows"]
    assert [r["synapse"] for r in rows] == ["ideal", "pcm:w_max_unit=8", "rram"]
    ideal, pcm, rram = rows
    assert ideal["readout_reads"] == "one" and ideal["pulses"] == 0  # exact reads: nothing to be noise-aware of
    assert rram["readout_reads"] == "one" and rram["static_reads"] and rram["pulses"] > 0  # reads repeat, no drift
    assert pcm["readout_reads"] == "fresh" and pcm["pulses"] > 0 and pcm["clipped_at_attach"] > 0
    assert all(ideal["drift"][k]["raw"] == ideal["test_acc"] for k in device_sweep.DRIFT_TIMES)
    assert ideal["test_acc"] > 0.5 and pcm["test_acc"] > 0.5  # 10 classes: chance is 0.1
    assert (out / "devices_drift.png").stat().st_size > 0

    def fail(*a, **k):
        raise AssertionError("a finished model was recomputed")

    monkeypatch.setattr(device_sweep, "evaluate_synapse", fail)
    device_sweep.main(args)  # all rows come from devices.json
    with pytest.raises(AssertionError, match="recomputed"):  # another read mode is another measurement
        device_sweep.main(args[:6] + ["--readout-reads", "one", "--synapses", "pcm:w_max_unit=8"])
    device_sweep.main(args[:6] + ["--synapses", "ideal"])  # a sweep over fewer models keeps the others' rows
    assert [r["synapse"] for r in json.loads((out / "devices.json").read_text())["rows"]] == [
        "ideal", "pcm:w_max_unit=8", "rram"]
    saved = (out / "devices.json").read_bytes()
    for other in (["--seed", "1"], ["--n-test", "100"]):  # another experiment is refused, the file untouched
        with pytest.raises(SystemExit, match="another experiment"):
            device_sweep.main(args + other)
    assert (out / "devices.json").read_bytes() == saved


def test_sweeps_in_two_directories_merge_without_recomputing(tmp_path, monkeypatch):
    base = ["--preset", "digits", "--readout-epochs", "2", "--n-train", "300", "--n-test", "100"]
    device_sweep.main(base + ["--synapses", "ideal", "linear8", "--out", str(tmp_path / "a")])
    device_sweep.main(base + ["--synapses", "linear16", "--out", str(tmp_path / "b")])
    device_sweep.main(base + ["--synapses", "linear8", "--seed", "1", "--out", str(tmp_path / "other_seed")])
    b_row = json.loads((tmp_path / "b" / "devices.json").read_text())["rows"][0]

    def fail(*a, **k):
        raise AssertionError("a finished model was recomputed")

    monkeypatch.setattr(device_sweep, "evaluate_synapse", fail)
    device_sweep.main(base + ["--synapses", "ideal", "--out", str(tmp_path / "a"), "--merge", str(tmp_path / "b")])
    merged = json.loads((tmp_path / "a" / "devices.json").read_text())["rows"]
    assert [r["synapse"] for r in merged] == ["ideal", "linear8", "linear16"] and merged[2] == b_row
    device_sweep.main(base + ["--synapses", "ideal", "--out", str(tmp_path / "a"), "--merge", str(tmp_path / "b")])
    assert len(json.loads((tmp_path / "a" / "devices.json").read_text())["rows"]) == 3  # merging twice adds nothing
    assert (tmp_path / "a" / "devices_states.png").stat().st_size > 0
    with pytest.raises(SystemExit, match="another experiment"):  # rows of another seed are not mixed in
        device_sweep.main(base + ["--synapses", "ideal", "--out", str(tmp_path / "a"),
                                  "--merge", str(tmp_path / "other_seed")])
    with pytest.raises(SystemExit, match="no devices.json in"):  # a mistyped directory is not an empty merge
        device_sweep.main(base + ["--synapses", "ideal", "--out", str(tmp_path / "a"), "--merge", str(tmp_path / "typo")])


def test_weight_stats_of_initial_weights(capsys):
    from experiments import weight_stats

    weight_stats.main(["--initial", "digits"])
    line = capsys.readouterr().out.strip()
    # the initial norms are radius 25 in expectation (docs/algorithm.md §2.8): the median of the layer's neurons near it
    median = float(line.split("neuron norms median ")[1].split()[0])
    assert line.startswith("layer 1: fan-in") and abs(median - 25) < 5
    with pytest.raises(SystemExit):
        weight_stats.main([])  # neither a run nor --initial
