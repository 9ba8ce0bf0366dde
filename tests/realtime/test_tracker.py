import numpy as np
import pytest

from engines.registry import Predictions
from realtime.faces import Faces
from realtime.boxes import iou_matrix
from realtime.tracker import Tracker, TrackerSettings


def dets(*boxes, score=0.9):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return Faces(boxes, np.full(len(boxes), score, np.float32))


class FixedClassifier:
    """Returns given probabilities per call (a stand-in for the engine's numbers only)."""

    def __init__(self, gender_male: list[float]):
        self.gender_male = list(gender_male)
        self.calls: list[int] = []

    def __call__(self, faces: Faces) -> Predictions:
        self.calls.append(len(faces))
        p = self.gender_male.pop(0) if len(self.gender_male) > 1 else self.gender_male[0]
        n = len(faces)
        age = np.tile(np.eye(8, dtype=np.float32)[4], (n, 1))
        return Predictions(age, np.tile(np.array([1 - p, p], np.float32), (n, 1)), np.full(n, 30, np.float32))


def test_iou():
    m = iou_matrix(np.array([[0, 0, 10, 10]], np.float32), np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], np.float32))
    np.testing.assert_allclose(m, [[1, 1 / 3, 0]], rtol=1e-5)


def test_ids_follow_moving_faces_and_new_faces_get_new_ids():
    tracker = Tracker()
    clf = FixedClassifier([0.9])
    ids = []
    for i in range(10):
        faces = dets([10 + 5 * i, 10, 60 + 5 * i, 60], [300 - 8 * i, 100, 360 - 8 * i, 160]) if i < 6 else dets(
            [10 + 5 * i, 10, 60 + 5 * i, 60], [300 - 8 * i, 100, 360 - 8 * i, 160], [500, 400, 540, 440])
        out = tracker.update(faces, i, clf)
        ids.append(out.track_ids.tolist())
    assert ids[0] == [1, 2] and ids[5] == [1, 2] and ids[6] == [1, 2, 3] and ids[9] == [1, 2, 3]


def test_a_missed_face_coasts_then_ends():
    tracker = Tracker(TrackerSettings(max_misses=3, min_hits=3))
    clf = FixedClassifier([0.9])
    for i in range(4):
        tracker.update(dets([10 + 10 * i, 10, 60 + 10 * i, 60]), i, clf)
    out = tracker.update(Faces.empty(4), 4, clf)  # the detector misses it
    assert out.track_ids.tolist() == [1] and out.predicted.tolist() == [True]
    np.testing.assert_allclose(out.boxes[0], [50, 10, 100, 60], atol=3)  # moved on with its velocity
    assert out.gender_probs[0, 1] == pytest.approx(0.9)  # keeps its label
    back = tracker.update(dets([60, 10, 110, 60]), 5, clf)
    assert back.track_ids.tolist() == [1] and back.predicted.tolist() == [False]
    for i in range(6, 10):
        out = tracker.update(Faces.empty(i), i, clf)
    assert len(out) == 0 and tracker.tracks == [] and tracker.ended == 1  # ended: counted, not kept


def test_a_one_frame_blip_does_not_coast():
    tracker = Tracker()
    clf = FixedClassifier([0.9])
    tracker.update(dets([10, 10, 60, 60]), 0, clf)
    assert len(tracker.update(Faces.empty(1), 1, clf)) == 0


def test_smoothing_holds_the_label_through_a_noisy_frame():
    # male 0.9 for 5 frames, one frame of female 0.8, then male again
    sequence = [0.9] * 5 + [0.2] + [0.9] * 3
    smooth, raw = Tracker(TrackerSettings(reclassify_every=1)), Tracker(TrackerSettings(smoothing=0.0, hysteresis=0.0, reclassify_every=1))
    labels = {"smooth": [], "raw": []}
    for name, tracker in (("smooth", smooth), ("raw", raw)):
        clf = FixedClassifier(list(sequence))
        for i in range(len(sequence)):
            out = tracker.update(dets([10, 10, 60, 60]), i, clf)
            labels[name].append(int(out.gender_probs[0].argmax()))
    assert labels["raw"][5] == 0 and labels["smooth"][5] == 1
    assert labels["smooth"] == [1] * len(sequence)


def test_confident_tracks_are_reclassified_only_every_k_frames():
    tracker = Tracker(TrackerSettings(reclassify_every=5, confident_after=3, confident_prob=0.85))
    clf = FixedClassifier([0.95])
    for i in range(20):
        tracker.update(dets([10, 10, 60, 60], [200, 10, 250, 60]), i, clf)
    # frames 0-2 classify both faces (not yet confident), then one batch every 5 frames
    assert clf.calls[:3] == [2, 2, 2] and len(clf.calls) < 3 + 20 // 5 + 2
    assert all(c == 2 for c in clf.calls)  # all due faces go in one batch


def test_empty_frames_age_tracks_without_calling_the_classifier():
    tracker = Tracker()
    clf = FixedClassifier([0.9])
    tracker.update(Faces.empty(0), 0, clf)
    assert clf.calls == []


def test_bad_settings_fail_early():
    with pytest.raises(ValueError, match="smoothing"):
        TrackerSettings(smoothing=1.0)


def test_hysteresis_keeps_the_shown_label_through_a_near_tie():
    # gender probability wobbling around 0.5: argmax flips every frame, the shown label does not
    sequence = [0.7, 0.45, 0.55, 0.45, 0.55, 0.45, 0.2, 0.2, 0.2]
    shown, argmax = [], []
    tracker = Tracker(TrackerSettings(smoothing=0.0, hysteresis=0.2, reclassify_every=1))
    clf = FixedClassifier(list(sequence))
    for i in range(len(sequence)):
        out = tracker.update(dets([10, 10, 60, 60]), i, clf)
        shown.append(int(out.gender_classes[0]))
        argmax.append(int(out.gender_probs[0].argmax()))
    assert argmax[:6] == [1, 0, 1, 0, 1, 0] and shown[:6] == [1] * 6
    assert shown[-1] == 0  # a clear change still shows (0.8 vs 0.2)


def test_a_long_live_run_keeps_only_the_live_tracks():
    """300 people pass one by one: the tracker holds the few in view, and counts the rest."""
    tracker = Tracker(TrackerSettings(max_misses=3))
    clf = FixedClassifier([0.9])
    frame = 0
    for person in range(300):
        x = (person % 10) * 100  # each somewhere else, seen for 4 frames, then gone
        for _ in range(4):
            tracker.update(dets([x, 10, x + 50, 60]), frame, clf)
            frame += 1
        for _ in range(5):
            tracker.update(Faces.empty(frame), frame, clf)
            frame += 1
    assert tracker.tracks == [] and tracker.ended == 300
