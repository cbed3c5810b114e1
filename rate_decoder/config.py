"""A run's configuration as one typed, validated object: the preset (network and protocol) plus the run's options.

The records are frozen dataclasses (:class:`~rate_decoder.validation.Record`). Each checks its own
values when it is built and raises one :class:`ConfigError` that lists every problem, so an object
that exists is valid and the code that trains from it reads attributes without checking them again.
Building from raw data -- a preset file (:func:`load_preset`), a stored ``config.json`` or checkpoint
(:meth:`RunConfig.from_dict`) -- collects the problems of every layer and table before raising, so a
file with several mistakes reports them all.

Example::

    preset = load_preset("digits")                      # presets are data: rate_decoder/presets/*.toml
    config = RunConfig(preset, rule="softhebb", mode="greedy", seed=0, readout_epochs=10)
    assert RunConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    shorter = dataclasses.replace(preset, readout=dataclasses.replace(preset.readout, epochs=5))  # checked again
"""
from __future__ import annotations

import dataclasses
import tomllib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .augment import AUGMENTATIONS
from .data import IMAGE_DECODERS, INPUT_NORMALISATIONS, UNSUPERVISED_SPLITS
from .rules import NORMALISATIONS
from .validation import (ANY_TEXT, AT_LEAST_ONE, DROPOUT, FLAG, NON_NEGATIVE, NON_NEGATIVE_INT, ODD_INT, POSITIVE, POSITIVE_INT, TEXT,
                         ConfigError, Record, instance_of, is_int, is_number, must_be, one_of, optional, spec)

#: ``random`` keeps the initial weights (its unsupervised pass only fits the batch norms, see
#: :func:`rate_decoder.unsupervised.fit_batch_norms`); ``backprop`` trains the same blocks end to end
RULES = ("softhebb", "soft", "hardwta", "random", "backprop")
#: greedy: one epoch per block, deeper blocks frozen (the paper's mode); consecutive: all blocks learn from
#: every batch in one epoch (the reference code's "consecutive" mode, docs/algorithm.md §6.1)
MODES = ("greedy", "consecutive")
#: deprecated spellings, accepted with a DeprecationWarning: "simultaneous" is the reference code's "consecutive",
#: whereas the reference's own "simultaneous" is its hybrid Hebbian + backprop mode (docs/algorithm.md §6.1, not implemented)
DEPRECATED_MODES = {"simultaneous": "consecutive"}
#: dtype of the Hebbian layers' large products (weights and updates stay fp32)
PRECISIONS = ("fp32", "bf16")
#: the block activations of :func:`rate_decoder.activations.make_activation`
ACTIVATIONS = ("triangle", "repu", "relu", "tanh", "softmax")
POOL_KINDS = ("max", "avg")
#: the ``seed`` range: numpy's seed sequences take no negative seed, torch's generator no seed of 2**64 or more
SEED_LIMIT = 2**32


def canonical_mode(mode: str, stacklevel: int = 2) -> str:
    """``mode`` with a deprecated spelling mapped to its current name, with a ``DeprecationWarning``.

    ``stacklevel`` locates the user's call as :func:`warnings.warn` does, counted from the caller.
    """
    if mode in DEPRECATED_MODES:
        warnings.warn(f"training mode {mode!r} is deprecated: it is called {DEPRECATED_MODES[mode]!r} (the reference "
                      f"code's name for it)", DeprecationWarning, stacklevel=stacklevel + 1)
        return DEPRECATED_MODES[mode]
    return mode


def parse_pool(spec: str) -> tuple[str, int, int, int]:
    """``"max_4_2_1"`` -> ``("max", 4, 2, 1)``: type_kernel_stride_padding (docs/algorithm.md §3); ``ValueError`` if not."""
    try:
        kind, k, s, p = spec.split("_")
        k, s, p = int(k), int(s), int(p)
    except (ValueError, AttributeError):
        raise ValueError(f"pooling {spec!r} is not of the form max|avg_kernel_stride_padding") from None
    if kind not in POOL_KINDS:
        raise ValueError(f"unknown pooling type {kind!r} in {spec!r}; choose one of {POOL_KINDS}")
    if k < 1 or s < 1 or not 0 <= p <= k // 2:
        raise ValueError(f"pooling {spec!r} needs kernel >= 1, stride >= 1 and 0 <= padding <= kernel // 2")
    return kind, k, s, p


def _pool_spec(where: str, name: str, value):
    try:
        parse_pool(value)
    except ValueError as err:
        return f"{where}{err}"


SEED = must_be(lambda v: is_int(v) and 0 <= v < SEED_LIMIT, f"an integer in [0, 2**{SEED_LIMIT.bit_length() - 1})")
ONE_EPOCH = must_be(lambda v: v == 1 and is_int(v), "1 (the protocol's single unsupervised epoch, docs/algorithm.md §6.1)")


def _layer_tuple(where: str, name: str, value):
    if not (isinstance(value, tuple) and value and all(isinstance(v, LayerSpec) for v in value)):
        return f"{where}{name} must be a non-empty tuple of LayerSpec, got {value!r}"


@dataclass(frozen=True)
class LayerSpec(Record):
    """One hidden block: ``BN -> SoftHebb conv (kernel, neurons) -> activation -> pooling`` (docs/algorithm.md §2-3).

    ``gain_tau`` is the time constant, in batches, of an update normalisation with a running gain
    (``homeostatic``, ``modulated``, ``peak``; the others ignore it). ``padding`` is the convolution's
    reflect padding; unset, the map keeps its size (the paper's presets); the reference code's hard-WTA
    preset pads less (preset ``cifar10-4hard``).
    """

    out_channels: int = spec(POSITIVE_INT)
    kernel_size: int = spec(ODD_INT)
    inverse_temperature: float = spec(POSITIVE, number=True)
    lr: float = spec(POSITIVE, number=True)
    lr_power: float = spec(NON_NEGATIVE, number=True)
    activation: str = spec(one_of(ACTIVATIONS, "activation"))
    pool: str = spec(_pool_spec)
    activation_power: float = spec(POSITIVE, 1.0, number=True)
    pre_triangle: bool = spec(FLAG, False)
    radius: float = spec(POSITIVE, 25.0, number=True)
    gain_tau: float = spec(AT_LEAST_ONE, 100.0, number=True)
    padding: int | None = spec(optional(NON_NEGATIVE_INT), None)

    def _consistency(self) -> list[str]:
        if self.padding is not None and is_int(self.kernel_size) and self.padding > self.kernel_size // 2:
            return [f"padding {self.padding} exceeds half the kernel ({self.kernel_size}): the map would grow"]
        return []

    @property
    def conv_padding(self) -> int:
        """Reflect padding of the convolution: ``padding``, or ``(k - 1) / 2`` (same size) when unset."""
        return (self.kernel_size - 1) // 2 if self.padding is None else self.padding

    def _source(self) -> str:
        return "layer"


@dataclass(frozen=True)
class UnsupervisedSpec(Record):
    """The unsupervised epoch: mini-batch, images (``train`` or ``unlabeled``) and optional augmentation."""

    batch_size: int = spec(POSITIVE_INT, 10)
    epochs: int = spec(ONE_EPOCH, 1)
    split: str = spec(one_of(UNSUPERVISED_SPLITS), "train")
    augment: str = spec(one_of(AUGMENTATIONS, "augmentation"), "none")
    augment_pad: int = spec(NON_NEGATIVE_INT, 4)

    def _source(self) -> str:
        return "[unsupervised] table"


@dataclass(frozen=True)
class ReadoutSpec(Record):
    """The linear readout: dropout on the features, Adam's learning rate, mini-batch, epochs, augmentation."""

    dropout: float = spec(DROPOUT, 0.5, number=True)
    batch_size: int = spec(POSITIVE_INT, 64)
    epochs: int = spec(POSITIVE_INT, 50)
    lr: float = spec(POSITIVE, 1e-3, number=True)
    augment: str = spec(one_of(AUGMENTATIONS, "augmentation"), "none")
    augment_pad: int = spec(NON_NEGATIVE_INT, 4)

    def _source(self) -> str:
        return "[readout] table"


def _parse_layers(raw, where: str, problems: list[str]):
    if not isinstance(raw, (list, tuple)) or not raw:
        problems.append(f"{where}layers must be a non-empty list of layer tables, got {raw!r}")
        return None
    layers = [LayerSpec.parse(layer, f"{where}layer {i}: ", problems) for i, layer in enumerate(raw, 1)]
    return None if None in layers else tuple(layers)


@dataclass(frozen=True)
class Preset(Record):
    """A network and its training protocol, as a preset file describes them (see :func:`load_preset`)."""

    name: str = spec(TEXT)
    dataset: str = spec(TEXT)
    in_channels: int = spec(POSITIVE_INT)
    image_size: int = spec(POSITIVE_INT)
    n_classes: int = spec(POSITIVE_INT)
    layers: tuple[LayerSpec, ...] = spec(_layer_tuple)
    description: str = spec(ANY_TEXT, "")
    normalize: str = spec(one_of(INPUT_NORMALISATIONS), "none")
    unsupervised: UnsupervisedSpec = spec(instance_of(UnsupervisedSpec), UnsupervisedSpec())
    readout: ReadoutSpec = spec(instance_of(ReadoutSpec), ReadoutSpec())
    width_factor: float = spec(POSITIVE, 1.0, number=True)

    @classmethod
    def _nested(cls) -> dict:
        return {"layers": _parse_layers,
                "unsupervised": lambda raw, where, p: UnsupervisedSpec.parse(raw, f"{where}[unsupervised] ", p),
                "readout": lambda raw, where, p: ReadoutSpec.parse(raw, f"{where}[readout] ", p)}

    def __post_init__(self):
        if isinstance(self.layers, list):
            object.__setattr__(self, "layers", tuple(self.layers))
        super().__post_init__()

    def _source(self) -> str:
        return f"preset {self.name!r}"

    def _consistency(self) -> list[str]:
        problems = []
        if self.normalize == "imagenet" and self.in_channels != 3:
            problems.append(f"normalize 'imagenet' standardises 3 colour channels, but in_channels = "
                            f"{self.in_channels}")
        for part in (self.unsupervised, self.readout):
            table = "unsupervised" if part is self.unsupervised else "readout"
            if part.augment == "crop_flip" and part.augment_pad >= self.image_size:
                problems.append(f"[{table}] augment_pad must be an integer in [0, image_size) for reflect padding, "
                                f"got {part.augment_pad} (image_size {self.image_size})")
        return problems + self._geometry()

    def _geometry(self) -> list[str]:
        """Every layer's reflect padding fits its input and its pooling leaves at least one pixel."""
        size = self.image_size
        for i, layer in enumerate(self.layers, 1):
            pad = (layer.kernel_size - 1) // 2
            if pad >= size:
                return [f"layer {i}'s {layer.kernel_size}x{layer.kernel_size} kernel needs reflect padding {pad}, "
                        f"more than its {size} px input allows"]
            _, k, stride, p = parse_pool(layer.pool)
            size = (size + 2 * p - k) // stride + 1
            if size < 1:
                return [f"layer {i}'s pooling {layer.pool!r} leaves no output of the image ({self.image_size} px)"]
        return []

    @classmethod
    def from_dict(cls, raw: Mapping, source: str = "preset") -> "Preset":
        """A preset from plain data (``to_dict``'s output, or a preset file's tables plus ``name``)."""
        problems: list[str] = []
        preset = cls.parse(raw, "", problems)
        if problems:
            raise ConfigError(problems, source)
        return preset


@dataclass(frozen=True)
class RunConfig(Record):
    """Everything a run depends on: the preset, the rule and its options, the data and the seed.

    ``mode`` is ``greedy`` or ``consecutive`` (``simultaneous``, its former name, is accepted with a
    ``DeprecationWarning``). ``n_train`` / ``n_test`` take the first N images (``None``: all),
    ``readout_epochs`` overrides the preset's, ``data_dir`` is where datasets are looked up
    (``None``: ``$SOFTHEBB_DATA``, see :func:`rate_decoder.data.data_dir`), ``download`` lets
    torchvision fetch them, ``synapse`` names a device model of :mod:`hardware_models` that the
    Hebbian layers learn through (``None``: exact float weights), and ``image_decoder`` decodes an
    image folder's files (:class:`rate_decoder.data.ImageFolderImages`).
    """

    preset: Preset = spec(instance_of(Preset))
    rule: str = spec(one_of(RULES, "rule"), "softhebb")
    mode: str = spec(one_of(MODES, "training mode"), "greedy")
    seed: int = spec(SEED, 0)
    normalisation: str = spec(one_of(NORMALISATIONS, "update normalisation"), "global")
    precision: str = spec(one_of(PRECISIONS, "precision"), "fp32")
    n_train: int | None = spec(optional(POSITIVE_INT), None)
    n_test: int | None = spec(optional(POSITIVE_INT), None)
    readout_epochs: int | None = spec(optional(POSITIVE_INT), None)
    data_dir: str | None = spec(optional(TEXT), None)
    download: bool = spec(FLAG, False)
    synapse: str | None = spec(optional(TEXT), None)
    image_decoder: str = spec(one_of(IMAGE_DECODERS, "image decoder"), "pil")

    @classmethod
    def _nested(cls) -> dict:
        return {"preset": lambda raw, where, p: Preset.parse(raw, "preset ", p)}

    def __post_init__(self):
        if isinstance(self.mode, str):
            object.__setattr__(self, "mode", canonical_mode(self.mode, stacklevel=3))
        if isinstance(self.data_dir, Path):
            object.__setattr__(self, "data_dir", str(self.data_dir))
        super().__post_init__()

    def _source(self) -> str:
        return "run configuration"

    def _consistency(self) -> list[str]:
        problems = []
        if self.synapse is not None and self.rule == "backprop":
            problems.append("a synapse model applies to Hebbian layers; the backprop baseline has none")
        return problems

    @property
    def has_unsupervised_phase(self) -> bool:
        """Every rule but backprop passes once over the unsupervised data; ``random`` only fits its batch norms there."""
        return self.rule != "backprop"

    @property
    def n_readout_epochs(self) -> int:
        """Epochs of the readout (or of the backprop baseline): the override, else the preset's."""
        return self.readout_epochs or self.preset.readout.epochs

    @classmethod
    def from_dict(cls, raw: Mapping, source: str = "run configuration") -> "RunConfig":
        """A config from plain data (``to_dict``'s output, e.g. ``config.json``); every problem listed at once."""
        if isinstance(raw, Mapping) and isinstance(raw.get("mode"), str):
            raw = {**raw, "mode": canonical_mode(raw["mode"], stacklevel=2)}
        problems: list[str] = []
        config = cls.parse(raw, "", problems)
        if problems:
            raise ConfigError(problems, source)
        return config


# -- presets are data files ------------------------------------------------------------------------------

def available_presets() -> list[str]:
    """Names of the presets shipped with the package."""
    files = resources.files("rate_decoder") / "presets"
    return sorted(p.name[:-5] for p in files.iterdir() if p.name.endswith(".toml"))


def _read_preset_file(name_or_path: str) -> tuple[dict, str, str]:
    """``(tables, name, source)`` of a shipped preset's name or a ``.toml`` path."""
    path = Path(name_or_path)
    if path.suffix == ".toml":
        if not path.is_file():
            raise FileNotFoundError(f"preset file {path} does not exist")
        text, name, source = path.read_text(), path.stem, f"preset {path}"
    else:
        names = available_presets()
        if name_or_path not in names:
            raise ConfigError([f"unknown preset {name_or_path!r}; available: {', '.join(names)}"], "preset")
        text = (resources.files("rate_decoder") / "presets" / f"{name_or_path}.toml").read_text()
        name, source = name_or_path, f"preset {name_or_path!r}"
    try:
        return tomllib.loads(text), name, source
    except tomllib.TOMLDecodeError as err:
        raise ConfigError([f"not valid TOML ({err})"], source) from None


def load_preset(name_or_path: str, layers: int | None = None, width_factor: float = 1.0) -> Preset:
    """Load a preset by name (see :func:`available_presets`) or from a ``.toml`` path, checked.

    ``layers`` picks the depth: the file's ``depth_presets`` table names the paper's own preset for a
    shallower network (they differ, docs/algorithm.md §4.1); otherwise the first ``layers`` layers are kept
    (the name gains ``-first<layers>``). ``width_factor`` scales every layer's number of neurons
    (rounded, at least 1). A file's keys are those of :class:`Preset` except ``name`` (the file's
    stem) and ``width_factor``, plus ``depth_presets``.
    """
    tables, name, source = _read_preset_file(name_or_path)
    problems = [f"unknown preset key {key!r}" for key in ("name", "width_factor") if key in tables]
    depth_presets = tables.pop("depth_presets", {})
    if not (isinstance(depth_presets, dict) and all(isinstance(v, str) for v in depth_presets.values())):
        problems.append(f"depth_presets must map depths to preset names, got {depth_presets!r}")
    preset = Preset.parse({**tables, "name": name}, "", problems)
    if problems:
        raise ConfigError(problems, source)
    if not (is_number(width_factor) and width_factor > 0):
        raise ConfigError([f"width_factor must be a positive finite number, got {width_factor!r}"], source)
    if layers is not None:
        n = len(preset.layers)
        if str(layers) in depth_presets and is_int(layers):
            return load_preset(depth_presets[str(layers)], None, width_factor)
        if not (is_int(layers) and 1 <= layers <= n):
            raise ConfigError([f"preset {name!r} has {n} layers; --layers {layers} is out of range"], source)
        if layers < n:
            preset = dataclasses.replace(preset, layers=preset.layers[:layers], name=f"{name}-first{layers}")
    if width_factor != 1.0:
        scaled = tuple(dataclasses.replace(layer, out_channels=max(1, round(layer.out_channels * width_factor)))
                       for layer in preset.layers)
        preset = dataclasses.replace(preset, layers=scaled, width_factor=float(width_factor))
    return preset


#: how :func:`with_unsupervised_batch` scales the Hebbian learning rates with the batch
LR_SCALINGS = ("sqrt", "linear", "none")


def with_unsupervised_batch(preset: Preset, batch_size: int, lr_scaling: str = "sqrt") -> Preset:
    """The preset with another unsupervised batch ``B`` and every Hebbian rate scaled for it.

    A step moves each neuron by ``eta_k D_k / max|D|``, at most ``eta_k`` per weight whatever the batch
    (docs/algorithm.md §2.5): a batch ``m = B / B_0`` times the preset's makes ``m`` times fewer steps of
    the same size. ``"sqrt"`` (the default) multiplies the rates by ``sqrt(m)``: the square-root rule of
    normalised optimisers such as Adam, whose step is bounded whatever the batch as this one is. On
    CIFAR-10's 1-layer network it loses nothing at ``m = 8`` (2 seeds) where ``"linear"`` (rates ``x m``:
    an epoch moves the weights as far as the preset's) loses 0.8-1.7 points (docs/distributed.md,
    batch size). ``"none"`` keeps the rates. The name gains ``-b<B>-<scaling>``.
    """
    if not is_int(batch_size) or batch_size < 1:
        raise ConfigError([f"the unsupervised batch must be a positive integer, got {batch_size!r}"], "batch_size")
    if lr_scaling not in LR_SCALINGS:
        raise ConfigError([f"unknown learning-rate scaling {lr_scaling!r}; choose one of {LR_SCALINGS}"],
                          "lr_scaling")
    m = batch_size / preset.unsupervised.batch_size
    factor = {"linear": m, "sqrt": m ** 0.5, "none": 1.0}[lr_scaling]
    return dataclasses.replace(
        preset, name=f"{preset.name}-b{batch_size}-{lr_scaling}",
        unsupervised=dataclasses.replace(preset.unsupervised, batch_size=batch_size),
        layers=tuple(dataclasses.replace(layer, lr=layer.lr * factor) for layer in preset.layers))
