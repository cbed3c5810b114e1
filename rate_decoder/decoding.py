r"""Bridge between the spiking layer (:mod:`snn`) and the rate network: spike-train decoders and
parameter conversion.

Decoders (numpy, no Brian2 needed):

* :func:`spike_counts` -- counts per neuron in consecutive time windows;
* :func:`rates` -- rate estimate ``n / T`` with its Poisson standard error ``sqrt(n) / T``;
* :func:`shares` -- each neuron's share of the population's spikes (the spiking estimate of
  ``softmax(t u)``) with the multinomial standard error ``sqrt(p (1 - p) / N)``;
* :func:`preactivation_from_counts` -- ``u`` up to an additive constant, ``log(share) / t``;
* :func:`total_variation` and :func:`multinomial_tvd` -- distance of shares from a target and the
  distance expected from multinomial sampling alone with the same number of spikes.

Conversion: a spiking layer holds ``K`` flattened weight vectors ``(K, C*k*k)`` in the ``(C, k, k)``
order of a convolution weight; :func:`to_conv2d` / :func:`from_conv2d` map them, with ``t``, ``lr`` and
``q``, to and from a :class:`rate_decoder.layers.SoftHebbConv2d`.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .layers import SoftHebbConv2d


# --- decoders --------------------------------------------------------------------------------------
def spike_counts(indices: np.ndarray, times: np.ndarray, n_neurons: int, window: float, n_windows: int,
                 t_start: float = 0.0, offset: float = 0.0) -> np.ndarray:
    """Counts ``(n_windows, n_neurons)`` of spikes in windows ``[t_start + m*window + offset, t_start + (m+1)*window)``.

    ``offset`` skips the start of every window (e.g. a presentation's blanking time). Times in seconds.
    """
    indices = np.asarray(indices, dtype=np.int64)
    times = np.asarray(times, dtype=np.float64)
    if indices.shape != times.shape:
        raise ValueError(f"indices and times must have the same shape, got {indices.shape} and {times.shape}")
    if window <= 0 or not 0 <= offset < window:
        raise ValueError(f"need window > 0 and 0 <= offset < window, got {window}, {offset}")
    rel = (times - t_start) / window
    m = np.floor(rel + 1e-9).astype(np.int64)
    keep = (m >= 0) & (m < n_windows) & ((rel - m) * window >= offset - 1e-12) & (indices >= 0) & (indices < n_neurons)
    counts = np.zeros((n_windows, n_neurons), dtype=np.int64)
    np.add.at(counts, (m[keep], indices[keep]), 1)
    return counts


def rates(counts: np.ndarray, duration: float) -> tuple[np.ndarray, np.ndarray]:
    """Rate ``n / T`` and its Poisson standard error ``sqrt(n) / T`` (elementwise)."""
    if duration <= 0:
        raise ValueError(f"duration must be positive, got {duration}")
    c = np.asarray(counts, dtype=np.float64)
    return c / duration, np.sqrt(c) / duration


def shares(counts: np.ndarray, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """Share of each neuron in the population's spikes along ``axis`` and its multinomial standard error.

    Rows with no spike give shares of 0 and an infinite standard error.
    """
    c = np.asarray(counts, dtype=np.float64)
    n = c.sum(axis=axis, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(n > 0, c / np.where(n > 0, n, 1.0), 0.0)
        se = np.where(n > 0, np.sqrt(p * (1.0 - p) / np.where(n > 0, n, 1.0)), np.inf)
    return p, se


def preactivation_from_counts(counts: np.ndarray, inverse_temperature: float, pseudocount: float = 0.5,
                              axis: int = -1) -> np.ndarray:
    """``u`` up to a constant per row: ``log((n_k + a) / sum(n + a)) / t``, centred to mean 0 along ``axis``."""
    c = np.asarray(counts, dtype=np.float64) + pseudocount
    logp = np.log(c / c.sum(axis=axis, keepdims=True)) / inverse_temperature
    return logp - logp.mean(axis=axis, keepdims=True)


def total_variation(p: np.ndarray, q: np.ndarray, axis: int = -1) -> np.ndarray:
    """Total variation distance ``0.5 * sum |p - q|`` along ``axis``."""
    return 0.5 * np.abs(np.asarray(p, dtype=np.float64) - np.asarray(q, dtype=np.float64)).sum(axis=axis)


def multinomial_tvd(p: np.ndarray, n: int, n_sim: int = 4000, seed: int = 0) -> tuple[float, float]:
    """Mean and standard deviation of the TVD between ``p`` and the shares of ``n`` multinomial draws from ``p``.

    This is the distance that sampling alone produces with ``n`` counted spikes (simulated).
    """
    p = np.asarray(p, dtype=np.float64)
    p = p / p.sum()
    draws = np.random.default_rng(seed).multinomial(int(n), p, size=n_sim) / float(n)
    d = total_variation(draws, p[None, :])
    return float(d.mean()), float(d.std())


# --- conversion between a spiking layer and SoftHebbConv2d ------------------------------------------
def weights_to_conv(weights: np.ndarray, in_channels: int, kernel_size: int) -> torch.Tensor:
    """``(K, C*k*k)`` -> ``(K, C, k, k)`` float32 tensor (row-major ``(C, k, k)`` flattening)."""
    w = np.asarray(weights)
    K, D = w.shape
    if D != in_channels * kernel_size ** 2:
        raise ValueError(f"weights have {D} inputs, expected C*k*k = {in_channels * kernel_size ** 2}")
    return torch.as_tensor(w.reshape(K, in_channels, kernel_size, kernel_size).copy(), dtype=torch.float32)


def weights_from_conv(weight: torch.Tensor) -> np.ndarray:
    """``(K, C, k, k)`` -> ``(K, C*k*k)`` float64 array."""
    w = weight.detach().cpu().numpy().astype(np.float64)
    return w.reshape(w.shape[0], -1)


def to_conv2d(weights: np.ndarray, in_channels: int, kernel_size: int, inverse_temperature: float = 1.0,
              lr: float = 1e-3, lr_power: float = 0.5, rule: str = "softhebb", normalisation: str = "none",
              **kwargs) -> SoftHebbConv2d:
    """A :class:`SoftHebbConv2d` holding the spiking layer's weights and plasticity values.

    The default normalisation is ``"none"``, the local rule the spiking layer implements.
    """
    w = weights_to_conv(weights, in_channels, kernel_size)
    layer = SoftHebbConv2d(in_channels, w.shape[0], kernel_size, inverse_temperature=inverse_temperature, lr=lr,
                           lr_power=lr_power, rule=rule, normalisation=normalisation, **kwargs)
    with torch.no_grad():
        layer.weight.copy_(w)
    return layer


def from_conv2d(layer: SoftHebbConv2d) -> dict:
    """The spiking layer's parameters of ``layer``: ``weights (K, C*k*k)``, ``inverse_temperature``, ``lr``,
    ``lr_power``, ``rule``, plus ``in_channels`` and ``kernel_size`` for the way back."""
    if layer.pre_triangle:
        raise ValueError("a pre_triangle layer has no spiking counterpart (the WTA sees Triangle(u))")
    return {"weights": weights_from_conv(layer.weight), "inverse_temperature": layer.inverse_temperature,
            "lr": layer.lr, "lr_power": layer.lr_power, "rule": layer.rule,
            "in_channels": layer.in_channels, "kernel_size": layer.kernel_size}


def spiking_to_conv2d(spiking, in_channels: int, kernel_size: int, **kwargs) -> SoftHebbConv2d:
    """:func:`to_conv2d` from an object with ``weights``, ``inverse_temperature``, ``lr``, ``lr_power``, ``rule``
    (e.g. :class:`snn.layer.SpikingSoftHebb`)."""
    return to_conv2d(spiking.weights, in_channels, kernel_size, spiking.inverse_temperature, spiking.lr,
                     spiking.lr_power, spiking.rule, **kwargs)


def conv2d_to_spiking(layer: SoftHebbConv2d, **kwargs):
    """A :class:`snn.layer.SpikingSoftHebb` with ``layer``'s weights and plasticity values (Brian2 needed)."""
    from snn.layer import SpikingSoftHebb  # the rate pipeline does not need Brian2 otherwise

    p = from_conv2d(layer)
    w = p["weights"]
    if not math.isfinite(float(np.abs(w).max(initial=0.0))):
        raise ValueError("layer weights are not finite")
    return SpikingSoftHebb(w.shape[1], w.shape[0], inverse_temperature=p["inverse_temperature"], lr=p["lr"],
                           lr_power=p["lr_power"], rule=p["rule"], weights=w, **kwargs)


__all__ = ["spike_counts", "rates", "shares", "preactivation_from_counts", "total_variation", "multinomial_tvd",
           "weights_to_conv", "weights_from_conv", "to_conv2d", "from_conv2d", "spiking_to_conv2d",
           "conv2d_to_spiking"]
