"""Rate-rule references for the spiking layers, computed with :mod:`rate_decoder.rules` (never re-implemented).

The spiking layers implement the local variant of the rule (``normalisation="none"``); :func:`rate_learn`
runs that rule on the same patch sequence, and :func:`compare` matches two weight sets up to a
permutation of neurons (competitive learning may order the neurons differently).
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from rate_decoder import rules


def rate_learn(patches: np.ndarray, weights: np.ndarray, inverse_temperature: float, lr: float, lr_power: float,
               rule: str = "softhebb") -> np.ndarray:
    """Learn from ``patches`` ``(n, D)`` one at a time (batch 1, local rule) from ``weights (K, D)``."""
    w = torch.as_tensor(np.asarray(weights), dtype=torch.float64).clone()
    x = torch.as_tensor(np.asarray(patches), dtype=torch.float64)
    for n in range(len(x)):
        _, dw = rules.linear_step(x[n:n + 1], w, inverse_temperature, lr, lr_power, rule, normalisation="none")
        w += dw
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


def compare(a: np.ndarray, b: np.ndarray) -> dict:
    """Mean and min matched cosine and median relative norm error ``| |a_k| - |b_perm(k)| | / |b_perm(k)|``."""
    perm, cos = match(a, b)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b[perm], axis=1)
    return {"mean_cosine": float(cos.mean()), "min_cosine": float(cos.min()),
            "median_rel_norm_error": float(np.median(np.abs(na - nb) / nb))}


__all__ = ["rate_learn", "match", "compare"]
