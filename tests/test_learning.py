"""Tests that fail when SoftHebb learns nothing, or learns the wrong way.

Each test trains the linear readout on SoftHebb's features and on the random-weight baseline's (the
same network and protocol, the same initial weights, its batch norms fitted by the same pass over the
data, the weights never changed: ``rule="random"``) and asks SoftHebb to win by a margin that seed
noise cannot explain. A rule whose update is zero gives exactly the baseline's features, so it fails;
a rule with the update's sign flipped learns worse than random weights, so it fails too.

The data are a CIFAR-10 subset: on MNIST and on the bundled 8x8 digits, random convolutional
features are already as good as learnt ones for a linear readout at this size (MNIST, first 5,000
images, 1 layer, 30 readout epochs: SoftHebb 94.75 / 95.45 %, random 95.20 / 94.85 % at seeds 0 / 1;
digits: 96.94 % both), so a test there could not tell learning from no learning.

Margins. With the first 5,000 training and 2,000 test images and a 20-epoch readout, at seeds 0, 1, 2
(2-core AMD EPYC, torch 2.14.1; ``python -m experiments.learning_margins --seeds 0 1 2``):

==========================================  =====================  =====================  ======
network                                     SoftHebb %             random weights %       margin
==========================================  =====================  =====================  ======
1 layer (``cifar10-1layer``)                55.65 / 55.45 / 56.30  43.50 / 46.70 / 46.45  5
1 layer, linear device, 64 states           54.70 / 55.35 / 56.40  as above               5
2 layers (``cifar10-2layer`` at half width)  60.85 / 64.30 / 62.30  55.05 / 51.85 / 52.10  3
2 layers, consecutive                       60.00 / - / -          53.95 / - / -          3
==========================================  =====================  =====================  ======

Each margin lies below the smallest gap measured (8.65 points at 1 layer, 5.80 at 2 layers) and
above the seed standard deviation of either side (at most 1.8 points at both depths; the margins are
2.8 and 1.7 times that). A zeroed update gives a gap of 0, a flipped one a negative gap (1 layer:
25.8 against 45.4 %). The tests run seed 0.
"""
from __future__ import annotations

import pytest

from conftest import require_data
from rate_decoder import RunConfig, load_preset, run

N_TRAIN, N_TEST, READOUT_EPOCHS = 5000, 2000, 20
MARGIN = {1: 0.05, 2: 0.03}

pytestmark = pytest.mark.slow

_results: dict[tuple, float] = {}


def accuracy(tmp_path_factory, monkeypatch, layers: int, rule: str, mode: str = "greedy",
             synapse: str | None = None) -> float:
    """Test accuracy of one run on the CIFAR-10 subset (cached: the random baseline serves several tests)."""
    key = (layers, rule, mode, synapse)
    if key not in _results:
        monkeypatch.setenv("SOFTHEBB_DATA", str(require_data("cifar10.npz").parent))
        preset = load_preset("cifar10", layers, width_factor=1.0 if layers == 1 else 0.5)  # half width: a short test
        config = RunConfig(preset, rule=rule, mode=mode, seed=0, n_train=N_TRAIN, n_test=N_TEST,
                           readout_epochs=READOUT_EPOCHS, synapse=synapse)
        out = tmp_path_factory.mktemp("learning")
        _results[key] = run(config, out / "run", progress=False)["test_acc"]
    return _results[key]


def test_one_layer_beats_random_weights(tmp_path_factory, monkeypatch):
    learnt = accuracy(tmp_path_factory, monkeypatch, 1, "softhebb")
    random = accuracy(tmp_path_factory, monkeypatch, 1, "random")
    assert learnt - random > MARGIN[1], f"SoftHebb {learnt:.4f} against random weights {random:.4f}"


@pytest.mark.parametrize("mode", ["greedy", "consecutive"])
def test_two_layers_beat_random_weights(tmp_path_factory, monkeypatch, mode):
    learnt = accuracy(tmp_path_factory, monkeypatch, 2, "softhebb", mode)
    random = accuracy(tmp_path_factory, monkeypatch, 2, "random", mode)
    assert learnt - random > MARGIN[2], f"SoftHebb ({mode}) {learnt:.4f} against random weights {random:.4f}"


def test_learning_through_a_linear_device_beats_random_weights(tmp_path_factory, monkeypatch):
    learnt = accuracy(tmp_path_factory, monkeypatch, 1, "softhebb", synapse="linear64:w_max_unit=12")
    random = accuracy(tmp_path_factory, monkeypatch, 1, "random")
    assert learnt - random > MARGIN[1], f"SoftHebb on 64 states {learnt:.4f} against random weights {random:.4f}"
