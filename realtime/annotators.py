"""Overlay drawing: tiny single-purpose annotators (after supervision's).

Each draws in place on a BGR uint8 frame (H, W, 3) and returns it."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod

import cv2
import numpy as np

from engines.meta import ModelMeta
from realtime.faces import Faces
from realtime.layout import place_labels

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


def _label_size(text: str, scale: float, thick: int) -> tuple[int, int]:
    """Width and height in pixels of the filled label that holds ``text``."""
    (w, h), base = cv2.getTextSize(text, _FONT, scale, thick)
    pad = max(2, thick * 2)
    return w + 2 * pad + 1, h + base + 2 * pad + 1


def _draw_label(frame: np.ndarray, text: str, x: int, y: int, color, scale: float, thick: int,
                size: tuple[int, int] | None = None) -> None:
    """The filled label of ``text`` with its top-left corner at (x, y) (``size``: its
    :func:`_label_size`, when known)."""
    w, h = size or _label_size(text, scale, thick)
    pad = max(2, thick * 2)
    text_h = cv2.getTextSize(text, _FONT, scale, thick)[0][1]
    cv2.rectangle(frame, (x, y), (x + w - 1, y + h - 1), color, cv2.FILLED)
    cv2.putText(frame, text, (x + pad, y + pad + text_h), _FONT, scale, (255, 255, 255), thick, cv2.LINE_AA)


def _text_box(frame: np.ndarray, text: str, x: int, y: int, color, scale: float, thick: int, below: bool = False) -> None:
    """Filled label with ``text`` whose bottom-left corner is (x, y) (top-left if below),
    kept inside the frame."""
    w, h = _label_size(text, scale, thick)
    x = int(np.clip(x, 0, max(0, frame.shape[1] - w)))
    top = int(np.clip(y if below else y - h, 0, max(0, frame.shape[0] - h)))
    _draw_label(frame, text, x, top, color, scale, thick)


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
    """``#6 25-32 female 97%`` by each box (labels from ``meta``; ``25-32 ? 61%`` where the
    gender's probability is under ``meta.min_gender_confidence``), placed so that no
    label covers another (:func:`realtime.layout.place_labels`: above the box where
    there is room, else below, inside, shifted; largest faces first)."""

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

    def rectangles(self, frame: np.ndarray, faces: Faces) -> tuple[list[str], np.ndarray]:
        """Each face's label text and its (N, 4) int64 rectangle x1, y1, x2, y2
        (half-open; -1 rows: no room)."""
        t = _thickness(frame)
        texts = [self.label(faces, i) for i in range(len(faces))]
        sizes = np.array([_label_size(text, 0.45 * t, max(1, t - 1)) for text in texts], np.int64).reshape(-1, 2)
        return texts, place_labels(faces.boxes, sizes, frame.shape[1], frame.shape[0])

    def annotate(self, frame: np.ndarray, faces: Faces) -> np.ndarray:
        t = _thickness(frame)
        texts, rects = self.rectangles(frame, faces)
        for text, rect, color in zip(texts, rects, face_colors(faces, self.meta)):
            if rect[0] >= 0:
                x1, y1, x2, y2 = (int(v) for v in rect)
                _draw_label(frame, text, x1, y1, color, 0.45 * t, max(1, t - 1), (x2 - x1, y2 - y1))
        return frame


class BlurAnnotator(Annotator):
    """Blurs every face box, detected or coasting, widened by ``margin`` x its side
    on each edge: the region is shrunk to ``cells`` pixels across (area average) and
    scaled back up (bilinear), so what is left of a face is a smooth blend of a few
    colours whatever the face's size. Draw it first: boxes and labels go on top."""

    def __init__(self, margin: float = 0.2, cells: int = 6):
        self.margin, self.cells = margin, cells

    def regions(self, faces: Faces, width: int, height: int) -> np.ndarray:
        """(N, 4) int64 blurred rectangles x1, y1, x2, y2 (half-open), inside the frame."""
        boxes = faces.boxes.astype(np.float64)
        grow = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]] * 2, 1) * self.margin * [-1, -1, 1, 1]
        out = np.round(boxes + grow).astype(np.int64)
        return np.clip(out, 0, [width, height, width, height])

    def annotate(self, frame: np.ndarray, faces: Faces) -> np.ndarray:
        for x1, y1, x2, y2 in self.regions(faces, frame.shape[1], frame.shape[0]).tolist():
            if x2 - x1 < 1 or y2 - y1 < 1:
                continue
            roi = frame[y1:y2, x1:x2]
            across = max(1, min(self.cells, x2 - x1))
            down = max(1, round(across * (y2 - y1) / (x2 - x1)))
            small = cv2.resize(roi, (across, down), interpolation=cv2.INTER_AREA)
            roi[:] = cv2.resize(small, (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)
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


def default_annotators(meta: ModelMeta, fps: bool = False, blur: bool = False) -> list[Annotator]:
    """Boxes and labels, a warning banner for an untrained model, optionally FPS;
    ``blur``: every face blurred first."""
    annotators: list[Annotator] = [BlurAnnotator()] if blur else []
    annotators += [BoxAnnotator(meta), LabelAnnotator(meta)]
    if not meta.trained:
        annotators.append(BannerAnnotator("UNTRAINED MODEL: labels are not predictions"))
    if fps:
        annotators.append(FpsAnnotator())
    return annotators
