"""Face detection with MediaPipe Tasks' ``FaceDetector``."""

from __future__ import annotations

import atexit
import logging
import sys
import threading
import types
import weakref
from pathlib import Path

import cv2
import numpy as np

from realtime.boxes import nms, tile_grid
from realtime.detector_models import resolve_detector_model
from realtime.errors import RealtimeError
from realtime.faces import Faces
from realtime.native import quiet_native_stderr

log = logging.getLogger(__name__)


def parse_tiles(tiles: str | int) -> str | int:
    """``"off"``, ``"auto"`` or a number of tile columns 1-8 (from text or a number)."""
    if tiles in ("off", "auto"):
        return tiles
    if not (str(tiles).isdigit() and 1 <= int(tiles) <= 8):
        raise RealtimeError(f"--tiles must be auto, off or a number of columns 1-8, got {tiles!r}")
    return int(tiles)


class FaceDetector:
    """MediaPipe face detection on BGR frames.

    Args:
        model_path: a .tflite file; None resolves the ``range`` model
            (see :mod:`realtime.detector_models`).
        range: "full" (faces up to ~5 m, the default for video) or "short" (close faces).
        min_score: detections below this confidence are dropped, in [0, 1].
        min_size: boxes whose shorter side is below this many pixels are dropped.
        tiles: "off", "auto" or N: also detect on N columns of overlapping tiles (rows
            to match the frame's shape) and merge with the whole-frame result by NMS.
            MediaPipe sees a downscaled frame, so small faces in large frames are found
            only in tiles. "auto" tiles frames of 1280 px and more.
    """

    def __init__(self, model_path: str | Path | None = None, range: str = "full", min_score: float = 0.5,
                 min_size: float = 8.0, tiles: str | int = "off"):
        if not 0.0 <= min_score <= 1.0:
            raise RealtimeError(f"detector min score must be in [0, 1], got {min_score}")
        self.tiles = parse_tiles(tiles)
        self.model_path = resolve_detector_model(range, model_path)
        self.min_size = min_size
        vision = _mediapipe_vision()
        from mediapipe.tasks.python import BaseOptions

        options = vision.FaceDetectorOptions(
            base_options=BaseOptions(model_asset_path=str(self.model_path)),
            running_mode=vision.RunningMode.IMAGE,
            min_detection_confidence=min_score,
            min_suppression_threshold=0.3,
        )
        try:
            with quiet_native_stderr():
                self._detector = vision.FaceDetector.create_from_options(options)
                # Close when garbage-collected, or at exit while MediaPipe's executor is
                # still alive (its own finaliser fails during interpreter shutdown).
                self._finalizer = weakref.finalize(self, _close_quietly, self._detector)
                self._finalizer.atexit = False
                _close_before_mediapipe_exits(self)
                self._detect(np.zeros((64, 64, 3), np.uint8))  # first call logs too
        except (RuntimeError, ValueError) as e:
            raise RealtimeError(f"{self.model_path}: not a MediaPipe face detector model ({str(e).splitlines()[0]})") from None
        log.info("detector: MediaPipe %s", self.model_path.name)

    def _detect(self, bgr: np.ndarray):
        import mediapipe as mp

        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        return self._detector.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb))

    def grid(self, width: int, height: int) -> list[tuple[int, int, int, int]]:
        """The tiles detected besides the whole frame (empty when tiling is off)."""
        cols = self.tiles
        if cols == "auto":
            cols = 0 if max(width, height) < 1280 else max(2, round(max(width, height) / 960))
        if cols in ("off", 0, 1):
            return []
        rows = max(1, round(cols * height / width)) if width >= height else cols
        cols = cols if width >= height else max(1, round(cols * width / height))
        return tile_grid(width, height, cols, rows)

    def detect(self, frame: np.ndarray, frame_index: int = 0) -> Faces:
        """BGR uint8 frame (H, W, 3) -> the faces in it, boxes clipped to the frame, with
        their eye keypoints (:attr:`Faces.eyes`, frame pixels)."""
        h, w = frame.shape[:2]
        faces = Faces.from_mediapipe(self._detect(frame), frame_index, (w, h))
        tiles = self.grid(w, h)
        if tiles:
            parts = [faces]
            for x1, y1, x2, y2 in tiles:
                part = Faces.from_mediapipe(self._detect(frame[y1:y2, x1:x2]), frame_index, (x2 - x1, y2 - y1))
                part.boxes += np.array([x1, y1, x1, y1], np.float32)
                if part.eyes is not None:
                    part.eyes += np.array([x1, y1], np.float32)
                parts.append(part)
            faces = Faces.concatenate(parts, frame_index)
            faces = faces[nms(faces.boxes, faces.scores)]
        return faces.clipped(w, h, self.min_size)

    def close(self) -> None:
        if getattr(self, "_finalizer", None) is not None:
            self._finalizer()

    def __enter__(self) -> "FaceDetector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _DeferredPyplot(types.ModuleType):
    """Stands in for ``matplotlib.pyplot`` in MediaPipe's drawing helpers: the real
    module is imported the first time one of them uses it."""

    def __getattr__(self, name: str):
        import matplotlib.pyplot

        return getattr(matplotlib.pyplot, name)


def _mediapipe_vision() -> types.ModuleType:
    """``mediapipe.tasks.python.vision``, imported without matplotlib.

    ``import mediapipe`` imports its drawing helpers, which import matplotlib.pyplot at
    once: ~40 MB resident and ~0.3 s that face detection never uses. Unless matplotlib
    or MediaPipe is already loaded, MediaPipe's import finds stand-ins for matplotlib
    (see :class:`_DeferredPyplot`); they leave ``sys.modules`` as soon as it is done, so
    any other import of matplotlib gets the real one."""
    if "mediapipe" in sys.modules or "matplotlib" in sys.modules:
        from mediapipe.tasks.python import vision

        return vision
    pyplot = _DeferredPyplot("matplotlib.pyplot")
    package = types.ModuleType("matplotlib")
    package.pyplot = pyplot
    stand_ins = {"matplotlib": package, "matplotlib.pyplot": pyplot}
    sys.modules.update(stand_ins)
    try:
        from mediapipe.tasks.python import vision
    finally:
        for name, module in stand_ins.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]
    return vision


#: Detectors still open, closed by one hook that runs before MediaPipe's thread pool
#: shuts down at exit (a detector a caller never closed would otherwise print a
#: traceback at exit). Process-wide by nature: it mirrors what the interpreter holds.
_open_detectors: "weakref.WeakSet[FaceDetector]" = weakref.WeakSet()
_exit_hook: list[bool] = []


def _close_before_mediapipe_exits(detector: FaceDetector) -> None:
    _open_detectors.add(detector)
    if not _exit_hook:
        # threading's exit hooks run in reverse order of registration and before
        # ``atexit``: registered after MediaPipe (and concurrent.futures) are imported,
        # this one runs before their thread pools are shut down.
        register = getattr(threading, "_register_atexit", atexit.register)
        register(_close_open_detectors)
        _exit_hook.append(True)


def _close_open_detectors() -> None:
    for detector in list(_open_detectors):
        detector.close()


def _close_quietly(detector) -> None:
    with quiet_native_stderr():
        detector.close()
