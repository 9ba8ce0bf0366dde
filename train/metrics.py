"""Metrics for the age-group, gender and years heads, each over its known labels.

All functions take numpy arrays: predicted / true age groups (N,) int64 (true -1 =
unknown), genders (N,) int64 (true -1 = unknown), years (N,) float32 (true NaN =
unknown). A metric with no known labels is NaN (JSON: null), never 0.
"""

from __future__ import annotations

import math

import numpy as np

#: Gender accuracy is also reported for faces at least this old (where it is defined
#: well enough to be a target); children's faces are much harder.
ADULT_AGE = 13


def age_exact(pred: np.ndarray, true: np.ndarray) -> float:
    known = true >= 0
    return float((pred[known] == true[known]).mean()) if known.any() else math.nan


def age_one_off(pred: np.ndarray, true: np.ndarray) -> float:
    """Share of predictions within one group of the truth."""
    known = true >= 0
    return float((np.abs(pred[known] - true[known]) <= 1).mean()) if known.any() else math.nan


def gender_accuracy(pred: np.ndarray, true: np.ndarray) -> float:
    known = true >= 0
    return float((pred[known] == true[known]).mean()) if known.any() else math.nan


def mae(pred_years: np.ndarray, true_years: np.ndarray) -> float:
    known = np.isfinite(true_years)
    return float(np.abs(pred_years[known] - true_years[known]).mean()) if known.any() else math.nan


def confusion(pred: np.ndarray, true: np.ndarray, classes: int) -> np.ndarray:
    """(classes, classes) int64 counts, rows true, columns predicted; unknowns left out."""
    known = true >= 0
    out = np.zeros((classes, classes), np.int64)
    np.add.at(out, (true[known], pred[known]), 1)
    return out


def summary(age_pred, age_true, gender_pred, gender_true, years_pred, years_true) -> dict[str, float]:
    """The headline metrics of one evaluation (see the module docstring for shapes)."""
    adult = np.isfinite(years_true) & (years_true >= ADULT_AGE)
    return {
        "age_exact": age_exact(age_pred, age_true),
        "age_one_off": age_one_off(age_pred, age_true),
        "gender_acc": gender_accuracy(gender_pred, gender_true),
        "gender_acc_13plus": gender_accuracy(gender_pred[adult], gender_true[adult]) if adult.any() else math.nan,
        "mae": mae(years_pred, years_true),
        "n": int(len(age_true)),
    }


def bootstrap_ci(arrays: tuple[np.ndarray, ...], fn, samples: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``fn(*arrays)`` over images (resampled together)."""
    n = len(arrays[0])
    if n == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    values = np.array([fn(*(a[idx] for a in arrays)) for idx in (rng.integers(0, n, n) for _ in range(samples))])
    values = values[np.isfinite(values)]
    if not len(values):
        return math.nan, math.nan
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def clean(value):
    """Make metrics JSON-safe: NaN -> None, numpy scalars/arrays -> Python."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return clean(value.tolist())
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else round(float(value), 5)
    if isinstance(value, np.integer):
        return int(value)
    return value
