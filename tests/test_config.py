"""The typed run config: built from presets and plain data, every value checked, JSON round trip, mode rename."""
import dataclasses
import json
import subprocess
import sys
import warnings

import pytest
import torch

from rate_decoder.activations import make_activation
from rate_decoder.config import (ACTIVATIONS, ConfigError, LayerSpec, Preset, ReadoutSpec, RunConfig, UnsupervisedSpec,
                                 available_presets, load_preset)
from rate_decoder.data import data_dir
from rate_decoder.run import CHECKPOINT_VERSION, load_checkpoint, run
from rate_decoder.validation import differences

LAYER = dict(out_channels=8, kernel_size=3, inverse_temperature=1.0, lr=0.08, lr_power=0.5, activation="triangle",
             pool="max_4_2_1")


def layer(**changes):
    return LayerSpec(**{**LAYER, **changes})


@pytest.mark.parametrize("name", available_presets())
def test_every_preset_round_trips_through_json(name):
    config = RunConfig(load_preset(name), rule="hardwta", mode="consecutive", seed=7, normalisation="fixed",
                       precision="bf16", n_train=100, n_test=50, readout_epochs=3, data_dir="/data", download=True,
                       synapse="pcm")
    assert RunConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_records_are_frozen_and_replace_checks_again():
    preset = load_preset("digits")
    with pytest.raises(dataclasses.FrozenInstanceError):
        preset.n_classes = 3
    with pytest.raises(ConfigError, match="n_classes must be a positive integer, got 0"):
        dataclasses.replace(preset, n_classes=0)
    assert isinstance(LayerSpec(**{**LAYER, "lr": 1}).lr, float)  # an int given for a float is stored as one


@pytest.mark.parametrize("field, value, message", [
    ("out_channels", 0, "out_channels must be a positive integer, got 0"),
    ("out_channels", -4, "out_channels must be a positive integer, got -4"),
    ("out_channels", 2.5, "out_channels must be a positive integer, got 2.5"),
    ("out_channels", True, "out_channels must be a positive integer, got True"),
    ("kernel_size", 4, "kernel_size must be a positive odd integer"),
    ("inverse_temperature", 0.0, "inverse_temperature must be a positive finite number"),
    ("inverse_temperature", float("inf"), "inverse_temperature must be a positive finite number, got inf"),
    ("lr", float("nan"), "lr must be a positive finite number, got nan"),
    ("lr_power", -1.0, "lr_power must be a finite number >= 0, got -1.0"),
    ("radius", -25.0, "radius must be a positive finite number"),
    ("activation_power", 0.0, "activation_power must be a positive finite number"),
    ("activation", "sigmoid", "unknown activation 'sigmoid'; choose one of triangle, repu, relu, tanh, softmax"),
    ("pool", "max_4_2", "pooling 'max_4_2' is not of the form"),
    ("pool", "min_2_2_0", "unknown pooling type 'min'"),
    ("pool", "max_2_2_3", "0 <= padding <= kernel // 2"),
    ("pre_triangle", "yes", "pre_triangle must be true or false"),
])
def test_layer_values_are_checked(field, value, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        layer(**{field: value})


@pytest.mark.parametrize("cls, field, value, message", [
    (ReadoutSpec, "dropout", 1.0, r"dropout must be a probability in \[0, 1\), got 1.0"),
    (ReadoutSpec, "dropout", -0.1, "dropout must be a probability"),
    (ReadoutSpec, "lr", 0.0, "lr must be a positive finite number"),
    (ReadoutSpec, "batch_size", 0, "batch_size must be a positive integer"),
    (ReadoutSpec, "epochs", 0, "epochs must be a positive integer"),
    (ReadoutSpec, "augment", "rotate", "unknown augmentation 'rotate'"),
    (ReadoutSpec, "augment_pad", -1, "augment_pad must be a non-negative integer"),
    (UnsupervisedSpec, "batch_size", -10, "batch_size must be a positive integer"),
    (UnsupervisedSpec, "epochs", 2, "epochs must be 1"),
    (UnsupervisedSpec, "split", "validation", "unknown split 'validation'"),
])
def test_table_values_are_checked(cls, field, value, message):
    with pytest.raises(ConfigError, match=message):
        cls(**{field: value})


def test_preset_values_and_geometry_are_checked():
    preset = load_preset("digits")
    for changes, message in [
        (dict(image_size=0), "image_size must be a positive integer"),
        (dict(in_channels=-1), "in_channels must be a positive integer"),
        (dict(normalize="imagenet"), "normalize 'imagenet' standardises 3 colour channels"),
        (dict(normalize="zscore"), "unknown normalize 'zscore'"),
        (dict(layers=()), "layers must be a non-empty tuple of LayerSpec"),
        (dict(image_size=2, layers=(layer(kernel_size=5),)), "needs reflect padding 2, more than its 2 px input"),
        (dict(layers=(layer(),) * 4), "layer 4's 3x3 kernel needs reflect padding 1, more than its 1 px input"),
        (dict(image_size=2, layers=(layer(kernel_size=1, pool="max_4_4_0"),)), "layer 1's pooling 'max_4_4_0' leaves"),
        (dict(readout=ReadoutSpec(augment="crop_flip", augment_pad=8)), r"\[readout\] augment_pad must be"),
    ]:
        with pytest.raises(ConfigError, match=message):
            dataclasses.replace(preset, **changes)


@pytest.mark.parametrize("changes, message", [
    (dict(rule="oja"), "unknown rule 'oja'"),
    (dict(mode="hybrid"), "unknown training mode 'hybrid'"),
    (dict(normalisation="l2"), "unknown update normalisation 'l2'"),
    (dict(precision="fp8"), "unknown precision 'fp8'"),
    (dict(seed=-1), r"seed must be an integer in \[0, 2\*\*32\)"),
    (dict(seed=1.5), "seed must be an integer"),
    (dict(n_test=0), "n_test must be a positive integer"),
    (dict(readout_epochs=2.0), "readout_epochs must be a positive integer"),
    (dict(download="yes"), "download must be true or false"),
    (dict(preset={"name": "x"}), "preset must be a Preset, got dict"),
])
def test_run_options_are_checked(changes, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig(**{"preset": load_preset("digits"), **changes})


def test_every_problem_of_a_file_is_listed(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('dataset = "mnist"\nin_channels = 1\nimage_size = 28\nn_classes = 0\ncolour = 1\n'
                   '[readout]\nlr = -1\n[[layers]]\nout_channels = -2\nkernel_size = 3\ninverse_temperature = 0\n'
                   'lr = 0.1\nlr_power = 0.5\nactivation = "triangle"\npool = "max_4_2_1"\n'
                   '[[layers]]\nkernel_size = 3\n')
    with pytest.raises(ConfigError) as err:
        load_preset(str(bad))
    assert err.value.problems == [
        "has unknown key 'colour'", "layer 1: out_channels must be a positive integer, got -2",
        "layer 1: inverse_temperature must be a positive finite number, got 0.0", "layer 2: lacks 'out_channels'",
        "layer 2: lacks 'inverse_temperature'", "layer 2: lacks 'lr'", "layer 2: lacks 'lr_power'",
        "layer 2: lacks 'activation'", "layer 2: lacks 'pool'",
        "[readout] lr must be a positive finite number, got -1.0",
        "n_classes must be a positive integer, got 0"]
    assert str(err.value).startswith(f"invalid preset {bad}: has unknown key 'colour'; layer 1: ")


def test_the_former_mode_name_is_mapped_with_a_deprecation_warning():
    preset = load_preset("digits")
    with pytest.warns(DeprecationWarning, match="'simultaneous' is deprecated: it is called 'consecutive'"):
        config = RunConfig(preset, mode="simultaneous")
    assert config.mode == "consecutive" and config.to_dict()["mode"] == "consecutive"
    with pytest.warns(DeprecationWarning):
        assert RunConfig.from_dict(dict(config.to_dict(), mode="simultaneous")) == config
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        RunConfig(preset, mode="consecutive")  # the current name does not warn


def test_differences_name_the_changed_fields():
    a = RunConfig(load_preset("digits"))
    b = dataclasses.replace(a, seed=2, preset=load_preset("digits", width_factor=2))
    assert differences(a, b) == ["preset.layers[0].out_channels", "preset.width_factor", "seed"]
    assert differences(a, a) == []


def test_activation_names_match_the_activations_module():
    for name in ACTIVATIONS:
        make_activation(name, 1.0)


def test_format_1_checkpoints_are_read(tmp_path):
    """Format 1 stored the config as a plain dict without defaults and named consecutive mode "simultaneous"."""
    config = RunConfig(load_preset("digits"), mode="consecutive", n_train=100, readout_epochs=1)
    run(config, tmp_path / "r", progress=False)
    path = tmp_path / "r" / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    assert state["version"] == CHECKPOINT_VERSION == 2
    old = {"preset": {k: v for k, v in config.preset.to_dict().items() if k != "width_factor"}, "rule": "softhebb",
           "mode": "simultaneous", "seed": 0, "normalisation": "global", "n_train": 100, "readout_epochs": 1}
    old["preset"]["layers"] = [{k: v for k, v in layer.items() if k not in ("radius", "pre_triangle")}
                               for layer in old["preset"]["layers"]]
    torch.save(dict(state, version=1, config=json.dumps(old)), tmp_path / "v1.pt")
    assert load_checkpoint(tmp_path / "v1.pt")[1] == config


def test_data_dir_is_the_argument_else_the_environment_else_none(monkeypatch, tmp_path):
    monkeypatch.setenv("SOFTHEBB_DATA", str(tmp_path))
    assert data_dir("elsewhere").name == "elsewhere" and data_dir() == tmp_path
    monkeypatch.delenv("SOFTHEBB_DATA")
    assert data_dir() is None


@pytest.mark.parametrize("module", ["rate_decoder", "rate_decoder.config", "rate_decoder.network", "rate_decoder.run"])
def test_docstring_examples_run(module, tmp_path, monkeypatch):
    """Every ``Example::`` block of the module's docstrings runs (in a scratch directory)."""
    import importlib
    import inspect
    import textwrap

    mod = importlib.import_module(module)
    docs = [mod.__doc__] + [getattr(obj, "__doc__", None) for _, obj in inspect.getmembers(mod)
                            if getattr(obj, "__module__", None) == mod.__name__]
    blocks = []
    for doc in filter(None, docs):
        lines = inspect.cleandoc(doc).splitlines()
        for i in (i for i, line in enumerate(lines) if line.strip() == "Example::"):
            body = []
            for line in lines[i + 1:]:
                if line.strip() and not line.startswith(" "):
                    break
                body.append(line)
            blocks.append(textwrap.dedent("\n".join(body)))
    assert blocks, f"{module} has no example"
    monkeypatch.chdir(tmp_path)
    import rate_decoder

    for block in blocks:
        exec(block, {name: getattr(rate_decoder, name) for name in rate_decoder.__all__}
             | {"json": json, "dataclasses": dataclasses, "torch": torch})


def test_top_level_api_is_complete_and_cheap():
    import rate_decoder

    assert all(hasattr(rate_decoder, name) for name in rate_decoder.__all__)
    assert callable(rate_decoder.run) and rate_decoder.Preset is Preset
    code = ("import sys; from rate_decoder import SoftHebbNet, load_preset, run, RunConfig, rules; "
            "print(sorted(m for m in ('matplotlib', 'torchvision', 'sklearn', 'brian2', 'hardware_models', 'PIL') "
            "if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_softmax_activation_is_the_layers_soft_wta_and_the_cli_sets_it_everywhere():
    """``softmax`` is softmax(t u) at each layer's own inverse temperature (the spiking layer's output shares);
    ``--activation`` replaces every block's activation and renames the preset."""
    from experiments.cli import build_config, parser
    from rate_decoder import SoftHebbNet, rules
    preset = load_preset("mnist", layers=2, width_factor=0.1)
    args = parser().parse_args(["train", "--preset", "mnist", "--layers", "2", "--width-factor", "0.1",
                                "--activation", "softmax"])
    config = build_config(args)
    assert [layer.activation for layer in config.preset.layers] == ["softmax", "softmax"]
    assert config.preset.name == "mnist-first2-softmax"
    net = SoftHebbNet(config.preset)
    u = torch.randn(2, preset.layers[1].out_channels, 3, 3)
    torch.testing.assert_close(net.blocks[1].activation(u), rules.soft_wta(u, preset.layers[1].inverse_temperature, dim=1))
    assert preset.layers[1].inverse_temperature != preset.layers[0].inverse_temperature


def test_unsupervised_batch_scales_the_rates():
    from rate_decoder.config import ConfigError, with_unsupervised_batch
    base = load_preset("cifar10")
    root = with_unsupervised_batch(base, 40)
    assert root.unsupervised.batch_size == 40 and root.name == "cifar10-b40-sqrt"
    assert [layer.lr for layer in root.layers] == pytest.approx([2 * layer.lr for layer in base.layers])
    linear = with_unsupervised_batch(base, 40, "linear")
    assert linear.name == "cifar10-b40-linear"
    assert [layer.lr for layer in linear.layers] == pytest.approx([4 * layer.lr for layer in base.layers])
    assert with_unsupervised_batch(base, 40, "none").layers == base.layers
    for bad in (0, 2.5, "10"):
        with pytest.raises(ConfigError, match="positive integer"):
            with_unsupervised_batch(base, bad)
    with pytest.raises(ConfigError, match="unknown learning-rate scaling"):
        with_unsupervised_batch(base, 20, "cubic")


def test_the_cli_scales_the_rates_of_another_unsupervised_batch():
    """``--unsupervised-batch`` takes the square-root scaling unless ``--lr-scaling`` names another."""
    from experiments.cli import build_config, parser
    base = load_preset("cifar10")
    for extra, factor in (([], 2.0), (["--lr-scaling", "linear"], 4.0), (["--lr-scaling", "none"], 1.0)):
        args = parser().parse_args(["train", "--preset", "cifar10", "--unsupervised-batch", "40", *extra])
        preset = build_config(args).preset
        assert preset.unsupervised.batch_size == 40
        assert [layer.lr for layer in preset.layers] == pytest.approx([factor * layer.lr for layer in base.layers])
