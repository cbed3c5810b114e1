"""A training run and its directory: config, metrics, atomic checkpoints, kernel picture, resume.

Run directory::

    config.json      the run's :class:`~rate_decoder.config.RunConfig` (``to_dict``)
    checkpoint.pt    weights, batch-norm statistics, readout, config and progress (written atomically)
    features_*.bin   the frozen network's features while the readout needs them (+ ``.json`` progress)
    metrics.json     per-epoch readout metrics, final test accuracy, phase timings, peak memory
    kernels.png      the first layer's kernels

:func:`run` checks everything first -- the config (valid by construction), the device, the synapse
models, an interrupted run to resume, the dataset against the preset -- and only then makes the
directory and trains, phase by phase. A checkpoint is written after every unsupervised block, every
few minutes inside one, and after every readout epoch; the feature files record their progress every
few minutes too. ``resume=True`` continues from the last record and reproduces the uninterrupted run.
Files are written to a temporary name and renamed (the feature files' records after the rows are on
disk), so an interrupted write never leaves a half-written checkpoint, metrics file or record behind.
The feature files (CIFAR-10: 2.5 GB) are deleted when the readout ends.
"""
from __future__ import annotations

import fcntl
import json
import os
import platform
import resource
import sys
import tempfile
import time
import warnings
from collections.abc import Mapping
from functools import partial
from pathlib import Path

import torch

from .augment import augment
from .backprop import train_backprop
from .config import ConfigError, RunConfig
from .data import Dataset, check_dataset, load_dataset, to_float
from . import distributed
from .distributed import SINGLE, Distributed
from .features import FeatureCheckpoint, extract_features, extract_features_sharded, network_fingerprint
from .network import SoftHebbNet, configure_cpu
from .readout import accuracy, train_readout
from .unsupervised import fit_batch_norms, train_unsupervised
from .validation import differences

#: 2: the config is stored as ``RunConfig.to_dict()``; 1 stored the same options as a plain dict without
#: defaults (and ``mode = "simultaneous"`` for consecutive), which :meth:`RunConfig.from_dict` reads too
CHECKPOINT_VERSION = 2
READABLE_VERSIONS = (1, 2)


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, of an unknown format or holds unusable values."""


def resolve_device(device=None) -> torch.device:
    """``device`` (``None``: cuda if available, else cpu) checked against this machine: an error now, not later."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError([f"unknown device {device!r}; use cpu, cuda or cuda:N"], "device") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "no CUDA support"
            raise ConfigError([f"{device!r} asked for, but this machine has no usable CUDA GPU (torch "
                               f"{torch.__version__}, {build}); use --device cpu"], "device")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ConfigError([f"{device!r} asked for, but this machine has {torch.cuda.device_count()} CUDA GPU(s)"],
                              "device")
    elif resolved.type != "cpu":
        raise ConfigError([f"device {device!r} is not supported; use cpu, cuda or cuda:N"], "device")
    return resolved


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


def update_json(path: Path, update) -> dict:
    """Apply ``update(obj)`` to the JSON object at ``path`` (``{}`` if there is none) and write it back atomically.

    The read, the update and the write hold an exclusive lock on ``<path>.lock``, so processes adding
    entries to one results file at the same time keep each other's entries. Returns the object written.
    """
    path = Path(path)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        obj = json.loads(path.read_text()) if path.exists() else {}
        update(obj)
        write_json(path, obj)
    return obj


def build_network(config: RunConfig, device=None) -> SoftHebbNet:
    return SoftHebbNet(config.preset, rule=config.rule, normalisation=config.normalisation, device=device,
                       precision=config.precision)


def save_checkpoint(path: Path, net: SoftHebbNet, config: RunConfig, progress: dict,
                    optimizer_state: dict | None = None) -> None:
    state = {"version": CHECKPOINT_VERSION, "config": json.dumps(config.to_dict()), "progress": json.dumps(progress),
             "net": net.state_dict(), "optimizer": optimizer_state}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def _load_error(err: Exception) -> str:
    """A one-line reason for a file ``torch.load`` rejects: the first sentence of its error, without torch's
    advice on unpickling (which is about trusted files of other formats, not a damaged checkpoint)."""
    sentence = str(err).strip().split("\n")[0].split(". ")[0].strip()
    if len(sentence) < 4 or "weights_only" in str(err) or "Weights only" in sentence:
        return type(err).__name__
    return f"{type(err).__name__}: {sentence[:120]}"


def load_checkpoint(path: Path, device=None) -> tuple[SoftHebbNet, RunConfig, dict, dict | None]:
    """Rebuild the network of a checkpoint: ``(net, config, progress, optimizer_state)``.

    Raises :class:`CheckpointError`, naming the file, for a missing, corrupt or foreign file, an
    unknown format version, an invalid stored config and non-finite weights.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with warnings.catch_warnings():  # torch warns, over several lines, about some damaged files
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable ({_load_error(err)})") from None
    if not (isinstance(state, dict) and {"config", "progress", "net"} <= state.keys()):
        raise CheckpointError(f"checkpoint {path} is not a softhebb checkpoint (no config, progress and weights)")
    version = state.get("version")
    if version not in READABLE_VERSIONS:
        raise CheckpointError(f"checkpoint {path} has format version {version!r}; this code reads versions "
                              f"{', '.join(map(str, READABLE_VERSIONS))}")
    try:
        raw, progress = json.loads(state["config"]), json.loads(state["progress"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path} is corrupt: its config or progress is not JSON ({err})") from None
    try:
        with warnings.catch_warnings():  # a format-1 file may spell the mode "simultaneous"
            warnings.simplefilter("ignore", DeprecationWarning)
            config = RunConfig.from_dict(raw, source=f"config in checkpoint {path}")
    except ConfigError as err:
        raise CheckpointError(str(err)) from None
    for name, tensor in state["net"].items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"checkpoint {path} holds non-finite values in {name!r}")
    net = build_network(config)
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


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; else what ``platform`` says): figures depend on it."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine() or "unknown CPU"


def peak_memory_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def make_synapses(config: RunConfig, synapse_factory=None) -> list | None:
    """One device model per Hebbian layer: ``synapse_factory(layer_index)``, else ``config.synapse``'s, else none."""
    if synapse_factory is None and config.synapse is None:
        return None
    if config.rule == "backprop":
        raise ConfigError(["a synapse model applies to Hebbian layers; the backprop baseline has none"])
    if synapse_factory is None:
        import hardware_models

        def synapse_factory(layer_index):
            return hardware_models.make_synapse(config.synapse, seed=config.seed * 1000 + layer_index)
    return [synapse_factory(i) for i in range(len(config.preset.layers))]


def load_data(config: RunConfig, data_dir=None, n_test: int | None = None, train: bool = True) -> Dataset:
    """The run's dataset, cut to ``n_train`` / ``n_test`` and checked against the preset (shapes, pixels, labels).

    ``data_dir`` / ``n_test`` override the config's; ``train=False`` keeps no training images (evaluation).
    """
    p = config.preset
    unlabeled = train and config.has_unsupervised_phase and p.unsupervised.split == "unlabeled"
    data = load_dataset(p.dataset, data_dir if data_dir is not None else config.data_dir, config.download and train,
                        p.image_size, unlabeled=unlabeled, image_decoder=config.image_decoder)
    data = data.subset(config.n_train if train else 0, n_test if n_test is not None else config.n_test)
    check_dataset(data, p)
    return data


class _Session:
    """The network of a run, its progress record (with timings) and readout optimiser state, and its checkpoint.

    In a data-parallel run every rank holds the same session and rank 0 alone writes the checkpoint.
    A running phase clock (:meth:`start_clock`) is folded into the timings at every save, so the time
    a resumed run reports includes the interrupted invocations' work up to their last checkpoint.
    """

    def __init__(self, path: Path, net: SoftHebbNet, config: RunConfig, progress: dict,
                 optimizer_state: dict | None = None, ctx: Distributed = SINGLE, checkpoint_every_s: float = 300.0):
        self.path, self.net, self.config, self.progress = path, net, config, progress
        self.optimizer_state, self.ctx, self.checkpoint_every_s = optimizer_state, ctx, checkpoint_every_s
        self.timings = progress.setdefault("timings", {})
        self._clock: tuple[str, float] | None = None
        self._last_save = time.monotonic()

    def save(self, optimizer_state: dict | None = None, **update) -> None:
        self.progress.update(update)
        self._fold_clock()
        if self.ctx.is_main:
            save_checkpoint(self.path, self.net, self.config, self.progress, optimizer_state)
        self._last_save = time.monotonic()

    def save_if_due(self, **update) -> None:
        """:meth:`save` if ``checkpoint_every_s`` have passed since the last one (every rank keeps its own clock)."""
        if time.monotonic() - self._last_save >= self.checkpoint_every_s:
            self.save(**update)

    def start_clock(self, name: str) -> None:
        self._clock = (name, time.perf_counter())

    def stop_clock(self) -> None:
        self._fold_clock()
        self._clock = None

    def _fold_clock(self) -> None:
        if self._clock is not None:
            name, start = self._clock
            now = time.perf_counter()
            self.timings[name] = self.timings.get(name, 0.0) + now - start
            self._clock = (name, now)

    def timed(self, name: str, start: float, accumulate: bool = True) -> None:
        elapsed = time.perf_counter() - start
        self.timings[name] = (self.timings.get(name, 0.0) if accumulate else 0.0) + elapsed


def _resume(out: Path, config: RunConfig, device, ctx: Distributed, checkpoint_every_s: float) -> _Session:
    """The interrupted run in ``out``, which must have been started with the same config."""
    net, saved, progress, optimizer_state = load_checkpoint(out / "checkpoint.pt", device)
    changed = differences(saved, config)
    if changed:
        raise CheckpointError(f"--resume: options differ from the interrupted run in {changed}")
    return _Session(out / "checkpoint.pt", net, config, progress, optimizer_state, ctx, checkpoint_every_s)


def _start(out: Path, config: RunConfig, device, ctx: Distributed, checkpoint_every_s: float) -> _Session:
    """A new run directory holding ``config.json`` (rank 0 writes it), and the network initialised from the seed."""
    out.mkdir(parents=True, exist_ok=True)
    if ctx.is_main:
        write_json(out / "config.json", config.to_dict())
    torch.manual_seed(config.seed)
    net = build_network(config, device)
    return _Session(out / "checkpoint.pt", net, config, {"blocks_done": 0, "readout_epoch": 0, "history": []},
                    ctx=ctx, checkpoint_every_s=checkpoint_every_s)


def _unsupervised_phase(s: _Session, data: Dataset, device, progress: bool) -> None:
    """One unsupervised epoch per block (greedy) or for all blocks (consecutive), from the last finished block.

    The random-weight baseline makes the same pass with its weights fixed: only its batch norms learn.

    The augmentation draws depend on (seed, batch) only: resuming at a later block redraws the same crops.
    Inside a block a checkpoint is written every ``checkpoint_every_s`` (the weights, batch-norm
    statistics and gains, and ``batches_done``); the order and draws are functions of the seed, so a
    run resumed there continues the block exactly as the uninterrupted run did.
    """
    if s.progress["blocks_done"] >= len(s.net.blocks):
        return
    u = s.config.preset.unsupervised
    s.start_clock("unsupervised_s")
    if s.config.rule == "random":  # fits batch norms only: every rank makes all of it (no sharding)
        epoch = fit_batch_norms
    else:
        epoch = partial(train_unsupervised, ctx=s.ctx, start_batch=s.progress.get("batches_done", 0),
                        on_batch_done=lambda stage, k: s.save_if_due(batches_done=k))
    epoch(s.net, data.unsupervised_images(u.split), s.config.mode, u.batch_size, s.config.seed, device,
          start_block=s.progress["blocks_done"], on_block_done=lambda i: s.save(blocks_done=i + 1, batches_done=0),
          progress=progress, augmentation=u.augment, augment_pad=u.augment_pad)
    s.stop_clock()


def _readout_phase(s: _Session, data: Dataset, device, progress: bool) -> None:
    """Features of the frozen network, then the linear readout, from the last finished epoch.

    Without augmentation the training features are computed once, into files of the run directory
    (``features_{train,test}.bin``, :class:`~rate_decoder.features.FeatureCheckpoint`): an interrupted
    extraction continues there, and a run resumed during the readout reads them back; they are deleted
    when the readout ends. With augmentation, each batch's features are recomputed from augmented images. Data-parallel: each rank computes a part of the features and
    every rank receives all (:func:`~rate_decoder.features.extract_features_sharded`); the readout runs
    under DDP (:func:`~rate_decoder.readout.train_readout`).
    """
    epochs, readout = s.config.n_readout_epochs, s.config.preset.readout
    if s.progress["readout_epoch"] >= epochs:
        return
    t, net = time.perf_counter(), s.net
    fingerprint = network_fingerprint(net)
    saved = {split: FeatureCheckpoint(s.path.parent / f"features_{split}.bin", fingerprint, s.checkpoint_every_s)
             for split in ("train", "test")}
    if readout.augment == "none":
        train_f = extract_features_sharded(net, data.x_train, s.ctx, device=device, progress=progress,
                                           desc="train features", cache_dir=s.path.parent,
                                           checkpoint=saved["train"])
        feature_fn = None
    else:
        train_f, normalize = data.x_train, s.config.preset.normalize

        def feature_fn(images, rows=None):
            with torch.no_grad():
                x = augment(to_float(images, device, normalize), readout.augment, readout.augment_pad, rows=rows)
                return net.features(x).flatten(1)
    net.eval()
    test_f = extract_features_sharded(net, data.x_test, s.ctx, device=device, progress=progress, desc="test features",
                                      cache_dir=s.path.parent, checkpoint=saved["test"])
    s.timed("features_s", t, accumulate=False)
    t = time.perf_counter()

    def on_epoch(epoch, metrics, optimizer_state):
        s.progress["history"].append(metrics)
        s.save(optimizer_state, readout_epoch=epoch)

    train_readout(net, train_f, data.y_train, test_f, data.y_test, epochs, readout.batch_size, readout.lr, seed=0,
                  device=device, start_epoch=s.progress["readout_epoch"], optimizer_state=s.optimizer_state,
                  on_epoch=on_epoch, progress=progress, feature_fn=feature_fn, ctx=s.ctx)
    s.timed("readout_s", t)
    del train_f, test_f
    s.ctx.barrier()  # no rank still reads the feature files
    for checkpoint in saved.values():
        for path in ([checkpoint] if not s.ctx.active else [checkpoint.for_rank(r) for r in range(s.ctx.world)]):
            if s.ctx.is_main:
                path.remove()


def _backprop_phase(s: _Session, data: Dataset, device, progress: bool) -> None:
    """The backprop baseline: the blocks and the head trained end to end, a checkpoint after every epoch."""
    epochs, readout = s.config.n_readout_epochs, s.config.preset.readout
    if s.progress["readout_epoch"] >= epochs:
        return

    def on_epoch(epoch, metrics, optimizer_state):
        s.progress["history"].append(metrics)
        s.save(optimizer_state, readout_epoch=epoch)

    s.start_clock("backprop_s")
    train_backprop(s.net, data.x_train, data.y_train, data.x_test, data.y_test, epochs, readout.batch_size,
                   readout.lr, s.config.seed, device, start_epoch=s.progress["readout_epoch"],
                   optimizer_state=s.optimizer_state, on_epoch=on_epoch, progress=progress)
    s.stop_clock()


def run(config: RunConfig | Mapping, out_dir: str | os.PathLike, resume: bool = False, device=None,
        progress: bool = True, synapse_factory=None, ctx: Distributed | None = None,
        checkpoint_every_s: float = 300.0) -> dict:
    """Train and evaluate one configuration; returns the metrics written to ``metrics.json``.

    ``config`` is a :class:`RunConfig`, or its plain data (``to_dict``, ``config.json``).
    ``synapse_factory(layer_index)`` returns a device model per Hebbian layer, instead of the models
    ``config.synapse`` names. The phases: checks (config, device, synapse models, the run to resume,
    the dataset against the preset: image shapes, labels outside the preset's classes), so that a
    mistake is an error at once and not hours into a run, before anything is written; then the run
    directory and network; then the unsupervised epoch, features and readout (or the backprop
    baseline); then the metrics.

    Launched by ``torchrun`` (``ctx``: default :func:`~rate_decoder.distributed.from_environment`), the
    run is data-parallel: every rank makes the same checks, trains its shard of every batch
    (:mod:`rate_decoder.distributed`) and computes its part of the features; rank 0 alone writes the
    run directory. ``resume=True`` with no checkpoint yet starts the run, with a notice. Inside the
    unsupervised epoch a checkpoint is written every ``checkpoint_every_s`` seconds.

    Example::

        metrics = run(RunConfig(load_preset("digits"), readout_epochs=5), "runs/digits", progress=False)
    """
    # checks: nothing is written before all of them pass
    config = config if isinstance(config, RunConfig) else RunConfig.from_dict(config)
    device = resolve_device(device)
    ctx = distributed.from_environment(device) if ctx is None else ctx
    if ctx.active and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    if ctx.active and config.rule == "backprop":
        raise ConfigError(["the backprop baseline trains in one process: launch it without torchrun"], "rule")
    progress = progress and ctx.is_main
    if device.type == "cpu":
        configure_cpu()
    t_start = time.perf_counter()
    synapses = make_synapses(config, synapse_factory)
    out = Path(out_dir)
    if resume and not (out / "checkpoint.pt").exists():
        if ctx.is_main:
            print(f"softhebb: note: --resume: no checkpoint in {out} yet, starting the run", file=sys.stderr)
        resume = False
    elif resume:
        session = _resume(out, config, device, ctx, checkpoint_every_s)
    elif (out / "checkpoint.pt").exists():
        raise FileExistsError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    data = load_data(config)
    ctx.barrier()  # every rank has passed the checks before rank 0 writes anything

    # the run directory and the network
    if not resume:
        session = _start(out, config, device, ctx, checkpoint_every_s)
    if synapses is not None:
        for block, synapse in zip(session.net.blocks, synapses, strict=True):
            block.conv.attach_synapse(synapse)

    # training
    if config.rule == "backprop":
        _backprop_phase(session, data, device, progress)
    else:
        if config.has_unsupervised_phase:
            _unsupervised_phase(session, data, device, progress)
        _readout_phase(session, data, device, progress)
        if ctx.is_main:
            save_kernels_png(session.net, out / "kernels.png")

    # metrics
    history = session.progress["history"]
    session.timings["this_invocation_s"] = time.perf_counter() - t_start
    metrics = {"test_acc": history[-1]["test_acc"], "history": history, "timings_s": session.timings,
               "peak_memory_gib": peak_memory_gib(), "n_train": len(data.x_train), "n_test": len(data.x_test),
               "device": str(device), "cpu": cpu_model(), "torch": torch.__version__,
               "threads": torch.get_num_threads(),
               "processes": ctx.world}
    if ctx.is_main:
        write_json(out / "metrics.json", metrics)
    return metrics


def evaluate(run_dir: str | os.PathLike, device=None, data_dir=None, n_test: int | None = None,
             progress: bool = True) -> float:
    """Test accuracy of a finished run's checkpoint (features recomputed from the stored weights)."""
    device = resolve_device(device)
    net, config, _, _ = load_checkpoint(Path(run_dir) / "checkpoint.pt", device)
    data = load_data(config, data_dir, n_test, train=False)
    net.eval()
    if device.type == "cpu":
        configure_cpu()
    feats = extract_features(net, data.x_test, device=device, progress=progress, desc="test features",
                             cache_dir=run_dir)
    return accuracy(net.head, feats, data.y_test, device)
