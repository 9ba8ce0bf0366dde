"""Where annotated frames and results go: an H.264 mp4, image files, JSON Lines, a
window. Every sink is a context manager with ``write(frame, faces, annotated)`` that
finishes its file in ``__exit__``, so an interrupted run still leaves a playable mp4
and a JSONL that holds exactly the frames written."""

from __future__ import annotations

import json
import re
import logging
import os
import sys
from fractions import Fraction
from pathlib import Path
from typing import IO

import cv2
import numpy as np

from engines.meta import ModelMeta
from realtime.errors import RealtimeError
from realtime.faces import Faces
from realtime.sources import Frame

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".mov"})


class Sink:
    """Base: a context manager that receives every processed frame."""

    #: set by a sink (a window) when the user asks to stop
    stop_requested: bool = False

    def write(self, frame: Frame, faces: Faces, annotated: np.ndarray) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "Sink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_writable(path: Path, suffixes: frozenset[str] | None = None, what: str = "output") -> Path:
    """Fail early, before any work, if ``path`` cannot be written (or has a wrong suffix)."""
    path = Path(path)
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise RealtimeError(f"{what} {path}: use one of {', '.join(sorted(suffixes))}")
    parent = path.parent if path.parent != Path("") else Path(".")
    if not parent.is_dir():
        raise RealtimeError(f"{what} {path}: folder {parent} does not exist")
    if path.is_dir() or not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise RealtimeError(f"{what} {path}: cannot be written")
    return path


class VideoSink(Sink):
    """H.264 video through PyAV/libx264 at the source's frame rate and size.

    The stream opens on the first frame (its size fixes the video's). Odd sizes are
    kept by encoding 4:4:4 instead of 4:2:0.
    """

    def __init__(self, path: str | Path, fps: float | None, crf: int = 23, preset: str = "veryfast"):
        self.path = check_writable(Path(path), VIDEO_SUFFIXES, "video output")
        self.rate = Fraction(fps or 25.0).limit_denominator(1001)
        self.options = {"crf": str(crf), "preset": preset}
        self._container = None
        self._stream = None
        self.frames = 0

    def _open(self, width: int, height: int) -> None:
        import av

        self._container = av.open(str(self.path), mode="w")
        stream = self._container.add_stream("libx264", rate=self.rate, options=self.options)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
        stream.codec_context.time_base = 1 / self.rate
        stream.thread_type = "AUTO"
        self._stream = stream

    def write(self, frame: Frame, faces: Faces, annotated: np.ndarray) -> None:
        import av

        if self._container is None:
            self._open(annotated.shape[1], annotated.shape[0])
        out = av.VideoFrame.from_ndarray(annotated, format="bgr24")
        out.pts = self.frames
        out.time_base = 1 / self.rate
        for packet in self._stream.encode(out):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        if self._container is None:
            return
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._container = None
        log.info("wrote %d frames to %s", self.frames, self.path)


class ImageSink(Sink):
    """Annotated stills: to one file (one image in) or into a folder (a folder in)."""

    def __init__(self, path: str | Path, folder: bool):
        self.path = Path(path)
        self.folder = folder
        if folder:
            self.path.mkdir(parents=True, exist_ok=True)
        self.frames = 0

    def write(self, frame: Frame, faces: Faces, annotated: np.ndarray) -> None:
        target = self.path / (frame.name or f"{frame.index:06d}.jpg") if self.folder else self.path
        if not cv2.imwrite(str(target), annotated):
            raise RealtimeError(f"cannot write image {target}")
        self.frames += 1


def face_records(faces: Faces, meta: ModelMeta) -> list[dict]:
    """The JSONL ``faces`` list for one frame (see README: JSONL format)."""
    records = []
    classified = faces.age_probs is not None
    ages, genders = (faces.age_classes, faces.gender_classes) if classified else (None, None)
    for i in range(len(faces)):
        record = {
            "box": [int(round(v)) for v in faces.boxes[i]],
            "score": round(float(faces.scores[i]), 4),
        }
        if classified:
            age = faces.age_probs[i]
            gender = faces.gender_probs[i]
            g = int(genders[i])
            record.update(
                age_group=meta.age_labels[int(ages[i])],
                age_probs=[round(float(p), 4) for p in age],
                gender=meta.gender_labels[g],
                gender_prob=round(float(gender[g]), 4),
                age=round(float(faces.age_years[i]), 1),
            )
        if faces.track_ids is not None:
            record["track_id"] = int(faces.track_ids[i])
            record["predicted"] = bool(faces.predicted[i])
        records.append(record)
    return records


def frame_record(frame: Frame, faces: Faces, meta: ModelMeta, source: int | None = None) -> dict:
    """One frame's JSONL object (see README: JSON Lines format)."""
    record = {"frame": frame.index, "time": round(frame.time, 4)}
    if source is not None:
        record["source"] = source
    if frame.name:
        record["file"] = frame.name
    record["faces"] = face_records(faces, meta)
    return record


class JsonlSink(Sink):
    """One JSON object per frame, flushed line by line (``-`` writes to stdout).
    ``source``: with several sources, the source's number, written as a field."""

    def __init__(self, path: str | Path, meta: ModelMeta, source: int | None = None):
        self.meta = meta
        self.source = source
        self._own = str(path) != "-"
        if self._own:
            self.path = check_writable(Path(path), None, "JSON output")
            self._file: IO[str] = open(self.path, "w", encoding="utf-8")
        else:
            self.path, self._file = Path("-"), sys.stdout
        self.frames = 0

    def write(self, frame: Frame, faces: Faces, annotated: np.ndarray) -> None:
        self._file.write(json.dumps(frame_record(frame, faces, self.meta, self.source)) + "\n")
        self._file.flush()
        self.frames += 1

    def close(self) -> None:
        if self._own and not self._file.closed:
            self._file.close()


def has_display() -> bool:
    """True when a window can be opened: OpenCV has a GUI backend and, on Linux, an X11
    or Wayland display is set. (cv2.imshow without one aborts the whole process.)"""
    info = cv2.getBuildInformation()
    gui = re.search(r"GUI:\s*(\S+)", info)
    if gui and gui.group(1).upper() == "NONE":
        return False
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


class WindowSink(Sink):
    """An on-screen window; q or Esc asks the run to stop. Only where has_display()."""

    def __init__(self, title: str = "realtime"):
        if not has_display():
            raise RealtimeError("no display to open a window on (DISPLAY is not set): run headless with --no-show")
        self.title = title

    def write(self, frame: Frame, faces: Faces, annotated: np.ndarray) -> None:
        cv2.imshow(self.title, annotated)
        if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
            self.stop_requested = True

    def close(self) -> None:
        cv2.destroyWindow(self.title)
