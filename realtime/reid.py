"""People, not tracks: face re-identification across lost tracks, scene cuts and loops.

:class:`ReIdentifier` sits after the tracker (one ``update`` per frame). A track is
embedded (:mod:`realtime.embedders`) once it is confirmed and again every
``refresh`` seconds, never every frame, on a worker thread (the analysis thread goes
on with the next frame and matches the embeddings at its update); its embedding is
matched against a :class:`Gallery` of the people seen in the last ``window`` seconds. A match makes the
track that person again (``Faces.person_ids``), and its age and gender start from the
person's; no match makes a new person. The gallery is memory only: a person's
embeddings are forgotten ``window`` seconds after they were last seen, and nothing
here writes or sends them.

Only a usable view is embedded (:func:`contrast`: a dark or blurred face gives an
embedding close to every other dark face's), and with re-identification only tracks
that were recognised, by an embedding or by stitching, are counted as people: a track
that never showed a usable face is shown and written to the JSONL (``person_id``
null) but is not a person of its own (the summary counts it in
``unrecognised_tracks``). A track that starts within ``stitch`` seconds of another's
end, close to where that one was last seen, with no cut between, is that person again
without waiting for an embedding (:meth:`Gallery.stitch`).

Tracks must not cross from one face to another: a scene cut (a large change of the
frame's colour histogram, :class:`SceneCut`) ends every track of the source, and a
refreshed embedding that no longer matches its track's person restarts the track.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from engines.crops import warp_square
from engines.limits import check
from engines.meta import ModelMeta
from realtime import opinion
from realtime.embedders import Embedder, create_embedder
from realtime.faces import Faces
from realtime.tracker import Track, Tracker

log = logging.getLogger(__name__)


@dataclass
class ReidSettings:
    """Re-identification settings (``--reid-*`` options).

    Attributes:
        enabled: False = people are tracks (``--no-reid``, the behaviour before).
        model: ``dlib``, a path to ``hse_faceres.onnx``, or None = the default
            (see :func:`realtime.embedders.create_embedder`).
        window: seconds a person is remembered after they were last seen.
        refresh: seconds between two embeddings of one track.
        threshold: cosine similarity from which a face is a known person; None = the
            embedder's (chosen on LFW pairs).
        split_margin: a refreshed embedding this far below ``threshold`` from its
            track's person restarts the track (it crossed to another face).
        min_side: faces whose shorter side is smaller (px) are not embedded
            (``--reid-min-face``).
        min_contrast: faces whose grey-level standard deviation (in a 32 px view of
            the box, :func:`contrast`) is lower are not embedded: too dark or blurred.
            The stage clip's blurred background faces measure 4-13, its sharp ones 14.8-57
            (``--reid-min-contrast``).
        second_opinion: fuse the embedder's own gender and age (faceres':
            :mod:`realtime.opinion`) into each embedded track's (``--no-second-opinion``:
            the model's alone).
        stitch: seconds after a track ends in which a new track close to where it
            was last seen is the same person, without an embedding (0 = never).
        max_per_frame: embeddings computed per frame at most (the rest wait a frame).
        exemplars: embeddings kept per person (when full, a new one replaces the one
            most like it: different views are kept).
        across_sources: match people seen by other sources too.
        scene_cut: histogram (Bhattacharyya) distance between consecutive frames from
            which the frame is a cut and every track ends; 1 = never. The cuts of
            stage_360p.mp4 measure 0.41-0.57, its other frames and crowd_1080p.mp4's
            at most 0.16.
    """

    enabled: bool = True
    model: str | Path | None = None
    window: float = 300.0
    refresh: float = 2.0
    threshold: float | None = None
    split_margin: float = 0.15
    min_side: float = 20.0
    min_contrast: float = 14.0
    stitch: float = 0.5
    max_per_frame: int = 2
    exemplars: int = 8
    across_sources: bool = False
    scene_cut: float = 0.3
    second_opinion: bool = True

    def __post_init__(self) -> None:
        if self.window <= 0 or self.refresh <= 0 or self.stitch < 0:
            raise ValueError("reid window and refresh must be > 0 seconds, stitch >= 0")
        if self.max_per_frame < 1 or self.exemplars < 1:
            raise ValueError("reid max_per_frame and exemplars must be >= 1")
        check("reid_min_face", self.min_side)  # the one table of limits
        check("reid_min_contrast", self.min_contrast)


@dataclass
class Person:
    """One person: recent embeddings (K, D), when and where last seen, and the label
    state their last track ended with (the next track starts from it)."""

    id: int
    source: int
    vectors: np.ndarray
    last_seen: float
    track: tuple[int, int] | None = None  # (source, track id) holding the person now
    label: tuple | None = None  # (age_sum, gender_sum, years_sum, weight, opinion or None)
    tracks: int = 1
    box: np.ndarray | None = None  # (4,) where the person's last track ended; None after a cut
    ended: float = float("-inf")  # when it ended


class Gallery:
    """The people seen in the last ``window`` seconds, in memory only.

    ``update(source, track, vector, now)`` -> the person id of that track, after
    matching its embedding; ``forget(now)`` drops the people not seen for a window."""

    def __init__(self, threshold: float, settings: ReidSettings):
        self.threshold, self.settings = threshold, settings
        self.people: dict[int, Person] = {}
        self.of_track: dict[tuple[int, int], int] = {}
        self.clock: dict[int, float] = {}  # each source's newest time
        self._next = 1

    def _best(self, vector: np.ndarray, source: int, exclude: int | None = None) -> tuple[Person | None, float]:
        best, score = None, -1.0
        for p in self.people.values():
            if p.id == exclude or p.track is not None or (p.source != source and not self.settings.across_sources):
                continue
            sim = float((p.vectors @ vector).max())
            if sim > score:
                best, score = p, sim
        return best, score

    def update(self, source: int, track: Track, vector: np.ndarray, now: float) -> tuple[int, bool]:
        """Match one track's new embedding ``vector`` (D,) float32. Returns the track's
        person id and whether the track must restart (its face is not its person's)."""
        key = (source, track.id)
        pid = self.of_track.get(key)
        if pid is not None:
            person = self.people[pid]
            if float((person.vectors @ vector).max()) < self.threshold - self.settings.split_margin:
                self.release(key, track)
                person.box = None  # the face there now is someone else's: never stitched back
                return pid, True
            if person.tracks == 1:  # a new person so far: a better look may recognise them
                other, score = self._best(vector, source, exclude=pid)
                if other is not None and score >= self.threshold:
                    self._link(other, key, track, now)
                    for v in person.vectors:
                        self._remember(other, v, now)
                    del self.people[pid]
                    pid = other.id
            self._remember(self.people[pid], vector, now)
            return pid, False
        person, score = self._best(vector, source)
        if person is None or score < self.threshold:
            person = Person(self._next, source, vector[None], now, tracks=0)
            self.people[person.id] = person
            self._next += 1
        self._link(person, key, track, now)
        return person.id, False

    def _link(self, person: Person, key: tuple[int, int], track: Track, now: float) -> None:
        self.of_track[key] = person.id
        person.track, person.last_seen = key, now
        person.tracks += 1
        if person.label is not None and track.age_sum is not None:  # the person's labels go on
            a, g, y, w, o = person.label
            track.age_sum, track.gender_sum = track.age_sum + a, track.gender_sum + g
            track.years_sum, track.weight = track.years_sum + y, track.weight + w
            if o is not None:
                track.opinion = o if track.opinion is None else track.opinion + o

    def _remember(self, person: Person, vector: np.ndarray, now: float) -> None:
        """Keep ``vector`` among the person's exemplars; when they are full, it
        replaces the one most like it, so different views (a profile, a frontal face)
        stay side by side."""
        if len(person.vectors) < self.settings.exemplars:
            person.vectors = np.concatenate([vector[None], person.vectors])
        else:
            person.vectors[int(np.argmax(person.vectors @ vector))] = vector
        person.last_seen = now

    def release(self, key: tuple[int, int], track: Track | None) -> None:
        """A track ended (or restarted): its person is free to be matched again, with
        the labels it ended with."""
        pid = self.of_track.pop(key, None)
        if pid is None or pid not in self.people:
            return
        person = self.people[pid]
        person.track = None
        if track is not None:
            person.box, person.ended = track.box.copy(), self.clock.get(key[0], person.last_seen)
        if track is not None and track.age_sum is not None:
            person.label = (track.age_sum.copy(), track.gender_sum.copy(), track.years_sum, track.weight, track.opinion)

    def stitch(self, source: int, track: Track, now: float) -> int | None:
        """A new, unrecognised track that starts within ``stitch`` s of the end of a
        person's track, its centre within one face side of where that one ended and of a
        similar size (0.5-2x), is that person: returns their id (None: no one). The
        closest such person wins; a cut forgets where tracks ended (:meth:`cut`)."""
        key = (source, track.id)
        if self.settings.stitch <= 0 or key in self.of_track:
            return None
        best, dist = None, 1.0
        for p in self.people.values():
            if p.track is not None or p.source != source or p.box is None or now - p.ended > self.settings.stitch:
                continue
            a, b = p.box, track.box
            side_a, side_b = max(a[2] - a[0], a[3] - a[1], 1.0), max(b[2] - b[0], b[3] - b[1], 1.0)
            d = float(np.hypot(*((a[:2] + a[2:]) - (b[:2] + b[2:])) / 2)) / max(side_a, side_b)
            if 0.5 <= side_b / side_a <= 2.0 and d < dist:
                best, dist = p, d
        if best is None:
            return None
        self._link(best, key, track, now)
        return best.id

    def cut(self, source: int) -> None:
        """A scene cut in ``source``: no track after it continues one before it by place."""
        for p in self.people.values():
            if p.source == source:
                p.box = None

    def seen(self, key: tuple[int, int], now: float) -> int:
        """The person of a live track (-1: none yet), marked as seen ``now``."""
        pid = self.of_track.get(key, -1)
        if pid >= 0:
            self.people[pid].last_seen = now
        return pid

    def forget(self) -> None:
        """Drop every free person not seen for ``window`` seconds (of their source's
        clock): their embeddings are gone."""
        window = self.settings.window
        for pid in [p.id for p in self.people.values()
                    if p.track is None and self.clock.get(p.source, p.last_seen) - p.last_seen > window]:
            del self.people[pid]


class SceneCut:
    """A cut in edited video: the frame's hue-saturation histogram (of every k-th
    pixel, about 96 a row) far from the previous frame's (Bhattacharyya distance
    above ``threshold``)."""

    def __init__(self, threshold: float = 0.3):
        self.threshold = threshold
        self._last: np.ndarray | None = None

    def __call__(self, image: np.ndarray) -> bool:
        step = max(1, image.shape[1] // 96)
        small = np.ascontiguousarray(image[::step, ::step])
        hist = cv2.calcHist([cv2.cvtColor(small, cv2.COLOR_BGR2HSV)], [0, 1], None, [16, 8], [0, 180, 0, 256])
        cv2.normalize(hist, hist, 1.0, 0.0, cv2.NORM_L1)
        last, self._last = self._last, hist
        return last is not None and cv2.compareHist(last, hist, cv2.HISTCMP_BHATTACHARYYA) > self.threshold


class ReIdentifier:
    """Embedder + gallery + a scene-cut detector per source: tracked Faces in, Faces
    with ``person_ids`` out. ``cut(source, image, tracker)`` before the tracker's
    match (a cut ends the source's tracks), ``update(source, image, time, faces,
    tracker)`` after it."""

    def __init__(self, settings: ReidSettings, embedder: Embedder | None = None, meta: ModelMeta | None = None):
        self.settings = settings
        self.embedder = embedder if embedder is not None else create_embedder(settings.model)
        # the second opinion: the embedder's own (faceres') gender and age, for a model that can take it
        self.meta = meta if (settings.second_opinion and meta is not None and opinion.supported(meta)
                             and hasattr(self.embedder, "look")) else None
        if settings.second_opinion and meta is not None and self.embedder is not None and self.meta is None:
            log.info("second opinion: off (%s)", "the model's labels cannot take it" if hasattr(self.embedder, "look")
                     else f"the {self.embedder.name} embedder tells no gender or age")
        self.opinions = 0
        threshold = settings.threshold if settings.threshold is not None else getattr(self.embedder, "threshold", 0.5)
        self.gallery = Gallery(threshold, settings)
        self.cuts: dict[int, SceneCut] = {}
        self._embedded: dict[tuple[int, int], float] = {}
        self._held: dict[tuple[int, int], Track] = {}
        self.embeddings = 0
        # embeddings run on one worker thread, off the analysis thread: a frame's are
        # matched at the source's next update (one job in flight per source)
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="reid")
        self._pending: dict[int, tuple[Future, list[Track], float]] = {}

    @property
    def active(self) -> bool:
        return self.embedder is not None

    def close(self) -> None:
        """Forget every person now (their embeddings with them)."""
        self._worker.shutdown(wait=True, cancel_futures=True)
        self._pending.clear()
        self.gallery.people.clear()
        self.gallery.of_track.clear()
        self._held.clear()

    def cut(self, source: int, image: np.ndarray, tracker: Tracker) -> bool:
        """Check ``image`` for a scene cut; on one, end every track of ``source``."""
        detector = self.cuts.setdefault(source, SceneCut(self.settings.scene_cut))
        if not detector(image):
            return False
        log.debug("scene cut in source %d: %d tracks end", source, len(tracker.tracks))
        self._apply(source, tracker)  # the previous frame's embeddings, before its tracks end
        tracker.end_all()
        self._release_ended(source, set())
        self.gallery.cut(source)
        return True

    def _release_ended(self, source: int, live: set[int]) -> None:
        for key in [k for k in self.gallery.of_track if k[0] == source and k[1] not in live]:
            self.gallery.release(key, self._held.pop(key, None))  # ended: its person is free again
            self._embedded.pop(key, None)

    def update(self, source: int, image: np.ndarray, now: float, faces: Faces, tracker: Tracker) -> Faces:
        """Match the previous frame's embeddings, stitch new tracks that resume
        another, send the tracks that are due (detected, confirmed, big enough, a
        usable view, not embedded for ``refresh`` s) to the worker, and return
        ``faces`` with ``person_ids`` (-1: a track not recognised yet)."""
        g = self.gallery
        g.clock[source] = now
        self._apply(source, tracker)
        live = {t.id: t for t in tracker.tracks}
        self._release_ended(source, set(live))
        g.forget()
        if faces.track_ids is None:
            return faces
        for tid in faces.track_ids.tolist():
            track = live.get(tid)
            if track is not None and track.hits >= tracker.settings.min_hits and g.stitch(source, track, now) is not None:
                self._held[(source, tid)] = track
        due = self._due(source, image, faces, live, now, tracker.settings.min_hits)
        if due:
            tracks = [live[int(faces.track_ids[i])] for i in due]
            for track in tracks:
                self._embedded[(source, track.id)] = now
                self._held[(source, track.id)] = track  # the tracker forgets ended tracks; its labels go to the person
            self.embeddings += len(due)
            # the frame is drawn on after this: the worker gets its own copy
            job = self._worker.submit(self._look, image.copy(), faces.boxes[due].copy())
            self._pending[source] = (job, tracks, now)
        ids = np.array([g.seen((source, int(t)), now) for t in faces.track_ids], np.int64)
        return faces.with_people(ids)

    def _apply(self, source: int, tracker: Tracker) -> None:
        """Match the embeddings the worker computed for ``source``'s previous frame
        (waiting for them if it is not done: every run gives the same people)."""
        pending = self._pending.pop(source, None)
        if pending is None:
            return
        job, tracks, when = pending
        live = {t.id for t in tracker.tracks}
        vectors, opinions = job.result()
        for k, (track, vector) in enumerate(zip(tracks, vectors)):
            pid, restart = self.gallery.update(source, track, vector, when)
            if restart and track.id in live:
                log.debug("track %d no longer shows person %d: restarted", track.id, pid)
                self._embedded.pop((source, track.id), None)
                self._held.pop((source, track.id), None)
                tracker.restart(track)
            elif opinions is not None and not restart:
                track.add_opinion(opinions[k])
                self.opinions += 1

    def _look(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, opinion.Opinion | None]:
        """On the worker: the (N, D) embeddings of ``boxes`` and, with the second
        opinion, the N faces' :class:`realtime.opinion.Opinion` (else None)."""
        if self.meta is None:
            return self.embedder.embed(image, boxes), None
        return opinion.ask(self.embedder, image, boxes, self.meta)

    def _due(self, source: int, image: np.ndarray, faces: Faces, live: dict[int, Track], now: float,
             min_hits: int) -> list[int]:
        """The faces to embed now (indices): detected, confirmed, big enough, a usable
        view, never embedded first, then the longest not refreshed."""
        s = self.settings
        side = np.minimum(faces.boxes[:, 2] - faces.boxes[:, 0], faces.boxes[:, 3] - faces.boxes[:, 1])
        new, old = [], []
        for i, tid in enumerate(faces.track_ids.tolist()):
            track = live.get(tid)
            if track is None or faces.predicted[i] or side[i] < s.min_side or track.hits < min_hits:
                continue
            last = self._embedded.get((source, tid))
            if last is None:
                new.append(i)
            elif now - last >= s.refresh:
                old.append((last, i))
        due = new + [i for _, i in sorted(old)]
        return [i for i in due if contrast(image, faces.boxes[i]) >= s.min_contrast][: s.max_per_frame]


def contrast(image: np.ndarray, box: np.ndarray) -> float:
    """How much of a face there is to recognise: the standard deviation of the grey
    levels of the box (square, 32 px). Dark or blurred faces measure low."""
    x1, y1, x2, y2 = (float(v) for v in box)
    view = warp_square(image, (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1, 1.0), 32)
    return float(cv2.cvtColor(view, cv2.COLOR_BGR2GRAY).std())
