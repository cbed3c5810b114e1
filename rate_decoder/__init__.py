"""Multilayer SoftHebb as a rate-coded PyTorch network: layers, presets, the typed run config and the run.

Example::

    from rate_decoder import RunConfig, SoftHebbNet, load_preset, run

    preset = load_preset("digits")                         # presets are data: rate_decoder/presets/*.toml
    net = SoftHebbNet(preset)                              # the hidden blocks and the linear readout
    metrics = run(RunConfig(preset, mode="greedy", seed=0, readout_epochs=5), "runs/digits", progress=False)

Importing the package costs little beyond torch itself (measured: ``python -X importtime -c "import
rate_decoder"``, 40 ms of its 1.8 s are this package); matplotlib, torchvision, scikit-learn and the
device models are imported only by the functions that use them. ``rate_decoder.run`` is the function
here; its module is ``importlib.import_module("rate_decoder.run")``.
"""
from . import rules
from .backprop import train_backprop
from .config import (ConfigError, LayerSpec, Preset, ReadoutSpec, RunConfig, UnsupervisedSpec, available_presets,
                     load_preset)
from .data import Dataset, DataError, data_dir, load_dataset
from .features import extract_features
from .layers import SoftHebbConv2d, SoftHebbLinear
from .network import SoftHebbNet, configure_cpu
from .readout import accuracy, train_readout
from .run import CheckpointError, evaluate, load_checkpoint, run
from .unsupervised import train_unsupervised

__all__ = [
    "CheckpointError", "ConfigError", "DataError", "Dataset", "LayerSpec", "Preset", "ReadoutSpec", "RunConfig",
    "SoftHebbConv2d", "SoftHebbLinear", "SoftHebbNet", "UnsupervisedSpec", "accuracy", "available_presets",
    "configure_cpu", "data_dir", "evaluate", "extract_features", "load_checkpoint", "load_dataset", "load_preset",
    "rules", "run", "train_backprop", "train_readout", "train_unsupervised",
]
