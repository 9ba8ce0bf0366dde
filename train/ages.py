"""Age label schemes: which age groups the age head is trained on and scored in.

A scheme is its label names (what ``ModelMeta.age_labels`` carries), so a checkpoint's
labels fix the scheme everywhere it goes: ``"0-2"`` is the whole years 0 to 2 and
``"95+"`` is 95 and older. :func:`parse_scheme` reads ``realtime train --age-groups``:

- ``adience``: Adience's 8 groups with their gaps (0-2, 4-6, 8-12, 15-20, 25-32,
  38-43, 48-53, 60-100), the default;
- ``5y``: 20 five-year groups 0-4, 5-9, ..., 90-94, 95+;
- ``B1,B2,...``: increasing lower bounds of the groups after the first, e.g.
  ``13,20,30,40,50,60`` -> 0-12, 13-19, 20-29, 30-39, 40-49, 50-59, 60+.

An age goes to the nearest group, ties to the younger one (for schemes without gaps:
the group it falls in). An age known only as a range (Adience's ``(25, 32)``) goes by its
midpoint, as in :mod:`train.labels`.
"""

from __future__ import annotations

import numpy as np

from engines.ages import OLDEST, AgeScheme  # noqa: F401 (re-exported: train's callers import it from here)
from engines.errors import RealtimeError
from engines.meta import AGE_LABELS

#: The named schemes of ``--age-groups``.
NAMED = {"adience": AGE_LABELS, "5y": tuple([f"{a}-{a + 4}" for a in range(0, 95, 5)] + ["95+"])}


def parse_scheme(text: str) -> AgeScheme:
    """``--age-groups``: ``adience``, ``5y`` or lower bounds ``B1,B2,...`` (see the module)."""
    text = str(text).strip()
    if text in NAMED:
        return AgeScheme.from_labels(NAMED[text])
    try:
        cuts = [int(v) for v in text.split(",")]
    except ValueError:
        raise RealtimeError(f"--age-groups: {text!r} is neither adience, 5y nor increasing whole years like 13,20,30") from None
    if any(c <= 0 for c in cuts) or any(b <= a for a, b in zip(cuts, cuts[1:])) or cuts[-1] > 120:
        raise RealtimeError(f"--age-groups: bounds must be increasing whole years between 1 and 120, got {text!r}")
    lows = [0] + cuts
    labels = [f"{a}-{b - 1}" for a, b in zip(lows, cuts)] + [f"{cuts[-1]}+"]
    return AgeScheme.from_labels(labels)


def scheme_name(labels: tuple[str, ...]) -> str:
    """``adience``, ``5y`` or the labels joined, for reports."""
    return next((name for name, named in NAMED.items() if tuple(labels) == named), ",".join(labels))


def relabel(age_group: np.ndarray, age_years: np.ndarray, scheme: AgeScheme) -> np.ndarray:
    """Adience group indices (N,) (-1 unknown) and exact ages (N,) (NaN unknown), as
    :mod:`train.formats` reads them -> (N,) int64 group in ``scheme``: from the exact age
    where known, else from the middle of the Adience group (a range label)."""
    adience = AgeScheme.from_labels(AGE_LABELS)
    known_group = np.asarray(age_group) >= 0
    mid = np.where(known_group, adience.midpoints()[np.clip(age_group, 0, None)], np.nan)
    years = np.where(np.isfinite(age_years), age_years, mid)
    return scheme.group_of(years)
