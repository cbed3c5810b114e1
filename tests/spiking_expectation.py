r"""What a spiking layer's outputs should be, given the input events it received (a test reference).

Given the input events, every random draw that remains is the outputs' own: in each step of the
counting window, output ``k`` fires with probability :math:`\pi_k = R\,dt\,p_k`, independently of the
other neurons and of the other steps, where ``p = softmax(t u)`` is computed from ``u`` before the
step's input events (SPEC of :mod:`snn.network`). The traces follow from the events alone:

.. math:: s_i(n) = s_i(n-1)\,e^{-dt/\tau} + J_i\,[\text{event of } i \text{ at step } n],\qquad
          a_i = b_i + s_i,\qquad u = W a,

from the onset value ``s_i(0)``. So, exactly (up to the weights' change during the run, which is
``O(lr)`` and negligible with the small ``lr`` of the tests):

* count of neuron ``k`` in a presentation: mean :math:`\sum_n \pi_k(n)`, variance
  :math:`v = \sum_n \pi_k(n)(1 - \pi_k(n))` and fourth central moment
  :math:`\sum_n \pi_k (1 - \pi_k)(1 - 6 \pi_k (1 - \pi_k)) + 3 v^2` (a sum of independent Bernoulli draws);
* weight change: each spike of ``k`` at step ``n`` adds
  :math:`c_k\,\sigma_k(n)\,(a^+(n) - u^+_k(n)\,w_k)` (``+``: after the step's events,
  :math:`c_k = \eta_k / (R\,T_{learn})`), so the change has mean
  :math:`c_k \sum_n \pi_k \sigma_k (a^+ - u^+_k w_k)` and variance
  :math:`c_k^2 \sum_n \pi_k (1 - \pi_k) (a^+ - u^+_k w_k)^2` per synapse.

This is computed here in numpy from the documented equations (with
:func:`rate_decoder.rules.soft_wta` for ``p``), independently of the Brian2 code it checks.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.stats import norm

from rate_decoder import rules


def z_bound(n_comparisons: int, family_error: float = 1e-3) -> float:
    """Two-sided normal bound that ``n_comparisons`` z-scores all stay under with probability ``1 - family_error``
    (Bonferroni: valid whatever their correlation)."""
    return float(norm.isf(family_error / (2 * n_comparisons)))


def event_steps(index: np.ndarray, times: np.ndarray, params) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Recorded events ``(index, time)`` -> ``(presentation, step within it, index)``, onset steps dropped."""
    steps_per = int(round(float(params.t_present / params.dt)))
    step = np.rint(np.asarray(times) / float(params.dt)).astype(np.int64)
    m, n = step // steps_per, step % steps_per
    keep = n > 0
    return m[keep], n[keep], np.asarray(index)[keep]


def given_inputs(events, onset: np.ndarray, jump: np.ndarray, bias: np.ndarray, weights: np.ndarray,
                 inverse_temperature: float, lr: float, lr_power: float, anti: float, params) -> dict:
    """Exact means and variances of a layer's counts ``(M, K)`` and weight change ``(K, D)`` given its inputs.

    Args:
        events: ``(presentation, step, input)`` of the input events after the onset (:func:`event_steps`).
        onset: ``(M, D)`` decaying part ``s`` of each trace after the onset step.
        jump: ``(M, D)`` or ``(D,)``: ``J_i``, the jump of ``s_i`` per event.
        bias: ``(D,)``: the constant part ``b_i`` of the traces.
        weights: ``(K, D)``; the plasticity values of the run; ``params``: its :class:`SpikingParams`.
    """
    M, D = onset.shape
    w = np.asarray(weights, dtype=np.float64)
    steps_per = int(round(float(params.t_present / params.dt)))
    first = int(round(float(params.t_blank / params.dt)))  # first step that may spike: n dt > t_blank - dt / 2
    r_dt = float(params.output_rate * params.dt)
    decay = float(np.exp(-params.dt / params.tau))
    m, n, i = events
    hits = np.bincount((n * M + m) * D + i, minlength=steps_per * M * D).reshape(steps_per, M, D)
    s = np.asarray(onset, dtype=np.float64).copy()
    count_mean = np.zeros((M, len(w)))
    count_var = np.zeros((M, len(w)))
    count_fourth = np.zeros((M, len(w)))
    dw_mean, dw_var = np.zeros_like(w), np.zeros_like(w)
    for step in range(1, steps_per):
        s *= decay
        if step >= first:
            u = (bias + s) @ w.T
            p = rules.soft_wta(torch.from_numpy(u), inverse_temperature, dim=1).numpy()
            ps = p ** params.winner_sharpness
            winner = ps > 0.5 * ps.sum(1, keepdims=True)
            sign = 1.0 - 2.0 * anti * (~winner)
            pi = r_dt * p
            v = pi * (1.0 - pi)
            count_mean += pi
            count_var += v
            count_fourth += v * (1.0 - 6.0 * v)
        s += jump * hits[step]
        if step >= first:
            a = bias + s
            u = a @ w.T
            ps = pi * sign
            dw_mean += ps.T @ a - (ps * u).sum(0)[:, None] * w
            dw_var += v.T @ a ** 2 - 2.0 * ((v * u).T @ a) * w + (v * u ** 2).sum(0)[:, None] * w ** 2
    lrfac = (np.abs(np.linalg.norm(w, axis=1) - 1.0) + 1e-10) ** lr_power
    c = lr * lrfac / float(params.output_rate * params.t_learn)
    return {"count_mean": count_mean, "count_var": count_var, "count_m4": count_fourth + 3.0 * count_var ** 2,
            "dw_mean": c[:, None] * dw_mean, "dw_var": c[:, None] ** 2 * dw_var}


def given_on_off_inputs(out, patches: np.ndarray, layer, weights: np.ndarray) -> dict:
    """:func:`given_inputs` for a :class:`snn.layer.SpikingSoftHebb` run that recorded its inputs: the onset
    burst sets ``s = x``, each event moves it by ``sign(x) / (r0 tau)``, no constant part."""
    p = layer.params
    x = np.asarray(patches, dtype=np.float64)
    return given_inputs(event_steps(out.input_i, out.input_t, p), x, np.sign(x) / float(p.input_rate * p.tau),
                        np.zeros(x.shape[1]), weights, layer.inverse_temperature, layer.lr, layer.lr_power,
                        1.0 if layer.rule == "softhebb" else 0.0, p)


def dispersion_z(counts: np.ndarray, ref: dict) -> float:
    """z-score of ``sum (n - mean)^2`` over all (presentation, neuron) cells against its expectation
    ``sum var``; its variance is ``sum (m4 - var^2)`` (independent cells)."""
    sq = ((counts - ref["count_mean"]) ** 2).sum()
    return float((sq - ref["count_var"].sum()) / np.sqrt((ref["count_m4"] - ref["count_var"] ** 2).sum()))
