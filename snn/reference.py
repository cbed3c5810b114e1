"""Rate-rule references for the spiking layers, computed with :mod:`rate_decoder.rules` (never re-implemented).

The spiking layers implement the local variants of the rule (``normalisation="none"`` or a homeostatic gain);
:func:`rate_learn` runs that rule on the same patch sequence, and :func:`compare` matches two weight sets up to a
permutation of neurons (competitive learning may order the neurons differently).
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from rate_decoder import rules


def rate_learn(patches: np.ndarray, weights: np.ndarray, inverse_temperature: float, lr: float, lr_power: float,
               rule: str = "softhebb", synapse=None, normalisation: str | rules.Normalisation = "none",
               batch: int = 1) -> np.ndarray:
    """Learn from ``patches`` ``(n, D)`` in batches of ``batch`` (local rule) from ``weights (K, D)``.

    ``synapse``: a :mod:`hardware_models` device that holds the weights and is programmed after every batch.
    ``normalisation``: ``"none"`` or a :class:`rules.Normalisation` object (a homeostatic gain), which
    keeps its state: pass a copy of the spiking layer's to follow the same trajectory.
    """
    normalisation = rules.make_normalisation(normalisation)
    w = torch.as_tensor(np.asarray(weights), dtype=torch.float64).clone()
    if synapse is not None:
        w = synapse.attach(w)
    x = torch.as_tensor(np.asarray(patches), dtype=torch.float64)
    for n in range(0, len(x), batch):
        _, dw = rules.linear_step(x[n:n + batch], w, inverse_temperature, lr, lr_power, rule, normalisation)
        w = synapse.program(dw) if synapse is not None else w.add_(dw)
    return w.numpy()


def poisson_rate_learn(patches: np.ndarray, weights: np.ndarray, inverse_temperature: float, lr: float,
                       lr_power: float, spikes: float, seed: int = 0) -> np.ndarray:
    """:func:`rate_learn` with the soft-WTA outputs replaced by Poisson spike counts (``softhebb`` rule).

    Each patch draws ``n_k ~ Poisson(spikes * softmax(t u)_k)`` and uses ``n_k / spikes`` (sign: + for the
    argmax of ``u``, - for the others) as the post-synaptic activity of the same update. This is what a
    spiking layer's weights would do if its only noise were the sampling of its output spikes: the
    spread of its learned weights over seeds is the spread that spikes alone predict.
    """
    rng = np.random.default_rng(seed)
    w = torch.as_tensor(np.asarray(weights), dtype=torch.float64).clone()
    x = torch.as_tensor(np.asarray(patches), dtype=torch.float64)
    for n in range(len(x)):
        xn = x[n:n + 1]
        u = xn @ w.T
        y = rules.soft_wta(u, inverse_temperature, dim=1)
        counts = torch.from_numpy(rng.poisson(spikes * y.numpy()).astype(np.float64))
        sign = -torch.ones_like(u)
        sign[0, u.argmax()] = 1.0
        delta = rules.linear_update(xn, u, sign * counts / spikes, w)
        w += rules.scale_update(delta, w, lr, lr_power, 1.0)
    return w.numpy()


def match(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hungarian matching of the rows of ``a`` to rows of ``b`` by cosine similarity.

    Returns ``(perm, cos)``: row ``k`` of ``a`` is matched to row ``perm[k]`` of ``b`` with cosine ``cos[k]``.
    """
    an = a / np.linalg.norm(a, axis=1, keepdims=True)
    bn = b / np.linalg.norm(b, axis=1, keepdims=True)
    sim = an @ bn.T
    rows, cols = linear_sum_assignment(-sim)
    perm = np.empty(len(a), dtype=np.int64)
    perm[rows] = cols
    return perm, sim[np.arange(len(a)), perm]


def matched_distance(a: np.ndarray, b: np.ndarray) -> float:
    """``|a - b_perm|_F / |b|_F`` after Hungarian matching of the rows: how far two learned weight sets lie apart."""
    perm, _ = match(a, b)
    return float(np.linalg.norm(a - b[perm]) / np.linalg.norm(b))


def compare(a: np.ndarray, b: np.ndarray) -> dict:
    """Mean and min matched cosine and median relative norm error ``| |a_k| - |b_perm(k)| | / |b_perm(k)|``."""
    perm, cos = match(a, b)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b[perm], axis=1)
    return {"mean_cosine": float(cos.mean()), "min_cosine": float(cos.min()),
            "median_rel_norm_error": float(np.median(np.abs(na - nb) / nb))}


__all__ = ["rate_learn", "poisson_rate_learn", "match", "compare", "matched_distance"]
