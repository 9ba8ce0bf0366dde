"""`ModelMeta`: what a set of weights needs to be used correctly.

It travels with the weights, in every checkpoint, ONNX file and TensorRT sidecar, and
is read back as ``engine.meta``. The weights, not the architecture's name, fix the
preprocessing, so input size, mean/std, crop framing and label names live here and
nowhere else.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from engines.errors import RealtimeError
from engines.limits import LIMITS, Limit

#: The 8 Adience age groups, youngest first.
AGE_LABELS: tuple[str, ...] = ("0-2", "4-6", "8-12", "15-20", "25-32", "38-43", "48-53", "60-100")
#: Gender labels in the order of the gender head's outputs.
GENDER_LABELS: tuple[str, ...] = ("female", "male")
#: Version of the checkpoint/metadata format; bump when a field changes meaning.
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ModelMeta:
    """Everything about a model that is not its weights.

    Attributes:
        arch: timm architecture name of the backbone, e.g. ``"mobilenetv3_small_100"``.
        input_size: side of the square RGB input in pixels.
        mean, std: per-channel normalisation of RGB values scaled to [0, 1].
        crop_scale: side of the square face crop as a multiple of the detector box's
            longer side (the framing the model was trained on).
        age_labels, gender_labels: names of the heads' classes, in output order.
        years_bins: 0: the years head is a linear regression; N > 0: it is a distribution
            over the whole ages 0..N-1 whose expectation is the age (label-distribution
            learning, as in DLDL); either way the network outputs one age per face.
        members: empty for one network; for an ensemble, one ``{"arch", "years_bins"}``
            object per member network (``arch`` then reads ``"ensemble"``): each sees the
            same input and their probabilities and ages are averaged.
        temperature: ``(age, gender)`` temperatures the heads' probabilities are scaled
            by (``softmax(log p / T)``, fitted on validation by ``realtime calibrate``;
            every engine applies them, after test-time flip): 1.0 leaves them as they are.
        min_gender_confidence: the overlay shows ``?`` for a gender whose (calibrated)
            probability is under this (chosen on validation; 0: always shown).
        level_eyes: the model was trained on crops levelled by the eyes (each crop
            rotated about its centre so the detector's eye keypoints are level, see
            :class:`engines.crops.Cropper`): the app, evaluation and calibration level
            its crops too. False (every model before it): crops are axis-aligned.
        trained: False for randomly initialised weights; the app warns on every run.
        trained_on: free text naming the training data and its terms.
        format_version: version of this metadata format.
    """

    arch: str = "mobilenetv3_small_100"
    input_size: int = 112
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    crop_scale: float = 1.15
    age_labels: tuple[str, ...] = AGE_LABELS
    gender_labels: tuple[str, ...] = GENDER_LABELS
    years_bins: int = 0
    members: tuple[dict, ...] = field(default=(), hash=False)
    temperature: tuple[float, float] = (1.0, 1.0)
    min_gender_confidence: float = 0.0
    level_eyes: bool = False
    trained: bool = False
    trained_on: str = ""
    format_version: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        """Checked on construction (the one table of limits, :mod:`engines.limits`), so
        a meta that no reader would accept is never built, trained or written."""
        for f in dataclasses.fields(self):
            problem = _FIELD_CHECKS[f.name](getattr(self, f.name))
            if problem:
                raise RealtimeError(f"model metadata {f.name} = {_short(getattr(self, f.name))}: {problem}")

    def to_json(self) -> str:
        """JSON of every field; the calibration fields and ``level_eyes`` only when set,
        so an uncalibrated, unlevelled model's files stay byte for byte as versions
        that predate them wrote them (and readable by those versions)."""
        data = dataclasses.asdict(self)
        for key, default in _WRITTEN_WHEN_SET.items():
            if (tuple(data[key]) if isinstance(data[key], (list, tuple)) else data[key]) == default:
                del data[key]
        return json.dumps(data, sort_keys=True)

    @property
    def calibrated(self) -> bool:
        return tuple(self.temperature) != (1.0, 1.0)

    @classmethod
    def from_json(cls, text: str, source: str = "model") -> "ModelMeta":
        """Parse metadata written by :meth:`to_json`; unknown keys are an error."""
        try:
            data = json.loads(text)
        except (TypeError, json.JSONDecodeError) as e:
            raise RealtimeError(f"{source}: its model metadata is not valid JSON ({e})") from None
        return cls.from_dict(data, source)

    @classmethod
    def from_dict(cls, data: dict, source: str = "model") -> "ModelMeta":
        names = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(data, dict):
            raise RealtimeError(f"{source}: its model metadata is not a JSON object")
        unknown = set(data) - names
        if unknown:
            raise RealtimeError(f"{source}: unknown model metadata fields {sorted(unknown)}")
        for key, value in data.items():
            problem = _FIELD_CHECKS[key](value)
            if problem:
                raise RealtimeError(f"{source}: bad model metadata: {key} = {_short(value)} ({problem}); the file is damaged or not from realtime")
        version = data.get("format_version", FORMAT_VERSION)
        if version > FORMAT_VERSION:
            raise RealtimeError(
                f"{source}: model format version {version} is newer than this realtime "
                f"understands ({FORMAT_VERSION}); upgrade realtime"
            )
        for key in ("mean", "std", "age_labels", "gender_labels", "members", "temperature"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


def _number(value, low: float, high: float, integer: bool = False) -> str:
    """Why ``value`` is not a finite number in [low, high], or ""."""
    return Limit(low, high, integer).problem(value)


def _numbers(value, n: int, limit: Limit) -> str:
    if not isinstance(value, (list, tuple)) or len(value) != n:
        return f"expected {n} numbers"
    return next((p for v in value if (p := limit.problem(v))), "")


def _labels(value, at_least: int) -> str:
    if not isinstance(value, (list, tuple)) or len(value) < at_least:
        return f"expected a list of at least {at_least} names"
    if not all(isinstance(v, str) and v for v in value) or len(set(value)) != len(value):
        return "expected distinct non-empty names"
    return ""


def _members(value) -> str:
    if not isinstance(value, (list, tuple)) or len(value) == 1:
        return "expected a list of 2 or more member objects (or none)"
    for member in value:
        if not isinstance(member, dict) or "arch" not in member or set(member) - {"arch", "years_bins"}:
            return 'expected objects with "arch" and optionally "years_bins"'
        if problem := next((p for k, v in member.items() if (p := _FIELD_CHECKS[k](v))), ""):
            return f"a member's {problem}"
    return ""


def _text(value) -> str:
    return "" if isinstance(value, str) else "expected a string"


#: field -> why its value is wrong ("" when it is fine). The numbers' ranges are the
#: one table's (engines.limits: 16..1024 px inputs, a std that does not divide by ~0).
_FIELD_CHECKS = {
    "arch": lambda v: _text(v) or ("" if v else "expected a timm architecture name"),
    "input_size": LIMITS["input_size"].problem,
    "mean": lambda v: _numbers(v, 3, LIMITS["mean"]),
    "std": lambda v: _numbers(v, 3, LIMITS["std"]),
    "crop_scale": LIMITS["crop_scale"].problem,
    "age_labels": lambda v: _labels(v, 2),
    "gender_labels": lambda v: _labels(v, 2),
    "years_bins": lambda v: "" if v == 0 and not isinstance(v, bool) else _number(v, 2, 1000, integer=True),
    "members": _members,
    "temperature": lambda v: _numbers(v, 2, LIMITS["temperature"]),
    "min_gender_confidence": LIMITS["min_gender_confidence"].problem,
    "level_eyes": lambda v: "" if isinstance(v, bool) else "expected true or false",
    "trained": lambda v: "" if isinstance(v, bool) else "expected true or false",
    "trained_on": _text,
    "format_version": LIMITS["format_version"].problem,
    "extra": lambda v: "" if isinstance(v, dict) else "expected an object",
}


#: Fields :meth:`ModelMeta.to_json` leaves out at these (default) values.
_WRITTEN_WHEN_SET = {"temperature": (1.0, 1.0), "min_gender_confidence": 0.0, "level_eyes": False}


def _short(value) -> str:
    text = json.dumps(value) if not isinstance(value, float) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
