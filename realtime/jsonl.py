"""Per-frame results as JSON Lines: the record of a frame and the sink that writes them."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from engines.meta import ModelMeta
from realtime.errors import RealtimeError
from realtime.faces import Faces
from realtime.sinks import Sink, check_writable
from realtime.sources import Frame


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
            if faces.person_ids is not None:
                record["person_id"] = int(faces.person_ids[i]) if faces.person_ids[i] >= 0 else None
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
    """One JSON object per frame, one line each (``-`` writes to stdout).
    ``source``: with several sources, the source's number, written as a field.

    ``paced`` (set by :func:`follow`, beside a video): a frame's line is written only
    once :meth:`durable` says the video holds that frame for good, so however the run
    ends the JSONL has a line for exactly the frames the video plays; a failed write
    then calls ``on_failure(frames written)``, which cuts the video to match and names
    it. A failed write is cut back to the last complete line."""

    def __init__(self, path: str | Path, meta: ModelMeta, source: int | None = None):
        self.meta = meta
        self.source = source
        self.paced = False
        self.on_failure: Callable[[int], str] | None = None
        self._durable = 0
        self._own = str(path) != "-"
        if self._own:
            self.path = check_writable(Path(path), None, "JSON output")
            try:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
            except OSError as e:
                raise RealtimeError(f"JSON output {self.path}: cannot be written ({e.strerror})") from None
        else:
            self.path, self._fd = Path("-"), None
        self._pending: list[str] = []
        self._complete = 0  # bytes of complete lines in the file
        self._failed = False
        self.frames = 0
        self.written = 0

    def write(self, frame: Frame, faces: Faces, annotated: np.ndarray) -> None:
        self._pending.append(json.dumps(frame_record(frame, faces, self.meta, self.source)) + "\n")
        self.frames += 1
        self._drain()

    def durable(self, frames: int) -> None:
        """The video beside it holds its first ``frames`` frames for good: their lines
        may be written (at the next write or at close)."""
        self._durable = frames

    def _drain(self) -> None:
        """Write the lines of the frames the video holds (all, without a video)."""
        n = (min(self._durable, self.frames) if self.paced else self.frames) - self.written
        if n <= 0 or self._failed:
            return
        text = "".join(self._pending[:n])
        if self._fd is None:
            sys.stdout.write(text)
            sys.stdout.flush()
        else:
            data = memoryview(text.encode("utf-8"))
            try:
                while data:
                    data = data[os.write(self._fd, data):]
            except OSError as e:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, self._complete)
                self._failed = True
                held = "it"
                if self.on_failure is not None:
                    held = f"it and {self.on_failure(self.written)}"
                raise RealtimeError(f"cannot write {self.path}: {e.strerror}; {held} hold the first {self.written} frames") from None
            self._complete += len(text.encode("utf-8"))
        del self._pending[:n]
        self.written += n

    def close(self) -> None:
        try:
            self._drain()
        finally:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
