"""Datasets as uint8 images ``(N, C, H, W)``: in-memory tensors, or files decoded on demand.

Sources, tried in this order for a named dataset:

1. ``<data_dir>/<name>.npz`` with keys ``x_train`` (uint8 N,H,W,C), ``y_train``, ``x_test``, ``y_test``
   and optionally ``classes`` and ``x_unlabeled`` (images without labels, e.g. STL-10's 100k split);
   ``data_dir`` is the argument or the ``SOFTHEBB_DATA`` environment variable.
2. torchvision's MNIST / CIFAR-10 / CIFAR-100 / STL-10 under ``data_dir`` (``download=True`` fetches them
   there; STL-10's ``unlabeled`` split is read too when a preset asks for it).

The data directory comes from :func:`data_dir` alone: there is no default path.

``digits`` is scikit-learn's bundled 8x8 digits set, the offline default. ``imagefolder`` reads a tree
``<data_dir>/train/<class>/*`` and ``<data_dir>/val/<class>/*`` (ImageNette, ImageNet), each file
decoded (PIL, or ``torchvision.io``) and resized to the preset's image size, ``Resize((S, S))`` without a centre crop: docs/algorithm.md §5's test-time
preparation of both (the readout's training images are then augmented per batch, see
:func:`rate_decoder.augment.augment`). Its :meth:`Dataset.subset` is class-balanced, not the first N files. When its
decoded pixels would exceed :data:`IMAGE_MEMORY_BUDGET` (ImageNet at 160 px: 98 GB) both splits stay
on disk as :class:`ImageFolderImages`, which index like the tensors they stand for and decode each
batch when it is asked for; :func:`iter_batches` reads batches through a ``torch.utils.data.DataLoader``
whose workers decode files. Pixels stay uint8 and become floats in [0, 1] per batch
(:func:`to_float`): the first block's batch norm is what standardises them (docs/algorithm.md §5); the
ImageNet presets also apply ImageNet's mean/std, as the reference code's ``Normalize`` does.
"""
from __future__ import annotations

import os
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from .config import Preset

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: a preset's ``normalize``: pixels in [0, 1] as they are, or standardised with ImageNet's mean/std
INPUT_NORMALISATIONS = ("none", "imagenet")
#: a preset's ``[unsupervised] split``: see :meth:`Dataset.unsupervised_images`
UNSUPERVISED_SPLITS = ("train", "unlabeled")
TORCHVISION = {"mnist": "MNIST", "cifar10": "CIFAR10", "cifar100": "CIFAR100", "stl10": "STL10"}
#: an ImageFolder tree whose decoded pixels (train + val, N*C*H*W bytes) exceed this many bytes is streamed
#: from disk instead of loaded (ImageNette at 160 px, 1.0 GB, is loaded; ImageNet, 98 GB, is streamed)
IMAGE_MEMORY_BUDGET = 2 * 2**30
#: DataLoader worker processes that decode image files, per training process: a worker decodes whole batches
LOADER_WORKERS = min(8, os.cpu_count() or 1)
#: how image files are decoded (:class:`ImageFolderImages`); docs/data.md "Loading and decoding" gives their speeds
IMAGE_DECODERS = ("pil", "torchvision")


class DataError(ValueError):
    """A dataset is missing, corrupt or malformed."""


class ImageFolderImages:
    """Image files that index like the uint8 tensor ``(N, 3, S, S)`` of their decoded, resized pixels.

    ``len(x)``, ``x.shape``, ``x.dtype``, ``x[i:j]``, ``x[index_tensor]`` (any order, as the shuffled
    unsupervised epoch asks) and ``x.index_select(0, index)`` return uint8 tensors decoded on demand, in
    the calling process, so a dataset larger than memory can be trained on; :func:`iter_batches` decodes
    batches in DataLoader workers. A file that cannot be read raises :class:`DataError` naming it.

    ``decoder="pil"``: PIL, ``Resize((S, S))`` then ``PILToTensor``, the pixels torchvision's
    ``ImageFolder`` gives. ``"torchvision"``: ``torchvision.io.decode_image`` (RGB) and ``Resize((S, S),
    antialias=True)`` on the uint8 tensor, 1.6 times as fast (docs/data.md "Loading and decoding"), within one grey
    level of PIL's pixels (their resampling rounds differently); a format torchvision.io does not read
    (BMP, TIFF, ...) goes through PIL. It is not the default because torchvision 0.29 deprecates its
    image decoders in favour of TorchCodec.
    """

    dtype = torch.uint8

    def __init__(self, paths: Sequence[str | os.PathLike], image_size: int, decoder: str = "pil"):
        from torchvision import transforms

        if decoder not in IMAGE_DECODERS:
            raise ValueError(f"unknown image decoder {decoder!r}; choose one of {IMAGE_DECODERS}")
        self.paths = [str(p) for p in paths]
        self.image_size = image_size
        self.decoder = decoder
        self.shape = torch.Size((len(self.paths), 3, image_size, image_size))
        self._pil_transform = transforms.Compose([transforms.Resize((image_size, image_size)), transforms.PILToTensor()])

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        return f"ImageFolderImages({len(self)} files, shape={tuple(self.shape)}, decoder={self.decoder!r})"

    def take(self, index: Tensor) -> "ImageFolderImages":
        """The images at ``index`` (1-D integer positions), still on disk: what ``tensor[index]`` is for a subset."""
        return ImageFolderImages([self.paths[i] for i in index.tolist()], self.image_size, self.decoder)

    def __getitem__(self, key) -> Tensor:
        if isinstance(key, slice):
            return self._read(range(len(self))[key])
        index = torch.as_tensor(key)
        if index.dim() > 1 or index.is_floating_point() or index.is_complex() or index.dtype == torch.bool:
            raise IndexError(f"ImageFolderImages takes an integer, a slice or a 1-D integer index, got {key!r}")
        if index.numel() and (index.min() < -len(self) or index.max() >= len(self)):
            raise IndexError(f"index out of range for {len(self)} images")
        positions = (index.long() % max(1, len(self))).tolist()
        return self._read([positions])[0] if index.dim() == 0 else self._read(positions)

    def index_select(self, dim: int, index: Tensor) -> Tensor:
        if dim != 0:
            raise IndexError("ImageFolderImages selects along dimension 0 (images) only")
        return self[index]

    def _read(self, positions: Sequence[int]) -> Tensor:
        out = torch.empty((len(positions), *self.shape[1:]), dtype=torch.uint8)
        for k, position in enumerate(positions):
            out[k] = self._decode(self.paths[position])
        return out

    def _decode(self, path: str) -> Tensor:
        if self.decoder == "torchvision":
            from torchvision.io import ImageReadMode, decode_image, read_file
            from torchvision.transforms.v2.functional import resize

            try:
                pixels = decode_image(read_file(path), mode=ImageReadMode.RGB)
            except (RuntimeError, ValueError, OSError):
                pass  # a format torchvision.io does not read, or a broken file: PIL reads it or names the problem
            else:
                return resize(pixels, [self.image_size, self.image_size], antialias=True)
        from PIL import Image

        try:
            with Image.open(path) as img:
                rgb = img.convert("RGB")
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            raise DataError(f"image file {path} is corrupt or unreadable ({type(err).__name__}: {err})") from None
        return self._pil_transform(rgb)


Images = Tensor | ImageFolderImages


class _Batches(torch.utils.data.Dataset):
    """``images`` as a map-style dataset that serves whole batches (``__getitems__``), not single images.

    A batch index (a tensor, array or slice) is passed to ``images[...]`` as it is, so a batch read
    through the DataLoader is the very tensor indexing would give. A :class:`DataError` comes back as the
    batch and is raised by :func:`iter_batches`, so the caller sees its own message, not a worker's traceback.
    """

    def __init__(self, images: Images):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index):
        return self.__getitems__(index)

    def __getitems__(self, index):
        try:
            if isinstance(self.images, Tensor) and isinstance(index, Tensor):
                return self.images.index_select(0, index)  # 3x faster than [index] on cached features
            return self.images[index]
        except DataError as err:
            return err


def _as_is(batch):
    return batch


def iter_batches(images: Images, indices: Iterable, workers: int | None = None, device=None) -> Iterator[Tensor]:
    """``images[idx]`` for each ``idx`` of ``indices`` in turn, through a ``torch.utils.data.DataLoader``.

    ``indices`` is the DataLoader's batch sampler (the epoch order and each rank's share are computed
    from the seed elsewhere, so that greedy layers, resumed runs and data-parallel ranks see the same
    batches). Image files are decoded by ``workers`` worker processes (default :data:`LOADER_WORKERS`),
    each a whole batch, a few batches ahead of the caller; in-memory tensors are indexed in this process
    (a worker would only add a copy). For a CUDA ``device`` the batches come in page-locked memory, so
    their copies to the GPU (``to_float(..., non_blocking=True)``) overlap compute.
    """
    files = isinstance(images, ImageFolderImages)
    workers = (LOADER_WORKERS if workers is None else workers) if files else 0
    # its own generator: a DataLoader draws its workers' base seed from the one it is given, and from torch's
    # global generator without one, which would shift every later global draw (readout shuffles, dropout)
    loader = torch.utils.data.DataLoader(_Batches(images), batch_sampler=indices, collate_fn=_as_is,
                                         num_workers=workers, generator=torch.Generator(),
                                         pin_memory=device is not None and torch.device(device).type == "cuda")
    for batch in loader:
        if isinstance(batch, DataError):
            raise batch
        yield batch


#: the fixed seed of :func:`balanced_subset_index`: a subset must not change with the run's seed, so that
#: runs of several seeds (and ``softhebb eval``) see the same images
SUBSET_SEED = 0


def balanced_subset_index(labels: Tensor, n: int | None) -> Tensor:
    """Sorted positions of ``n`` items drawn class by class: the subset of a class-sorted (ImageFolder) split.

    Round robin over the classes: every class gives its first image, then its second, and so on,
    until ``n`` are taken, so class counts differ by at most one (beyond a class's own size). Each
    class's images come in a shuffled order and the classes of an unfinished round in a shuffled
    order too (:data:`SUBSET_SEED`), so ``n`` below the number of classes does not keep only the
    first classes and a class's images are not just its first file names. The positions are returned
    sorted, so the subset keeps the split's order. ``n`` of ``None`` or at least ``len(labels)``: all.
    """
    if n is None or n >= len(labels):
        return torch.arange(len(labels))
    rng = np.random.default_rng(SUBSET_SEED)
    y = labels.numpy()
    rank = np.empty(len(y), dtype=np.int64)  # position of each image in its class's shuffled order
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        rank[members] = rng.permutation(len(members))
    class_priority = rng.permutation(int(y.max()) + 1)[y]  # who goes first within an unfinished round
    chosen = np.lexsort((class_priority, rank))[:max(0, n)]
    return torch.from_numpy(np.sort(chosen))


def _take(x: Images, index: Tensor) -> Images:
    return x.take(index) if isinstance(x, ImageFolderImages) else x[index]


def _head(x: Images | None, n: int | None) -> Images | None:
    if x is None:
        return None
    return x.take(torch.arange(min(len(x), n))) if isinstance(x, ImageFolderImages) and n is not None else x[:n]


@dataclass
class Dataset:
    name: str
    x_train: Images  # uint8 (N, C, H, W): a tensor, or files decoded on demand
    y_train: Tensor  # int64 (N,)
    x_test: Images
    y_test: Tensor
    classes: list[str]
    x_unlabeled: Images | None = None  # extra images for the unsupervised phase only (STL-10)
    #: the splits are listed class by class (ImageFolder), so the first N images would be one class
    class_sorted: bool = False

    def subset(self, n_train: int | None = None, n_test: int | None = None) -> "Dataset":
        """``n_train`` training (and unlabeled) and ``n_test`` test images; ``None``: all of a split.

        npz, torchvision and digits splits: the first N images, in their original order (their order
        is not by class, and tests and figures rely on these exact images). A class-sorted split
        (ImageFolder, :attr:`class_sorted`), whose first N images would all be of the first class or
        two: N images drawn class-balanced with a fixed seed, see :func:`balanced_subset_index`.
        """
        if not self.class_sorted:
            return Dataset(self.name, _head(self.x_train, n_train), self.y_train[:n_train],
                           _head(self.x_test, n_test), self.y_test[:n_test], self.classes,
                           _head(self.x_unlabeled, n_train))
        train, test = balanced_subset_index(self.y_train, n_train), balanced_subset_index(self.y_test, n_test)
        return Dataset(self.name, _take(self.x_train, train), self.y_train[train], _take(self.x_test, test),
                       self.y_test[test], self.classes, _head(self.x_unlabeled, n_train), class_sorted=True)

    def unsupervised_images(self, split: str = "train") -> Images:
        """The images of the unsupervised phase: ``"train"`` or ``"unlabeled"`` (docs/algorithm.md §5: STL-10)."""
        if split == "train":
            return self.x_train
        if split == "unlabeled":
            if self.x_unlabeled is None:
                raise DataError(f"{self.name}: the preset learns from the unlabeled split, which this copy of the "
                                f"dataset lacks (add x_unlabeled to {self.name}.npz, or use torchvision's copy)")
            return self.x_unlabeled
        raise DataError(f"unknown unsupervised split {split!r}; choose one of {UNSUPERVISED_SPLITS}")


def data_dir(explicit: str | os.PathLike | None = None) -> Path | None:
    """The dataset directory: ``explicit`` if given, else ``$SOFTHEBB_DATA``, else ``None`` (no default path).

    Every dataset lookup of the package goes through this function.
    """
    d = explicit if explicit is not None else os.environ.get("SOFTHEBB_DATA")
    return Path(d).expanduser() if d else None


#: images per chunk of the finiteness check: bounds its temporary boolean tensor
_CHECK_CHUNK = 4096


def check_images(images: Images, in_channels: int, image_size: int, owner: str = "the network") -> None:
    """Raise :class:`DataError` for images not of shape ``(N, C, S, S)`` or holding a NaN or infinite pixel.

    Every image of a float tensor is checked, in chunks (no full-size temporary). Integer pixels
    cannot be non-finite. :class:`ImageFolderImages` decode each batch, when it is asked for, to
    uint8 of exactly this shape (a file that cannot be decoded raises naming it), so they are
    checked by construction and never read up front.
    """
    expected = (in_channels, image_size, image_size)
    shape = tuple(images.shape)
    if len(shape) != 4 or shape[1:] != expected:
        raise DataError(f"{owner} expects images of shape (N, {', '.join(map(str, expected))}), got {shape}")
    if isinstance(images, ImageFolderImages) or not images.is_floating_point():
        return
    for start in range(0, len(images), _CHECK_CHUNK):
        finite = torch.isfinite(images[start:start + _CHECK_CHUNK]).flatten(1).all(1)
        if not finite.all():
            index = start + int((~finite).nonzero()[0, 0])
            raise DataError(f"image {index} of {len(images)} contains NaN or infinite values")


def _label_problems(split: str, labels, n_images: int, preset: "Preset") -> list[str]:
    if not isinstance(labels, Tensor) or labels.dim() != 1:
        return [f"{split} labels must be a 1-D tensor, got {getattr(labels, 'shape', type(labels).__name__)}"]
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        return [f"{split} labels must be integers, got dtype {labels.dtype}"]
    if len(labels) != n_images:
        return [f"{n_images} {split} images but {len(labels)} labels"]
    if len(labels) and (labels.min() < 0 or labels.max() >= preset.n_classes):
        return [f"{split} labels lie in [{int(labels.min())}, {int(labels.max())}] but preset {preset.name!r} has "
                f"n_classes = {preset.n_classes} (labels must lie in [0, {preset.n_classes - 1}])"]
    return []


def check_dataset(data: Dataset, preset: "Preset") -> None:
    """Raise :class:`DataError` listing every way ``data`` does not fit ``preset``, before any training.

    Image shapes (and finiteness, see :func:`check_images`) of every split, and each label array's
    dtype, length and range: a label outside ``[0, n_classes)`` would otherwise fail deep inside
    the loss, after the unsupervised phase.
    """
    problems = []
    splits = [("training", data.x_train, data.y_train), ("test", data.x_test, data.y_test)]
    if data.x_unlabeled is not None:
        splits.append(("unlabeled", data.x_unlabeled, None))
    for split, images, labels in splits:
        try:
            check_images(images, preset.in_channels, preset.image_size, f"preset {preset.name!r}")
        except DataError as err:
            problems.append(f"{split} split: {err}")
        if labels is not None:
            problems += _label_problems(split, labels, len(images), preset)
    if problems:
        raise DataError(f"dataset {data.name!r} does not fit preset {preset.name!r}: " + "; ".join(problems))


def _images(x: np.ndarray, key: str, source: str) -> Tensor:
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise DataError(f"{source}: {key} must have shape (N, H, W, C), got {x.shape}")
    if x.shape[0] == 0:
        raise DataError(f"{source}: {key} is empty")
    if x.dtype != np.uint8:
        if not np.issubdtype(x.dtype, np.number):
            raise DataError(f"{source}: {key} has non-numeric dtype {x.dtype}")
        if not np.isfinite(x).all():
            raise DataError(f"{source}: {key} contains NaN or infinite pixels")
        if x.min() < 0 or x.max() > 255:
            raise DataError(f"{source}: {key} pixels must lie in [0, 255] (or be uint8), got [{x.min()}, {x.max()}]")
        scale = 255.0 if x.max() <= 1.0 else 1.0
        x = np.rint(x * scale).astype(np.uint8)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


#: images per batch when an ImageFolder split is loaded into memory
_LOAD_BATCH = 64


def _load_all(images: ImageFolderImages) -> Tensor:
    """Every image of ``images`` decoded into one uint8 tensor, batches decoded by :func:`iter_batches`' workers."""
    out = torch.empty(images.shape, dtype=torch.uint8)
    starts = range(0, len(images), _LOAD_BATCH)
    for start, batch in zip(starts, iter_batches(images, [slice(i, i + _LOAD_BATCH) for i in starts])):
        out[start:start + len(batch)] = batch
    return out


def load_npz(path: str | os.PathLike) -> Dataset:
    """Read and check a dataset archive (format in the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    if path.stat().st_size == 0:
        raise DataError(f"data file {path} is empty")
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = {"x_train", "y_train", "x_test", "y_test"} - set(f.files)
            if missing:
                raise DataError(f"data file {path} lacks keys {sorted(missing)} (has {f.files})")
            arrays = {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"data file {path} is corrupt or not an .npz archive ({err})") from None
    parts = {}
    for split in ("train", "test"):
        x = _images(arrays[f"x_{split}"], f"x_{split}", str(path))
        y = np.asarray(arrays[f"y_{split}"]).reshape(-1)
        if len(y) != len(x):
            raise DataError(f"{path}: {len(x)} {split} images but {len(y)} labels")
        if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
            raise DataError(f"{path}: y_{split} must hold non-negative integer labels")
        parts[split] = (x, torch.from_numpy(y.astype(np.int64)))
    n_classes = int(max(parts["train"][1].max(), parts["test"][1].max())) + 1
    classes = [str(c) for c in arrays["classes"]] if "classes" in arrays else [str(i) for i in range(n_classes)]
    unlabeled = _images(arrays["x_unlabeled"], "x_unlabeled", str(path)) if "x_unlabeled" in arrays else None
    if unlabeled is not None and unlabeled.shape[1:] != parts["train"][0].shape[1:]:
        raise DataError(f"{path}: x_unlabeled images {tuple(unlabeled.shape[1:])} differ from x_train's "
                        f"{tuple(parts['train'][0].shape[1:])}")
    return Dataset(path.stem, *parts["train"], *parts["test"], classes, unlabeled)


def load_digits(seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """scikit-learn's bundled 8x8 digits (values 0-16 -> 0-255), a stratified split with a fixed seed."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    d = sk_digits()
    x = np.clip(d.images * 16.0, 0, 255).astype(np.uint8)[:, None]
    xtr, xte, ytr, yte = train_test_split(x, d.target, test_size=test_fraction, random_state=seed, stratify=d.target)
    return Dataset("digits", torch.from_numpy(xtr), torch.from_numpy(ytr.astype(np.int64)), torch.from_numpy(xte),
                   torch.from_numpy(yte.astype(np.int64)), [str(i) for i in range(10)])


def _torchvision(name: str, root: Path, download: bool, unlabeled: bool = False) -> Dataset:
    import torchvision

    cls = getattr(torchvision.datasets, TORCHVISION[name])
    splits = {}
    wanted = [("train", {"train": True}), ("test", {"train": False})]
    if name == "stl10" and unlabeled:
        wanted.append(("unlabeled", {}))
    for split, kw in wanted:
        if name == "stl10":
            kw = {"split": split}
        try:
            ds = cls(str(root), download=download, **kw)
        except RuntimeError as err:
            raise DataError(f"{name}: not found under {root} ({err}); pass --download to fetch it, or put "
                            f"{name}.npz in $SOFTHEBB_DATA") from None
        x = np.asarray(ds.data)
        x = x if name == "stl10" else (x[..., None] if x.ndim == 3 else x)
        x = x.transpose(0, 2, 3, 1) if name == "stl10" else x  # STL-10 is stored N,C,H,W
        y = np.asarray(ds.labels if name == "stl10" else ds.targets)
        splits[split] = (_images(x, f"{split} images", name), torch.from_numpy(y.astype(np.int64)))
    unlabeled_images = splits["unlabeled"][0] if "unlabeled" in splits else None
    return Dataset(name, *splits["train"], *splits["test"], list(getattr(ds, "classes", [])), unlabeled_images)


def _imagefolder(root: Path, image_size: int, memory_budget: int | None = None,
                 decoder: str = "pil") -> Dataset:
    """The ``train/`` and ``val/`` splits of an ImageFolder tree, loaded if their pixels fit ``memory_budget``.

    ``memory_budget`` defaults to :data:`IMAGE_MEMORY_BUDGET` (read at call time); a larger tree stays on
    disk as :class:`ImageFolderImages`. Loading goes through the same decoder (in DataLoader workers,
    :func:`iter_batches`), so both give the same pixels.
    """
    import torchvision

    if image_size is None:
        raise DataError("an ImageFolder dataset needs the preset's image_size")
    splits = {}
    for split in ("train", "val"):
        folder = root / split
        if not folder.is_dir():
            raise DataError(f"ImageFolder tree {root} has no {split}/ directory")
        try:
            ds = torchvision.datasets.ImageFolder(str(folder))
        except FileNotFoundError as err:
            raise DataError(f"{folder} holds no images ({err})") from None
        splits[split] = ds
    train, val = splits["train"], splits["val"]
    if val.classes != train.classes:
        only_one = sorted(set(train.classes) ^ set(val.classes))
        raise DataError(f"{root}: train/ and val/ hold different class folders (only in one: {only_one[:5]}"
                        f"{' ...' if len(only_one) > 5 else ''}), so their labels would not match")
    images = {s: ImageFolderImages([p for p, _ in ds.samples], image_size, decoder) for s, ds in splits.items()}
    budget = IMAGE_MEMORY_BUDGET if memory_budget is None else memory_budget
    if sum(x.shape.numel() for x in images.values()) <= budget:
        images = {s: _load_all(x) for s, x in images.items()}
    labels = {s: torch.tensor(ds.targets, dtype=torch.int64) for s, ds in splits.items()}
    return Dataset(root.name, images["train"], labels["train"], images["val"], labels["val"], train.classes,
                   class_sorted=True)


def load_dataset(name: str, directory: str | os.PathLike | None = None, download: bool = False,
                 image_size: int | None = None, unlabeled: bool = False,
                 image_memory_budget: int | None = None, image_decoder: str = "pil") -> Dataset:
    """Load ``name`` (digits, mnist, cifar10, cifar100, stl10, imagefolder) from the sources above.

    ``unlabeled`` also reads torchvision's STL-10 ``unlabeled`` split (an npz brings ``x_unlabeled`` if it has it).
    ``image_memory_budget`` (bytes, default :data:`IMAGE_MEMORY_BUDGET`): a larger ImageFolder tree is streamed.
    ``image_decoder``: an ImageFolder tree's decoder, one of :data:`IMAGE_DECODERS` (see :class:`ImageFolderImages`).
    """
    if name == "digits":
        return load_digits()
    d = data_dir(directory)
    if name == "imagefolder":
        if d is None or not d.is_dir():
            raise DataError(f"imagefolder datasets need --data-dir pointing to a tree with train/ and val/ (got {d})")
        return _imagefolder(d, image_size, image_memory_budget, image_decoder)
    if d is not None and not download:
        if not d.is_dir():
            raise DataError(f"data directory {d} (from --data-dir or SOFTHEBB_DATA) does not exist")
        if (d / f"{name}.npz").is_file():  # any name: a user's own dataset in the same format works too
            return load_npz(d / f"{name}.npz")
    if name not in TORCHVISION:
        raise DataError(f"unknown dataset {name!r}: no {name}.npz in {d} and not one of digits, imagefolder, "
                        f"{', '.join(sorted(TORCHVISION))}")
    if d is None:
        raise DataError(f"no data for {name!r}: set SOFTHEBB_DATA to a directory holding {name}.npz, or pass "
                        f"--download with --data-dir (or SOFTHEBB_DATA) naming where torchvision should put it")
    return _torchvision(name, d, download, unlabeled)


def to_float(x: Tensor, device=None, normalize: str = "none") -> Tensor:
    """uint8 images -> float32 in [0, 1] on ``device`` (ImageNet mean/std if ``normalize='imagenet'``)."""
    x = x.to(device, non_blocking=True).float().div_(255.0)
    if normalize == "imagenet":
        mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device).view(1, -1, 1, 1)
        x = (x - mean) / std
    elif normalize != "none":
        raise ValueError(f"unknown input normalisation {normalize!r}; choose one of {INPUT_NORMALISATIONS}")
    return x
