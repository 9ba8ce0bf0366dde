"""Re-identification's counting rules (realtime/reid.py, realtime/analytics.py): only
a usable view is embedded, only recognised tracks are people, a track that resumes
close by is stitched to its person, a person keeps different views, and embeddings
run off the analysis thread."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest

from engines.images import read_image
from engines.meta import ModelMeta
from realtime.analytics import Analytics
from realtime.faces import Faces
from realtime.reid import Gallery, ReidSettings, contrast
from realtime.sources import Frame
from realtime.tracker import Track
from tests.helpers import shared_path

META = ModelMeta()


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def track(tid: int, box=(100, 100, 150, 150)) -> Track:
    return Track(tid, np.array(box, np.float32), 0, 0)


def test_contrast_tells_a_face_from_a_dark_blurred_one(detector_models):
    """The gate on real faces: the photo's faces measure well above `min_contrast`;
    the same faces dimmed to a stage's background light and out of focus, below it."""
    from realtime.detector import FaceDetector

    image = read_image(shared_path("media", "two_men.jpg"))
    detector = FaceDetector()
    try:
        boxes = detector.detect(image, 0).boxes
    finally:
        detector.close()
    assert len(boxes) == 2
    dim = cv2.GaussianBlur((image * 0.15).astype(np.uint8), (0, 0), 6)
    limit = ReidSettings().min_contrast
    assert all(contrast(image, b) > limit + 5 for b in boxes)
    assert all(contrast(dim, b) < limit for b in boxes)


def test_a_track_resuming_close_by_is_stitched_to_its_person():
    """Within `stitch` seconds of a track's end, a new track about where it ended and
    of about its size is that person, without an embedding; too late, too far, much
    bigger, or after a scene cut, it is no one yet."""
    g = Gallery(0.6, ReidSettings(stitch=0.5))
    first = track(1)
    g.clock[0] = 1.0
    pid, _ = g.update(0, first, unit(np.ones(8)), 1.0)
    g.release((0, 1), first)
    assert g.stitch(0, track(2, (300, 100, 350, 150)), 1.2) is None  # far
    assert g.stitch(0, track(3, (90, 90, 250, 250)), 1.2) is None  # 3x the size
    assert g.stitch(0, track(4, (110, 105, 162, 157)), 1.7) is None  # 0.7 s later
    assert g.stitch(1, track(5, (110, 105, 162, 157)), 1.2) is None  # another source
    assert g.stitch(0, track(6, (110, 105, 162, 157)), 1.2) == pid
    assert g.people[pid].track == (0, 6)
    assert g.stitch(0, track(7, (110, 105, 162, 157)), 1.2) is None  # in view on track 6 now
    g.release((0, 6), track(6, (110, 105, 162, 157)))
    g.cut(0)
    assert g.stitch(0, track(8, (110, 105, 162, 157)), 1.3) is None  # a cut: a new shot


def test_a_person_keeps_different_views():
    """With the exemplars full, a new embedding replaces the one most like it, so a
    profile seen early in a track is still there after many frontal views."""
    rng = np.random.default_rng(2)
    frontal = unit(rng.normal(size=64))
    profile = unit(frontal + 1.5 * unit(rng.normal(size=64)))  # cosine ~0.55: one person, turned
    g = Gallery(0.6, ReidSettings(exemplars=3))
    t = track(1)
    g.update(0, t, profile, 0.0)
    for k in range(6):
        g.update(0, t, unit(frontal + 0.05 * rng.normal(size=64)), 2.0 + k)
    vectors = next(iter(g.people.values())).vectors
    assert len(vectors) == 3 and (vectors @ profile).max() == pytest.approx(1.0)


def tracked(ids: list[int], people: list[int] | None, k: int) -> Faces:
    n = len(ids)
    age = np.full((n, len(META.age_labels)), 0.1, np.float32)
    faces = Faces(np.tile(np.float32([10, 10, 60, 60]), (n, 1)), np.ones(n, np.float32), age,
                  np.tile(np.float32([0.2, 0.8]), (n, 1)), np.full(n, 30, np.float32), np.array(ids, np.int64),
                  np.zeros(n, bool), frame_index=k)
    return faces if people is None else faces.with_people(np.array(people, np.int64))


def test_only_recognised_tracks_are_people():
    """With re-identification a track never recognised is not a person (the summary
    counts it apart); two tracks of one person are one; without it, tracks count."""
    with_reid, without = Analytics(META), Analytics(META)
    for k in range(10):
        frame = Frame(np.zeros((4, 4, 3), np.uint8), k, k / 10)
        with_reid.write(frame, tracked([1, 2, 3], [7, -1, 7 if k >= 5 else -1], k))
        without.write(frame, tracked([1, 2, 3], None, k))
    s = with_reid.summary()
    assert (s["people"], s["counted_tracks"], s["unrecognised_tracks"]) == (1, 2, 1)
    assert [(t["track_id"], t["person_id"], t["counted"]) for t in s["tracks"]] == [(1, 7, True), (2, None, False), (3, 7, True)]
    assert with_reid.count_people([1, 2, 3]) == 1
    s = without.summary()
    assert (s["people"], s["counted_tracks"], s["unrecognised_tracks"]) == (3, 3, 0)


@pytest.mark.slow
def test_embeddings_run_off_the_analysis_thread_and_apply_next_frame(detector_models):
    """A track confirmed on frame 2 is embedded on the `reid` worker thread while the
    analysis goes on; its person comes with frame 3 (two faces a frame at most), the
    same in every run."""
    from realtime.analyzer import Analyzer, AnalyzerSettings

    image = read_image(shared_path("media", "two_men.jpg"))
    threads = []
    with Analyzer(AnalyzerSettings(backend="onnxruntime", reid=ReidSettings(model=shared_path("models", "teachers", "hse_faceres.onnx")))) as a:
        look = a.reid.embedder.look  # embeddings and the second opinion on gender: one run

        def spy(*args):
            threads.append(threading.current_thread().name)
            return look(*args)

        a.reid.embedder.look = spy
        ids = [a.analyze([(0, Frame(image.copy(), k, k / 30))])[0].person_ids.tolist() for k in range(6)]
    assert len(ids[0]) >= 2 and all(i == [-1] * len(ids[0]) for i in ids[:3])  # confirmed on frame 2, embedding then
    assert sum(i >= 1 for i in ids[3]) == min(2, len(ids[3]))  # at most 2 embeddings a frame: 2 known on frame 3
    assert ids[4] == ids[5] and len(set(ids[4])) == len(ids[4]) and min(ids[4]) >= 1
    assert threads and all(name.startswith("reid") for name in threads)
