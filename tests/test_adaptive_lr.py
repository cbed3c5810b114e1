"""The adaptive-rate experiment's two schedules and its resumable results file."""
import json

import pytest
import torch

from conftest import require_data
from experiments import adaptive_lr


def test_the_linear_schedule_is_uniform_and_decays_to_zero_while_the_adaptive_one_follows_the_norms():
    linear = adaptive_lr.hidden_layer(35.0, "linear", seed=0)
    adaptive = adaptive_lr.hidden_layer(35.0, "adaptive", seed=0)
    assert torch.equal(linear.weight, adaptive.weight) and bool((linear.weight >= 0).all())
    rates = linear.learning_rates()
    assert torch.allclose(rates, torch.full_like(rates, adaptive_lr.LR))
    adaptive_lr.set_rate(linear, "linear", 0, 100)
    assert linear.lr == pytest.approx(adaptive_lr.LR)
    adaptive_lr.set_rate(linear, "linear", 75, 100)
    assert linear.lr == pytest.approx(adaptive_lr.LR / 4)
    adaptive_lr.set_rate(adaptive, "adaptive", 75, 100)
    assert adaptive.lr == adaptive_lr.LR
    norms = adaptive.weight.norm(dim=1)
    expected = adaptive_lr.LR * (norms - 1).abs() ** adaptive_lr.LR_POWER
    torch.testing.assert_close(adaptive.learning_rates().flatten(), expected)


def test_a_quick_radius_table_is_written_and_not_rerun(tmp_path):
    require_data("mnist.npz")
    argv = ["--figure", "radius", "--x", "26", "--schedules", "adaptive", "--n-train", "640", "--out", str(tmp_path)]
    adaptive_lr.main(argv)
    results = json.loads((tmp_path / "results.json").read_text())
    (entry,) = results.values()
    assert entry["radius"] == pytest.approx(1.25 ** 16) and 0.1 < entry["test_acc"] <= 1
    assert (tmp_path / "radius.png").stat().st_size > 0
    before = (tmp_path / "results.json").stat().st_mtime_ns
    adaptive_lr.main(argv)
    assert (tmp_path / "results.json").stat().st_mtime_ns == before
