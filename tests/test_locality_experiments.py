"""The locality experiments on the bundled digits: norm trajectories and a typical neuron's step size."""
import json

import pytest

from experiments import gain_speed, norm_trajectory
from rate_decoder.config import RunConfig, load_preset
from rate_decoder.run import run


def test_norm_trajectory_records_the_epoch_and_resumes(tmp_path, capsys):
    out = tmp_path / "traj"
    report = norm_trajectory.main(["--preset", "digits", "--normalisations", "global", "fixed", "--every", "20",
                                   "--out", str(out)])
    runs = report["normalisations"]
    assert set(runs) == {"global", "fixed"}
    for t in runs.values():
        assert t["batches"][0] == 0 and t["batches"] == sorted(t["batches"])
        q = t["quantiles"]
        assert all(q["0.0"][i] <= q["0.5"][i] <= q["1.0"][i] for i in range(len(t["batches"])))
    # the same seed starts from the same weights; the paper's rule moves the norms further than a frozen gain
    assert runs["global"]["quantiles"]["0.5"][0] == runs["fixed"]["quantiles"]["0.5"][0]
    assert runs["global"]["quantiles"]["0.5"][-1] < runs["fixed"]["quantiles"]["0.5"][-1]
    saved = json.loads((out / "trajectory.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert (out / "trajectory.md").read_text().count("\n") == 4 and (out / "trajectory.png").stat().st_size > 0
    capsys.readouterr()
    norm_trajectory.main(["--preset", "digits", "--normalisations", "global", "--every", "20", "--out", str(out)])
    assert capsys.readouterr().out == ""  # kept, not recomputed
    with pytest.raises(SystemExit):
        norm_trajectory.main(["--preset", "digits", "--seed", "1", "--out", str(out)])


def test_a_neurons_step_is_at_most_its_rate(tmp_path):
    """Under the paper's divisor and under a running maximum, no neuron's largest change exceeds the divisor: the
    fractions lie in (0, 1]; a longer memory holds a higher peak, hence smaller steps."""
    run(RunConfig(load_preset("digits"), readout_epochs=1), tmp_path / "r", progress=False)
    (layer,) = gain_speed.main([str(tmp_path / "r"), "--tau", "5", "50", "--batches", "60", "--warmup", "10"])
    for key in ("paper", 5.0, 50.0):
        assert 0 < layer[key] <= 1
    assert layer[50.0] <= layer[5.0]
