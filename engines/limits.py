"""The one table of limits: every number a user or a file can give, and its range.

The CLI's options (as click types built from :data:`LIMITS`), the settings
dataclasses on construction (:func:`check_fields`), :class:`~engines.meta.ModelMeta`
on construction and the readers of model files and labels all check against this
table, so a bad value fails before any work, with one line naming the option and
its range (``--crop-scale 10: expected 0.5 to 4``), and the same value is refused the
same way wherever it comes from. NaN and infinities are outside every range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from engines.errors import RealtimeError


@dataclass(frozen=True)
class Limit:
    """A closed (or, with ``low_open`` / ``high_open``, open) range of finite numbers."""

    low: float
    high: float
    integer: bool = False
    low_open: bool = False
    high_open: bool = False

    def problem(self, value) -> str:
        """Why ``value`` is not in range ("" when it is)."""
        kind = int if self.integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kind):
            return "expected an integer" if self.integer else "expected a number"
        if not math.isfinite(value):
            return f"expected a finite number, {self.text()}"
        low_ok = value > self.low if self.low_open else value >= self.low
        high_ok = value < self.high if self.high_open else value <= self.high
        return "" if low_ok and high_ok else f"expected {self.text()}"

    def text(self) -> str:
        """``0.5 to 4``, ``more than 0, up to 10``, ``0 to under 1``."""
        low = f"more than {self.low:g}" if self.low_open else f"{self.low:g}"
        high = f"under {self.high:g}" if self.high_open else f"{self.high:g}"
        return f"{low}, up to {high}" if self.low_open else f"{low} to {high}"


#: name (a settings field; its option is ``--name-with-dashes``) -> its range.
LIMITS: dict[str, Limit] = {
    # the model: ModelMeta's fields, train's --input-size/--crop-scale, the app's --crop-scale
    "input_size": Limit(16, 1024, integer=True),
    "crop_scale": Limit(0.5, 4),
    "temperature": Limit(0.01, 100),  # each head's, ModelMeta.temperature (realtime calibrate)
    "min_gender_confidence": Limit(0, 1),
    "mean": Limit(0, 1),
    "std": Limit(1e-3, 10),
    "format_version": Limit(1, 10**6, integer=True),
    # training (realtime train)
    "epochs": Limit(1, 100_000, integer=True),
    "batch_size": Limit(1, 65_536, integer=True),
    "folds": Limit(1, 100, integer=True),
    "holdout": Limit(0, 1, low_open=True, high_open=True),
    "lr": Limit(0, 10, low_open=True),
    "weight_decay": Limit(0, 10),
    "warmup": Limit(0, 1),
    "label_smoothing": Limit(0, 1, high_open=True),
    "years_weight": Limit(0, 1000),
    "drop_rate": Limit(0, 1, high_open=True),
    "distill": Limit(0, 1),
    "feature_weight": Limit(0, 100),
    "init_member": Limit(0, 64, integer=True),
    "image_side": Limit(16, 4096, integer=True),
    "workers": Limit(0, 256, integer=True),
    "threads": Limit(1, 1024, integer=True),
    "limit": Limit(1, 10**9, integer=True),
    # evaluation (realtime eval, realtime calibrate)
    "context": Limit(1, 8),
    "bootstrap": Limit(0, 100_000, integer=True),
    "target": Limit(0.5, 1, high_open=True),  # calibrate: how often a shown gender must be right
    # contact sheets (realtime sheet)
    "every": Limit(1, 10**6, integer=True),
    "max_faces": Limit(1, 10**6, integer=True),
    "columns": Limit(1, 1000, integer=True),
    "scale": Limit(0.25, 8),
    # TensorRT's optimization profile (realtime convert)
    "max_batch": Limit(1, 4096, integer=True),
    "opt_batch": Limit(1, 4096, integer=True),
    # the app
    "min_score": Limit(0, 1),
    # facecrops: the side of each written crop
    "side": Limit(16, 1024, integer=True),
    "smoothing": Limit(0, 0.99),
    "hysteresis": Limit(0, 1),
    "batch": Limit(1, 4096, integer=True),  # bench --batches, each
    "max_pixels": Limit(1, 10**10, integer=True),  # --max-pixels: largest image decoded
    # re-identification's quality gate (ReidSettings.min_side, .min_contrast): 0 = no gate;
    # a grey level's standard deviation is at most 127.5
    "reid_min_face": Limit(0, 4096),
    "reid_min_contrast": Limit(0, 128),
    # labels read from files
    "age_years": Limit(0, 150),
}


def option_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def check(name: str, value, what: str | None = None):
    """``value`` if it is within ``LIMITS[name]``, else one RealtimeError naming
    ``what`` (default: the option ``--name``)."""
    problem = LIMITS[name].problem(value)
    if problem:
        raise RealtimeError(f"{what or option_name(name)} {value!r}: {problem}")
    return value


def check_fields(settings: object, names: tuple[str, ...] | None = None) -> None:
    """Check each field of ``settings`` that the table names (``names``: only these);
    None values mean "not set" and pass."""
    for name in names if names is not None else tuple(LIMITS):
        value = getattr(settings, name, None)
        if value is not None:
            check(name, value)
