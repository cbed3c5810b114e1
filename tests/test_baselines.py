"""The baselines differ from SoftHebb only in what they name.

The random-weight baseline is SoftHebb's network and protocol without the Hebbian update: its batch
norms take the same pass over the unsupervised data (same batches, order and train/eval modes), its
weights stay the initial ones.
"""
import copy
import dataclasses

import pytest
import torch

from rate_decoder import RunConfig, SoftHebbNet, load_dataset, load_preset, run
from rate_decoder.unsupervised import fit_batch_norms, forward_step, train_unsupervised


def two_layer_digits():
    preset = load_preset("digits")
    return dataclasses.replace(preset, layers=preset.layers + (dataclasses.replace(preset.layers[0], out_channels=32),))


@pytest.mark.parametrize("mode", ["greedy", "consecutive"])
def test_batch_norm_fit_equals_the_plasticity_free_epoch(mode):
    """Chunked statistics equal one train-mode forward per batch (995 images: a last batch of 5)."""
    data = load_dataset("digits")
    torch.manual_seed(0)
    reference = SoftHebbNet(two_layer_digits(), rule="random")
    fitted = copy.deepcopy(reference)
    train_unsupervised(reference, data.x_train[:995], mode, 10, seed=3, progress=False, step=forward_step)
    fit_batch_norms(fitted, data.x_train[:995], mode, 10, seed=3, progress=False, batches_per_chunk=7)
    for (name, a), (_, b) in zip(reference.state_dict().items(), fitted.state_dict().items(), strict=True):
        if a.is_floating_point():
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)
        else:
            assert torch.equal(a, b), name
    assert fitted.blocks[1].bn.num_batches_tracked == 100  # one momentum update per batch


def test_random_baseline_fits_batch_norms_and_keeps_the_initial_weights(tmp_path):
    preset = two_layer_digits()
    run(RunConfig(preset, rule="random", readout_epochs=1), tmp_path / "r", progress=False)
    state = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)["net"]
    torch.manual_seed(0)
    initial = SoftHebbNet(preset, rule="random").state_dict()
    for i in range(2):
        assert torch.equal(state[f"blocks.{i}.conv.weight"], initial[f"blocks.{i}.conv.weight"])
        assert state[f"blocks.{i}.bn.num_batches_tracked"] > 0
        assert not torch.allclose(state[f"blocks.{i}.bn.running_var"], torch.ones_like(state[f"blocks.{i}.bn.running_var"]))
