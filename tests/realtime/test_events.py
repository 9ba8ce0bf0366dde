"""Track events from tracked faces: new, update (label change), end; the sink's counts."""

from __future__ import annotations

import numpy as np

from engines.meta import ModelMeta
from realtime.analytics import Analytics
from realtime.events import EventSink, TrackEvents
from realtime.faces import Faces
from realtime.sources import Frame

META = ModelMeta()


def tracked(ids: list[int], ages: list[int], frame: int) -> Faces:
    n = len(ids)
    age_probs = np.full((n, len(META.age_labels)), 0.05, np.float32)
    age_probs[np.arange(n), ages] = 0.65
    return Faces(np.array([[10 * k, 10, 10 * k + 8, 18] for k in range(n)], np.float32).reshape(-1, 4),
                 np.ones(n, np.float32), age_probs, np.tile(np.float32([0.2, 0.8]), (n, 1)), np.full(n, 30, np.float32),
                 np.array(ids, np.int64), np.zeros(n, bool), frame_index=frame)


def frame(k: int) -> Frame:
    return Frame(np.zeros((20, 20, 3), np.uint8), k, k / 10)


def test_new_update_end_and_finish():
    events = TrackEvents(META, source=2, frame_seconds=0.1)
    assert [(e["event"], e["track_id"]) for e in events.update(frame(0), tracked([1, 2], [4, 4], 0))] == [("new", 1), ("new", 2)]
    assert events.update(frame(1), tracked([1, 2], [4, 4], 1)) == []
    out = events.update(frame(2), tracked([2, 3], [5, 4], 2))
    assert [(e["event"], e["track_id"], e["frame"]) for e in out] == [("end", 1, 1), ("new", 3, 2), ("update", 2, 2)]
    end, new, update = out
    assert end["dwell_seconds"] == 0.2 and end["time"] == 0.1 and end["source"] == 2
    assert update["age_group"] == META.age_labels[5] and update["gender"] == META.gender_labels[1]
    assert update["age_prob"] == 0.65 and update["gender_prob"] == 0.8 and update["dwell_seconds"] == 0.3
    assert [(e["event"], e["track_id"]) for e in events.finish()] == [("end", 2), ("end", 3)]
    assert events.finish() == []
    assert events.update(frame(3), Faces.empty(3)) == []  # nothing tracked: nothing happens


class Recorder:
    def __init__(self):
        self.events, self.counts, self.users = [], [], 0

    def attach(self):
        self.users += 1

    def detach(self):
        self.users -= 1

    def put_events(self, source, events):
        self.events += events

    def put_counts(self, source, counts):
        self.counts.append(counts)


def test_the_sink_sends_counts_every_interval_and_at_the_end():
    now = [0.0]
    outbox = Recorder()
    analytics = Analytics(META, frame_seconds=0.1)
    sink = EventSink(outbox, META, 0, frame_seconds=0.1, interval=1.0, analytics=analytics, clock=lambda: now[0])
    assert outbox.users == 1
    for k in range(30):
        now[0] = k * 0.1
        faces = tracked([1] if k < 20 else [], [4], k)
        sink.write(frame(k), faces)
        analytics.write(frame(k), faces)  # after the sink, as the loop does
    sink.close()
    assert outbox.users == 0
    assert [c["frame"] for c in outbox.counts] == [0, 10, 20, 29]  # frames at 0 s, 1 s, 2 s, and the end
    assert [c["people"] for c in outbox.counts] == [0, 1, 1, 1]  # a track of 5 frames is a person
    assert outbox.counts[1]["in_view"] == 1 and outbox.counts[1]["in_view_by_age_group_and_gender"] == {f"{META.age_labels[4]} male": 1}
    assert outbox.counts[-1]["people"] == 1 and outbox.counts[-1]["in_view"] == 0
    assert [(e["event"], e["frame"]) for e in outbox.events] == [("new", 0), ("end", 19)]
    without = Recorder()
    sink = EventSink(without, META, 0, interval=1.0, clock=lambda: 0.0)  # no tracking: no people counts
    sink.write(frame(0), Faces.empty(0))
    sink.close()
    assert without.counts == [{"source": 0, "frame": 0, "time": 0.0, "in_view": 0, "in_view_by_age_group_and_gender": {}}]


def test_events_carry_the_person_and_tell_when_it_is_known():
    """With re-identification each event has the track's `person_id`: null on `new`
    until the face is recognised, then an `update` with it (same label), and `end`
    keeps it; without re-identification it is null throughout."""
    events = TrackEvents(META)
    known = [None, None, 4, 4]
    out = []
    for k, pid in enumerate(known):
        out += events.update(frame(k), tracked([1], [4], k).with_people(np.array([-1 if pid is None else pid])))
    out += events.finish()
    assert [(e["event"], e["frame"], e["person_id"]) for e in out] == [("new", 0, None), ("update", 2, 4), ("end", 3, 4)]
    assert out[1]["age_group"] == out[0]["age_group"]  # the person changed, not the label
    plain = TrackEvents(META)
    assert [e["person_id"] for e in plain.update(frame(0), tracked([1], [4], 0)) + plain.finish()] == [None, None]
