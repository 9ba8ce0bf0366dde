"""Counting people: people by age group and gender, dwell time, label flicker.

:class:`Analytics` is a sink: it sees every frame's tracked faces and, at the end,
summarises the run (``--summary SUMMARY.json`` and the end-of-run line). With
re-identification (``Faces.person_ids``) several tracks can be one person: a person
is counted once, with the label their tracks showed on the most frames; a track
never recognised (no usable view of its face, not stitched to anyone) is not a person
of its own: the summary counts it in ``unrecognised_tracks``. Without
re-identification every track seen on enough frames is a person."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from engines.meta import ModelMeta
from engines.writes import finite, json_text, write_atomic
from realtime.faces import Faces
from realtime.sinks import Sink
from realtime.sources import Frame


@dataclass
class TrackRecord:
    """What the run saw of one track."""

    track_id: int
    first_frame: int
    last_frame: int
    first_time: float
    last_time: float
    frames: int = 0
    detected_frames: int = 0
    label: tuple[str, str] = ("", "")
    label_changes: int = 0
    age: float = float("nan")
    person_id: int = -1
    reid: bool = False  # seen with re-identification on (its faces carry person ids)

    @property
    def counts(self) -> bool:
        """Whether this track, seen on ``frames`` frames, can be (part of) a person:
        with re-identification only once recognised."""
        return not self.reid or self.person_id >= 0

    @property
    def person(self) -> tuple[str, int]:
        """The key this track is counted under: its person, else the track itself."""
        return ("person", self.person_id) if self.person_id >= 0 else ("track", self.track_id)

    @property
    def dwell_seconds(self) -> float:
        return self.last_time - self.first_time


@dataclass
class PersonRecord:
    """One person: the counted tracks re-identification joined (or one track)."""

    person_id: int
    tracks: list[TrackRecord]

    @property
    def label(self) -> tuple[str, str]:
        """The label the person's tracks showed on the most frames."""
        frames = Counter()
        for t in self.tracks:
            frames[t.label] += t.frames
        return frames.most_common(1)[0][0]

    @property
    def dwell_seconds(self) -> float:
        return sum(t.dwell_seconds for t in self.tracks)


@dataclass
class Analytics(Sink):
    """Collects per-track history from tracked Faces (``track_ids`` set).

    Attributes:
        meta: label names.
        min_frames: tracks seen on fewer frames are not counted as people (blips).
        frame_seconds: duration of one frame (1 / fps), added to dwell times.
    """

    meta: ModelMeta
    min_frames: int = 5
    frame_seconds: float = 0.0
    path: Path | None = None
    tracks: dict[int, TrackRecord] = field(default_factory=dict)
    frames: int = 0
    detections: int = 0
    first_time: float | None = None
    last_time: float = 0.0
    #: held by write and summary; a reader on another thread (serve) holds it too
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def write(self, frame: Frame, faces: Faces, annotated=None) -> None:
        with self.lock:
            self._write(frame, faces)

    def _write(self, frame: Frame, faces: Faces) -> None:
        self.frames += 1
        self.first_time = frame.time if self.first_time is None else self.first_time
        self.last_time = frame.time
        if faces.track_ids is None or faces.age_probs is None:
            self.detections += len(faces)
            return
        detected = ~faces.predicted if faces.predicted is not None else np.ones(len(faces), bool)
        self.detections += int(detected.sum())
        ages, genders = faces.age_classes, faces.gender_classes
        for i, tid in enumerate(faces.track_ids.tolist()):
            label = (self.meta.age_labels[ages[i]], self.meta.gender_labels[genders[i]])
            rec = self.tracks.get(tid)
            if rec is None:
                rec = self.tracks[tid] = TrackRecord(tid, frame.index, frame.index, frame.time, frame.time, label=label)
            elif label != rec.label:
                rec.label_changes += 1
                rec.label = label
            rec.last_frame, rec.last_time = frame.index, frame.time
            rec.frames += 1
            rec.detected_frames += int(detected[i])
            rec.age = float(faces.age_years[i])
            if faces.person_ids is not None:
                rec.reid = True
                if faces.person_ids[i] >= 0:
                    rec.person_id = int(faces.person_ids[i])

    def counted(self) -> list[TrackRecord]:
        """The tracks seen on enough frames to count (with re-identification:
        recognised)."""
        return [t for t in self.tracks.values() if self._counted(t)]

    def _counted(self, t: TrackRecord) -> bool:
        return t.frames >= self.min_frames and t.counts

    def people(self) -> list[PersonRecord]:
        """The people: counted tracks grouped by person (a track without one alone)."""
        groups: dict[tuple[str, int], list[TrackRecord]] = {}
        for t in self.counted():
            groups.setdefault(t.person, []).append(t)
        return [PersonRecord(key[1] if key[0] == "person" else -1, tracks) for key, tracks in groups.items()]

    def count_people(self, track_ids) -> int:
        """How many people the given track ids are (those counted)."""
        return len({self.tracks[t].person for t in track_ids if t in self.tracks and self._counted(self.tracks[t])})

    def summary(self) -> dict:
        """Unique people by age group and gender, dwell times, rates and flicker."""
        with self.lock:
            return self._summary()

    def _summary(self) -> dict:
        people = self.people()
        minutes = max((self.last_time - (self.first_time or 0.0)) + self.frame_seconds, 1e-9) / 60
        dwell = np.array([p.dwell_seconds + self.frame_seconds * len(p.tracks) for p in people]) if people else np.zeros(0)
        track_seconds = float(sum(t.frames for t in self.tracks.values()) * self.frame_seconds)
        changes = sum(t.label_changes for t in self.tracks.values())
        return finite({
            "frames": self.frames,
            "seconds": round(minutes * 60, 3),
            "people": len(people),
            "counted_tracks": sum(len(p.tracks) for p in people),
            "unrecognised_tracks": sum(t.frames >= self.min_frames and not t.counts for t in self.tracks.values()),
            "by_age_group": {a: sum(t.label[0] == a for t in people) for a in self.meta.age_labels},
            "by_gender": {g: sum(t.label[1] == g for t in people) for g in self.meta.gender_labels},
            "by_age_group_and_gender": dict(Counter(f"{t.label[0]} {t.label[1]}" for t in people).most_common()),
            "faces_per_minute": round(self.detections / minutes, 2),
            "people_per_minute": round(len(people) / minutes, 2),
            "dwell_seconds": {
                "mean": round(float(dwell.mean()), 3) if len(dwell) else 0.0,
                "median": round(float(np.median(dwell)), 3) if len(dwell) else 0.0,
                "max": round(float(dwell.max()), 3) if len(dwell) else 0.0,
            },
            "flicker": {
                "label_changes": changes,
                "track_seconds": round(track_seconds, 3),
                "changes_per_track_second": round(changes / track_seconds, 4) if track_seconds else 0.0,
            },
            "tracks": [
                {**{k: v for k, v in asdict(t).items() if k not in ("label", "reid")}, "age_group": t.label[0], "gender": t.label[1],
                 "dwell_seconds": round(t.dwell_seconds + self.frame_seconds, 3), "age": round(t.age, 1), "counted": self._counted(t),
                 "person_id": t.person_id if t.person_id >= 0 else None}
                for t in sorted(self.tracks.values(), key=lambda t: t.track_id)
            ],
        })

    def line(self) -> str:
        """The counts for the end-of-run line."""
        s = self.summary()
        top = ", ".join(f"{k} {v}" for k, v in list(s["by_age_group_and_gender"].items())[:6])
        return f"{s['people']} people ({top}); {s['flicker']['changes_per_track_second']:.3f} label changes per track-second"

    def close(self) -> None:
        if self.path is not None:
            # whole or not at all: a new file renamed into place (a kill leaves no 0-byte summary)
            write_atomic(Path(self.path), json_text(self.summary(), indent=2), "--summary")
