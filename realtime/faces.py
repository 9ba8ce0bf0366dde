"""`Faces`: the one container that flows through the pipeline, a frame's faces as
parallel arrays (after supervision's ``Detections``)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np


@dataclass
class Faces:
    """N faces of one frame.

    Attributes:
        boxes: (N, 4) float32, x1, y1, x2, y2 in pixels.
        scores: (N,) float32, detector confidence in [0, 1].
        age_probs: (N, A) float32 or None until classified; A = len(meta.age_labels).
        gender_probs: (N, G) float32 or None until classified.
        age_years: (N,) float32 or None until classified; regression estimate in years.
        track_ids: (N,) int64 or None until tracked.
        predicted: (N,) bool or None until tracked; True where the detector missed the
            face and the box is the tracker's prediction.
        age_class, gender_class: (N,) int64 or None; the labels to show, when a stage
            (the tracker's hysteresis) chose them; else the argmax of the probabilities
            (see :attr:`age_classes`, :attr:`gender_classes`).
        person_ids: (N,) int64 or None without re-identification; the person of each
            face's track (several tracks can be one person), -1 where the track has
            not been recognised (yet, or ever: no usable view; see :mod:`realtime.reid`).
        eyes: (N, 2, 2) float32 or None; the detector's eye keypoints in frame pixels,
            ``eyes[i, 0]`` the person's right eye (on the image's left in an upright
            face), ``eyes[i, 1]`` the left, each (x, y); NaN where unknown (a coasting
            track's predicted box has no fresh eyes). The cropper levels by them
            (:class:`engines.crops.Cropper`, ``level_eyes``).
        frame_index: index of the frame the faces belong to.
    """

    boxes: np.ndarray
    scores: np.ndarray
    age_probs: np.ndarray | None = None
    gender_probs: np.ndarray | None = None
    age_years: np.ndarray | None = None
    track_ids: np.ndarray | None = None
    predicted: np.ndarray | None = None
    age_class: np.ndarray | None = None
    gender_class: np.ndarray | None = None
    person_ids: np.ndarray | None = None
    eyes: np.ndarray | None = None
    frame_index: int = 0

    _ARRAYS = ("boxes", "scores", "age_probs", "gender_probs", "age_years", "track_ids", "predicted", "age_class",
               "gender_class", "person_ids", "eyes")

    def __post_init__(self) -> None:
        n = len(self.boxes)
        if self.boxes.shape != (n, 4):
            raise ValueError(f"boxes must have shape (N, 4), got {self.boxes.shape}")
        for name in self._ARRAYS[1:]:
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"{name} must have {n} rows (one per box), got shape {value.shape}")
        if self.eyes is not None and self.eyes.shape != (n, 2, 2):
            raise ValueError(f"eyes must have shape (N, 2, 2), got {self.eyes.shape}")

    @classmethod
    def empty(cls, frame_index: int = 0) -> "Faces":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), frame_index=frame_index)

    @classmethod
    def concatenate(cls, parts: "list[Faces]", frame_index: int = 0) -> "Faces":
        """The faces of ``parts`` (of one frame) in one Faces; a field stays only where
        every part has it, except ``eyes``: NaN for the parts without them."""
        if not parts:
            return cls.empty(frame_index)
        eyes = [p.eyes if p.eyes is not None else np.full((len(p), 2, 2), np.nan, np.float32) for p in parts]
        arrays = {name: np.concatenate([getattr(p, name) for p in parts])
                  if all(getattr(p, name) is not None for p in parts) else None for name in cls._ARRAYS if name != "eyes"}
        return cls(**arrays, eyes=np.concatenate(eyes).astype(np.float32), frame_index=frame_index)

    @classmethod
    def from_mediapipe(cls, result: Any, frame_index: int = 0, size: tuple[int, int] = (1, 1)) -> "Faces":
        """Convert a MediaPipe Tasks ``FaceDetectorResult`` of a ``size`` = (width,
        height) image; its types stop here. Its first two keypoints (right eye, left
        eye; normalised to the image) become :attr:`eyes` in pixels (the default
        size (1, 1) keeps them normalised)."""
        dets = result.detections
        if not dets:
            return cls.empty(frame_index)
        boxes = np.array(
            [
                (b.origin_x, b.origin_y, b.origin_x + b.width, b.origin_y + b.height)
                for b in (d.bounding_box for d in dets)
            ],
            np.float32,
        )
        scores = np.array([d.categories[0].score for d in dets], np.float32)
        eyes = np.full((len(dets), 2, 2), np.nan, np.float32)
        for i, d in enumerate(dets):
            if len(d.keypoints or ()) >= 2:
                eyes[i] = [(k.x * size[0], k.y * size[1]) for k in d.keypoints[:2]]
        return cls(boxes, scores, eyes=eyes, frame_index=frame_index)

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, index: Any) -> "Faces":
        """Select faces by mask, index array or slice; all fields stay aligned."""
        if isinstance(index, (int, np.integer)):
            index = [index]
        picked = {name: None if getattr(self, name) is None else getattr(self, name)[index] for name in self._ARRAYS}
        return Faces(**picked, frame_index=self.frame_index)

    def with_predictions(self, age_probs: np.ndarray, gender_probs: np.ndarray, age_years: np.ndarray) -> "Faces":
        """A copy with the classifier's outputs filled in."""
        return replace(self, age_probs=age_probs, gender_probs=gender_probs, age_years=age_years)

    def with_people(self, person_ids: np.ndarray) -> "Faces":
        """A copy with re-identification's person ids (N,) int64 filled in."""
        return replace(self, person_ids=np.asarray(person_ids, np.int64))

    def clipped(self, width: int, height: int, min_side: float = 2.0) -> "Faces":
        """Boxes clipped to a width x height frame; faces left smaller than ``min_side``
        pixels (e.g. a coasting track that moved out of the frame) are dropped. Eyes
        are kept as they are (a face at the border can have an eye outside)."""
        boxes = np.clip(self.boxes, 0, [width, height, width, height]).astype(np.float32)
        keep = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) >= min_side
        return replace(self, boxes=boxes)[keep]

    @property
    def age_classes(self) -> np.ndarray:
        """(N,) int64 index of each face's age label (None before classification)."""
        return self.age_class if self.age_class is not None else self.age_probs.argmax(1)

    @property
    def gender_classes(self) -> np.ndarray:
        """(N,) int64 index of each face's gender label (None before classification)."""
        return self.gender_class if self.gender_class is not None else self.gender_probs.argmax(1)

    @property
    def areas(self) -> np.ndarray:
        """(N,) float32 box areas in square pixels."""
        return (self.boxes[:, 2] - self.boxes[:, 0]) * (self.boxes[:, 3] - self.boxes[:, 1])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Faces):
            return NotImplemented
        return self.frame_index == other.frame_index and all(
            (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))
            for a, b in ((getattr(self, f.name), getattr(other, f.name)) for f in fields(self) if f.name in self._ARRAYS)
        )
