"""A training run and its directory: resolved config, metrics, atomic checkpoints, kernel picture, resume.

Run directory::

    config.json      the resolved preset and options
    checkpoint.pt    weights, batch-norm statistics, readout and progress (written atomically)
    metrics.json     per-epoch readout metrics, final test accuracy, phase timings, peak memory
    kernels.png      the first layer's kernels

A checkpoint is written after every unsupervised block and every readout epoch; ``resume=True``
continues from the last one. Files are written to a temporary name and renamed, so an interrupted
write never leaves a half-written checkpoint or metrics file behind.

A feature cache too large for RAM (:func:`~rate_decoder.training.extract_features`) is a memory-mapped
file in the run directory, unlinked as soon as it is created: it uses disk space while the run lives
but never shows in the directory and never outlives the process.
"""
from __future__ import annotations

import json
import os
import resource
import tempfile
import time
from pathlib import Path

import torch

from .data import INPUT_NORMALISATIONS, UNSUPERVISED_SPLITS, load_dataset, to_float
from .layers import NORMALISATIONS
from .network import PRECISIONS, RULE_CHOICES, SoftHebbNet
from .training import (AUGMENTATIONS, MODES, accuracy, augment, configure_cpu, extract_features, train_backprop,
                       train_readout, train_unsupervised)

CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt or holds unusable values."""


class ConfigError(ValueError):
    """A run configuration holds an option that training would reject (or misuse) later."""


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_config(config: dict) -> None:
    """Raise :class:`ConfigError` listing every unusable option of ``config`` (the dict :func:`run` takes).

    Checked from the config alone, in microseconds, before data are loaded or a run directory is
    made: a bad readout augmentation used to fail only after the unsupervised phase, hours into an
    ImageNet run. Preset values that :func:`~rate_decoder.network.load_preset` sets but a caller may
    since have edited (augmentation, normalisation, split, batch sizes) are checked too, and the
    optional ``[unsupervised] augment`` / ``augment_pad`` (default ``"none"``) like the readout's.
    The layers' activations and pooling are checked when the network is built, which also precedes
    training.
    """
    problems = [f"lacks {key!r}" for key in ("preset", "rule", "seed") if key not in config]
    rule = config.get("rule")
    if "rule" in config and rule not in RULE_CHOICES:
        problems.append(f"unknown rule {rule!r}; choose one of {RULE_CHOICES}")
    if rule not in ("random", "backprop") and config.get("mode") not in MODES:
        problems.append(f"unknown training mode {config.get('mode')!r}; choose one of {MODES}")
    if config.get("normalisation", "global") not in NORMALISATIONS:
        problems.append(f"unknown update normalisation {config['normalisation']!r}; choose one of {NORMALISATIONS}")
    if config.get("precision", "fp32") not in PRECISIONS:
        problems.append(f"unknown precision {config['precision']!r}; choose one of {tuple(PRECISIONS)}")
    if "seed" in config and not _is_int(config["seed"]):
        problems.append(f"seed must be an integer, got {config['seed']!r}")
    for key in ("n_train", "n_test", "readout_epochs"):
        value = config.get(key)
        if value is not None and not (_is_int(value) and value >= 1):
            problems.append(f"{key} must be a positive integer, got {value!r}")
    preset = config.get("preset")
    if isinstance(preset, dict):
        readout, unsupervised = preset.get("readout", {}), preset.get("unsupervised", {})
        size = preset.get("image_size")
        for part, table in (("unsupervised", unsupervised), ("readout", readout)):
            kind, pad = table.get("augment", "none"), table.get("augment_pad", 4)
            if kind not in AUGMENTATIONS:
                problems.append(f"unknown {part} augmentation {kind!r}; choose one of {AUGMENTATIONS}")
            if kind == "crop_flip" and _is_int(size) and not (_is_int(pad) and 0 <= pad < size):
                problems.append(f"{part} augment_pad must be an integer in [0, image_size) for reflect padding, "
                                f"got {pad!r} (image_size {size!r})")
            batch = table.get("batch_size", 1)
            if not (_is_int(batch) and batch >= 1):
                problems.append(f"[{part}] batch_size must be a positive integer, got {batch!r}")
        if preset.get("normalize", "none") not in INPUT_NORMALISATIONS:
            problems.append(f"unknown input normalize {preset['normalize']!r}; choose one of {INPUT_NORMALISATIONS}")
        if rule not in ("random", "backprop") and unsupervised.get("split", "train") not in UNSUPERVISED_SPLITS:
            problems.append(f"unknown unsupervised split {unsupervised['split']!r}; choose one of "
                            f"{UNSUPERVISED_SPLITS}")
    elif "preset" in config:
        problems.append(f"preset must be a dict from load_preset, got {type(preset).__name__}")
    if problems:
        raise ConfigError("invalid run configuration: " + "; ".join(problems))


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path`` (same directory, so the rename is atomic)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json(path: Path, obj) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n"))


def save_checkpoint(path: Path, net: SoftHebbNet, config: dict, progress: dict) -> None:
    optimizer = progress.pop("_optimizer", None)
    state = {"version": CHECKPOINT_VERSION, "config": json.dumps(config), "progress": json.dumps(progress),
             "net": net.state_dict(), "optimizer": optimizer}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: Path, device=None) -> tuple[SoftHebbNet, dict, dict, dict | None]:
    """Rebuild the network of a checkpoint: ``(net, config, progress, optimizer_state)``.

    Raises :class:`CheckpointError` for a missing or corrupt file and for non-finite weights.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        config, progress = json.loads(state["config"]), json.loads(state["progress"])
    except Exception as err:  # torch raises many types for a damaged file
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable ({type(err).__name__}: {err})") from None
    for name, tensor in state["net"].items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"checkpoint {path} holds non-finite values in {name!r}")
    net = SoftHebbNet(config["preset"], rule=config["rule"], normalisation=config.get("normalisation", "global"),
                      precision=config.get("precision", "fp32"))
    try:
        net.load_state_dict(state["net"])
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {path} does not match its own config ({err})") from None
    return net.to(device), config, progress, state.get("optimizer")


def save_kernels_png(net: SoftHebbNet, path: Path) -> None:
    """A grid of the first layer's kernels, each min-max scaled (RGB when the input has 3 channels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w = net.kernels().float().cpu()
    k = w.shape[0]
    cols = min(16, k)
    rows = (k + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.6, rows * 0.6), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < k:
            x = w[i]
            x = (x - x.min()) / (x.max() - x.min() + 1e-12)
            ax.imshow(x.permute(1, 2, 0).numpy() if x.shape[0] == 3 else x[0].numpy(), cmap="gray")
    fig.suptitle(f"layer-1 kernels ({net.rule})", fontsize=8)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


def peak_memory_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run(config: dict, out_dir: str | os.PathLike, resume: bool = False, device=None, progress: bool = True,
        synapse_factory=None) -> dict:
    """Train and evaluate one configuration; returns the metrics written to ``metrics.json``.

    ``config`` holds ``preset`` (a dict from :func:`load_preset`), ``rule``, ``mode``, ``seed`` and
    optional ``n_train``/``n_test``/``readout_epochs``/``data_dir``/``download``/``normalisation``.
    ``synapse_factory(layer_index)`` returns a device model per Hebbian layer (``None``: exact float).

    The whole config (:func:`validate_config`) and the synapse models are checked first: a bad
    option fails before any data are read or any layer is trained.
    """
    validate_config(config)
    n_layers = len(config["preset"]["layers"])
    if synapse_factory is not None and config["rule"] == "backprop":
        raise ConfigError("a synapse model applies to Hebbian layers; the backprop baseline has none")
    synapses = None if synapse_factory is None else [synapse_factory(i) for i in range(n_layers)]
    out = Path(out_dir)
    ckpt = out / "checkpoint.pt"
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if str(device) == "cpu":
        configure_cpu()
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    if resume:
        net, saved, progress_state, optimizer_state = load_checkpoint(ckpt, device)
        if saved != config:
            changed = sorted(k for k in set(saved) | set(config) if saved.get(k) != config.get(k))
            raise CheckpointError(f"--resume: options differ from the interrupted run in {changed}")
        timings = progress_state.get("timings", {})
    else:
        if ckpt.exists():
            raise FileExistsError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
        out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(config["seed"])
        net = SoftHebbNet(config["preset"], rule=config["rule"], normalisation=config.get("normalisation", "global"),
                          device=device, precision=config.get("precision", "fp32"))
        progress_state, optimizer_state = {"blocks_done": 0, "readout_epoch": 0, "history": []}, None
        write_json(out / "config.json", config)
    if synapses is not None:
        for block, synapse in zip(net.blocks, synapses, strict=True):
            block.conv.attach_synapse(synapse)

    preset = config["preset"]
    unsupervised_split = preset["unsupervised"].get("split", "train")
    data = load_dataset(preset["dataset"], config.get("data_dir"), config.get("download", False),
                        preset["image_size"], unlabeled=unsupervised_split == "unlabeled"
                        ).subset(config.get("n_train"), config.get("n_test"))
    net.check_input(data.x_train[:1])
    has_unsupervised_phase = config["rule"] not in ("random", "backprop")
    unsupervised_images = data.unsupervised_images(unsupervised_split) if has_unsupervised_phase else None

    def checkpoint(**update):
        progress_state.update(update, timings=timings)
        save_checkpoint(ckpt, net, config, progress_state)

    rule, L = config["rule"], len(net.blocks)
    epochs = config.get("readout_epochs") or preset["readout"]["epochs"]
    if rule == "backprop":
        t = time.perf_counter()
        history = train_backprop(net, data.x_train, data.y_train, data.x_test, data.y_test, epochs,
                                 preset["readout"]["batch_size"], preset["readout"]["lr"], config["seed"], device,
                                 progress=progress)
        timings["backprop_s"] = time.perf_counter() - t
        progress_state.update(blocks_done=L, readout_epoch=epochs, history=history)
        checkpoint()
    else:
        if rule != "random" and progress_state["blocks_done"] < L:
            t = time.perf_counter()
            # the augmentation draws depend on (seed, batch) only: resuming at a later block redraws the same crops
            train_unsupervised(net, unsupervised_images, config["mode"], preset["unsupervised"]["batch_size"],
                               config["seed"], device, start_block=progress_state["blocks_done"],
                               on_block_done=lambda i: checkpoint(blocks_done=i + 1), progress=progress,
                               augmentation=preset["unsupervised"].get("augment", "none"),
                               augment_pad=preset["unsupervised"].get("augment_pad", 4))
            timings["unsupervised_s"] = timings.get("unsupervised_s", 0.0) + time.perf_counter() - t
        if progress_state["readout_epoch"] < epochs:
            t = time.perf_counter()
            augmentation = preset["readout"]["augment"]
            feature_fn = None
            if augmentation == "none":  # features are a fixed function of the image: compute them once
                train_f = extract_features(net, data.x_train, device=device, progress=progress, desc="train features",
                                           cache_dir=out)
            else:  # recomputed for every batch from augmented images
                pad = preset["readout"]["augment_pad"]
                train_f = data.x_train
                normalize = preset.get("normalize", "none")

                def feature_fn(images):
                    with torch.no_grad():
                        x = augment(to_float(images, device, normalize), augmentation, pad)
                        return net.features(x).flatten(1)
            net.eval()
            test_f = extract_features(net, data.x_test, device=device, progress=progress, desc="test features",
                                      cache_dir=out)
            timings["features_s"] = time.perf_counter() - t
            t = time.perf_counter()

            def on_epoch(epoch, metrics, optimizer_state):
                progress_state["history"].append(metrics)
                progress_state["_optimizer"] = optimizer_state
                checkpoint(readout_epoch=epoch)

            train_readout(net, train_f, data.y_train, test_f, data.y_test, epochs, preset["readout"]["batch_size"],
                          preset["readout"]["lr"], seed=0, device=device, start_epoch=progress_state["readout_epoch"],
                          optimizer_state=optimizer_state, on_epoch=on_epoch, progress=progress,
                          feature_fn=feature_fn)
            timings["readout_s"] = timings.get("readout_s", 0.0) + time.perf_counter() - t
            del train_f, test_f
    if rule != "backprop":
        save_kernels_png(net, out / "kernels.png")
    history = progress_state["history"]
    timings["this_invocation_s"] = time.perf_counter() - t_start
    metrics = {"test_acc": history[-1]["test_acc"], "history": history, "timings_s": timings,
               "peak_memory_gib": peak_memory_gib(), "n_train": len(data.x_train), "n_test": len(data.x_test),
               "device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads()}
    write_json(out / "metrics.json", metrics)
    return metrics


def evaluate(run_dir: str | os.PathLike, device=None, data_dir=None, n_test: int | None = None,
             progress: bool = True) -> float:
    """Test accuracy of a finished run's checkpoint (features recomputed from the stored weights)."""
    net, config, _, _ = load_checkpoint(Path(run_dir) / "checkpoint.pt", device)
    preset = config["preset"]
    data = load_dataset(preset["dataset"], data_dir or config.get("data_dir"), False, preset["image_size"])
    n_test = n_test if n_test is not None else config.get("n_test")
    data = data.subset(0, n_test)
    net.eval()
    if str(device or "cpu") == "cpu":
        configure_cpu()
    feats = extract_features(net, data.x_test, device=device, progress=progress, desc="test features",
                             cache_dir=run_dir)
    return accuracy(net.head, feats, data.y_test, device)
