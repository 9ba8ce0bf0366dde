"""Label placement: no two labels meet, all lie inside the frame."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from realtime.layout import place_labels
from tests.helpers import shared_path


def assert_disjoint_inside(rects: np.ndarray, width: int, height: int) -> None:
    shown = rects[rects[:, 0] >= 0]
    assert (shown[:, 0] >= 0).all() and (shown[:, 1] >= 0).all()
    assert (shown[:, 2] <= width).all() and (shown[:, 3] <= height).all()
    for a, b in itertools.combinations(shown.tolist(), 2):
        assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)


def test_side_by_side_faces_get_labels_that_do_not_meet():
    # five faces in a row, 60 px wide with 10 px gaps; each label is 150 px wide
    boxes = np.array([[100 + 70 * k, 200, 160 + 70 * k, 260] for k in range(5)], np.float32)
    sizes = np.full((5, 2), (150, 20))
    rects = place_labels(boxes, sizes, 800, 600)
    assert (rects[:, 0] >= 0).all()  # every one found room
    assert_disjoint_inside(rects, 800, 600)
    # the first choice, above the box at its left edge, where it is free
    assert rects[0].tolist() == [100, 180, 250, 200]


def test_the_largest_face_gets_the_first_choice():
    small = [100, 100, 130, 130]
    large = [110, 100, 210, 200]
    rects = place_labels(np.array([small, large], np.float32), np.array([(120, 20), (120, 20)]), 640, 480)
    assert rects[1].tolist() == [110, 80, 230, 100]  # above the large face
    assert_disjoint_inside(rects, 640, 480)


def test_labels_stay_inside_the_frame_at_its_edges():
    boxes = np.array([[0, 0, 50, 50], [600, 430, 640, 480], [-20, 200, 30, 260]], np.float32)
    rects = place_labels(boxes, np.full((3, 2), (120, 24)), 640, 480)
    assert (rects[:, 0] >= 0).all()
    assert_disjoint_inside(rects, 640, 480)
    assert rects[0].tolist() == [0, 50, 120, 74]  # no room above: below


@pytest.mark.parametrize("seed", range(20))
def test_random_crowds_never_overlap(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    xy = rng.uniform([0, 0], [1800, 1000], (n, 2))
    side = rng.uniform(15, 160, (n, 1))
    boxes = np.concatenate([xy, xy + side], 1).astype(np.float32)
    sizes = np.stack([rng.integers(60, 260, n), rng.integers(14, 30, n)], 1)
    rects = place_labels(boxes, sizes, 1920, 1080)
    assert_disjoint_inside(rects, 1920, 1080)
    assert (rects[:, 0] >= 0).all()  # a 1080p frame has room for 60 labels


def test_a_label_with_no_room_is_left_out_not_drawn_over_another():
    boxes = np.array([[0, 0, 10, 10]] * 5, np.float32)
    rects = place_labels(boxes, np.full((5, 2), (100, 50)), 200, 100)  # room for 4 at most
    assert 2 <= (rects[:, 0] >= 0).sum() < 5
    assert_disjoint_inside(rects, 200, 100)
    assert place_labels(np.zeros((0, 4), np.float32), np.zeros((0, 2), int), 10, 10).shape == (0, 4)


@pytest.mark.slow  # 60 frames of 1080p through the analyzer
def test_the_crowd_frames_labels_do_not_meet(analyzer):
    """crowd_1080p.mp4 frame 59 (its labels overlapped before): as drawn by the
    LabelAnnotator, tracked as in a run."""
    from realtime.annotators import LabelAnnotator
    from realtime.sources import open_source

    path = shared_path("media", "crowd_1080p.mp4")
    tracker = analyzer.trackers.pop(0, None)
    try:
        with open_source(str(path), 0) as source:
            for frame in source:
                faces = analyzer.analyze([(0, frame)])[0]
                if frame.index == 59:
                    break
    finally:
        analyzer.trackers.pop(0, None)
        if tracker is not None:
            analyzer.trackers[0] = tracker
    assert len(faces) >= 3
    texts, rects = LabelAnnotator(analyzer.meta).rectangles(frame.image, faces)
    assert (rects[:, 0] >= 0).all()
    assert_disjoint_inside(rects, frame.image.shape[1], frame.image.shape[0])
    # where the labels used to go (above each box's left corner) two of them met
    old = rects.copy()
    old[:, 2:] -= old[:, :2]
    old[:, :2] = np.stack([faces.boxes[:, 0], faces.boxes[:, 1] - old[:, 3]], 1).round()
    old[:, 2:] += old[:, :2]
    with pytest.raises(AssertionError):
        assert_disjoint_inside(old, frame.image.shape[1], frame.image.shape[0])
