"""Overlay drawing: tiny single-purpose annotators (after supervision's).

Each draws in place on a BGR uint8 frame (H, W, 3) and returns it."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod

import cv2
import numpy as np

from engines.meta import ModelMeta
from realtime.faces import Faces

#: BGR colours by gender label; unknown labels get the fallback.
GENDER_COLORS = {"female": (180, 80, 255), "male": (255, 160, 40)}
FALLBACK_COLOR = (40, 220, 40)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


class Annotator(ABC):
    @abstractmethod
    def annotate(self, frame: np.ndarray, faces: Faces) -> np.ndarray: ...


def _thickness(frame: np.ndarray) -> int:
    return max(1, round(min(frame.shape[:2]) / 360))


def unsure_genders(faces: Faces, meta: ModelMeta) -> np.ndarray:
    """(N,) bool: the faces whose shown gender's probability is under
    ``meta.min_gender_confidence`` (the overlay shows ``?`` for them)."""
    if faces.gender_probs is None or not len(faces):
        return np.zeros(len(faces), bool)
    shown = faces.gender_probs[np.arange(len(faces)), faces.gender_classes]
    return shown < meta.min_gender_confidence


def face_colors(faces: Faces, meta: ModelMeta) -> list[tuple[int, int, int]]:
    if faces.gender_probs is None:
        return [FALLBACK_COLOR] * len(faces)
    unsure = unsure_genders(faces, meta)
    return [FALLBACK_COLOR if u else GENDER_COLORS.get(meta.gender_labels[int(g)], FALLBACK_COLOR)
            for g, u in zip(faces.gender_classes, unsure)]


def _text_box(frame: np.ndarray, text: str, x: int, y: int, color, scale: float, thick: int, below: bool = False) -> None:
    """Filled label with ``text`` whose bottom-left corner is (x, y) (top-left if below)."""
    (w, h), base = cv2.getTextSize(text, _FONT, scale, thick)
    pad = max(2, thick * 2)
    x = int(np.clip(x, 0, max(0, frame.shape[1] - w - 2 * pad)))
    top = y if below else y - h - base - 2 * pad
    top = int(np.clip(top, 0, max(0, frame.shape[0] - h - base - 2 * pad)))
    cv2.rectangle(frame, (x, top), (x + w + 2 * pad, top + h + base + 2 * pad), color, cv2.FILLED)
    cv2.putText(frame, text, (x + pad, top + pad + h), _FONT, scale, (255, 255, 255), thick, cv2.LINE_AA)


class BoxAnnotator(Annotator):
    """A rectangle around each face, coloured by predicted gender."""

    def __init__(self, meta: ModelMeta):
        self.meta = meta

    def annotate(self, frame: np.ndarray, faces: Faces) -> np.ndarray:
        t = _thickness(frame)
        for box, color in zip(faces.boxes.astype(int), face_colors(faces, self.meta)):
            cv2.rectangle(frame, tuple(box[:2]), tuple(box[2:]), color, t, cv2.LINE_AA)
        return frame


class LabelAnnotator(Annotator):
    """``25-32 female 97%`` above each box (labels from ``meta``); ``25-32 ? 61%``
    where the gender's probability is under ``meta.min_gender_confidence``."""

    def __init__(self, meta: ModelMeta):
        self.meta = meta

    def label(self, faces: Faces, i: int) -> str:
        if faces.age_probs is None:
            return f"face {faces.scores[i]:.2f}"
        age = self.meta.age_labels[int(faces.age_classes[i])]
        g = int(faces.gender_classes[i])
        gender = "?" if faces.gender_probs[i, g] < self.meta.min_gender_confidence else self.meta.gender_labels[g]
        text = f"{age} {gender} {faces.gender_probs[i, g]:.0%}"
        if faces.track_ids is not None:
            text = f"#{faces.track_ids[i]} {text}"
        return text

    def annotate(self, frame: np.ndarray, faces: Faces) -> np.ndarray:
        t = _thickness(frame)
        scale = 0.45 * t
        for i, color in enumerate(face_colors(faces, self.meta)):
            x1, y1 = faces.boxes[i, :2].astype(int)
            _text_box(frame, self.label(faces, i), x1, y1, color, scale, max(1, t - 1))
        return frame


class BannerAnnotator(Annotator):
    """A fixed red warning across the top of the frame (e.g. an untrained model)."""

    def __init__(self, text: str):
        self.text = text

    def annotate(self, frame: np.ndarray, faces: Faces) -> np.ndarray:
        t = _thickness(frame)
        _text_box(frame, self.text, 0, 0, (0, 0, 200), 0.5 * t, max(1, t - 1), below=True)
        return frame


class FpsAnnotator(Annotator):
    """Frames per second, measured between its own calls (smoothed), bottom left."""

    def __init__(self, smoothing: float = 0.9):
        self.smoothing = smoothing
        self._last: float | None = None
        self.fps = 0.0

    def annotate(self, frame: np.ndarray, faces: Faces) -> np.ndarray:
        now = time.perf_counter()
        if self._last is not None and now > self._last:
            current = 1.0 / (now - self._last)
            self.fps = current if self.fps == 0 else self.smoothing * self.fps + (1 - self.smoothing) * current
        self._last = now
        t = _thickness(frame)
        _text_box(frame, self.text(len(faces)), 0, frame.shape[0], (40, 40, 40), 0.5 * t, max(1, t - 1))
        return frame

    def text(self, faces: int) -> str:
        return f"{self.fps:5.1f} fps  {faces} {'face' if faces == 1 else 'faces'}"


def default_annotators(meta: ModelMeta, fps: bool = False) -> list[Annotator]:
    """Boxes and labels, a warning banner for an untrained model, optionally FPS."""
    annotators: list[Annotator] = [BoxAnnotator(meta), LabelAnnotator(meta)]
    if not meta.trained:
        annotators.append(BannerAnnotator("UNTRAINED MODEL: labels are not predictions"))
    if fps:
        annotators.append(FpsAnnotator())
    return annotators
