"""An age scheme as a model's age labels carry it ("25-32", "60+"): which group an age in
years falls in (:class:`AgeScheme`). ``train.ages`` reads ``--age-groups`` into one."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from engines.errors import RealtimeError

#: Oldest age a scheme's open last group ("60+") is taken to reach, for midpoints.
OLDEST = 100


@dataclass(frozen=True)
class AgeScheme:
    """Age groups as label names and inclusive whole-year bounds.

    Attributes:
        labels: (A,) names, youngest first.
        bounds: (A, 2) float64, each group's first and last year (inf for an open group).
    """

    labels: tuple[str, ...]
    bounds: np.ndarray

    @classmethod
    def from_labels(cls, labels: tuple[str, ...] | list[str]) -> "AgeScheme":
        """The scheme of a model's ``age_labels`` ("25-32", "60+")."""
        bounds = []
        for name in labels:
            m = re.fullmatch(r"(\d+)(?:-(\d+)|(\+))", name.strip())
            if m is None:
                raise RealtimeError(f"age label {name!r} is not a range like 25-32 or 60+")
            low = float(m.group(1))
            high = math.inf if m.group(3) else float(m.group(2))
            bounds.append((low, high))
        b = np.array(bounds, np.float64)
        if (b[:, 1] < b[:, 0]).any() or (np.diff(b[:, 0]) <= 0).any():
            raise RealtimeError(f"age labels {list(labels)} are not increasing ranges")
        return cls(tuple(labels), b)

    def __len__(self) -> int:
        return len(self.labels)

    def group_of(self, years: np.ndarray) -> np.ndarray:
        """Ages (N,) float -> (N,) int64 group index, -1 where the age is NaN."""
        years = np.asarray(years, np.float64).reshape(-1)
        known = np.isfinite(years)
        y = np.where(known, years, 0.0)[:, None]
        distance = np.maximum(np.maximum(self.bounds[None, :, 0] - y, y - self.bounds[None, :, 1]), 0.0)
        return np.where(known, np.argmin(distance, axis=1), -1).astype(np.int64)  # argmin: first of ties

    def midpoints(self) -> np.ndarray:
        """(A,) float64 middle year of each group (an open group ends at :data:`OLDEST`)."""
        high = np.where(np.isfinite(self.bounds[:, 1]), self.bounds[:, 1], np.maximum(OLDEST, self.bounds[:, 0]))
        return (self.bounds[:, 0] + high) / 2
