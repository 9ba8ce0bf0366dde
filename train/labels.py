"""Label fields of a face set read into class indices: ages, genders, label text.

Unknown labels are ``-1`` (classes) or ``NaN`` (years), never a class of their own.

Age mapping (:func:`age_group_of`): an age in years goes to the nearest of the 8
Adience groups (0-2, 4-6, 8-12, 15-20, 25-32, 38-43, 48-53, 60-100), ties to the
younger group. For whole years that is 0-3, 4-7, 8-13, 14-22, 23-35, 36-45, 46-56, 57+.
An Adience range such as ``(25, 32)`` goes to the group of its midpoint by the same
rule, so the official ranges land in their own group and odd ones such as ``(8, 23)``
(midpoint 15.5 -> 15-20) or ``(38, 48)`` (midpoint 43 -> 38-43) land by their middle.
Only exact ages train and score the years head.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from engines.errors import RealtimeError
from engines.limits import LIMITS
from engines.meta import AGE_LABELS, GENDER_LABELS

#: UTKFace race codes 0-4.
RACE_LABELS: tuple[str, ...] = ("White", "Black", "Asian", "Indian", "Others")
_GROUP_BOUNDS = np.array([[int(a), int(b)] for a, b in (g.split("-") for g in AGE_LABELS)], np.float64)
_GENDER_WORDS = {
    "f": "female", "female": "female", "woman": "female", "w": "female",
    "m": "male", "male": "male", "man": "male",
}  # fmt: skip
_UNKNOWN_WORDS = {"", "u", "unknown", "none", "nan", "na", "n/a", "-1", "?"}


def age_group_of(age: float) -> int:
    """Index into ``AGE_LABELS`` of the group nearest to ``age`` years, ties to the lower."""
    if not math.isfinite(age):
        return -1
    distance = np.maximum(np.maximum(_GROUP_BOUNDS[:, 0] - age, age - _GROUP_BOUNDS[:, 1]), 0.0)
    return int(np.argmin(distance))  # argmin returns the first (youngest) of equal distances


def gender_index(value: str, source: str = "label") -> int:
    """``"f"``, ``"female"``, ``"m"``, ``"male"``... -> index into ``GENDER_LABELS``; unknown -> -1."""
    word = str(value).strip().lower()
    if word in _UNKNOWN_WORDS:
        return -1
    if word not in _GENDER_WORDS:
        raise RealtimeError(f"{source}: gender {value!r} is not one of male, female, m, f, u or empty")
    return GENDER_LABELS.index(_GENDER_WORDS[word])


def parse_age(value: str, source: str = "label") -> tuple[int, float]:
    """An age field -> (group index or -1, exact years or NaN).

    Accepts exact years (``"35"``, ``"35.0"``), Adience ranges (``"(25, 32)"``), a group
    name from ``AGE_LABELS`` (``"25-32"``) and unknowns (``"None"``, empty)."""
    text = str(value).strip()
    if text.lower() in _UNKNOWN_WORDS:
        return -1, math.nan
    numbers = re.fullmatch(r"\(?\s*(\d+(?:\.\d+)?)\s*(?:[,-]\s*(\d+(?:\.\d+)?)\s*)?\)?", text)
    if numbers is None:
        raise RealtimeError(f"{source}: age {value!r} is neither years, a range like (25, 32) nor empty")
    low, high = numbers.groups()
    for end in (low, high):
        if end is not None and (problem := LIMITS["age_years"].problem(float(end))):
            raise RealtimeError(f"{source}: age {value!r}: {problem} years")
    if high is None:
        years = float(low)
        return age_group_of(years), years
    if text in AGE_LABELS:
        return AGE_LABELS.index(text), math.nan
    return age_group_of((float(low) + float(high)) / 2), math.nan


def text_lines(path: Path) -> list[str]:
    """A label file's lines: UTF-8 (with or without a BOM), or UTF-16 with its BOM (as
    spreadsheet programs save "Unicode text"); anything else is one line saying so."""
    data = path.read_bytes()
    encoding = "utf-16" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig"
    try:
        return data.decode(encoding).splitlines(keepends=True)
    except UnicodeDecodeError as e:
        raise RealtimeError(f"{path}: not UTF-8 or UTF-16 text (byte {e.start}); save it as UTF-8 CSV") from None


def fields(rec: dict, source: str, expected: int) -> dict:
    """A DictReader row, stripped; a row with more fields than the header is one line."""
    if None in rec:
        raise RealtimeError(f"{source}: {expected + len(rec[None])} fields where the header has {expected}; quote fields holding commas")
    return {(k or "").strip(): (v or "").strip() for k, v in rec.items()}
