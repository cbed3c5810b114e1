"""Mistakes a new user makes at the command line: each is one line ``softhebb: error: ...``, exit status 2,
no traceback, and no run directory left behind."""
import numpy as np
import pytest
import torch

from experiments.cli import main as cli
from rate_decoder.config import RunConfig, load_preset
from rate_decoder.data import DataError, Dataset, check_dataset, load_dataset

LAYER = ('[[layers]]\nout_channels = {width}\nkernel_size = 3\ninverse_temperature = {t}\nlr = 0.08\n'
         'lr_power = {lr_power}\nactivation = "triangle"\npool = "max_4_2_1"\n')


def preset_file(path, dataset="digits", width=16, t=1.0, lr_power=0.5, dropout=0.5, n_classes=10):
    path.write_text(f'dataset = "{dataset}"\nin_channels = 1\nimage_size = 8\nn_classes = {n_classes}\n'
                    f'[readout]\ndropout = {dropout}\nepochs = 1\n' + LAYER.format(width=width, t=t, lr_power=lr_power))
    return str(path)


def error_of(argv, capsys, out=None):
    """The stderr error line of a failing command (checked: status 2, one line, no traceback, no run directory)."""
    assert cli(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("softhebb: error: ")]
    assert len(lines) == 1 and err.strip().splitlines()[-1] == lines[0], err
    if out is not None:
        assert not out.exists(), "a run directory was made before the error"
    return lines[0]


def train(tmp_path, *options):
    out = tmp_path / "run"
    return ["train", "--quiet", "--out", str(out), *options], out


def test_labels_outside_the_presets_classes(tmp_path, capsys, monkeypatch):
    digits = load_dataset("digits")
    y_train = digits.y_train.numpy().copy()
    y_train[5] = 11
    np.savez(tmp_path / "digits12.npz", x_train=digits.x_train.permute(0, 2, 3, 1).numpy(), y_train=y_train,
             x_test=digits.x_test.permute(0, 2, 3, 1).numpy(), y_test=digits.y_test.numpy())
    monkeypatch.setenv("SOFTHEBB_DATA", str(tmp_path))
    argv, out = train(tmp_path, "--preset", preset_file(tmp_path / "p.toml", dataset="digits12"))
    message = error_of(argv, capsys, out)
    assert "training labels lie in [0, 11] but preset 'p' has n_classes = 10" in message


def test_label_arrays_of_the_wrong_dtype_or_length_are_refused_before_training():
    preset = load_preset("digits")
    d = load_dataset("digits").subset(20, 10)
    with pytest.raises(DataError, match="training labels must be integers, got dtype torch.float32"):
        check_dataset(Dataset("d", d.x_train, d.y_train.float(), d.x_test, d.y_test, d.classes), preset)
    with pytest.raises(DataError, match="10 test images but 9 labels"):
        check_dataset(Dataset("d", d.x_train, d.y_train, d.x_test, d.y_test[:9], d.classes), preset)
    x = d.x_test.float()
    x[-1, 0, 0, 0] = float("nan")  # the last image, not the first
    with pytest.raises(DataError, match="test split: image 9 of 10 contains NaN"):
        check_dataset(Dataset("d", d.x_train, d.y_train, x, d.y_test, d.classes), preset)
    with pytest.raises(DataError, match=r"expects images of shape \(N, 1, 8, 8\)"):
        check_dataset(Dataset("d", d.x_train[:, :, :4], d.y_train, d.x_test, d.y_test, d.classes), preset)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu(tmp_path, capsys):
    argv, out = train(tmp_path, "--device", "cuda")
    assert "'cuda' asked for, but this machine has no usable CUDA GPU" in error_of(argv, capsys, out)


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "gpu0"])
def test_unknown_device(tmp_path, capsys, device):
    argv, out = train(tmp_path, "--device", device)
    assert f"unknown device {device!r}; use cpu, cuda or cuda:N" in error_of(argv, capsys, out)


@pytest.mark.parametrize("width", [-5, 0])
def test_preset_with_a_negative_or_zero_width(tmp_path, capsys, width):
    argv, out = train(tmp_path, "--preset", preset_file(tmp_path / "w.toml", width=width))
    assert f"layer 1: out_channels must be a positive integer, got {width}" in error_of(argv, capsys, out)


def test_bad_numbers_in_a_preset_are_listed_together(tmp_path, capsys):
    argv, out = train(tmp_path, "--preset", preset_file(tmp_path / "n.toml", t=0, lr_power=-1, dropout=1.5))
    message = error_of(argv, capsys, out)
    assert "layer 1: inverse_temperature must be a positive finite number, got 0.0" in message
    assert "layer 1: lr_power must be a finite number >= 0, got -1.0" in message
    assert "[readout] dropout must be a probability in [0, 1), got 1.5" in message


@pytest.mark.parametrize("options, expected", [
    (["--n-train", "0"], "n_train must be a positive integer, got 0"),
    (["--readout-epochs", "-2"], "readout_epochs must be a positive integer, got -2"),
    (["--seed", "-1"], "seed must be an integer in [0, 2**32), got -1"),
    (["--width-factor", "0"], "width_factor must be a positive finite number, got 0.0"),
    (["--width-factor", "nan"], "width_factor must be a positive finite number, got nan"),
    (["--layers", "0"], "--layers 0 is out of range"),
    (["--preset", "nope.toml"], "preset file nope.toml does not exist"),
    (["--rule", "backprop", "--synapse", "pcm"], "the backprop baseline has none"),
])
def test_bad_numbers_and_options_on_the_command_line(tmp_path, capsys, options, expected):
    argv, out = train(tmp_path, *options)
    assert expected in error_of(argv, capsys, out)


def test_corrupt_checkpoint_under_resume(tmp_path, capsys):
    argv, out = train(tmp_path, "--n-train", "100", "--readout-epochs", "1")
    assert cli(argv) == 0
    capsys.readouterr()
    ckpt = out / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:2000])
    message = error_of(argv + ["--resume"], capsys)
    assert f"checkpoint {ckpt} is corrupt or unreadable" in message
    assert "weights_only" not in message and "Weights only" not in message  # torch's unpickling advice
    ckpt.write_bytes(b"not a checkpoint at all")
    assert f"checkpoint {ckpt} is corrupt" in error_of(argv + ["--resume"], capsys)
    ckpt.unlink()  # nothing saved yet: --resume starts the run, with a one-line notice
    assert cli(argv + ["--resume"]) == 0
    assert f"--resume: no checkpoint in {out} yet, starting the run" in capsys.readouterr().err
    assert ckpt.exists()


def test_resume_names_the_changed_options(tmp_path, capsys):
    argv, out = train(tmp_path, "--n-train", "100", "--readout-epochs", "1")
    assert cli(argv) == 0
    message = error_of(argv + ["--resume", "--seed", "3", "--width-factor", "0.5"], capsys)
    assert "options differ from the interrupted run in ['preset.layers[0].out_channels', 'preset.width_factor', " \
           "'seed']" in message


def test_deprecated_mode_name_still_runs_with_a_note(tmp_path, capsys):
    argv, out = train(tmp_path, "--mode", "simultaneous", "--n-train", "100", "--readout-epochs", "1")
    assert cli(argv) == 0
    err = capsys.readouterr().err
    assert "softhebb: note: --mode simultaneous is deprecated" in err and "--mode consecutive" in err
    assert RunConfig.from_dict(__import__("json").loads((out / "config.json").read_text())).mode == "consecutive"
