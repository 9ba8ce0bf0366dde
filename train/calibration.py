"""Saying when unsure, the numbers: temperature scaling fitted on validation, its calibration error,
and the gender confidence under which the overlay shows ``?``.

:func:`fit_temperature` finds the T minimising the negative log-likelihood of
``softmax(log p / T)`` on labelled validation outputs (Guo et al. 2017, one parameter
per head, so no prediction's argmax changes). :func:`expected_calibration_error` is the
usual 15-bin ECE of the top class. :func:`gender_threshold` picks the lowest probability
at which the genders still shown are right at least ``target`` of the time.
:func:`train.calibrate.calibrate_model` does all three for ``realtime calibrate``.
:func:`fit_platt` (Platt 1999: a logistic regression on a binary score's logit, with the
classes weighted equally) re-centres a teacher's P(male) before it becomes a soft target.
"""

from __future__ import annotations

import numpy as np

from engines.calibration import logit as _logit
from engines.calibration import platt, scale  # noqa: F401 (platt: re-exported for train's callers)
from engines.meta import ModelMeta

#: Shown genders must be right at least this often (issue 17: 97%).
GENDER_TARGET = 0.97
#: ECE bins (equal width over the top-class probability).
ECE_BINS = 15


def _nll(probs: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    p = scale(probs, temperature).astype(np.float64)
    return float(-np.log(np.maximum(p[np.arange(len(labels)), labels], 1e-12)).mean())


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """(N, C) probabilities and (N,) labels (-1 unknown, left out) -> the temperature in
    [0.05, 20] with the lowest negative log-likelihood (golden-section search on log T;
    the NLL is convex in 1/T). 1.0 when no label is known."""
    known = labels >= 0
    probs, labels = probs[known], labels[known]
    if not len(labels):
        return 1.0
    lo, hi = np.log(0.05), np.log(20.0)
    g = (np.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = _nll(probs, labels, np.exp(a)), _nll(probs, labels, np.exp(b))
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = _nll(probs, labels, np.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = _nll(probs, labels, np.exp(b))
    return float(round(np.exp((lo + hi) / 2), 4))


def fit_platt(p_positive: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(N,) P(label 1) and (N,) labels (0/1; -1 unknown, left out) -> (a, b) such that
    ``platt(p, a, b) = sigmoid(a * logit(p) + b)`` has the lowest log-loss, each class
    weighted as half of the data (so a score biased towards the commoner class is moved
    back to 0.5). Newton's method; (1, 0), the identity, when a class is missing."""
    known = labels >= 0
    x, y = _logit(p_positive[known]), (labels[known] == 1).astype(np.float64)
    if y.all() or not y.any():
        return 1.0, 0.0
    w = np.where(y == 1, 0.5 / y.mean(), 0.5 / (1 - y.mean()))
    theta = np.array([1.0, 0.0])
    design = np.stack([x, np.ones_like(x)], axis=1)
    for _ in range(100):
        p = 1 / (1 + np.exp(-(design @ theta)))
        grad = design.T @ (w * (p - y))
        hess = design.T @ (design * (w * p * (1 - p))[:, None]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        theta = theta - step
        if np.abs(step).max() < 1e-9:
            break
    return float(theta[0]), float(theta[1])


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE of the top class over the known labels: sum over equal-width confidence bins
    of (share of faces in the bin) x |accuracy - mean confidence|; NaN with no labels."""
    known = labels >= 0
    probs, labels = probs[known], labels[known]
    if not len(labels):
        return float("nan")
    confidence, right = probs.max(1), probs.argmax(1) == labels
    edges = np.minimum((confidence * bins).astype(int), bins - 1)
    total = 0.0
    for b in np.unique(edges):
        in_bin = edges == b
        total += in_bin.mean() * abs(right[in_bin].mean() - confidence[in_bin].mean())
    return float(total)


def gender_threshold(probs: np.ndarray, labels: np.ndarray, target: float = GENDER_TARGET) -> float:
    """The lowest top-class probability t (one of the outputs' own, or 0) such that the
    faces shown (probability >= t) are right at least ``target`` of the time; 1.0 when
    no t reaches it."""
    known = labels >= 0
    confidence = probs[known].max(1)
    right = probs[known].argmax(1) == labels[known]
    order = np.argsort(-confidence, kind="stable")
    accuracy = np.cumsum(right[order]) / np.arange(1, len(order) + 1)  # of the k most confident
    ok = np.flatnonzero(accuracy >= target)
    if not len(ok):
        return 1.0
    k = ok[-1]  # the most faces shown while still right often enough
    return 0.0 if k == len(order) - 1 else float(confidence[order[k]])


def shown_share(gender_probs: np.ndarray, labels, threshold: float) -> tuple[dict, dict[int, dict]]:
    """Of the faces with a known gender in ``labels``: the share whose gender is shown at
    ``threshold`` and the accuracy of those shown (``{"shown", "accuracy_shown", "n"}``),
    overall and by age group index."""
    shown = gender_probs.max(1) >= threshold
    right = gender_probs.argmax(1) == labels.gender
    known = labels.gender >= 0

    def part(mask):
        m = mask & known
        return {"shown": float(shown[m].mean()) if m.any() else None,
                "accuracy_shown": float(right[m & shown].mean()) if (m & shown).any() else None, "n": int(m.sum())}

    return part(np.ones(len(shown), bool)), {k: part(labels.age_group == k) for k in range(int(labels.age_group.max()) + 1)}


def calibration_report(raw, calibrated, meta: ModelMeta) -> dict:
    """ECE of both heads before (the network's own probabilities) and after the model's
    temperatures, and the genders shown at its ``min_gender_confidence``."""
    lab = raw.labels
    overall, by_group = shown_share(calibrated.gender_probs, lab, meta.min_gender_confidence)
    return {
        "temperature": {"age": meta.temperature[0], "gender": meta.temperature[1]},
        "ece_before": {"age": expected_calibration_error(raw.age_probs, lab.age_group),
                       "gender": expected_calibration_error(raw.gender_probs, lab.gender)},
        "ece_after": {"age": expected_calibration_error(calibrated.age_probs, lab.age_group),
                      "gender": expected_calibration_error(calibrated.gender_probs, lab.gender)},
        "min_gender_confidence": meta.min_gender_confidence,
        "gender_shown": overall,
        "gender_shown_by_age_group": {meta.age_labels[k]: v for k, v in by_group.items() if k < len(meta.age_labels)},
    }
