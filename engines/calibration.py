"""Temperature scaling of the heads' probabilities (``ModelMeta.temperature``).

A model's softmax probabilities are often over-confident; dividing the log
probabilities by a temperature T > 1 fitted on validation (``realtime calibrate``)
makes them say how often they are right, without changing any prediction's argmax.
Engines apply it once, to their final probabilities (after test-time flip averaging).
"""

from __future__ import annotations

import numpy as np

#: Floor for probabilities before the log (a softmax never gives exactly 0 in float64).
_TINY = 1e-12


def scale(probs: np.ndarray, temperature: float) -> np.ndarray:
    """(N, C) probabilities -> (N, C) float32 ``softmax(log p / T)``; T = 1 returns them as they are."""
    if temperature == 1.0 or not len(probs):
        return probs
    z = np.log(np.maximum(probs.astype(np.float64), _TINY)) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def calibrated(age_probs: np.ndarray, gender_probs: np.ndarray, temperature: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Age (N, A) and gender (N, G) probabilities scaled by ``(age T, gender T)``."""
    return scale(age_probs, float(temperature[0])), scale(gender_probs, float(temperature[1]))


def logit(p: np.ndarray) -> np.ndarray:
    """``log(p / (1 - p))`` in float64, p clipped to [1e-4, 1 - 1e-4]."""
    p = np.clip(np.asarray(p, np.float64), 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p))


def platt(p_positive: np.ndarray, a: float, b: float) -> np.ndarray:
    """P(label 1) re-scaled by ``train.calibration.fit_platt``'s (a, b), float32 like the input's shape."""
    return (1 / (1 + np.exp(-(a * logit(p_positive) + b)))).astype(np.float32)
