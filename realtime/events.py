"""Track events: what changed in a source's tracks from one frame to the next.

:class:`TrackEvents` turns each frame's tracked :class:`Faces` into a short list of
events, ``new`` (a track id appears), ``update`` (its shown age group or gender
changed, or re-identification told whose face it is: ``person_id``) and ``end`` (the
tracker dropped it), the one stream that every outside
integration (MQTT, webhooks) publishes. :class:`EventSink` is the sink that derives
them and hands them, with periodic people counts, to an outbox
(:class:`realtime.delivery.Outbox`) that sends them on its own thread.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from engines.meta import ModelMeta
from realtime.analytics import Analytics
from realtime.faces import Faces
from realtime.sinks import Sink
from realtime.sources import Frame

NEW, UPDATE, END = "new", "update", "end"


@dataclass
class _Track:
    first_time: float
    label: tuple[str, str, int | None]  # age group, gender, person id
    last: dict


class TrackEvents:
    """Derives track events from tracked faces, frame by frame.

    ``update(frame, faces)`` returns, in this order: ``end`` for each track of the
    previous frame that is gone (its last frame, time and box), ``new`` for each track
    seen for the first time, ``update`` for each track whose shown label or person
    changed. ``finish()`` ends the tracks still in view (the source ended). Each event
    is a JSON-ready dict: ``event, source, track_id, person_id, age_group, gender,
    age_prob, gender_prob, age, dwell_seconds, box, predicted, frame, time``;
    ``person_id`` is None without re-identification and until the track's face has
    been recognised (as in the JSONL), so a track's person comes in an ``update``.
    ``frame_seconds`` (1 / fps) is added to dwell times, as in the people counts.
    """

    def __init__(self, meta: ModelMeta, source: int = 0, frame_seconds: float = 0.0):
        self.meta, self.source, self.frame_seconds = meta, source, frame_seconds
        self.tracks: dict[int, _Track] = {}

    def _state(self, frame: Frame, faces: Faces, i: int, first_time: float) -> dict:
        age, gender = int(faces.age_classes[i]), int(faces.gender_classes[i])
        return {
            "source": self.source,
            "track_id": int(faces.track_ids[i]),
            "person_id": int(faces.person_ids[i]) if faces.person_ids is not None and faces.person_ids[i] >= 0 else None,
            "age_group": self.meta.age_labels[age],
            "gender": self.meta.gender_labels[gender],
            "age_prob": round(float(faces.age_probs[i, age]), 4),
            "gender_prob": round(float(faces.gender_probs[i, gender]), 4),
            "age": round(float(faces.age_years[i]), 1),
            "dwell_seconds": round(frame.time - first_time + self.frame_seconds, 3),
            "box": [int(round(v)) for v in faces.boxes[i]],
            "predicted": bool(faces.predicted[i]) if faces.predicted is not None else False,
            "frame": frame.index,
            "time": round(frame.time, 4),
        }

    def update(self, frame: Frame, faces: Faces) -> list[dict]:
        if faces.track_ids is None or faces.age_probs is None:
            return []
        ids = faces.track_ids.tolist()
        events = [{"event": END, **self.tracks.pop(tid).last} for tid in sorted(set(self.tracks) - set(ids))]
        changed = []
        for i, tid in enumerate(ids):
            track = self.tracks.get(tid)
            state = self._state(frame, faces, i, frame.time if track is None else track.first_time)
            label = (state["age_group"], state["gender"], state["person_id"])
            if track is None:
                self.tracks[tid] = _Track(frame.time, label, state)
                events.append({"event": NEW, **state})
                continue
            track.last = state
            if label != track.label:
                track.label = label
                changed.append({"event": UPDATE, **state})
        return events + changed

    def finish(self) -> list[dict]:
        """``end`` for every track still in view."""
        events = [{"event": END, **self.tracks[tid].last} for tid in sorted(self.tracks)]
        self.tracks.clear()
        return events


def counts_message(meta: ModelMeta, analytics: Analytics | None, faces: Faces, frame: Frame, source: int) -> dict:
    """``in_view`` in ``frame`` (by age group x gender) and, with the run's
    ``analytics`` (tracking), unique ``people`` so far (tracks seen on enough frames,
    as the summary counts them)."""
    in_view: dict[str, int] = {}
    if faces.age_probs is not None and len(faces):
        for a, g in zip(faces.age_classes.tolist(), faces.gender_classes.tolist()):
            key = f"{meta.age_labels[a]} {meta.gender_labels[g]}"
            in_view[key] = in_view.get(key, 0) + 1
    message = {"source": source, "frame": frame.index, "time": round(frame.time, 4),
               "in_view": len(faces), "in_view_by_age_group_and_gender": in_view}
    if analytics is not None:
        with analytics.lock:
            people = analytics.people()
        by_label: dict[str, int] = {}
        for t in people:
            key = f"{t.label[0]} {t.label[1]}"
            by_label[key] = by_label.get(key, 0) + 1
        message.update(people=len(people), people_by_age_group_and_gender=by_label)
    return message


class EventSink(Sink):
    """One source's side of an outbox: each frame's track events go to
    ``outbox.put_events``, and every ``interval`` seconds (wall clock) and at the end
    its counts to ``outbox.put_counts``. Never waits: the outbox only queues.

    ``analytics``: the run's people counts of this source (None without tracking). The
    loop writes them after this sink, so a frame's counts go out with the next frame
    (or at the end), once they include it."""

    def __init__(self, outbox, meta: ModelMeta, source: int, frame_seconds: float = 0.0, interval: float = 10.0,
                 analytics: Analytics | None = None, clock=time.monotonic):
        self.outbox, self.meta, self.source, self.interval, self.clock = outbox, meta, source, interval, clock
        self.analytics = analytics
        self.events = TrackEvents(meta, source, frame_seconds)
        self._due = clock()  # the first frame's counts go out at once
        self._last: tuple[Frame, Faces] | None = None
        outbox.attach()

    def write(self, frame: Frame, faces: Faces, annotated: np.ndarray | None = None) -> None:
        now = self.clock()
        if self.interval and self._last is not None and now >= self._due:
            self._due = now + self.interval
            self.outbox.put_counts(self.source, counts_message(self.meta, self.analytics, self._last[1], self._last[0], self.source))
        events = self.events.update(frame, faces)
        if events:
            self.outbox.put_events(self.source, events)
        self._last = (frame, faces)

    def close(self) -> None:
        try:
            events = self.events.finish()
            if events:
                self.outbox.put_events(self.source, events)
            if self._last is not None and self.interval:
                frame = self._last[0]
                self.outbox.put_counts(self.source, counts_message(self.meta, self.analytics, Faces.empty(frame.index), frame, self.source))
        finally:
            self.outbox.detach()
