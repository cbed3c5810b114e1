"""Real MNIST patches for the spiking layers: standardised, flattened in the (C, k, k) order of a conv weight.

Files are read from the one data directory of the project, ``$SOFTHEBB_DATA``
(:func:`rate_decoder.data.data_dir`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from rate_decoder.data import data_dir

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def dataset_path(name: str) -> Path:
    """Path of ``name`` (e.g. ``"mnist.npz"``) in ``$SOFTHEBB_DATA``; a clear error if it is not there."""
    directory = data_dir()
    if directory is None:
        raise FileNotFoundError(f"SOFTHEBB_DATA is not set: set it to the directory that holds {name}")
    path = directory / name
    if not path.is_file():
        raise FileNotFoundError(f"{name} not found in {directory} (SOFTHEBB_DATA)")
    return path


def load_mnist(split: str = "train", n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Standardised images ``(N, 1, 28, 28)`` float64 and labels of one split of ``mnist.npz``."""
    with np.load(dataset_path("mnist.npz")) as f:
        x = f[f"x_{split}"][:n]
        y = f[f"y_{split}"][:n]
    if x.ndim == 3:
        x = x[..., None]
    x = np.moveaxis(x, -1, 1).astype(np.float64) / 255.0
    return (x - MNIST_MEAN) / MNIST_STD, np.asarray(y, dtype=np.int64)


def pad_reflect(images: np.ndarray, kernel_size: int) -> np.ndarray:
    """Reflect padding by ``(k - 1) / 2`` on all sides, as the SoftHebb conv layer does (docs/algorithm.md §2.1)."""
    p = (kernel_size - 1) // 2
    return np.pad(images, ((0, 0), (0, 0), (p, p), (p, p)), mode="reflect")


def random_patches(images: np.ndarray, n: int, kernel_size: int = 5, seed: int = 0) -> np.ndarray:
    """``n`` patches ``(n, C*k*k)`` at uniformly drawn images and output positions of the padded images."""
    rng = np.random.default_rng(seed)
    xp = pad_reflect(images, kernel_size)
    N, C, H, W = images.shape
    b = rng.integers(0, N, n)
    i = rng.integers(0, H, n)
    j = rng.integers(0, W, n)
    k = kernel_size
    rows = i[:, None] + np.arange(k)[None, :]  # (n, k)
    cols = j[:, None] + np.arange(k)[None, :]
    patches = xp[b[:, None, None, None], np.arange(C)[None, :, None, None], rows[:, None, :, None], cols[:, None, None, :]]
    return patches.reshape(n, C * k * k)


def image_patches(image: np.ndarray, kernel_size: int = 5) -> np.ndarray:
    """All ``H*W`` patches ``(H*W, C*k*k)`` of one image ``(C, H, W)``, row-major positions."""
    C, H, W = image.shape
    k = kernel_size
    xp = pad_reflect(image[None], k)[0]
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(1, 2))  # (C, H, W, k, k)
    return np.ascontiguousarray(win.transpose(1, 2, 0, 3, 4)).reshape(H * W, C * k * k)


__all__ = ["MNIST_MEAN", "MNIST_STD", "dataset_path", "load_mnist", "pad_reflect", "random_patches", "image_patches"]
