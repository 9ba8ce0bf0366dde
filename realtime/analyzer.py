"""The Analyzer: detector + cropper + engine (+ a tracker per source), frames in,
classified :class:`Faces` out; and its settings."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from engines.backends import FlipAveraged
from engines.images import DEFAULT_MAX_PIXELS
from engines.meta import ModelMeta
from engines.registry import Engine, Predictions, create_engine
from realtime import opinion
from realtime.crops import Cropper
from realtime.detector import FaceDetector
from realtime.faces import Faces
from realtime.embedders import FaceresEmbedder, reid_model
from realtime.reid import ReIdentifier, ReidSettings
from realtime.sources import Frame, Source, open_source
from realtime.timing import StageTimer
from realtime.tracker import Tracker, TrackerSettings

log = logging.getLogger(__name__)


@dataclass
class AnalyzerSettings:
    """How faces are found and classified.

    Attributes:
        model: a .safetensors checkpoint or .onnx file; None = the default model.
        backend: "auto" or an engine backend name (see ``engines.list_backends()``).
        detector_model: a MediaPipe .tflite file; None = resolve ``detector_range``.
        detector_range: "full" (crowds, up to ~5 m) or "short" (close faces).
        min_score: detector confidence threshold in [0, 1].
        tiles: "auto", "off" or N columns of overlapping detector tiles (small faces).
        crop_scale: crop side / box side; None = the model's own (``meta.crop_scale``).
        level_eyes: turn each crop so the face's eyes are level (see
            :class:`engines.crops.Cropper`); None = the model's own (``meta.level_eyes``,
            True for a model trained on levelled crops).
        flip: average each face's predictions with its mirror image's (test-time flip).
        track: give faces track ids and smoothed labels (see :mod:`realtime.tracker`);
            None = for videos, cameras and streams but not for images and folders of
            photos (unrelated pictures: a track would carry one person's label to
            another); True also tracks across a folder (an image sequence).
        tracker: matching, smoothing and re-classification settings when tracking.
        min_gender_confidence: the overlay shows ``?`` for a gender whose calibrated
            probability is under this; None = the model's own
            (``meta.min_gender_confidence``, chosen by ``realtime calibrate``).
        max_pixels: largest image (photo or folder entry) decoded, in pixels, checked
            from its header first: a small PNG can hold a huge picture.
        reid: re-identification of people across tracks (see :mod:`realtime.reid`),
            when tracking.
    """

    model: str | Path | None = None
    backend: str = "auto"
    detector_model: str | Path | None = None
    detector_range: str = "full"
    min_score: float = 0.5
    tiles: str | int = "auto"
    crop_scale: float | None = None
    level_eyes: bool | None = None
    flip: bool = True
    track: bool | None = None
    tracker: TrackerSettings = field(default_factory=TrackerSettings)
    min_gender_confidence: float | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    reid: ReidSettings = field(default_factory=ReidSettings)


def make_engine(settings: AnalyzerSettings) -> Engine:
    """The classifier the app runs for ``settings``: its model on its backend, flipped
    and averaged when ``settings.flip``."""
    engine = create_engine(settings.model, settings.backend)
    return FlipAveraged(engine) if settings.flip else engine


def photo_opinion(reid: ReidSettings, meta: ModelMeta) -> FaceresEmbedder | None:
    """faceres for the second opinion on untracked photos: when re-identification is on
    (``--no-reid``: faceres does not run at all) with ``reid.second_opinion``, the model
    can take it (:func:`realtime.opinion.supported`) and faceres is the identity model
    (given, or found as re-identification finds it); else None, quietly."""
    if not (reid.enabled and reid.second_opinion) or not opinion.supported(meta):
        return None
    found = reid_model(reid.model)
    return FaceresEmbedder(found) if isinstance(found, Path) else None


class Analyzer:
    """Detector + cropper + engine (+ a tracker per source): frames in, classified
    :class:`Faces` out.

    The faces of all frames given together (one per source) that need classifying go
    to the engine in ONE batched call. In a notebook::

        from realtime import Analyzer, AnalyzerSettings
        with Analyzer(AnalyzerSettings()) as analyzer:
            for frame, faces in analyzer.stream("samples/people.mp4"):
                print(frame.index, [analyzer.meta.age_labels[k] for k in faces.age_classes])
    """

    def __init__(self, settings: AnalyzerSettings):
        self.engine: Engine = make_engine(settings)
        self.meta = self.engine.meta
        if settings.min_gender_confidence is not None:
            self.meta = dataclasses.replace(self.meta, min_gender_confidence=float(settings.min_gender_confidence))
        self.cropper = Cropper(self.meta, settings.crop_scale, settings.level_eyes)
        self.tracking = settings.track is not False
        reid = ReIdentifier(settings.reid, meta=self.meta) if self.tracking and settings.reid.enabled else None
        self.reid = reid if reid is not None and reid.active else None
        # photos (not tracked): faceres, when found, gives every face its second opinion
        self.opinion = None if self.tracking else photo_opinion(settings.reid, self.meta)
        # last: nothing after it can fail, so a bad model file never leaves a detector
        # to be closed by the garbage collector (inside MediaPipe that can deadlock)
        self.detector = FaceDetector(settings.detector_model, settings.detector_range, settings.min_score, tiles=settings.tiles)
        self._tracker_settings = settings.tracker
        self.trackers: dict[int, Tracker] = {}
        if not self.meta.trained:
            log.warning("the model is UNTRAINED: its age and gender labels are not predictions")

    def restart(self) -> None:
        """A new run on this loaded analyzer (``realtime archive``'s next file): track ids
        start again and no person is known, as in a new process; the models stay loaded."""
        self.trackers.clear()
        if self.reid is not None:
            self.reid = ReIdentifier(self.reid.settings, self.reid.embedder, self.meta)

    def tracker(self, stream: int = 0) -> Tracker:
        if stream not in self.trackers:
            self.trackers[stream] = Tracker(self._tracker_settings)
        return self.trackers[stream]

    def analyze(self, frames: list[tuple[int, Frame]], timer: StageTimer | None = None) -> list[Faces]:
        """(stream, frame) pairs -> each frame's Faces, in order."""
        timer = timer or StageTimer()
        with timer("detect"):
            found = [self.detector.detect(f.image, f.index) for _, f in frames]
        if self.reid is not None:
            with timer("reid"):
                for k, f in frames:
                    self.reid.cut(k, f.image, self.tracker(k))
        plans = [self.tracker(k).match(faces, f.index) for (k, f), faces in zip(frames, found)] if self.tracking else None
        todo = [p.faces[p.due] for p in plans] if plans is not None else found
        with timer("crop"):
            crops = [self.cropper.crop(f.image, faces) for (_, f), faces in zip(frames, todo)]
        with timer("classify"):
            out = self.engine.infer(np.concatenate(crops))
        splits = np.cumsum([len(c) for c in crops])[:-1]
        parts = [Predictions(*p) for p in zip(*(np.split(o, splits) for o in out))]
        if plans is None:
            out = [faces.with_predictions(*p) for faces, p in zip(found, parts)]
            if self.opinion is None:
                return out
            with timer("reid"):
                return [self._with_opinion(f.image, faces) for (_, f), faces in zip(frames, out)]
        tracked = [
            self.tracker(k).apply(plan, part if len(part.age_probs) else None).clipped(f.image.shape[1], f.image.shape[0])
            for (k, f), plan, part in zip(frames, plans, parts)
        ]
        if self.reid is None:
            return tracked
        with timer("reid"):
            return [self.reid.update(k, f.image, f.time, faces, self.tracker(k)) for (k, f), faces in zip(frames, tracked)]

    def _with_opinion(self, image: np.ndarray, faces: Faces) -> Faces:
        """An untracked frame's faces with faceres' gender and age fused into the model's."""
        if not len(faces):
            return faces
        _, theirs = opinion.ask(self.opinion, image, faces.boxes, self.meta)
        gender, age, years = opinion.fuse(faces.gender_probs, faces.age_probs, faces.age_years, theirs)
        return faces.with_predictions(age, gender, years)

    def __call__(self, image: np.ndarray, frame_index: int = 0, timer: StageTimer | None = None) -> Faces:
        """One frame of one source."""
        return self.analyze([(0, Frame(image, frame_index, 0.0))], timer)[0]

    def stream(self, source: str | int | Path | Source, reconnect: float | None = 300.0) -> Iterator[tuple[Frame, Faces]]:
        """Each frame of ``source`` (anything :func:`open_source` takes, or an open
        :class:`Source`) with its classified (and, when tracking, tracked) faces, on
        this thread. A source opened here is closed when the loop ends."""
        opened = not isinstance(source, Source)
        src = open_source(source, reconnect) if opened else source
        try:
            for frame in src:
                yield frame, self.analyze([(0, frame)])[0]
        finally:
            if opened:
                src.close()

    def close(self) -> None:
        self.detector.close()
        if self.reid is not None:
            self.reid.close()

    def __enter__(self) -> "Analyzer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
