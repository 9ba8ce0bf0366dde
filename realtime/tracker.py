"""Face tracking with smoothed labels (after norfair's ``Tracker``: one ``update``).

Each face gets a track id across frames; a track's age and gender probabilities are
an exponential moving average weighted by detector score and face size, so a label
does not flicker from frame to frame. A track whose face the detector misses for a few
frames coasts on its motion model and keeps its label. Once a track's label is
confident it is re-classified only every ``reclassify_every`` frames, which keeps
crowds real time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from engines.registry import Predictions
from realtime.assignment import linear_sum_assignment
from realtime.boxes import iou_matrix
from realtime.faces import Faces
from realtime.opinion import Opinion, fuse

Classify = Callable[[Faces], Predictions]


def centre_cost(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance between box centres in units of the larger box side: (N, M) float32.

    Complements IoU for small, fast faces whose boxes do not overlap between frames."""
    ca, cb = (a[:, :2] + a[:, 2:]) / 2, (b[:, :2] + b[:, 2:]) / 2
    side = np.maximum(np.max(a[:, 2:] - a[:, :2], 1)[:, None], np.max(b[:, 2:] - b[:, :2], 1)[None, :])
    return (np.linalg.norm(ca[:, None] - cb[None], axis=2) / np.maximum(side, 1e-6)).astype(np.float32)


def default_cost(tracks: np.ndarray, detections: np.ndarray) -> np.ndarray:
    """1 - IoU, or the centre distance when that is lower (small, fast faces)."""
    return np.minimum(1.0 - iou_matrix(tracks, detections), centre_cost(tracks, detections))


@dataclass
class TrackerSettings:
    """Matching, coasting and smoothing parameters.

    Attributes:
        max_cost: a track and a detection match only below this cost (see default_cost).
        max_misses: frames a track coasts without a detection before it ends.
        min_hits: detections before a coasting track is shown (no ghosts from one blip).
        smoothing: forgetting factor of the label average per observation in [0, 1);
            0 = no smoothing (the latest prediction only).
        reclassify_every: once confident, classify a track only every k frames (1 = always).
        confident_prob, confident_after: smoothed gender probability and number of
            classifications from which a track counts as confident.
        hysteresis: a track's shown label changes only when another label's smoothed
            probability beats it by this margin (0 = plain argmax).
        cost: callable (tracks (N, 4), detections (M, 4)) -> (N, M) cost.
    """

    max_cost: float = 0.7
    max_misses: int = 8
    min_hits: int = 3
    smoothing: float = 0.8
    reclassify_every: int = 5
    confident_prob: float = 0.85
    confident_after: int = 4
    hysteresis: float = 0.15
    cost: Callable[[np.ndarray, np.ndarray], np.ndarray] = field(default=default_cost)

    def __post_init__(self) -> None:
        if not 0 <= self.smoothing < 1:
            raise ValueError(f"smoothing must be in [0, 1), got {self.smoothing}")
        if self.reclassify_every < 1 or self.max_misses < 0 or self.min_hits < 1:
            raise ValueError("reclassify_every and min_hits must be >= 1, max_misses >= 0")


@dataclass
class Track:
    """One face over time: its box and motion, its smoothed labels, its history."""

    id: int
    box: np.ndarray  # (4,) float32, last known or predicted xyxy
    first_frame: int
    last_frame: int
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2, np.float32))  # centre px/frame
    score: float = 0.0
    hits: int = 1
    misses: int = 0
    observations: int = 0
    last_classified: int = -(10**9)
    weight: float = 0.0
    age_sum: np.ndarray | None = None
    gender_sum: np.ndarray | None = None
    years_sum: float = 0.0
    age_class: int = -1
    gender_class: int = -1
    opinion: Opinion | None = None  # the sum of faceres' looks (realtime.opinion)

    def predict(self) -> np.ndarray:
        """The box one frame on: the centre moves with the velocity, the size stays."""
        return self.box + np.tile(self.velocity, 2)

    def observe(self, box: np.ndarray, score: float, frame_index: int) -> None:
        gap = max(1, frame_index - self.last_frame)
        moved = ((box[:2] + box[2:]) - (self.box[:2] + self.box[2:])) / 2
        self.velocity = 0.5 * self.velocity + 0.5 * moved / gap
        self.box, self.score, self.last_frame = box.astype(np.float32), score, frame_index
        self.hits += 1
        self.misses = 0

    def add_prediction(self, age: np.ndarray, gender: np.ndarray, years: float, quality: float, forget: float,
                       frame_index: int, hysteresis: float = 0.0) -> None:
        """Fold one classification into the weighted moving average, then move the
        shown labels only where another label leads by ``hysteresis``."""
        if self.age_sum is None:
            self.age_sum, self.gender_sum = np.zeros_like(age), np.zeros_like(gender)
        self.age_sum = forget * self.age_sum + quality * age
        self.gender_sum = forget * self.gender_sum + quality * gender
        self.years_sum = forget * self.years_sum + quality * years
        self.weight = forget * self.weight + quality
        self.observations += 1
        self.last_classified = frame_index
        age, gender, _ = self.labels()
        self.age_class, self.gender_class = _sticky(age, self.age_class, hysteresis), _sticky(gender, self.gender_class, hysteresis)

    @property
    def opinions(self) -> int:
        """How many times faceres has looked at this track's face."""
        return 0 if self.opinion is None else self.opinion.n

    def add_opinion(self, opinion: Opinion) -> None:
        """Fold one second opinion (one face's :class:`realtime.opinion.Opinion`) into the
        track: its labels are then the model's smoothed ones fused with the opinions'
        mean, and the labels shown are that fused answer's (new evidence, not
        frame-to-frame noise: the hysteresis holds them against later frames, not
        against the opinion)."""
        self.opinion = opinion if self.opinion is None else self.opinion + opinion
        if self.age_sum is not None:
            age, gender, _ = self.labels()
            self.age_class, self.gender_class = int(np.argmax(age)), int(np.argmax(gender))

    def labels(self) -> tuple[np.ndarray, np.ndarray, float]:
        """(age (A,), gender (G,), years), once the track has a prediction: the smoothed
        model's, fused with the opinion's mean."""
        age, gender, years = self.age_sum / self.weight, self.gender_sum / self.weight, self.years_sum / self.weight
        if self.opinion is None:
            return age, gender, years
        gender, age, years = fuse(gender, age, years, self.opinion.mean())
        return age, gender, float(years)

    @property
    def age_probs(self) -> np.ndarray | None:
        return None if self.age_sum is None else self.labels()[0]

    @property
    def gender_probs(self) -> np.ndarray | None:
        return None if self.gender_sum is None else self.labels()[1]

    @property
    def age_years(self) -> float:
        return self.labels()[2] if self.weight and self.age_sum is not None else float("nan")


def _sticky(probs: np.ndarray, shown: int, margin: float) -> int:
    """The label to show: the current one unless the best beats it by ``margin``."""
    best = int(probs.argmax())
    if shown < 0 or probs[best] - probs[shown] > margin:
        return best
    return shown


def quality(faces: Faces) -> np.ndarray:
    """(N,) float32 weight of each face's prediction: detector score x size (saturating
    at a 64 px face side), at least 0.05."""
    side = np.minimum(faces.boxes[:, 2] - faces.boxes[:, 0], faces.boxes[:, 3] - faces.boxes[:, 1])
    return np.maximum(faces.scores * np.clip(side / 64.0, 0.1, 1.0), 0.05).astype(np.float32)


@dataclass
class Plan:
    """A frame's detections matched to tracks, before classification.

    Attributes:
        faces: the frame's detections.
        frame_index: the frame's index.
        owner: the track of each detection.
        due: (N,) bool, the detections whose track needs a fresh classification.
    """

    faces: Faces
    frame_index: int
    owner: list[Track]
    due: np.ndarray


class Tracker:
    """Assigns track ids, smooths labels, coasts through short detector misses.

    ``update(faces, frame_index, classify)``: ``faces`` are this frame's detections
    (empty Faces still age the tracks); ``classify`` is called once, with the subset of
    faces whose track needs a fresh classification, and returns their Predictions. The
    result is a new Faces: matched and new detections plus coasting tracks (``predicted``
    True), with ``track_ids`` and smoothed probabilities.
    """

    def __init__(self, settings: TrackerSettings | None = None):
        self.settings = settings or TrackerSettings()
        self.tracks: list[Track] = []
        #: how many tracks have ended (only counted: the run's Analytics keeps what the
        #: summary needs, so a live run's memory stays bounded)
        self.ended = 0
        self._next_id = 1

    def _match(self, boxes: np.ndarray) -> tuple[list[tuple[int, int]], list[int], list[int]]:
        if not self.tracks or not len(boxes):
            return [], list(range(len(self.tracks))), list(range(len(boxes)))
        cost = self.settings.cost(np.stack([t.predict() for t in self.tracks]), boxes)
        rows, cols = linear_sum_assignment(cost)
        pairs = [(r, c) for r, c in zip(rows, cols) if cost[r, c] <= self.settings.max_cost]
        matched_t, matched_d = {r for r, _ in pairs}, {c for _, c in pairs}
        return pairs, [i for i in range(len(self.tracks)) if i not in matched_t], [j for j in range(len(boxes)) if j not in matched_d]

    def update(self, faces: Faces, frame_index: int, classify: Classify) -> Faces:
        """One frame: match, classify the faces that are due (one call), smooth."""
        plan = self.match(faces, frame_index)
        subset = plan.faces[plan.due]
        return self.apply(plan, classify(subset) if len(subset) else None)

    def match(self, faces: Faces, frame_index: int) -> "Plan":
        """First half of :meth:`update`: assign the detections to tracks (new ones for
        the unmatched), move the missed tracks on, and say which faces are due for
        classification. Use with :meth:`apply` to batch several trackers' faces (several
        sources) into one classifier call."""
        pairs, lost, new = self._match(faces.boxes)
        owner: list[Track] = [None] * len(faces)  # type: ignore[list-item]
        for t, d in pairs:
            self.tracks[t].observe(faces.boxes[d], float(faces.scores[d]), frame_index)
            owner[d] = self.tracks[t]
        for d in new:
            track = Track(self._next_id, faces.boxes[d].astype(np.float32), frame_index, frame_index, score=float(faces.scores[d]))
            self._next_id += 1
            self.tracks.append(track)
            owner[d] = track
        for t in lost:
            track = self.tracks[t]
            track.misses += 1
            track.box = track.predict()
        due = np.array([self._due(t, frame_index) for t in owner], bool)
        return Plan(faces, frame_index, owner, due)

    def apply(self, plan: "Plan", predictions: Predictions | None) -> Faces:
        """Second half of :meth:`update`: fold the predictions for ``plan.faces[plan.due]``
        into their tracks and return this frame's tracked Faces."""
        s = self.settings
        if predictions is not None:
            subset = plan.faces[plan.due]
            for k, (i, q) in enumerate(zip(np.flatnonzero(plan.due), quality(subset))):
                plan.owner[i].add_prediction(predictions.age_probs[k], predictions.gender_probs[k],
                                             float(predictions.age_years[k]), float(q), s.smoothing, plan.frame_index,
                                             s.hysteresis)
        alive = [t for t in self.tracks if t.misses <= s.max_misses]
        self.ended += len(self.tracks) - len(alive)
        self.tracks = alive
        coasting = [t for t in self.tracks if t.misses > 0 and t.hits >= s.min_hits and t.age_sum is not None]
        owner = plan.owner
        return self._faces(owner + coasting, [False] * len(owner) + [True] * len(coasting), plan.faces, plan.frame_index)

    def end_all(self) -> None:
        """End every track now (a scene cut: no track may carry a face across it)."""
        self.ended += len(self.tracks)
        self.tracks = []

    def restart(self, track: Track) -> Track:
        """End ``track`` and start a new one (new id, no labels) on its box: the face
        under it is someone else's (re-identification said so)."""
        self.tracks.remove(track)
        self.ended += 1
        fresh = Track(self._next_id, track.box.copy(), track.last_frame, track.last_frame, score=track.score,
                      hits=track.hits)
        self._next_id += 1
        self.tracks.append(fresh)
        return fresh

    def _due(self, track: Track, frame_index: int) -> bool:
        s = self.settings
        confident = (
            track.observations >= s.confident_after
            and track.gender_sum is not None
            and float(track.labels()[1].max()) >= s.confident_prob
        )
        return not confident or frame_index - track.last_classified >= s.reclassify_every

    def _faces(self, tracks: list[Track], predicted: list[bool], detections: Faces, frame_index: int) -> Faces:
        if not tracks:
            return Faces.empty(frame_index)
        n_det = len(detections)
        boxes = np.stack([t.box for t in tracks]).astype(np.float32)
        if n_det:
            boxes[:n_det] = detections.boxes
        scores = np.array([t.score for t in tracks], np.float32)
        eyes = np.full((len(tracks), 2, 2), np.nan, np.float32)  # a coasting track has no fresh eyes
        if n_det and detections.eyes is not None:
            eyes[:n_det] = detections.eyes
        age, gender, years = zip(*(t.labels() for t in tracks))  # shown tracks all have a prediction
        return Faces(
            boxes,
            scores,
            age_probs=np.stack(age).astype(np.float32),
            gender_probs=np.stack(gender).astype(np.float32),
            age_years=np.array(years, np.float32),
            track_ids=np.array([t.id for t in tracks], np.int64),
            predicted=np.array(predicted, bool),
            age_class=np.array([t.age_class for t in tracks], np.int64),
            gender_class=np.array([t.gender_class for t in tracks], np.int64),
            eyes=eyes,
            frame_index=frame_index,
        )
